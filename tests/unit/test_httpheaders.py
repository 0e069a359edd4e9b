"""sidecar/shell/io/httpheaders.py: the same HTTPMessage as http.client's own parse_headers.

Every block, plain or not, is parsed by both; the messages must be equal field by field
(headers, payload, defects, policy, class), and the reader must stop at the same byte."""

from __future__ import annotations

import email.message
import http.client
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.shell.io import httpheaders

S3_ANSWER = (b"x-amz-id-2: abc\r\nx-amz-request-id: 1234\r\n"
             b"Content-Type: binary/octet-stream\r\n"
             b'ETag: "d41d8cd98f00b204e9800998ecf8427e"\r\n'
             b"Last-Modified: Mon, 07 Dec 2026 16:00:00 GMT\r\nContent-Length: 1024\r\n"
             b"Date: Mon, 07 Dec 2026 16:00:00 GMT\r\nServer: granian\r\n\r\n")
BLOCKS = [
    S3_ANSWER,
    S3_ANSWER + b"the body, which must stay unread",
    b"\r\n",
    b"",
    b"\n",
    b"A:\r\n\r\n",
    b"A:  \t spaced value \t \r\n\r\n",
    b"Dup: 1\r\nDup: 2\r\ndup: 3\r\n\r\n",
    b"Folded: one\r\n two\r\n\tthree\r\n\r\n",  # continuation lines
    b" Leading: space\r\n\r\n",
    b"NoColon\r\nA: 1\r\n\r\n",  # not a header: the rest is the payload, with a defect
    b": no name\r\n\r\n",
    b"A: 1\nB: 2\n\n",  # bare LF
    b"A: 1\r\nB: 2\n\r\n",
    b"A: x\ry\r\n\r\n",  # a lone CR inside
    b"A: x\x85y\r\n\r\n",  # NEL: a line break to str.splitlines
    b"A: x\x0cy\r\n\r\n",
    b"A: x\x1cy\r\n\r\n",
    b"Na me: 1\r\n\r\n",
    b"N\x80: 1\r\n\r\n",
    b"From someone\r\nA: 1\r\n\r\n",
    b"A: caf\xe9 \xff\r\n\r\n",  # latin-1 in a value
    b"A: 1\r\n",  # no blank line: the stream ended
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n",
    b"content-type: Message/rfc822\r\n\r\n",
    b"Content-Type: application/xml\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n",
    b"A: 1\r\n\r\n\r\n",
]


def _same(fast: object, original: object) -> None:
    """Equal field by field, nested messages (a multipart payload) too."""
    if isinstance(original, list):
        assert isinstance(fast, list) and len(fast) == len(original)
        for f, o in zip(fast, original, strict=True):
            _same(f, o)
        return
    if not isinstance(original, email.message.Message):
        assert fast == original
        return
    assert type(fast) is type(original)
    assert vars(fast).keys() == vars(original).keys()
    for name, value in vars(original).items():
        if name == "defects":
            assert [type(d) for d in vars(fast)[name]] == [type(d) for d in value]
        else:
            _same(vars(fast)[name], value)


def _both(block: bytes) -> None:
    original_fp, fast_fp = io.BytesIO(block), io.BytesIO(block)
    original = httpheaders._ORIGINAL(original_fp)
    fast = httpheaders.parse_headers(fast_fp)
    _same(fast, original)
    assert fast.items() == original.items()
    assert fast_fp.tell() == original_fp.tell()


@pytest.mark.parametrize("block", BLOCKS)
def test_same_message_as_http_client(block: bytes) -> None:
    _both(block)


def test_a_plain_block_skips_the_email_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("the email parser was used")
    monkeypatch.setattr(httpheaders.email.parser.Parser, "parsestr", refuse)
    assert httpheaders.parse_headers(io.BytesIO(S3_ANSWER))["etag"] == (
        '"d41d8cd98f00b204e9800998ecf8427e"')


def test_another_message_class_goes_to_the_email_parser() -> None:
    class Mine(http.client.HTTPMessage):
        pass
    assert type(httpheaders.parse_headers(io.BytesIO(S3_ANSWER), Mine)) is Mine


def test_install_and_uninstall() -> None:
    try:
        httpheaders.install()
        assert http.client.parse_headers is httpheaders.parse_headers
    finally:
        httpheaders.uninstall()
    assert http.client.parse_headers is httpheaders._ORIGINAL


_CHARS = st.sampled_from(list(":; \t\r\n\x0b\x0c\x1c\x85aZ-_0~\x80\xff\x00"))
_CONTENT = st.sampled_from([b"Content-Type: multipart/mixed; boundary=b\r\n",
                            b"Content-Type: message/rfc822\r\n", b"Content-Type: text/xml\r\n",
                            b"--b\r\n", b"Content-Transfer-Encoding: base64\r\n"])
_LINE = st.text(_CHARS, max_size=12).map(lambda s: s.encode("latin-1"))


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(_LINE, _LINE.map(lambda b: b + b"\r\n"),
                          st.sampled_from([b"Name: value\r\n", b"X-Y:z\r\n", b"\r\n"]), _CONTENT),
                max_size=6))
def test_same_message_on_random_blocks(lines: list[bytes]) -> None:
    _both(b"".join(lines) + b"\r\n")
