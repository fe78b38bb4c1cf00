"""Register hooks as a group and release them all, also when the forward raises.

`HookSet` collects the handles of module hooks, tensor hooks and global optimizer hooks;
`release()` removes every one and is safe to call twice. `HookSet.tensor(t, fn)` is
`t.register_hook(fn)` for a plain tensor or parameter at a fifth of its cost: it puts `fn`
in the tensor's hook dict as `Tensor.register_hook` does, without the `RemovableHandle` and
the per-call checks (~3 µs instead of ~15-20 µs a hook; a probe puts ~15 on a small net's
every forward). `count_hooks(model)` counts what is
left on a model's modules and parameters (the tests assert it is 0 after every probe).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from itertools import count
from typing import Any, Protocol
from weakref import ref

from torch import Tensor, nn

from convscope.capture.wrap import probe_wrappers_left


class _Handle(Protocol):
    def remove(self) -> None: ...


class HookSet:
    """Handles to remove together (module, tensor and optimizer hooks alike)."""

    def __init__(self) -> None:
        self._handles: list[_Handle] = []
        # tensor hooks: (a weak reference to the tensor's hook dict, key); weak, as the handle's is:
        # the tensor's graph alone keeps the hook (and what it holds) alive
        self._in_dicts: list[tuple[ref[dict[int, Any]], int]] = []

    def add(self, handle: _Handle) -> None:
        self._handles.append(handle)

    def tensor(self, t: Tensor, fn: Callable[[Tensor], Any]) -> None:
        """`t.register_hook(fn)`, to be removed with the rest (`t` requires grad). For a Tensor or
        Parameter it does what `Tensor.register_hook` does — a hook dict on the tensor (and, for a
        non-leaf, on its grad_fn), `fn` added to it — under a key of its own; a subclass (which
        may override `register_hook` through `__torch_function__`) gets `register_hook` itself."""
        if type(t) not in _PLAIN:
            self._handles.append(t.register_hook(fn))
            return
        d = t._backward_hooks
        if d is None:
            d = OrderedDict()
            t._backward_hooks = d
            node = t.grad_fn  # (once: each read of it makes a new Python object, ~0.3 µs)
            if node is not None:
                node._register_hook_dict(t)
        key = next(_keys)
        d[key] = fn
        self._in_dicts.append((ref(d), key))

    def __len__(self) -> int:
        return len(self._handles) + len(self._in_dicts)

    def release(self) -> None:
        """Remove every hook; the first error (if any) is raised after all are tried."""
        in_dicts, self._in_dicts = self._in_dicts, []
        for d_ref, key in in_dicts:
            d = d_ref()
            if d is not None:
                d.pop(key, None)
        handles, self._handles = self._handles, []
        errors: list[BaseException] = []
        for handle in reversed(handles):
            try:
                handle.remove()
            except Exception as exc:  # keep removing the others, then report
                errors.append(exc)
        if errors:
            raise RuntimeError(f"{len(errors)} hook(s) could not be removed: {errors[0]!r}")


_PLAIN = (Tensor, nn.Parameter)  # types whose `register_hook` is torch's own
_keys = count(-1, -1)  # negative: `RemovableHandle` ids (other hooks in the same dict) count up from 0


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
