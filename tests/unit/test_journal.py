"""The journal's Recorder (what it writes, rotation, failures) and reading it back."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from test_config import manager_env
from test_core_replay import busy_run
from unit_driver import Driver, fid

from sidecar.core import events as ev
from sidecar.shell import config
from sidecar.shell.journal import JournalError, Recorder, list_segments, load
from sidecar.shell.loop import Runner
from sidecar.shell.operate import build
from sidecar.shell.recovery import Journal
from sidecar.tools.replay import Replayer


def recorded_busy_run(directory: Path, **kw) -> tuple[Driver, Recorder]:
    """busy_run() (test_core_replay.py) with a Recorder observing its core."""
    recorders: list[Recorder] = []
    original = Driver.__init__

    def init(self: Driver, **overrides) -> None:
        original(self, **overrides)
        recorders.append(Recorder(str(directory), self.core, max_bytes=kw.get(
            "max_bytes", 1 << 30), keep=kw.get("keep", 100)))
        self.observers.append(recorders[-1])

    Driver.__init__ = init  # type: ignore[method-assign]
    try:
        drv = busy_run()
    finally:
        Driver.__init__ = original  # type: ignore[method-assign]
    recorders[0].close()
    return drv, recorders[0]


def lines(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_a_segment_is_a_header_a_checkpoint_and_one_line_per_event(tmp_path: Path) -> None:
    drv, _ = recorded_busy_run(tmp_path)
    [(run, segment, path)] = list_segments(str(tmp_path))
    assert (run, segment) == (1, 1) and path.endswith("run0001-seg0001.jsonl")
    header, checkpoint, *events = lines(path)
    assert header["header"]["format"] == 2 and header["header"]["run"] == 1
    assert header["header"]["config"]["step"] == drv.core.cfg.step
    assert header["header"]["config"]["queue_mapping"] == {"rejects": "h-rejects"}
    assert checkpoint["after"] == 0 and checkpoint["checkpoint"]["inputs"] == []
    assert [e["seq"] for e in events] == list(range(1, len(drv.journal) + 1))
    assert [e["t"] for e in events] == [t for _, t, _, _ in drv.journal]
    # the events in full, the transitions, and the effects (long bytes as digests)
    first_delivery = next(e for e in events if e["event"]["kind"] == "Delivered")
    assert json.loads(first_delivery["event"]["body"])["metadata"]["fragment_id"] == fid("a")
    assert ["input", 1, "a" * 12, "new", "", "received"] in first_delivery["tr"]
    assert [f["kind"] for f in first_delivery["fx"]] == ["DownloadFile"]
    acks = [f["tag"] for e in events for f in e["fx"] if f["kind"] == "Ack"]
    assert sorted(acks) == [1, 2, 3, 4, 5]


def test_lines_are_buffered_until_a_flush(tmp_path: Path) -> None:
    drv = Driver()
    rec = Recorder(str(tmp_path), drv.core, max_bytes=1 << 30, keep=4)
    drv.observers.append(rec)
    drv.start()
    drv.connect()
    assert len(Path(rec.path).read_text().splitlines()) == 0  # nothing written yet
    rec.flush()
    assert len(lines(rec.path)) == 2 + 3
    rec.close()


def test_rotation_keeps_the_newest_segments_each_one_self_contained(tmp_path: Path) -> None:
    drv, rec = recorded_busy_run(tmp_path, max_bytes=3000, keep=3)
    segments = list_segments(str(tmp_path))
    assert [s for _, s, _ in segments] == [rec.segment - 2, rec.segment - 1, rec.segment]
    assert rec.segment > 3  # it did rotate, and pruned
    for _, _, path in segments:
        header, checkpoint, *_ = lines(path)
        assert "header" in header and "checkpoint" in checkpoint
    # each kept segment replays on its own, from its checkpoint
    for _, _, path in segments:
        replayer = Replayer(load(path))
        assert replayer.run(), replayer.divergence and replayer.divergence.describe()
    # the directory replays from the oldest kept segment through the others, and each
    # later checkpoint equals the replayed state
    journal = load(str(tmp_path))
    assert len(journal.segments) == 3
    replayer = Replayer(journal)
    assert replayer.run()
    assert replayer.core.step.state == "exited"
    assert [r.seq for r in journal.records()][-1] == len(drv.journal)


def test_a_segment_holds_max_bytes_of_events_even_after_a_big_checkpoint(tmp_path: Path
                                                                         ) -> None:
    recorded_busy_run(tmp_path, max_bytes=1000, keep=1000)
    segments = [Path(p).read_text().splitlines(keepends=True)
                for _, _, p in list_segments(str(tmp_path))]
    assert any(len(seg[1]) > 1000 for seg in segments)  # checkpoints larger than the bound
    for seg in segments[:-1]:
        events = seg[2:]
        assert sum(len(line) for line in events) >= 1000
        assert sum(len(line) for line in events[:-1]) < 1000  # closed right after


def test_a_second_process_starts_a_new_run_and_replay_takes_the_newest(tmp_path: Path
                                                                       ) -> None:
    recorded_busy_run(tmp_path)
    drv = Driver()
    rec = Recorder(str(tmp_path), drv.core, max_bytes=1 << 30, keep=10)
    drv.observers.append(rec)
    drv.start()
    rec.close()
    assert [(r, s) for r, s, _ in list_segments(str(tmp_path))] == [(1, 1), (2, 1)]
    assert load(str(tmp_path)).count == 1
    assert load(str(tmp_path), run=1).count == len(busy_run().journal)
    with pytest.raises(JournalError, match="no segments of run 7"):
        load(str(tmp_path), run=7)


def test_a_line_cut_short_by_a_kill_is_dropped_and_noted(tmp_path: Path) -> None:
    drv, rec = recorded_busy_run(tmp_path)
    path = Path(rec.path)
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # the last line loses its end
    journal = load(str(path))
    assert journal.segments[0].truncated
    assert journal.count == len(drv.journal) - 1
    assert Replayer(journal).run()


@pytest.mark.parametrize("content, message", [
    ("", "no header and checkpoint"),
    ('{"a": 1}\n{"b": 2}\n', "no header and checkpoint"),
    ('{"header": {"format": 3}}\n{"checkpoint": {}, "after": 0}\n', "journal format 3"),
])
def test_what_is_not_a_journal_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "run0001-seg0001.jsonl"
    path.write_text(content)
    with pytest.raises(JournalError, match=message):
        load(str(path))


def test_a_gap_in_the_sequence_is_refused(tmp_path: Path) -> None:
    _, rec = recorded_busy_run(tmp_path)
    all_lines = Path(rec.path).read_text().splitlines(keepends=True)
    del all_lines[5]
    Path(rec.path).write_text("".join(all_lines))
    with pytest.raises(JournalError, match="seq 5 where 4 was expected"):
        load(rec.path)


def test_a_write_error_stops_recording_without_failing_the_sidecar(tmp_path: Path, caplog
                                                                   ) -> None:
    drv = Driver()
    rec = Recorder(str(tmp_path), drv.core, max_bytes=1 << 30, keep=4)
    drv.observers.append(rec)

    class Full:
        def write(self, _: str) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass

    rec._file = Full()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, "sidecar.journal"):
        drv.start()
        drv.connect()
    assert not rec.active
    assert [r.getMessage() for r in caplog.records] == [
        f"journal: writing {rec.path} failed ([Errno 28] No space left on device); "
        "recording stopped, the sidecar goes on"]
    assert drv.core.step.state == "consuming"


def _runner(tmp_path: Path, **env: str) -> Runner:
    return build(config.load({**manager_env(tmp_path), **env}))


def _journal(runner: Runner) -> Journal | None:
    """The runner's journal observer, started as ``Runner.run`` starts it (None if off)."""
    journal = next((o for o in runner.observers if isinstance(o, Journal)), None)
    if journal is not None:
        journal.start(runner)
    return journal


def test_the_runner_records_to_the_volume_by_default(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    try:
        rec = _journal(runner)
        assert rec is not None and rec.active
        assert rec.directory == str(tmp_path / ".sidecar" / "journal")
        runner.feed(ev.UpstreamFinished())  # no effect to perform: no broker needed
        rec.close()
        [_, _, event] = lines(rec.path)
        assert event["seq"] == 1 and event["event"] == {"kind": "UpstreamFinished"}
        assert event["tr"] == [] and event["fx"] == []
        assert runner.core.upstream_finished
    finally:
        runner.ioloop.close()


def test_the_journal_can_be_moved_or_turned_off(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    runner = _runner(tmp_path, SIDECAR_JOURNAL_DIR=str(elsewhere),
                     SIDECAR_JOURNAL_MAX_BYTES="1MiB", SIDECAR_JOURNAL_SEGMENTS="2")
    try:
        rec = _journal(runner)
        assert rec is not None and rec.directory == str(elsewhere)
        assert (rec.max_bytes, rec.keep) == (1 << 20, 2)
        rec.close()
    finally:
        runner.ioloop.close()
    off = _runner(tmp_path, SIDECAR_JOURNAL="off")
    try:
        assert off.observers  # other observers (metrics), none of them a journal
        assert _journal(off) is None
        assert not any(isinstance(o, Recorder) for o in off.observers)
    finally:
        off.ioloop.close()
    assert not (tmp_path / ".sidecar").exists()


def test_an_unusable_journal_directory_is_a_warning_not_a_failure(tmp_path: Path, caplog
                                                                  ) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    runner = _runner(tmp_path, SIDECAR_JOURNAL_DIR=str(blocker / "journal"))
    try:
        with caplog.at_level(logging.WARNING, "sidecar.journal"):
            rec = _journal(runner)
        assert rec is not None and not rec.active  # it records nothing
        runner.feed(ev.UpstreamFinished())  # and the sidecar goes on
        assert "running without a journal" in caplog.text
    finally:
        runner.ioloop.close()


def test_a_relative_journal_dir_is_below_the_volume(tmp_path: Path) -> None:
    settings = config.load({**manager_env(tmp_path), "SIDECAR_JOURNAL_DIR": "logs/j"})
    assert settings.journal_path == os.path.join(str(tmp_path), "logs", "j")
    with pytest.raises(config.ConfigError, match="SIDECAR_JOURNAL"):
        config.load({**manager_env(tmp_path), "SIDECAR_JOURNAL": "maybe"})


def test_lines_are_encoded_as_compact_json_dumps_would(tmp_path: Path) -> None:
    """The journal's own encoder (one C encoder for every line) writes the very text of
    json.dumps with compact separators: the recorded fixtures, and a freshly recorded run."""
    from sidecar.shell.journal import _dumps

    _, rec = recorded_busy_run(tmp_path)
    paths = [rec.path, *sorted((Path(__file__).parent / "journals").glob("*.jsonl"))]
    for path in paths:
        for line in Path(path).read_text().splitlines():
            data = json.loads(line)
            assert _dumps(data) == json.dumps(data, separators=(",", ":")) == line
    odd = {"t": 0.1 + 0.2, "s": "é\u2028\"\\", "n": None, "b": (True, [False]), "e": {}}
    assert _dumps(odd) == json.dumps(odd, separators=(",", ":"))


def test_a_field_not_of_its_annotated_type_is_still_recorded_as_json_writes_it(
        tmp_path: Path) -> None:
    """The text encoders trust the annotations; a value that does not fit falls back to the
    dicts and json, so the line is still written (the sidecar never fails for its journal)."""
    from sidecar.core import effects as fx
    from sidecar.core.codec import encode_effect

    _, rec = recorded_busy_run(tmp_path)
    rec.begin()
    odd = fx.Exit(None, "x")  # type: ignore[arg-type]  # code is an int
    rec(ev.Tick(), 1.5, [odd], [])
    rec.close()
    last = lines(rec.path)[-1]
    assert last["fx"] == [encode_effect(odd)] and last["event"] == {"kind": "Tick"}


@pytest.mark.parametrize("flag", [2, -1])
def test_a_bool_field_holding_another_int_is_recorded_as_json_writes_it(
        tmp_path: Path, flag: int) -> None:
    """Not a silent "true" (-1) nor a lost line (2): json's text of the value."""
    _, rec = recorded_busy_run(tmp_path)
    rec.begin()
    rec(ev.DownloadFailed(1, 0, "not-found", "gone", flag, 1), 1.5, [], [])  # type: ignore[arg-type]
    rec.close()
    assert lines(rec.path)[-1]["event"]["transient"] == flag
