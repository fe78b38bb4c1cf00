"""quota_cores: the CPU quota of this process's cgroups (v1 and v2), from fake cgroup trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from convscope.train.cpu_quota import quota_cores


def _tree(tmp: Path, files: dict[str, str], cgroup: str) -> tuple[Path, Path]:
    """A fake cgroup mount under tmp/cg with `files` (path → content) and a /proc/self/cgroup."""
    root = tmp / "cg"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    proc = tmp / "proc_self_cgroup"
    proc.write_text(cgroup)
    return proc, root


def test_cgroup_v2_quota_is_the_smallest_from_the_process_up(tmp_path: Path) -> None:
    proc, root = _tree(
        tmp_path,
        {
            "cgroup.controllers": "cpu memory\n",
            "system.slice/cpu.max": "300000 100000\n",
            "system.slice/app.service/cpu.max": "150000 100000\n",
            "system.slice/app.service/worker/cpu.max": "max 100000\n",
        },
        "0::/system.slice/app.service/worker\n",
    )
    assert quota_cores(proc, root) == 1.5
    (root / "system.slice/cpu.max").write_text("50000 100000\n")  # a parent's smaller quota applies
    assert quota_cores(proc, root) == 0.5


def test_cgroup_v2_with_no_quota_and_a_container_root(tmp_path: Path) -> None:
    proc, root = _tree(tmp_path, {"cgroup.controllers": "cpu\n", "cpu.max": "max 100000\n"}, "0::/\n")
    assert quota_cores(proc, root) is None
    (root / "cpu.max").write_text("200000 100000\n")  # `docker run --cpus=2`: the container's root
    assert quota_cores(proc, root) == 2.0
    # the host's path of the container's cgroup, not visible inside it: the mount itself counts
    (tmp_path / "proc_self_cgroup").write_text("0::/docker/0123abcd\n")
    assert quota_cores(proc, root) == 2.0


def test_cgroup_v1_cpu_controller(tmp_path: Path) -> None:
    files = {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "250000\n",
        "cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000\n",
        "memory/memory.limit_in_bytes": "1000\n",
    }
    cgroup = "12:memory:/kubepods/pod1\n4:cpu,cpuacct:/kubepods/pod1\n2:cpuset:/\n0::/\n"
    proc, root = _tree(tmp_path, files, cgroup)
    assert quota_cores(proc, root) == 2.5
    (root / "cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us").write_text("-1\n")
    assert quota_cores(proc, root) is None  # -1: no quota


def test_cgroup_v1_separate_cpu_mount_in_a_hybrid_layout(tmp_path: Path) -> None:
    files = {
        "cpu/cpu.cfs_quota_us": "50000\n",
        "cpu/cpu.cfs_period_us": "100000\n",
        "cpuacct/cpuacct.usage": "0\n",
        "unified/cgroup.controllers": "\n",  # cgroup v2 mounted beside v1, with no cpu controller
    }
    proc, root = _tree(tmp_path, files, "2:cpuacct:/\n1:cpu:/\n0::/\n")
    assert quota_cores(proc, root) == 0.5


@pytest.mark.parametrize(
    "content",
    ["", "garbage", "max", "100000", "-5 100000", "100000 0", "1e5 100000", "\x00\xff 1", "150000 100000 7"],
)
def test_malformed_quota_files_are_no_quota(tmp_path: Path, content: str) -> None:
    proc, root = _tree(tmp_path, {"cgroup.controllers": "cpu\n", "a/cpu.max": content}, "0::/a\n")
    assert quota_cores(proc, root) is None


def test_missing_or_unreadable_files_are_no_quota(tmp_path: Path) -> None:
    assert quota_cores(tmp_path / "absent", tmp_path) is None  # no /proc/self/cgroup (not Linux)
    proc, root = _tree(tmp_path, {}, "0::/a\n1:cpu:/\nnonsense line\n::\n")
    assert quota_cores(proc, root) is None  # no mount with a cgroup in it
    outside = tmp_path / "outside" / "cpu.max"  # beside the mount, not in it
    outside.parent.mkdir()
    outside.write_text("150000 100000\n")
    proc, root = _tree(tmp_path, {"cgroup.controllers": "cpu\n"}, "0::/../outside\n")
    assert quota_cores(proc, root) is None  # '..' is not followed out of the mount
    (root / "cpu.max").mkdir()  # a folder where a file should be
    assert quota_cores(proc, root) is None
