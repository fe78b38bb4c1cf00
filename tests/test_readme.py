"""Every ```python block of README.md runs, as written, offline, in a temp dir.

The first block is the README's setup (the names the others use: `model`, `dataset`, `x`, ...);
each later block runs in a fresh copy of the namespace it leaves, so no snippet depends on
another's side effects. A block may be preceded by `<!-- readme-test: replace "A" "B" -->` to
run with a smaller size (A must occur in the block). All blocks run in one child process with
a time limit; a failure names the README line of its block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
MARK = re.compile(r'<!-- readme-test: replace "([^"]+)" "([^"]*)"[^>]*-->\s*$')
TIME_LIMIT_S = 900

DRIVER = r"""
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
setup: dict = {"__name__": "__readme__"}
for i, (line, code) in enumerate(blocks):
    ns = setup if i == 0 else dict(setup)
    try:
        exec(compile(code, f"README.md:{line}", "exec"), ns)
    except BaseException:
        print(f"FAILED README.md:{line}", flush=True)
        traceback.print_exc()
        sys.exit(1)
    print(f"ran README.md:{line}", flush=True)
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of every ```python block, markers applied."""
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        code = m.group(1)
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        if mark:
            old, new = mark.groups()
            assert old in code, f"README.md:{line}: the readme-test marker replaces {old!r}, which the block lacks"
            code = code.replace(old, new)
        out.append((line, code))
    return out


def test_the_block_parser_sees_markers_and_every_block() -> None:
    text = 'a\n```python\nx = 1\n```\n<!-- readme-test: replace "n=50" "n=5" -->\n```python\nf(n=50)\n```\n```\nshell\n```\n'
    assert python_blocks(text) == [(2, "x = 1\n"), (6, "f(n=5)\n")]


def test_every_python_snippet_of_the_readme_runs(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) == text.count("```python") >= 8
    assert "load_model(" in blocks[0][1]  # the setup comes first
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIME_LIMIT_S,
    )  # fmt: skip
    ran = re.findall(r"^ran README\.md:(\d+)$", done.stdout, re.M)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert [int(n) for n in ran] == [line for line, _ in blocks]
    # what the snippets wrote, in the temp dir
    assert (tmp_path / "runs" / "exp1" / "run.sqlite").is_file()
    assert (tmp_path / "runs" / "nb" / "run.sqlite").is_file()
    assert (tmp_path / "units.safetensors").is_file()
