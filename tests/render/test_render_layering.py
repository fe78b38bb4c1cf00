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
# the inspect report draws plain data handed to it by inspect.py: no analysis, no capture
REPORT = ["report.py", "report_pictures.py", "html.py"]


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


def test_inspect_report_imports_only_render_modules() -> None:
    for name in REPORT:
        tree = ast.parse((RENDER / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{name}: {ast.unparse(node)}"
            elif isinstance(node, ast.ImportFrom | ast.Import):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.startswith("convscope") for m in modules), f"{name}: {ast.unparse(node)}"
