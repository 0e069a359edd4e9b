"""Keeping the sidecar's threads on one CPU when its container may use at most one CPU's
time (``SIDECAR_CPU_AFFINITY``, issue 14).

Under a CFS quota (Kubernetes' CPU limit, about 0.1 CPU for a sidecar) the loop thread and
the storage workers, free to run on every CPU of the node, wake together whenever the quota
is refilled and hand the GIL back and forth across CPUs: measured on two CPUs at 0.1 CPU,
1.4 times the CPU per fragment of the same sidecar kept on one CPU, twice the system time,
two thirds of its throughput (docs/performance.md). A container that may use at most one
CPU's time loses nothing by running on one CPU. So ``auto`` (the default) keeps every thread
on the CPU the process started on when the cgroup's limit is at most one CPU; ``one`` does
it whatever the limit; ``all`` leaves the scheduler alone.

Linux only; the affinity is set on the main thread before any other thread starts (threads
inherit it). Reading the limit or setting the affinity never stops the sidecar: a failure is
one warning and the threads stay where the scheduler puts them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("sidecar")


# --- the pure parts (tests/unit/test_cpus.py) -------------------------------------------


def own_paths(proc_self_cgroup: str) -> dict[str, str]:
    """/proc/self/cgroup as {controllers: path}: "" is cgroup v2's, else e.g. "cpu,cpuacct"."""
    out = {}
    for line in proc_self_cgroup.splitlines():
        if line.strip():
            _, controllers, path = line.split(":", 2)
            out[controllers] = path
    return out


def cgroup_dirs(mounts: str, proc_self_cgroup: str) -> list[tuple[int, Path, Path]]:
    """(version, mount point, this process's cgroup directory) in the cgroup2 hierarchy and
    in the v1 hierarchy with the cpu controller, where mounted (/proc/self/mounts)."""
    own = own_paths(proc_self_cgroup)
    v1_key = next((k for k in own if "cpu" in k.split(",")), None)
    found: dict[int, tuple[int, Path, Path]] = {}
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mountpoint, fstype, options = Path(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup2" and "" in own:
            found.setdefault(2, (2, mountpoint, mountpoint / own[""].lstrip("/")))
        elif fstype == "cgroup" and "cpu" in options:
            path = own[v1_key].lstrip("/") if v1_key else ""
            found.setdefault(1, (1, mountpoint, mountpoint / path))
    return list(found.values())


def limit_v2(cpu_max: str) -> float | None:
    """CPUs from cgroup v2's ``cpu.max`` ("max 100000": none)."""
    quota, _, period = cpu_max.strip().partition(" ")
    return None if quota == "max" else int(quota) / int(period or 100_000)


def limit_v1(quota_us: str, period_us: str) -> float | None:
    """CPUs from cgroup v1's ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us``."""
    quota = int(quota_us)
    return None if quota < 0 else quota / int(period_us)


def cpu_limit(mounts: str, proc_self_cgroup: str, read: Callable[[Path], str]
              ) -> float | None:
    """The lowest CPU limit on this process's cgroup and its ancestors up to the
    hierarchy's root (a container's own, or its pod's), None if there is none. ``read``
    raises OSError for a file that is not there (no cpu controller at that level)."""
    found = []
    for version, root, directory in cgroup_dirs(mounts, proc_self_cgroup):
        for d in [directory, *[p for p in directory.parents if p.is_relative_to(root)]]:
            limit = _limit_at(version, d, read)
            if limit is not None:
                found.append(limit)
    return min(found) if found else None


def _limit_at(version: int, d: Path, read: Callable[[Path], str]) -> float | None:
    try:
        if version == 2:
            return limit_v2(read(d / "cpu.max"))
        return limit_v1(read(d / "cpu.cfs_quota_us"), read(d / "cpu.cfs_period_us"))
    except (OSError, ValueError):
        return None


def current_cpu(thread_stat: str) -> int:
    """The CPU a thread last ran on: field 39 of /proc/thread-self/stat (after the command
    name in parentheses, which may hold spaces, the fields count from 3)."""
    return int(thread_stat.rpartition(")")[2].split()[36])


def wants_one_cpu(policy: str, limit: float | None) -> bool:
    return policy == "one" or (policy == "auto" and limit is not None and limit <= 1)


# --- the edge ---------------------------------------------------------------------------


def keep(policy: str) -> int | None:
    """Apply ``SIDECAR_CPU_AFFINITY`` to this thread (and so to every thread it starts):
    the CPU it now keeps to, or None. Call before any other thread starts."""
    if policy == "all" or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        allowed = os.sched_getaffinity(0)
        limit = cpu_limit(_text("/proc/self/mounts"), _text("/proc/self/cgroup"), _text)
        if len(allowed) < 2 or not wants_one_cpu(policy, limit):
            return None
        cpu = current_cpu(_text("/proc/thread-self/stat"))
        if cpu not in allowed:  # moved between the two reads: any allowed CPU will do
            cpu = min(allowed)
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError, IndexError) as err:
        log.warning("SIDECAR_CPU_AFFINITY=%s: could not keep the threads on one CPU (%s); "
                    "they run where the scheduler puts them", policy, err)
        return None
    why = f"the container may use {limit:g} CPU" if limit is not None else "as configured"
    log.info("threads kept on CPU %d of %d: %s (SIDECAR_CPU_AFFINITY=%s)",
             cpu, len(allowed), why, policy)
    return cpu


def _text(path: str | Path) -> str:
    return Path(path).read_text()
