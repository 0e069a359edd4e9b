"""What the kernel knows about a process: CPU (user+sys), resident memory and its peak.

psutil (the ``bench`` extra) is only needed for process trees and finding RabbitMQ.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    cpu: float  # seconds of user+sys, all threads
    user: float
    system: float
    rss: int  # bytes now
    hwm: int  # bytes, the process' peak resident set (VmHWM)


def sample(pid: int) -> Sample:
    """One reading of /proc/<pid>; raises ProcessLookupError once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    # after the ")": state is field 3, utime field 14, stime field 15 (1-based, man 5 proc)
    user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
    return Sample(user + system, user, system, _kib(status, "VmRSS:"), _kib(status, "VmHWM:"))


def threads_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """(user, sys) CPU seconds of the main thread ("loop") and of all other live threads
    together ("workers"), from /proc/<pid>/task/*/stat."""
    out = {"loop": [0.0, 0.0], "workers": [0.0, 0.0]}
    for tid in _tids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # the thread ended
        which = out["loop" if tid == pid else "workers"]
        which[0] += int(fields[11]) / TICK
        which[1] += int(fields[12]) / TICK
    return {k: (v[0], v[1]) for k, v in out.items()}


def switches(pid: int) -> dict[str, int]:
    """Context switches (voluntary + involuntary) of the main thread ("loop") and of the
    other live threads together ("workers"), from /proc/<pid>/task/*/status."""
    out = {"loop": 0, "workers": 0}
    for tid in _tids(pid):
        out["loop" if tid == pid else "workers"] += _switches_of(pid, tid)
    return out


def sched(pid: int) -> tuple[float, int]:
    """(CPU seconds at nanosecond resolution, context switches) summed over the live
    threads, from /proc/<pid>/task/*/schedstat and status: for short windows such as the
    idle measurement, where /proc/<pid>/stat's 10 ms ticks are too coarse."""
    cpu_ns, switched = 0, 0
    for tid in _tids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu_ns += int(f.read().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            continue
        switched += _switches_of(pid, tid)
    return cpu_ns / 1e9, switched


def _tids(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


def _switches_of(pid: int, tid: int) -> int:
    """A thread's context switches, voluntary and involuntary; 0 once it ended."""
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            return sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
    except (FileNotFoundError, ValueError, IndexError):
        return 0


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live descendants (e.g. granian's worker)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def find_rabbitmq() -> int | None:
    """The pid of the local RabbitMQ node (beam.smp running rabbit), to read its CPU."""
    import psutil

    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if p.info["name"] and p.info["name"].startswith("beam") and any(
                    "rabbit" in part for part in (p.info["cmdline"] or [])):
                return p.pid
        except psutil.Error:
            continue
    return None


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _kib(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


PERF_EVENTS = ("raw_syscalls:sys_enter", "syscalls:sys_enter_futex", "context-switches",
               "cpu-migrations")


def perf_stat(pid: int) -> tuple[subprocess.Popen[bytes], str]:
    """``perf stat`` on the sidecar's threads over the window (BENCH_PERF_STAT=1, root):
    system calls, futex calls, context switches and migrations, counted by the kernel.
    With BENCH_PERF_TRACE=1, ``perf trace -s`` instead: every system call by name and by
    thread (the loop thread apart), counted; tracing slows the sidecar several times over,
    so the timed figures of such a run mean nothing, only the counts. With
    BENCH_PERF_RECORD=PATH, ``perf record`` to PATH-<pid> instead (no counts), with the
    options in BENCH_PERF_RECORD_ARGS (by default ``-g``)."""
    fd, out = tempfile.mkstemp(prefix="perf-stat-")
    os.close(fd)
    if os.environ.get("BENCH_PERF_RECORD"):  # call graphs, read with perf report
        command = ["perf", "record", "-o", f"{os.environ['BENCH_PERF_RECORD']}-{pid}",
                   *os.environ.get("BENCH_PERF_RECORD_ARGS", "-g").split(), "-p", str(pid)]
    elif os.environ.get("BENCH_PERF_TRACE"):
        command = ["perf", "trace", "-s", "-o", out, "-p", str(pid)]
    else:
        command = ["perf", "stat", "-x,", "-o", out, "-e", ",".join(PERF_EVENTS), "-p", str(pid)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached before the first publish
    return proc, out


def perf_counts(counting: tuple[subprocess.Popen[bytes], str], n: int,
                pid: int = 0) -> dict[str, float]:
    proc, out = counting
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    text = Path(out).read_text()
    os.remove(out)
    if os.environ.get("BENCH_PERF_RECORD"):
        return {}
    if os.environ.get("BENCH_PERF_TRACE"):
        return {f"syscalls {who} {name} per fragment": calls / n
                for (who, name), calls in sorted(trace_summary(text, pid).items())}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in PERF_EVENTS and fields[0].isdigit():
            counts["perf " + fields[2] + " per fragment"] = int(fields[0]) / n
    return counts


def trace_summary(text: str, pid: int) -> dict[tuple[str, str], int]:
    """``perf trace -s`` output → calls by ("loop" | "others", system call): the thread
    whose id is the process id is the loop thread (sections read "comm (tid), N events")."""
    calls: dict[tuple[str, str], int] = {}
    who = None
    for line in text.splitlines():
        head = re.match(r"\s*\S.*\((\d+)\), \d+ events", line)
        if head:
            who = "loop" if int(head.group(1)) == pid else "others"
            continue
        row = line.split()
        if who and len(row) >= 3 and row[1].isdigit() and row[2].isdigit():
            calls[(who, row[0])] = calls.get((who, row[0]), 0) + int(row[1])
    return calls
