"""Jupyter display of Trace, Block and the analysis results (render/notebook.py and the report modules).

Hand-set nets with known maps: each picture in a Block's HTML is decoded back and compared,
pixel for pixel, with the renderer drawing the independently computed tensor (plain conv2d /
autograd), so a panel that shows the wrong tensor fails.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import convscope as cs
from convscope import render
from convscope.analysis.attribution.base import AttributionMap
from convscope.analysis.attribution.projection import Projection
from convscope.analysis.diagnose import Diagnosis
from convscope.analysis.embedding import EmbeddingResult
from convscope.analysis.occlusion import OcclusionResult
from convscope.analysis.occlusion.occlusion import Sensitivity
from convscope.capture import Block, Trace
from convscope.render.embedding_report import colour
from convscope.render.notebook import block_picture, embedding_picture
from convscope.render.occlusion_report import heat, labels_picture

IMG = re.compile(r"""<img src=["']data:image/png;base64,([A-Za-z0-9+/=]+)["']""")
W1 = torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])  # (2, 1, 2, 2)
B1 = torch.tensor([0.0, -1.0])


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 2)
        self.relu1 = nn.ReLU()
        self.fc = nn.Linear(2 * 3 * 3, 2)
        with torch.no_grad():
            self.conv1.weight.copy_(W1)
            self.conv1.bias.copy_(B1)
            self.fc.weight.copy_(torch.arange(36, dtype=torch.float32).reshape(2, 18) / 36 - 0.5)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu1(self.conv1(x)).flatten(1))


X = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / 8 - 1  # (1, 1, 4, 4), signed


def pictures(html: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(m))).convert("RGB")) for m in IMG.findall(html)]


def probed(backward: bool = True) -> Trace:
    model = Tiny()
    with cs.Probe(model) as probe:
        out = model(X)
        if backward:
            out[0, 1].backward()
    return probe.trace


def test_block_shows_x_w_z_a_and_grads_with_the_vocabulary_labels() -> None:
    block = probed()["conv1"]
    html = block._repr_html_()
    assert html is not None
    labels = re.findall(r"<figcaption[^>]*><b>(.*?)</b> <code>\.(\w+)</code>", html)
    assert labels == [
        ("x", "x"), ("W", "weight"), ("z", "z"), ("a = f(z)", "a"),
        ("dL/dW", "grad_weight"), ("dL/dz", "grad_z"), ("dL/da", "grad_a"),
    ]  # fmt: skip
    assert "activation map = feature map" in html and "conv1 → relu1" in html
    assert "parameters 2 × 1 × 2 × 2 + 2 = 10" in html

    # the oracle: the same tensors computed without convscope
    x = X.clone().requires_grad_(True)
    w, b = W1.clone().requires_grad_(True), B1.clone()
    z = F.conv2d(x, w, b)  # (1, 2, 3, 3)
    z.retain_grad()
    a = F.relu(z)
    a.retain_grad()
    Tiny().fc(a.flatten(1))[0, 1].backward()
    assert w.grad is not None and z.grad is not None and a.grad is not None
    expected = [
        render.grid(X, sample=0, signed=True),
        render.filters(W1, signed=True),
        render.grid(z.detach(), sample=0, signed=True),
        render.grid(a.detach(), sample=0, signed=False),
        render.filters(w.grad, signed=True),
        render.grid(z.grad, sample=0, signed=True),
        render.grid(a.grad, sample=0, signed=True),
    ]
    got = pictures(html)
    assert len(got) == 7
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e.array)


def test_block_without_backward_says_which_gradients_are_missing() -> None:
    html = probed(backward=False)["conv1"]._repr_html_()
    assert html is not None
    assert len(pictures(html)) == 4  # x, W, z, a
    assert "not recorded: dL/dW, dL/dz, dL/da (run the backward inside the probe" in html


def test_a_nan_map_is_named_not_drawn() -> None:
    block = Block(name="conv1", kind="conv", z=torch.tensor([[[[float("nan")]]]]), a=torch.zeros(1, 1, 1, 1))
    html = block._repr_html_()
    assert html is not None
    assert "z (NaN/Inf, not drawn)" in html
    assert len(pictures(html)) == 1  # a only


def test_trace_shows_its_block_table_in_call_order() -> None:
    trace = probed()
    html = trace._repr_html_()
    assert html is not None
    names = re.findall(r"<tr><td[^>]*><code>([^<]+)</code></td>", html)
    assert names == list(trace) == ["conv1", "fc"]
    assert "2 × 1 × 2 × 2 + 2 = 10" in html and "2 × 18 + 2 = 38" in html
    assert "2 × 3 × 3" in html  # conv1's output
    # one thumbnail of a per block, example 0: conv1's maps as grid draws them
    thumbs = pictures(html)
    assert len(thumbs) == 2
    a = F.relu(F.conv2d(X, W1, B1))
    np.testing.assert_array_equal(thumbs[0], render.grid(a, labels=False, cell=14, cols=16).array)


def test_every_result_class_has_its_display_registered_by_render() -> None:
    for cls in (Block, Trace, Diagnosis, Sensitivity, EmbeddingResult, AttributionMap, Projection, OcclusionResult):
        assert cls.display is not None, cls.__name__  # type: ignore[attr-defined]


def test_diagnosis_displays_its_findings_with_pictures() -> None:
    model = Tiny()
    with torch.no_grad():
        model.conv1.bias.copy_(torch.tensor([0.0, -100.0]))  # filter 1 never fires: dead
    xs = torch.rand(8, 1, 4, 4)
    d = cs.diagnose(model, xs, gradients=False)
    html = d._repr_html_()
    assert html is not None and html.startswith("<div>")
    assert "<html" not in html and "<style" not in html  # a fragment: nothing leaks into the notebook
    assert [f.filters for f in d.of_kind("dead")] == [(1,)]
    assert "dead filters" in html and "8 inputs" in html
    assert len(pictures(html)) >= 1


def test_occlusion_grid_displays_its_panels() -> None:
    model = Tiny()
    occ = cs.analysis.Occlusion(model)
    g = occ.sensitivity(X, window=2, stride=2, baseline=0.0, target=1, layer="conv1", method="full")
    html = g._repr_html_()
    assert html is not None
    got = pictures(html)
    assert len(got) == 3  # (b) feature, (d) probability, (e) label
    assert g.feature is not None
    f = g.feature.double().numpy()
    np.testing.assert_array_equal(got[0], heat(f, float(f.min()), float(f.max()), 200).array)
    np.testing.assert_array_equal(got[1], heat(g.probability.double().numpy(), 0.0, 1.0, 200).array)
    np.testing.assert_array_equal(got[2], labels_picture(g.label.long().numpy(), 200).array)
    assert "2 × 2 positions" in html


def test_embedding_result_draws_one_dot_per_image_in_its_class_colour() -> None:
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    r = EmbeddingResult(
        layer="fc", xy=xy, labels=np.array([0, 1, -1]), indices=np.arange(3), codes=torch.zeros(3, 2, dtype=torch.float16),
        codes_bytes=12, classes=["cat", "dog"], method="test", perplexity=1.0, seed=0,
    )  # fmt: skip
    pic = embedding_picture(r, side=40).array
    # min-max scaled to [2, 37]; y up: (0, 0) bottom-left, (1, 1) top-right, (0, 1) top-left
    assert tuple(pic[40 - 1 - 2, 2]) == colour(0)
    assert tuple(pic[40 - 1 - 37, 37]) == colour(1)
    assert tuple(pic[40 - 1 - 37, 2]) == colour(-1)
    assert int((pic != 255).any(axis=2).sum()) == 3 * 9  # three 3×3 dots, nothing else
    html = r._repr_html_()
    assert html is not None and "cat" in html and "dog" in html and "no label" in html
    assert len(pictures(html)) == 1


@pytest.mark.parametrize("field", ["weight", "grad_weight"])
def test_linear_weights_are_drawn_as_one_signed_map(field: str) -> None:
    fc = probed()["fc"]
    pic = block_picture(fc, field)
    t = getattr(fc, field)
    assert pic is not None and t is not None
    np.testing.assert_array_equal(pic.array, render.grid(t, signed=True).array)
