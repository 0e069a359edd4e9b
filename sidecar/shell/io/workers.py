"""The storage worker pool: a fixed number of daemon threads making transfers."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sidecar.storage")
Call = tuple[Callable[..., None], tuple]
Calls = deque[Call]


class WorkerPool:
    """A fixed number of daemon threads running transfers.

    Daemon, unlike ThreadPoolExecutor's (joined at interpreter exit): a transfer still
    hanging on S3 when the sidecar exits is abandoned, not waited for; the core has given
    its input back to the broker by then (docs/reliability.md, SIGTERM).

    A work item is a list of calls (a fragment's transfers): one queue put and one worker
    woken for all of them. The worker makes them in order, unless workers are idle: then
    it puts the rest back for one of them to share (a fragment of large files is not
    transferred one file at a time while the pool has nothing else to do)."""

    def __init__(self, size: int, name: str):
        self._tasks: queue.SimpleQueue[Calls | None] = queue.SimpleQueue()
        self._closed = False
        # one entry per worker waiting for a task; its length is a hint. list.append and
        # list.pop are atomic (the GIL): no lock to take twice per task
        self._idle: list[None] = []
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.submit_all([(fn, args)])

    def submit_all(self, calls: list[Call]) -> None:
        """One work item (one queue put, one worker woken) that makes these calls in order."""
        if not self._closed and calls:
            self._tasks.put(deque(calls))

    def shutdown(self) -> None:
        """Queued tasks are dropped; running ones end on their own, or with the process."""
        self._closed = True
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            self._idle.append(None)
            task = self._tasks.get()
            self._idle.pop()
            if task is None:
                return
            self._run(task)

    def _run(self, calls: Calls) -> None:
        while not self._closed:
            try:
                fn, args = calls.popleft()  # shared with the workers it was handed to
            except IndexError:
                return
            if calls and self._idle:
                self._tasks.put(calls)
            try:
                fn(*args)
            except Exception:  # the transfer functions post their own failures
                log.exception("storage worker: unexpected error")
