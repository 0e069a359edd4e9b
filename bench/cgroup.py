"""``python -m bench whole --cpu-quota Q``: a measured process runs in a fresh cgroup of its
own under a CFS quota of Q CPUs, as the sidecar's container does in production (about 0.1).

The cgroup is made as a child of the bench's own cpu cgroup (any outer limit still
applies), with cgroup v2's ``cpu.max`` where the cpu controller is available there, else
cgroup v1's ``cpu.cfs_quota_us``, a period of 100 ms. The process enters it before it runs
a line of its own: ``wrapper`` is a ``sh`` that writes its pid into ``cgroup.procs`` and
then ``exec``s the command (same pid, so ``Popen.pid`` and ``os.wait4`` are the process
measured; the shell's own few hundred µs are in its rusage). ``preexec_fn`` would do the
same without the shell but is unsafe with the bench's threads. After the process exits,
``cpu.stat`` gives the periods it was throttled in and for how long, and the cgroup is
removed. Without a cgroup cpu controller one can write to, the bench stops with one line:
it never measures without the quota it was asked for.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.shell.cpus import cgroup_dirs

PERIOD_US = 100_000  # the CFS period, as Kubernetes sets it
MIN_QUOTA_US = 1_000  # the kernel's lowest quota
WRAPPER = 'echo $$ > "$0" || exit 125; exec "$@"'  # $0: the cgroup.procs file
_names = itertools.count(1)


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 2: cpu.max; 1: cpu.cfs_period_us and cpu.cfs_quota_us
    parent: Path  # the bench's own cgroup there: the measured ones are made inside it


@dataclass
class Quota:
    """One measured process's cgroup while it exists; ``stat`` is filled in when it is
    removed."""
    path: Path
    version: int
    stat: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> list[str]:
        return wrapper(self.path / "cgroup.procs")


# --- the pure parts (tests/unit/test_bench_cgroup.py) -----------------------------------


def hierarchy(mounts: str, proc_self_cgroup: str, v2_controllers: Callable[[Path], str]
              ) -> Hierarchy | None:
    """Where to make the cgroups: v2 if a cgroup2 mount has the cpu controller available in
    the bench's own cgroup (``v2_controllers`` reads its ``cgroup.controllers``), else the
    v1 hierarchy with the cpu controller; None if there is neither."""
    dirs = {version: d for version, _, d in cgroup_dirs(mounts, proc_self_cgroup)}
    if 2 in dirs and "cpu" in v2_controllers(dirs[2]).split():
        return Hierarchy(2, dirs[2])
    return Hierarchy(1, dirs[1]) if 1 in dirs else None


def quota_writes(version: int, fraction: float) -> list[tuple[str, str]]:
    """The files to write (in order) for a quota of ``fraction`` of one CPU."""
    quota = max(MIN_QUOTA_US, round(fraction * PERIOD_US))
    if version == 2:
        return [("cpu.max", f"{quota} {PERIOD_US}")]
    return [("cpu.cfs_period_us", str(PERIOD_US)), ("cpu.cfs_quota_us", str(quota))]


def throttling(version: int, cpu_stat: str) -> dict[str, Any]:
    """From ``cpu.stat``: the periods the cgroup ran in, those it was throttled in, and the
    time it was throttled (v1 gives nanoseconds, v2 microseconds)."""
    stat = {k: int(v) for k, v in (line.split() for line in cpu_stat.splitlines() if line)}
    throttled = stat["throttled_usec"] / 1e6 if version == 2 else stat["throttled_time"] / 1e9
    return {"periods": stat["nr_periods"], "throttled_periods": stat["nr_throttled"],
            "throttled_s": throttled}


def wrapper(procs: Path) -> list[str]:
    """The command prefix that puts the process in the cgroup before it runs."""
    return ["sh", "-c", WRAPPER, str(procs)]


def quota_argument(text: str) -> float:
    """An argparse type: a fraction of one CPU, at least 0.01 (the kernel's 1 ms of 100)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= MIN_QUOTA_US / PERIOD_US:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction of one CPU, at least 0.01")
    return value


# --- the cgroups ------------------------------------------------------------------------


def find() -> Hierarchy:
    """The hierarchy to use on this machine, checked by making and removing a cgroup."""
    def controllers(path: Path) -> str:
        try:
            return (path / "cgroup.controllers").read_text()
        except OSError:
            return ""

    found = hierarchy(Path("/proc/self/mounts").read_text(),
                      Path("/proc/self/cgroup").read_text(), controllers)
    if found is None:
        raise SystemExit("--cpu-quota: no cgroup with the cpu controller is mounted")
    try:
        with limited(found, 1.0):
            pass
    except OSError as err:
        raise SystemExit(f"--cpu-quota: cannot make a cgroup with a CPU quota under "
                         f"{found.parent} (cgroup v{found.version}): {err}") from None
    return found


@contextlib.contextmanager
def limited(where: Hierarchy, fraction: float) -> Iterator[Quota]:
    """A fresh cgroup under ``where`` with the quota; removed on the way out, after its
    ``cpu.stat`` has been read into the ``Quota``."""
    if where.version == 2 and "cpu" not in (where.parent / "cgroup.subtree_control"
                                            ).read_text().split():
        (where.parent / "cgroup.subtree_control").write_text("+cpu")
    path = where.parent / f"bench-quota-{os.getpid()}-{next(_names)}"
    path.mkdir()
    quota = Quota(path, where.version)
    try:
        for name, text in quota_writes(where.version, fraction):
            (path / name).write_text(text)
        yield quota
    finally:
        try:
            quota.stat = {"cpus": fraction, "cgroup_version": where.version,
                          **throttling(where.version, (path / "cpu.stat").read_text())}
        finally:
            _remove(path)


def _remove(path: Path) -> None:
    """rmdir, waiting briefly for a killed process to leave (the cgroup must be empty)."""
    for _ in range(50):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.1)
    path.rmdir()
