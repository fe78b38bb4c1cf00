"""`convscope occlusion`: the job (ZF Fig. 7 on the built-in net and photo), its report, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convscope.analysis.occlusion import Occlusion, OcclusionResult
from convscope.capture import count_hooks
from convscope.inspect import open_image, open_model
from convscope.occlusion import default_window, occlusion
from convscope.render.occlusion_report import write_occlusion_report


@pytest.fixture(scope="module")
def result() -> OcclusionResult:
    return occlusion()


def test_defaults_are_the_built_in_net_photo_and_last_conv_layer(result: OcclusionResult) -> None:
    g = result.grid
    assert result.model == "zoo:convnetjs-cifar"
    assert result.image_name == "chelsea (held-out test cell)"
    assert (g.layer, g.window, g.stride) == ("conv3", 5, 2)
    assert default_window(112) == (16, 8) and default_window(224) == (32, 16)
    assert len(g.rows) == len(g.cols) == 15  # ceil((32 - 5) / 2) + 1
    assert g.target == int(result.clean_probs.argmax()) and result.classes[g.target] == "chelsea"
    assert g.meta["method"] == "incremental"


def test_the_maps_equal_full_forwards_with_the_grey_of_the_models_normalisation(result: OcclusionResult) -> None:
    loaded = open_model("zoo:convnetjs-cifar")
    img, _ = open_image(None, 3)
    x, _ = loaded.to_input(img)
    g = result.grid
    if loaded.mean is not None and loaded.std is not None:
        grey = (0.5 - torch.tensor(loaded.mean)) / torch.tensor(loaded.std)
    else:
        grey = torch.full((3,), 0.5)
    torch.testing.assert_close(g.baseline, grey)
    full = Occlusion(loaded.model).sensitivity(
        x, window=5, stride=2, baseline=grey, layer="conv3", method="full"
    )
    assert full.channel == g.channel and full.target == g.target
    assert full.feature is not None and g.feature is not None
    torch.testing.assert_close(g.feature, full.feature, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g.probability, full.probability, rtol=1e-4, atol=1e-6)
    assert torch.equal(g.label, full.label)
    assert count_hooks(loaded.model) == 0


def test_report_files(result: OcclusionResult, tmp_path: Path) -> None:
    path = write_occlusion_report(result, tmp_path / "o")
    doc = path.read_text()
    for panel in ("(a) the input", "(b) total activation of map", "(c) deconvnet projection",
                  "(d) p(chelsea) per occluder position", "(e) most probable label"):  # fmt: skip
        assert panel in doc
    assert "Content-Security-Policy" in doc and "<script" not in doc and "http://" not in doc
    assert "chelsea (the class in (d))" in doc
    pngs = sorted(p.name for p in (tmp_path / "o" / "png").iterdir())
    assert pngs == sorted(
        ["a-input.png", "b-feature.png", "c-projection.png", "d-probability.png", "d-overlay.png",
         "e-labels.png", "scale-b.png", "scale-d.png"]
    )  # fmt: skip
    summary = json.loads((tmp_path / "o" / "occlusion.json").read_text())
    g = result.grid
    assert summary["probability"] == g.probability.tolist()
    assert summary["label"] == g.label.tolist()
    assert g.feature is not None and summary["feature"] == g.feature.tolist()
    assert (summary["rows"], summary["channel"], summary["target_name"]) == (g.rows, g.channel, "chelsea")
    assert summary["meta"]["method"] == "incremental"


def test_notebook_display(result: OcclusionResult) -> None:
    fragment = result._repr_html_()
    assert fragment is not None and "(e) most probable label" in fragment and "data:image/png;base64," in fragment


def test_cli_on_the_trained_zfnet_small(tmp_path: Path) -> None:
    out = tmp_path / "occ"
    r = subprocess.run(
        [sys.executable, "-m", "convscope", "occlusion", "--model", "zoo:zfnet-small", "--image", "chelsea:test",
         "--layer", "conv5", "--window", "16", "--stride", "16", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("49 positions of a 16px square, incremental; p(chelsea) ")
    assert lines[-1] == f"report: {(out / 'index.html').resolve()}"
    summary = json.loads((out / "occlusion.json").read_text())
    assert len(summary["probability"]) == 7 and summary["layer"] == "conv5"


def test_job_approx_measures_its_error_against_exact(tmp_path: Path) -> None:
    r = occlusion(approx=0.3)
    g = r.grid
    assert g.meta["method"] == "approximate (tau=0.3)"
    err = g.meta["approx_error"]
    exact = occlusion().grid
    assert err["max_abs_probability"] == pytest.approx(float((g.probability - exact.probability).abs().max()), abs=1e-6)
    doc = write_occlusion_report(r, tmp_path / "a").read_text()
    assert "APPROXIMATE: against the exact maps, max |Δp| = " in doc


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "0"], "error: --window must be an integer >= 1; got 0"),
        (["--layer", "nope"], "error: unknown layer 'nope'; valid: conv1, relu1, conv2, relu2, conv3, relu3, fc;"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "convscope", "occlusion", *args, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().startswith(message) and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
