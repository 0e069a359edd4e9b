"""The wire formats: RemoteFragmentDesc (§3.5), LocalFragmentDesc (§3.3), lineage (§3.8),
framing (§4.2), the §4.4 discrimination of frames from the transformation and the
deterministic output ids (§16.15)."""

from __future__ import annotations

import itertools
import json
import posixpath
import random
import re
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import protocol as p
from sidecar.core.jsontext import compact_encoder, loads
from sidecar.core.protocol import InvalidMessage

A, B, C = "a" * 64, "b" * 64, "c" * 64
BUCKET = "h-up-output"


def body(files: object = None, **meta: object) -> bytes:
    m = {"fragment_id": A, "predecessors": []}
    m.update(meta)
    if files is None:
        files = [{"name": "x.jpg", "path": "iterum_data/x.jpg", "bucket": BUCKET}]
    return json.dumps({"files": files, "metadata": m}).encode()


def file_entry(name: object = "x.jpg", bucket: object = BUCKET,
               path: object = "iterum_data/x.jpg") -> dict:
    return {"name": name, "path": path, "bucket": bucket}


def reason_of(raw: bytes) -> str:
    with pytest.raises(InvalidMessage) as info:
        p.parse_remote(raw)
    return info.value.reason


# --- parse_remote ---------------------------------------------------------------------


def test_parse_remote_reads_a_fragmenter_message() -> None:
    raw = (b'{"files":[{"name":"00000001_020.jpg","path":"iterum_data/00000001_020.jpg",'
           b'"bucket":"h-fragmenter-output"}],"metadata":{"fragment_id":"' + A.encode()
           + b'","predecessors":[]}}')
    frag = p.parse_remote(raw)
    assert frag.fragment_id == A
    assert frag.files == (p.RemoteFile("00000001_020.jpg", "iterum_data/00000001_020.jpg",
                                       "h-fragmenter-output"),)
    assert frag.predecessors == []
    assert frag.custom is None


def test_parse_remote_accepts_unknown_keys_and_nulls() -> None:
    raw = json.dumps({
        "files": [dict(file_entry(), size=3, etag="x")],
        "metadata": {"fragment_id": A, "predecessors": None, "custom": None,
                     "target_queue": "q", "unknown": {"deep": [1]}},
        "extra": True,
    }).encode()
    frag = p.parse_remote(raw)
    assert frag.predecessors is None  # forwarded as null, as Go does (§3.12)
    assert frag.custom is None
    assert [f.name for f in frag.files] == ["x.jpg"]


def test_parse_remote_keeps_custom_and_predecessors() -> None:
    frag = p.parse_remote(body(predecessors=[B, C], custom={"k": [1, {"z": None}]}))
    assert frag.predecessors == [B, C]
    assert frag.custom == {"k": [1, {"z": None}]}


def test_parse_remote_with_an_empty_files_array() -> None:
    assert p.parse_remote(body(files=[])).files == ()
    raw = json.dumps({"files": [], "metadata": {"fragment_id": A}}).encode()
    assert p.parse_remote(raw).files == ()


def test_parse_remote_reads_null_files_as_a_go_peers_empty_fragment() -> None:
    """The Go sidecar encodes a zero-file output's nil slice as null (§3.12)."""
    raw = json.dumps({"files": None, "metadata": {"fragment_id": A}}).encode()
    assert p.parse_remote(raw).files == ()


@pytest.mark.parametrize("raw", [
    {"metadata": {"fragment_id": A, "predecessors": []}},
    {"metadata": {"fragment_id": A}, "extra": 1},
])
def test_parse_remote_rejects_a_missing_files(raw: dict) -> None:
    """files is required, unlike the other keys (§16.12): no fragment without its files."""
    with pytest.raises(InvalidMessage) as info:
        p.parse_remote(json.dumps(raw).encode())
    assert info.value.reason == "invalid-descriptor"
    assert "'files' is missing" in str(info.value)


def test_same_name_in_different_buckets_is_allowed() -> None:
    frag = p.parse_remote(body(files=[file_entry(bucket="bucket-one"),
                                      file_entry(bucket="bucket-two")]))
    assert len(frag.files) == 2


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe{}", b"{'a': 1}", b'{"a":'])
def test_parse_remote_rejects_non_json(raw: bytes) -> None:
    assert reason_of(raw) == "invalid-json"


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"null", b"3", b"true"])
def test_parse_remote_rejects_non_objects(raw: bytes) -> None:
    assert reason_of(raw) == "invalid-descriptor"


@pytest.mark.parametrize("raw", [
    b'{"files": []}',
    b'{"files": [], "metadata": null}',
    b'{"files": [], "metadata": []}',
    b'{"files": {}, "metadata": {"fragment_id": "' + A.encode() + b'"}}',
])
def test_parse_remote_rejects_bad_structure(raw: bytes) -> None:
    assert reason_of(raw) == "invalid-descriptor"


@pytest.mark.parametrize("fragment_id", [None, "", "a" * 63, "a" * 65, 64, ["a" * 64]])
def test_parse_remote_rejects_bad_fragment_id(fragment_id: object) -> None:
    assert reason_of(body(fragment_id=fragment_id)) == "invalid-fragment-id"


@pytest.mark.parametrize("preds", [[1], "a", {"a": 1}, [None]])
def test_parse_remote_rejects_bad_predecessors(preds: object) -> None:
    assert reason_of(body(predecessors=preds)) == "invalid-descriptor"


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../b", "a\x00b", "", ".", "./a", "a//b",
                                  "a/", "..", None, 5])
def test_parse_remote_rejects_unsafe_file_names(name: object) -> None:
    assert reason_of(body(files=[file_entry(name=name)])) == "unsafe-name"


@pytest.mark.parametrize("name", ["x.jpg", "sub/x.jpg", "a/b/c.txt", "..hidden", "a..b",
                                  "with space.png", "ünïcode.txt"])
def test_parse_remote_accepts_safe_names(name: str) -> None:
    assert p.parse_remote(body(files=[file_entry(name=name)])).files[0].name == name


@pytest.mark.parametrize("bucket", ["UPPER", "ab", "-bad", "bad-", "a" * 64, "a..b",
                                    "has_underscore", "with space", "", None, 3, "../etc"])
def test_parse_remote_rejects_invalid_buckets(bucket: object) -> None:
    assert reason_of(body(files=[file_entry(bucket=bucket)])) == "invalid-bucket"


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "h-step.output-1", "0leading"])
def test_parse_remote_accepts_valid_buckets(bucket: str) -> None:
    assert p.parse_remote(body(files=[file_entry(bucket=bucket)])).files[0].bucket == bucket


@pytest.mark.parametrize("path", [None, "", 3])
def test_parse_remote_rejects_bad_object_keys(path: object) -> None:
    assert reason_of(body(files=[file_entry(path=path)])) == "invalid-descriptor"


def test_parse_remote_rejects_duplicate_files() -> None:
    raw = body(files=[file_entry(), file_entry(path="iterum_data/other.jpg")])
    assert reason_of(raw) == "duplicate-file"


def test_parse_remote_rejects_non_object_file_entries() -> None:
    assert reason_of(body(files=["x.jpg"])) == "invalid-descriptor"


# --- local paths ----------------------------------------------------------------------------


def test_local_paths_are_per_fragment_and_dirs_deepest_first() -> None:
    frag = p.parse_remote(body(files=[file_entry(name="a/b/c.txt"), file_entry(name="d.txt")]))
    assert [p.local_input_path("/vol", frag, f) for f in frag.files] == [
        f"/vol/{BUCKET}/{A}/a/b/c.txt", f"/vol/{BUCKET}/{A}/d.txt"]
    assert p.input_dirs("/vol", frag) == (
        f"/vol/{BUCKET}/{A}/a/b", f"/vol/{BUCKET}/{A}/a", f"/vol/{BUCKET}/{A}")


_PATH_PART = st.sampled_from(["a", "b", "..", ".", "", "/", "x/y", "//", "c/"])


@given(volume=st.sampled_from(["/vol", "/vol/", "/", "/v/w", ""]),
       fragment_id=st.lists(_PATH_PART, max_size=4).map(lambda s: ("".join(s) + A)[:64]),
       names=st.lists(st.lists(_PATH_PART, min_size=1, max_size=4).map("".join), max_size=3),
       bucket=st.sampled_from([BUCKET, "b/c", "/abs", "b/"]))
def test_input_layout_is_the_paths_dirs_and_bucket_dirs_joined_one_by_one(
        volume: str, fragment_id: str, names: list[str], bucket: str) -> None:
    """input_layout joins part by part; the same as posixpath.join of all the parts, and
    the directories as a walk up from each file to its fragment's directory."""
    frag = p.RemoteFragment(fragment_id, tuple(p.RemoteFile(n, "k", bucket) for n in names),
                            None, None)
    paths, dirs, buckets = p.input_layout(volume, frag)
    assert paths == tuple(posixpath.join(volume, bucket, fragment_id, n) for n in names)
    assert buckets == tuple(posixpath.join(volume, bucket) for _ in names)
    expected: set[str] = set()
    for path in paths:
        top = posixpath.join(volume, bucket, fragment_id)
        d = posixpath.dirname(path)
        while d != top and d.startswith(top):
            expected.add(d)
            d = posixpath.dirname(d)
        expected.add(top)
    assert dirs == tuple(sorted(expected, key=lambda d: (-d.count("/"), d)))


@pytest.mark.parametrize(("path", "inside"), [
    ("/vol/output/x", True), ("/vol/x", True), ("/vol", False), ("/vol/", False),
    ("/volume/x", False), ("/vol/../etc/passwd", False), ("vol/x", False),
    ("/vol/a/../../x", False), ("/vol/a/\x00", False), ("/other/x", False)])
def test_inside_the_volume(path: str, inside: bool) -> None:
    assert p.inside("/vol", path) is inside


# --- encoders ------------------------------------------------------------------------------


def test_encode_remote_go_field_order_with_every_field() -> None:
    raw = p.encode_remote(C, [p.RemoteFile("n.jpg", "iterum_data/n.jpg", "bkt")], [A, B],
                          "h-rejects", {"k": 1})
    expected = ('{"files":[{"name":"n.jpg","path":"iterum_data/n.jpg","bucket":"bkt"}],'
                f'"metadata":{{"fragment_id":"{C}","predecessors":["{A}","{B}"],'
                '"target_queue":"h-rejects","custom":{"k":1}}}')
    assert raw == expected.encode()


@pytest.mark.parametrize("target_queue", [None, ""])
@pytest.mark.parametrize("custom", [None, {}])
def test_encode_remote_omits_empty_target_queue_and_custom(target_queue: str | None,
                                                           custom: object) -> None:
    raw = p.encode_remote(C, [], [], target_queue, custom)
    assert raw == f'{{"files":[],"metadata":{{"fragment_id":"{C}","predecessors":[]}}}}'.encode()


def test_encode_remote_predecessors_always_an_array() -> None:
    assert json.loads(p.encode_remote(C, [], (), None, None))["metadata"]["predecessors"] == []
    assert json.loads(p.encode_remote(C, [], (A,), None, None))["metadata"]["predecessors"] == [A]


def test_encode_remote_round_trips_through_parse_remote() -> None:
    files = [p.RemoteFile("a/ü.jpg", "iterum_data/x/a/ü.jpg", "h-step-output")]
    frag = p.parse_remote(p.encode_remote(C, files, [A], "q", {"x": "<&>"}))
    assert (frag.fragment_id, frag.files, frag.predecessors, frag.custom) == (
        C, tuple(files), [A], {"x": "<&>"})


# Any text: quotes, backslashes, control characters, non-ASCII, astral characters.
_TEXT = st.text(max_size=12)
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | _TEXT, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=8)
_CUSTOM = st.sampled_from([None, {}]) | _JSON


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(fragment_id=_TEXT, files=st.lists(st.tuples(_TEXT, _TEXT, _TEXT), max_size=3),
       predecessors=st.lists(_TEXT, max_size=3), target_queue=st.none() | _TEXT,
       custom=_CUSTOM)
def test_encode_remote_writes_what_json_dumps_of_the_dicts_writes(
        fragment_id: str, files: list[tuple[str, str, str]], predecessors: list[str],
        target_queue: str | None, custom: object) -> None:
    """encode_remote writes its text around json's string encoder: the same bytes."""
    remote = [p.RemoteFile(*f) for f in files]
    meta: dict[str, object] = {"fragment_id": fragment_id, "predecessors": predecessors}
    if target_queue:
        meta["target_queue"] = target_queue
    if custom not in (None, {}):
        meta["custom"] = custom
    expected = _dumps({"files": [{"name": f.name, "path": f.path, "bucket": f.bucket}
                                 for f in remote], "metadata": meta})
    assert p.encode_remote(fragment_id, remote, predecessors, target_queue, custom) == expected


@settings(max_examples=300, deadline=None)
@given(fragment_id=_TEXT, files=st.lists(st.tuples(_TEXT, _TEXT), max_size=3),
       predecessors=st.none() | st.lists(_TEXT, max_size=3), custom=_CUSTOM)
def test_encode_local_writes_what_json_dumps_of_the_dicts_writes(
        fragment_id: str, files: list[tuple[str, str]], predecessors: list[str] | None,
        custom: object) -> None:
    fragment = p.RemoteFragment(fragment_id, tuple(p.RemoteFile(n, "key", BUCKET)
                                                   for n, _ in files), predecessors, custom)
    meta: dict[str, object] = {"fragment_id": fragment_id, "predecessors": predecessors}
    if custom not in (None, {}):
        meta["custom"] = custom
    expected = _dumps({"files": [{"name": n, "path": path} for n, path in files],
                       "metadata": meta})
    assert p.encode_local(fragment, [path for _, path in files]) == expected


def test_encoders_fail_on_a_lone_surrogate_as_json_dumps_does() -> None:
    with pytest.raises(UnicodeEncodeError):
        _dumps({"x": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        p.encode_remote("\ud800", [], [], None, None)
    with pytest.raises(UnicodeEncodeError):
        p.encode_local(p.RemoteFragment(A, (p.RemoteFile("\ud800", "k", BUCKET),), [], None),
                       ["/p"])


@pytest.mark.parametrize("step", ["h-step", 'we"ird\\step', "ünï"])
def test_encode_lineage_embeds_the_descriptor_verbatim(step: str) -> None:
    descriptor = p.encode_remote(C, [p.RemoteFile("n", "iterum_data/n", "bkt")], [A], None,
                                 {"k": "v"})
    raw = p.encode_lineage(step, descriptor)
    assert descriptor in raw
    assert raw.endswith(descriptor + b"}")
    parsed = json.loads(raw)
    assert list(parsed) == ["transformation_step", "description"]
    assert parsed == {"transformation_step": step, "description": json.loads(descriptor)}


def test_encode_local_is_what_pyterum_expects() -> None:
    frag = p.parse_remote(body(files=[file_entry(name="a.jpg"), file_entry(name="b.jpg")],
                               predecessors=[B], custom={"c": 1}))
    paths = ["/vol/x/a.jpg", "/vol/x/b.jpg"]
    assert json.loads(p.encode_local(frag, paths)) == {
        "files": [{"name": "a.jpg", "path": paths[0]}, {"name": "b.jpg", "path": paths[1]}],
        "metadata": {"fragment_id": A, "predecessors": [B], "custom": {"c": 1}}}


@pytest.mark.parametrize(("preds", "custom"), [(None, None), ([], {}), (None, {})])
def test_encode_local_forwards_null_predecessors_and_omits_empty_custom(
        preds: object, custom: object) -> None:
    frag = p.parse_remote(body(predecessors=preds, custom=custom))
    decoded = json.loads(p.encode_local(frag, ["/vol/x.jpg"]))
    assert decoded["metadata"] == {"fragment_id": A, "predecessors": preds}
    assert decoded["files"] == [{"name": "x.jpg", "path": "/vol/x.jpg"}]


# --- framing ---------------------------------------------------------------------------


def test_frame_is_little_endian_length_then_payload() -> None:
    assert p.frame(b"{}") == b"\x02\x00\x00\x00{}"
    assert p.frame(b"x" * 258)[:4] == b"\x02\x01\x00\x00"
    assert p.frame(b"") == b"\x00\x00\x00\x00"


def test_decoder_waits_for_the_whole_frame() -> None:
    d = p.FrameDecoder(max_size=100)
    assert d.feed(b"\x05\x00") == []
    assert d.feed(b"\x00\x00abc") == []
    assert d.pending == 7
    assert d.feed(b"de\x01\x00\x00\x00") == [b"abcde"]
    assert d.feed(b"z") == [b"z"]
    assert d.pending == 0


def test_decoder_allows_the_cap_and_refuses_more() -> None:
    d = p.FrameDecoder(max_size=10)
    assert d.feed(p.frame(b"0123456789")) == [b"0123456789"]
    with pytest.raises(p.FrameTooLarge):
        # the header alone is enough to refuse: the body is never awaited
        p.FrameDecoder(max_size=10).feed(struct.pack("<I", 11))


def test_decoder_refuses_a_huge_header_after_good_frames() -> None:
    d = p.FrameDecoder(max_size=1 << 20)
    with pytest.raises(p.FrameTooLarge):
        d.feed(p.frame(b"ok") + b"\xff\xff\xff\xff")


_SIZES = st.one_of(st.integers(0, 40), st.sampled_from([65535, 65536, 65537, (1 << 20) + 3]))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(_SIZES, min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1),
       cuts=st.lists(st.floats(0, 1), max_size=12))
def test_decoder_is_independent_of_chunking(sizes: list[int], seed: int,
                                            cuts: list[float]) -> None:
    rng = random.Random(seed)
    payloads = [rng.randbytes(n) for n in sizes]
    stream = b"".join(p.frame(x) for x in payloads)
    points = sorted({int(c * len(stream)) for c in cuts} | {0, len(stream)})
    d = p.FrameDecoder(max_size=2 << 20)
    got: list[bytes] = []
    for start, end in itertools.pairwise(points):
        got += d.feed(stream[start:end])
    assert got == payloads
    assert d.pending == 0


@settings(max_examples=30, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300), max_size=8))
def test_decoder_byte_by_byte(payloads: list[bytes]) -> None:
    d = p.FrameDecoder(max_size=300)
    got: list[bytes] = []
    for b in b"".join(p.frame(x) for x in payloads):
        got += d.feed(bytes([b]))
    assert got == payloads


# --- frames from the transformation (§4.4) --------------------------------------------------


def test_pyterum_output_shape_is_accepted() -> None:
    raw = (b'{"files": [{"name": "edges_1.jpg", "path": "/data-volume/output/1.jpg"}], '
           b'"metadata": {"output_channel": null, "custom": null, "fragment_id": null, '
           b'"predecessors": ["' + A.encode() + b'"]}}')
    msg = p.parse_frame(raw)
    assert msg == p.OutputFragment(
        files=(p.LocalFile("edges_1.jpg", "/data-volume/output/1.jpg"),),
        predecessors=(A,), predecessors_given=True, output_channel=None, custom=None)


def test_output_keeps_channel_custom_and_several_predecessors() -> None:
    raw = json.dumps({"files": [{"name": "o", "path": "/v/o"}],
                      "metadata": {"output_channel": "rejects", "custom": {"q": 1},
                                   "predecessors": [B, A], "fragment_id": "ignored"}}).encode()
    msg = p.parse_frame(raw)
    assert isinstance(msg, p.OutputFragment)
    assert msg.predecessors == (B, A)
    assert (msg.output_channel, msg.custom) == ("rejects", {"q": 1})


@pytest.mark.parametrize("meta", [None, {}, {"predecessors": None}, {"predecessors": []}],
                         ids=["no-metadata", "empty", "null", "[]"])
def test_output_without_predecessors_is_still_an_output(meta: object) -> None:
    data: dict = {"files": [{"name": "o", "path": "/v/o"}]}
    if meta is not None:
        data["metadata"] = meta
    msg = p.parse_frame(json.dumps(data).encode())
    assert isinstance(msg, p.OutputFragment)
    assert msg.predecessors == ()
    assert msg.predecessors_given is False


def test_discrimination_output_first() -> None:
    raw = json.dumps({"files": [{"name": "o", "path": "/v/o"}], "metadata": {},
                      "fragment_id": A, "status": "complete"}).encode()
    assert isinstance(p.parse_frame(raw), p.OutputFragment)


@pytest.mark.parametrize("files", [None, [], "x"], ids=["null", "empty", "string"])
def test_discrimination_done_with_second(files: object) -> None:
    raw = json.dumps({"files": files, "fragment_id": A, "status": "complete"}).encode()
    assert p.parse_frame(raw) == p.DoneWith(A)


def test_discrimination_kill_third() -> None:
    raw = json.dumps({"files": [], "fragment_id": "short", "status": "complete"}).encode()
    assert p.parse_frame(raw) == p.Kill()
    assert p.parse_frame(b'{"status":"complete"}') == p.Kill()


@pytest.mark.parametrize("raw", [
    b'{"status":""}',  # the Go sidecar's own kill is not accepted back
    b'{"status":"Complete"}',
    b'{"STATUS":"complete"}',  # keys are matched case-sensitively (§16.12)
    b'{"fragment_id":"short"}',
    b'{"fragment_id":null}',
    b'{"files":[]}',
    b'{"files":[],"metadata":{"predecessors":["x"]}}',
    b"{}",
    b"[]",
    b'"complete"',
    b"null",
])
def test_unrecognised_frames(raw: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        p.parse_frame(raw)
    assert info.value.reason == "unrecognised"


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b"nope"])
def test_non_json_frames(raw: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        p.parse_frame(raw)
    assert info.value.reason == "invalid-json"


@pytest.mark.parametrize("files", [
    [{"name": "../x", "path": "/v/x"}],
    [{"name": "", "path": "/v/x"}],
    [{"name": "o", "path": ""}],
    [{"name": "o"}],
    ["o"],
    [{"name": "o", "path": "/v/1"}, {"name": "o", "path": "/v/2"}],
])
def test_invalid_output_files_are_outputs_with_a_problem(files: list) -> None:
    # still an output, so the core can hold back its predecessors' acks
    msg = p.parse_frame(json.dumps({"files": files, "metadata": {"predecessors": ["a"]}})
                        .encode())
    assert isinstance(msg, p.OutputFragment)
    assert msg.problem
    assert msg.predecessors == ("a",)


def test_a_non_string_output_channel_is_a_problem() -> None:
    raw = json.dumps({"files": [{"name": "o", "path": "/v/o"}],
                      "metadata": {"output_channel": 3, "predecessors": ["a"]}}).encode()
    msg = p.parse_frame(raw)
    assert isinstance(msg, p.OutputFragment) and "output_channel" in msg.problem


@pytest.mark.parametrize("meta", [[], {"predecessors": "a"}, {"predecessors": [1]}])
def test_invalid_output_metadata_is_refused(meta: object) -> None:
    raw = json.dumps({"files": [{"name": "o", "path": "/v/o"}], "metadata": meta}).encode()
    with pytest.raises(InvalidMessage):
        p.parse_frame(raw)


# --- deterministic output ids (§16.15) -------------------------------------------------------

_IDS = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=64, max_size=64),
                min_size=0, max_size=4)


@settings(max_examples=50, deadline=None)
@given(preds=_IDS, index=st.integers(0, 1000), seed=st.randoms())
def test_output_id_depends_on_sorted_predecessors(preds: list[str], index: int,
                                                  seed: random.Random) -> None:
    oid = p.output_id("h-step", preds, index)
    assert re.fullmatch(r"[0-9a-f]{64}", oid)
    assert p.is_fragment_id(oid)
    shuffled = list(preds)
    seed.shuffle(shuffled)
    assert p.output_id("h-step", shuffled, index) == oid
    assert p.output_id("h-step", preds, index + 1) != oid
    assert p.output_id("h-other", preds, index) != oid


def test_output_id_differs_per_predecessor_set() -> None:
    ids = {p.output_id("s", preds, 0) for preds in ([], [A], [B], [A, B], [A, A], [A, B, C])}
    assert len(ids) == 6
    assert len({p.output_id("s", [A], i) for i in range(100)}) == 100


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@given(doc=_JSON)
def test_the_compact_encoders_write_what_json_dumps_writes(doc: object) -> None:
    for ascii_only in (True, False):
        expected = json.dumps(doc, separators=(",", ":"), ensure_ascii=ascii_only)
        assert compact_encoder(ensure_ascii=ascii_only)(doc) == expected
    assert p.dumps(doc) == json.dumps(doc, separators=(",", ":"),
                                      ensure_ascii=False).encode("utf-8")


def _outcome(parse: Callable[[bytes], object], data: bytes) -> object:
    try:
        return ("value", parse(data))
    except (ValueError, UnicodeDecodeError) as err:
        return (type(err), str(err))


@given(data=st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(),
                           max_size=3).map(lambda doc: json.dumps(doc).encode())
       | st.binary(max_size=12).map(lambda b: b"{" + b)
       | st.sampled_from([b"{", b"{\x00}", "{}".encode("utf-16"),
                          "{}".encode("utf-16-le"), b'{"a":"\xed\xa0\x80"}',
                          b"\xef\xbb\xbf{}", b"{\xff}", b'{"a":1}x', b""]))
def test_loads_gives_what_json_loads_gives(data: bytes) -> None:
    """The same value, or the same error, as json.loads (which detects the encoding)."""
    assert _outcome(loads, data) == _outcome(json.loads, data)
