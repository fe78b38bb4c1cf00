"""Calibration on real training: zoo:convnetjs-mnist trained on the built-in digits with a sane and a
much too high learning rate, and first-layer filters of random vs trained nets.

The numbers the thresholds rest on (seed 0, 2 epochs of SGD with momentum 0.9, batch 32, measured
on the 359 held-out test digits): lr 0.02 → 0 of 24 conv filters dead, 97.5 % accuracy; lr 0.5 →
16 of 16 conv2 filters dead, chance accuracy (10 %). Median roughness of conv1 (1 = white noise):
random init 0.96, after the lr 0.02 run 0.63 (a few filters still ≥ 0.8 after 2 epochs), after
the lr 0.5 run 0.02 (collapsed); zoo:convnetjs-cifar random 0.97, its shipped trained weights 0.34 (none of 16 at ≥ 0.8).
"""

from __future__ import annotations

import copy
import statistics

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from torch import nn

from convscope import diagnose
from convscope.analysis.smoothness import NOISY_ROUGHNESS, roughness
from convscope.data import digits
from convscope.models import load_model
from convscope.models.zoo import ZOO

NORMAL_LR, HIGH_LR = 0.02, 0.5


def _train(lr: float, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = ZOO["convnetjs-mnist"].factory()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(2):
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - 31, 32):
            idx = perm[i : i + 32]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def runs() -> dict[str, object]:
    x, y = digits("train", size=24)  # (1258, 1, 24, 24) in [0, 1]
    xt, yt = digits("test", size=24)
    mean, std = x.mean(), x.std()
    x, xt = (x - mean) / std, (xt - mean) / std
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs on a shared 2-core machine: one thread is faster
    try:
        return {
            "init": ZOO["convnetjs-mnist"].factory().eval(),
            "normal": _train(NORMAL_LR, x, y),
            "high": _train(HIGH_LR, x, y),
            "test": (xt, yt),
        }
    finally:
        torch.set_num_threads(threads)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.slow
def test_too_high_learning_rate_shows_many_dead_filters_and_a_normal_one_few(runs: dict[str, object]) -> None:
    xt, yt = runs["test"]  # type: ignore[misc]
    found = {}
    for name, lr in (("normal", NORMAL_LR), ("high", HIGH_LR)):
        model = runs[name]
        assert isinstance(model, nn.Module)
        plain = copy.deepcopy(model)
        d = diagnose(model, (xt, yt), lr=lr, data_name="builtin:digits:test")
        assert_same_model(model, plain)
        convs = [s for s in d.layers if s.kind == "conv"]
        found[name] = (sum(len(s.dead) for s in convs), sum(s.filters for s in convs), d)
    dead_n, total, d_normal = found["normal"]
    dead_h, _, d_high = found["high"]
    assert total == 24
    assert dead_n <= 1, f"normal lr: {dead_n} dead"
    assert dead_h >= total // 2, f"too high lr: only {dead_h} of {total} dead"
    assert _accuracy(runs["normal"], xt, yt) > 0.85  # type: ignore[arg-type]
    # the findings say it, with the exact count over the 360 test digits
    dead = d_high.of_kind("dead")
    assert dead and dead[0].severity == "high"
    assert f"on all {len(xt)} inputs" in dead[0].summary and "on this data" in dead[0].summary
    assert "learning rate" in dead[0].advice
    assert d_normal.of_kind("dead") == []
    # with conv2 all dead no gradient flows at all: every update ratio is 0, flagged low
    if all(len(s.dead) == s.filters for s in d_high.layers if s.name == "conv2"):
        assert [f.severity for f in d_high.of_kind("update_ratio")] == ["low"] * 3
        assert all(s.update_ratio == 0.0 for s in d_high.layers)


@pytest.mark.slow
def test_random_first_layer_filters_score_noisy_and_trained_ones_smooth(runs: dict[str, object]) -> None:
    init, trained = runs["init"], runs["normal"]
    assert isinstance(init, nn.Module) and isinstance(trained, nn.Module)
    r_init = roughness(init.conv1.weight).tolist()  # type: ignore[union-attr, operator]
    r_trained = roughness(trained.conv1.weight).tolist()  # type: ignore[union-attr, operator]
    assert statistics.median(r_init) >= NOISY_ROUGHNESS
    assert statistics.median(r_trained) < NOISY_ROUGHNESS
    assert statistics.median(r_trained) < statistics.median(r_init) - 0.25
    xt, _ = runs["test"]  # type: ignore[misc]
    (noisy,) = diagnose(init, xt[:32]).of_kind("noisy")
    assert noisy.layer == "conv1" and len(noisy.filters) >= 6  # of 8


def test_convnetjs_cifar_random_filters_noisy_shipped_weights_smooth() -> None:
    torch.manual_seed(0)
    random_net = ZOO["convnetjs-cifar"].factory().eval()
    r = roughness(random_net.conv1.weight).tolist()
    assert statistics.median(r) > 0.9 and sum(v >= NOISY_ROUGHNESS for v in r) >= 15  # of 16
    x = torch.rand(8, 3, 32, 32)
    (noisy,) = diagnose(random_net, x).of_kind("noisy")
    assert noisy.severity == "medium" and len(noisy.filters) >= 15
    path = ZOO["convnetjs-cifar"].weights_path
    if path is None or not path.exists():
        pytest.skip("no shipped convnetjs-cifar weights: the digits run above covers trained filters")
    trained, _, _ = load_model("zoo:convnetjs-cifar")
    r = roughness(trained.conv1.weight).tolist()  # type: ignore[union-attr, operator]
    assert statistics.median(r) < 0.6
    noisy_trained = diagnose(trained, x).of_kind("noisy")
    assert noisy_trained == [] or len(noisy_trained[0].filters) <= 2
