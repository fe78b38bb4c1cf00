"""Kept tensors, copy on write, and gradient storage: the part of a Probe that holds what it keeps.

A Probe keeps x, conv, z, a, W and b as detached views of the tensors the model computes (no
copy). A view is copied just before something writes into its memory (an in-place op the probe's
function mode sees, an optimizer step), and a view written by an op nobody saw is dropped and
named in `Block.stale`. Gradients arrive through tensor hooks: dL/dz and dL/da on the block's
tensors, dL/dW and dL/db on the parameters (put on in the backward, from the conv output's hook).
`KeptTensors` is the Probe's base: its methods use the state `Probe.__init__` sets up.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from torch import Tensor, nn

from convscope.capture.hooks import HookSet
from convscope.capture.layout import Perm
from convscope.capture.plan import param
from convscope.capture.trace import Block
from convscope.config import CaptureConfig

_TAPPED = frozenset({"x", "conv", "z", "a"})  # the fields `tap` sees
_STORED = {"weight": "_weight", "bias": "_bias"}  # Block's attribute that holds a kept W or b
View = tuple[weakref.ref[Block], str, int]  # (the block, its field, the version it was kept at)


class KeptTensors:
    """What a Probe keeps and how it keeps it intact (the Probe's own state, set in its __init__)."""

    config: CaptureConfig
    _tap: Callable[[Block, str, Tensor], None] | None
    _overwrite: Callable[[Block, str, Tensor], bool] | None
    _grad_tap: Callable[[Block, str, Tensor], None] | None
    _general: bool  # a tap, a field left out, or kept tensors moved: `_keep` checks each
    _moves: bool  # kept tensors go to another device or dtype
    _param_grads: bool  # dL/dW hooks are wanted (W, b or their gradients kept)
    _held: dict[int, list[View]]  # copy on write: storage address → views of it
    _fresh: list[View]  # kept, not yet filed in `_held`
    _hooks: HookSet
    _params_hooked: set[int]
    _param_blocks: dict[int, list[tuple[Block, str, bool]]]
    _backward_ran: bool

    def _keep(self, block: Block, name: str, t: Tensor | None, also: str | None = None) -> None:
        """Keep `t` as field `name` of `block` (and as field `also`: one detached view for both)."""
        if t is None:
            return
        if self._general:  # a tap, a field left out, or kept tensors moved (else: straight to the view)
            tap = self._tap
            if tap is not None:
                if name in _TAPPED:
                    tap(block, name, t)
                if also in _TAPPED:
                    tap(block, also, t)
            keep = self.config.keep
            if name not in keep:
                if also is None or also not in keep:
                    return
                name, also = also, None
            elif also is not None and also not in keep:
                also = None
            d = t.detach()
            if self._moves:
                cfg = self.config
                moved = d.to(device=cfg.device, dtype=cfg.dtype)
                if storage_of(moved) != storage_of(d):
                    setattr(block, name, moved)  # already a copy: nothing can overwrite it
                    if also is not None:
                        setattr(block, also, moved)
                    return
        else:
            d = t.detach()
        self._put(block, ((name, d, also),))

    def _keep_all(self, block: Block, kept: list[tuple[str, Tensor, str | None]]) -> None:
        """`_keep(block, name, t, also)` of each, at once (one weak reference to the block for all)."""
        if self._general:  # the checks, one by one
            for name, t, also in kept:
                self._keep(block, name, t, also)
        else:
            self._put(block, [(name, t.detach(), also) for name, t, also in kept])

    def _put(self, block: Block, views: Iterable[tuple[str, Tensor, str | None]]) -> None:
        """Set each detached view as field `name` of `block` (and as `also`), noted for copy on write."""
        ref, fresh = weakref.ref(block), self._fresh  # filed by storage when a write may need them (`_file`)
        for name, d, also in views:
            setattr(block, _STORED.get(name, name), d)  # (W and b without their properties: a new block)
            version = d._version
            fresh.append((ref, name, version))
            if also is not None:
                setattr(block, also, d)
                fresh.append((ref, also, version))

    def _grad_hook(
        self, block: Block, slot: str, t: Tensor, to_first: Perm, leader: nn.Module | None = None
    ) -> None:
        """A hook on `t` for dL/dz or dL/da. On a leader's output (`leader` given) it also puts the
        dL/dW and dL/db hooks on the leader's parameters when it first fires: that is before their
        gradients are accumulated (the conv's backward, which makes them, runs after its output's
        gradient is complete), and a forward with no backward then costs no parameter hooks."""
        if not t.requires_grad:
            return
        if leader is not None and not self._param_grads:
            leader = None
        if leader is None and self._grad_tap is None and ("grad_a" if slot == "a" else "grad_z") not in self.config.keep:
            return
        # (a partial of a method, not a closure: one object, not a cell per variable, on every
        # hooked tensor of every pass)
        self._hooks.tensor(t, partial(self._store_grad, block, slot, to_first, leader))

    def _store_grad(self, block: Block, slot: str, to_first: Perm, leader: nn.Module | None, grad: Tensor) -> None:
        """`_grad_hook`'s hook: dL/dz or dL/da of `block` (and the leader's parameter hooks)."""
        if leader is not None:
            self._hook_params(leader)
        field = "grad_a" if slot == "a" else "grad_z"
        tap, cfg = self._grad_tap, self.config
        keep = field in cfg.keep
        if (not keep and tap is None) or (slot != "a" and slot != block._z_source):
            return  # (dL/dconv of a block with a norm is neither kept nor tapped)
        g = grad.detach()
        if to_first is not None:
            g = g.permute(to_first)
        if tap is not None:
            tap(block, field, g)
        if not keep:
            return
        if self._moves:
            g = g.to(device=cfg.device, dtype=cfg.dtype)
        if slot == "a":
            block.grad_a = g
        else:
            block._grads[slot] = g

    def _hook_params(self, module: nn.Module) -> None:
        """One tensor hook per parameter of a conv/linear (once per probe): dL/dW of the backward."""
        hooked = self._params_hooked
        for name in ("weight", "bias"):
            p = param(module, name)
            if isinstance(p, Tensor) and p.requires_grad and id(p) not in hooked:
                hooked.add(id(p))
                self._hooks.tensor(p, partial(self._param_grad, id(p)))

    def _param_grad(self, pid: int, grad: Tensor) -> None:
        """dL/dW (or dL/db) of parameter `pid` in this backward: to every block that used it."""
        self._backward_ran = True
        targets = self._param_blocks.get(pid)
        if not targets:
            return
        g = grad.detach()
        cfg = self.config
        if self._moves:
            g = g.to(device=cfg.device, dtype=cfg.dtype)
        for block, fname, as_conv in targets:
            if fname in cfg.keep:
                setattr(block, fname, g[:, :, None, None] if as_conv else g)

    # ---- copy on write ------------------------------------------------------------------
    def _copy_before_write(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        targets: list[Any] = [args[0]] if args else []
        if "out" in kwargs:
            targets.append(kwargs["out"])
        self._copy_storages(storage_of(t) for t in _tensors(targets))

    def _file(self) -> None:
        """File the views kept since the last call under their storage, in `_held` (a write to a
        storage finds its views there). `_keep` leaves it to now: a pass in which nothing is
        written in place never needs it."""
        fresh, self._fresh = self._fresh, []
        held = self._held
        for entry in fresh:
            block = entry[0]()
            if block is None:
                continue
            t = getattr(block, _STORED.get(entry[1], entry[1]))
            if t is None:
                continue
            key = storage_of(t)
            views = held.get(key)
            if views is None:
                held[key] = [entry]
            else:
                views.append(entry)

    def _copy_storages(self, storages: Iterable[int]) -> None:
        """Kept views of these storages become copies (they are about to be written)."""
        if self._fresh:
            self._file()
        for storage in storages:
            entries = self._held.pop(storage, None) if self._held else None
            if not entries:
                continue
            copies: dict[tuple[Any, ...], Tensor] = {}  # views alike (x and z of one tensor) share a copy
            for ref, name, _ in entries:
                block = ref()
                if block is None:
                    continue
                current = getattr(block, name)
                if current is None:
                    continue
                if self._overwrite is not None and name in _TAPPED and self._overwrite(block, name, current):
                    setattr(block, name, None)  # read by the caller before the write: not kept
                    continue
                key = (current.storage_offset(), tuple(current.shape), current.stride(), current.dtype)
                if key not in copies:
                    copies[key] = current.clone()
                setattr(block, name, copies[key])

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """An optimizer step writes into the weights: copy the kept ones first."""
        if not self._held and not self._fresh:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self._copy_before_write((params,), {})

    def _leave_views(self) -> None:
        """Weights still shared with the model after close are checked on access instead."""
        for entries in (*self._held.values(), self._fresh):
            for ref, name, version in entries:
                block = ref()
                if block is not None and name in ("weight", "bias"):
                    block._view_versions[name] = version

    def _leave_intact_views(self) -> None:
        """`_check_versions()` then `_leave_views()`, in one pass over the views when every one is
        alive and intact (the usual case at a probe's close)."""
        marks: list[tuple[Block, str, int]] = []
        if self._intact(marks):
            for block, name, version in marks:
                block._view_versions[name] = version
            return
        self._check_versions()
        self._leave_views()

    def _intact(self, marks: list[tuple[Block, str, int]] | None = None) -> bool:
        """Every kept view alive and unwritten? (`marks` gets each W and b view's block, field and
        version meanwhile, for `_leave_views`.)"""
        for entries in (*self._held.values(), self._fresh):
            for ref, name, version in entries:
                block = ref()
                if block is None:
                    return False
                t = getattr(block, _STORED.get(name, name))
                if t is not None and t._version != version:
                    return False
                if marks is not None and name in _STORED:
                    marks.append((block, name, version))
        return True

    def _check_versions(self) -> None:
        """A kept view written by an op the probe could not see is dropped, and said so."""
        if self._intact():  # the usual case, first: all alive and intact
            return
        self._file()
        for key in list(self._held):
            alive = []
            for ref, name, version in self._held[key]:
                block = ref()
                if block is None:
                    continue
                t = getattr(block, _STORED.get(name, name))  # (W and b without their properties)
                if t is not None and t._version != version:
                    setattr(block, name, None)
                    block.stale.add(name)
                else:
                    alive.append((ref, name, version))
            if alive:
                self._held[key] = alive
            else:
                del self._held[key]


def storage_of(t: Tensor) -> int:
    """The address of `t`'s storage (views of one storage agree)."""
    return int(t.untyped_storage().data_ptr())


def _tensors(items: list[Any]) -> Iterator[Tensor]:
    for item in items:
        if isinstance(item, Tensor):
            yield item
        elif isinstance(item, list | tuple):
            yield from _tensors(list(item))
