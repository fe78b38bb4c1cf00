"""`convscope project`: the projections job, its report, the CLI, and the notebook display."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor

from convscope.analysis.attribution import Deconvnet, GradCAM, GuidedBackprop, Projection
from convscope.capture import capture, count_hooks
from convscope.inspect import open_image, open_model
from convscope.project import project
from convscope.render.projection_report import write_projection_report


@pytest.fixture(scope="module")
def result() -> Projection:
    return project(methods=["deconvnet", "guided", "gradcam"], top=4)


def test_defaults_are_the_built_in_net_photo_and_last_conv_layer(result: Projection) -> None:
    assert result.model == "zoo:convnetjs-cifar"
    assert result.image_name == "chelsea (held-out test cell)"
    assert result.layer == "conv3"
    assert result.layer_tensor == "a of block conv3 (after relu3)"
    assert result.classes[0].name == "chelsea" and result.classes[0].probability > 0.99


def test_units_are_the_strongest_maps_and_their_projections_equal_the_api(result: Projection) -> None:
    loaded = open_model("zoo:convnetjs-cifar")
    img, _ = open_image(None, 3)
    x, _ = loaded.to_input(img)
    trace, _ = capture(loaded.model, x)
    a = trace["conv3"].a[0]  # (20, 8, 8)
    peaks = a.reshape(20, -1).amax(dim=1)
    expected = peaks.argsort(descending=True, stable=True)[:4].tolist()
    assert [u.channel for u in result.units] == expected
    for u in result.units:
        assert u.value == pytest.approx(float(peaks[u.channel]))
        assert u.position is not None
        i, j = u.position
        assert float(a[u.channel, i, j]) == pytest.approx(u.value)
        direct = Deconvnet(loaded.model).attribute(x, layer="conv3", channel=u.channel, position="max")
        torch.testing.assert_close(u.projections["deconvnet"].as_subclass(Tensor), direct.as_subclass(Tensor))
        guided = GuidedBackprop(loaded.model).attribute(x, layer="relu3", channel=u.channel, position=(i, j))
        torch.testing.assert_close(u.projections["guided"].as_subclass(Tensor), guided.as_subclass(Tensor))
    top = result.classes[0]
    cam = GradCAM(loaded.model, layer="conv3").attribute(x, top.target)
    torch.testing.assert_close(top.maps["gradcam"].as_subclass(Tensor), cam.as_subclass(Tensor))
    assert count_hooks(loaded.model) == 0


def test_report_files(result: Projection, tmp_path: Path) -> None:
    html = write_projection_report(result, tmp_path / "p")
    doc = html.read_text()
    assert 'http-equiv="Content-Security-Policy"' in doc
    assert doc.count("<img ") == 1 + 4 * 4 + 3 * 3  # input; 4 units × (map, patch, 2 methods); 3 classes × 3
    summary = json.loads((tmp_path / "p" / "projections.json").read_text())
    assert summary["layer"] == "conv3"
    assert [u["channel"] for u in summary["units"]] == [u.channel for u in result.units]
    assert summary["rules"]["deconvnet"] == {"relu": "max(g,0)"}
    assert summary["rules"]["guided"] == {"relu": "[z>0]·max(g,0)"}
    for u in summary["units"]:
        for rel in u["projections"].values():
            with Image.open(tmp_path / "p" / rel) as im:
                assert max(im.size) >= 128  # the field's crop, scaled up by whole pixels
        y0, x0, y1, x1 = u["box"]
        assert (y1 - y0, x1 - x0) <= (32, 32) and y1 > y0 and x1 > x0


def test_notebook_display(result: Projection) -> None:
    page = result._repr_html_()
    assert page.count("<img ") == 1 + 4 * 4 + 3 * 3
    amap = result.units[0].projections["deconvnet"]
    png = amap._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<img src="data:image/png;base64,' in amap._repr_html_()
    assert type(amap * 2) is Tensor  # arithmetic gives plain tensors


def test_cli_with_only_out(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    r = subprocess.run(
        [sys.executable, "-m", "convscope", "project", "--top", "2", "--method", "deconvnet", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"report: {(out / 'index.html').resolve()}"
    summary = json.loads((out / "projections.json").read_text())
    assert len(summary["units"]) == 2 and summary["methods"] == ["deconvnet"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "nope"], "error: unknown layer 'nope'; valid: conv1, relu1, conv2, relu2, conv3, relu3, fc;"),
        (["--channel", "99"], "error: --channel 99 is out of range for layer 'conv3': 0..19"),
        (["--method", "foo"], "error: unknown method(s) ['foo']; choose from deconvnet, guided, saliency,"),
        (["--top", "0"], "error: --top must be an integer in 1..64; got 0"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "convscope", "project", *args, "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr
    assert not (tmp_path / "x").exists()
