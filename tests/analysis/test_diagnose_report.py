"""The diagnose HTML report and diagnosis.json: what they say, which filters they draw, and that the
page is self-contained; pictures decoded and checked for the dead filter's hatch."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convscope import diagnose
from convscope.render.colormap import MARKER
from convscope.render.diagnose_report import write_diagnosis_report


def _net() -> nn.Sequential:
    """conv 1→4 (3×3, weight = centre tap 1): filter 1 has bias -100 (dead), filter 3 is a
    checkerboard (rough); ReLU; pool; fc."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))  # fmt: skip
    checker = (torch.arange(3).view(3, 1) + torch.arange(3).view(1, 3)) % 2 * 2.0 - 1
    blob = torch.tensor([[0.5, 1.0, 0.5], [1.0, 1.0, 1.0], [0.5, 1.0, 0.5]])
    with torch.no_grad():
        net[0].weight.copy_(torch.stack([blob, blob, blob * 0.5, checker]).unsqueeze(1))
        net[0].bias.copy_(torch.tensor([0.0, -100.0, 0.1, 0.0]))
    return net


def _images(tmp: Path) -> list[tuple[str, Image.Image]]:
    html = (tmp / "index.html").read_text()
    found = []
    for alt, data in re.findall(r"<img src='data:image/png;base64,([^']+)' alt='([^']*)'>", html):
        found.append((data, Image.open(io.BytesIO(base64.b64decode(alt)))))
    return found


def test_report_shows_findings_with_flagged_and_healthy_filters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _net()
    d = diagnose(net, (torch.rand(12, 1, 6, 6), torch.tensor([0, 1] * 6)), data_name="twelve images")
    path = write_diagnosis_report(d, tmp_path, model="hand-built")
    assert path == tmp_path / "index.html"
    assert json.loads((tmp_path / "diagnosis.json").read_text()) == json.loads(d.to_json())
    html = path.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html and "<link" not in html
    assert "convscope diagnose — hand-built" in html and "twelve images" in html and "12 inputs" in html
    assert "lr 0.01 (assumed)" in html
    dead = d.of_kind("dead")[0]
    assert dead.filters == (1,) and dead.summary.replace("'", "&#x27;") in html
    assert "dead filters" in html and "noisy first-layer filters" in html
    assert "healthy filters of the same layer, for comparison" in html
    for name in d.thresholds:  # every threshold stated with its meaning
        assert f"<code>{name}</code>" in html
    # dead finding: flagged row (W, a top, mean a) + healthy row (W, a top, mean a); noisy: the same;
    # first-layer overview: W and mean a
    pictures = _images(tmp_path)
    assert len(pictures) == 6 + 6 + 2
    assert all(im.format == "PNG" and im.width > 30 for _, im in pictures)
    marker = np.array(MARKER, dtype=np.uint8)

    def hatched(im: Image.Image) -> bool:
        return bool((np.asarray(im.convert("RGB")) == marker).all(axis=-1).any())

    flagged_top, healthy_top = pictures[1][1], pictures[4][1]
    assert hatched(flagged_top) and not hatched(healthy_top)  # the dead map is drawn flat, hatched


def test_report_without_findings_and_with_nan(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(1.0)
    d = diagnose(net, torch.rand(3, 1, 4, 4))
    assert d.findings == []
    html = write_diagnosis_report(d, tmp_path / "ok").read_text()
    assert "Nothing to report on this data" in html
    with torch.no_grad():
        net[0].bias[0] = math.nan
    d = diagnose(net, torch.rand(3, 1, 4, 4))
    html = write_diagnosis_report(d, tmp_path / "nan").read_text()
    assert "NaN / Inf activations" in html and "contains NaN/Inf — not drawn" in html
    assert json.loads((tmp_path / "nan" / "diagnosis.json").read_text())["findings"][0]["kind"] == "nonfinite"


def test_gradient_section_and_bad_arguments(tmp_path: Path) -> None:
    torch.manual_seed(0)
    d = diagnose(_net(), (torch.rand(8, 1, 6, 6), torch.tensor([0, 1] * 4)), lr=0.05)
    html = write_diagnosis_report(d, tmp_path / "g").read_text()
    assert "aria-label='update to weight ratio per layer, log scale'" in html
    assert "lr = 0.05:" in html and "assumed" not in html.split("id='gradients'")[1].split("</section>")[0]
    with pytest.raises(TypeError, match="needs a Diagnosis"):
        write_diagnosis_report("not one", tmp_path)  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        write_diagnosis_report(d, tmp_path / "file")
