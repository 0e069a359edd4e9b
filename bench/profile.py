"""Summaries of py-spy's collapsed stacks (``py-spy record --format raw``).

Each line of the file is ``frame;frame;...;frame COUNT`` from the root (the thread) to the
leaf. Three views, as percentages of all on-CPU samples of the process:

* ``self``: the leaf functions (where the interpreter actually was);
* ``inclusive``: every function on the stack (a function counts once per sample);
* ``owner``: each sample charged to the innermost frame that belongs to a component we can
  act on (the sidecar's modules, pika, minio, urllib3, tenacity, transitions, ...), so the
  standard library's json, socket or threading time is charged to whoever called it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
OWNERS = (  # the first that matches; the more specific first
    ("sidecar/core/codec.py", "sidecar journal"),
    ("sidecar/core/", "sidecar core (decisions)"),
    ("states/", "states (lifecycles)"),
    ("sidecar/shell/journal.py", "sidecar journal"),
    ("sidecar/shell/recovery.py", "sidecar journal"),
    ("sidecar/shell/metrics.py", "sidecar metrics observer"),
    ("sidecar/shell/tallies.py", "sidecar metrics observer"),
    ("sidecar/shell/loop.py", "sidecar loop (shell)"),
    ("sidecar/shell/io/amqp.py", "sidecar amqp adapter"),
    ("sidecar/shell/io/reconnect.py", "sidecar amqp adapter"),
    ("sidecar/shell/io/acks.py", "sidecar amqp adapter"),
    ("sidecar/shell/io/pika_", "sidecar amqp adapter"),
    ("sidecar/shell/io/sockets.py", "sidecar sockets adapter"),
    ("sidecar/shell/io/storage.py", "sidecar storage adapter"),
    ("sidecar/shell/io/transfers.py", "sidecar storage adapter"),
    ("sidecar/shell/io/retries.py", "sidecar storage adapter"),
    ("sidecar/shell/io/errors.py", "sidecar storage adapter"),
    ("sidecar/shell/io/workers.py", "sidecar storage adapter"),
    ("sidecar/shell/io/s3", "sidecar storage adapter"),
    ("sidecar/shell/io/multipart.py", "sidecar storage adapter"),
    ("sidecar/shell/io/integrity.py", "sidecar storage adapter"),
    ("sidecar/shell/io/manager.py", "sidecar manager poll"),
    ("sidecar/shell/logs.py", "logging"),
    ("sidecar/", "sidecar other"),
    ("transitions/", "transitions"),
    ("tenacity/", "tenacity"),
    ("minio/", "minio"),
    ("urllib3/", "urllib3"),
    ("requests/", "requests"),
    ("pika/", "pika"),
    ("concurrent/futures/", "thread pool"),
    ("logging/", "logging"),
)


def parse(path: str) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = []
            for raw in stack.split(";"):
                m = _FRAME.match(raw)
                frames.append((m.group("func"), m.group("file")) if m else (raw, ""))
            stacks.append((frames, int(count)))
    return stacks


def owner(frames: list[tuple[str, str]]) -> str:
    for _func, file in reversed(frames):
        for prefix, name in OWNERS:
            if prefix in file:
                return name
    return "other"


def thread_of(frames: list[tuple[str, str]]) -> str:
    name = frames[0][0] if frames else "?"
    # "thread (0x7f...)" or a thread name as py-spy shows it; group the storage workers
    name = re.sub(r"\s*\(0x[0-9a-f]+\)$", "", name)
    return re.sub(r"_\d+$", "_N", name)


def summarize(path: str, top: int = 25) -> dict[str, Any]:
    stacks = parse(path)
    total = sum(c for _, c in stacks)
    if not total:
        return {"samples": 0}
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for frames, count in stacks:
        func, file = frames[-1]
        self_[f"{func} ({file})"] += count
        for key in {f"{f} ({p})" for f, p in frames[1:]}:
            incl[key] += count
        owners[owner(frames)] += count
        threads[thread_of(frames)] += count

    def pct(counter: Counter[str], n: int) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in counter.most_common(n)]

    return {"samples": total, "by_owner": pct(owners, 30), "by_thread": pct(threads, 10),
            "self": pct(self_, top), "inclusive": pct(incl, top)}


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary.get('samples', 0)} samples"]
    for key, title in (("by_owner", "by owner"), ("by_thread", "by thread"),
                       ("self", "self (leaf)"), ("inclusive", "inclusive")):
        if summary.get(key):
            lines.append(f"\n{title}:")
            lines.extend(f"  {p:5.1f}%  {k}" for k, p in summary[key])
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(summarize(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25)))
