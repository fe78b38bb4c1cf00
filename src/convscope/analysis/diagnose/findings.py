"""Findings and their advice: dead, mostly-dead, noisy, saturated filters, gradient health — https://cs231n.github.io/neural-networks-3/#ratio

Rules that turn per-layer numbers (LayerSummary) into Findings, each with a summary carrying its
numbers and advice no stronger than they are (CS231n, "Neural Networks 1 and 3"): a filter dead
on this data may fire on other data; a noisy first layer may be undertrained; an update/weight
ratio far from 1e-3 may mean a learning rate off for the layer.

    found = findings(layers, inputs=1000, data="builtin:digits", mostly_dead=0.99, noisy=0.8,
                     lr=0.01, lr_assumed=True)
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from convscope.analysis.gradient_health import (
    DEPTH_RATIO,
    SATURATED_FILTER,
    SATURATION_MARGIN,
    TYPICAL_UPDATE_RATIO,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    depth_flags,
)

from .result import KINDS, SEVERITIES, Finding, LayerSummary, finite_or_none

_RELU_FAMILY = frozenset({"ReLU", "relu", "ReLU6", "relu6", "Hardtanh", "hardtanh", "Threshold"})
_NOT_DATA = "(weights only: does not depend on the data)"


def findings(
    layers: list[LayerSummary],
    *,
    inputs: int,
    data: str,
    mostly_dead: float,
    noisy: float,
    lr: float,
    lr_assumed: bool,
) -> list[Finding]:
    """Every finding of these layers (in call order), most serious first, then by layer and kind."""
    out: list[Finding] = []
    scope = f"on this data ({inputs:,} inputs of {data})"
    first_conv = next((s for s in layers if s.roughness is not None), None)
    for s in layers:
        out += _activation_findings(s, mostly_dead, scope)
        if s is first_conv:
            out += _noisy_findings(s, noisy)
    out += _gradient_findings(layers, lr, lr_assumed, scope)
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


def _activation_findings(s: LayerSummary, mostly_dead: float, scope: str) -> list[Finding]:
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
                    f"zero on at least {mostly_dead:.0%} of the inputs, but not on all",
            advice="They rarely fire: they may detect something rare in this data, or be on their way to "
                   "dying (the causes of dead filters apply). Check on more varied data before changing anything.",
            evidence={"mostly_dead": k, "filters_in_layer": c, "inputs": n, "threshold": mostly_dead,
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
        ev: dict[str, Any] = {"grad_norm": finite_or_none(s.grad_norm), "weight_norm": finite_or_none(s.weight_norm),
                              "relative_grad": finite_or_none(rel), "grad_batches": s.grad_batches}  # fmt: skip
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
            ev.update({"compared_with": other.name, "other_relative_grad": finite_or_none(other.relative_grad),
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


