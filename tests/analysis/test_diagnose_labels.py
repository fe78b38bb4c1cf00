"""diagnose on a model whose head does not match the labels: gradient health is skipped with one
line saying why (dead/noisy filters still counted exactly), and runs when the labels fit — its
numbers then equal plain autograd's. Also the LabelFit rules one by one, and no hook left."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from torch import nn
from torch.utils.data import DataLoader, Dataset

from convscope import diagnose
from convscope.analysis.diagnose import LabelFit
from convscope.capture import count_hooks

ANYWAY = " (gradients=True / --gradients measures anyway)"


class Head(nn.Module):
    """conv 1→2 (1×1, weight 1; filter 1 has bias -100: dead on images in [0, 1]), ReLU,
    mean-pool, fc 2→k with hand-set weights."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, k)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.copy_(torch.tensor([0.0, -100.0]))
            self.fc.weight.copy_(torch.linspace(-1, 1, 2 * k).view(k, 2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))  # (B, k)


class Named(Dataset[tuple[torch.Tensor, int]]):
    """(x, label) pairs that name their classes, like an image folder."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: tuple[str, ...]) -> None:
        self.x, self.y, self.classes = x, y, classes

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(20, 1, 2, 2, generator=torch.Generator().manual_seed(0))  # (20, 1, 2, 2) in [0, 1)
    return x, torch.arange(20) % 10  # labels 0..9


def test_a_1000_output_head_on_10_label_data_skips_gradient_health_with_one_line() -> None:
    model = Head(1000)
    plain = copy.deepcopy(model)
    x, y = data()
    d = diagnose(model, (x, y), batch_size=5, grad_batches=None)
    assert d.gradients == (
        "not measured: the labels seen span 0…9 (10 classes) but the model has 1000 outputs and neither "
        "names its classes, so the labels may not mean the model's classes" + ANYWAY
    )
    assert "\n" not in d.gradients
    # every gradient batch ran before the span was known: all dropped, no gradient finding
    assert [(s.grad_norm, s.grad_batches, s.update_ratio) for s in d.layers] == [(None, 0, None)] * 2
    assert [f for f in d.findings if f.kind in ("exploding_gradient", "vanishing_gradient", "update_ratio")] == []
    # dead filters are still counted, exactly
    conv = d.layer("conv")
    assert conv.dead == [1] and conv.zero_inputs[1] == 20 and conv.inputs == 20
    assert [f.layer for f in d.of_kind("dead")] == ["conv"]
    assert_same_model(model, plain)
    assert count_hooks(model) == 0 and all(p.grad is None for p in model.parameters())


def test_matching_head_runs_gradient_health_with_autograds_numbers() -> None:
    model = Head(10)
    x, y = data()
    d = diagnose(model, (x, y), batch_size=10, grad_batches=None, lr=0.1)  # batch 1 on the tap's path
    assert d.gradients.startswith("cross-entropy against the labels on 2 batch(es) (every batch) (20 inputs")
    norms = []
    for xb, yb in zip(x.split(10), y.split(10), strict=True):  # the oracle: plain autograd per batch
        oracle = copy.deepcopy(model)
        F.cross_entropy(oracle(xb), yb).backward()
        assert oracle.fc.weight.grad is not None
        norms.append(float(oracle.fc.weight.grad.norm()))
    fc = d.layer("fc")
    assert (fc.grad_batches, fc.grad_norm) == (2, pytest.approx(sum(norms) / 2, rel=1e-6))
    assert fc.update_ratio == pytest.approx(0.1 * (sum(norms) / 2) / float(model.fc.weight.detach().norm()), rel=1e-6)
    assert d.untrained is None  # hand-set weights, layers too small to judge


def test_named_classes_against_the_head() -> None:
    x, y = data()
    ten = tuple(f"c{i}" for i in range(10))
    # the data names 10 classes, the model has 1000 outputs and names none: skipped on the first batch
    d = diagnose(Head(1000), Named(x, y, ten), batch_size=5)
    assert d.gradients == (
        "not measured: the data has 10 classes but the model 1000 outputs and no class names, so its "
        "labels may not mean the model's classes" + ANYWAY
    )
    # the same through a DataLoader; and with 10 outputs it runs
    d = diagnose(Head(1000), DataLoader(Named(x, y, ten), batch_size=5))
    assert d.gradients.startswith("not measured: the data has 10 classes but the model 1000 outputs")
    assert diagnose(Head(10), Named(x, y, ten), batch_size=5).gradients.startswith("cross-entropy")
    # the model names its classes (checkpoint metadata) and the data others: skipped before any batch
    d = diagnose(Head(10), Named(x, y, ten), batch_size=5, classes=[f"k{i}" for i in range(10)])
    assert d.gradients == (
        "not measured: the data's classes (c0, c1, c2, c3, … 10 in all) are not the model's "
        "(k0, k1, k2, k3, … 10 in all), so its labels mean nothing to the loss" + ANYWAY
    )
    assert d.layer("conv").dead == [1]
    assert diagnose(Head(10), Named(x, y, ten), batch_size=5, classes=ten).gradients.startswith("cross-entropy")


def test_labels_out_of_range_later_in_the_stream_drop_what_was_measured() -> None:
    model = Head(2)
    x = torch.rand(8, 1, 2, 2)
    y = torch.tensor([0, 1, 0, 1, 0, 5, 1, 0])  # the second batch of 4 has label 5
    d = diagnose(model, (x, y), batch_size=4, grad_batches=None)
    assert d.gradients == "not measured: labels run from 0 to 5 but the model has 2 outputs" + ANYWAY
    assert all(s.grad_norm is None and s.grad_batches == 0 for s in d.layers)
    assert count_hooks(model) == 0
    # asked for: the one-line error of the loss, as before
    with pytest.raises(ValueError, match="labels of a batch run from 0 to 5 but the model has 2 outputs"):
        diagnose(model, (x, y), batch_size=4, gradients=True)
    assert count_hooks(model) == 0


def test_forced_gradients_or_own_loss_measure_anyway() -> None:
    x, y = data()
    d = diagnose(Head(1000), (x, y), batch_size=20, gradients=True)
    assert d.gradients.endswith(
        "; measured as asked although the labels seen span 0…9 (10 classes) but the model has 1000 outputs "
        "and neither names its classes, so the labels may not mean the model's classes"
    )
    assert d.layer("fc").grad_batches == 1
    own = diagnose(Head(1000), (x, y), batch_size=20, loss_fn=lambda logits, t: logits[:, 0].mean())
    assert own.gradients.startswith("the given loss_fn on 1 batch(es)") and own.layer("fc").grad_batches == 1


def test_a_non_logit_output_skips_gradient_health() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())  # (B, 2, H, W): not (batch, classes)
    x, y = torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 0, 1])
    d = diagnose(net, (x, y))
    assert d.gradients == "not measured: the model's output (4, 2, 3, 3) is not (batch, classes) logits" + ANYWAY


def test_label_fit_rules() -> None:
    fit = LabelFit(model_classes=None, data_classes=None)
    assert fit.final() is None  # nothing seen yet
    assert fit.see(torch.tensor([0, 2]), outputs=3) is None
    assert fit.final() is None  # labels span 0…2: 3 classes for 3 outputs
    assert fit.see(torch.tensor([-1]), outputs=3) == "labels run from -1 to 2 but the model has 3 outputs"
    assert fit.final() == "labels run from -1 to 2 but the model has 3 outputs"
    short = LabelFit(model_classes=None, data_classes=None)
    assert short.see(torch.tensor([0.5]), outputs=3) is None and short.final() is None  # float targets: a loss_fn's
    assert short.see(torch.tensor([1, 0]), outputs=3) is None  # in range; the span is only known at the end
    assert short.final() == (
        "the labels seen span 0…1 (2 classes) but the model has 3 outputs and neither names its classes, "
        "so the labels may not mean the model's classes"
    )
    named = LabelFit(model_classes=("a", "b", "c"), data_classes=None)
    assert named.see(torch.tensor([0]), outputs=3) is None and named.final() is None  # the model names them
    assert LabelFit(model_classes=("a",), data_classes=("b",)).upfront() == (
        "the data's classes (b) are not the model's (a), so its labels mean nothing to the loss"
    )
    assert LabelFit(model_classes=None, data_classes=("b",)).upfront() is None  # needs the output count
