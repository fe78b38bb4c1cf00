"""Embedding (t-SNE of layer codes) against brute force and independent oracles.

Codes equal a plain forward with a hook on a tiny hand-set net (a module's output and a block's
activation map), on a seeded sample of the data; labels and indices follow the sample; PCA equals
scikit-learn's on the same codes, the map equals openTSNE run by hand on that PCA; the same seed
gives the same map; new codes land in the same map; grid snapping equals brute force over every
assignment on tiny cases; the scikit-learn fallback; one clear error per bad input; the model left
as it was, also when the forward raises.
"""

from __future__ import annotations

import copy
import itertools
import sys

import numpy as np
import openTSNE
import pytest
import torch
from _helpers import assert_same_model
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from convscope.analysis import embedding
from convscope.analysis.embedding import Embedding, snap_to_grid
from convscope.capture import UnknownLayerError, count_hooks


class Tiny(nn.Module):
    """conv(1→2, 3×3, hand-set) → ReLU → pool 2 → flatten → fc(8→3): codes are easy to recompute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]],  # Laplacian
                                                  [[[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]]]))  # Sobel x  # fmt: skip
            self.conv1.bias.copy_(torch.tensor([0.1, -0.2]))
            self.fc.weight.copy_(torch.arange(24.0).reshape(3, 8) / 24 - 0.5)
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.relu1(self.conv1(x)))))  # (B, 1, 4, 4) → (B, 3)


def data(n: int = 120, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n 1×4×4 images in three clusters (label = cluster), plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.rand(3, 1, 4, 4, generator=g) * 2
    return centres[y] + 0.1 * torch.randn(n, 1, 4, 4, generator=g), y


def brute(model: nn.Module, module: nn.Module, X: Tensor) -> Tensor:
    """The module's output for every image, flattened: one plain forward with one hook."""
    out: list[Tensor] = []
    h = module.register_forward_hook(lambda m, a, o: out.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(X)
    finally:
        h.remove()
    return out[0].flatten(1)  # (N, D)


@pytest.mark.parametrize(("layer", "module"), [("flatten", "flatten"), ("conv1", "relu1")])
def test_codes_equal_a_hooked_forward_on_the_sample(layer: str, module: str) -> None:
    X, y = data()
    model = Tiny()
    plain = copy.deepcopy(model)
    emb = Embedding(model, layer=layer).run(TensorDataset(X, y), n=50, seed=3, batch_size=16, perplexity=5)
    expect_idx = np.sort(np.random.default_rng(3).choice(120, size=50, replace=False))
    assert emb.indices.tolist() == expect_idx.tolist()
    assert emb.labels.tolist() == y[expect_idx].tolist()
    want = brute(model, dict(model.named_modules())[module], X)[expect_idx].half()  # (50, D)
    assert emb.codes.dtype == torch.float16 and torch.equal(emb.codes, want)
    assert emb.codes_bytes == 50 * want.shape[1] * 2
    assert emb.xy.shape == (50, 2) and np.isfinite(emb.xy).all()
    assert set(emb.seconds) == {"codes", "pca", "tsne"}
    assert emb.method == f"openTSNE {openTSNE.__version__}"
    assert_same_model(model, plain)


def test_pca_and_tsne_equal_the_libraries_run_by_hand() -> None:
    X, y = data()
    emb = Embedding(Tiny(), layer="flatten").run((X, y), n=120, seed=1, perplexity=10)
    assert emb.indices.tolist() == list(range(120))  # n = the whole data: no sampling
    codes = emb.codes.float().numpy()
    low = PCA(n_components=8, random_state=1).fit_transform(codes)  # D = 8 < 50
    np.testing.assert_allclose(emb.pca(emb.codes), low, atol=1e-5)
    by_hand = openTSNE.TSNE(perplexity=10, random_state=1, n_jobs=1).fit(
        low.astype(np.float32)
    )
    np.testing.assert_allclose(emb.xy, np.asarray(by_hand), atol=1e-3)


def test_same_seed_same_map_and_another_seed_another() -> None:
    X, y = data()
    a = Embedding(Tiny(), layer="flatten").run((X, y), n=90, seed=7, perplexity=8)
    b = Embedding(Tiny(), layer="flatten").run((X, y), n=90, seed=7, perplexity=8)
    c = Embedding(Tiny(), layer="flatten").run((X, y), n=90, seed=8, perplexity=8)
    assert np.array_equal(a.xy, b.xy) and np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_the_three_clusters_stay_apart_and_new_codes_land_in_the_same_map() -> None:
    X, y = data()
    emb = Embedding(Tiny(), layer="flatten").run((X, y), n=120, seed=0, perplexity=10)
    # each point's nearest neighbour in the map has its label (the clusters are well apart)
    d = ((emb.xy[:, None] - emb.xy[None]) ** 2).sum(-1) + np.diag(np.full(120, np.inf))
    assert (emb.labels[d.argmin(1)] == emb.labels).all()
    # fresh images of the same clusters land next to their cluster
    X2, y2 = data(30, seed=0)  # same centres (same generator seed), the noise drawn again below
    X2 = X2 + 0.05 * torch.randn(X2.shape, generator=torch.Generator().manual_seed(9))
    new = emb.transform(_codes(X2))
    assert new.shape == (30, 2)
    nearest = ((new[:, None] - emb.xy[None]) ** 2).sum(-1).argmin(1)
    assert (emb.labels[nearest] == y2.numpy()).all()


def _codes(X: Tensor) -> Tensor:
    m = Tiny()
    return brute(m, m.flatten, X)


def brute_grid(xy: np.ndarray, side: int) -> tuple[float, dict[int, int]]:
    """The least total squared distance over every one-to-one cell↔point matching, by enumeration."""
    unit = (xy - xy.min(0)) / np.ptp(xy, axis=0)
    cells = [((c + 0.5) / side, 1 - (r + 0.5) / side) for r in range(side) for c in range(side)]
    best, arg = np.inf, {}
    k = min(len(cells), len(xy))
    if len(cells) <= len(xy):  # every cell filled: choose an ordered subset of points
        for pts in itertools.permutations(range(len(xy)), k):
            cost = sum(((np.array(cells[i]) - unit[p]) ** 2).sum() for i, p in enumerate(pts))
            if cost < best - 1e-12:
                best, arg = cost, dict(enumerate(pts))
    else:  # every point placed: choose an ordered subset of cells
        for cs in itertools.permutations(range(len(cells)), k):
            cost = sum(((np.array(cells[c]) - unit[p]) ** 2).sum() for p, c in enumerate(cs))
            if cost < best - 1e-12:
                best, arg = cost, {c: p for p, c in enumerate(cs)}
    return best, arg


@pytest.mark.parametrize(("n", "side", "seed"), [(4, 2, 0), (6, 2, 1), (3, 2, 2), (5, 3, 3)])
def test_grid_equals_brute_force_over_assignments(n: int, side: int, seed: int) -> None:
    xy = np.random.default_rng(seed).normal(size=(n, 2))
    got = snap_to_grid(xy, side)
    _, want = brute_grid(xy, side)
    expect = np.full(side * side, -1)
    for cell, point in want.items():
        expect[cell] = point
    assert got.tolist() == expect.reshape(side, side).tolist()


def test_grid_places_corners_where_they_are() -> None:
    xy = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])  # top-left, top-right, bottom-left, bottom-right
    assert snap_to_grid(xy, 2).tolist() == [[0, 1], [2, 3]]


def test_sklearn_fallback_when_opentsne_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # import openTSNE → ImportError
    X, y = data(40)
    with threadpool_limits(1):  # scikit-learn's OpenMP threads against torch's: 10× slower on a busy machine
        emb = Embedding(Tiny(), layer="flatten").run((X, y), n=40, seed=0, perplexity=5)
    assert emb.method.startswith("sklearn TSNE") and emb.xy.shape == (40, 2)
    with pytest.raises(ValueError, match="placing new points into a map needs openTSNE"):
        emb.transform(emb.codes)


def test_a_sequential_dataloader_gives_its_first_n() -> None:
    X, y = data()
    emb = Embedding(Tiny(), layer="flatten").run(DataLoader(TensorDataset(X, y), batch_size=32), n=70, perplexity=5)
    assert emb.indices.tolist() == list(range(70))
    assert torch.equal(emb.codes, _codes(X)[:70].half())


def test_bad_input_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = data(40)
    m = Tiny()
    with pytest.raises(UnknownLayerError, match=r"unknown layer\(s\) \['fc7'\]; valid: conv1, relu1, fc; or any module name \(its output: pool, flatten\)"):
        Embedding(m)
    with pytest.raises(TypeError, match=r"Embedding needs an nn\.Module, got str"):
        Embedding("zoo:convnetjs-cifar", layer="fc")  # type: ignore[arg-type]
    e = Embedding(m, layer="flatten")
    with pytest.raises(ValueError, match=r"n must be an int in 1\.\.40 \(the data holds 40 images\), got 41"):
        e.run((X, y), n=41)
    with pytest.raises(ValueError, match=r"n must be an int in 1\.\.40 \(the data holds 40 images\), got 0"):
        e.run((X, y), n=0)
    with pytest.raises(ValueError, match=r"30 images are too few for perplexity 30: t-SNE needs at least 91 \(3 × perplexity \+ 1\)"):
        e.run((X, y), n=30)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        e.run((X, y), n=40, seed=-1, perplexity=5)
    with pytest.raises(ValueError, match="perplexity must be a number from 1 to 1000"):
        e.run((X, y), n=40, perplexity=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        e.run((X, y), n=40, batch_size=0, perplexity=5)
    emb = e.run((X, y), n=40, perplexity=5)
    with pytest.raises(ValueError, match="side must be an int from 1 to 1000"):
        emb.grid(0)
    with monkeypatch.context() as mp:
        mp.setattr(embedding, "MAX_COST", 100)
        with pytest.raises(ValueError, match=r"a 2×2 grid over 40 images needs a 4 × 40 cost matrix, more than 100 entries"):
            emb.grid(2)
    with pytest.raises(ValueError, match=r"codes must be a tensor shaped \(m, 8\), got \(3, 5\)"):
        emb.transform(torch.zeros(3, 5))
    big = Tiny()
    with torch.no_grad():
        big.conv1.bias.fill_(1e5)  # beyond float16
    with pytest.raises(ValueError, match="beyond float16's range"):
        Embedding(big, layer="flatten").run((X, y), n=40, perplexity=5)
    assert count_hooks(m) == 0 and count_hooks(big) == 0


class Failing(Tiny):
    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return super().forward(x)


@pytest.mark.parametrize("fail_at", [1, 2, 3])  # the probed first batch, the checking second, a hooked third
@pytest.mark.parametrize("layer", ["flatten", "conv1"])
def test_no_hook_left_and_modes_restored_when_the_forward_raises(fail_at: int, layer: str) -> None:
    X, y = data()
    model = Failing(fail_at)
    model.train()
    plain = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="boom"):
        Embedding(model, layer=layer).run((X, y), n=120, batch_size=16, perplexity=5)
    assert_same_model(model, plain)
    assert all(m.training for m in model.modules())
