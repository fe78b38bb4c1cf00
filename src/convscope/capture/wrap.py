"""Forward wrappers: how a Probe sees a module call without torch's module hooks (DESIGN.md §3).

A module hook costs its registration and removal (~24k instructions each, a `RemovableHandle`
and three dicts) and sends every call through `Module._call_impl`'s slow path; on a small net
at batch 1 that was a third of what a full capture cost beyond the plain forward. While a probe
is active it puts a wrapper in the module's instance `forward` instead: `Module.__call__` runs
every hook of its own as usual, then the wrapper, which calls the class's forward between the
probe's `pre` and `post` (always called, with None when the forward raises, as a hook with
`always_call=True` is). The probe therefore sees the arguments the forward receives (after any
pre-hook) and the output it returns (before any forward hook changes it).

A sealed wrapper calls a forward of torch's own that writes into nothing it was handed and calls
no activation function (conv, linear, norm, pooling, flatten, ...) with the probe's function
mode off the mode stack: that mode then has nothing to look at, and each torch function call
inside would cost a trip through it.

A module that already has an instance `forward` (another probe's wrapper, a library's patch)
or is a TorchScript module gets module hooks instead. `WrapSet.release()` puts
every `forward` back; a wrapper that something else has since wrapped again cannot be taken
out of that chain, and from then on passes every call straight through.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Any

import torch
from torch import nn

Pre = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]
Post = Callable[[nn.Module, tuple[Any, ...], dict[str, Any], Any], None]
ModeCell = list[object | None]  # [the probe's function mode, or None between passes]

_len_modes = torch._C._len_torch_function_stack
_top_mode = torch._C._get_function_stack_at
_pop_mode = torch._C._pop_torch_function_stack
_push_mode = torch._C._push_on_torch_function_stack

# torch's own modules without a role whose forward writes into nothing it was handed (unless
# `inplace=True`) and calls no activation function: the function mode is off while they run
SEALED_TYPES: frozenset[type[nn.Module]] = frozenset({
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool2d,
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.ZeroPad2d, nn.ConstantPad2d,
    nn.ReflectionPad2d, nn.ReplicationPad2d,
})  # fmt: skip


class WrapSet:
    """The wrappers one active probe put in place; `release()` puts every `forward` back."""

    def __init__(self) -> None:
        self._wrapped: list[tuple[nn.Module, MethodType]] = []

    def __len__(self) -> int:
        return len(self._wrapped)

    def wrap(self, module: nn.Module, pre: Pre | None, post: Post | None, mode: ModeCell | None) -> None:
        """Put a wrapper in `module.forward`: `pre`, the forward (with the probe's mode, `mode[0]`,
        off the mode stack while it runs if a cell is given and the mode is on top: "sealed"), then
        `post` (also when the forward raises, with None for its output). Either may be None.
        `module` has no instance `forward` of its own."""
        # one wrapper function for all, bound to the module (so `copy.deepcopy(model)` while the
        # probe is active binds the copy's to the copy, which finds no entry: it passes through)
        forward = module.forward  # the class's, bound
        bound = MethodType(_probed_forward, module)
        module.__dict__["forward"] = bound
        _ACTIVE[id(module)] = (module, forward, pre, post, mode)
        self._wrapped.append((module, bound))

    def release(self) -> None:
        """Put every module's own `forward` back (idempotent)."""
        wrapped, self._wrapped = self._wrapped, []
        for module, wrapper in reversed(wrapped):
            _ACTIVE.pop(id(module), None)  # (ours: held in `_wrapped`, no other module has its id)
            d = module.__dict__
            if d.get("forward") is wrapper:
                del d["forward"]


# id(module) → (the module, its class's forward bound to it, pre, post, the probe's mode cell if its
# forward is sealed, else None): the wrapped modules of every active probe (a module has at most
# one: another probe uses hooks)
_ACTIVE: dict[int, tuple[nn.Module, Callable[..., Any], Pre | None, Post | None, ModeCell | None]] = {}


def _probed_forward(this: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The wrapper `WrapSet.wrap` binds to a module: its probe's `pre`, the class's forward, `post`."""
    entry = _ACTIVE.get(id(this))
    if entry is None or entry[0] is not this:  # a deep copy's, or released (something wrapped it again)
        return type(this).forward(this, *args, **kwargs)
    _, forward, pre, post, mode = entry
    if pre is not None:
        pre(this, args, kwargs)
    out = paused = None
    try:
        if mode is not None:
            paused = mode[0]
            if paused is not None and _len_modes() and _top_mode(_len_modes() - 1) is paused:
                _pop_mode()
            else:
                paused = None
        out = forward(*args, **kwargs)
    finally:
        if paused is not None:
            _push_mode(paused)
        if post is not None:
            post(this, args, kwargs, out)
    return out


def probe_wrappers_left(module: nn.Module) -> int:
    """1 if `module.forward` is still a probe's wrapper (`count_hooks` counts it), else 0: a probe
    leaves none on its model; a deep copy made while one was active keeps a pass-through one."""
    f = module.__dict__.get("forward")
    return int(getattr(f, "__func__", None) is _probed_forward)
