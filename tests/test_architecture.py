"""The layer rule of DESIGN.md §2, checked by reading every import in the package."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "convscope"

# package → the convscope packages it may import (besides itself). Flow: models/data → capture
# → analysis → render → runs → server; train is the training side, cli sits on top.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "models": {"config"},
    "data": {"config"},
    "capture": {"config"},
    "analysis": {"config", "capture", "data", "models"},
    "render": {"config", "analysis"},  # never capture: render draws tensors, not Blocks/Traces
    "runs": {"config", "capture", "analysis", "render"},
    "distributed": {"config", "capture", "analysis", "data", "models"},
    "train": {"config", "capture", "analysis", "render", "runs", "data", "models", "distributed"},
    "server": {"config", "runs", "render", "data"},
}


# modules any layer may import because they import nothing of convscope (checked below): the PEP 562
# names of an __init__, and the one-line form of an error
LEAVES = ("_lazy", "errors")


def _package_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mod = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("convscope."):
                    found.add(alias.name.split(".")[1])
            continue
        else:
            continue
        if mod.startswith("convscope."):
            found.add(mod.split(".")[1])
        elif mod == "convscope":
            found.add("__init__")
    return found


def test_every_module_imports_only_from_layers_above_it() -> None:
    violations = []
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        pkg = _package_of(path)
        if pkg not in ALLOWED:  # cli/, __init__.py, __main__.py sit on top
            continue
        for dep in _imports(path) - {pkg, *LEAVES}:
            if dep not in ALLOWED[pkg]:
                violations.append(f"{path.relative_to(PKG)} imports convscope.{dep}")
    assert violations == []


def test_leaves_import_nothing_of_convscope() -> None:
    """convscope/_lazy.py and errors.py may be used by every layer because they depend on none."""
    for leaf in LEAVES:
        assert _imports(PKG / f"{leaf}.py") == set(), leaf


def test_render_knows_nothing_of_nn_module() -> None:
    for path in (PKG / "render").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("torch.nn"), path
                assert not (node.module == "torch" and any(a.name == "nn" for a in node.names)), path
            if isinstance(node, ast.Attribute):
                assert node.attr != "Module", path


def test_render_never_imports_capture() -> None:
    """Issue 8: render takes plain data (tensors, spec text, statistics) built above it; the
    command layer (inspect.py, cli.py) turns a Trace into that data. Checked for every render
    module, with the offending line named."""
    found = []
    for path in sorted((PKG / "render").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )  # fmt: skip
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith("convscope.capture")]
    assert found == []
