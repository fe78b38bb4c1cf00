"""The optimal stimulus reaches the optimum: an exact oracle, and the trained net's hard maps.

Oracle: a 4×4 filter at stride 4 (windows do not overlap) then ReLU. Over images in [0, 1]
its mean activation is at most relu(Σ max(w, 0) + b), reached by the image that tiles the
filter's sign pattern (1 where w > 0, 0 where w < 0) — whatever the channel mixing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from _helpers import one_thread
from torch import nn

from convscope.analysis.units.optimize import Optimize, OptimizeConfig
from convscope.capture import count_hooks
from convscope.data.builtin import photo_crops
from convscope.models import load_model
from convscope.render.units_report import stimulus_warning


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


class SignNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 1, 4, stride=4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn((1, 3, 4, 4), generator=g))
            self.conv.bias.fill_(-0.5)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


def _oracle(net: SignNet, size: int) -> tuple[float, torch.Tensor]:
    w, b = net.conv.weight.detach(), float(net.conv.bias.detach())
    best = float(w.clamp(min=0).sum()) + b  # > 0 here
    tile = (w[0] > 0).to(torch.float32)  # (3, 4, 4)
    image = tile.repeat(1, size // 4, size // 4)[None]  # (1, 3, size, size)
    return best, image


def _recompute(net: SignNet, image: torch.Tensor) -> float:
    """Independent of convscope: the filter by hand (unfold + matmul), then relu and mean."""
    w, b = net.conv.weight.detach(), net.conv.bias.detach()
    cols = F.unfold(image, kernel_size=4, stride=4)  # (1, 48, L)
    z = w.view(1, -1) @ cols[0] + b[:, None]  # (1, L)
    return float(z.clamp(min=0).mean())


@pytest.mark.parametrize(
    ("style", "config", "steps", "tol"),
    [
        # projected gradient ascent on pixels, no regulariser: the exact corner is reached
        ("yosinski", OptimizeConfig(decay=0.0, blur_every=0, sd=0.0, robust=False), 40, 1e-5),
        # the defaults (Fourier image through a sigmoid: the corner only asymptotically: measured 83% at 128 steps)
        ("lucent", None, 128, 0.2),
    ],
)
def test_the_sign_pattern_optimum_is_reached(style: str, config: OptimizeConfig | None, steps: int, tol: float) -> None:
    net = SignNet()
    before = copy.deepcopy(net.state_dict())
    best, image = _oracle(net, 16)
    assert _recompute(net, image) == pytest.approx(best, abs=1e-5)  # the oracle itself
    hooks = count_hooks(net)
    stim = Optimize(net, layer="conv", channel=0, style=style, config=config).run(steps=steps, size=16, seed=0)
    assert count_hooks(net) == hooks == 0
    assert all(torch.equal(net.state_dict()[k], before[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())
    assert stim.activation <= best + 1e-5  # no image in [0, 1] beats the bound
    assert stim.activation >= best * (1 - tol), (stim.activation, best)
    assert stim.activation == pytest.approx(_recompute(net, stim.image), rel=1e-5, abs=1e-6)
    if style == "yosinski":  # the image is the sign pattern wherever the weight is not ~0
        w = net.conv.weight.detach()[0].repeat(1, 4, 4)
        clear = w.abs() > 1e-2
        assert torch.equal(stim.image[0][clear].round(), image[0][clear])


def test_the_trained_nets_hard_conv3_maps_beat_the_best_image() -> None:
    """convnetjs-cifar conv3 maps that Lucent's settings left below real images (2, 4, 15; 0, 8
    sparse): with the defaults and 128 steps (the units job's), above the best of 256 val crops."""
    model, _, meta = load_model("zoo:convnetjs-cifar")
    mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
    before = copy.deepcopy(model.state_dict())
    crops, _ = photo_crops("val", 256, size=32, seed=0)
    x = (crops - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    m: nn.Module = model
    with torch.no_grad():
        a = m.relu3(m.conv3(m.pool2(m.relu2(m.conv2(m.pool1(m.relu1(m.conv1(x))))))))
    best = a.mean(dim=(2, 3)).max(dim=0).values  # (20,)
    for ch in (2, 4, 15, 0, 8):
        opt = Optimize(model, layer="conv3", channel=ch, mean=mean, std=std)
        stim = opt.run(steps=128, size=32, seed=ch)
        assert stim.activation > float(best[ch]), (ch, stim.activation, float(best[ch]))
        assert opt.activation(stim.image) == pytest.approx(stim.activation, rel=1e-6)
    assert count_hooks(model) == 0
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)


def test_the_report_says_when_a_stimulus_is_below_the_best_image() -> None:
    unit = SimpleNamespace(stimulus=torch.zeros(3, 8, 8), stimulus_activation=0.353, best_image_activation=3.08)
    assert stimulus_warning(unit) == (
        "not optimal: this stimulus reaches mean a = 0.353, below the best dataset image's 3.08"
        " — the optimiser did not find this map's optimum"
    )
    assert stimulus_warning(SimpleNamespace(stimulus=torch.zeros(3, 8, 8), stimulus_activation=3.1,
                                            best_image_activation=3.08)) is None  # fmt: skip
    assert stimulus_warning(SimpleNamespace(stimulus=torch.zeros(3, 8, 8), stimulus_activation=0.1)) is None
