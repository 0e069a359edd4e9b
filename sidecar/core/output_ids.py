"""Deterministic output ids (§16.15): how many outputs each predecessor set has had."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from .models import OUTPUT_INDEX_LIMIT
from .protocol import output_id


class OutputIds:
    def __init__(self, step: str):
        self._step_name = step
        # predecessor set (sorted) -> outputs counted so far; LRU, bounded
        self._output_index: OrderedDict[tuple[str, ...], int] = OrderedDict()
        # predecessor -> the keys naming it: an index over _output_index, rebuilt on restore
        self._index_keys: dict[str, set[tuple[str, ...]]] = {}

    @property
    def output_index(self) -> Mapping[tuple[str, ...], int]:
        return self._output_index

    @property
    def index_keys(self) -> Mapping[str, set[tuple[str, ...]]]:
        return self._index_keys

    def next_id(self, predecessors: tuple[str, ...]) -> str:
        """The index counts outputs with these predecessors since they were delivered.

        It restarts only when a predecessor is delivered (or re-dispatched) again, so a late
        output (after done_with, even after the ack) never reuses an earlier output's id.
        """
        key = tuple(sorted(predecessors))
        index = self._output_index.pop(key, 0)
        self._output_index[key] = index + 1
        for p in set(key):
            self._index_keys.setdefault(p, set()).add(key)
        if len(self._output_index) > OUTPUT_INDEX_LIMIT:
            self._drop(next(iter(self._output_index)))
        return output_id(self._step_name, list(predecessors), index)

    def reset(self, fragment_id: str) -> None:
        """``fragment_id`` is processed again: its outputs get the same ids as before."""
        for key in list(self._index_keys.get(fragment_id, ())):
            self._drop(key)

    def _drop(self, key: tuple[str, ...]) -> None:
        self._output_index.pop(key, None)
        for p in set(key):
            keys = self._index_keys.get(p)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index_keys[p]

    def load(self, output_index: OrderedDict[tuple[str, ...], int]) -> None:
        self._output_index = output_index
        self._index_keys = rebuild_index_keys(output_index)


def rebuild_index_keys(output_index: Mapping[tuple[str, ...], int]
                       ) -> dict[str, set[tuple[str, ...]]]:
    keys: dict[str, set[tuple[str, ...]]] = {}
    for key in output_index:
        for p in set(key):
            keys.setdefault(p, set()).add(key)
    return keys
