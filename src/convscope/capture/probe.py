"""Probe: record x, W*x+b, z, a and their gradients for every block of any nn.Module.

    with cs.Probe(model) as probe:
        loss = criterion(model(x), y)
        loss.backward()
    block = probe.trace["conv1"]      # block.x, .conv, .z, .a, .weight, .grad_weight, .grad_z, .grad_a

How it sees things (DESIGN.md §3): forward hooks on every module give names and the
outputs of conv/linear, norm and activation modules; a `TorchFunctionMode`, active only
during the probed forward, sees functional activations (`F.relu`, `torch.tanh`, `x.relu_()`)
and every in-place op, so a kept tensor is copied just before something writes into it
(copy on write: an in-place ReLU cannot corrupt `z`). Gradients come from tensor hooks on
`z`, `a` and the parameters. Every hook is removed in `finally`, also when the forward raises.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import torch
import torch.optim.optimizer as optim_hooks
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from convscope.capture.hooks import HookSet
from convscope.capture.naming import (
    ACTIVATION_FUNCTIONS,
    LayerSpec,
    base_name,
    functional_name,
    is_inplace,
    is_valid_selection,
    role,
    selectable_names,
)
from convscope.config import FIELDS, CaptureConfig

_HELD = ("x", "conv", "z", "a", "weight", "bias")


class UnknownLayerError(KeyError):
    """A layer name that the model does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(eq=False)
class Block:
    """One block `conv|linear → (norm) → activation`, or a lone activation, as recorded in one pass.

    Tensors are detached; a field is None when it was not kept or does not apply (no
    gradients under `torch.no_grad()`, no `conv`/`weight` for a lone activation).
    """

    name: str  # the leader's call name, or the activation's for a lone activation
    kind: str  # "conv" | "linear" | "activation"
    spec: LayerSpec | None = None  # the leader's layer spec
    norm_name: str | None = None
    norm_type: str | None = None
    act_name: str | None = None
    activation: str | None = None  # "ReLU", "relu", "tanh", ...
    x: Tensor | None = None  # (B, C_in, H, W) or (B, F_in)
    conv: Tensor | None = None  # (B, C_out, H', W'): W*x + b before any norm
    z: Tensor | None = None  # (B, C_out, H', W'): what enters the activation
    a: Tensor | None = None  # (B, C_out, H', W'): activation map = feature map
    _weight: Tensor | None = field(default=None, repr=False)  # (C_out, C_in/groups, k, k) or (F_out, F_in)
    _bias: Tensor | None = field(default=None, repr=False)  # (C_out,)
    grad_weight: Tensor | None = None  # dL/dW, same shape as weight
    grad_bias: Tensor | None = None
    grad_a: Tensor | None = None
    stale: set[str] = field(default_factory=set)  # fields overwritten in place by an unseen op
    _kept: bool = field(default=False, repr=False)
    _grads: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _z_source: str = field(default="conv", repr=False)  # which recorded tensor is z
    _view_versions: dict[str, int] = field(default_factory=dict, repr=False)

    #: set by convscope.render (capture may not import it): Block → HTML, so it draws itself in Jupyter
    display: ClassVar[Callable[[Block], str] | None] = None

    def _repr_html_(self) -> str | None:
        return None if Block.display is None else Block.display(self)

    @property
    def weight(self) -> Tensor | None:
        """W as used in the forward (None, with `stale`, if it was since changed in place)."""
        return self._param_view("weight")

    @weight.setter
    def weight(self, value: Tensor | None) -> None:
        self._weight = value
        self._view_versions.pop("weight", None)

    @property
    def bias(self) -> Tensor | None:
        """b as used in the forward."""
        return self._param_view("bias")

    @bias.setter
    def bias(self, value: Tensor | None) -> None:
        self._bias = value
        self._view_versions.pop("bias", None)

    def _param_view(self, name: str) -> Tensor | None:
        t: Tensor | None = getattr(self, f"_{name}")
        version = self._view_versions.get(name)
        if t is not None and version is not None and t._version != version:
            setattr(self, f"_{name}", None)
            self._view_versions.pop(name)
            self.stale.add(name)
            warnings.warn(
                f"{self.name}.{name} was changed in place after the probe closed (an optimizer step"
                " outside the probe?); run the backward and the step inside the probe to keep it",
                stacklevel=3,
            )
            return None
        return t

    @property
    def grad_z(self) -> Tensor | None:
        """dL/dz."""
        return self._grads.get(self._z_source)

    @property
    def members(self) -> tuple[str, ...]:
        """Names of the calls that make up this block."""
        names = [self.name]
        names += [n for n in (self.norm_name, self.act_name) if n and n != self.name]
        return tuple(names)

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        """Per-example output size (C, H, W) or (F,)."""
        for t in (self.a, self.z, self.conv):
            if t is not None:
                return tuple(t.shape[1:])
        return None


class Trace(Mapping[str, Block]):
    """Blocks of one forward pass, in call order, by block name; member names (the norm's or
    the activation's name) find their block too."""

    def __init__(self) -> None:
        self._blocks: dict[str, Block] = {}
        self._alias: dict[str, str] = {}

    def _add(self, block: Block) -> None:
        self._blocks[block.name] = block

    def _alias_to(self, member: str, block: Block) -> None:
        self._alias[member] = block.name

    def __getitem__(self, name: str) -> Block:
        key = name if name in self._blocks else self._alias.get(name)
        if key is None:
            valid = ", ".join(self._blocks) or "(none: did a forward run inside the probe?)"
            raise UnknownLayerError(f"no block named {name!r} in this trace; blocks: {valid}")
        return self._blocks[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __repr__(self) -> str:
        return f"Trace({list(self._blocks)})"

    #: set by convscope.render (capture may not import it): Trace → HTML (its block table) for Jupyter
    display: ClassVar[Callable[[Trace], str] | None] = None

    def _repr_html_(self) -> str | None:
        return None if Trace.display is None else Trace.display(self)


class _FunctionWatch(TorchFunctionMode):
    """Routes every torch function called during the probed forward to the probe."""

    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self._probe = probe

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return self._probe._on_function(func, args, kwargs or {})


class Probe:
    """Record every block of `model` while the `with` block runs (forward and backward).

    `layers` limits what is kept to the blocks that contain one of these names (fails fast
    on an unknown name, listing the valid ones). `tap(block, field, tensor)`, if given, is
    called with the live in-graph tensor of every field of a wanted block as it is recorded
    (the attribution methods start their backward from it; raising there ends the forward). Each forward of `model` inside the probe
    is one pass and `probe.trace` is the last one (an earlier trace you kept a reference to
    stays valid; the probe itself holds only the last, so a training loop does not grow
    memory). Run the backward inside the `with` block to get gradients. `probe.passes`
    counts the forwards seen.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[str] | tuple[str, ...] | None = None,
        *,
        config: CaptureConfig | None = None,
        keep: tuple[str, ...] | list[str] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        tap: Callable[[Block, str, Tensor], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Probe needs an nn.Module, got {type(model).__name__}")
        if config is None:
            config = CaptureConfig(
                keep=frozenset(keep) if keep is not None else frozenset(FIELDS),
                device=device,
                dtype=dtype,
            )
        elif keep is not None or device is not None or dtype is not None:
            raise ValueError("pass either config= or keep=/device=/dtype=, not both")
        self.model = model
        self.config = config
        # tap(block, field, tensor): sees the live (undetached, in-graph) x, conv, z and a of
        # every wanted block as it is recorded; it may raise to end the forward there.
        self._tap = tap
        named = list(model.named_modules())
        self._modules = [m for _, m in named]  # walked once here, reused by every __enter__
        self._names = {id(m): n for n, m in named}
        self._roles = {id(m): role(m) for _, m in named}
        self.layers: frozenset[str] | None = None
        if layers is not None:
            if isinstance(layers, str):
                raise TypeError("layers must be a list of names, not a string")
            valid = selectable_names(model)
            valid_set, all_names = set(valid), set(self._names.values())
            unknown = [n for n in layers if not is_valid_selection(n, all_names, valid_set)]
            if unknown:
                raise UnknownLayerError(
                    f"unknown layer(s) {unknown}; valid: {', '.join(valid)}"
                    " (or '<module>.<activation function>' for a functional activation)"
                )
            self.layers = frozenset(layers)
        self.passes = 0
        self._trace: Trace | None = None
        # copy on write: storage pointer → (block, field, version) holding a view of it
        self._held: dict[int, list[tuple[weakref.ref[Block], str, int]]] = {}
        self._hooks = HookSet()
        self._mode: _FunctionWatch | None = None
        self._active = False
        self._backward_ran = False
        self._stack: list[str] = []
        self._reset_pass()

    # ---- public -------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        """The last forward pass's blocks."""
        if self._trace is None:
            raise RuntimeError("no forward pass of the model ran inside the probe")
        return self._trace

    def __enter__(self) -> Probe:
        if self._active:
            raise RuntimeError("this Probe is already active")
        try:
            for module in self._modules:
                if not self._needs_hooks(module):
                    continue
                self._hooks.add(
                    module.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
                )
                self._hooks.add(
                    module.register_forward_hook(
                        self._post_hook, with_kwargs=True, always_call=True
                    )
                )
            self._hooks.add(optim_hooks.register_optimizer_step_pre_hook(self._before_step))
            self._hook_parameters()
        except BaseException:
            self._hooks.release()
            raise
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook (idempotent), check kept tensors were not overwritten, and copy
        kept weights so a later optimizer step cannot change the trace."""
        try:
            self._leave_mode()
        finally:
            self._active = False
            self._stack.clear()
            self._hooks.release()
            self._check_versions()
            if self._backward_ran:  # an optimizer step is likely next: keep W as it was used
                self._copy_before_write((list(self.model.parameters()),), {})
            self._leave_views()
            self._held = {}

    def _needs_hooks(self, module: nn.Module) -> bool:
        """The model, every conv/linear/norm/activation, and every module whose forward may call
        a functional activation (containers and user modules). torch's own leaves without a
        role (pooling, dropout, flatten, ...) are skipped: they call no activation."""
        if module is self.model or self._roles.get(id(module)) is not None:
            return True
        builtin = type(module).__module__.startswith("torch.nn.modules.")
        return not (builtin and next(module.children(), None) is None)

    # ---- passes, module hooks -----------------------------------------------------------
    def _reset_pass(self) -> None:
        self._calls: dict[str, int] = {}
        self._open: Block | None = None
        self._open_tensor: Tensor | None = None
        self._open_version = -1
        self._pending_act: tuple[Block, str, bool] | None = None
        self._param_blocks: dict[int, list[tuple[Block, str]]] = {}

    def _pre_hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if module is self.model:
            self._leave_mode()
            self._check_versions()
            self._reset_pass()
            self._stack.clear()
            self._trace = Trace()
            self.passes += 1
            self._mode = _FunctionWatch(self)
            self._mode.__enter__()  # type: ignore[no-untyped-call]
        if self._mode is None:  # a submodule called on its own, outside the model's forward
            return
        self._stack.append(self._names.get(id(module), "?"))
        if self._roles.get(id(module)) == "activation":
            inp = _first_tensor(args, kwargs)
            if inp is not None:
                with _no_dispatch():
                    self._activation_before(self._call_name(self._stack[-1]), module, inp)

    def _post_hook(
        self,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output: Any,
    ) -> None:
        if self._mode is None:
            return
        if self._stack:
            self._stack.pop()
        r = self._roles.get(id(module))
        if r is not None and isinstance(output, Tensor):
            with _no_dispatch():
                inp = _first_tensor(args, kwargs)
                if r == "leader" and inp is not None:
                    self._leader_after(module, inp, output)
                elif r == "norm" and inp is not None:
                    self._norm_after(module, inp, output)
                elif r == "activation":
                    self._activation_after(output)
        if module is self.model:
            self._leave_mode()

    def _leave_mode(self) -> None:
        mode, self._mode = self._mode, None
        if mode is not None:
            mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]
        self._pending_act = None

    # ---- functional calls ---------------------------------------------------------------
    def _on_function(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fname = getattr(func, "__name__", "")
        if self._held and is_inplace(fname, kwargs):
            self._copy_before_write(args, kwargs)
        if (
            fname in ACTIVATION_FUNCTIONS
            and args
            and isinstance(args[0], Tensor)
            and not self._inside_activation_module()
        ):
            parent = self._stack[-1] if self._stack else ""
            name = self._call_name(functional_name(parent, fname))
            self._activation_before(name, None, args[0], shown=ACTIVATION_FUNCTIONS[fname])
            out = func(*args, **kwargs)
            if isinstance(out, Tensor):
                self._activation_after(out)
            return out
        return func(*args, **kwargs)

    def _inside_activation_module(self) -> bool:
        return bool(self._stack) and self._pending_act is not None and self._pending_act[2]

    # ---- recording ----------------------------------------------------------------------
    def _call_name(self, name: str) -> str:
        n = self._calls.get(name, 0)
        self._calls[name] = n + 1
        return name if n == 0 else f"{name}#{n}"

    def _wanted(self, *names: str | None) -> bool:
        if self.layers is None:
            return True
        return any(n is not None and (n in self.layers or base_name(n) in self.layers) for n in names)

    def _leader_after(self, module: nn.Module, inp: Tensor, out: Tensor) -> None:
        name = self._call_name(self._names.get(id(module), "?"))
        spec = _spec_of(module)
        kind = "linear" if isinstance(module, nn.Linear) else "conv"
        block = Block(name=name, kind=kind, spec=spec)
        self._open, self._open_tensor, self._open_version = block, out, out._version
        block._kept = self._wanted(name)
        if not block._kept:
            return
        self.trace._add(block)
        self._keep(block, "x", inp)
        self._keep(block, "conv", out)
        self._keep(block, "z", out)
        self._keep(block, "weight", getattr(module, "weight", None))
        self._keep(block, "bias", getattr(module, "bias", None))
        for pname in ("weight", "bias"):
            p = getattr(module, pname, None)
            if isinstance(p, Tensor):
                self._param_blocks.setdefault(id(p), []).append((block, f"grad_{pname}"))
        self._grad_hook(block, "conv", out)

    def _norm_after(self, module: nn.Module, inp: Tensor, out: Tensor) -> None:
        block = self._open
        if block is None or inp is not self._open_tensor or inp._version != self._open_version:
            return  # a norm that does not follow a conv/linear directly: not part of a block
        name = self._call_name(self._names.get(id(module), "?"))
        block.norm_name, block.norm_type = name, type(module).__name__
        self._open_tensor, self._open_version = out, out._version
        if not block._kept:
            if self._wanted(name):
                block._kept = True
                self.trace._add(block)
            else:
                return
        self.trace._alias_to(name, block)
        block._z_source = "norm"
        self._keep(block, "z", out)
        self._grad_hook(block, "norm", out)

    def _activation_before(
        self, name: str, module: nn.Module | None, inp: Tensor, *, shown: str | None = None
    ) -> None:
        """Pair the activation with the open block when its input is that block's output,
        untouched; else start a lone-activation block. Runs before the op (it may be in place)."""
        shown = shown or type(module).__name__
        block = self._open
        paired = (
            block is not None and inp is self._open_tensor and inp._version == self._open_version
        )
        if not paired or block is None:
            block = Block(name=name, kind="activation", spec=None)
            block._z_source = "input"
            block._kept = self._wanted(name)
            if block._kept:
                self.trace._add(block)
                self._keep(block, "x", inp)
                self._keep(block, "z", inp)
                self._grad_hook(block, "input", inp)
        elif not block._kept and self._wanted(name):
            block._kept = True
            self.trace._add(block)
        block.act_name, block.activation = name, shown
        if paired and block._kept:
            self.trace._alias_to(name, block)
        self._open, self._open_tensor = None, None
        self._pending_act = (block, name, module is not None)

    def _activation_after(self, out: Tensor) -> None:
        pending, self._pending_act = self._pending_act, None
        if pending is None:
            return
        block = pending[0]
        if block._kept:
            self._keep(block, "a", out)
            self._grad_hook(block, "a", out)

    def _keep(self, block: Block, name: str, t: Tensor | None) -> None:
        if t is None:
            return
        if self._tap is not None and name in ("x", "conv", "z", "a"):
            self._tap(block, name, t)
        if name not in self.config.keep:
            return
        d = t.detach()
        cfg = self.config
        if cfg.device is not None or cfg.dtype is not None:
            moved = d.to(device=cfg.device, dtype=cfg.dtype)
            if moved.untyped_storage().data_ptr() != d.untyped_storage().data_ptr():
                setattr(block, name, moved)  # already a copy: nothing can overwrite it
                return
        setattr(block, name, d)
        self._held.setdefault(_storage(d), []).append((weakref.ref(block), name, d._version))

    def _grad_hook(self, block: Block, slot: str, t: Tensor) -> None:
        if not t.requires_grad:
            return
        wanted = "grad_a" if slot == "a" else "grad_z"
        if wanted not in self.config.keep:
            return
        cfg = self.config

        def store(grad: Tensor) -> None:
            g = grad.detach()
            if cfg.device is not None or cfg.dtype is not None:
                g = g.to(device=cfg.device, dtype=cfg.dtype)
            if slot == "a":
                block.grad_a = g
            else:
                block._grads[slot] = g

        self._hooks.add(t.register_hook(store))

    def _hook_parameters(self) -> None:
        """One tensor hook per conv/linear parameter: dL/dW of the current backward."""
        seen: set[int] = set()
        for module in self._modules:
            if self._roles.get(id(module)) != "leader":
                continue
            for pname in ("weight", "bias"):
                p = getattr(module, pname, None)
                if not isinstance(p, Tensor) or not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                self._hooks.add(p.register_hook(self._param_grad_store(id(p))))

    def _param_grad_store(self, pid: int) -> Callable[[Tensor], None]:
        def store(grad: Tensor) -> None:
            self._backward_ran = True
            targets = self._param_blocks.get(pid, [])
            if not targets:
                return
            g = grad.detach()
            cfg = self.config
            if cfg.device is not None or cfg.dtype is not None:
                g = g.to(device=cfg.device, dtype=cfg.dtype)
            for block, fname in targets:
                if fname in self.config.keep:
                    setattr(block, fname, g)

        return store

    # ---- copy on write ------------------------------------------------------------------
    def _copy_before_write(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        targets: list[Any] = [args[0]] if args else []
        if "out" in kwargs:
            targets.append(kwargs["out"])
        for t in _tensors(targets):
            entries = self._held.pop(_storage(t), None)
            if not entries:
                continue
            copies: dict[int, Tensor] = {}
            for ref, name, _ in entries:
                block = ref()
                if block is None:
                    continue
                current = getattr(block, name)
                if current is None:
                    continue
                key = id(current)
                if key not in copies:
                    copies[key] = current.clone()
                setattr(block, name, copies[key])

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """An optimizer step writes into the weights: copy the kept ones first."""
        if not self._held:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self._copy_before_write((params,), {})

    def _leave_views(self) -> None:
        """Weights still shared with the model after close are checked on access instead."""
        for entries in self._held.values():
            for ref, name, version in entries:
                block = ref()
                if block is not None and name in ("weight", "bias"):
                    block._view_versions[name] = version

    def _check_versions(self) -> None:
        """A kept view written by an op the probe could not see is dropped, and said so."""
        for key in list(self._held):
            alive = []
            for ref, name, version in self._held[key]:
                block = ref()
                if block is None:
                    continue
                t = getattr(block, name)
                if t is not None and t._version != version:
                    setattr(block, name, None)
                    block.stale.add(name)
                else:
                    alive.append((ref, name, version))
            if alive:
                self._held[key] = alive
            else:
                del self._held[key]


_SPECS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], LayerSpec]] = weakref.WeakKeyDictionary()


def _spec_of(module: nn.Module) -> LayerSpec:
    """LayerSpec.of, remembered per module while its weight keeps its shape."""
    w = getattr(module, "weight", None)
    shape = tuple(w.shape) if isinstance(w, Tensor) else ()
    hit = _SPECS.get(module)
    if hit is not None and hit[0] == shape:
        return hit[1]
    spec = LayerSpec.of(module)
    _SPECS[module] = (shape, spec)
    return spec


def _no_dispatch() -> AbstractContextManager[None]:
    """The probe's own tensor calls skip its TorchFunctionMode (and any other)."""
    return torch._C.DisableTorchFunction()


def _storage(t: Tensor) -> int:
    return int(t.untyped_storage().data_ptr())


def _tensors(items: list[Any]) -> Iterator[Tensor]:
    for item in items:
        if isinstance(item, Tensor):
            yield item
        elif isinstance(item, list | tuple):
            yield from _tensors(list(item))


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    if args and isinstance(args[0], Tensor):
        return args[0]
    for key in ("input", "x"):
        v = kwargs.get(key)
        if isinstance(v, Tensor):
            return v
    return None
