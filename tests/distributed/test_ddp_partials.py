"""The arithmetic of watch() under DDP without processes: the partials of two halves of a batch,
reduced as the collectives do, give block_stats of the whole batch; the followers' light hooks
compute the same partials as a probed trace; they leave no hook behind."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.analysis import block_stats
from convscope.capture import Probe, count_hooks
from convscope.capture.naming import RELU
from convscope.models.zoo import ZOO
from convscope.train.ddp import FOLLOWER_KEEP, Partials, partials
from convscope.train.ddp_hooks import LightHooks

SCRIPT = Path(__file__).parent / "watch_ddp_script.py"
_spec = importlib.util.spec_from_file_location("watch_ddp_script", SCRIPT)
assert _spec is not None and _spec.loader is not None
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)


def _pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


def _reduce(shares: list[Partials]) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.stack([p.buffer(True) for p in shares]).sum(0)
    maxes = torch.stack([p.buffer(False) for p in shares]).amax(0)
    return sums, maxes


@pytest.mark.parametrize("cut", [4, 5, 1])
def test_reduced_halves_equal_block_stats_of_the_whole_batch(cut: int) -> None:
    model = S.net()
    x, y = S.batch(0)
    with Probe(model) as probe:
        _pass(model, x, y)
    whole = {n: block_stats(b.a, b.z, b.grad_a, None, None, relu=b.activation in RELU) for n, b in probe.trace.items()}
    shares = []
    for lo, hi in ((0, cut), (cut, len(x))):
        with Probe(model, keep=FOLLOWER_KEEP) as probe:
            _pass(model, x[lo:hi], y[lo:hi])  # this share's own mean loss, as a DDP rank computes it
        shares.append(partials(probe.trace, hi - lo))
    sums, maxes = _reduce(shares)
    got = shares[0].finish(sums, maxes, len(x))
    assert list(got) == list(whole)
    for name, want in whole.items():
        assert set(got[name]) == set(want), name
        for key, value in want.items():
            assert got[name][key] == pytest.approx(value, rel=1e-5, abs=1e-9), (name, key)
    assert any(0 < w.get("dead_fraction", 0) < 1 for w in whole.values())  # the dead-map path is exercised


@pytest.mark.parametrize("which", ["script", "zoo"])
def test_light_hooks_compute_what_the_probe_trace_gives(which: str) -> None:
    if which == "script":
        model, (x, y) = S.net(), S.batch(1)
    else:
        torch.manual_seed(0)
        model = ZOO["convnetjs-cifar"].factory()
        x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 10, (6,))
    with Probe(model, keep=FOLLOWER_KEEP) as probe:
        _pass(model, x, y)
    plan = LightHooks.plan(model, probe.trace)
    assert plan is not None
    light = LightHooks(model, plan)
    try:
        with Probe(model, keep=FOLLOWER_KEEP) as probe:
            _pass(model, x, y)
        want = partials(probe.trace, len(x))
        got = Partials()
        for name, items in light.take():
            got.add_items(name, items)
        assert light.batch == len(x)
    finally:
        light.close()
    assert got.plan == want.plan
    for part in (True, False):
        assert torch.allclose(got.buffer(part), want.buffer(part), rtol=1e-6, atol=0)
    assert count_hooks(model) == 0


def test_a_functional_activation_keeps_the_full_probe() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.conv(x)).flatten(1)

    model = Net()
    with Probe(model) as probe:
        model(torch.rand(2, 1, 5, 5)).sum().backward()
    assert LightHooks.plan(model, probe.trace) is None
