"""``python -m bench whole --cpu-quota Q`` (bench/cgroup.py): which cgroup hierarchy and files
it picks, what it writes and reads, and that the wrapper puts the process itself in the
cgroup before the command runs. Offline and without root: no cgroup is made here."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import cgroup, whole
from bench.cgroup import Hierarchy, Quota

V1_MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V1_SELF = "3:cpuset:/\n2:cpu,cpuacct:/kubepods/pod1/c1\n0::/kubepods/pod1/c1\n"
V2_MOUNTS = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"


def test_v2_is_chosen_where_its_cpu_controller_is_available() -> None:
    seen: list[Path] = []

    def controllers(path: Path) -> str:
        seen.append(path)
        return "cpuset cpu io memory pids"

    assert cgroup.hierarchy(V2_MOUNTS, "0::/user.slice/bench\n", controllers) == \
        Hierarchy(2, Path("/sys/fs/cgroup/user.slice/bench"))
    assert seen == [Path("/sys/fs/cgroup/user.slice/bench")]


def test_v1_is_chosen_when_the_unified_hierarchy_lacks_cpu() -> None:
    assert cgroup.hierarchy(V1_MOUNTS, V1_SELF, lambda path: "hugetlb\n") == \
        Hierarchy(1, Path("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"))
    # "cpuset" is not "cpu"; with no cpu hierarchy at all there is nothing to use
    no_cpu = "\n".join(line for line in V1_MOUNTS.splitlines() if "cpuacct" not in line)
    assert cgroup.hierarchy(no_cpu, V1_SELF, lambda path: "") is None


def test_quota_files_and_their_contents() -> None:
    assert cgroup.quota_writes(2, 0.1) == [("cpu.max", "10000 100000")]
    assert cgroup.quota_writes(1, 0.25) == [("cpu.cfs_period_us", "100000"),
                                            ("cpu.cfs_quota_us", "25000")]
    assert cgroup.quota_writes(1, 0.001)[1] == ("cpu.cfs_quota_us", "1000")  # kernel minimum


def test_throttling_in_seconds_from_either_version() -> None:
    v1 = "nr_periods 80\nnr_throttled 70\nthrottled_time 6500000000\nnr_bursts 0\n"
    v2 = ("usage_usec 900000\nuser_usec 700000\nsystem_usec 200000\nnr_periods 80\n"
          "nr_throttled 70\nthrottled_usec 6500000\n")
    expected = {"periods": 80, "throttled_periods": 70, "throttled_s": 6.5}
    assert cgroup.throttling(1, v1) == expected
    assert cgroup.throttling(2, v2) == expected


def test_the_wrapper_enters_the_cgroup_with_its_own_pid_then_execs(tmp_path: Path) -> None:
    procs = tmp_path / "cgroup.procs"
    proc = subprocess.Popen([*cgroup.wrapper(procs), sys.executable, "-c",
                             "import os; print(os.getpid())"], stdout=subprocess.PIPE,
                            text=True)
    out, _ = proc.communicate(timeout=30)
    # the command ran as the process Popen started (exec), after its pid was written
    assert int(out) == proc.pid == int(procs.read_text())
    # if the pid cannot be written, the command does not run
    missing = subprocess.run([*cgroup.wrapper(tmp_path / "gone" / "cgroup.procs"), "echo",
                              "ran"], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 125 and missing.stdout == ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    whole.add_arguments(parser)
    return parser


def test_cpu_quota_argument() -> None:
    assert _parser().parse_args([]).cpu_quota is None
    assert _parser().parse_args(["--cpu-quota", "0.1"]).cpu_quota == 0.1
    assert _parser().parse_args(["--cpu-quota", "1.5"]).cpu_quota == 1.5
    for bad in ("0", "0.005", "-1", "tenth", "nan"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["--cpu-quota", bad])
    with pytest.raises(SystemExit, match="takes no --cpu-quota"):
        whole.run_whole(_parser().parse_args(["--callgrind", "--cpu-quota", "0.1"]))


def _fake_limited(stat: dict[str, Any], entered: list[Quota]) -> Any:
    @contextlib.contextmanager
    def limited(where: Hierarchy, fraction: float) -> Iterator[Quota]:
        quota = Quota(where.parent / "bench-quota-1", where.version)
        entered.append(quota)
        yield quota
        quota.stat = {"cpus": fraction, "cgroup_version": where.version, **stat}

    return limited


def test_a_measurement_runs_under_the_prefix_and_reports_throttling(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def what(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {"cpu_ms": 1.0}

    assert whole.limited(SimpleNamespace(cpu_quota=None), what) == {"cpu_ms": 1.0}
    assert calls == [{}]
    entered: list[Quota] = []
    args = SimpleNamespace(cpu_quota=0.1, cgroups=Hierarchy(1, Path("/cg/cpu")))
    stat = {"periods": 50, "throttled_periods": 40, "throttled_s": 3.0}
    monkeypatch.setattr(cgroup, "limited", _fake_limited(stat, entered))
    out = whole.limited(args, what)
    assert calls[-1] == {"prefix": ["sh", "-c", cgroup.WRAPPER,
                                    "/cg/cpu/bench-quota-1/cgroup.procs"]}
    assert out == {"cpu_ms": 1.0, "cpu_quota": {"cpus": 0.1, "cgroup_version": 1, **stat}}
    # a process that never ran in its cgroup was not limited: an error, not a figure
    monkeypatch.setattr(cgroup, "limited", _fake_limited({**stat, "periods": 0}, entered))
    assert "never ran in its cgroup" in whole.limited(args, what)["error"]


def test_reports_show_the_quota_and_throttling() -> None:
    from bench.whole_report import _quota

    assert _quota({}) == ""
    text = _quota({"cpu_quota": {"cpus": 0.1, "cgroup_version": 1, "periods": 80,
                                 "throttled_periods": 70, "throttled_s": 6.5}})
    assert text == "; quota 0.1 CPU (cgroup v1): throttled in 70 of 80 periods, 6.50 s"


def test_rounds_report_has_throttling_only_under_a_quota() -> None:
    from test_bench import _rounds_results

    from bench.compare import report, statistics_of

    results = _rounds_results([0.2, 0.3], [0.2, 0.2], [1.0, 1.0])
    assert "throttled" not in statistics_of(results)[0]["figures"]
    assert "fragments/s" in statistics_of(results)[0]["figures"]
    results["cpu_quota"] = 0.1
    for rnd in results["styles"][0]["rounds"]:
        for run in rnd["runs"]:
            run["cpu_quota"] = {"throttled_s": 2.0 if run["tree"] == "A" else 1.0}
    stats = statistics_of(results)
    assert stats[0]["figures"]["throttled"]["A÷B"]["ratio_of_medians"] == 2.0
    text = report(results, stats)
    assert "under a CFS quota of 0.1 CPU" in text
    assert any(line.strip().startswith("throttled s") for line in text.splitlines())


def test_without_a_usable_cgroup_the_bench_stops_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroup, "hierarchy", lambda *a: None)
    with pytest.raises(SystemExit, match=r"^--cpu-quota: no cgroup with the cpu controller"):
        cgroup.find()
    # a hierarchy where no cgroup can be made (here: its directory does not exist)
    monkeypatch.setattr(cgroup, "hierarchy", lambda *a: Hierarchy(1, tmp_path / "gone"))
    with pytest.raises(SystemExit, match=r"^--cpu-quota: cannot make a cgroup") as stop:
        cgroup.find()
    assert "\n" not in str(stop.value.code)
