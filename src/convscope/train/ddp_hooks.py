"""Ranks > 0 of watch() under DDP: each block's share of the statistics, computed in light hooks.

A rank that writes nothing must cost little (≤ 3 % of its step). The full Probe (a torch-function
mode over every op, copy on write, every tensor kept until `step()`) costs more than that, so a
follower probes ONE pass to learn the blocks and then computes its partials as the forward and
backward run, in plain module hooks, keeping no tensor:

    activation module: pre-hook → z's min/max (z is its input, read before an in-place op);
                       hook → a's per-channel max (and min), sum, count; a tensor hook on a → dL/da's
                       min/max/‖·‖²
    block without one: hook on its norm (or conv/linear) → z's min/max

The numbers are those `ddp.Partials.add` computes from a trace, in the same layout. A model whose
blocks this cannot see with module hooks (a functional activation such as F.relu, a module called
more than once per forward) keeps the full Probe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from convscope.capture import HookSet, Trace
from convscope.capture.naming import RELU, role

Item = tuple[str, bool, Tensor, float]  # (key, is_sum, float32 value, factor): ddp.Partials' layout
# The factor (a sign, a power of the batch size) is applied once to the concatenated buffer; an
# item whose key ends in "_sq" holds a norm that is squared there (in float64).


def a_items(a: Tensor, relu: bool) -> list[Item]:
    """a's share: per-channel max (and min unless a = ReLU(z)), sum, count."""
    items: list[Item] = []
    if a.dim() >= 2:
        dims = (0, *range(2, a.dim()))
        items.append(("hi", False, a.amax(dim=dims), 1.0))
        if not relu:  # a = max(z, 0): a map is all zero iff its max is 0
            items.append(("-lo", False, a.amin(dim=dims), -1.0))
    else:
        lo, hi = torch.aminmax(a)
        items += [("-a_min", False, lo, -1.0), ("a_max", False, hi, 1.0)]
    items += [("a_sum", True, a.sum(), 1.0), ("a_n", True, torch.tensor(float(a.numel())), 1.0)]
    return items


def z_items(z: Tensor) -> list[Item]:
    lo, hi = torch.aminmax(z)
    return [("-z_min", False, lo, -1.0), ("z_max", False, hi, 1.0)]


def g_raw(g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    lo, hi = torch.aminmax(g)
    return lo, hi, torch.linalg.vector_norm(g)


def g_items(raw: tuple[Tensor, Tensor, Tensor], batch: int) -> list[Item]:
    """dL_local/da scaled by B_local (divided by B_global after the reduction)."""
    lo, hi, norm = raw
    return [("-g_min", False, lo, -float(batch)), ("g_max", False, hi, float(batch)), ("g_sq", True, norm, float(batch) ** 2)]


class LightHooks:
    """Per-block partials from module hooks; `take(batch)` gives them in trace order."""

    def __init__(self, model: nn.Module, plan: list[tuple[str, str | None, str, bool]]) -> None:
        self._plan = plan
        self._hooks = HookSet()
        self._got: dict[str, dict[str, Any]] = {name: {} for name, *_ in plan}
        self.fresh = False
        self.active = True  # False on steps without statistics: the hooks only note the pass
        self.batch = 0
        modules = dict(model.named_modules())
        try:
            for name, act, zmod, relu in plan:
                if act is not None:
                    m = modules[act]
                    self._hooks.add(m.register_forward_pre_hook(self._z_before(name)))
                    self._hooks.add(m.register_forward_hook(self._a_after(name, relu)))
                else:
                    self._hooks.add(modules[zmod].register_forward_hook(self._z_after(name)))
        except BaseException:
            self._hooks.release()
            raise

    @staticmethod
    def plan(model: nn.Module, trace: Trace) -> list[tuple[str, str | None, str, bool]] | None:
        """(block, activation module or None, z's module, relu) per block, or None if a block is
        not made of modules called once."""
        modules = dict(model.named_modules())
        out: list[tuple[str, str | None, str, bool]] = []
        for name, b in trace.items():
            act = b.act_name
            if act is not None:
                if act not in modules or role(modules[act]) != "activation":
                    return None  # functional activation, or a second call (name#1)
                out.append((name, act, act, b.activation in RELU))
            else:
                zmod = b.norm_name or name
                if zmod not in modules or role(modules[zmod]) is None:
                    return None
                out.append((name, None, zmod, False))
        return out

    def _z_before(self, name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            z = args[0] if args else None
            if self.active and isinstance(z, Tensor):
                with torch.no_grad():
                    got = self._got[name]
                    got.clear()  # a new pass
                    got["z"] = z_items(z.detach())

        return hook

    def _z_after(self, name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, Tensor):
                if self.active:
                    with torch.no_grad():
                        self._got[name] = {"z": z_items(out.detach())}
                self._seen(out)

        return hook

    def _a_after(self, name: str, relu: bool) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if not isinstance(out, Tensor):
                return
            self._seen(out)
            if not self.active:
                return
            got = self._got[name]
            with torch.no_grad():
                got["a"] = a_items(out.detach(), relu and "z" in got)
            got.pop("g", None)
            if out.requires_grad:
                out.register_hook(lambda g: self._store_g(got, g))  # lives with this pass's graph

        return hook

    @staticmethod
    def _store_g(got: dict[str, Any], g: Tensor) -> None:
        with torch.no_grad():
            got["g"] = g_raw(g.detach())

    def _seen(self, out: Tensor) -> None:
        if not self.fresh and out.dim() >= 1:
            self.batch = int(out.shape[0])
        self.fresh = True

    def take(self) -> list[tuple[str, list[Item]]]:
        """Each block's items of the last pass, in trace order; resets `fresh`."""
        self.fresh = False
        rows = []
        for name, *_ in self._plan:
            got = self._got[name]
            items: list[Item] = list(got.get("a", [])) + list(got.get("z", []))
            if "g" in got:
                items += g_items(got["g"], self.batch)
            rows.append((name, items))
        return rows

    def close(self) -> None:
        self._hooks.release()
