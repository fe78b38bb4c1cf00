"""The fast path of a long stream: plain forward hooks on the activation modules — https://cs231n.github.io/neural-networks-1/#actfun

A Probe watches every torch call of a pass (it finds the blocks of any model, functional
activations too) and so costs on a long stream. After the first probed batch, `_Tap.of` checks
that every counted block's activation is a module call and, if so, hooks those modules alone:
each hook hands its block's maps to the Diagnoser at once (before a later in-place op could
touch them). Hooks are released on exit, also when a forward raises.

    tap = _Tap.of(model, probe.trace, diag)     # None: a block is out of its reach, keep the Probe
    with tap:
        model(x)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from convscope.capture import HookSet, Trace
from convscope.capture.naming import base_name, role

from .tally import Diagnoser


class _Tap:
    """Plain forward hooks on the activation modules of the blocks a probed pass found: each
    hook counts that block's maps at once (before any later in-place op could touch them).
    Only when every counted block's activation is a module call; calls are named as the Probe
    names them (`act`, `act#1` for a second call of a shared module in one pass)."""

    def __init__(self, diag: Diagnoser, targets: dict[str, nn.Module], by_call: dict[str, str]) -> None:
        self.diag, self.targets, self.by_call = diag, targets, by_call
        self.blocks_of_weight: dict[int, list[str]] = {}
        self.detail = True
        self._calls: dict[str, int] = {}
        self._hooks = HookSet()

    @staticmethod
    def of(model: nn.Module, trace: Trace, diag: Diagnoser) -> _Tap | None:
        """A tap for the blocks of `trace`, or None when one is out of its reach (a functional
        activation, a block without its map, a channels-last block)."""
        modules = dict(model.named_modules())
        targets: dict[str, nn.Module] = {}
        by_call: dict[str, str] = {}
        weights: dict[int, list[str]] = {}
        for name, block in trace.items():
            leader = modules.get(base_name(name)) if block.kind != "activation" else None
            w = leader_weight(leader) if leader is not None else None
            if w is not None:
                weights.setdefault(id(w), []).append(name)
            if block.channels_last:
                return None  # its module outputs are (B, H, W, C): the Probe shows them channels-first
            if block.activation is None:
                continue  # no map to count (e.g. the last linear layer): weights/gradients only
            act = modules.get(base_name(block.act_name or ""))
            if block.a is None or act is None or role(act) != "activation" or type(act).__name__ != block.activation:
                return None
            targets[base_name(block.act_name or "")] = act
            by_call[block.act_name or ""] = name
        tap = _Tap(diag, targets, by_call)
        tap.blocks_of_weight = weights
        return tap

    def __enter__(self) -> _Tap:
        try:
            for mname, module in self.targets.items():
                self._hooks.add(module.register_forward_hook(self._hook_for(mname)))
        except BaseException:
            self._hooks.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.release()

    def _hook_for(self, mname: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            k = self._calls.get(mname, 0)
            self._calls[mname] = k + 1
            block = self.by_call.get(mname if k == 0 else f"{mname}#{k}")
            if block is not None and isinstance(output, Tensor) and output.dim() >= 2:
                self.diag._add_maps(block, output, detail=self.detail)

        return hook

    def new_pass(self) -> None:
        self._calls.clear()


def leader_weight(m: nn.Module) -> Tensor | None:
    w = getattr(m, "weight", None)
    return w if role(m) == "leader" and isinstance(w, Tensor) else None
