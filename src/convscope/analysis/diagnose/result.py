"""What a diagnosis holds — https://cs231n.github.io/neural-networks-1/#actfun

The report data of `diagnose`: a `Finding` (one thing worth a look, with its numbers and
advice), a `FindingGroup` (repeated findings of one kind told as one row), a `LayerSummary`
(per-filter numbers of one block) and the `Diagnosis` holding them, with `to_json()`. No
tensors leave as JSON; pictures are drawn from the summaries' tensors by render/diagnose_report.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

SEVERITIES = ("high", "medium", "low")  # most serious first
KINDS = (
    "nonfinite", "dead", "mostly_dead", "noisy", "saturated",
    "exploding_gradient", "vanishing_gradient", "update_ratio",
)  # fmt: skip

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


@dataclass(frozen=True)
class FindingGroup:
    """Findings of one kind and severity in layers of one kind, told as one row (a group of one
    is that finding alone, with its own summary)."""

    kind: str  # one of KINDS
    severity: str  # "high" | "medium" | "low"
    layer_kind: str  # "conv" | "linear" | "activation"
    layers: tuple[str, ...]  # every layer concerned, in call order
    summary: str  # e.g. "gradients may be exploding in 37 conv layers ...: layer1.0.conv1, … (+34)"
    advice: str
    findings: tuple[Finding, ...] = field(repr=False)  # the members, in order

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "layer_kind": self.layer_kind,
            "layers": list(self.layers),
            "summary": self.summary,
            "advice": self.advice,
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
            "zero_fraction": finite_list(self.zero_fraction),
            "max_activation": finite_list(self.max_activation),
            "top_input": self.top_input,
            "roughness": None if self.roughness is None else finite_list(self.roughness),
            "saturated_fraction": self.saturated_fraction,
            "grad_norm": finite_or_none(self.grad_norm),
            "weight_norm": finite_or_none(self.weight_norm),
            "relative_grad": finite_or_none(self.relative_grad),
            "update_ratio": finite_or_none(self.update_ratio),
            "grad_batches": self.grad_batches,
            "map_inputs": self.map_inputs,
        }


@dataclass
class Diagnosis:
    """What `diagnose` found: per-layer summaries in call order and findings, most serious first;
    `groups` tells the findings with repeats merged (every finding is in exactly one group)."""

    data: str  # what the data was, e.g. "builtin:photo-crops"
    inputs: int  # inputs streamed
    layers: list[LayerSummary]
    findings: list[Finding]
    thresholds: dict[str, float]  # every threshold used, by name (see THRESHOLD_TEXT)
    lr: float  # learning rate used for the update ratio
    lr_assumed: bool  # True when lr was not given and ASSUMED_LR stood in
    gradients: str  # how gradient health was measured, or why not (one line)
    notes: list[str] = field(default_factory=list)
    groups: list[FindingGroup] = field(default_factory=list)  # the findings, repeats merged per layer kind
    untrained: str | None = None  # why the weights look untrained (random initialisation); None: they don't

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
            "untrained": self.untrained,
            "thresholds": {k: {"value": v, "meaning": THRESHOLD_TEXT[k]} for k, v in self.thresholds.items()},
            "notes": self.notes,
            "groups": [g.as_dict() for g in self.groups],
            "findings": [f.as_dict() for f in self.findings],
            "layers": [s.as_dict() for s in self.layers],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The diagnosis without pictures, as JSON (no NaN/Infinity: they become null)."""
        return json.dumps(json_safe(self.as_dict()), indent=indent, allow_nan=False)


def json_safe(obj: Any) -> Any:
    """NaN and ±Inf → None, recursively (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def finite_or_none(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


def finite_list(vs: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in vs]
