"""watch: record a training run for the live dashboard from the user's own loop (two added lines).

    run = cs.watch(model, "runs/exp1")            # before the loop
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        run.step(loss=loss, acc=acc)               # after the optimizer step
    run.close()                                     # or use `with cs.watch(...) as run:`

`acc=` (or `train_acc=`) is the training accuracy the page draws, `val_acc=` the validation
accuracy; any other keyword is kept as a scalar of that name.

Then `convscope serve runs/` from another process. Each `step()` writes one committed step to
the run store (scalars, per-layer statistics; tensor snapshots every `snapshot_every` seconds)
— the store is the only thing the dashboard sees. Pause from the dashboard works here too;
the other controls need the built-in trainer. Controls sent while no trainer was running (e.g.
before a resume) are refused when the recorder starts, not applied late.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.analysis import block_stats
from convscope.analysis.diagnose import Diagnoser
from convscope.analysis.update_hold import UpdateHold
from convscope.capture import Block, HookSet, Probe, Trace
from convscope.capture.naming import RELU, base_name, role
from convscope.runs import Control, RunWriter
from convscope.train.projections import answer_projection
from convscope.train.units_live import answer_unit

KEEP = ("x", "z", "a", "grad_z", "grad_a", "weight", "grad_weight")
SNAPSHOT_KINDS = ("z", "a", "grad_z", "grad_a", "weight", "grad_weight")
KEEP_INPUTS = 8  # snapshot inputs kept in memory for projection requests (the page shows recent ones)

ControlHandler = Callable[[Control], dict[str, Any] | None]
STALE_CONTROL = "sent while no trainer was running"


class Recorder:
    """Writes one committed step per `step()` call; see the module docstring."""

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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"watch needs an nn.Module, got {type(model).__name__}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0 seconds, got {snapshot_every}")
        info = {"model": type(model).__name__, "trainer": "watch", **(meta or {})}
        self.writer = RunWriter(run_dir, config=config or {}, meta=info, resume=resume)
        last = self.writer.last_step if resume else None
        self.step_index = 0 if last is None else last + 1
        self._refuse_stale_controls()
        self.every = every
        self.snapshot_every = snapshot_every
        self.poll_every = poll_every
        self.on_control = on_control
        self.diagnose_every = diagnose_every  # steps between live-diagnosis samples (0 = off)
        self.findings_every = findings_every  # seconds per live-diagnosis window
        self.lr: float | None = None  # the SGD learning rate, when known (live update-ratio findings)
        self._window = Diagnoser(data="recent training batches")
        self._window_start = time.perf_counter()
        self._first_seen: dict[tuple[str, str, tuple[int, ...]], int] = {}
        self.paused = False
        self._layers = layers
        self._examples = 0
        self._last_step_time: float | None = None
        self._last_snapshot = -math.inf
        self._last_poll = -math.inf
        self._seen_passes = 0
        self._closed = False
        self._inputs: dict[int, Tensor] = {}  # step → example 0 of its snapshot (projection requests)
        # held-out images in [0, 1] (N, C, H, W) for the unit explorer, and what the model is fed
        self.probe_images = None if probe is None else _check_probe(probe)
        self.probe_transform: Callable[[Tensor], Tensor] = probe_transform or (lambda x: x)
        self.probe_labels: Tensor | None = None  # their classes, when known (dL/da of the snapshots)
        self._snapshot_source = ""  # "probe" (a fixed held-out image) or "batch" (example 0)
        self._held = UpdateHold()  # measured update/weight ratios held outside [1e-4, 1e-2]
        self.model = model
        self._attach(model)
        self.writer.set_meta("status", "running")

    # ---- model attach/detach (a restart swaps the model) ---------------------------------
    def _attach(self, model: nn.Module) -> None:
        self.model = model
        self._modules = dict(model.named_modules())
        self.probe = Probe(model, self._layers, keep=KEEP)
        self._timing = HookSet()
        self._t: dict[str, float] = {}
        self._layers_written = False
        self._seen_passes = 0
        self.probe.__enter__()
        try:
            self._timing.add(model.register_forward_pre_hook(self._mark("fwd_start")))
            self._timing.add(model.register_forward_hook(self._mark("fwd_end"), always_call=True))
            first = next((m for m in model.modules() if role(m) == "leader"), None)
            weight = getattr(first, "weight", None)
            if isinstance(weight, Tensor) and weight.requires_grad:
                self._timing.add(weight.register_hook(self._grad_mark))
        except BaseException:
            self._detach()
            raise

    def _detach(self) -> None:
        try:
            self._timing.release()
        finally:
            self.probe.close()

    def swap_model(self, model: nn.Module) -> None:
        """Record `model` from now on (the built-in trainer's restart); live diagnosis starts afresh."""
        self._detach()
        self._attach(model)
        self._window = Diagnoser(data="recent training batches", lr=self.lr)
        self._window_start = time.perf_counter()
        self._first_seen = {}
        self._held.reset()

    def _mark(self, key: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._t[key] = time.perf_counter()

        return hook

    def _grad_mark(self, grad: Tensor) -> None:
        self._t["bwd_end"] = time.perf_counter()

    # ---- the one call in the user's loop -------------------------------------------------
    def step(self, loss: float | Tensor | None = None, **metrics: float | Tensor) -> int:
        """Record the step that just ran (call after `optimizer.step()`); returns its index."""
        if self._closed:
            raise RuntimeError("this recorder is closed")
        now = time.perf_counter()
        step = self.step_index
        trace = self.probe.trace if self.probe.passes > self._seen_passes else None
        self._seen_passes = self.probe.passes
        if "acc" in metrics:  # the README's name for the training accuracy
            if "train_acc" in metrics:
                raise ValueError("give the training accuracy once: acc= or train_acc=, not both")
            metrics["train_acc"] = metrics.pop("acc")
        scalars: dict[str, float] = {k: _number(k, v) for k, v in metrics.items()}
        if loss is not None:
            scalars["loss"] = _number("loss", loss)
        if trace is not None:
            batch = _batch_size(trace)
            self._examples += batch
            scalars["examples"] = float(self._examples)
            t = self._t
            if "fwd_start" in t and "fwd_end" in t and batch:
                scalars["fwd_ms_per_example"] = 1e3 * (t["fwd_end"] - t["fwd_start"]) / batch
                if t.get("bwd_end", 0.0) > t["fwd_end"]:
                    scalars["bwd_ms_per_example"] = 1e3 * (t["bwd_end"] - t["fwd_end"]) / batch
            if self._last_step_time is not None and now > self._last_step_time:
                scalars["examples_per_s"] = batch / (now - self._last_step_time)
            if not self._layers_written:
                self.writer.log_json(step, "layers", layer_table(trace))
                self._layers_written = True
            if step % self.every == 0:
                self._log_stats(step, trace)
            if now - self._last_snapshot >= self.snapshot_every:
                self._snapshot(step, trace)
                self._last_snapshot = now
            if self.diagnose_every and step % self.diagnose_every == 0:
                self._window.observe(trace, detail=False)
                if now - self._window_start >= self.findings_every:
                    self._publish_findings(step)
        if scalars:
            self.writer.log_scalars(step, scalars)
        self.writer.commit(step)
        self.step_index = step + 1
        self._last_step_time = time.perf_counter()
        if self._last_step_time - self._last_poll >= self.poll_every:
            self._last_poll = self._last_step_time
            self.handle_controls()
        return step

    def _log_stats(self, step: int, trace: Trace) -> None:
        for name, block in trace.items():
            used = block.weight  # W as used in this step's forward (copied before the optimizer step)
            current = self._current_weight(block)  # W after the step
            if current is None or used is None or current.shape != used.shape:
                current, used = used, None
            with torch.no_grad():
                relu = block.activation in RELU
                stats = block_stats(block.a, block.z, block.grad_a, current, block.grad_weight, used, relu=relu)
            if stats:
                self.writer.log_layer_stats(step, name, stats)
                if stats.get("update_ratio") is not None:
                    self._held.observe(step, name, float(stats["update_ratio"]))

    def _publish_findings(self, step: int) -> None:
        """The live diagnosis of the last window of sampled batches → json `findings`; each
        finding carries the step it first appeared (and kept appearing) at."""
        found = self._window.result().findings
        # the measured ratio (held for a while) replaces the lr·‖dL/dW‖/‖W‖ estimate, which
        # ignores momentum; with no lr known the estimate would come from an assumed lr
        found = [f for f in found if f.kind != "update_ratio"] + self._held.findings()
        seen: dict[tuple[str, str, tuple[int, ...]], int] = {}
        rows = []
        for f in found:
            key = (f.kind, f.layer, f.filters)
            seen[key] = self._first_seen.get(key, step)
            rows.append({**f.as_dict(), "message": f.summary, "step": seen[key]})
        self._first_seen = seen  # a finding that went away starts afresh if it comes back
        self.writer.log_json(step, "findings", rows)
        self._window = Diagnoser(data="recent training batches", lr=self.lr)
        self._window_start = time.perf_counter()

    def _current_weight(self, block: Block) -> Tensor | None:
        if block.kind == "activation":
            return None
        module = self._modules.get(base_name(block.name))
        w = getattr(module, "weight", None)
        return w if isinstance(w, Tensor) else None

    def _probe_trace(self) -> Trace | None:
        """x, z, a, dL/dz, dL/da of the first probe image (the same held-out image at every
        snapshot, so steps compare like for like), in eval mode, with the loss on its label (or
        the model's top class); no parameter's .grad is touched. None without probe images, or
        when the model's output is not (1, classes) scores."""
        if self.probe_images is None:
            return None
        x = self.probe_transform(self.probe_images[:1]).detach().requires_grad_(True)
        was = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                out = self.model(x)
                labels = self.probe_labels
                target = labels[:1] if labels is not None else out.detach().argmax(1)
                torch.autograd.grad(F.cross_entropy(out, target), x)
            return self.probe.trace
        except (RuntimeError, ValueError, TypeError, IndexError):
            self.probe_images = None  # not a classifier of these images: example 0 of the batch it is
            return None
        finally:
            self.model.train(was)
            self._seen_passes = self.probe.passes

    def _snapshot(self, step: int, trace: Trace) -> None:
        fixed = self._probe_trace()
        source = "probe" if fixed is not None else "batch"
        if source != self._snapshot_source:  # the page says which image its maps are of
            self.writer.set_meta("snapshot_example", source)
            self._snapshot_source = source
        for i, (name, block) in enumerate(trace.items()):
            maps = fixed.get(name) if fixed is not None else block  # x, z, a and their gradients
            if maps is None:
                maps = block
            if i == 0 and maps.x is not None:
                self.writer.log_snapshot(step, name, "x", maps.x[:1])
                self._inputs[step] = maps.x[:1].detach().clone()  # (1, C, H, W) what the page shows
                for old in sorted(self._inputs)[:-KEEP_INPUTS]:
                    del self._inputs[old]
            for kind in SNAPSHOT_KINDS:
                src = block if kind in ("weight", "grad_weight") else maps  # W, dL/dW: the training step's
                t = src.grad_z if kind == "grad_z" else getattr(src, kind)
                if t is None:
                    continue
                if kind not in ("weight", "grad_weight"):
                    t = t[:1]  # example 0 of the batch
                self.writer.log_snapshot(step, name, kind, t)

    # ---- controls ------------------------------------------------------------------------
    def handle_controls(self) -> None:
        """Apply what the dashboard asked; `pause` blocks here until `resume` (or close)."""
        for ctrl in self.writer.poll_controls():
            result = self._apply(ctrl)
            self.writer.ack_control(ctrl.id, self.step_index, result=result)
        while self.paused and not self._closed:
            self.writer.set_meta("status", "paused")
            self.writer.commit(max(self.step_index - 1, 0))
            time.sleep(0.1)
            for ctrl in self.writer.poll_controls():
                result = self._apply(ctrl)
                self.writer.ack_control(ctrl.id, self.step_index, result=result)
        if not self._closed:
            self.writer.set_meta("status", "running")

    def _refuse_stale_controls(self) -> None:
        """Controls still pending when this recorder opens the run were queued while no trainer
        was running (e.g. after a kill -9, before `--resume`): acknowledged as refused, so a
        resumed run neither starts paused nor takes settings nobody saw applied."""
        for ctrl in self.writer.poll_controls():
            self.writer.ack_control(ctrl.id, self.step_index, result={"ok": False, "error": STALE_CONTROL})

    def _apply(self, ctrl: Control) -> dict[str, Any]:
        if ctrl.key == "pause":
            self.paused = True
            return {"ok": True}
        if ctrl.key == "resume":
            self.paused = False
            return {"ok": True}
        if ctrl.key == "project":
            return self._project(ctrl)
        if ctrl.key == "unit":
            return self._unit(ctrl)
        if self.on_control is None:
            return {"ok": False, "error": f"'{ctrl.key}' needs the built-in trainer (convscope demo)"}
        try:
            return self.on_control(ctrl) or {"ok": True}
        except (ValueError, TypeError, KeyError, RuntimeError, OSError) as exc:
            return {"ok": False, "error": one_line(exc)}
        except Exception as exc:  # a control never ends the run: any failure is its answer
            return {"ok": False, "error": f"{type(exc).__name__}: {one_line(exc)}"}

    def _project(self, ctrl: Control) -> dict[str, Any]:
        """A feature map back to pixels for the example the page shows (train/projections.py)."""
        if not self._inputs:
            return {"ok": False, "error": "no snapshot of an input yet: wait for the first pictures"}
        wanted = ctrl.value.get("step") if isinstance(ctrl.value, dict) else None
        steps = sorted(self._inputs)
        at = steps[-1]
        if isinstance(wanted, int) and not isinstance(wanted, bool):
            earlier = [s for s in steps if s <= wanted]
            at = earlier[-1] if earlier else steps[0]
        try:
            return answer_projection(
                self.model, self.writer, ctrl.id, ctrl.value, self._inputs[at],
                step=max(self.step_index - 1, 0), input_step=at,
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": one_line(exc)}

    def _unit(self, ctrl: Control) -> dict[str, Any]:
        """What excites one feature map over the probe images (train/units_live.py)."""
        if self.probe_images is None:
            return {"ok": False, "error": "the unit explorer needs probe images: watch(model, dir, probe=images)"}
        try:
            return answer_unit(
                self.model, self.writer, ctrl.id, ctrl.value, self.probe_images, self.probe_transform,
                step=max(self.step_index - 1, 0),
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": one_line(exc)}

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
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("stopped")
        else:
            self.close("crashed")


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
) -> Recorder:
    """Start recording `model` into `run_dir` (statistics every `every` steps, tensor snapshots
    every `snapshot_every` seconds). Call `.step(loss=...)` after each optimizer step. `probe`:
    held-out images in [0, 1] (N, C, H, W) for the dashboard's unit explorer, fed to the model
    through `probe_transform` (e.g. your normalisation)."""
    return Recorder(
        model, run_dir, every=every, snapshot_every=snapshot_every, layers=layers,
        config=config, meta=meta, resume=resume, probe=probe, probe_transform=probe_transform,
    )  # fmt: skip


def _check_probe(probe: Tensor) -> Tensor:
    if not isinstance(probe, Tensor) or probe.dim() != 4 or probe.shape[0] < 1:
        raise ValueError("probe must be images shaped (N, C, H, W)")
    if not probe.is_floating_point() or not bool(torch.isfinite(probe).all()):
        raise ValueError("probe must be finite float images in [0, 1]")
    if float(probe.min()) < 0 or float(probe.max()) > 1:
        raise ValueError("probe images must be in [0, 1] (give your normalisation as probe_transform)")
    return probe.detach()


def layer_table(trace: Trace) -> list[dict[str, Any]]:
    """The per-layer facts the page shows (json `layers`)."""
    rows = []
    for name, b in trace.items():
        s = b.spec
        rows.append(
            {
                "name": name,
                "kind": b.kind,
                "type": s.type if s else (b.activation or "activation"),
                "out_shape": list(b.out_shape or ()),
                "kernel": list(s.kernel_size) if s and s.kernel_size else None,
                "stride": list(s.stride) if s and s.stride else None,
                "padding": (s.padding if isinstance(s.padding, str) else list(s.padding))
                if s and s.padding is not None
                else None,
                "params": s.params if s else 0,
                "formula": s.formula if s else "0",
                "activation": b.activation,
                "norm": b.norm_type,
            }
        )
    return rows


def one_line(exc: BaseException) -> str:
    """An exception as the one line convscope shows (KeyError's quotes dropped, whitespace folded)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return " ".join(text.split())


def _batch_size(trace: Trace) -> int:
    for block in trace.values():
        for t in (block.x, block.a, block.z):
            if t is not None and t.dim() >= 1:
                return int(t.shape[0])
    return 0


def _number(name: str, v: float | Tensor) -> float:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"metric {name!r} must be a single number, got a tensor of shape {tuple(v.shape)}")
        return float(v.detach())
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"metric {name!r} must be a number, got {type(v).__name__}")
    return float(v)
