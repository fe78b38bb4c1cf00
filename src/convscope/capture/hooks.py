"""Register hooks as a group and release them all, also when the forward raises.

`HookSet` collects the handles of module hooks, tensor hooks and global optimizer hooks;
`release()` removes every one and is safe to call twice. `count_hooks(model)` counts what is
left on a model's modules and parameters (the tests assert it is 0 after every probe).
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from convscope.capture.wrap import probe_wrappers_left


class _Handle(Protocol):
    def remove(self) -> None: ...


class HookSet:
    """Handles to remove together (module, tensor and optimizer hooks alike)."""

    def __init__(self) -> None:
        self._handles: list[_Handle] = []
        self.append = self._handles.append  # = add(), without a Python call (the probe's hot path)

    def add(self, handle: _Handle) -> None:
        self._handles.append(handle)

    def __len__(self) -> int:
        return len(self._handles)

    def release(self) -> None:
        """Remove every hook; the first error (if any) is raised after all are tried."""
        handles = self._handles[:]
        self._handles.clear()  # (the same list: `append` stays bound to it)
        errors: list[BaseException] = []
        for handle in reversed(handles):
            try:
                handle.remove()
            except Exception as exc:  # keep removing the others, then report
                errors.append(exc)
        if errors:
            raise RuntimeError(f"{len(errors)} hook(s) could not be removed: {errors[0]!r}")


def count_hooks(model: nn.Module) -> int:
    """Forward/backward hooks and probe forward wrappers on every module, plus tensor hooks on every parameter."""
    total = 0
    for m in model.modules():
        for attr in (
            "_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
            "_backward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
            "_forward_hooks_always_called",
        ):  # fmt: skip
            total += len(getattr(m, attr, {}) or {})
        total += probe_wrappers_left(m)
    for p in model.parameters():
        hooks = getattr(p, "_backward_hooks", None)
        total += len(hooks or {})
    return total
