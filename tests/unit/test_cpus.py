"""SIDECAR_CPU_AFFINITY: the CPU limit read from the cgroup, the choice, and the affinity
set before the threads start (sidecar/shell/cpus.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.shell import cpus

V1_MOUNTS = """sysfs /sys sysfs rw 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
"""
V1_CGROUP = "5:memory:/kubepods/pod1/c1\n3:cpu,cpuacct:/kubepods/pod1/c1\n"
V2_MOUNTS = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"
V2_CGROUP = "0::/kubepods/pod1/c1\n"


def reader(files: dict[str, str]):
    def read(path: Path) -> str:
        try:
            return files[str(path)]
        except KeyError:
            raise FileNotFoundError(path) from None
    return read


def test_the_cgroup_directories_are_found_in_either_hierarchy() -> None:
    v1 = Path("/sys/fs/cgroup/cpu,cpuacct")
    assert cpus.cgroup_dirs(V1_MOUNTS, V1_CGROUP) == [(1, v1, v1 / "kubepods/pod1/c1")]
    assert cpus.cgroup_dirs(V2_MOUNTS, V2_CGROUP) == [
        (2, Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/kubepods/pod1/c1"))]
    assert cpus.cgroup_dirs("proc /proc proc rw 0 0\n", V2_CGROUP) == []


@pytest.mark.parametrize(("text", "limit"), [("max 100000", None), ("10000 100000", 0.1),
                                             ("150000 100000\n", 1.5)])
def test_cpu_max(text: str, limit: float | None) -> None:
    assert cpus.limit_v2(text) == limit


@pytest.mark.parametrize(("quota", "period", "limit"), [("-1", "100000", None),
                                                        ("10000", "100000", 0.1),
                                                        ("200000", "100000", 2.0)])
def test_cfs_quota(quota: str, period: str, limit: float | None) -> None:
    assert cpus.limit_v1(quota, period) == limit


def test_the_lowest_limit_of_the_cgroup_and_its_ancestors_counts() -> None:
    root = "/sys/fs/cgroup/cpu,cpuacct"
    files = {f"{root}/kubepods/pod1/c1/cpu.cfs_quota_us": "-1",
             f"{root}/kubepods/pod1/c1/cpu.cfs_period_us": "100000",
             f"{root}/kubepods/pod1/cpu.cfs_quota_us": "20000",
             f"{root}/kubepods/pod1/cpu.cfs_period_us": "100000",
             f"{root}/cpu.cfs_quota_us": "-1", f"{root}/cpu.cfs_period_us": "100000",
             # above the mount point: never read
             "/sys/fs/cgroup/cpu.cfs_quota_us": "1000",
             "/sys/fs/cgroup/cpu.cfs_period_us": "100000"}
    assert cpus.cpu_limit(V1_MOUNTS, V1_CGROUP, reader(files)) == 0.2


def test_a_container_of_its_own_cgroup_namespace_reads_the_root() -> None:
    files = {"/sys/fs/cgroup/cpu.max": "10000 100000"}
    assert cpus.cpu_limit(V2_MOUNTS, "0::/\n", reader(files)) == 0.1


def test_no_cpu_controller_or_unreadable_files_mean_no_limit() -> None:
    assert cpus.cpu_limit(V2_MOUNTS, V2_CGROUP, reader({})) is None
    garbled = {"/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "lots 100000"}
    assert cpus.cpu_limit(V2_MOUNTS, V2_CGROUP, reader(garbled)) is None


def test_the_current_cpu_is_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ["S"] + [str(n) for n in range(4, 39)] + ["7"] + ["0"] * 13
    assert cpus.current_cpu("1234 (a) b (c) " + " ".join(fields)) == 7


@pytest.mark.parametrize(("policy", "limit", "one"), [
    ("auto", 0.1, True), ("auto", 1.0, True), ("auto", 1.5, False), ("auto", None, False),
    ("one", None, True), ("one", 4.0, True), ("all", 0.1, False)])
def test_the_policy(policy: str, limit: float | None, one: bool) -> None:
    assert cpus.wants_one_cpu(policy, limit) is one


KEEP = """
import json, os, sys, threading
from sidecar.shell import cpus
kept = cpus.keep(sys.argv[1])
seen = []
t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
t.start(); t.join()
print(json.dumps([kept, sorted(os.sched_getaffinity(0)), seen[0]]))
"""


@pytest.mark.parametrize("policy", ["one", "all"])
def test_keep_sets_the_affinity_that_later_threads_inherit(policy: str) -> None:
    """In a process of its own (the test process must not be pinned)."""
    allowed = sorted(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", KEEP, policy], capture_output=True,
                         text=True, check=True).stdout
    kept, main_thread, new_thread = __import__("json").loads(out)
    if policy == "one" and len(allowed) > 1:
        assert kept in allowed and main_thread == new_thread == [kept]
    else:  # "all", or nothing to choose between on a one-CPU machine
        assert kept is None and main_thread == new_thread == allowed
