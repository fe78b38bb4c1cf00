"""The picture core of render (all but report.py) needs no other layer: only convscope.config.

tests/test_architecture.py checks the project-wide layer rule; this keeps the core stricter so
the server can draw from the run store alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import convscope.render

RENDER = Path(convscope.render.__file__).parent
CORE = ["__init__.py", "colormap.py", "grid.py", "normalize.py", "overlay.py", "picture.py"]


def test_render_core_imports_nothing_of_convscope_but_config() -> None:
    for name in CORE:
        tree = ast.parse((RENDER / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module != "report", f"{name}: {ast.unparse(node)}"
            elif isinstance(node, ast.ImportFrom | ast.Import):
                modules = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for m in modules:
                    assert not m.startswith("convscope") or m == "convscope.config", (
                        f"{name}: imports {m}"
                    )
