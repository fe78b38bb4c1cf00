"""What a Probe needs to know of a model's modules: names, roles, which to hook; cached per model
(held weakly) while its module tree is unchanged, so building a Probe does not walk it again.
Also the per-module LayerSpec cache and small parameter helpers the probe's hooks use."""

from __future__ import annotations

import weakref
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.jit import ScriptModule

from convscope.capture.naming import LayerSpec, role
from convscope.capture.wrap import SEALED_TYPES

# id(module) → (a weak reference to it, its weight's shape, channels_last, its LayerSpec); an entry
# leaves when its module dies (a plain dict by id: a WeakKeyDictionary lookup is a Python call)
_SPECS: dict[int, tuple[weakref.ref[nn.Module], tuple[int, ...], bool, LayerSpec]] = {}


@dataclass(frozen=True, slots=True)
class ModulePlan:
    """What a Probe needs to know of a model's modules, kept while the module tree is unchanged."""

    # below, the model's submodules only: the cache holds the model weakly
    modules: list[nn.Module]  # as `named_modules()` lists them
    tree: list[Edges]  # `_edges` of the model, then of each of `modules`: what "unchanged" means
    names: dict[int, str]  # id(module) → its name (the model's too)
    roles: dict[int, str | None]  # id(module) → `role(module)` (the model's too)
    hooked: list[tuple[nn.Module, bool, bool]]  # the modules to hook, whether a post-hook is enough, TorchScript
    leaders: list[nn.Module]  # conv/linear modules (their parameters get dL/dW hooks)
    sealable: list[nn.Module]  # torch's own role-less leaves whose forward the mode need not see
    quiet: frozenset[int]  # id of torch's own activation modules (`_quiet_activation` in the probe)


Edges = tuple[type, tuple[tuple[str, Any], ...]]  # a module's type, its (name, child) pairs

_PLANS: weakref.WeakKeyDictionary[nn.Module, ModulePlan] = weakref.WeakKeyDictionary()


def _edges(modules: list[nn.Module]) -> list[Edges]:
    """Each module's type and direct children: equal lists for the model and the modules a cached
    plan reached from it mean the same module tree (a changed child shows at its parent). The
    children compare as the same object first (a tuple's `==`), so no module's `__eq__` runs
    unless a child was replaced."""
    return [(type(m), tuple(m._modules.items())) for m in modules]


def module_plan(model: nn.Module) -> ModulePlan:
    """The model's `ModulePlan`, from the cache when its module tree is the one seen last time."""
    try:
        hit = _PLANS.get(model)
    except TypeError:  # a module class that made itself unhashable: no cache
        hit = None
    if hit is not None and hit.tree == _edges([model, *hit.modules]):
        return hit
    named = list(model.named_modules())
    modules = [m for _, m in named][1:]  # the model comes first
    roles = {id(m): role(m) for _, m in named}

    def needs_hooks(m: nn.Module) -> bool:
        # Every conv/linear/norm/activation, and every module whose forward may call a
        # functional activation (containers and user modules); the model always. torch's own
        # leaves without a role (pooling, dropout, flatten, ...) are skipped: they call no activation.
        if roles[id(m)] is not None:
            return True
        return not (builtin(m) and next(m.children(), None) is None)

    def leaf(m: nn.Module) -> bool:
        # a conv/linear/norm of torch itself (not the model): its forward calls no activation
        # and nothing that names a call, so a post-hook (`Probe._leaf_hook`) sees all it needs
        return roles[id(m)] in ("leader", "norm") and builtin(m)

    plan = ModulePlan(
        modules=modules,
        tree=_edges([model, *modules]),
        names={id(m): n for n, m in named},
        roles=roles,
        hooked=[(m, leaf(m), isinstance(m, ScriptModule)) for m in modules if needs_hooks(m)],
        leaders=[m for m in modules if roles[id(m)] == "leader"],
        sealable=[m for m in modules if not needs_hooks(m) and type(m) in SEALED_TYPES],
        quiet=frozenset(id(m) for _, m in named if roles[id(m)] == "activation" and builtin(m)),
    )
    with suppress(TypeError):
        _PLANS[model] = plan
    return plan


def global_module_hooks() -> bool:
    """Any forward hook registered for every module (`register_module_forward_hook`)?"""
    g = torch.nn.modules.module
    return bool(g._global_forward_pre_hooks or g._global_forward_hooks)


def param(module: nn.Module, name: str) -> Any:
    """`getattr(module, name, None)`, without `Module.__getattr__` for a registered parameter."""
    params = module._parameters
    return params[name] if name in params else getattr(module, name, None)


def builtin(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.nn.modules.")


def spec_of(module: nn.Module, channels_last: bool = False) -> LayerSpec:
    """LayerSpec.of, remembered per module while its weight keeps its shape."""
    w = param(module, "weight")
    shape = tuple(w.shape) if isinstance(w, Tensor) else ()
    key = id(module)
    hit = _SPECS.get(key)
    if hit is not None and hit[0]() is module and hit[1] == shape and hit[2] == channels_last:
        return hit[3]
    spec = LayerSpec.of(module, channels_last=channels_last)
    try:
        ref = weakref.ref(module, lambda _, key=key: _SPECS.pop(key, None))  # type: ignore[misc]
    except TypeError:  # a module class without weak references: not remembered
        return spec
    _SPECS[key] = (ref, shape, channels_last, spec)
    return spec
