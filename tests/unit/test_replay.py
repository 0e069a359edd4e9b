"""`iterum-sidecar replay`: a recorded run replays exactly; a tampered one is caught at its
first divergence; the timeline and the summary say what happened to each fragment."""

from __future__ import annotations

import json
from pathlib import Path

from test_journal import recorded_busy_run
from unit_driver import Driver, fid

from sidecar.cli import main
from sidecar.core import events as ev
from sidecar.shell.journal import Recorder, load
from sidecar.tools.replay import Replayer

A, B = fid("a"), fid("b")


def replay(capsys, *args: str) -> tuple[int, str]:
    code = main(["replay", *args])
    return code, capsys.readouterr().out


def edit_line(path: str, seq: int, change) -> None:
    """Apply ``change`` to the decoded line of event ``seq`` and write it back."""
    text = Path(path).read_text().splitlines()
    for i, line in enumerate(text):
        data = json.loads(line)
        if data.get("seq") == seq:
            change(data)
            text[i] = json.dumps(data)
    Path(path).write_text("\n".join(text) + "\n")


def timed_run(directory: Path) -> Driver:
    """One fragment with known clock readings, recorded."""
    drv = Driver()
    rec = Recorder(str(directory), drv.core, max_bytes=1 << 30, keep=4)
    drv.observers.append(rec)
    drv.feed(ev.BrokerReady(), at=100.0)
    drv.feed(ev.Connected(1, "tts"), at=100.0)
    drv.feed(ev.Connected(2, "fts"), at=100.0)
    [download] = drv.deliver_fragment(7, A)  # t=100.001
    drv.feed(ev.FileDownloaded(download.input_id, 0, 10), at=100.5)  # and dispatched
    out = drv.feed(ev.FrameReceived(2, b'{"files":[{"name":"o","path":"/vol/o"}],'
                                       b'"metadata":{"predecessors":["' + A.encode() + b'"]}}'),
                   at=102.0)
    drv.feed(ev.FrameReceived(2, json.dumps({"fragment_id": A}).encode()), at=103.0)
    [upload] = [e for e in out if type(e).__name__ == "UploadFile"]
    [publish] = [e for e in drv.feed(ev.FileUploaded(upload.output_id, 0, 1), at=103.25)
                 if type(e).__name__ == "Publish"]
    [lineage] = [e for e in drv.feed(ev.PublishConfirmed(publish.publish_id), at=103.5)
                 if type(e).__name__ == "Publish"]
    drv.feed(ev.PublishConfirmed(lineage.publish_id), at=104.0)
    rec.close()
    return drv


def test_a_recorded_run_replays_and_prints_timeline_and_summary(tmp_path: Path, capsys
                                                                ) -> None:
    drv, _ = recorded_busy_run(tmp_path)
    code, out = replay(capsys, str(tmp_path))
    assert code == 0
    assert f"replay OK: {len(drv.journal)} events, every transition and effect as recorded" in out
    assert "events 1..38, replayed from the start of the run" in out
    timeline = [ln.strip() for ln in out.splitlines() if ln.startswith("  input ")
                or ln.startswith("  output ")]
    assert len(timeline) == 7  # 5 inputs (one invalid body) and 2 outputs
    assert timeline[0].startswith("input  #1    aaaaaaaaaaaa")
    assert timeline[0].endswith("→ uploaded 7.0ms → published 0µs → acked")
    assert "input  #3    (no id)" in timeline[2] and timeline[2].endswith("→ dead_lettered")
    assert "inputs: 3 acked, 2 dead_lettered" in out
    assert "outputs: 2 recorded" in out
    assert "step: exited, exit code 0 (done)" in out


def test_the_timeline_gives_the_time_spent_in_each_state(tmp_path: Path, capsys) -> None:
    timed_run(tmp_path)
    code, out = replay(capsys, str(tmp_path))
    assert code == 0
    [inp] = [ln for ln in out.splitlines() if ln.startswith("  input ")]
    assert inp.endswith(
        "+   0.001s  received 499.0ms → downloaded 0µs → dispatched 2.50s → processed 250.0ms"
        " → uploaded 750.0ms → published 0µs → acked")
    [output] = [ln for ln in out.splitlines() if ln.startswith("  output ")]
    assert output.endswith("received 1.25s → uploaded 250.0ms → published 500.0ms → recorded")
    assert "10 events over 4.00s (loop clock), 1 input(s), 1 output(s)" in out


def test_a_journal_that_ends_mid_run_lists_the_unfinished(tmp_path: Path, capsys) -> None:
    drv = Driver()
    rec = Recorder(str(tmp_path), drv.core, max_bytes=1 << 30, keep=4)
    drv.observers.append(rec)
    drv.start()
    drv.connect()
    drv.ready_input(1, A)
    rec.close()
    code, out = replay(capsys, str(tmp_path))
    assert code == 0
    assert "dispatched (" in out and "so far, not finished)" in out
    assert "not finished at the end of the journal: 1 (input #1 dispatched)" in out
    assert "step: consuming, no exit recorded" in out


def test_fragment_and_limit_select_the_timeline(tmp_path: Path, capsys) -> None:
    recorded_busy_run(tmp_path)
    _, out = replay(capsys, str(tmp_path), "--fragment", "bbbb")
    rows = [ln.split()[:3] for ln in out.splitlines()
            if ln.startswith(("  input ", "  output "))]
    # b's input, and the N→1 output that names it (with a)
    assert [r[:2] for r in rows] == [["input", "#2"], ["output", "#5"]]
    _, out = replay(capsys, str(tmp_path), "--limit", "2")
    assert "... and 5 more (--limit 0 shows all, --fragment ID one fragment)" in out
    _, out = replay(capsys, str(tmp_path), "--quiet")
    assert "timeline" not in out and "summary:" in out


def test_a_duplicate_delivery_shows_as_dropped_not_unfinished(tmp_path: Path, capsys) -> None:
    drv = Driver()
    rec = Recorder(str(tmp_path), drv.core, max_bytes=1 << 30, keep=4)
    drv.observers.append(rec)
    drv.start()
    drv.deliver_fragment(1, A)
    drv.deliver_fragment(2, A)  # the same fragment again while the first is in flight
    rec.close()
    _, out = replay(capsys, str(tmp_path))
    assert "received → dropped (a duplicate of a fragment in flight)" in out
    assert "not finished at the end of the journal: 1 (input #1 received)" in out


def test_a_tampered_effect_is_the_first_divergence(tmp_path: Path, capsys) -> None:
    drv, rec = recorded_busy_run(tmp_path)
    [seq] = [i + 1 for i, (_, _, out, _) in enumerate(drv.journal)
             if any(type(e).__name__ == "Ack" for e in out)][:1]

    def change(line: dict) -> None:
        for f in line["fx"]:
            if f["kind"] == "Ack":
                f["tag"] = 99

    edit_line(rec.path, seq, change)
    code, out = replay(capsys, str(tmp_path))
    assert code == 1
    assert f"replay DIVERGED at seq {seq} " in out and "the effects differ" in out
    assert "≠ recorded: Ack(tag=99)" in out
    assert "≠ replayed: Ack(tag=" in out
    assert "replay OK" not in out


def test_a_tampered_event_makes_the_transitions_differ(tmp_path: Path, capsys) -> None:
    drv, rec = recorded_busy_run(tmp_path)
    seq = next(i + 1 for i, (e, _, _, _) in enumerate(drv.journal)
               if isinstance(e, ev.FrameReceived) and e.payload == json.dumps(
                   {"fragment_id": A}).encode())

    def change(line: dict) -> None:  # done_with for an unknown fragment instead
        line["event"]["payload"] = json.dumps({"fragment_id": fid("z")})

    edit_line(rec.path, seq, change)
    code, out = replay(capsys, str(tmp_path))
    assert code == 1
    assert f"replay DIVERGED at seq {seq} " in out and "the transitions differ" in out
    assert "≠ recorded: input #1 aaaaaaaaaaaa: dispatched --done_with--> processed" in out
    assert "≠ replayed: (nothing)" in out


def test_a_checkpoint_that_disagrees_with_the_replayed_state_is_a_divergence(
        tmp_path: Path, capsys) -> None:
    recorded_busy_run(tmp_path, max_bytes=4000, keep=100)
    segments = sorted(tmp_path.iterdir())
    assert len(segments) >= 3
    second = segments[1]
    lines = second.read_text().splitlines()
    checkpoint = json.loads(lines[1])
    checkpoint["checkpoint"]["rr"] += 1  # the round-robin position of dispatch
    lines[1] = json.dumps(checkpoint)
    second.write_text("\n".join(lines) + "\n")
    code, out = replay(capsys, str(tmp_path))
    assert code == 1
    assert f"differs from the checkpoint at the start of {second}" in out
    assert "(fields: rr)" in out
    # the tampered segment on its own still replays: it starts from its own checkpoint
    assert Replayer(load(str(second))).run() in (True, False)


def test_a_journal_that_cannot_be_read_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert "iterum-sidecar replay: cannot read" in capsys.readouterr().err
    assert main(["replay", str(tmp_path)]) == 2
    assert "no journal segments" in capsys.readouterr().err


def test_an_unknown_event_kind_is_an_unreadable_journal(tmp_path: Path, capsys) -> None:
    _, rec = recorded_busy_run(tmp_path)
    edit_line(rec.path, 4, lambda line: line["event"].update(kind="Nope"))
    assert main(["replay", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{rec.path}:6: not a journal line (unknown kind" in err  # header, checkpoint, 1..4


def test_an_event_the_core_cannot_digest_is_a_divergence_not_a_crash(tmp_path: Path, capsys
                                                                   ) -> None:
    drv, rec = recorded_busy_run(tmp_path)
    seq = next(i + 1 for i, (e, _, _, _) in enumerate(drv.journal)
               if isinstance(e, ev.FileDownloaded))
    # a download completion for an input id the core never created is ignored: no
    # crash, but no dispatch either, so the replay departs from the recording there
    edit_line(rec.path, seq, lambda line: line["event"].update(input_id=999))
    code, out = replay(capsys, str(tmp_path))
    assert code == 1
    assert f"replay DIVERGED at seq {seq} " in out and "Traceback" not in out


def test_a_core_that_raises_on_a_replayed_event_is_a_divergence(tmp_path: Path, capsys
                                                                ) -> None:
    drv, rec = recorded_busy_run(tmp_path)
    lines = Path(rec.path).read_text().splitlines()
    checkpoint = json.loads(lines[1])
    checkpoint["checkpoint"]["deadlines"] = {"bogus": 0.0}  # a deadline the core never sets
    lines[1] = json.dumps(checkpoint)
    Path(rec.path).write_text("\n".join(lines) + "\n")
    seq = next(i + 1 for i, (e, _, _, _) in enumerate(drv.journal) if isinstance(e, ev.Tick))
    code, out = replay(capsys, str(tmp_path))
    assert code == 1
    assert f"replay DIVERGED at seq {seq} " in out
    assert "the core raised KeyError: 'bogus'" in out
