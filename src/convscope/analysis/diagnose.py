"""Filter diagnosis: dead, mostly-dead, noisy and saturated filters, gradient health — https://cs231n.github.io/neural-networks-1/#actfun

CS231n: "a large gradient flowing through a ReLU neuron could cause the weights to update in
such a way that the neuron will never activate on any datapoint again ... you may find that as
much as 40% of your network can be 'dead' (i.e. neurons that never activate across the entire
training dataset) if the learning rate is set too high." `diagnose` streams a dataset through
the model and counts per filter on how many inputs its activation map is all zero (memory does
not grow with the dataset): the first batch runs inside a Probe keeping only maps and weights,
which finds the blocks of any model; the rest run under plain forward hooks on the activation
modules when those cover every block (a Probe stays on for functional activations). It scores
the filters' smoothness (smoothness.py) and, when labels are given, samples gradient health
(gradient_health.py). Every finding carries its numbers and advice no stronger than they are.

    diag = cs.diagnose(model, (X, y), lr=0.01)      # X (N, C, H, W), y (N,) class indices
    for f in diag.findings:
        print(f.severity, f.summary)                  # "3 of 16 filters of conv1 are dead on this data: ..."
    open("diagnosis.json", "w").write(diag.to_json())

`Diagnoser` is the streaming part on its own: feed it every trace of a Probe (e.g. inside a
training loop) and ask for `result()` at any time.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.analysis.gradient_health import (
    ASSUMED_LR,
    DEPTH_RATIO,
    SATURATED_FILTER,
    SATURATION_MARGIN,
    TYPICAL_UPDATE_RATIO,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    depth_flags,
    norm,
    saturated_count,
    saturates,
    update_ratio,
)
from convscope.analysis.smoothness import NOISY_ROUGHNESS, roughness
from convscope.analysis.stream import Progress, open_batches, split_batch
from convscope.capture import HookSet, Probe, Trace, logits_of
from convscope.capture.naming import NON_NEGATIVE, base_name, role

GRAD_BATCHES = 4  # gradient health is sampled on this many batches (backward costs ~2 forwards)
MAP_BATCHES = 4  # mean maps and zero shares come from this many batches (each costs 2 passes over a)
SEVERITIES = ("high", "medium", "low")  # most serious first
KINDS = (
    "nonfinite", "dead", "mostly_dead", "noisy", "saturated",
    "exploding_gradient", "vanishing_gradient", "update_ratio",
)  # fmt: skip
_RELU_FAMILY = frozenset({"ReLU", "relu", "ReLU6", "relu6", "Hardtanh", "hardtanh", "Threshold"})
_NOT_DATA = "(weights only: does not depend on the data)"

LossFn = Callable[[Tensor, Tensor], Tensor]


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Finding:
    """One thing worth a look, with the numbers behind it and hedged advice."""

    kind: str  # one of KINDS
    layer: str  # block name, e.g. "conv1" or "layer1.0.conv1"
    filters: tuple[int, ...]  # the filters (channels) concerned; () for a whole-layer finding
    severity: str  # "high" | "medium" | "low"
    summary: str  # one sentence with the numbers, saying "on this data" where it depends on it
    advice: str  # what may cause it and what to try, never stronger than the evidence
    evidence: dict[str, Any] = field(default_factory=dict)  # the numbers (JSON-ready)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "layer": self.layer,
            "filters": list(self.filters),
            "severity": self.severity,
            "summary": self.summary,
            "advice": self.advice,
            "evidence": self.evidence,
        }


@dataclass
class LayerSummary:
    """Per-filter numbers of one block over every input seen; tensors are for pictures."""

    name: str
    kind: str  # "conv" | "linear" | "activation"
    activation: str | None  # "ReLU", "tanh", ... (None: no activation, nothing counted)
    layer_type: str | None  # "Conv2d", "Linear", ... (None for a lone activation)
    filters: int  # channels (conv) or units (linear) of the activation
    inputs: int  # inputs whose activation was counted
    zero_inputs: list[int]  # per filter: inputs on which its whole activation map is 0
    nonfinite_inputs: list[int]  # per filter: inputs on which its map has NaN/Inf
    zero_fraction: list[float]  # per filter: fraction of its activation values that are 0 (over map_inputs)
    max_activation: list[float]  # per filter: largest activation value seen
    dead: list[int]  # zero on every input
    mostly_dead: list[int]  # zero on >= mostly_dead of the inputs, but not all
    roughness: list[float] | None = None  # per filter (smoothness.roughness); None: no spatial filter
    saturated_fraction: list[float] | None = None  # per filter, tanh/sigmoid only
    grad_norm: float | None = None  # mean over gradient batches of ‖dL/dW‖
    weight_norm: float | None = None  # ‖W‖
    relative_grad: float | None = None  # grad_norm / weight_norm
    update_ratio: float | None = None  # lr · grad_norm / weight_norm
    grad_batches: int = 0  # batches the gradient numbers are from
    map_inputs: int = 0  # inputs that mean_map and zero_fraction are from (a sample of a long stream)
    weight: Tensor | None = field(default=None, repr=False)  # (C_out, C_in, k, k) or (out, in)
    mean_map: Tensor | None = field(default=None, repr=False)  # (C, H, W) or (C,): mean over map_inputs
    top_map: Tensor | None = field(default=None, repr=False)  # (C, H, W) or (C,): each filter's map on its top input
    top_input: list[int] = field(default_factory=list)  # per filter: input (stream order) with its largest value

    @property
    def dead_fraction(self) -> float:
        return len(self.dead) / self.filters if self.filters else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "activation": self.activation,
            "layer_type": self.layer_type,
            "filters": self.filters,
            "inputs": self.inputs,
            "dead": self.dead,
            "dead_fraction": self.dead_fraction,
            "mostly_dead": self.mostly_dead,
            "zero_inputs": self.zero_inputs,
            "nonfinite_inputs": self.nonfinite_inputs,
            "zero_fraction": _finite(self.zero_fraction),
            "max_activation": _finite(self.max_activation),
            "top_input": self.top_input,
            "roughness": None if self.roughness is None else _finite(self.roughness),
            "saturated_fraction": self.saturated_fraction,
            "grad_norm": _num(self.grad_norm),
            "weight_norm": _num(self.weight_norm),
            "relative_grad": _num(self.relative_grad),
            "update_ratio": _num(self.update_ratio),
            "grad_batches": self.grad_batches,
            "map_inputs": self.map_inputs,
        }


@dataclass
class Diagnosis:
    """What `diagnose` found: per-layer summaries in call order and findings, most serious first."""

    data: str  # what the data was, e.g. "builtin:photo-crops"
    inputs: int  # inputs streamed
    layers: list[LayerSummary]
    findings: list[Finding]
    thresholds: dict[str, float]  # every threshold used, by name (see THRESHOLD_TEXT)
    lr: float  # learning rate used for the update ratio
    lr_assumed: bool  # True when lr was not given and ASSUMED_LR stood in
    gradients: str  # how gradient health was measured, or why not
    notes: list[str] = field(default_factory=list)

    #: set by convscope.render (which this layer may not import): Diagnosis → HTML for Jupyter
    display: ClassVar[Callable[[Diagnosis], str] | None] = None

    def _repr_html_(self) -> str | None:
        return None if Diagnosis.display is None else Diagnosis.display(self)

    def layer(self, name: str) -> LayerSummary:
        for s in self.layers:
            if s.name == name:
                return s
        raise KeyError(f"no layer {name!r} in this diagnosis; layers: {', '.join(s.name for s in self.layers)}")

    def of_kind(self, kind: str) -> list[Finding]:
        """The findings of one kind (KINDS)."""
        if kind not in KINDS:
            raise ValueError(f"unknown finding kind {kind!r}; kinds: {', '.join(KINDS)}")
        return [f for f in self.findings if f.kind == kind]

    def as_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "inputs": self.inputs,
            "lr": self.lr,
            "lr_assumed": self.lr_assumed,
            "gradients": self.gradients,
            "thresholds": {k: {"value": v, "meaning": THRESHOLD_TEXT[k]} for k, v in self.thresholds.items()},
            "notes": self.notes,
            "findings": [f.as_dict() for f in self.findings],
            "layers": [s.as_dict() for s in self.layers],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The diagnosis without pictures, as JSON (no NaN/Infinity: they become null)."""
        return json.dumps(_json_safe(self.as_dict()), indent=indent, allow_nan=False)


THRESHOLD_TEXT: dict[str, str] = {
    "mostly_dead": "a filter is mostly dead when its activation map is all zero on at least this fraction of the inputs (dead: on all of them)",
    "noisy_roughness": "a first-layer filter is noisy when its roughness (mean squared neighbour difference / 2·mean square weight) is at least this; white noise scores 1, a constant filter 0",
    "typical_update_ratio": "an SGD update lr·‖dL/dW‖ is usually around this fraction of ‖W‖ while training (CS231n)",
    "update_ratio_low": "below this update/weight ratio the learning rate may be too low for the layer",
    "update_ratio_high": "above this update/weight ratio the learning rate may be too high for the layer",
    "depth_ratio": "a layer's ‖dL/dW‖/‖W‖ this many times below the largest later layer's is flagged vanishing, this many times above the smallest later layer's exploding",
    "saturation_margin": "a tanh value within this of ±1, or a sigmoid value within this of 0 or 1, is saturated",
    "saturated_filter": "a tanh/sigmoid filter is saturated when at least this fraction of its values are",
}


# ------------------------------------------------------------------------------ streaming
class _Tally:
    """Running per-filter counts of one block; memory independent of the number of inputs."""

    def __init__(self, name: str, kind: str, activation: str | None, layer_type: str | None) -> None:
        self.name, self.kind, self.activation, self.layer_type = name, kind, activation, layer_type
        self.inputs = 0
        self.detail_inputs = 0  # inputs of the batches that added to zero_values and map_sum
        self.sat_values = 0  # activation values per filter counted for saturation
        self.zero_inputs: Tensor | None = None  # (C,) int64
        self.nonfinite_inputs: Tensor | None = None  # (C,) int64
        self.zero_values: Tensor | None = None  # (C,) int64
        self.saturated: Tensor | None = None  # (C,) int64, tanh/sigmoid only
        self.map_sum: Tensor | None = None  # (C, ...) float64
        self.top_val: Tensor | None = None  # (C,) float32, -inf before anything
        self.top_map: Tensor | None = None  # (C, ...)
        self.top_input: Tensor | None = None  # (C,) int64
        self.weight: Tensor | None = None  # copy of the filters
        self._weight_key: tuple[int, int] | None = None  # (data_ptr, version) of what was copied
        self.grad_sum = 0.0  # sum of ‖dL/dW‖ over gradient batches
        self.grad_batches = 0
        self.grad_nonfinite = 0

    def add_weight(self, w: Tensor) -> None:
        key = (w.data_ptr(), w._version)
        if key != self._weight_key:  # new, or written in place since: copy again
            self.weight = w.detach().float().clone()
            if self.layer_type is not None and "Transpose" in self.layer_type and w.dim() > 2:
                self.weight = self.weight.transpose(0, 1).contiguous()  # (C_in, C_out, k..) → (C_out, C_in, k..)
            self._weight_key = key

    def add_grad(self, g: Tensor) -> None:
        n = norm(g)
        if math.isfinite(n):
            self.grad_sum += n
            self.grad_batches += 1
        else:
            self.grad_nonfinite += 1

    def add_maps(self, a: Tensor, first_input: int, *, detail: bool = True) -> None:
        """a: (B, C, ...) activation maps of B inputs, the first being input `first_input`.
        Every batch: one reduction per map (its max, and min unless a ≥ 0). With `detail` also
        the zero count and the sum map (two more passes over a)."""
        b, c = a.shape[0], a.shape[1]
        a3 = a.detach().reshape(b, c, -1)  # (B, C, S)
        if self.zero_inputs is None:
            dev = a.device
            self.zero_inputs = torch.zeros(c, dtype=torch.int64, device=dev)
            self.nonfinite_inputs = torch.zeros(c, dtype=torch.int64, device=dev)
            self.zero_values = torch.zeros(c, dtype=torch.int64, device=dev)
            self.map_sum = torch.zeros(a.shape[1:], dtype=torch.float64, device=dev)
            self.top_val = torch.full((c,), -math.inf, dtype=torch.float32, device=dev)
            self.top_map = torch.zeros(a.shape[1:], dtype=torch.float32, device=dev)
            self.top_input = torch.zeros(c, dtype=torch.int64, device=dev)
            if saturates(self.activation):
                self.saturated = torch.zeros(c, dtype=torch.int64, device=dev)
        assert self.map_sum is not None and self.top_val is not None and self.top_map is not None
        assert self.nonfinite_inputs is not None and self.zero_values is not None and self.top_input is not None
        if tuple(a.shape[1:]) != tuple(self.map_sum.shape):
            raise ValueError(
                f"{self.name}: activation shape changed from {tuple(self.map_sum.shape)} to "
                f"{tuple(a.shape[1:])} between batches; give inputs of one size"
            )
        # per batch only reductions to (B, C) and a few ops on them: this runs on every batch
        if self.activation in NON_NEGATIVE:
            hi = a3.amax(dim=2)  # (B, C); NaN when the map has a NaN
            self.zero_inputs += (hi == 0).sum(dim=0)
            finite = math.isfinite(float(hi.sum()))  # NaN/Inf anywhere make the sum non-finite
            if not finite:
                self.nonfinite_inputs += (~torch.isfinite(hi)).sum(dim=0)
        else:
            lo, hi = torch.aminmax(a3, dim=2)  # (B, C) each
            self.zero_inputs += ((hi == 0) & (lo == 0)).sum(dim=0)
            finite = math.isfinite(float(hi.sum() + lo.sum()))
            if not finite:
                self.nonfinite_inputs += (~torch.isfinite(hi) | ~torch.isfinite(lo)).sum(dim=0)
        if detail:
            if self.activation in NON_NEGATIVE:  # a ≥ 0: sign() is 1 where a > 0 (a float sum is fast)
                zeros = torch.nan_to_num(a3.shape[2] - a3.sign().sum(dim=2), nan=0.0)  # (B, C)
                self.zero_values += zeros.sum(dim=0).round().to(torch.int64)
            else:
                self.zero_values += (a3 == 0).sum(dim=2).sum(dim=0)  # (B, C) → (C,)
            self.map_sum += a.detach().sum(dim=0).to(torch.float64)
            self.detail_inputs += b
        if not finite or hi.dtype != torch.float32:
            hi = torch.nan_to_num(hi.float(), nan=-math.inf)
        best, where = hi.max(dim=0)  # (C,) each
        better = best > self.top_val  # (C,)
        if bool(better.any()):
            idx = better.nonzero().squeeze(1)  # (K,)
            self.top_val[idx] = best[idx]
            self.top_map[idx] = a.detach()[where[idx], idx].float()  # (K, ...)
            self.top_input[idx] = where[idx] + first_input
        if self.saturated is not None:
            sat = saturated_count(a.detach(), self.activation)
            if sat is not None:
                self.saturated += sat
                self.sat_values += b * a3.shape[2]
        self.inputs += b


class Diagnoser:
    """Streams Probe traces into per-filter counts; `result()` turns them into a Diagnosis.

    Feed it `probe.trace` after each forward (and backward, for gradient health) of a Probe
    keeping at least "a" (and "weight", "grad_weight" for smoothness and gradients). Keyword
    arguments are the thresholds and the learning rate of `diagnose`.
    """

    def __init__(
        self,
        *,
        mostly_dead: float = 0.99,
        noisy: float = NOISY_ROUGHNESS,
        lr: float | None = None,
        data: str = "this data",
    ) -> None:
        if not 0 < mostly_dead <= 1:
            raise ValueError(f"mostly_dead must be a fraction in (0, 1], got {mostly_dead!r}")
        if not noisy > 0:
            raise ValueError(f"noisy must be a positive roughness (white noise = 1), got {noisy!r}")
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.mostly_dead = mostly_dead
        self.noisy = noisy
        self.lr = lr
        self.data = data
        self.inputs = 0
        self.notes: list[str] = []
        self.gradients = "not measured"
        self._tallies: dict[str, _Tally] = {}

    def observe(self, trace: Trace, *, inputs: int | None = None, detail: bool = True) -> None:
        """Count one pass. `inputs`: its batch size (default: the batch dim of the first map).
        `detail`: also add to the mean maps and zero shares (two more passes over each map; a
        long stream can give them a sample of its batches)."""
        if inputs is None:
            first = next((b.a for b in trace.values() if b.a is not None), None)
            if first is None:
                raise ValueError(
                    "no block of this trace kept its activation map: keep 'a' in the Probe, or pass inputs="
                )
            inputs = int(first.shape[0])
        for name, block in trace.items():
            t = self._tallies.get(name)
            if t is None:
                layer_type = block.spec.type if block.spec is not None else None
                t = self._tallies[name] = _Tally(name, block.kind, block.activation, layer_type)
            if block.weight is not None:
                t.add_weight(block.weight)
            if block.grad_weight is not None:
                t.add_grad(block.grad_weight)
            a = block.a
            if a is not None and a.dim() >= 2 and block.activation is not None:
                t.add_maps(a, self.inputs, detail=detail)
        self.inputs += inputs

    def _add_maps(self, name: str, a: Tensor, *, detail: bool) -> None:
        """Count one block's maps of the current pass (the tap's path; observe() does it from a trace)."""
        self._tallies[name].add_maps(a, self.inputs, detail=detail)

    def _add_grad(self, name: str, g: Tensor) -> None:
        self._tallies[name].add_grad(g)

    def _advance(self, inputs: int) -> None:
        """The current pass is counted: the next one starts at input `self.inputs`."""
        self.inputs += inputs

    def result(self) -> Diagnosis:
        """The Diagnosis of everything observed so far."""
        layers = [s for s in map(self._summary, self._tallies.values()) if s is not None]
        lr = self.lr if self.lr is not None else ASSUMED_LR
        for s in layers:
            if s.grad_norm is not None and s.weight_norm is not None:
                s.relative_grad = s.grad_norm / s.weight_norm if s.weight_norm > 0 else math.inf
                s.update_ratio = update_ratio(grad_norm=s.grad_norm, weight_norm=s.weight_norm, lr=lr)
        findings = _findings(layers, self, lr)
        thresholds = {
            "mostly_dead": self.mostly_dead,
            "noisy_roughness": self.noisy,
            "typical_update_ratio": TYPICAL_UPDATE_RATIO,
            "update_ratio_low": UPDATE_RATIO_LOW,
            "update_ratio_high": UPDATE_RATIO_HIGH,
            "depth_ratio": DEPTH_RATIO,
            "saturation_margin": SATURATION_MARGIN,
            "saturated_filter": SATURATED_FILTER,
        }
        return Diagnosis(
            data=self.data,
            inputs=self.inputs,
            layers=layers,
            findings=findings,
            thresholds=thresholds,
            lr=lr,
            lr_assumed=self.lr is None,
            gradients=self.gradients,
            notes=list(self.notes),
        )

    def _summary(self, t: _Tally) -> LayerSummary | None:
        w = t.weight.cpu() if t.weight is not None else None
        rough: list[float] | None = None
        if t.kind == "conv" and w is not None and w.dim() >= 3 and max(w.shape[2:]) >= 2:
            rough = roughness(w).tolist()
        grad_norm = t.grad_sum / t.grad_batches if t.grad_batches else None
        if t.grad_nonfinite:
            grad_norm = math.inf
        weight_norm = norm(w) if w is not None else None
        if t.zero_inputs is None:  # no activation counted: only weights/gradients
            if w is None:
                return None
            c = int(w.shape[0])
            return LayerSummary(
                name=t.name, kind=t.kind, activation=t.activation, layer_type=t.layer_type,
                filters=c, inputs=0, zero_inputs=[], nonfinite_inputs=[], zero_fraction=[],
                max_activation=[], dead=[], mostly_dead=[], roughness=rough,
                grad_norm=grad_norm, weight_norm=weight_norm, grad_batches=t.grad_batches, weight=w,
            )  # fmt: skip
        assert t.nonfinite_inputs is not None and t.zero_values is not None and t.map_sum is not None
        assert t.top_val is not None and t.top_map is not None and t.top_input is not None
        zero = t.zero_inputs.cpu().tolist()
        n = t.inputs
        dead = [i for i, z in enumerate(zero) if n > 0 and z == n]
        mostly = [i for i, z in enumerate(zero) if n > 0 and z < n and z >= self.mostly_dead * n]
        sat = None
        if t.saturated is not None and t.sat_values:
            sat = (t.saturated.double().cpu() / t.sat_values).tolist()
        per_map = max(1, int(t.map_sum[0].numel()))  # values per map
        return LayerSummary(
            name=t.name,
            kind=t.kind,
            activation=t.activation,
            layer_type=t.layer_type,
            filters=len(zero),
            inputs=n,
            zero_inputs=zero,
            nonfinite_inputs=t.nonfinite_inputs.cpu().tolist(),
            zero_fraction=(t.zero_values.double().cpu() / max(t.detail_inputs * per_map, 1)).tolist(),
            max_activation=t.top_val.cpu().tolist(),
            dead=dead,
            mostly_dead=mostly,
            roughness=rough,
            saturated_fraction=sat,
            grad_norm=grad_norm,
            weight_norm=weight_norm,
            grad_batches=t.grad_batches,
            map_inputs=t.detail_inputs,
            weight=w,
            mean_map=(t.map_sum / max(t.detail_inputs, 1)).float().cpu(),
            top_map=t.top_map.cpu(),
            top_input=t.top_input.cpu().tolist(),
        )


# ------------------------------------------------------------------------------ findings
def _findings(layers: list[LayerSummary], d: Diagnoser, lr: float) -> list[Finding]:
    out: list[Finding] = []
    scope = f"on this data ({d.inputs:,} inputs of {d.data})"
    first_conv = next((s for s in layers if s.roughness is not None), None)
    for s in layers:
        out += _activation_findings(s, d, scope)
        if s is first_conv:
            out += _noisy_findings(s, d.noisy)
    out += _gradient_findings(layers, lr, d.lr is None, scope)
    order = {k: i for i, k in enumerate(SEVERITIES)}
    position = {s.name: i for i, s in enumerate(layers)}
    out.sort(key=lambda f: (order[f.severity], position.get(f.layer, 0), KINDS.index(f.kind)))
    return out


_DEPTH_ADVICE = {
    "vanishing": "This layer learns far more slowly than later ones. Possible causes: saturating "
    "activations, dead filters after it, a poor initialisation, or a deep stack without "
    "normalisation or skip connections.",
    "exploding": "Updates of this layer may be far too large for the same learning rate. A lower "
    "learning rate, gradient clipping, normalisation layers or a smaller initialisation may help.",
}


def _severity(fraction: float) -> str:
    return "high" if fraction >= 0.5 else "medium" if fraction >= 0.1 else "low"


def _activation_findings(s: LayerSummary, d: Diagnoser, scope: str) -> list[Finding]:
    out: list[Finding] = []
    n, c = s.inputs, s.filters
    if n == 0:
        return out
    bad = [i for i, k in enumerate(s.nonfinite_inputs) if k > 0]
    if bad:
        worst = max(s.nonfinite_inputs)
        out.append(Finding(
            kind="nonfinite", layer=s.name, filters=tuple(bad), severity="high",
            summary=f"{len(bad)} of {c} filters of {s.name} have NaN or Inf in their activation map "
                    f"{scope}: on up to {worst:,} of {n:,} inputs",
            advice="Training may have diverged (a learning rate that is too high is a common cause), or the "
                   "input may contain NaN/Inf. Other numbers for this layer may not mean much until this is fixed.",
            evidence={"inputs": n, "nonfinite_inputs": {str(i): s.nonfinite_inputs[i] for i in bad}},
        ))  # fmt: skip
    relu = s.activation in _RELU_FAMILY
    if s.dead:
        k = len(s.dead)
        why = (
            "A dead ReLU filter gets no gradient, so training may never bring it back. It may have been "
            "pushed there by a learning rate that was too high at some point, by its initialisation, or by "
            "a strongly negative bias. Consider a lower learning rate, a small positive initial bias, or "
            "LeakyReLU. "
            if relu
            else "Its input to the nonlinearity is 0 everywhere: the filter may have collapsed to zero weights. "
        )
        out.append(Finding(
            kind="dead", layer=s.name, filters=tuple(s.dead), severity=_severity(k / c),
            summary=f"{k} of {c} filters of {s.name} are dead {scope}: their activation map is zero "
                    f"on all {n:,} inputs",
            advice=why + "They may still fire on inputs unlike these.",
            evidence={"dead": k, "filters_in_layer": c, "dead_fraction": k / c, "inputs": n,
                      "zero_on_inputs": {str(i): s.zero_inputs[i] for i in s.dead},
                      "max_activation": {str(i): s.max_activation[i] for i in s.dead}},
        ))  # fmt: skip
    if s.mostly_dead:
        k = len(s.mostly_dead)
        out.append(Finding(
            kind="mostly_dead", layer=s.name, filters=tuple(s.mostly_dead),
            severity="medium" if k / c >= 0.5 else "low",
            summary=f"{k} of {c} filters of {s.name} are mostly dead {scope}: their activation map is "
                    f"zero on at least {d.mostly_dead:.0%} of the inputs, but not on all",
            advice="They rarely fire: they may detect something rare in this data, or be on their way to "
                   "dying (the causes of dead filters apply). Check on more varied data before changing anything.",
            evidence={"mostly_dead": k, "filters_in_layer": c, "inputs": n, "threshold": d.mostly_dead,
                      "zero_on_inputs": {str(i): s.zero_inputs[i] for i in s.mostly_dead},
                      "max_activation": {str(i): s.max_activation[i] for i in s.mostly_dead}},
        ))  # fmt: skip
    if s.saturated_fraction is not None:
        sat = [i for i, f in enumerate(s.saturated_fraction) if f >= SATURATED_FILTER]
        if sat:
            layer_frac = sum(s.saturated_fraction) / c
            out.append(Finding(
                kind="saturated", layer=s.name, filters=tuple(sat), severity=_severity(len(sat) / c),
                summary=f"{len(sat)} of {c} filters of {s.name} ({s.activation}) are saturated {scope}: "
                        f"at least {SATURATED_FILTER:.0%} of their values are within {SATURATION_MARGIN} of "
                        f"an asymptote ({layer_frac:.0%} of the layer's values are)",
                advice="A saturated tanh/sigmoid unit passes almost no gradient. Its inputs may be too large: "
                       "check the input normalisation and the initialisation scale; BatchNorm or a ReLU-family "
                       "activation may help.",
                evidence={"saturated_filters": len(sat), "filters_in_layer": c, "layer_fraction": layer_frac,
                          "fraction": {str(i): s.saturated_fraction[i] for i in sat}},
            ))  # fmt: skip
    return out


def _noisy_findings(s: LayerSummary, threshold: float) -> list[Finding]:
    assert s.roughness is not None
    rough = s.roughness
    noisy = [i for i, r in enumerate(rough) if math.isfinite(r) and r >= threshold]
    if not noisy:
        return []
    finite = [r for r in rough if math.isfinite(r)]
    median = statistics.median(finite) if finite else math.nan
    return [Finding(
        kind="noisy", layer=s.name, filters=tuple(noisy),
        severity="medium" if len(noisy) / s.filters >= 0.5 else "low",
        summary=f"{len(noisy)} of {s.filters} first-layer filters of {s.name} look noisy: roughness "
                f"≥ {threshold:g} (white noise scores 1, a constant filter 0; layer median {median:.2f}) "
                f"{_NOT_DATA}",
        advice="Well-trained networks usually show smooth first-layer filters. Noisy ones may mean the "
               "network is undertrained (still close to its random initialisation), overfitting, or in need "
               "of more regularisation such as weight decay.",
        evidence={"noisy": len(noisy), "filters_in_layer": s.filters, "threshold": threshold,
                  "median_roughness": median, "roughness": {str(i): rough[i] for i in noisy}},
    )]  # fmt: skip


def _gradient_findings(layers: list[LayerSummary], lr: float, assumed: bool, scope: str) -> list[Finding]:
    out: list[Finding] = []
    graded = [s for s in layers if s.relative_grad is not None]
    if not graded:
        return out
    lr_text = f"lr {lr:g}" + (" (assumed: pass lr= / --lr for yours)" if assumed else "")
    flags = depth_flags([s.relative_grad for s in graded if s.relative_grad is not None])
    for s, flag in zip(graded, flags, strict=True):
        rel = s.relative_grad
        assert rel is not None
        ev: dict[str, Any] = {"grad_norm": _num(s.grad_norm), "weight_norm": _num(s.weight_norm),
                              "relative_grad": _num(rel), "grad_batches": s.grad_batches}  # fmt: skip
        if flag is not None and flag.kind == "exploding" and not math.isfinite(rel):
            out.append(Finding(
                kind="exploding_gradient", layer=s.name, filters=(), severity="high",
                summary=f"the weight gradient of {s.name} is NaN or Inf {scope}",
                advice="Training may diverge: a lower learning rate, gradient clipping or checking the "
                       "inputs and loss for NaN/Inf may help.",
                evidence=ev,
            ))  # fmt: skip
            continue
        if flag is not None:
            other = graded[flag.against]
            ev.update({"compared_with": other.name, "other_relative_grad": _num(other.relative_grad),
                       "factor": flag.factor, "depth_ratio": DEPTH_RATIO})  # fmt: skip
            out.append(Finding(
                kind=f"{flag.kind}_gradient", layer=s.name, filters=(), severity="high",
                summary=f"gradients may be {flag.kind} at {s.name} {scope}: its ‖dL/dW‖/‖W‖ = {rel:.2e} "
                        f"is {flag.factor:.1e}× that of the later layer {other.name}",
                advice=_DEPTH_ADVICE[flag.kind],
                evidence=ev,
            ))  # fmt: skip
        ratio = s.update_ratio
        if ratio is None or not math.isfinite(ratio):
            continue
        ev_r = {**ev, "update_ratio": ratio, "lr": lr, "lr_assumed": assumed,
                "typical": TYPICAL_UPDATE_RATIO, "low": UPDATE_RATIO_LOW, "high": UPDATE_RATIO_HIGH}  # fmt: skip
        if ratio > UPDATE_RATIO_HIGH:
            out.append(Finding(
                kind="update_ratio", layer=s.name, filters=(), severity="medium",
                summary=f"with {lr_text}, one SGD step would change {s.name}'s weights by {ratio:.1e} of "
                        f"their size {scope}; around {TYPICAL_UPDATE_RATIO:g} is usual",
                advice="The learning rate may be too high for this layer; large updates can kill ReLU "
                       "filters. With Adam or another adaptive optimiser the step is not lr·dL/dW and this "
                       "estimate does not apply.",
                evidence=ev_r,
            ))  # fmt: skip
        elif ratio < UPDATE_RATIO_LOW:
            out.append(Finding(
                kind="update_ratio", layer=s.name, filters=(), severity="low",
                summary=f"with {lr_text}, one SGD step would change {s.name}'s weights by only {ratio:.1e} "
                        f"of their size {scope}; around {TYPICAL_UPDATE_RATIO:g} is usual",
                advice="The learning rate may be too low for this layer — or the loss on this data is already "
                       "small (a trained model has small gradients on data like its training data). With Adam "
                       "or another adaptive optimiser this estimate does not apply.",
                evidence=ev_r,
            ))  # fmt: skip
    return out


# ------------------------------------------------------------------------------ the stream
def diagnose(
    model: nn.Module,
    data: Any,
    layers: list[str] | tuple[str, ...] | None = None,
    *,
    batch_size: int | None = None,
    limit: int | None = None,
    loss_fn: LossFn | None = None,
    gradients: bool | None = None,
    grad_batches: int | None = GRAD_BATCHES,
    lr: float | None = None,
    mostly_dead: float = 0.99,
    noisy: float = NOISY_ROUGHNESS,
    transform: Callable[[Tensor], Tensor] | None = None,
    data_name: str | None = None,
    progress: Progress | None = None,
) -> Diagnosis:
    """Stream `data` through `model` and diagnose its filters.

    data: a Dataset of (x, y) or x, a DataLoader, an (X, y) pair of tensors, or X alone
    ((N, C, H, W); y (N,) class indices). The model runs in eval mode (restored after) with
    one Probe keeping only activation maps and weights; each batch is counted and dropped.
    layers: limit to these blocks (Probe's selection). batch_size: for a Dataset or tensors
    (default 64; a DataLoader brings its own). limit: stop after this many inputs.
    Gradient health needs labels: `gradients` None = when the data has labels; it runs
    `loss_fn(logits, y)` (default cross-entropy) and autograd on `grad_batches` batches spread
    evenly over the data (the first ones when its length is unknown; None = every batch). lr: for the update/weight ratio (default: ASSUMED_LR, said so).
    mostly_dead, noisy: thresholds (THRESHOLD_TEXT). transform: applied to each batch x
    (e.g. input normalisation). progress(done, total): called after each batch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"diagnose needs an nn.Module, got {type(model).__name__}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if grad_batches is not None and (not isinstance(grad_batches, int) or grad_batches < 1):
        raise ValueError(f"grad_batches must be a positive int or None (all), got {grad_batches!r}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, y), got {type(loss_fn).__name__}")
    if gradients is False and loss_fn is not None:
        raise ValueError("loss_fn is given but gradients=False: drop one of them")
    batches, total, name, per_batch = open_batches(data, batch_size)
    if limit is not None:
        total = limit if total is None else min(total, limit)
    plan = _plan(total, per_batch, grad_batches)
    map_plan = _plan(total, per_batch, MAP_BATCHES)
    diag = Diagnoser(mostly_dead=mostly_dead, noisy=noisy, lr=lr, data=data_name or name)
    params = [w for m in model.modules() if (w := _leader_weight(m)) is not None and w.requires_grad]
    modes = {m: m.training for m in model.modules()}
    run = _Run(model, diag, loss_fn, params)
    labelled = False
    try:
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        stream = enumerate(_limited(batches, limit))
        tap: _Tap | None = None

        def step_batch(step: int, x: Tensor, y: Tensor | None, probe: Probe | None) -> None:
            nonlocal labelled
            if gradients is True and y is None:
                raise ValueError("gradients=True needs labels: give (X, y) or a dataset of (x, y)")
            labelled = labelled or y is not None
            x = x.to(device)
            if transform is not None:
                x = transform(x)
            want = gradients is not False and y is not None and bool(params)
            want = want and _chosen(step, plan, grad_batches)
            detail = _chosen(step, map_plan, MAP_BATCHES)
            if tap is not None:
                tap.detail = detail
                tap.new_pass()
            run.forward(x, None if not want or y is None else y.to(device), probe=probe is not None)
            if probe is not None:
                diag.observe(probe.trace, inputs=int(x.shape[0]), detail=detail)
            else:
                diag._advance(int(x.shape[0]))
            if progress is not None:
                progress(diag.inputs, total)

        # the first batch under a Probe finds the blocks (any model, functional activations
        # too); the rest run under plain forward hooks on the activation modules when that
        # covers every block (a Probe watches every torch call, costly on a long stream)
        with Probe(model, layers, keep=("a", "weight", "grad_weight")) as probe:
            for step, (x, y) in stream:
                step_batch(step, x, y, probe)
                if step == 0:
                    tap = _Tap.of(model, probe.trace, diag)
                    if tap is not None:
                        run.blocks_of = tap.blocks_of_weight
                        break
        if tap is not None:
            with tap:
                for step, (x, y) in stream:
                    step_batch(step, x, y, None)
    finally:
        for m, mode in modes.items():
            m.training = mode
    loss_sum, graded, graded_inputs = run.loss_sum, run.graded, run.graded_inputs
    if diag.inputs == 0:
        raise ValueError("the data has no inputs: nothing to diagnose")
    if graded:
        what = "the given loss_fn" if loss_fn is not None else "cross-entropy against the labels"
        where = (
            "(every batch)" if grad_batches is None
            else "spread over the data" if plan is not None else "at the start of the data"
        )  # fmt: skip
        diag.gradients = (
            f"{what} on {graded} batch(es) {where} ({graded_inputs:,} inputs; mean loss "
            f"{loss_sum / graded_inputs:.4g}), model in eval mode"
        )
    elif gradients is False:
        diag.gradients = "off (gradients=False)"
    elif not labelled:
        diag.gradients = "not measured: the data has no labels"
    else:
        diag.gradients = "not measured: no conv/linear weight requires grad"
    diag.notes.append(
        f"Counts are over {diag.inputs:,} inputs of {diag.data} with the model in eval mode: a filter "
        "dead on this data may fire on other data."
    )
    result = diag.result()
    sampled = max((s.map_inputs for s in result.layers), default=0)
    if 0 < sampled < result.inputs:
        result.notes.append(
            f"Mean activation maps and shares of zeros are from {sampled:,} of the inputs "
            f"({MAP_BATCHES} batches spread over the data); dead counts, maxima and top inputs from all."
        )
    return result


class _Run:
    """One forward (and, with labels, loss and autograd) of a batch; gradient norms go to the
    Diagnoser through the Probe's trace, or straight from autograd on the tap's path."""

    def __init__(self, model: nn.Module, diag: Diagnoser, loss_fn: LossFn | None, params: list[Tensor]) -> None:
        self.model, self.diag, self.loss_fn, self.params = model, diag, loss_fn, params
        self.blocks_of: dict[int, list[str]] = {}  # id(weight) → block names (tap path)
        self.loss_sum, self.graded, self.graded_inputs = 0.0, 0, 0

    def forward(self, x: Tensor, y: Tensor | None, *, probe: bool) -> None:
        if y is None:
            with torch.no_grad():
                self.model(x)
            return
        with torch.enable_grad():
            logits = logits_of(self.model(x))
            loss = _loss(self.loss_fn, logits, y)
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        if not probe:  # under a Probe its parameter hooks already put dL/dW into the trace
            for p, g in zip(self.params, grads, strict=True):
                for name in self.blocks_of.get(id(p), []) if g is not None else []:
                    self.diag._add_grad(name, g)
        self.loss_sum += float(loss.detach()) * x.shape[0]
        self.graded, self.graded_inputs = self.graded + 1, self.graded_inputs + int(x.shape[0])


class _Tap:
    """Plain forward hooks on the activation modules of the blocks a probed pass found: each
    hook counts that block's maps at once (before any later in-place op could touch them).
    Only when every counted block's activation is a module call; calls are named as the Probe
    names them (`act`, `act#1` for a second call of a shared module in one pass)."""

    def __init__(self, diag: Diagnoser, targets: dict[str, nn.Module], by_call: dict[str, str]) -> None:
        self.diag, self.targets, self.by_call = diag, targets, by_call
        self.blocks_of_weight: dict[int, list[str]] = {}
        self.detail = True
        self._calls: dict[str, int] = {}
        self._hooks = HookSet()

    @staticmethod
    def of(model: nn.Module, trace: Trace, diag: Diagnoser) -> _Tap | None:
        """A tap for the blocks of `trace`, or None when one is out of its reach (a functional
        activation, a block without its map)."""
        modules = dict(model.named_modules())
        targets: dict[str, nn.Module] = {}
        by_call: dict[str, str] = {}
        weights: dict[int, list[str]] = {}
        for name, block in trace.items():
            leader = modules.get(base_name(name)) if block.kind != "activation" else None
            w = _leader_weight(leader) if leader is not None else None
            if w is not None:
                weights.setdefault(id(w), []).append(name)
            if block.activation is None:
                continue  # no map to count (e.g. the last linear layer): weights/gradients only
            act = modules.get(base_name(block.act_name or ""))
            if block.a is None or act is None or role(act) != "activation" or type(act).__name__ != block.activation:
                return None
            targets[base_name(block.act_name or "")] = act
            by_call[block.act_name or ""] = name
        tap = _Tap(diag, targets, by_call)
        tap.blocks_of_weight = weights
        return tap

    def __enter__(self) -> _Tap:
        try:
            for mname, module in self.targets.items():
                self._hooks.add(module.register_forward_hook(self._hook_for(mname)))
        except BaseException:
            self._hooks.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.release()

    def _hook_for(self, mname: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            k = self._calls.get(mname, 0)
            self._calls[mname] = k + 1
            block = self.by_call.get(mname if k == 0 else f"{mname}#{k}")
            if block is not None and isinstance(output, Tensor) and output.dim() >= 2:
                self.diag._add_maps(block, output, detail=self.detail)

        return hook

    def new_pass(self) -> None:
        self._calls.clear()


def _leader_weight(m: nn.Module) -> Tensor | None:
    w = getattr(m, "weight", None)
    return w if role(m) == "leader" and isinstance(w, Tensor) else None


def _loss(loss_fn: LossFn | None, logits: Tensor, y: Tensor) -> Tensor:
    if loss_fn is not None:
        loss = loss_fn(logits, y)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn(logits, y) must return a scalar tensor")
        return loss
    if y.dtype.is_floating_point or y.dim() != 1:
        raise ValueError(
            f"the default cross-entropy loss needs class indices y (N,) of an integer type, got "
            f"{y.dtype} {tuple(y.shape)}; pass loss_fn= or gradients=False (--no-gradients)"
        )
    k = logits.shape[-1]
    if logits.dim() != 2 or int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(
            f"labels of a batch run from {int(y.min())} to {int(y.max())} but the model has {k} outputs "
            f"(logits {tuple(logits.shape)}): pass loss_fn= or gradients=False (--no-gradients)"
        )
    return F.cross_entropy(logits, y)


def _plan(total: int | None, per_batch: int | None, k: int | None) -> set[int] | None:
    """Which batches of a stream get the costly extras: `k` of them spread evenly over it (a
    folder sorted by class must not lend its first class alone). None when the length is
    unknown (then the first k) or k is None (every batch)."""
    if k is None or total is None or per_batch is None:
        return None
    n = -(-total // per_batch)  # batches in the stream
    m = min(k, n)
    return {i * n // m for i in range(m)}


def _chosen(step: int, plan: set[int] | None, k: int | None) -> bool:
    if k is None:
        return True
    return step < k if plan is None else step in plan


def _limited(batches: Iterable[Any], limit: int | None) -> Iterator[tuple[Tensor, Tensor | None]]:
    seen = 0
    for batch in batches:
        x, y = split_batch(batch)
        if limit is not None and seen + x.shape[0] > limit:
            x = x[: limit - seen]
            y = None if y is None else y[: limit - seen]
        if x.shape[0] == 0:
            return
        yield x, y
        seen += int(x.shape[0])
        if limit is not None and seen >= limit:
            return


def _json_safe(obj: Any) -> Any:
    """NaN and ±Inf → None, recursively (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _num(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


def _finite(vs: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in vs]
