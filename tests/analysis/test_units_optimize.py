"""The optimal stimulus (analysis/units/optimize.py, param.py) against oracles.

numpy's FFT for the Fourier image, numpy's covariance for the colour matrix, the Gaussian
formula for the blur, torch.rot90 for the rotation, Adam's first step worked out by hand,
tiny nets whose optimum is known, and on the trained zoo net: the optimised image beats every
built-in photo crop on its unit, and its reported activation equals a plain forward.

    .venv/bin/python -m pytest tests/analysis/test_units_optimize.py -q
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import one_thread
from torch import Tensor, nn

from convscope.analysis.units.optimize import Optimize, OptimizeConfig, OptimizeError
from convscope.analysis.units.param import (
    IMAGENET_COLOR_SQRT,
    FourierImage,
    color_matrix,
    color_sqrt,
    gaussian_blur,
    robust_view,
    scale_rotate,
)
from convscope.capture import count_hooks
from convscope.data.builtin import photo_crops
from convscope.models import load_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


PLAIN = OptimizeConfig(robust=False, decay=0.0, blur_every=0, sd=0.0, lr=0.05)  # no regulariser at all


# ---- the image side ----------------------------------------------------------------------------
def test_fourier_image_equals_numpy_irfft_of_the_1_over_f_scaled_spectrum() -> None:
    g = torch.Generator().manual_seed(3)
    img = FourierImage(10, generator=g, sd=0.5, colors=None)
    spec = img.spectrum.detach().numpy().astype(np.float64)  # (1, 3, 10, 6, 2)
    fy, fx = np.fft.fftfreq(10)[:, None], np.fft.rfftfreq(10)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    scale = 1.0 / np.maximum(f, 1.0 / 10)  # Lucent's 1/f, clamped at the lowest frequency
    assert scale[0, 0] == 10 and scale[0, 1] == 10 and scale[0, 5] == 2  # DC, f=1/10, f=1/2
    coef = (spec[..., 0] + 1j * spec[..., 1]) * scale
    expected = 1 / (1 + np.exp(-np.fft.irfftn(coef, s=(10, 10), axes=(-2, -1), norm="ortho") / 4))
    np.testing.assert_allclose(img().detach().numpy(), expected, rtol=0, atol=1e-6)


def test_decorrelated_fourier_image_mixes_colours_by_the_matrix() -> None:
    m = color_matrix("imagenet")
    assert m is not None
    a = FourierImage(6, generator=torch.Generator().manual_seed(0), sd=0.3, colors=None)
    b = FourierImage(6, generator=torch.Generator().manual_seed(0), sd=0.3, colors=m)
    v = torch.logit(a().detach())  # (1, 3, 6, 6): the undecorrelated values
    torch.testing.assert_close(torch.logit(b().detach()), torch.einsum("dc,bchw->bdhw", m, v))


def test_color_sqrt_is_a_square_root_of_the_covariance() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(5000, 3)) @ np.array(
        [[1.0, 0.9, 0.8], [0.0, 0.3, 0.1], [0.0, 0.0, 0.2]]
    )
    m = color_sqrt(torch.tensor(pixels, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(m @ m.T, np.cov(pixels.T), rtol=1e-4, atol=1e-6)
    norms = np.linalg.norm(m, axis=0)
    assert norms[0] > norms[1] > norms[2]  # principal axes, strongest (luminance) first


def test_color_matrices_are_lucids_and_the_photo_crops_own() -> None:
    lucid = torch.tensor(IMAGENET_COLOR_SQRT)
    torch.testing.assert_close(color_matrix("imagenet"), lucid / lucid.norm(dim=0).max())
    built = color_matrix("builtin")  # from convscope.data's photo crops: deterministic, offline
    again = color_matrix("builtin")
    assert built is not None and again is not None and torch.equal(built, again)
    assert float(built.norm(dim=0).max()) == pytest.approx(1.0)
    assert bool((built[:, 0] > 0).all())  # first axis: brightness (all three colours together)
    assert color_matrix("none") is None


def test_gaussian_blur_of_a_delta_is_the_gaussian() -> None:
    x = torch.zeros(1, 2, 15, 15)
    x[:, :, 7, 7] = 1.0
    r = np.arange(-3, 4)
    k = np.exp(-(r**2) / 2.0)
    k /= k.sum()  # sigma 1: radius ceil(3 sigma) = 3
    expected = np.zeros((15, 15))
    expected[4:11, 4:11] = np.outer(k, k)
    y = gaussian_blur(x, 1.0).numpy()
    np.testing.assert_allclose(y[0, 0], expected, atol=1e-7)
    np.testing.assert_allclose(y[0, 1], expected, atol=1e-7)


def test_rotation_is_counter_clockwise_about_the_centre_and_scale_resizes() -> None:
    x = torch.arange(2 * 36.0).view(1, 2, 6, 6)
    torch.testing.assert_close(scale_rotate(x, 1.0, 90.0), torch.rot90(x, 1, (2, 3)))
    torch.testing.assert_close(scale_rotate(x, 1.0, 0.0), x)
    assert scale_rotate(x, 1.5, 0.0).shape == (1, 2, 9, 9)
    torch.testing.assert_close(
        scale_rotate(torch.full((1, 3, 8, 8), 0.3), 1.1, 7.0), torch.full((1, 3, 9, 9), 0.3)
    )


@pytest.mark.parametrize("mode", ["constant", "circular"])
def test_robust_view_without_scale_or_rotation_is_a_window_of_the_padded_image(mode: str) -> None:
    x = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    padded = (
        F.pad(x, (2, 2, 2, 2), value=0.5)
        if mode == "constant"
        else torch.tile(x, (1, 1, 3, 3))[..., 8:22, 8:22]
    )
    for seed in range(5):
        view = robust_view(x, generator=torch.Generator().manual_seed(seed), pad=2, jitter1=3,
                           scales=(), angles=(), jitter2=2, pad_mode=mode)  # fmt: skip
        assert view.shape == (1, 3, 9, 9)  # 14 - 3, then - 2
        hits = [
            (i, j)
            for i in range(6)
            for j in range(6)
            if torch.equal(view, padded[..., i : i + 9, j : j + 9])
        ]
        assert len(hits) == 1


# ---- tiny nets with known optima --------------------------------------------------------------
class Colour(nn.Module):
    """One 1×1 conv unit on RGB, weights (+1, 0, −1): the optimum is red 1, blue 0 everywhere."""

    def __init__(
        self,
        weights: tuple[float, float, float] = (1.0, 0.0, -1.0),
        bias: float = 0.0,
        relu: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(weights).view(1, 3, 1, 1))
            self.conv.bias.fill_(bias)  # type: ignore[union-attr]
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.relu(self.conv(x))
        return out


def test_adams_first_step_moves_each_pixel_by_lr_along_its_gradient_sign() -> None:
    stim = Optimize(Colour(), layer="conv", channel=0, style="yosinski", config=PLAIN).run(
        steps=1, size=8
    )
    # d mean(R - B) / d pixel = ±1/64; Adam's first step is lr·g/(|g| + 1e-8) = ±0.05 (to 2e-5 relative)
    expected = torch.tensor([0.55, 0.5, 0.45]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    torch.testing.assert_close(stim.image, expected, rtol=0, atol=1e-6)
    assert stim.trace == [0.0] and stim.activation == pytest.approx(0.1, abs=1e-5)
    assert stim.meta["tensor"] == "z of block conv (no activation follows)"


def test_the_known_optimum_is_approached_by_pixels() -> None:
    stim = Optimize(Colour(), layer="conv", channel=0, style="yosinski").run(
        steps=60, size=16, seed=0
    )
    red, blue = stim.image[0, 0], stim.image[0, 2]  # (16, 16)
    assert float(red.min()) > 0.99 and float(blue.max()) < 0.01  # 1 − decay/2 at worst
    assert stim.activation > 0.99 and stim.activation == pytest.approx(
        float((red - blue).mean()), abs=1e-6
    )


def test_the_known_optimum_is_approached_through_the_decorrelated_spectrum() -> None:
    # sd=0, no transforms: the start is flat grey and the objective's gradient is flat, so
    # only the DC coefficients move (through the 1/f scaling, the colour matrix, the sigmoid)
    # (Adam's steps shrink as the sigmoid saturates: slow at the end, hence lr 1 and 150 steps)
    cfg = OptimizeConfig(sd=0.0, lr=1.0, robust=False)
    stim = Optimize(Colour(), layer="conv", channel=0, config=cfg).run(steps=150, size=8, seed=0)
    red, blue = stim.image[0, 0], stim.image[0, 2]
    assert float(red.min()) > 0.97 and float(blue.max()) < 0.03
    assert float(stim.image.std(dim=(2, 3)).max()) < 1e-6  # still flat
    # Lucent's defaults (sd 0.01, lr 0.05): Adam scales every coefficient's step to about lr
    # however small its gradient, so the flat optimum is only approached on average, under a
    # saturated pattern (a limitation of the method on such a unit, stated in the docs)
    stim = Optimize(Colour(), layer="conv", channel=0).run(steps=60, size=16, seed=0)
    assert 0.15 < stim.activation < 0.9
    assert stim.trace[-1] > stim.trace[0] + 0.03  # (on views that are 2/3 grey padding)
    assert float(stim.image[0, 0].mean()) > 0.5 > float(stim.image[0, 2].mean())


def test_a_silent_unit_is_pushed_by_its_pre_activation_until_it_fires() -> None:
    # relu(R - 0.75): silent on the grey start (no gradient through the ReLU); its z rises it
    net = Colour((1.0, 0.0, 0.0), bias=-0.75, relu=True)
    stim = Optimize(net, layer="conv", channel=0, style="yosinski", config=PLAIN).run(
        steps=30, size=8
    )
    assert stim.start == 0.0 and stim.meta["silent_steps"] >= 5  # 0.5 → 0.75 takes 5 steps of 0.05
    assert stim.activation == pytest.approx(0.25, abs=1e-6)  # red clamped at 1: relu(1 - 0.75)
    assert stim.meta["tensor"] == "a of block conv (after relu)"


# ---- determinism and the objective ------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar() -> tuple[nn.Module, list[float], list[float]]:
    # convnetjs-cifar ships trained weights with their normalisation in the metadata
    model, _, meta = load_model("zoo:convnetjs-cifar")
    assert "mean" in meta, "convnetjs-cifar's trained weights are missing"
    return model, json.loads(meta["mean"]), json.loads(meta["std"])


@pytest.mark.parametrize("style", ["lucent", "yosinski"])
def test_same_seed_same_image_bit_for_bit(
    cifar: tuple[nn.Module, list[float], list[float]], style: str
) -> None:
    model, mean, std = cifar
    opt = Optimize(model, layer="conv2", channel=1, mean=mean, std=std, style=style)
    a, b, c = (
        opt.run(steps=12, size=24, seed=7),
        opt.run(steps=12, size=24, seed=7),
        opt.run(steps=12, size=24, seed=8),
    )
    assert torch.equal(a.image, b.image) and torch.equal(a.input, b.input) and a.trace == b.trace
    assert not torch.equal(a.image, c.image)
    assert (
        a.image.shape == (1, 3, 24, 24) and float(a.image.min()) >= 0 and float(a.image.max()) <= 1
    )
    x = (a.image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(a.input, x)


def _unit_means(model: nn.Module, x: Tensor, layer: str) -> Tensor:
    """Plain forward (no convscope): the mean of each feature map of conv2 or conv3, (B, C)."""
    m: Any = model
    a = m.pool1(m.relu1(m.conv1(x)))
    a = m.relu2(m.conv2(a))
    if layer == "conv3":
        a = m.relu3(m.conv3(m.pool2(a)))
    means: Tensor = a.mean(dim=(2, 3))
    return means


def test_beats_every_builtin_photo_crop_on_its_unit(
    cifar: tuple[nn.Module, list[float], list[float]],
) -> None:
    """Like for like: the optimised 32² image's mean map activation (what is optimised) against
    the largest mean map activation over 256 held-out 32² photo crops, the net's own input."""
    model, mean, std = cifar
    before = copy.deepcopy(model.state_dict())
    crops, _ = photo_crops("test", 256, size=32, seed=1)  # (256, 3, 32, 32) in [0, 1], held out
    norm = (crops - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    for layer in ("conv2", "conv3"):
        with torch.no_grad():
            # (C,): each unit's strongest crop
            best = _unit_means(model, norm, layer).max(dim=0).values
        hardest = best.argsort(descending=True)[:2].tolist()  # the two units the crops excite most
        runs = [(c, "lucent", 256) for c in hardest]
        if layer == "conv3":  # pixels: every unit the crops excite at all, in few steps
            runs += [(c, "yosinski", 96) for c in range(best.numel()) if best[c] > 0]
        for channel, style, steps in runs:
            opt = Optimize(model, layer=layer, channel=channel, mean=mean, std=std, style=style)
            stim = opt.run(steps=steps, size=32, seed=0)
            assert stim.activation > float(best[channel]), (layer, channel, style)
            assert stim.activation > stim.start and max(stim.trace[-8:]) > stim.trace[0]  # it rose
            with torch.no_grad():  # the reported activation is what a plain forward gives
                plain = _unit_means(model, stim.input, layer)[0, channel]
            assert stim.activation == pytest.approx(float(plain), rel=1e-5)
    assert opt.activation(stim.image) == pytest.approx(stim.activation, rel=1e-6)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


# ---- the model is left as it was --------------------------------------------------------------
class Net(nn.Module):
    def __init__(self, boom_at: int | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = (
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(inplace=True),
        )
        self.conv2, self.drop = nn.Conv2d(4, 5, 3, padding=1), nn.Dropout(0.5)
        self.calls, self.boom_at = 0, boom_at

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.boom_at:
            raise Boom("in the forward")
        out: Tensor = F.relu(self.conv2(self.drop(self.relu1(self.bn1(self.conv1(x))))))
        return out


class Boom(RuntimeError):
    pass


def _snapshot(
    model: nn.Module,
) -> tuple[dict[str, Tensor], list[bool], list[Tensor | None], list[bool]]:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [m.training for m in model.modules()],
    )


def _assert_unchanged(
    model: nn.Module, before: tuple[dict[str, Tensor], list[bool], list[Tensor | None], list[bool]]
) -> None:
    state, req, grads, modes = before
    assert count_hooks(model) == 0
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert [p.requires_grad for p in model.parameters()] == req
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None) if g is None else (p.grad is not None and torch.equal(p.grad, g))
    assert [m.training for m in model.modules()] == modes


def _prepared(net: Net) -> Net:
    net.train()
    net.bn1.eval()  # a mixed state must come back exactly
    net.conv1.weight.requires_grad_(False)  # a frozen layer stays frozen
    net.conv2.weight.grad = torch.ones_like(net.conv2.weight)  # a gradient the user holds stays
    return net


@pytest.mark.parametrize("style", ["lucent", "yosinski"])
@pytest.mark.parametrize("layer", ["conv1", "relu1", "conv2", "drop"])
def test_the_model_is_left_as_it_was(style: str, layer: str) -> None:
    net = _prepared(Net())
    before = _snapshot(net)
    stim = Optimize(net, layer=layer, channel=1, style=style).run(steps=3, size=20, seed=0)
    _assert_unchanged(net, before)
    assert len(stim.trace) == 3 and stim.seconds > 0 and stim.meta["layer"] == layer


def test_the_model_is_left_as_it_was_when_the_forward_raises() -> None:
    for boom_at in (1, 3):  # the first forward (the start) and one in the middle of the steps
        net = _prepared(Net(boom_at=boom_at))
        before = _snapshot(net)
        with pytest.raises(Boom):
            Optimize(net, layer="conv2", channel=0).run(steps=5, size=20)
        _assert_unchanged(net, before)


# ---- bad input: one clear line ----------------------------------------------------------------
def _error(make: object) -> str:
    with pytest.raises(OptimizeError) as info:
        make()  # type: ignore[operator]
    text = str(info.value)
    assert "\n" not in text
    return text


def test_bad_input_is_one_clear_line(cifar: tuple[nn.Module, list[float], list[float]]) -> None:
    model, _, _ = cifar
    before = _snapshot(model)
    msg = _error(lambda: Optimize(model, layer="conv9", channel=0).run(steps=1, size=32))
    assert msg.startswith(
        "unknown layer 'conv9'; valid: conv1, relu1, conv2, relu2, conv3, relu3, fc; or any module"
    )
    assert _error(lambda: Optimize(model, layer="conv3", channel=20).run(steps=1, size=32)) == (
        "channel 20 is out of range for layer 'conv3': 0..19"
    )
    assert (
        _error(lambda: Optimize(model, layer="conv3", channel=-1))
        == "channel must be a non-negative int, got -1"
    )
    opt = Optimize(model, layer="conv3", channel=0)
    assert _error(lambda: opt.run(steps=0)) == "steps must be an int in 1..100000, got 0"
    assert _error(lambda: opt.run(steps=10**6)) == "steps must be an int in 1..100000, got 1000000"
    assert _error(lambda: opt.run(size=4)) == "size must be an int in 8..1024, got 4"
    assert _error(lambda: opt.run(size=64.0)) == "size must be an int in 8..1024, got 64.0"  # type: ignore[arg-type]
    assert _error(lambda: opt.run(seed=-1)).startswith("seed must be an int in 0..")
    msg = _error(lambda: Optimize(model, layer="fc", channel=0).run(steps=1, size=64))
    assert msg.startswith(
        "the model's forward failed on a 64×64 image: mat1 and mat2 shapes cannot be multiplied"
    )
    assert _error(lambda: Optimize(model, layer="conv3", channel=0, mean=[0.5, 0.5])) == (
        "mean must be 3 finite numbers, got [0.5, 0.5]"
    )
    assert (
        _error(lambda: Optimize(model, layer="conv3", channel=0, std=[1, 0, 1]))
        == "std must be positive, got [1, 0, 1]"
    )
    assert _error(lambda: Optimize(model, layer="conv3", channel=0, style="deepdream")) == (
        "style must be one of lucent, yosinski; got 'deepdream'"
    )
    assert _error(lambda: OptimizeConfig(lr=0.0)) == "lr must be a positive number or None, got 0.0"
    assert (
        _error(lambda: OptimizeConfig(colors="sRGB"))
        == "colors must be imagenet, builtin or none; got 'sRGB'"
    )
    assert _error(
        lambda: Optimize(model, layer="conv3", channel=0, config=OptimizeConfig(pad=0, jitter=8, jitter2=4, robust=True)).run(size=16)
    ) == (
        "size 16 leaves a 4-px view after pad 0 and jitter 8+4; give a larger size or smaller jitter"
    )
    assert _error(lambda: OptimizeConfig(pad_mode="wrap")) == (
        "pad_mode must be constant, circular or reflect; got 'wrap'"
    )
    _assert_unchanged(model, before)
