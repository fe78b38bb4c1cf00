"""Captum as an independent oracle: its layer activations and layer gradients must equal ours."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerActivation, LayerGradientXActivation
from torch import nn

from convscope.capture import capture, count_hooks


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 5),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("target", [0, 3])
def test_activations_and_activation_gradients_equal_captum(target: int) -> None:
    torch.manual_seed(1)
    model = _net()
    x = torch.randn(2, 3, 16, 16)
    trace, _ = capture(model, x, target=target)
    for act_index, block in ((1, "0"), (5, "3")):
        layer = model[act_index]
        a_ref = LayerActivation(model, layer).attribute(x)
        g_ref = LayerGradientXActivation(model, layer, multiply_by_inputs=False).attribute(x, target=target)
        assert torch.allclose(trace[block].a, a_ref, atol=1e-6)
        assert torch.allclose(trace[block].grad_a, g_ref, atol=1e-6)
    # z of the BatchNorm block is the norm's output, i.e. Captum's activation of the norm layer
    assert torch.allclose(trace["3"].z, LayerActivation(model, model[4]).attribute(x), atol=1e-6)
    assert count_hooks(model) == 0
