"""PEP 562 lazy public names for a package's `__init__`: each is imported on first use.

So `import convscope.cli` (every command, `convscope --help` included) does not import torch, the
server and openTSNE before it knows what it will run; `convscope.Probe` still works as before.
It imports nothing from convscope, so every layer may use it (tests/test_architecture.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def lazy(package: str, where: dict[str, str], shadows: frozenset[str] = frozenset()) -> None:
    """Make `package`'s public name N come from module `where[N]` on first use (then kept); any
    other name is its submodule of that name, imported on first use (`convscope.analysis.Occlusion`
    after a bare `import convscope`, as when `__init__` imported everything).

    `shadows`: public names that are also the names of submodules (`convscope.capture`, the
    function, over `convscope/capture/`). Importing such a submodule would bind the package's
    attribute to it; the package keeps the public name instead, as an eager `from convscope.capture
    import capture` in `__init__` did (the submodule stays in sys.modules for `from … import`).
    """
    module = sys.modules[package]

    class LazyPackage(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name in where:
                value = getattr(importlib.import_module(where[name]), name)
            elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
                value = importlib.import_module(f"{package}.{name}")  # a subpackage, as `cs.analysis`
            else:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            vars(self)[name] = value
            return value

        def __dir__(self) -> list[str]:
            return sorted(set(vars(self)) | set(where))

        def __setattr__(self, name: str, value: object) -> None:
            if name in shadows and isinstance(value, types.ModuleType):
                return  # the import system binding a submodule the public name shadows
            super().__setattr__(name, value)

    module.__class__ = LazyPackage
