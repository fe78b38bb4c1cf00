"""The `watched` mark (runs/watched.py): the server keeps it fresh while a page listens, the
trainer reads it; never through a symbolic link, never fresh from a stale or future time."""

from __future__ import annotations

import os
from pathlib import Path

from runs.romount import on_read_only_mount

from convscope.runs.watched import FRESH_S, WATCHED_FILE, is_watched, mark_watched


def test_a_mark_is_fresh_for_fresh_s_seconds_either_side(tmp_path: Path) -> None:
    assert not is_watched(tmp_path, now=1000.0)  # no mark yet
    assert mark_watched(tmp_path, now=1000.0)
    mark = tmp_path / WATCHED_FILE
    assert mark.is_file() and mark.stat().st_size == 0 and mark.stat().st_mtime == 1000.0
    assert is_watched(tmp_path, now=1000.0 + FRESH_S)
    assert not is_watched(tmp_path, now=1000.0 + FRESH_S + 0.5)  # the page has gone
    assert not is_watched(tmp_path, now=1000.0 - FRESH_S - 0.5)  # a mark from the future is no mark
    assert mark_watched(tmp_path, now=2000.0)  # refreshed in place
    assert mark.stat().st_mtime == 2000.0 and is_watched(tmp_path, now=2001.0)
    assert mark_watched(tmp_path) and is_watched(tmp_path)  # the clock's own time


def test_a_symlink_is_neither_followed_nor_a_mark(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("kept")
    os.utime(target, (5.0, 5.0))
    run = tmp_path / "run"
    run.mkdir()
    (run / WATCHED_FILE).symlink_to(target)
    assert not mark_watched(run, now=1000.0)
    assert target.stat().st_mtime == 5.0 and target.read_text() == "kept"  # not touched through it
    assert not is_watched(run, now=1000.0)  # a link is not a mark, whatever its own time
    dangling = tmp_path / "run2"
    dangling.mkdir()
    (dangling / WATCHED_FILE).symlink_to(tmp_path / "absent")
    assert not mark_watched(dangling, now=1000.0)
    assert not (tmp_path / "absent").exists() and not is_watched(dangling, now=1000.0)
    folder = tmp_path / "run3"
    (folder / WATCHED_FILE).mkdir(parents=True)  # the name taken by a folder
    assert not mark_watched(folder, now=1000.0)
    assert not is_watched(folder, now=1000.0)


def test_no_folder_and_a_read_only_folder_give_false(tmp_path: Path) -> None:
    assert not mark_watched(tmp_path / "absent")
    assert not is_watched(tmp_path / "absent")
    out = on_read_only_mount(
        tmp_path,
        "from convscope.runs.watched import mark_watched, is_watched;"
        f"print(mark_watched({str(tmp_path)!r}), is_watched({str(tmp_path)!r}))",
    )
    assert out.split() == ["False", "False"]
    assert not (tmp_path / WATCHED_FILE).exists()
    assert mark_watched(tmp_path, now=1000.0)  # an existing mark on a read-only mount: not refreshed
    out = on_read_only_mount(
        tmp_path,
        "from convscope.runs.watched import mark_watched, is_watched;"
        f"print(mark_watched({str(tmp_path)!r}, now=2000.0), is_watched({str(tmp_path)!r}, now=1000.0))",
    )
    assert out.split() == ["False", "True"]
    assert (tmp_path / WATCHED_FILE).stat().st_mtime == 1000.0
