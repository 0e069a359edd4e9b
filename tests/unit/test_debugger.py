"""`iterum-sidecar replay --step`: stepping, breakpoints, and looking at fragments, driven
through standard input as a person (or a pipe) would."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_journal import recorded_busy_run
from test_replay import edit_line
from unit_driver import STEP, Driver, fid, make_config

from sidecar.core import Core
from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.core.protocol import output_id
from sidecar.tools.replay import run_replay

A, B, D = fid("a"), fid("b"), fid("d")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Driver]:
    drv, _ = recorded_busy_run(tmp_path)
    return tmp_path, drv


def session(path: Path, commands: str, fragment: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = run_replay(str(path), step=True, fragment=fragment, out=out,
                      stdin=io.StringIO(commands))
    return code, out.getvalue()


def seq_of(drv: Driver, predicate) -> int:
    return next(i + 1 for i, step in enumerate(drv.journal) if predicate(*step))


def after_prompt(out: str, command: str) -> str:
    """What the debugger printed in answer to one command."""
    return out.split(f"(replay) {command}\n", 1)[1].split("(replay) ", 1)[0]


def test_next_shows_each_event_its_transitions_and_effects(recorded) -> None:
    path, _ = recorded
    code, out = session(path, "next\nnext 2\nquit\n")
    assert code == 0
    assert after_prompt(out, "next") == (
        "[1] +0.000s BrokerReady()\n"
        "    step #0: starting -> consuming  (broker_ready)\n"
        "    effects: StartConsuming(prefetch=4)\n")
    assert after_prompt(out, "next 2") == ("[2] +0.001s Connected(conn=1, channel=tts)\n"
                                           "[3] +0.002s Connected(conn=2, channel=fts)\n")


def test_a_state_breakpoint_stops_where_a_fragment_enters_it(recorded) -> None:
    path, drv = recorded
    first_ack = seq_of(drv, lambda e, t, out, trs: any(tr.dest == "acked" for tr in trs))
    code, out = session(path, "break state=acked\ncontinue\neffects\nshow aaaa\nquit\n")
    assert code == 0
    answer = after_prompt(out, "continue")
    assert answer.startswith(f"breakpoint state=acked hit:\n[{first_ack}] ")
    assert "input #1 aaaaaaaaaaaa: published -> acked  (ack)" in answer
    assert "{'kind'" not in answer  # effects are shown as objects, not journal dicts
    assert "  Ack(tag=1)" in after_prompt(out, "effects")
    shown = after_prompt(out, "show aaaa")
    assert shown.startswith(f"input #1 {A}\n  state: acked (finished)\n  history:\n")
    assert [ln.split()[1] for ln in shown.splitlines() if ln.startswith("    +")] == [
        "received", "downloaded", "dispatched", "processed", "uploaded", "published", "acked"]
    assert f"s3://h-up-output/iterum_data/x.jpg -> /vol/h-up-output/{A}/x.jpg" in shown
    assert "outputs naming it: output #5" in shown and "output #6" in shown
    assert "(gates its ack)" in shown
    assert shown.rstrip().endswith("waiting for: nothing")


def test_show_an_input_in_flight_says_what_it_waits_for(recorded) -> None:
    path, _ = recorded
    _, out = session(path, "break state=processed\ncontinue\nshow aaaa\nlist\nquit\n")
    shown = after_prompt(out, "show aaaa")
    assert "state: processed (in flight)" in shown
    assert "waiting for: upload of output(s) #5, #6; confirms of output(s) #5, #6" in shown
    listed = after_prompt(out, "list").splitlines()
    assert listed[0] == "step: consuming; 6 in flight at +0.012s"
    assert [row.split()[:4] for row in listed[1:]] == [
        ["input", "#1", "aaaaaaaaaaaa", "processed"],
        ["input", "#2", "bbbbbbbbbbbb", "dispatched"],
        ["input", "#3", "(no", "id)"],
        ["input", "#4", "cccccccccccc", "dead_lettering"],
        ["output", "#5", output_id(STEP, [A, B], 0)[:12], "received"],
        ["output", "#6", output_id(STEP, [A], 0)[:12], "received"]]


def test_event_and_fragment_breakpoints(recorded) -> None:
    path, drv = recorded
    rejected = seq_of(drv, lambda e, *_: isinstance(e, ev.PublishRejected))
    d_delivered = seq_of(drv, lambda e, *_: isinstance(e, ev.Delivered)
                         and D.encode() in e.body)
    _, out = session(path, "break event=PublishRejected fragment=dddd\nbreak\ncontinue\n"
                              "continue\ndelete 1\nbreak\nwhere\nquit\n")
    assert after_prompt(out, "break event=PublishRejected fragment=dddd") == (
        "breakpoint 1: event=publishrejected\nbreakpoint 2: fragment=dddd\n")
    first, second = out.split("(replay) continue\n")[1:3]
    assert first.startswith(f"breakpoint event=publishrejected hit:\n[{rejected}] ")
    assert second.startswith(f"breakpoint fragment=dddd hit:\n[{d_delivered}] ")
    assert after_prompt(out, "delete 1") == "deleted breakpoint 1: event=publishrejected\n"
    core = Core(make_config())  # the state there, from the in-memory run
    for event, t, _, _ in drv.journal[:d_delivered]:
        core.handle(event, t)
    assert after_prompt(out, "where") == (
        f"after event {d_delivered}: {d_delivered} of {len(drv.journal)} replayed, step "
        f"{core.step.state}, {core.in_flight} in flight\n")


def test_following_one_fragment_steps_over_everything_else(recorded) -> None:
    path, drv = recorded
    code, out = session(path, "next 100\nhistory 100\nquit\n", fragment="bbbb")
    assert code == 0
    shown = [int(ln[1:ln.index("]")]) for ln in after_prompt(out, "next 100").splitlines()
             if ln.startswith("[")]
    # b's delivery, its download, its dispatch happen with it; the N→1 output #5 names it
    delivered = seq_of(drv, lambda e, *_: isinstance(e, ev.Delivered) and B.encode() in e.body)
    assert shown[0] == delivered
    done = seq_of(drv, lambda e, *_: isinstance(e, ev.FrameReceived)
                  and e.payload == b'{"fragment_id": "' + B.encode() + b'"}')
    assert done in shown
    acked = seq_of(drv, lambda e, t, out, trs: any(
        isinstance(x, fx.Ack) and x.tag == 2 for x in out))
    assert acked in shown
    # nothing about a alone (a's own done_with) or d
    a_done = seq_of(drv, lambda e, *_: isinstance(e, ev.FrameReceived)
                    and e.payload == b'{"fragment_id": "' + A.encode() + b'"}')
    assert a_done not in shown
    assert "dddddddddddd" not in after_prompt(out, "next 100")
    assert "end of the journal: 38 events replayed, all as recorded" in out
    history = after_prompt(out, "history 100").splitlines()
    assert [int(ln[1:ln.index("]")]) for ln in history] == shown
    # only b's input (#2) and the output naming it (#5) appear in the transitions listed
    assert {s for ln in history for s in re.findall(r"#(\d+)", ln)} == {"2", "5"}


def test_a_divergence_while_stepping_is_shown_and_the_exit_code_is_1(recorded) -> None:
    path, drv = recorded
    seq = seq_of(drv, lambda e, t, out, trs: any(isinstance(x, fx.Ack) for x in out))
    [segment] = list(path.iterdir())

    def change(line: dict) -> None:
        for f in line["fx"]:
            if f["kind"] == "Ack":
                f["tag"] = 99

    edit_line(str(segment), seq, change)
    code, out = session(path, "continue\nnext\nquit\n")
    assert code == 1
    assert f"replay DIVERGED at seq {seq} " in after_prompt(out, "continue")
    assert "replay DIVERGED" in after_prompt(out, "next")


def test_mistakes_get_a_hint_and_end_of_input_ends_the_session(recorded) -> None:
    path, _ = recorded
    code, out = session(path, "frobnicate\nbreak state=nowhere\nbreak speed=3\nnext x\n"
                              "show ffff\nhistory\n")
    assert code == 0
    assert "unknown command 'frobnicate'; try help" in out
    assert "no state 'nowhere'; states: " in out
    assert "not a breakpoint: 'speed=3'" in out
    assert "usage: next [n]" in out
    assert "no fragment 'ffff' so far" in out
    assert "nothing replayed yet" in out


def test_the_command_works_with_piped_standard_input(recorded) -> None:
    path, _ = recorded
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "sidecar", "replay", str(path), "--step"],
                          input="next\nquit\n", capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "(replay) next\n[1] +0.000s BrokerReady()\n" in done.stdout
