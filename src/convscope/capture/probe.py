"""Probe: record x, W*x+b, z, a and their gradients for every block of any nn.Module.

    with cs.Probe(model) as probe:
        loss = criterion(model(x), y)
        loss.backward()
    block = probe.trace["conv1"]      # block.x, .conv, .z, .a, .weight, .grad_weight, .grad_z, .grad_a

How it sees things (DESIGN.md §3): a forward wrapper on every module (capture/wrap.py; module
hooks where a wrapper cannot stand in) gives names and the outputs of conv/linear, norm and
activation modules; a `TorchFunctionMode`, active only during the probed forward, sees
functional activations (`F.relu`, `torch.tanh`, `x.relu_()`) and every in-place op, so a kept
tensor is copied just before something writes into it (copy on write, capture/cow.py: an
in-place ReLU cannot corrupt `z`). Gradients come from tensor hooks on `z`, `a` and the
parameters. Every wrapper and hook is removed in `finally`, also when the forward raises.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
import torch.optim.optimizer as optim_hooks
from torch import Tensor, nn
from torch.jit import ScriptModule
from torch.overrides import TorchFunctionMode

from convscope.capture.cow import KeptTensors, storage_of
from convscope.capture.hooks import HookSet
from convscope.capture.layout import CHANNELS_LAST, Perm, after_permute, permute_dims
from convscope.capture.memory import keep_freed_memory
from convscope.capture.naming import (
    ACTIVATION_FUNCTIONS,
    base_name,
    functional_name,
    is_inplace,
    is_valid_selection,
    selectable_names,
)
from convscope.capture.plan import (
    builtin,
    global_module_hooks,
    module_plan,
    param,
    spec_of,
)
from convscope.capture.trace import Block, Trace, UnknownLayerError
from convscope.capture.wrap import WrapSet
from convscope.config import FIELDS, CaptureConfig

__all__ = ["Block", "Probe", "Trace", "UnknownLayerError"]

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
        # fast path: most calls (conv2d, max_pool2d, add, ...) are no activation, not in place,
        # no followed view, and pass no keyword (so no `inplace=`/`out=`): just run them
        fname = getattr(func, "__name__", "")
        plain = _PLAIN.get(fname)
        if plain is None:
            plain = _PLAIN[fname] = fname not in _WATCHED and not is_inplace(fname, {})
        if plain and not kwargs:
            return func(*args)
        return self._probe._on_function(func, args, kwargs or {})


class Probe(KeptTensors):
    """Record every block of `model` while the `with` block runs (forward and backward).

    `layers` limits what is kept to the blocks that contain one of these names (fails fast
    on an unknown name, listing the valid ones). `tap(block, field, tensor)`, if given, is
    called with the live in-graph tensor of every field of a wanted block as it is recorded
    (the attribution methods start their backward from it; raising there ends the forward).
    `overwrite(block, field, tensor)`, if given, is called with a kept x, conv, z or a just before
    an op writes into its memory (an in-place ReLU into z): returning True drops the field there
    (set to None, no copy kept; the caller has read what it needs, e.g. a reduction), False keeps
    the usual copy. `grad_tap(block, field, grad)`, if given, is called with dL/da and dL/dz
    ("grad_a", "grad_z") of every wanted block as the backward makes them (detached, channels
    first), kept or not: a reduction there reads them while they are in the CPU cache and lets
    the backward reuse their memory. A callback may also let go of a kept x, conv, z or a it has
    read (set the block's field to None, as `overwrite` returning True does): the probe then keeps
    no copy of it, and the pass can reuse its memory (train/stats.py `Reductions` lets go of z once
    its activation is reduced). Each forward of `model` inside the probe
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
        overwrite: Callable[[Block, str, Tensor], bool] | None = None,
        grad_tap: Callable[[Block, str, Tensor], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Probe needs an nn.Module, got {type(model).__name__}")
        if config is None and keep is None and device is None and dtype is None:
            config = _DEFAULT_CONFIG  # frozen: one instance serves every default Probe
        elif config is None:
            config = CaptureConfig(
                keep=frozenset(keep) if keep is not None else frozenset(FIELDS),
                device=device,
                dtype=dtype,
            )
        elif keep is not None or device is not None or dtype is not None:
            raise ValueError("pass either config= or keep=/device=/dtype=, not both")
        self.model = model
        self.config = config
        self._moves = config.device is not None or config.dtype is not None  # kept tensors are moved
        self._general = tap is not None or self._moves or config.keep != _EVERY_FIELD  # `_keep`'s checks
        self._param_grads = bool(config.keep & {"grad_weight", "grad_bias", "weight", "bias"})  # (`_grad_hook`)
        # tap(block, field, tensor): sees the live (undetached, in-graph) x, conv, z and a of
        # every wanted block as it is recorded; it may raise to end the forward there.
        self._tap = tap
        self._overwrite = overwrite
        self._grad_tap = grad_tap
        plan = module_plan(model)  # walked once here, reused by every __enter__
        self._modules = [model, *plan.modules]
        self._names, self._roles = plan.names, plan.roles
        # the modules to hook, each with whether only a post-hook is needed (`_leaf_hook`) and
        # whether it is TorchScript (module hooks, no wrapper)
        self._hooked: list[tuple[nn.Module, bool, bool]] = [(model, False, isinstance(model, ScriptModule)), *plan.hooked]
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
        self._fresh: list[tuple[weakref.ref[Block], str, int]] = []  # kept, not yet filed in `_held`
        self._hooks = HookSet()
        self._wraps = WrapSet()
        self._mode_cell: list[object | None] = [None]  # the mode, where the wrappers read it
        self._sealable, self._quiet = plan.sealable, plan.quiet
        self._mode: _FunctionWatch | None = None
        self._paused: nn.Module | None = None  # the activation module running with the mode off
        self._active = False
        self._backward_ran = False
        self._params_hooked: set[int] = set()  # parameters with a dL/dW hook (`_hook_params`)
        self._stack: list[str] = []
        self._reset_pass()

    # ---- public -------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        """The last forward pass's blocks."""
        if self._trace is None:
            raise RuntimeError("no forward pass of the model ran inside the probe (or forget() let go of its trace)")
        return self._trace

    @property
    def in_forward(self) -> bool:
        """A forward pass is running (inside one of the model's module calls)."""
        return bool(self._stack)

    def forget(self) -> None:
        """Let go of the last pass's trace (one you hold stays valid): a training loop that has read
        what it needs frees those maps now, not at the probe's next pass (a full capture of
        resnet18-shaped at batch 8 holds 482 MB; watch() takes one every minute or so there). Call
        it between passes (after the backward: a dL/dW still to come is not recorded)."""
        if self.in_forward:
            raise RuntimeError("Probe.forget() inside a forward pass: call it between passes")
        self._trace = None
        self._reset_pass()  # (the pass's bookkeeping holds its blocks too)

    def __enter__(self) -> Probe:
        if self._active:
            raise RuntimeError("this Probe is already active")
        if not _MALLOC[0]:  # once per process: no page-fault churn between passes (memory.py)
            keep_freed_memory()
            _MALLOC[0] = True
        try:
            wrap, mode_of, quiet = self._wraps.wrap, self._mode_cell, self._quiet
            pre, post, leaf_post = self._pre, self._post_hook, self._leaf_hook
            for module, leaf, scripted in self._hooked:
                if scripted or "forward" in module.__dict__:  # no wrapper can stand in (wrap.py): hooks
                    self._hook_module(module, leaf)
                elif leaf:  # torch's own conv/linear/norm: its forward (sealed), then `_leaf_hook`
                    wrap(module, None, leaf_post, mode_of)
                else:
                    wrap(module, pre, post, mode_of if _quiet_activation(module, quiet) else None)
            for module in self._sealable:
                d = module.__dict__
                if "forward" not in d and not d.get("inplace", False):
                    wrap(module, None, None, mode_of)
            self._hooks.add(optim_hooks.register_optimizer_step_pre_hook(self._before_step))
        except BaseException:
            self._wraps.release()
            self._hooks.release()
            raise
        self._active = True
        return self

    def _hook_module(self, module: nn.Module, leaf: bool) -> None:
        add = self._hooks.add
        if leaf:
            add(module.register_forward_hook(self._leaf_hook, with_kwargs=True, always_call=True))
        else:
            add(module.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            add(module.register_forward_hook(self._post_hook, with_kwargs=True, always_call=True))

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
            self._params_hooked = set()
            self._stack.clear()
            try:
                self._wraps.release()
            finally:
                self._hooks.release()
            if self._backward_ran:  # an optimizer step is likely next: keep W as it was used
                self._check_versions()
                self._copy_storages(
                    storage_of(p) for m in self._modules for p in m._parameters.values() if p is not None
                )
                self._leave_views()
            else:
                self._leave_intact_views()
            self._held, self._fresh = {}, []

    # ---- passes, module hooks -----------------------------------------------------------
    def _reset_pass(self) -> None:
        self._calls: dict[str, int] = {}
        self._open: Block | None = None  # the block whose output may still meet a norm/activation
        self._open_views: list[tuple[Tensor, int, Perm]] = []  # its output (and permuted views of it)
        self._open_leader: _Leader | None = None  # the open block's leader call, not kept (yet)
        self._norm: _NormCall | None = None  # a norm of the open block, while its forward runs
        self._pending_act: tuple[Block, str, bool, Perm] | None = None  # (block, name, is a module, to_first)
        self._param_blocks: dict[int, list[tuple[Block, str, bool]]] = {}
        self._first_call: nn.Module | None = None  # what started a pass outside model.forward

    def _start_pass(self, first: nn.Module) -> None:
        self._leave_mode()
        self._check_versions()
        self._reset_pass()
        self._stack.clear()
        self._trace = Trace()
        self.passes += 1
        self._first_call = None if first is self.model else first
        self._mode = _FunctionWatch(self)
        self._mode.__enter__()  # type: ignore[no-untyped-call]
        self._mode_cell[0] = self._mode

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._pre(module, args, kwargs)
        if self._roles.get(id(module)) == "activation":
            self._pause_mode(module)

    def _pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # A pass is one call of the model, or — for other entry points such as
        # `model.forward_features(x)` — starts at the first call of any of its modules when no
        # pass is running, and runs until the next pass or the probe's end; calling that first
        # module again from outside every module starts the next pass.
        if module is self.model or (
            not self._stack and (self._mode is None or module is self._first_call)
        ):
            self._start_pass(module)
        self._stack.append(self._names.get(id(module), "?"))
        r = self._roles.get(id(module))
        if r == "activation":
            inp = _first_tensor(args, kwargs)
            if inp is not None:
                with _no_dispatch():
                    self._activation_before(self._call_name(self._stack[-1]), module, inp)
        elif r == "norm" and self._norm is None and self._open is not None:
            inp = _first_tensor(args, kwargs)
            to_first = self._open_match(inp) if inp is not None else _NO_MATCH
            if inp is not None and to_first is not _NO_MATCH:
                name = self._call_name(self._stack[-1])
                shape = tuple(inp.shape)
                self._norm = _NormCall(self._open, module, name, to_first, shape)  # type: ignore[arg-type]

    def _post_hook(
        self,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output: Any,
    ) -> None:
        if self._paused is module:
            self._resume_mode()
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
                elif r == "norm" and self._norm is not None and self._norm.module is module:
                    self._norm_after(self._norm, output)
                elif r == "activation":
                    self._activation_after(output)
        if self._norm is not None and self._norm.module is module:
            self._norm = None
        if module is self.model:
            self._leave_mode()

    def _leaf_hook(
        self,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output: Any,
    ) -> None:
        """`_pre_hook` + `_post_hook` of a torch conv/linear/norm, after its forward: called
        outside every module with no pass running (or as the pass's first call), it starts one."""
        if not self._stack and (self._mode is None or module is self._first_call):
            self._start_pass(module)
        if self._mode is None or not isinstance(output, Tensor):
            return
        inp = _first_tensor(args, kwargs)
        if inp is None:
            return
        with _no_dispatch():
            if self._roles[id(module)] == "leader":
                self._leader_after(module, inp, output)
            elif self._norm is None and self._open is not None:
                to_first = self._open_match(inp)
                if to_first is not _NO_MATCH:
                    name = self._call_name(self._names[id(module)])
                    call = _NormCall(self._open, module, name, to_first, tuple(inp.shape))  # type: ignore[arg-type]
                    self._norm_after(call, output)

    def _pause_mode(self, module: nn.Module) -> None:
        """Inside torch's own activation module, not in place and hooked by the probe alone, the
        function mode has nothing to see (one activation call, which the module's hooks record;
        no write): take it off the mode stack until the module's post-hook. (A wrapped module's
        forward is sealed by its wrapper instead: `_quiet_activation`.)"""
        mode = self._mode
        if (
            mode is None
            or getattr(module, "inplace", False)
            or len(module._forward_pre_hooks) != 1
            or len(module._forward_hooks) != 1
            or global_module_hooks()
            or not builtin(module)
            or torch._C._len_torch_function_stack() == 0
            or torch._C._get_function_stack_at(torch._C._len_torch_function_stack() - 1) is not mode
        ):
            return
        torch._C._pop_torch_function_stack()
        self._paused = module

    def _resume_mode(self) -> None:
        if self._paused is not None and self._mode is not None:
            torch._C._push_on_torch_function_stack(self._mode)
        self._paused = None

    def _leave_mode(self) -> None:
        self._resume_mode()
        mode, self._mode = self._mode, None
        self._mode_cell[0] = None
        if mode is not None:
            mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]
        self._pending_act = None

    # ---- functional calls ---------------------------------------------------------------
    def _on_function(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fname = getattr(func, "__name__", "")
        act = (
            fname in ACTIVATION_FUNCTIONS
            and args
            and isinstance(args[0], Tensor)
            and not self._inside_activation_module()
        )
        if act:  # before any copy on write: an in-place activation's input is kept first
            parent = self._stack[-1] if self._stack else ""
            name = self._call_name(functional_name(parent, fname))
            self._activation_before(name, None, args[0], shown=ACTIVATION_FUNCTIONS[fname])
        if (self._held or self._fresh) and is_inplace(fname, kwargs):
            self._copy_before_write(args, kwargs)
        out = func(*args, **kwargs)
        if act:
            if isinstance(out, Tensor):
                self._activation_after(out)
        elif self._open_views and fname in _FOLLOWED and args and isinstance(out, Tensor):
            self._follow(fname, args, kwargs, out)
        return out

    def _inside_activation_module(self) -> bool:
        return bool(self._stack) and self._pending_act is not None and self._pending_act[2]

    def _follow(self, fname: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> None:
        """`out` is a permuted (or contiguous) copy of the open block's output: a norm or an
        activation applied to it still belongs to the block (ConvNeXt's channels-last LayerNorm)."""
        to_first = self._open_match(args[0])
        if to_first is _NO_MATCH:
            return
        if fname == "permute":
            dims = permute_dims(args, kwargs, out.dim())
            if dims is None:
                return
            to_first = after_permute(to_first, dims)  # type: ignore[arg-type]
        self._open_views.append((out, out._version, to_first))  # type: ignore[arg-type]

    def _open_match(self, t: Tensor) -> Perm | object:
        """`to_first` of `t` if it is (a followed view of) the open block's output, untouched."""
        for view, version, to_first in self._open_views:
            if t is view and t._version == version:
                return to_first
        return _NO_MATCH

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
        # a Linear over (B, H, W, C) is a 1×1 conv over C: shown channels-first
        linear = isinstance(module, nn.Linear)
        last = linear and inp.dim() == 4
        block = Block._new(name, "linear" if linear and not last else "conv", spec_of(module, last), last)
        to_first: Perm = CHANNELS_LAST if last else None
        out_version = out._version
        self._open, self._open_views = block, [(out, out_version, to_first)]
        leader = (block, module, inp, inp._version, out, out_version, to_first)
        self._open_leader = None
        if self.layers is None or self._wanted(name):
            self._adopt(block, leader)
        else:
            self._open_leader = leader

    def _adopt(self, block: Block, leader: _Leader | None = None) -> None:
        """Keep `block` (a member of it is wanted): its leader's tensors too, if still intact."""
        block._kept = True
        self.trace._add(block)
        if leader is None:
            leader, self._open_leader = self._open_leader, None
            if leader is None or leader[0] is not block:
                return
        _, module, inp, inp_version, out, out_version, to_first = leader
        kept: list[tuple[str, Tensor, str | None]] = []  # (field, tensor, also): `_keep_all`
        if inp._version == inp_version:
            kept.append(("x", inp if to_first is None else inp.permute(to_first), None))
        intact = out._version == out_version
        if intact:
            out_first = out if to_first is None else out.permute(to_first)
            kept.append(("conv", out_first, "z" if block._z_source == "conv" else None))
        params: list[tuple[Tensor, str, bool]] = []
        for pname, gname in _PARAMS:
            p = param(module, pname)
            if isinstance(p, Tensor):
                as_conv = block.channels_last and pname == "weight"
                kept.append((pname, p[:, :, None, None] if as_conv else p, None))
                params.append((p, gname, as_conv))
        self._keep_all(block, kept)  # (a tap of x or conv may raise here: the block then gets no dL/dW)
        blocks = self._param_blocks
        for p, gname, as_conv in params:
            targets = blocks.get(id(p))
            if targets is None:
                blocks[id(p)] = [(block, gname, as_conv)]
            else:
                targets.append((block, gname, as_conv))
        if intact:
            self._grad_hook(block, "conv", out, to_first, module)
        elif torch.is_grad_enabled():
            self._hook_params(module)  # no hook on its output to do it in the backward: now

    def _norm_after(self, call: _NormCall, out: Tensor) -> None:
        """The norm of the open block returned without calling an activation: z is its output."""
        block = self._open
        if call.fused or block is None or call.block is not block:
            return  # fused norm + activation: already recorded as the block's z and a
        block.norm_name, block.norm_type = call.name, type(call.module).__name__
        to_first = call.to_first if tuple(out.shape) == call.shape else None
        self._open_views = [(out, out._version, to_first)]
        block._z_source = "norm"
        if not block._kept:
            if not self._wanted(call.name):
                return
            self._adopt(block)
        self.trace._alias_to(call.name, block)
        self._keep(block, "z", _permuted(out, to_first))
        self._grad_hook(block, "norm", out, to_first)

    def _activation_before(
        self, name: str, module: nn.Module | None, inp: Tensor, *, shown: str | None = None
    ) -> None:
        """Pair the activation with the open block when its input is that block's output
        (or its norm's, for a norm whose own forward calls the activation), untouched; else
        start a lone-activation block. Runs before the op (it may be in place)."""
        shown = shown or type(module).__name__
        block = self._open
        norm = self._norm
        fused = (
            norm is not None and not norm.fused and norm.block is block and tuple(inp.shape) == norm.shape
        )
        to_first: Perm | object = norm.to_first if fused and norm else self._open_match(inp)
        if block is None or to_first is _NO_MATCH:
            block = Block._new(name, "activation", None)
            block._z_source = "input"
            to_first = None
            if self._wanted(name):
                block._kept = True
                self.trace._add(block)
                self._keep(block, "x", inp)
                self._keep(block, "z", inp)
                self._grad_hook(block, "input", inp, None)
        else:
            if fused and norm is not None:  # z is what the norm's forward hands its activation
                norm.fused = True
                block.norm_name, block.norm_type = norm.name, type(norm.module).__name__
                block._z_source = "norm"
            if not block._kept and self._wanted(name, block.norm_name):
                self._adopt(block)
            if block._kept:
                self.trace._alias_to(name, block)
                if fused and block.norm_name:
                    self.trace._alias_to(block.norm_name, block)
                    self._keep(block, "z", _permuted(inp, to_first))  # type: ignore[arg-type]
                    self._grad_hook(block, "norm", inp, to_first)  # type: ignore[arg-type]
        block.act_name, block.activation = name, shown
        self._open, self._open_views, self._open_leader = None, [], None
        self._pending_act = (block, name, module is not None, to_first)  # type: ignore[assignment]

    def _activation_after(self, out: Tensor) -> None:
        pending, self._pending_act = self._pending_act, None
        if pending is None:
            return
        block, _, _, to_first = pending
        if block._kept:
            self._keep(block, "a", _permuted(out, to_first))
            self._grad_hook(block, "a", out, to_first)

_NO_MATCH = object()  # `_open_match`: not the open block's output
_FOLLOWED = frozenset({"permute", "contiguous"})  # ops whose result stays the open block's output
_DEFAULT_CONFIG = CaptureConfig()  # every field kept, where and as the model computes it
_EVERY_FIELD = frozenset(FIELDS)
_PARAMS = (("weight", "grad_weight"), ("bias", "grad_bias"))
_WATCHED = _FOLLOWED | ACTIVATION_FUNCTIONS.keys()  # torch functions `_on_function` looks at
_PLAIN: dict[str, bool] = {}  # function name → neither watched nor in place by its name


# A conv/linear call whose block is not kept (yet): kept if a later member is wanted. (block, module,
# its input, the input's version, its output, the output's version, to_first); a tuple: one is made
# on every conv/linear call of every pass
_Leader = tuple[Block, nn.Module, Tensor, int, Tensor, int, Perm]


@dataclass
class _NormCall:
    """A norm module called on the open block's output, while its forward runs."""

    block: Block
    module: nn.Module
    name: str
    to_first: Perm  # of its input
    shape: tuple[int, ...]  # of its input
    fused: bool = False  # its own forward called an activation (timm's BatchNormAct2d)


def _quiet_activation(module: nn.Module, quiet: frozenset[int]) -> bool:
    """Torch's own activation module (`quiet`: their ids), not in place: its forward makes one
    activation call, which the probe records from the module's call, and writes nothing: the
    function mode is off in it."""
    return id(module) in quiet and not getattr(module, "inplace", False)


def _permuted(t: Tensor, to_first: Perm) -> Tensor:
    """`t` channels-first (a view)."""
    return t if to_first is None else t.permute(to_first)


_MALLOC = [False]  # keep_freed_memory() ran (it raises on a bad CONVSCOPE_MALLOC: then again next time)
_no_dispatch = torch._C.DisableTorchFunction  # the probe's own tensor calls skip every function mode


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    if args and isinstance(args[0], Tensor):
        return args[0]
    for key in ("input", "x"):
        v = kwargs.get(key)
        if isinstance(v, Tensor):
            return v
    return None
