"""What a watched step writes beyond its scalars (train/watch.py's Recorder mixes this in): every
block's per-layer statistics in a few fused reductions (train/stats.py), the live diagnosis's
findings, the snapshots of the pictures (example 0 of the batch, or a fixed held-out probe image),
and the layer table the page's cards are built from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.analysis.diagnose import Diagnoser
from convscope.analysis.update_hold import UpdateHold
from convscope.capture import Block, Probe, Trace
from convscope.capture.naming import RELU, base_name
from convscope.runs import RunWriter
from convscope.train.stats import Reductions, StatsInput, fused_stats, one_thread

SNAPSHOT_KINDS = ("z", "a", "grad_z", "grad_a", "weight", "grad_weight")
KEEP_INPUTS = 8  # snapshot inputs kept in memory for projection requests (the page shows recent ones)


class StepOutputs:
    """Writes a step's statistics, findings and snapshots for a recorder (the attributes below are
    the recorder's)."""

    writer: RunWriter
    model: nn.Module
    probe: Probe
    lr: float | None
    probe_images: Tensor | None
    probe_labels: Tensor | None
    probe_transform: Callable[[Tensor], Tensor]
    _clock: Callable[[], float]
    _held: UpdateHold
    _window: Diagnoser
    _window_start: float
    findings_every: float
    _first_seen: dict[tuple[str, str, tuple[int, ...]], int]
    _modules: dict[str, nn.Module]
    _module_of: dict[str, nn.Module | None]
    _armed_passes: int
    _snapshot_source: str
    _inputs: dict[int, Tensor]
    _reductions: Reductions

    def _log_stats(self, step: int, trace: Trace) -> None:
        rows = []
        for name, block in trace.items():
            used = block.weight  # W as used in this step's forward (copied before the optimizer step)
            current = self._current_weight(block)  # W after the step
            if current is None or used is None or current.shape != used.shape:
                current, used = used, None
            rows.append(
                StatsInput(name, block.a, block.z, block.grad_a, current, block.grad_weight, used,
                           relu=block.activation in RELU, seen=self._reductions.pop(block))
            )  # fmt: skip
        for name, stats in fused_stats(rows).items():
            self.writer.log_layer_stats(step, name, stats)
            if stats.get("update_ratio") is not None:
                self._held.observe(step, name, float(stats["update_ratio"]))

    @one_thread
    def _sample_diagnosis(self, step: int, trace: Trace, now: float) -> None:
        """A live-diagnosis sample of this step's pass; the findings, when a window is complete.
        Passes over memory, as the statistics: on one torch thread (train/stats.py `one_thread`)."""
        self._window.observe(trace, detail=False)
        if now - self._window_start >= self.findings_every:
            self._publish_findings(step)

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
        self._window_start = self._clock()

    def _current_weight(self, block: Block) -> Tensor | None:
        if block.kind == "activation":
            return None
        name = block.name
        module = self._module_of[name] if name in self._module_of else self._modules.get(base_name(name))
        self._module_of[name] = module
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
            self._armed_passes = self.probe.passes

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
