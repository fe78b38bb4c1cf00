"""The recorder's hold on the model (train/watch.py's Recorder mixes this in): the timing hooks
that stay on it (a pass's start and end, the backward's end: the page's forward and backward
times), the two probes armed before the steps they record (a snapshot step's keeps every field,
a statistics step's reduces z, a and dL/da as the pass makes them: train/stats.py, and keeps W and
dL/dW unless it has the maps' statistics only), the blocks
that no probe sees (`unobserved`: controls, validation), and the swap of the model on a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.optim.optimizer as optim_hooks
from torch import Tensor, nn

from convscope.analysis.diagnose import Diagnoser
from convscope.analysis.update_hold import UpdateHold
from convscope.capture import HookSet, Probe
from convscope.capture.naming import role
from convscope.train.recorder_budget import MAPS, PLAIN, SNAPSHOT, STATS, Budget
from convscope.train.stats import Reductions

KEEP = ("x", "z", "a", "grad_z", "grad_a", "weight", "grad_weight")  # a snapshot step's probe
STATS_KEEP = ("z", "a", "weight", "grad_weight")  # a statistics step's (dL/da: reduced as it comes, not kept)
MAPS_KEEP = ("z", "a")  # the maps' statistics only (recorder_budget.py MAPS): no copy of W, no dL/dW


class ModelHooks:
    """Attaches a recorder to its model and arms its probes (the attributes below are the recorder's)."""

    budget: Budget
    lr: float | None
    model: nn.Module
    probe: Probe
    _layers: list[str] | None
    _reductions: Reductions
    _hook_s: float | None
    _quiet: int
    _closed: bool
    _coast_left: int
    _clock: Callable[[], float]
    _window: Diagnoser
    _window_start: float
    _first_seen: dict[tuple[str, str, tuple[int, ...]], int]
    _held: UpdateHold
    _armed_passes: int

    def _attach(self, model: nn.Module) -> None:
        """Timing hooks stay on the model; a probe is entered only before the steps it records."""
        self.model = model
        self._modules = dict(model.named_modules())
        self._module_of: dict[str, nn.Module | None] = {}  # block name → its module (_current_weight)
        self.probe = Probe(model, self._layers, keep=KEEP)  # snapshot steps (and probing())
        # a statistics step's z, a and dL/da are reduced as they are made (train/stats.py Reductions)
        seen = self._reductions
        self._probe_of: dict[str, Probe] = {SNAPSHOT: self.probe} | {  # each plan's probe (none for a plain step)
            plan: Probe(model, self._layers, keep=keep, tap=seen.tap, overwrite=seen.overwrite, grad_tap=seen.grad_tap)
            for plan, keep in ((STATS, STATS_KEEP), (MAPS, MAPS_KEEP))
        }
        self._armed: Probe | None = None
        self._copy_timing = HookSet()  # around the statistics probe's copy of W (`_arm`)
        self._plan = PLAIN
        self._timing = HookSet()
        self._t: dict[str, float] = {}
        self._batch = 0
        self._passes = 0
        self._seen_passes = 0
        self._layers_written = False
        try:
            self._timing.add(model.register_forward_pre_hook(self._forward_starts))
            self._timing.add(model.register_forward_hook(self._mark("fwd_end"), always_call=True))
            first = next((m for m in model.modules() if role(m) == "leader"), None)
            weight = getattr(first, "weight", None)
            if isinstance(weight, Tensor) and weight.requires_grad:
                self._timing.add(weight.register_hook(self._grad_mark))
            if self._hook_s is None:  # the same hooks on any model: a restart does not measure again
                self._hook_s = self._hook_cost()
            self.budget.last_snapshot = None  # a (new) model's first step: layer table and pictures
            self._arm(SNAPSHOT)
        except BaseException:
            self._detach()
            raise

    def _hook_cost(self, calls: int = 32) -> float:
        """CPU seconds the timing hooks add to one training pass, measured once on a stand-in: a
        module call and a backward through a weight, with and without hooks like the recorder's
        (a hooked module call loses its fast path; a tensor hook is a Python call in autograd)."""
        stand_in, x = nn.Identity(), torch.zeros(1)
        weight = torch.zeros(1, requires_grad=True)
        saved = dict(self._t), self._passes, self._batch

        def timed() -> float:  # this thread's CPU: the writer thread working meanwhile is no hook cost
            t0 = time.thread_time()
            for _ in range(calls):
                stand_in(weight * x).sum().backward()
            return time.thread_time() - t0

        hooks = HookSet()
        try:
            timed()  # (the first calls warm up)
            bare = min(timed() for _ in range(3))
            hooks.add(stand_in.register_forward_pre_hook(self._forward_starts))
            hooks.add(stand_in.register_forward_hook(self._mark("hook_cost"), always_call=True))
            hooks.add(weight.register_hook(self._grad_mark))
            hooked = min(timed() for _ in range(3))
        finally:
            hooks.release()
            self._t, self._passes, self._batch = saved
        return max(hooked - bare, 0.0) / calls

    def _detach(self) -> None:
        try:
            self._timing.release()
        finally:
            self._disarm()

    def _arm(self, plan: str) -> None:
        """Have the probe `plan` needs in place for the next forward (none for a plain step)."""
        self._plan = plan
        if plan != PLAIN:
            self._coast_left = 0
        if self._quiet:
            return  # inside unobserved(): armed when it ends
        wanted = self._probe_of.get(plan)
        if wanted is self._armed:
            return
        self._disarm()
        if wanted is not None:
            timed = plan == STATS  # its copy of W before the optimizer step: work in the loop, timed
            add, seen = self._copy_timing.add, self._reductions  # as its reductions are (Reductions.copy_starts)
            if timed:
                add(optim_hooks.register_optimizer_step_pre_hook(seen.copy_starts))
            try:
                wanted.__enter__()
            except BaseException:
                self._copy_timing.release()
                raise
            if timed:
                add(optim_hooks.register_optimizer_step_pre_hook(seen.copy_ends))
            self._armed = wanted
            self._armed_passes = wanted.passes

    def _disarm(self) -> None:
        armed, self._armed = self._armed, None
        try:
            self._copy_timing.release()
        finally:
            self._reductions.threads_back()  # (an optimizer step that raised in the probe's copy)
            if armed is not None:
                armed.close()

    @contextmanager
    def _unobserved(self) -> Iterator[None]:
        """No probe during the block (controls, a trainer's validation); the plan is kept."""
        self._disarm()
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1
            if not self._closed and not self._quiet:
                self._arm(self._plan)  # the plan of now (a restart in the block may have set it)

    def unobserved(self) -> Any:
        """`with recorder.unobserved():` model calls in the block are not recorded (validation)."""
        return self._unobserved()

    @contextmanager
    def probing(self) -> Iterator[Probe]:
        """`with recorder.probing() as probe:` every field of a forward in the block is kept."""
        with self._unobserved(), self.probe as probe:
            yield probe

    def swap_model(self, model: nn.Module) -> None:
        """Record `model` from now on (the built-in trainer's restart); live diagnosis starts afresh."""
        self._detach()
        self._attach(model)
        self._window = Diagnoser(data="recent training batches", lr=self.lr)
        self._window_start = self._clock()
        self._first_seen = {}
        self._held.reset()

    def _forward_starts(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not torch.is_grad_enabled():
            return  # an evaluation pass (validation): not a training step's
        self._t["fwd_start"] = self._clock()
        self._passes += 1
        x = args[0] if args and isinstance(args[0], Tensor) else None
        self._batch = int(x.shape[0]) if x is not None and x.dim() >= 1 else 0

    def _mark(self, key: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if torch.is_grad_enabled():
                self._t[key] = self._clock()

        return hook

    def _grad_mark(self, grad: Tensor) -> None:
        self._t["bwd_end"] = self._clock()
