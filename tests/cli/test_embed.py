"""`convscope embed`: t-SNE of layer codes with thumbnails — the job, the report, the CLI.

The job's codes equal a hooked plain forward of the trained zoo net on the normalised images it
names; thumbnails are those images; the neighbour agreement equals a brute-force count; the
default layer is the one before the classifier on every zoo net; the pictures hold each image's
framed thumbnail where the map puts it; the CLI runs with only --out and says bad input in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.capture import count_hooks
from convscope.data import open_dataset
from convscope.embed import Embed, before_classifier, embed, neighbour_agreement
from convscope.inspect import open_model
from convscope.models import ZOO
from convscope.render.embedding_report import (
    FRAME,
    THUMB,
    _framed,
    colour,
    grid_picture,
    write_embedding_report,
)
from convscope.render.embedding_report import scatter as scatter_picture


@pytest.fixture(scope="module")
def result() -> Embed:
    return embed(n=150, perplexity=10, seed=2)


def test_codes_thumbnails_and_grid_equal_brute_force(result: Embed) -> None:
    loaded = open_model("zoo:convnetjs-cifar")
    ds = open_dataset("builtin:photo-crops:val", size=(32, 32), channels=3)
    r = result.result
    assert r.layer == "flatten" and result.data == "builtin:photo-crops:val"
    assert r.indices.tolist() == np.sort(np.random.default_rng(2).choice(len(ds), 150, replace=False)).tolist()  # type: ignore[arg-type]
    X = torch.stack([ds[int(i)][0] for i in r.indices])  # (150, 3, 32, 32)
    mean = torch.tensor(loaded.mean).view(1, -1, 1, 1)
    std = torch.tensor(loaded.std).view(1, -1, 1, 1)
    got: list[torch.Tensor] = []
    h = loaded.model.flatten.register_forward_hook(lambda m, a, o: got.append(o))
    try:
        with torch.no_grad():
            loaded.model((X - mean) / std)
    finally:
        h.remove()
    assert torch.equal(r.codes, got[0].half()) and r.codes.shape == (150, 320)
    assert r.labels.tolist() == [ds[int(i)][1] for i in r.indices]
    assert r.classes == list(ds.classes)  # type: ignore[attr-defined]
    assert np.array_equal(result.thumbs, np.rint(X.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))
    assert result.side == 12 and np.array_equal(result.cells, r.grid(12))
    assert count_hooks(loaded.model) == 0


def test_neighbour_agreement_equals_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    xy, labels = rng.normal(size=(60, 2)), rng.integers(0, 3, 60)
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1, kind="stable")[:, :10]
    agree, chance = neighbour_agreement(xy, labels)
    assert agree == pytest.approx((labels[near] == labels[:, None]).mean(), abs=1e-12)
    assert chance == pytest.approx(((np.bincount(labels) / 60) ** 2).sum(), abs=1e-12)
    assert neighbour_agreement(xy, np.full(60, -1)) == (None, None)


@pytest.mark.parametrize(
    ("name", "expected"), [("convnetjs-cifar", "flatten"), ("zfnet-small", "fc7"), ("tiny-vgg", "flatten"), ("resnet18-shaped", "avgpool")]
)
def test_default_layer_is_the_one_before_the_classifier(name: str, expected: str) -> None:
    entry = ZOO[name]
    model = entry.factory()
    model.train()
    assert before_classifier(model, torch.rand(2, *entry.input_shape)) == expected
    assert count_hooks(model) == 0 and all(m.training for m in model.modules())


def test_report_pictures_and_json(result: Embed, tmp_path: Path) -> None:
    path = write_embedding_report(result, tmp_path / "e")
    doc = path.read_text()
    r = result.result
    assert 'http-equiv="Content-Security-Policy"' in doc and "http://" not in doc.split("</head>")[1]
    assert doc.count("<img ") == 2 and "chelsea (" in doc and "% share its class (chance: " in doc
    summary = json.loads((tmp_path / "e" / "embedding.json").read_text())
    assert summary["layer"] == "flatten" and summary["n"] == 150 and summary["dim"] == 320
    assert summary["codes_bytes"] == 150 * 320 * 2
    assert summary["labels"] == r.labels.tolist() and summary["indices"] == r.indices.tolist()
    np.testing.assert_allclose(summary["xy"], r.xy, atol=1e-4)
    assert summary["grid"]["cells"] == result.cells.tolist()
    assert summary["pictures"] == {"scatter": "png/scatter.png", "grid": "png/grid.png"}
    grid = np.asarray(Image.open(tmp_path / "e" / "png" / "grid.png").convert("RGB"))
    pic = grid_picture(result.cells, result.thumbs, r.labels)
    assert np.array_equal(grid, pic.array)
    for (row, col), box in zip(np.ndindex(12, 12), pic.cells, strict=True):  # every cell: its image, framed in its class colour
        i = int(result.cells[row, col])
        tile = grid[box.y : box.y + box.h, box.x : box.x + box.w]
        assert np.array_equal(tile[FRAME:-FRAME, FRAME:-FRAME], result.thumbs[i])
        assert (tile[0, :] == colour(int(r.labels[i]))).all()
    scatter = np.asarray(Image.open(tmp_path / "e" / "png" / "scatter.png").convert("RGB"))
    assert scatter.shape == (1400, 1400, 3)
    pic = scatter_picture(r.xy, result.thumbs, r.labels)
    assert np.array_equal(scatter, pic.array)
    last = int(np.random.default_rng(0).permutation(150)[-1])  # drawn last: nothing covers it
    box = pic.cells[last]
    tile = scatter[box.y : box.y + box.h, box.x : box.x + box.w]
    assert np.array_equal(tile, _framed(result.thumbs[last], THUMB, colour(int(r.labels[last]))))
    top = int(np.argmax(r.xy[:, 1]))  # the map's extremes touch the picture's edges (y up)
    assert pic.cells[top].y == 0 and pic.cells[int(np.argmin(r.xy[:, 0]))].x == 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convscope", "embed", *args], capture_output=True, text=True, timeout=300)


def test_cli_with_only_out(tmp_path: Path) -> None:
    done = _cli("--out", str(tmp_path / "e"))
    assert done.returncode == 0, done.stderr
    assert "2000 codes of layer flatten (320 numbers each, 1.2 MiB as float16)" in done.stdout
    summary = json.loads((tmp_path / "e" / "embedding.json").read_text())
    assert summary["n"] == 2000 and summary["grid"]["side"] == 40 and summary["model"] == "zoo:convnetjs-cifar"
    assert summary["neighbour_agreement"] > 0.5  # the trained net's codes cluster by photo


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "nope"], "error: unknown layer(s) ['nope']; valid: conv1, relu1, conv2, relu2, conv3, relu3, fc;"),
        (["--n", "5001"], "error: n must be an int in 1..2000 (the data holds 2000 images), got 5001"),
        (["--n", "20"], "error: 20 images are too few for perplexity 30: t-SNE needs at least 91"),
        (["--data", "nowhere/"], "error: nowhere/: no such file or directory"),
    ],
)
def test_cli_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = _cli("--out", str(tmp_path / "e"), *args)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message) and len(done.stderr.strip().splitlines()) == 1, done.stderr
