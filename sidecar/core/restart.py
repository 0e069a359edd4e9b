"""Restart knowledge: what a killed predecessor on this volume had done (ev.Resume,
sidecar/shell/recovery.py), kept until the inputs it names are delivered again or the
input ends."""

from __future__ import annotations

from collections.abc import Mapping

# input id -> (sha256 of its body, ids of its outputs not yet recorded)
ResumeInputs = dict[str, tuple[str, tuple[str, ...]]]
# output id -> (stage: "uploaded", "published" or "recorded" (here), queue, descriptor)
ResumeOutputs = dict[str, tuple[str, str, bytes]]
# input id -> (files, dirs) the transformation may still read; deleted at the end
Leftovers = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]


class Restart:
    def __init__(self) -> None:
        self._resume_inputs: ResumeInputs = {}
        self._resume_outputs: ResumeOutputs = {}
        self._leftovers: Leftovers = {}

    @property
    def resume_inputs(self) -> Mapping[str, tuple[str, tuple[str, ...]]]:
        return self._resume_inputs

    @property
    def resume_outputs(self) -> Mapping[str, tuple[str, str, bytes]]:
        return self._resume_outputs

    @property
    def leftovers(self) -> Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        return self._leftovers

    def learn(self, inputs: ResumeInputs, outputs: ResumeOutputs, leftovers: Leftovers) -> None:
        self._resume_inputs = inputs
        self._resume_outputs = outputs
        self._leftovers = leftovers

    def take_input(self, fragment_id: str) -> tuple[str, tuple[str, ...]] | None:
        return self._resume_inputs.pop(fragment_id, None)

    def take_leftover(self, fragment_id: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        return self._leftovers.pop(fragment_id, None)

    def output(self, output_id: str) -> tuple[str, str, bytes] | None:
        return self._resume_outputs.get(output_id)

    def recorded(self, output_id: str) -> None:
        """The output's lineage is confirmed here: nothing of it is left to publish."""
        known = self._resume_outputs.get(output_id)
        if known is not None:
            self._resume_outputs[output_id] = ("recorded", known[1], b"")

    def prune(self) -> None:
        """Keep only the outputs some remembered input still names (bounded knowledge)."""
        named = {oid for _, outs in self._resume_inputs.values() for oid in outs}
        for oid in [o for o in self._resume_outputs if o not in named]:
            del self._resume_outputs[oid]

    def forget(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Nothing more can be delivered: drop the knowledge; the leftovers' files and dirs
        to delete."""
        self._resume_inputs.clear()
        self._resume_outputs.clear()
        files = tuple(p for f, _ in self._leftovers.values() for p in f)
        dirs = tuple(d for _, ds in self._leftovers.values() for d in ds)
        self._leftovers.clear()
        return files, dirs
