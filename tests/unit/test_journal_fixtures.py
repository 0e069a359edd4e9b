"""Journals recorded from real runs (tests/integration/test_journal.py: the real sidecar,
RabbitMQ, the S3 server and pyterum transformations) replay exactly, and what they show
obeys the contract.

Re-record them with `ITERUM_SIDECAR_RECORD_JOURNALS=tests/unit/journals python -m pytest
tests/integration/test_journal.py` after a change that alters the core's decisions (a
replay divergence here says exactly which decision changed).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from test_journal_properties import ack_gating_violations

from sidecar.cli import main
from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell.journal import load
from sidecar.tools.replay import Replayer

JOURNALS = Path(__file__).resolve().parent / "journals"
SCENARIOS = sorted(p.stem for p in JOURNALS.glob("*.jsonl"))


def replayed(name: str) -> tuple[Replayer, list[tuple]]:
    replayer = Replayer(load(str(JOURNALS / f"{name}.jsonl")))
    steps = []
    while (step := replayer.step()) is not None:
        steps.append((step.record.event, step.record.t, step.effects, step.transitions))
    assert replayer.divergence is None, replayer.divergence.describe()
    return replayer, steps


def effects_of(steps: list[tuple], kind: type) -> list:
    return [e for _, _, out, _ in steps for e in out if isinstance(e, kind)]


def test_the_fixtures_are_there() -> None:
    assert set(SCENARIOS) >= {"passthrough", "pair", "fanout", "dead_letter",
                              "crash_reconnect", "sigterm"}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_recorded_run_replays_and_keeps_the_contract(name: str) -> None:
    replayer, steps = replayed(name)
    assert replayer.steps == replayer.total > 10
    assert replayer.core.step.state == "exited" and replayer.exit is not None
    assert [t.label for t in replayer.fragment_tracks() if not t.finished] == []
    assert ack_gating_violations(steps) == []
    # every delivery settled once; every file downloaded or uploaded deleted once
    delivered = [e.tag for e, _, _, _ in steps if isinstance(e, ev.Delivered)]
    settled = [e.tag for e in effects_of(steps, fx.Ack) + effects_of(steps, fx.Nack)]
    assert Counter(settled) == Counter(delivered)
    made = Counter(d.dest for d in effects_of(steps, fx.DownloadFile))
    made += Counter(u.source for u in effects_of(steps, fx.UploadFile))
    missing = {d.dest for e, _, _, _ in steps if isinstance(e, ev.DownloadFailed)
               for d in effects_of(steps, fx.DownloadFile) if d.input_id == e.input_id}
    deleted = Counter(p for d in effects_of(steps, fx.DeleteFiles) for p in d.paths)
    assert deleted == made, (deleted - made, made - deleted, missing)


def final_states(replayer: Replayer, machine: str) -> Counter:
    return Counter(t.state for t in replayer.fragment_tracks() if t.machine == machine)


def test_passthrough_acks_each_input_after_its_output_is_recorded() -> None:
    replayer, _ = replayed("passthrough")
    assert final_states(replayer, "input") == {"acked": 3}
    assert final_states(replayer, "output") == {"recorded": 3}
    assert replayer.exit == fx.Exit(0, "done")


def test_pair_outputs_name_two_inputs_and_hold_both_acks() -> None:
    replayer, _ = replayed("pair")
    outputs = [m for (machine, _), m in replayer.models.items() if machine == "output"]
    assert sorted(len(o.predecessors) for o in outputs) == [2, 2]
    inputs = [m for (machine, _), m in replayer.models.items() if machine == "input"]
    for out in outputs:
        gated = {i.fragment_id for i in inputs if i.serial in out.gates}
        assert gated == set(out.predecessors)  # each pair output held both inputs' acks


def test_fanout_gives_three_outputs_per_input() -> None:
    replayer, _ = replayed("fanout")
    outputs = [m for (machine, _), m in replayer.models.items() if machine == "output"]
    assert sorted(Counter(o.predecessors for o in outputs).values()) == [3, 3]


def test_dead_letters_keep_the_reason() -> None:
    replayer, steps = replayed("dead_letter")
    assert final_states(replayer, "input") == {"dead_lettered": 2, "acked": 1}
    dead = [p for p in effects_of(steps, fx.Publish) if p.queue.endswith("-dead")]
    reasons = sorted(dict(p.headers)["x-iterum-error-class"] for p in dead)
    assert reasons == ["invalid-json", "missing-object"]


def test_the_crash_redispatches_the_held_fragment() -> None:
    replayer, steps = replayed("crash_reconnect")
    [track] = [t for t in replayer.fragment_tracks() if t.machine == "input"]
    assert [s for s, _ in track.states] == ["received", "downloaded", "dispatched",
                                            "dispatched", "processed", "uploaded",
                                            "published", "acked"]
    codes = [e.code for e in effects_of(steps, fx.Log)]
    assert "transformation-disconnected" in codes and "redispatched" in codes
    conns = [e.conn for e, _, _, _ in steps if isinstance(e, ev.Connected)
             and e.channel == "tts"]
    assert len(conns) == 2  # the killed transformation, then the new one


def test_sigterm_gives_back_what_cannot_finish() -> None:
    replayer, steps = replayed("sigterm")
    assert final_states(replayer, "input") == {"acked": 2, "requeued": 1}
    assert [e for e, _, _, _ in steps if isinstance(e, ev.ShutdownRequested)] == [
        ev.ShutdownRequested("SIGTERM")]
    assert len(effects_of(steps, fx.Nack)) == 1 and replayer.exit.code == 0


def test_a_tampered_real_journal_is_caught(tmp_path: Path, capsys) -> None:
    copy = tmp_path / "passthrough.jsonl"
    shutil.copyfile(JOURNALS / "passthrough.jsonl", copy)
    lines = copy.read_text().splitlines()
    for i, line in enumerate(lines):
        data = json.loads(line)
        if any(f["kind"] == "Ack" for f in data.get("fx", [])):
            data["fx"] = [f for f in data["fx"] if f["kind"] != "Ack"]  # "it never acked"
            lines[i] = json.dumps(data)
            seq = data["seq"]
            break
    copy.write_text("\n".join(lines) + "\n")
    assert main(["replay", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"replay DIVERGED at seq {seq} " in out
    assert "≠ recorded: (nothing)" in out and "≠ replayed: Ack(tag=" in out
