"""watch: record a training run for the live dashboard from the user's own loop (two added lines).

    run = cs.watch(model, "runs/exp1")            # before the loop
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        run.step(loss=loss, acc=acc)               # after the optimizer step
    run.close()                                     # or use `with cs.watch(...) as run:`

`acc=` (or `train_acc=`) is the training accuracy the page draws, `val_acc=` the validation
accuracy; any other keyword is kept as a scalar of that name.

Then `convscope serve runs/` from another process. Each `step()` records the loss and scalars of
the step; per-layer statistics, tensor snapshots (every `snapshot_every` seconds) and live-
diagnosis samples are planned within `budget` (default 3%) of the step time, measured as the run
goes (train/recorder_budget.py), and what was skipped is written to the run (json "recording").
Steps are committed together at most `commit_every` seconds apart (a `kill -9` loses at most that
much; a reader never sees half a step) — the store is the only thing the dashboard sees. Pause from
the dashboard works here too; the other controls need the built-in trainer. Controls sent while no
trainer was running (e.g. before a resume) are refused when the recorder starts, not applied late.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from convscope.analysis.diagnose import Diagnoser
from convscope.analysis.update_hold import UpdateHold
from convscope.capture.naming import RELU
from convscope.runs import RunWriter
from convscope.runs.values import check_name
from convscope.runs.writer import ending
from convscope.train.answers import ControlAnswers, ControlHandler
from convscope.train.coasting import REPORT_EVERY, Coasting
from convscope.train.collect import collect_imports
from convscope.train.model_hooks import ModelHooks
from convscope.train.recorder_budget import MAPS, PLAIN, SNAPSHOT, Budget
from convscope.train.stats import Reductions
from convscope.train.step_outputs import StepOutputs, layer_table

# A fifth of the budget is left for what the recorder cannot measure of itself: its writer thread
# slowing the training thread beside it (caches, memory bandwidth), the training step after its
# own work slower (cold caches), a statistics step's probe overhead above the median it is charged.
# Spending the whole 3% it measured, it slowed convnetjs-cifar at batch 32 by 3.1-3.2% of CPU
# (bench/watch.py, stop 24); with a tenth left, by ~3.0% (2.8-3.4% in single runs of
# bench/watch_gap.py: stops 35-36). A fifth (ae9e51b, stop 35) had cost the built-in trainer its
# 4 Hz of statistics on one thread; coasting further (stop 36) bought that back. What it cannot
# see is mostly per step (stop 36: the writer thread's work beside a plain step, a statistics step's
# tail above the median it is charged), ~0.05-0.1 ms on convnetjs-cifar: so at most UNSEEN_MAX_S a
# step is left (on resnet18-shaped at batch 8, ~1 s a step, a fifth was ~6 ms a step, and the
# recorder, charging itself ~2.4%, slowed it by 1.6-1.9%). docs/speed.md.
UNSEEN = 0.2
UNSEEN_MAX_S = 0.5e-3


class Recorder(ModelHooks, ControlAnswers, StepOutputs, Coasting):
    """Records one step per `step()` call; see the module docstring (the model's timing hooks and
    probes are `ModelHooks`, train/model_hooks.py; the dashboard's controls are answered by
    `ControlAnswers`, train/answers.py; statistics, findings and snapshots are written by
    `StepOutputs`, train/step_outputs.py)."""

    def __init__(
        self,
        model: nn.Module,
        run_dir: str | Path,
        *,
        every: int = 1,
        snapshot_every: float = 2.0,
        layers: list[str] | None = None,
        config: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        resume: bool = False,
        on_control: ControlHandler | None = None,
        probe: Tensor | None = None,
        probe_transform: Callable[[Tensor], Tensor] | None = None,
        poll_every: float = 0.25,
        diagnose_every: int = 4,
        findings_every: float = 5.0,
        budget: float | None = 0.03,
        commit_every: float = 0.25,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] | None = None,
        thread_clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"watch needs an nn.Module, got {type(model).__name__}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0 seconds, got {snapshot_every}")
        if commit_every < 0:
            raise ValueError(f"commit_every must be >= 0 seconds, got {commit_every}")
        self.budget = Budget(budget, snapshot_every=snapshot_every, every=every, diagnose_every=diagnose_every,
                             unseen=UNSEEN, unseen_max=UNSEEN_MAX_S)  # fmt: skip
        info = {"model": type(model).__name__, "trainer": "watch", **(meta or {})}
        self.writer = RunWriter(run_dir, config=config or {}, meta=info, resume=resume)
        last = self.writer.last_step if resume else None
        self.step_index = 0 if last is None else last + 1
        self._refuse_stale_controls()
        self.poll_every = poll_every
        self.commit_every = commit_every  # seconds between commits, at most (0: every step)
        self.on_control = on_control
        self.findings_every = findings_every  # seconds per live-diagnosis window
        self.lr: float | None = None  # the SGD learning rate, when known (live update-ratio findings)
        self._clock = clock  # wall: timestamps, intervals, rates
        self._cpu = cpu_clock or time.process_time  # the budget's: CPU seconds of this process (preemption is no cost)
        self._thread_cpu = thread_clock or cpu_clock or time.thread_time  # ... of step()'s thread: its own time (`_own_cpu`)
        self._window = Diagnoser(data="recent training batches")
        self._window_start = clock()
        self._first_seen: dict[tuple[str, str, tuple[int, ...]], int] = {}
        self.paused = False
        self._layers = layers
        self._examples = 0
        self._last_step_time: float | None = None
        self._returned: float | None = None  # CPU clock when step() last returned: the loop's time starts
        self._last_poll = self._last_commit = self._last_report = -math.inf
        self._report_from = clock()  # when the window of the next json "recording" row began
        self._closed = False
        self._quiet = 0  # depth of unobserved() blocks
        self._carried = 0.0  # CPU seconds of the last plan and arm, charged to the next step
        self._background_seen = (0.0, 0.0)  # the run writer thread's CPU seconds already charged (all, pictures)
        self._coast_left = 0  # coming steps that may coast (Budget.coast_ahead: train/coast_plan.py)
        self._stats_next = False  # ... and whether the last of them arms statistics
        self._entered: float | None = None  # wall clock at the last full step's entry
        self._planned_at = 0.0  # wall clock at the last plan()
        self._wall_steps: deque[float] = deque(maxlen=9)  # recent wall seconds from step to step
        # steps that coasted, not yet observed by the budget: (step, clock, loop_s, own_s, passes)
        self._coasted: list[tuple[int, float, float | None, float, int]] = []
        self._hook_s: float | None = None  # CPU seconds the timing hooks add to a pass (measured once, _attach)
        self._inputs: dict[int, Tensor] = {}  # step → example 0 of its snapshot (projection requests)
        # a statistics step's taps, timed on this thread's CPU clock (they run on it, one torch thread):
        # the budget is CPU time, and a wall clock counted a busy host's preemptions as their cost
        self._reductions = Reductions(lambda block: block.activation in RELU, clock=lambda: self._thread_cpu())
        # held-out images in [0, 1] (N, C, H, W) for the unit explorer, and what the model is fed
        self.probe_images = None if probe is None else _check_probe(probe)
        self.probe_transform: Callable[[Tensor], Tensor] = probe_transform or (lambda x: x)
        self.probe_labels: Tensor | None = None  # their classes, when known (dL/da of the snapshots)
        self._snapshot_source = ""  # "probe" (a fixed held-out image) or "batch" (example 0)
        self._held = UpdateHold()  # measured update/weight ratios held outside [1e-4, 1e-2]
        self.model = model
        self._attach(model)
        self.writer.set_meta("status", "running")
        collect_imports()

    @property
    def every(self) -> int:
        return self.budget.every

    @property
    def snapshot_every(self) -> float:
        return self.budget.snapshot_every

    @property
    def diagnose_every(self) -> int:
        """Steps between live-diagnosis samples (0 = off); within a budget also statistics steps."""
        return self.budget.diagnose_every

    @diagnose_every.setter
    def diagnose_every(self, value: int) -> None:
        self.budget.diagnose_every = value

    # ---- the one call in the user's loop -------------------------------------------------
    def step(self, loss: float | Tensor | None = None, **metrics: float | Tensor) -> int:
        """Record the step that just ran (call after `optimizer.step()`); returns its index."""
        if self._closed:
            raise RuntimeError("this recorder is closed")
        start, own_start = self._cpu(), self._thread_cpu()
        now = self._clock()
        loop_s = None if self._returned is None else start - self._returned
        step, plan = self.step_index, self._plan
        if "acc" in metrics:  # the README's name for the training accuracy
            if "train_acc" in metrics:
                raise ValueError("give the training accuracy once: acc= or train_acc=, not both")
            metrics["train_acc"] = metrics.pop("acc")
        if "" in metrics:  # (a keyword can be empty: step(**{"": 1.0})): the writer's error, before any work
            check_name("scalar name", "")
        scalars: dict[str, float] = {k: _number(k, v) for k, v in metrics.items()}
        if loss is not None:
            scalars["loss"] = _number("loss", loss)
        armed = self._armed
        trace = armed.trace if armed is not None and armed.passes > self._armed_passes else None
        if armed is not None:
            self._armed_passes = armed.passes
        passes = self._passes - self._seen_passes
        if passes > 0:
            self._seen_passes = self._passes
            self._examples += self._batch
            scalars["examples"] = float(self._examples)
            self._timing_scalars(scalars, now)
        if trace is None and self._coast_left > 0 and self._nothing_due(now):
            return self._coast(step, scalars, own_start, now, loop_s, passes)
        self._coast_left, self._stats_next = 0, False  # a full step plans anew (also if it raises below)
        # the writer thread's CPU (read live) since the last full step, of which the part while the
        # loops ran (in loop_s: the process clock) is the recorder's background work; the steps
        # that coasted meanwhile are accounted for first (before this step's work reads the pools)
        entry = self.writer.background_cpu_split  # (all, pictures): what the writer did during step() is no own time
        background, pictures = self._observe_coasted(entry, loop_s, step, now)
        typical = self._typical_wall()
        diagnosis_s = 0.0
        if trace is None:
            plan = PLAIN  # nothing was captured (no forward, or only no-grad ones)
        else:
            if not self._layers_written:
                self.writer.log_json(step, "layers", layer_table(trace))
                self._layers_written = True
            self._log_stats(step, trace)
            if plan == SNAPSHOT:
                self._snapshot(step, trace)
                self.budget.last_snapshot = now
            if plan != MAPS and self.budget.diagnose(step, typical):  # (a sample needs W and dL/dW)
                t0 = self._own_cpu()
                self._sample_diagnosis(step, trace, now)
                diagnosis_s = self._own_cpu() - t0
        if scalars:
            self.writer.log_scalars(step, scalars)
        del trace
        if armed is not None and not armed.in_forward:  # its maps are read: freed now, not at the next
            armed.forget()  # probed step (Probe.forget; never inside a pass, e.g. a step() from a hook)
        self.step_index = step + 1
        done = self._clock()
        committed = plan == SNAPSHOT or self._commit_due(done, plan)
        if committed:
            self._commit(done)
        # a report or a control poll due within the next commit interval comes now, with the commit:
        # a step that does any of them plans (no coasting), and such a step costs ~0.35 ms after a
        # training step where a coasting one costs ~0.03 (docs/speed.md); apart, a poll and a commit
        # of the same period drift apart and make two of them every period
        early = self.commit_every if committed else 0.0
        if done - self._last_report >= REPORT_EVERY - early:
            self._last_report = done
            self._report(step, done)
        self._last_step_time = done
        controls_s = 0.0
        if done - self._last_poll >= self.poll_every - early:
            self._last_poll = done
            controls = self.writer.poll_controls()  # the polling is the recorder's cost ...
            if controls or self.paused:
                t0 = self._own_cpu()
                self._answer_and_hold(controls)  # ... answering is not (nor a pause)
                controls_s = self._own_cpu() - t0  # (the writer's meanwhile: below)
        before_plan = self._own_cpu()
        mid = self.writer.background_cpu_split
        during, during_pictures = mid[0] - entry[0], max(mid[1] - entry[1], 0.0)  # the writer, meanwhile
        own = max(before_plan - own_start - controls_s + self._carried, 0.0)  # (clock reads can skew)
        background += during - during_pictures
        pictures += during_pictures
        background += (self._hook_s or 0.0) * passes
        probed = self._reductions.take_spent()  # (a statistics step's reductions and copy of W, in its loop)
        self.budget.observe(plan, loop_s, own, diagnosis_s, background, pictures, probed)  # before the next plan reads the pools
        now = self._planned_at = self._clock()
        self._arm(self.budget.plan(self.step_index, now, typical))
        if self._plan == PLAIN:
            longest = max(self._wall_steps, default=0.0)  # (coasting.py runs them)
            self._coast_left, self._stats_next = self.budget.coast_ahead(self.step_index, now, longest)
        self._background_seen = mid  # (the writer's CPU while planning: charged with the next loop)
        self._carried = self._own_cpu() - before_plan  # planning and arming: charged with the next step
        self._returned = self._cpu()
        return step

    def _own_cpu(self) -> float:
        """The CPU seconds of the thread in step(): the recorder's own time is measured on it, the
        loop's (from step() to step()) on the process's clock. The process's clock counts another
        running thread's CPU only at the scheduler's tick (4 ms here) or when that thread sleeps:
        with two torch threads, the intra-op thread's work in the loop, folded in while step() ran,
        charged one plain step in ten ~4 ms (it costs ~0.05 ms), and the built-in trainer's
        statistics came at 2.8 Hz instead of 4 or more. What the writer thread does meanwhile is
        charged beside it (`during`), from the writer's own clock."""
        return self._thread_cpu()

    def _timing_scalars(self, scalars: dict[str, float], now: float) -> None:
        t, batch = self._t, self._batch
        if "fwd_start" in t and "fwd_end" in t and batch:
            scalars["fwd_ms_per_example"] = 1e3 * (t["fwd_end"] - t["fwd_start"]) / batch
            if t.get("bwd_end", 0.0) > t["fwd_end"]:
                scalars["bwd_ms_per_example"] = 1e3 * (t["bwd_end"] - t["fwd_end"]) / batch
        if self._last_step_time is not None and now > self._last_step_time and batch:
            scalars["examples_per_s"] = batch / (now - self._last_step_time)

    def _report(self, step: int, now: float) -> None:
        """The json "recording" row of `step`: the budget's report, and `window_s`, the seconds its
        window ("note") covers (since the last row, or the recorder's start): the page says so."""
        row = self.budget.report() | {"window_s": max(now - self._report_from, 0.0)}
        self._report_from = now
        self.writer.log_json(step, "recording", row)

    def _commit(self, now: float) -> None:
        self.writer.commit(self.step_index - 1)
        self._last_commit = now

    # ---- notebook ------------------------------------------------------------------------
    #: set by convscope.notebook (the training side may not import the server): run dir → dashboard
    dashboard: ClassVar[Callable[..., Any] | None] = None

    def show(self, **kwargs: Any) -> Any:
        """This run's live dashboard in a Jupyter cell (`convscope.show`): one background server per
        recorder, started on the first call; keep stepping in the same kernel and it follows."""
        if Recorder.dashboard is None:
            raise RuntimeError("run.show() needs convscope.notebook: import convscope first")
        shown = getattr(self, "_shown", None)
        if shown is None or not shown.running:
            shown = self._shown = Recorder.dashboard(self.writer.path, **kwargs)
        return shown

    # ---- lifetime ------------------------------------------------------------------------
    def close(self, status: str = "finished") -> None:
        """Remove every hook and close the run (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._detach()
            if self._returned is not None:  # what was recorded and skipped, to the end
                self._observe_coasted(self.writer.background_cpu_split, None)
                self._report(self.step_index - 1, self._clock())
                self.writer.commit(self.step_index - 1)  # every finished step, whatever the status
        finally:
            self.writer.close(status=status)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(ending(exc_type))


def watch(
    model: nn.Module,
    run_dir: str | Path,
    *,
    every: int = 1,
    snapshot_every: float = 2.0,
    layers: list[str] | None = None,
    config: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    resume: bool = False,
    probe: Tensor | None = None,
    probe_transform: Callable[[Tensor], Tensor] | None = None,
    budget: float | None = 0.03,
    commit_every: float = 0.25,
) -> Recorder:
    """Start recording `model` into `run_dir`. Call `.step(loss=...)` after each optimizer step.

    The loss and scalars are recorded every step; per-layer statistics (on steps that are a
    multiple of `every`), tensor snapshots (every `snapshot_every` seconds; 0 = every step) and
    live-diagnosis samples as often as they fit in `budget` (a share of the step time, measured
    as the run goes; None = all of them on schedule, whatever they cost). What was skipped is
    written to the run (json "recording"). Steps are committed at most `commit_every` seconds apart.
    `probe`: held-out images in [0, 1] (N, C, H, W) for the dashboard's unit explorer, fed to
    the model through `probe_transform` (e.g. your normalisation). Under torchrun (a process
    group of more than one rank) call it on every rank: rank 0 records the global batch's
    statistics (train/ddp.py) on schedule (no budget: every rank must agree which steps they are)."""
    from convscope.train.ddp import watch_ddp, world  # ddp.py builds on this module

    if (where := world()) is not None:
        return watch_ddp(
            model, run_dir, where[0], every=every, snapshot_every=snapshot_every, layers=layers,
            config=config, meta=meta, resume=resume, probe=probe, probe_transform=probe_transform,
            budget=None, commit_every=commit_every,
        )  # fmt: skip
    return Recorder(
        model, run_dir, every=every, snapshot_every=snapshot_every, layers=layers,
        config=config, meta=meta, resume=resume, probe=probe, probe_transform=probe_transform,
        budget=budget, commit_every=commit_every,
    )  # fmt: skip


def _check_probe(probe: Tensor) -> Tensor:
    if not isinstance(probe, Tensor) or probe.dim() != 4 or probe.shape[0] < 1:
        raise ValueError("probe must be images shaped (N, C, H, W)")
    if not probe.is_floating_point() or not bool(torch.isfinite(probe).all()):
        raise ValueError("probe must be finite float images in [0, 1]")
    if float(probe.min()) < 0 or float(probe.max()) > 1:
        raise ValueError("probe images must be in [0, 1] (give your normalisation as probe_transform)")
    return probe.detach()


def _number(name: str, v: float | Tensor) -> float:
    if type(v) is float:
        return v
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"metric {name!r} must be a single number, got a tensor of shape {tuple(v.shape)}")
        return float(v.detach())
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"metric {name!r} must be a number, got {type(v).__name__}")
    return float(v)
