"""Findings at random initialisation: repeats grouped per kind, severity and layer kind (exact
summaries), every layer still in the data; a default initialisation is detected and said in the
Python result, the JSON and the HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from convscope import diagnose
from convscope.analysis.diagnose import Finding, LayerSummary, default_init, group_findings
from convscope.capture import count_hooks
from convscope.render.diagnose_report import write_diagnosis_report

SCOPE = "on this data (9 inputs of x)"


def _f(kind: str, layer: str, severity: str = "high", filters: tuple[int, ...] = (), **ev: object) -> Finding:
    return Finding(kind=kind, layer=layer, filters=filters, severity=severity, summary=f"{kind} at {layer}",
                   advice=f"advice for {kind}", evidence=dict(ev))  # fmt: skip


def test_repeats_become_one_row_per_kind_severity_and_layer_kind() -> None:
    kinds = {"a": "conv", "b": "conv", "c": "conv", "d": "conv", "fc": "linear"}
    found = [
        _f("exploding_gradient", "a", factor=2e3),
        _f("exploding_gradient", "b", factor=1e4),
        _f("exploding_gradient", "fc", factor=5e3),
        _f("exploding_gradient", "c", factor=3e3),
        _f("exploding_gradient", "d", factor=4e3),
        _f("dead", "a", "medium", (1, 2), filters_in_layer=8),
        _f("dead", "b", "medium", (0,), filters_in_layer=8),
        _f("exploding_gradient", "c"),  # a NaN gradient: no factor
        _f("exploding_gradient", "d"),
        _f("update_ratio", "a", "low", update_ratio=2e-5, lr=0.01, lr_assumed=True, typical=1e-3),
        _f("update_ratio", "b", "low", update_ratio=1e-5, lr=0.01, lr_assumed=True, typical=1e-3),
    ]
    groups = group_findings(found, kinds, scope=SCOPE)
    assert [(g.kind, g.severity, g.layer_kind, g.layers) for g in groups] == [
        ("exploding_gradient", "high", "conv", ("a", "b", "c", "d")),
        ("exploding_gradient", "high", "linear", ("fc",)),
        ("dead", "medium", "conv", ("a", "b")),
        ("exploding_gradient", "high", "conv", ("c", "d")),
        ("update_ratio", "low", "conv", ("a", "b")),
    ]
    assert [g.summary for g in groups] == [
        "gradients may be exploding in 4 conv layers on this data (9 inputs of x): their ‖dL/dW‖/‖W‖ is "
        "2.0e+03–1.0e+04× that of a later layer: a, b, c, … (+1)",
        "exploding_gradient at fc",  # a group of one keeps its finding's summary
        "dead filters in 2 conv layers on this data (9 inputs of x): 3 of 16 filters in all: a, b",
        "the weight gradient is NaN or Inf in 2 conv layers on this data (9 inputs of x): c, d",
        "with lr 0.01 (assumed), one SGD step would change the weights of 2 conv layers by only "
        "1.0e-05–2.0e-05 of their size on this data (9 inputs of x); around 0.001 is usual: a, b",
    ]
    assert groups[0].advice == "advice for exploding_gradient"
    assert [f for g in groups for f in g.findings] == [found[i] for i in (0, 1, 3, 4, 2, 5, 6, 7, 8, 9, 10)]


def deep_net(blocks: int) -> nn.Module:
    """`blocks` × [conv3×3 → ReLU] at PyTorch's default initialisation, then mean-pool and fc 8→10."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers += [nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_a_50_block_net_at_init_reads_as_a_handful_of_rows(tmp_path: Path) -> None:
    net = deep_net(50)
    x, y = torch.rand(20, 3, 6, 6, generator=torch.Generator().manual_seed(1)), torch.arange(20) % 10
    d = diagnose(net, (x, y), data_name="x")
    assert count_hooks(net) == 0
    assert d.untrained == (
        "all 50 conv/linear layers with ≥ 100 weights look like PyTorch's default random initialisation "
        "(uniform in ±1/√fan_in, std within 15% of 1/√(3·fan_in)): the model looks untrained"
    )
    assert d.gradients.startswith("cross-entropy against the labels")
    assert len(d.findings) >= 50 and len(d.groups) <= 6  # a flood, told in a handful of rows
    assert sorted(map(id, (f for g in d.groups for f in g.findings))) == sorted(map(id, d.findings))
    for g in d.groups:
        assert g.layers == tuple(dict.fromkeys(f.layer for f in g.findings))
        assert {f.kind for f in g.findings} == {g.kind} and {f.severity for f in g.findings} == {g.severity}
    vanishing = d.of_kind("vanishing_gradient")
    (row,) = [g for g in d.groups if g.kind == "vanishing_gradient"]
    assert len(vanishing) > 3 and row.summary.startswith(f"gradients may be vanishing in {len(vanishing)} conv layers")
    assert row.summary.endswith(f": {', '.join(row.layers[:3])}, … (+{len(row.layers) - 3})")
    # the data keeps every finding and every grouped layer
    doc = json.loads(d.to_json())
    assert doc["untrained"] == d.untrained and len(doc["findings"]) == len(d.findings)
    assert {name for g in doc["groups"] for name in g["layers"]} == {f.layer for f in d.findings}
    # the report: one box per group, every member layer listed in it, the untrained banner on top
    html = write_diagnosis_report(d, tmp_path, model="deep").read_text()
    assert html.count("<div class='finding ") == len(d.groups)
    assert "The weights look untrained:" in html and html.index("id='untrained'") < html.index("id='findings'")
    for g in d.groups:
        if len(g.layers) > 1:
            assert f"<summary>all {len(g.layers)} layers</summary>" in html
            assert all(f"<li><code>{name}</code>: " in html for name in g.layers)


def _summary(weight: torch.Tensor, layer_type: str) -> LayerSummary:
    return LayerSummary(name="l", kind="conv", activation=None, layer_type=layer_type, filters=int(weight.shape[0]),
                        inputs=0, zero_inputs=[], nonfinite_inputs=[], zero_fraction=[], max_activation=[],
                        dead=[], mostly_dead=[], weight=weight)  # fmt: skip


def test_default_initialisation_is_detected_and_training_is_not_mistaken_for_it() -> None:
    torch.manual_seed(0)
    conv, tconv, fc = nn.Conv2d(3, 16, 3), nn.ConvTranspose2d(16, 4, 3), nn.Linear(64, 10)
    fresh = [
        _summary(conv.weight.detach(), "Conv2d"),
        _summary(tconv.weight.detach().transpose(0, 1), "ConvTranspose2d"),  # stored (C_out, C_in, k, k)
        _summary(fc.weight.detach(), "Linear"),
    ]
    assert default_init(fresh) == (
        "all 3 conv/linear layers with ≥ 100 weights look like PyTorch's default random initialisation "
        "(uniform in ±1/√fan_in, std within 15% of 1/√(3·fan_in)): the model looks untrained"
    )
    assert default_init(fresh[:1]) is not None and default_init(fresh[:1]).startswith("the conv/linear layer with")  # type: ignore[union-attr]
    # a transposed conv's fan_in is C_out·k·k: read as an ordinary conv its weights would be too wide
    assert default_init([_summary(tconv.weight.detach().transpose(0, 1), "Conv2d")]) is None
    # trained weights leave the bound ±1/√fan_in; a constant or hand-set layer is no initialisation either
    grown = conv.weight.detach() * 1.3
    assert default_init([_summary(grown, "Conv2d"), *fresh[1:]]) is None
    assert default_init([_summary(torch.full((16, 3, 3, 3), 0.01), "Conv2d")]) is None
    assert default_init([_summary(torch.ones(2, 1, 1, 1), "Conv2d")]) is None  # too small to judge: no verdict
    assert default_init([]) is None


def test_a_caller_who_knows_the_weights_are_untrained_says_why() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    d = diagnose(net, torch.rand(3, 1, 2, 2), untrained="no weights were loaded")
    assert d.untrained == "no weights were loaded"
    assert diagnose(net, torch.rand(3, 1, 2, 2)).untrained is None  # too small to judge by the weights


def test_a_diagnosis_without_groups_is_grouped_by_the_report(tmp_path: Path) -> None:
    d = diagnose(deep_net(12), (torch.rand(10, 3, 6, 6), torch.arange(10)), data_name="x")
    assert len(d.groups) < len(d.findings)
    expected = [g.summary for g in d.groups]
    d.groups = []  # e.g. a Diagnosis put together by hand
    html = write_diagnosis_report(d, tmp_path, model="deep").read_text()
    assert html.count("<div class='finding ") == len(expected)
    assert f"{len(d.findings)} finding(s) in {len(expected)} row(s)" in html
