"""A run folder on a network file system is refused with one line (SQLite WAL needs one host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from convscope.runs.mounts import check_local, mount_of

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
server:/export/home /mnt/home nfs4 rw,vers=4.2 0 0
//nas/share /mnt/nas cifs rw 0 0
user@host:/data /mnt/my\\040data fuse.sshfs rw 0 0
tmpfs /mnt/home/local tmpfs rw 0 0
"""


def test_the_longest_mount_point_holding_the_path_wins() -> None:
    assert mount_of("/mnt/home/exp1/runs", MOUNTS) == ("/mnt/home", "nfs4")
    assert mount_of("/mnt/home/local/runs", MOUNTS) == ("/mnt/home/local", "tmpfs")
    assert mount_of("/mnt/my data/runs", MOUNTS) == ("/mnt/my data", "fuse.sshfs")
    assert mount_of("/work/runs", MOUNTS) == ("/", "ext4")
    assert mount_of("/mnt/homely", MOUNTS) == ("/", "ext4")  # a prefix of the name is not a parent


@pytest.mark.parametrize(("path", "fs"), [("/mnt/home/runs/a", "nfs4"), ("/mnt/nas/r", "cifs"), ("/mnt/my data/r", "fuse.sshfs")])
def test_network_file_systems_are_refused_in_one_line(path: str, fs: str) -> None:
    with pytest.raises(ValueError, match=f"network file system \\({fs} at") as err:
        check_local(path, MOUNTS)
    assert "\n" not in str(err.value) and "local disk" in str(err.value)


def test_local_folders_pass(tmp_path: Path) -> None:
    check_local("/mnt/home/local/runs", MOUNTS)
    check_local("/work/runs", MOUNTS)
    check_local(tmp_path / "not-made-yet" / "run")  # this machine's real /proc/mounts
