"""`convscope units`: top-k patches with their projections (ZF Fig. 2), the report, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from convscope.analysis.attribution import Deconvnet
from convscope.analysis.units import TopPatches
from convscope.capture import count_hooks
from convscope.data import open_dataset
from convscope.inspect import open_model
from convscope.render.units_report import write_units_report
from convscope.units import Units, units


@pytest.fixture(scope="module")
def result() -> Units:
    return units(layers=["conv1", "conv3"], limit=160, maps=3, k=4, stimulus_steps=0)


def test_hits_patches_and_projections_equal_the_api(result: Units) -> None:
    loaded = open_model("zoo:convnetjs-cifar")
    ds = open_dataset("builtin:photo-crops:val", size=(32, 32), channels=3)
    ds = torch.utils.data.Subset(ds, range(160))
    mean = torch.tensor(loaded.mean).view(1, -1, 1, 1)
    std = torch.tensor(loaded.std).view(1, -1, 1, 1)
    direct = TopPatches(loaded.model, layers=["conv1", "conv3"], k=4).run(ds, transform=lambda x: (x - mean) / std)
    assert result.inputs == 160 and list(result.layers) == ["conv1", "conv3"]
    for layer, shown in result.layers.items():
        hits = direct[layer]
        tops = hits.values[:, 0]
        assert [u.channel for u in shown] == tops.argsort(descending=True, stable=True)[:3].tolist()
        for u in shown:
            expected = hits[u.channel]
            assert u.values == [h.value for h in expected] and u.indices == [h.index for h in expected]
            for hit, patch, proj in zip(expected, u.patches, u.projections, strict=True):
                x = ds[hit.index][0]
                y0, x0, y1, x1 = hit.box
                assert torch.equal(patch, x[:, y0:y1, x0:x1])
                full = Deconvnet(loaded.model).attribute(((x[None] - mean) / std), layer=layer, channel=u.channel, position=hit.position)
                torch.testing.assert_close(proj, full.as_subclass(Tensor)[0, :, y0:y1, x0:x1])
    assert result.fields["conv1"]["size"] == [5, 5] and result.fields["conv3"]["size"] == [32, 32]
    assert count_hooks(loaded.model) == 0


def test_report_and_json(result: Units, tmp_path: Path) -> None:
    html = write_units_report(result, tmp_path / "u")
    doc = html.read_text()
    assert 'http-equiv="Content-Security-Policy"' in doc
    assert doc.count("<img ") == 2 * 3 * 2  # 2 layers × 3 maps × (patches, projections)
    summary = json.loads((tmp_path / "u" / "units.json").read_text())
    assert summary["inputs"] == 160 and summary["k"] == 4
    first = summary["layers"]["conv1"][0]
    assert [h["index"] for h in first["hits"]] == result.layers["conv1"][0].indices
    assert (tmp_path / "u" / first["pictures"]["patches"]).is_file()
    assert first["pictures"]["stimulus"] is None
    assert "<img " in result._repr_html_()


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "units"
    r = subprocess.run(
        [sys.executable, "-m", "convscope", "units", "--limit", "96", "--maps", "2", "--stimulus-steps", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "units.json").read_text())
    assert list(summary["layers"]) == ["conv3"]  # the last conv layer by default
    assert all(m["pictures"]["stimulus"] for m in summary["layers"]["conv3"])
    bad = subprocess.run(
        [sys.executable, "-m", "convscope", "units", "--layers", "nope", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown layer(s) ['nope']; valid: conv1,")
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_results_display_themselves_in_a_notebook() -> None:
    from convscope.analysis.units.optimize import Optimize
    from convscope.models import load_model

    model, _, _ = load_model("zoo:convnetjs-cifar")
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = TopPatches(model, layers=["conv1"], k=2).run(x)
    page = result._repr_html_()
    top = result["conv1"][0]
    assert "conv1: 16 maps, field 5×5 px" in page
    assert f"<tr><td>0</td><td>{top[0].value:.3g}, {top[1].value:.3g}</td><td>{top[0].index}, {top[1].index}</td></tr>" in page
    png = Optimize(model, layer="conv2", channel=1).run(steps=2, size=32, seed=0)._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
