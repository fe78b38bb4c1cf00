"""Occlusion (ZF Fig. 7, Captum's Occlusion) and exact incremental inference (Krypton).

Oracles: Captum's `Occlusion.attribute` with the same arguments (1e-4); a brute-force loop of
one full forward per occluder position (sensitivity); batched full forwards of the pasted
inputs (the incremental engine, on every zoo net and on user-shaped nets); a hand-set net
whose occlusion map is known in closed form. Every call leaves no hook and the model as it was,
also when the forward raises.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from torch import Tensor, nn

from convscope.analysis.attribution import AttributionError, Deconvnet
from convscope.analysis.occlusion import (
    Incremental,
    IncrementalUnsupported,
    Occlusion,
    approx_error,
)
from convscope.analysis.occlusion.region import Value, paste
from convscope.capture import count_hooks
from convscope.models import resolve_model

captum_attr = pytest.importorskip("captum.attr")

# zoo nets at the sizes the tests use (resnet18-shaped at 32² to stay fast; its maps still shrink to 1²)
SHAPES = {
    "convnetjs-cifar": (3, 32, 32),
    "convnetjs-mnist": (1, 24, 24),
    "tiny-vgg": (3, 64, 64),
    "zfnet-small": (3, 112, 112),
    "resnet18-shaped": (3, 32, 32),
}


def zoo(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model, _ = resolve_model(f"zoo:{name}")
    for m in model.modules():  # BatchNorm with non-trivial statistics, so eval mode matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.3)
            m.bias.data.normal_(0, 0.3)
    return model.eval()


def window_for(shape: tuple[int, int, int]) -> tuple[int, int]:
    """(window, stride): about 7×7 positions (the test time is the oracle's forwards)."""
    return {112: (16, 16), 64: (16, 8)}.get(shape[1], (8, 4))


# ---- the engine against batched full forwards -------------------------------------------------
@pytest.mark.parametrize("name", list(SHAPES))
def test_incremental_equals_batched_full_forwards_on_every_zoo_net(name: str) -> None:
    model = zoo(name)
    plain = copy.deepcopy(model)
    c, h, w = SHAPES[name]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, c, h, w, generator=g)
    engine = Incremental(model, x)
    k = window_for(SHAPES[name])[0]
    rows = torch.tensor([0, 3, h - k, 5, h // 2, 1])  # corners, edges, odd offsets
    cols = torch.tensor([0, w - k, 7, w - k, w // 2 - 1, 0])
    patch = torch.rand(6, c, k, k, generator=g)
    out, _ = engine.run(patch, rows, cols)
    with torch.no_grad():
        ref = model(paste(x, Value("patch", patch, rows, cols)))  # (6, 10)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert_same_model(model, plain)


class _UserNet(nn.Module):
    """Functional and in-place ReLUs, strided/dilated/grouped convs, avg-pool, a residual add,
    global pooling and flatten → linear: what a user's net may hold."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.c = nn.Conv2d(8, 8, (3, 1), padding=(1, 0))
        self.relu = nn.ReLU(inplace=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.a(x))  # (B, 8, 20, 20)
        y = self.relu(self.bn(self.b(y)))  # (B, 8, 10, 10)
        y = self.pool(y)  # (B, 8, 5, 5)
        y = self.relu(self.c(y) + y)  # (B, 8, 5, 5)
        return self.fc(torch.flatten(self.gap(y), 1))  # (B, 4)


def test_incremental_on_a_user_net_names_where_it_used_full_tensors() -> None:
    torch.manual_seed(0)
    model = _UserNet().eval()
    x = torch.rand(1, 3, 20, 20)
    engine = Incremental(model, x)
    rows, cols = torch.tensor([0, 12, 5]), torch.tensor([12, 0, 6])
    patch = torch.rand(3, 3, 4, 4)
    out, _ = engine.run(patch, rows, cols)
    with torch.no_grad():
        ref = model(paste(x, Value("patch", patch, rows, cols)))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert engine.fallback_nodes == ["gap"]  # global pooling: from there on, full tensors


def test_a_module_swapped_between_calls_is_traced_again() -> None:
    model = zoo("convnetjs-cifar")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    occ = Occlusion(model)
    first = occ.sensitivity(x, window=8, stride=8, target=1)
    model.conv2 = nn.Conv2d(16, 20, 3, padding=1)  # the cached trace still calls the old conv2
    second = occ.sensitivity(x, window=8, stride=8, target=1)
    assert second.meta["method"] == "incremental"
    _, prob, _ = _brute(model, x, 8, 8, torch.full((3,), 0.5), 1, None, None)
    torch.testing.assert_close(second.probability, prob, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(first.probability, second.probability)


def test_untraceable_model_falls_back_to_full_forwards_and_says_so() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(2 * 8 * 8, 3)

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(x)
            if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                y = y.relu()
            return self.fc(y.flatten(1))

    torch.manual_seed(0)
    model = Dynamic().eval()
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(IncrementalUnsupported, match=r"torch\.fx cannot trace"):
        Incremental(model, x)
    got = Occlusion(model).sensitivity(x, window=4, stride=2, baseline=0.0, target=1)
    assert got.meta["method"] == "full" and "torch.fx cannot trace" in got.meta["incremental"]
    torch.testing.assert_close(got.probability, _brute(model, x, 4, 2, torch.zeros(1), 1, None, None)[1])
    with pytest.raises(AttributionError, match="incremental occlusion does not apply"):
        Occlusion(model).sensitivity(x, window=4, stride=2, method="incremental")


# ---- attribute: Captum -------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SHAPES))
def test_attribute_equals_captum_on_zoo_nets(name: str) -> None:
    model = zoo(name)
    plain = copy.deepcopy(model)
    c, h, w = SHAPES[name]
    b = 2 if name == "convnetjs-cifar" else 1  # a batch is explained example by example
    x = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(2))
    k, s = window_for(SHAPES[name])
    kwargs = {"sliding_window_shapes": (c, k, k), "strides": (c, s, s), "baselines": 0.5, "target": 3}
    ref = captum_attr.Occlusion(model).attribute(x, **kwargs)  # type: ignore[arg-type]
    for method in ("incremental", "full"):
        got = Occlusion(model).attribute(x, method=method, **kwargs)  # type: ignore[arg-type]
        assert got.shape == x.shape
        torch.testing.assert_close(Tensor(got), ref, rtol=0, atol=1e-4)
        assert got.meta["method"] == method
    assert_same_model(model, plain)


def test_attribute_cut_windows_and_channel_windows_equal_captum() -> None:
    model = zoo("convnetjs-cifar")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    kwargs = {"sliding_window_shapes": (2, 9, 7), "strides": (1, 8, 6), "baselines": -0.2, "target": 1}
    ref = captum_attr.Occlusion(model).attribute(x, **kwargs)  # type: ignore[arg-type]
    got = Occlusion(model).attribute(x, **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(Tensor(got), ref, rtol=0, atol=1e-4)


def test_attribute_on_a_hand_set_net_is_the_window_sum() -> None:
    """logit 0 = the sum of the pixels: occluding a 2×2 window with 0 drops it by the window's
    sum, and each pixel lies in exactly one window (stride 2)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[0] = 1.0
        net[1].bias.zero_()
    x = torch.arange(16.0).view(1, 1, 4, 4)
    got = Occlusion(net).attribute(x, sliding_window_shapes=(1, 2, 2), strides=(1, 2, 2), baselines=0.0, target=0)
    want = torch.tensor([[1 + 0 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]], dtype=torch.float)
    assert torch.equal(Tensor(got)[0, 0], want.repeat_interleave(2, 0).repeat_interleave(2, 1))


# ---- sensitivity: brute force ------------------------------------------------------------------
def _brute(
    model: nn.Module, x: Tensor, window: int, stride: int, grey: Tensor, target: int, layer: str | None, channel: int | None
) -> tuple[Tensor | None, Tensor, Tensor]:
    """One full forward per position: (feature, probability, label) grids."""
    _, _, h, w = x.shape
    rows = [i * stride for i in range(math.ceil((h - window) / stride) + 1)]  # the last one cut at the border
    cols = [j * stride for j in range(math.ceil((w - window) / stride) + 1)]
    feats, probs, labels = [], [], []
    occ = Occlusion(model)
    for r in rows:
        for c in cols:
            xo = x.clone()
            xo[:, :, r : r + window, c : c + window] = grey.view(1, -1, 1, 1)
            with torch.no_grad():
                p = torch.softmax(model(xo), dim=1)[0]
            probs.append(p[target])
            labels.append(p.argmax())
            if layer is not None:
                a, _ = occ.layer_output(xo, layer)
                feats.append(a[0, channel].sum())
    shape = (len(rows), len(cols))
    f = torch.stack(feats).view(shape) if feats else None
    return f, torch.stack(probs).view(shape), torch.stack(labels).view(shape)


@pytest.mark.parametrize(
    ("name", "layer", "window", "stride"),
    [
        ("zfnet-small", "conv5", 16, 16),
        ("tiny-vgg", "conv2_1", 16, 8),
        ("convnetjs-cifar", "conv2", 8, 4),
        ("resnet18-shaped", "layer1.1.relu#1", 8, 6),  # the shared ReLU's second call: the block's a
        ("resnet18-shaped", "layer3", 8, 6),  # a container: its output
    ],
)
def test_sensitivity_equals_a_brute_force_loop(name: str, layer: str, window: int, stride: int) -> None:
    model = zoo(name)
    plain = copy.deepcopy(model)
    c, h, w = SHAPES[name]
    x = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(4))
    got = Occlusion(model).sensitivity(x, window=window, stride=stride, target=2, layer=layer)
    assert got.meta["method"] == "incremental"
    maps, _ = Occlusion(model).layer_output(x, layer)
    flat = maps[0].reshape(maps.shape[1], -1)
    assert got.channel == int(flat.amax(dim=1).argmax())
    assert got.clean_feature == pytest.approx(float(flat[got.channel].sum()))
    feat, prob, label = _brute(model, x, window, stride, torch.full((c,), 0.5), 2, layer, got.channel)
    assert got.feature is not None and feat is not None
    assert got.probability.shape == prob.shape == (len(got.rows), len(got.cols))
    torch.testing.assert_close(got.feature, feat, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.probability, prob, rtol=1e-4, atol=1e-6)
    assert torch.equal(got.label, label)
    proj = Deconvnet(model).attribute(x, layer=layer, channel=got.channel, position="max")
    assert got.projection is not None and torch.equal(Tensor(got.projection), Tensor(proj))
    full = Occlusion(model).sensitivity(x, window=window, stride=stride, target=2, layer=layer, method="full")
    assert full.meta["method"] == "full"
    assert full.feature is not None
    torch.testing.assert_close(full.feature, feat, rtol=1e-4, atol=1e-4)
    assert_same_model(model, plain)


def test_approximate_mode_is_opt_in_says_so_and_its_error_is_measured() -> None:
    model = zoo("zfnet-small")
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(6))
    occ = Occlusion(model)
    exact = occ.sensitivity(x, window=16, stride=16, target=2, layer="conv5")
    assert exact.meta["method"] == "incremental"
    # τ close to 1 truncates nothing: every position the drill-down computed is exact
    whole = occ.sensitivity(x, window=16, stride=16, target=2, layer="conv5", approx=0.99)
    assert whole.meta["method"] == "approximate (tau=0.99)"
    m = whole.meta
    assert m["positions"] == 49 and m["coarse_positions"] == 16 and 0 <= m["fine_positions"] <= 33
    coarse = [0, 2, 4, 6]  # every other row and column of the 7 × 7 grid (6 is also the last)
    torch.testing.assert_close(whole.probability[coarse][:, coarse], exact.probability[coarse][:, coarse], rtol=1e-5, atol=1e-7)
    # a small τ drops part of each projective field: a different map, its error measured
    rough = occ.sensitivity(x, window=16, stride=16, target=2, layer="conv5", approx=0.2)
    err = approx_error(rough, exact)
    assert err["max_abs_probability"] == float((rough.probability - exact.probability).abs().max()) > 0
    assert 0.0 <= err["top10_iou"] <= 1.0 and 0.0 <= err["label_agreement"] <= 1.0
    assert occ.sensitivity(x, window=16, stride=16, target=2).meta["method"] == "incremental"  # not sticky
    for bad in (0.0, 1.0, -0.5, True):
        with pytest.raises(AttributionError, match=r"approx must be a fraction in \(0, 1\)"):
            occ.sensitivity(x, window=16, stride=16, approx=bad)  # type: ignore[arg-type]
    with pytest.raises(AttributionError, match="approx needs the incremental method"):
        occ.sensitivity(x, window=16, stride=16, approx=0.5, method="full")


def test_approx_error_by_hand() -> None:
    from convscope.analysis.occlusion import Sensitivity

    def grid(p: list[float], labels: list[int]) -> Sensitivity:
        return Sensitivity(
            feature=None, probability=torch.tensor(p).view(2, 5), label=torch.tensor(labels).view(2, 5),
            projection=None, rows=[0, 1], cols=[0, 1, 2, 3, 4], window=1, stride=1, baseline=torch.zeros(1),
            target=0, layer=None, channel=None, clean_probability=1.0, clean_feature=None,
        )  # fmt: skip

    exact = grid([0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.95, 0.85], [0] * 10)
    approx = grid([0.9, 0.2, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.95, 0.05], [0] * 9 + [1])
    # top 10% = the 1 lowest position: exact → index 1, approx → index 9: IoU 0; |Δp| max 0.8
    assert approx_error(approx, exact) == pytest.approx(
        {"max_abs_probability": 0.8, "top10_iou": 0.0, "label_agreement": 0.9}
    )


def test_grey_baseline_goes_through_the_normalisation() -> None:
    model = zoo("convnetjs-cifar")
    x = torch.rand(1, 3, 32, 32)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.5]
    got = Occlusion(model).sensitivity(x, window=8, stride=8, normalize=(mean, std), target=0)
    torch.testing.assert_close(got.baseline, torch.tensor([0.5, 0.0, -0.2]))
    _, prob, _ = _brute(model, x, 8, 8, got.baseline, 0, None, None)
    torch.testing.assert_close(got.probability, prob, rtol=1e-4, atol=1e-6)


# ---- housekeeping and errors ---------------------------------------------------------------
def test_no_hook_left_and_modes_restored_also_when_the_forward_raises() -> None:
    model = zoo("convnetjs-cifar").train()
    x = torch.rand(1, 3, 32, 32)
    calls = {"n": 0}

    def explode(m: nn.Module, args: object, out: Tensor) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")

    handle = model.fc.register_forward_hook(explode)
    before = count_hooks(model)
    for method in ("incremental", "full"):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="boom"):
            Occlusion(model).sensitivity(x, window=8, stride=4, layer="conv2", method=method, batch=8)
        assert count_hooks(model) == before and all(m.training for m in model.modules())
    handle.remove()
    assert count_hooks(model) == 0


def test_attribute_bad_windows_are_one_clear_error() -> None:
    model = zoo("convnetjs-cifar")
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(AttributionError, match=r"need 1 <= window <= size and 1 <= stride <= window"):
        Occlusion(model).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 8, 8))
    with pytest.raises(AttributionError, match=r"must be an int or \(channels, height, width\)"):
        Occlusion(model).attribute(x, sliding_window_shapes=(4, 4))  # type: ignore[arg-type]
    assert count_hooks(model) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 40}, "larger than the 32×32 image"),
        ({"stride": 0}, "stride must be a positive integer"),
        ({"baseline": "black"}, "baseline must be 'grey'"),
        ({"baseline": [0.1, 0.2]}, "one per input channel"),
        ({"method": "fast"}, "method must be one of"),
        ({"target": 10}, "out of range"),
        ({"layer": "conv9"}, "unknown layer 'conv9'"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs: dict[str, object], message: str) -> None:
    model = zoo("convnetjs-cifar")
    with pytest.raises(AttributionError, match=message):
        Occlusion(model).sensitivity(torch.rand(1, 3, 32, 32), **kwargs)  # type: ignore[arg-type]
    assert count_hooks(model) == 0


def test_drill_down_by_hand() -> None:
    """A 3 × 3 grid: the corners run first; the centre and edges are interpolated where the corners
    agree and computed where they do not."""
    from convscope.analysis.occlusion.drilldown import drill_down

    asked: list[list[int]] = []
    true = torch.tensor([[0.0, 1.0], [0.2, 1.0], [0.0, 1.0], [0.0, 1.0], [5.0, 5.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.002]])

    def run(ks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        asked.append(ks)
        return true[ks], true[ks, 0] * 10

    (logits, feats), counts = drill_down(run, 3, 3, target=1)
    assert asked == [[0, 2, 6, 8]]  # the corners agree on the label and within FLOOR on p: no fine pass
    assert counts == {"coarse_positions": 4, "fine_positions": 0}
    torch.testing.assert_close(logits[4], true[[0, 2, 6, 8]].mean(0))  # the centre: their mean
    torch.testing.assert_close(logits[1], (true[0] + true[2]) / 2)  # top edge: between its two corners (not 0.2)
    assert feats is not None and float(feats[1]) == 0.0 and float(feats[4]) == 0.0
    true[8] = torch.tensor([3.0, 0.0])  # one corner now predicts class 0: its neighbourhood is computed
    asked.clear()
    (logits, _), counts = drill_down(run, 3, 3, target=1)
    assert asked == [[0, 2, 6, 8], [4, 5, 7]]
    torch.testing.assert_close(logits[[4, 5, 7]], true[[4, 5, 7]])
    torch.testing.assert_close(logits[1], (true[0] + true[2]) / 2)
