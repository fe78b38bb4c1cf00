"""Occlusion and embedding results draw themselves in a notebook (`_repr_html_`), also the bare
analysis results (Sensitivity, EmbeddingResult) once convscope is imported."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import torch
from PIL import Image
from torch import nn

import convscope  # noqa: F401  (imports convscope.render, which teaches the results to draw)
from convscope.analysis.embedding import Embedding
from convscope.analysis.occlusion import Occlusion


def _pngs(fragment: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(m))) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", fragment)]


def test_sensitivity_draws_its_maps() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    g = Occlusion(model).sensitivity(torch.rand(1, 3, 8, 8), window=4, stride=2, layer="1")
    html = g._repr_html_()
    assert html is not None and "9 positions of a 4px square, stride 2" in html
    assert "(b) total activation of map" in html and "(d) p(class" in html and "(e) most probable class" in html
    pics = _pngs(html)
    assert len(pics) == 3 and all(p.width >= 200 for p in pics)


def test_embedding_result_draws_its_map() -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 3, 8, 8)
    y = torch.arange(40) % 2
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 6), nn.ReLU(), nn.Linear(6, 2))
    res = Embedding(model, layer="2").run((x, y), n=40, seed=0, perplexity=5)
    html = res._repr_html_()
    assert html is not None and "2 codes of 40 images" in html
    (pic,) = _pngs(html)
    arr = np.asarray(pic.convert("RGB"))
    assert pic.size == (480, 480)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])  # classes 0 and 1
    assert (arr == blue).all(-1).any() and (arr == orange).all(-1).any()
    assert "class 0 (20)" in html and "class 1 (20)" in html
