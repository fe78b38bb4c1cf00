"""Repeated findings told once: one row per kind, severity and layer kind — https://cs231n.github.io/neural-networks-3/#ratio

A randomly initialised 50-block net gives a finding per layer ("gradients may be exploding"
at 37 conv layers, an update/weight ratio off at 40 more): listed one by one they bury the rest.
`group_findings` merges findings of one kind and severity in layers of one kind (conv, linear,
activation) into a FindingGroup whose summary gives the count, the range of the numbers and the
first layers by name ("gradients may be exploding in 37 conv layers ...: layer1.0.conv1, … (+34)");
every layer stays in `FindingGroup.layers`, every finding in `Diagnosis.findings`.

    groups = group_findings(diag.findings, {s.name: s.kind for s in diag.layers}, scope="on this data")
"""

from __future__ import annotations

import math

from .result import Finding, FindingGroup

NAMED = 3  # a group's summary names this many layers, then "… (+N)"
_KIND_WORDS = {
    "nonfinite": "NaN or Inf activations",
    "dead": "dead filters",
    "mostly_dead": "mostly-dead filters",
    "noisy": "noisy filters",
    "saturated": "saturated filters",
}


def group_findings(findings: list[Finding], layer_kinds: dict[str, str], *, scope: str) -> list[FindingGroup]:
    """Findings (in order) merged by (kind, variant, severity, layer kind); a group sits where its
    first member was. layer_kinds: block name → "conv" | "linear" | "activation"; scope: what the
    numbers hold on, e.g. "on this data (300 inputs of builtin:photo-crops)"."""
    keyed: dict[tuple[str, str, str, str], list[Finding]] = {}
    for f in findings:
        key = (f.kind, _variant(f), f.severity, layer_kinds.get(f.layer, "other"))
        keyed.setdefault(key, []).append(f)  # dicts keep first-insertion order
    return [_group(members, key[3], scope) for key, members in keyed.items()]


def _variant(f: Finding) -> str:
    """Findings of one kind that read differently: a NaN gradient vs a ratio between layers."""
    if f.kind == "exploding_gradient" and "factor" not in f.evidence:
        return "nonfinite"
    return ""


def _group(members: list[Finding], layer_kind: str, scope: str) -> FindingGroup:
    first = members[0]
    layers = tuple(dict.fromkeys(f.layer for f in members))
    summary = first.summary if len(members) == 1 else _summary(members, layers, layer_kind, scope)
    return FindingGroup(
        kind=first.kind, severity=first.severity, layer_kind=layer_kind, layers=layers,
        summary=summary, advice=first.advice, findings=tuple(members),
    )  # fmt: skip


def _summary(members: list[Finding], layers: tuple[str, ...], layer_kind: str, scope: str) -> str:
    first = members[0]
    n = len(layers)
    where = f"{n} {layer_kind} layers"
    names = ", ".join(layers[:NAMED]) + (f", … (+{n - NAMED})" if n > NAMED else "")
    if first.kind == "exploding_gradient" and _variant(first) == "nonfinite":
        return f"the weight gradient is NaN or Inf in {where} {scope}: {names}"
    if first.kind in ("exploding_gradient", "vanishing_gradient"):
        way = first.kind.removesuffix("_gradient")
        lo, hi = _span(members, "factor")
        return (
            f"gradients may be {way} in {where} {scope}: their ‖dL/dW‖/‖W‖ is {lo:.1e}–{hi:.1e}× "
            f"that of a later layer: {names}"
        )
    if first.kind == "update_ratio":
        lo, hi = _span(members, "update_ratio")
        lr = "lr {:g}".format(first.evidence.get("lr", math.nan)) + (
            " (assumed)" if first.evidence.get("lr_assumed") else ""
        )
        only = "only " if first.severity == "low" else ""
        typical = first.evidence.get("typical", math.nan)
        return (
            f"with {lr}, one SGD step would change the weights of {where} by {only}{lo:.1e}–{hi:.1e} "
            f"of their size {scope}; around {typical:g} is usual: {names}"
        )
    flagged = sum(len(f.filters) for f in members)
    total = sum(int(f.evidence.get("filters_in_layer", 0)) for f in members)
    of = f": {flagged} of {total} filters in all" if total else ""
    return f"{_KIND_WORDS.get(first.kind, first.kind)} in {where} {scope}{of}: {names}"


def _span(members: list[Finding], key: str) -> tuple[float, float]:
    vals = [float(v) for f in members if isinstance(v := f.evidence.get(key), int | float)]
    return (min(vals), max(vals)) if vals else (math.nan, math.nan)

