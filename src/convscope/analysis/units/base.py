"""The small base of the unit analyses: which tensor a layer name means, and reading it per forward.

    blocks, outputs = split_layers(model, ["conv2", "layer4"])   # fails fast, listing the valid names
    reader = LayerReader(model, ["conv2", "layer4"], reduce=fn)   # fn(name, map) → tuple of tensors
    per_layer = reader.read(x)                                     # {name: fn(name, map)} for one forward

Layer names are those of `convscope.Probe`'s trace (DESIGN.md §1): a conv/linear block's name,
its norm's or its activation's all mean the block's activation map `a` (its `z` when no
activation follows); any other module name means that module's output (first call per forward).

`LayerReader` runs its first forward inside a Probe (it finds the blocks of any model, functional
and in-place activations too). When every block's map comes out of a module call, the second
forward runs both the Probe and plain forward hooks on those modules; if they give identical
results, the rest run with the hooks alone (a Probe watches every torch call: costly on a long
stream). Otherwise every forward runs inside a Probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from convscope.capture import HookSet, Probe, Trace, UnknownLayerError
from convscope.capture.naming import base_name, is_valid_selection, role, selectable_names

#: reduce(layer name, its live map) → tensors kept for that layer (called once per forward)
Reduce = Callable[[str, Tensor], tuple[Tensor, ...]]


def split_layers(model: nn.Module, layers: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(names of Probe blocks, names of modules whose output is meant); raises UnknownLayerError."""
    if isinstance(layers, str) or not isinstance(layers, list | tuple):
        raise TypeError(f"layers must be a list of layer names, got {type(layers).__name__}")
    if not layers:
        raise ValueError("layers is empty: name at least one layer")
    bad = [n for n in layers if not isinstance(n, str)]
    if bad:
        raise TypeError(f"layer names must be strings, got {bad!r}")
    dupes = sorted({n for n in layers if list(layers).count(n) > 1})
    if dupes:
        raise ValueError(f"layer(s) named twice: {dupes}")
    modules = dict(model.named_modules())
    valid = selectable_names(model)
    valid_set, all_names = set(valid), set(modules)
    blocks: list[str] = []
    outputs: list[str] = []
    unknown: list[str] = []
    for name in layers:
        m = modules.get(name)
        if name and m is not None and role(m) is None:
            outputs.append(name)
        elif is_valid_selection(name, all_names, valid_set):
            blocks.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise UnknownLayerError(
            f"unknown layer(s) {unknown}; valid: {', '.join(valid)}; or any module name (its output:"
            f" {', '.join(n for n in modules if n and n not in valid_set)}), or"
            " '<module>.<activation function>' for a functional activation"
        )
    return blocks, outputs


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the duration; each module's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, training in modes:
            m.training = training


def block_map(trace: Trace, name: str) -> Tensor:
    """The map a block name means in a Probe trace kept with keep=("z", "a")."""
    try:
        block = trace[name]
    except UnknownLayerError:
        raise ValueError(f"layer {name!r} was not called in the model's forward") from None
    if "a" in block.stale or "z" in block.stale:
        raise ValueError(f"layer {name!r}'s map was overwritten in place by an op the probe could not see")
    t = block.a if block.a is not None else block.z
    if t is None:
        raise ValueError(f"layer {name!r} has no map in this forward")
    return t


class _OutputHooks:
    """Forward hooks on modules: the output of call number `call` of each in one forward goes to
    `take(layer, output)` at once (before any later in-place op can touch it)."""

    def __init__(self, plan: dict[nn.Module, dict[int, list[str]]], take: Callable[[str, Tensor], None]) -> None:
        self.plan, self.take = plan, take
        self.calls: dict[nn.Module, int] = {}
        self.hooks = HookSet()

    def __enter__(self) -> _OutputHooks:
        try:
            for module in self.plan:
                self.hooks.add(module.register_forward_hook(self._hook))
        except BaseException:
            self.hooks.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.release()

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        k = self.calls.get(module, 0)
        self.calls[module] = k + 1
        for name in self.plan[module].get(k, []):
            if not isinstance(output, Tensor):
                raise ValueError(f"layer {name!r} does not output one tensor ({type(output).__name__})")
            self.take(name, output)


class LayerReader:
    """Reduce each named layer's map during a forward; see the module docstring."""

    def __init__(self, model: nn.Module, layers: list[str] | tuple[str, ...], reduce: Reduce) -> None:
        self.model, self.layers, self.reduce = model, list(layers), reduce
        self.blocks, self.outputs = split_layers(model, self.layers)
        modules = dict(model.named_modules())
        self._output_plan: dict[nn.Module, dict[int, list[str]]] = {}
        for name in self.outputs:
            self._output_plan.setdefault(modules[name], {}).setdefault(0, []).append(name)
        self._fast: dict[nn.Module, dict[int, list[str]]] | None = None  # plain hooks, once checked
        self._trying: dict[nn.Module, dict[int, list[str]]] | None = None  # checked on the next batch
        self._checked = False
        self._trace: Trace | None = None

    @property
    def path(self) -> str:
        """How maps are read now: "hooks" (plain forward hooks) or "probe" (a Probe per forward)."""
        return "hooks" if self._fast is not None else "probe"

    def read(self, x: Tensor) -> dict[str, tuple[Tensor, ...]]:
        """{layer: reduce(layer, map)} for one forward of x (the caller sets no_grad / eval)."""
        if self._fast is not None:
            return self._collect(x, self._fast, None)[0]
        probe = Probe(self.model, self.blocks, keep=("z", "a")) if self.blocks else None
        trying = self._trying
        got, hooked = self._collect(x, trying if trying is not None else self._output_plan, probe)
        if trying is not None:  # second batch: the plan's hooks saw the same forward as the Probe
            self._trying, self._checked = None, True
            if all(n in hooked and _same(got[n], hooked[n]) for n in self.blocks):
                self._fast = trying
        elif not self._checked:  # first batch: find the module calls, try them on the next one
            self._trying = self._plan()
            self._checked = self._trying is None
        return got

    def _collect(
        self, x: Tensor, plan: dict[nn.Module, dict[int, list[str]]], probe: Probe | None
    ) -> tuple[dict[str, tuple[Tensor, ...]], dict[str, tuple[Tensor, ...]]]:
        """One forward: ({layer: reduced map}, what the plan's hooks alone reduced)."""
        hooked: dict[str, tuple[Tensor, ...]] = {}

        def take(name: str, t: Tensor) -> None:
            if name not in hooked:
                hooked[name] = self.reduce(name, t)

        with _OutputHooks(plan, take):
            if probe is None:
                self.model(x)
            else:
                with probe:
                    self.model(x)
                self._trace = probe.trace
        got = dict(hooked)
        if probe is not None:
            got |= {name: self.reduce(name, block_map(probe.trace, name)) for name in self.blocks}
        missing = [n for n in self.layers if n not in got]
        if missing:
            raise ValueError(f"layer(s) {missing} were not called in the model's forward")
        return got, hooked

    def _plan(self) -> dict[nn.Module, dict[int, list[str]]] | None:
        """The module call that outputs each block's map, from the first probed trace; None when
        one comes from a functional call (a Probe is then needed on every batch)."""
        plan = {m: {k: list(v) for k, v in calls.items()} for m, calls in self._output_plan.items()}
        if not self.blocks:
            return plan
        modules = dict(self.model.named_modules())
        assert self._trace is not None
        for name in self.blocks:
            block = self._trace[name]
            if block.a is not None:
                call, wanted = block.act_name or "", "activation"
            else:
                call, wanted = block.norm_name or block.name, "norm" if block.norm_name else "leader"
            module = modules.get(base_name(call))
            if module is None or role(module) != wanted:
                return None
            if wanted == "activation" and type(module).__name__ != block.activation:
                return None  # a functional activation named like a module
            k = int(call.rpartition("#")[2]) if "#" in call else 0
            plan.setdefault(module, {}).setdefault(k, []).append(name)
        return plan


def _same(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> bool:
    return len(a) == len(b) and all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
