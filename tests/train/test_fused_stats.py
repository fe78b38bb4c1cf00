"""fused_stats (all layers together, one host transfer) against block_stats (one layer at a time),
and against numbers worked out by hand."""

from __future__ import annotations

import copy
import itertools
import math
import weakref
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.analysis import block_stats
from convscope.capture import Probe
from convscope.capture.naming import RELU
from convscope.train.stats import StatsInput, fused_stats


class Mixed(nn.Module):
    """Every path of fused_stats: conv→ReLU, conv→BN→ReLU(inplace), conv→tanh, a functional
    ReLU, linear→ReLU (2-D maps), a lone activation, and a linear with no activation."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.r1 = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
        self.c2, self.bn, self.r2 = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(inplace=True)
        self.c3, self.t3 = nn.Conv2d(5, 6, 3), nn.Tanh()
        self.c4 = nn.Conv2d(6, 4, 1)
        self.fc1, self.r5 = nn.Linear(4 * 4 * 4, 7), nn.ReLU()
        self.sig = nn.Sigmoid()
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r1(self.c1(x))
        x = self.r2(self.bn(self.c2(x)))
        x = self.t3(self.c3(x))
        x = F.relu(self.c4(x))  # functional
        x = self.sig(self.r5(self.fc1(x.flatten(1))) - 0.5)  # a lone activation after a subtraction
        return self.fc2(x)


def _rows(memory_format: torch.memory_format = torch.contiguous_format) -> list[StatsInput]:
    torch.manual_seed(0)
    model = Mixed()
    with torch.no_grad():
        model.c1.bias[2] = -50.0  # one dead map (relu path)
    model.to(memory_format=memory_format)  # channels-last: maps and gradients come channels-last
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(5, 3, 6, 6).contiguous(memory_format=memory_format)
    with Probe(model) as probe:
        F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1])).backward()
        opt.step()
    modules = dict(model.named_modules())
    rows = []
    for name, b in probe.trace.items():
        current = getattr(modules.get(name), "weight", None) if b.kind != "activation" else None
        used = before.get(f"{name}.weight") if current is not None else None
        rows.append(StatsInput(name, b.a, b.z, b.grad_a, current, b.grad_weight, used, relu=b.activation in RELU))
    return rows


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_fused_equals_per_layer_block_stats(memory_format: torch.memory_format) -> None:
    rows = _rows(memory_format)
    if memory_format == torch.channels_last:  # the layout the flat-view and copy paths are for
        assert rows[0].z is not None and rows[0].grad_a is not None
        assert not rows[0].z.is_contiguous() and not rows[0].grad_a.is_contiguous()
        tanh = next(r for r in rows if r.name == "c3")  # conv → tanh: the per-channel path
        assert tanh.a is not None and not tanh.a.is_contiguous()
    fused = fused_stats(rows)
    assert set(fused) == {r.name for r in rows}
    for r in rows:
        one = block_stats(r.a, r.z, r.grad_a, r.weight, r.grad_weight, r.previous_weight, relu=r.relu)
        assert fused[r.name].keys() == one.keys(), r.name
        for key, value in one.items():
            assert fused[r.name][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (r.name, key)
    assert fused["c1"]["dead_fraction"] == 0.25  # the map with bias -50 (1 of 4)
    assert {"z_min", "a_mean", "update_ratio"} <= fused["c2"].keys() and "update_ratio" in fused["fc2"]


def test_numbers_worked_out_by_hand() -> None:
    z = torch.tensor([[[[-1.0, 2.0]], [[-3.0, -0.5]]]])  # (1, 2, 1, 2): map 1 is never positive
    a = torch.relu(z)
    g = torch.tensor([[[[3.0, 0.0]], [[0.0, -4.0]]]])
    w = torch.tensor([[3.0, 4.0]])  # ‖W‖ = 5
    w_prev = torch.tensor([[3.0, 4.5]])  # ‖W − W_prev‖ = 0.5
    gw = torch.tensor([[0.0, -2.0]])
    out = fused_stats([StatsInput("l", a, z, g, w, gw, w_prev, relu=True), StatsInput("empty")])
    assert out == {"l": {
        "z_min": -3.0, "z_max": 2.0, "a_min": 0.0, "a_max": 2.0, "dead_fraction": 0.5, "a_mean": 0.5,
        "grad_a_min": -4.0, "grad_a_max": 3.0, "grad_a_norm": 5.0, "weight_norm": 5.0,
        "grad_weight_norm": 2.0, "update_ratio": pytest.approx(0.1),
    }}  # fmt: skip
    assert fused_stats([]) == {}


def test_nan_stays_nan_and_a_nan_map_is_not_dead() -> None:
    z = torch.tensor([[[[math.nan, -1.0]], [[-2.0, -1.0]]]])  # (1, 2, 1, 2)
    a = torch.relu(z)
    fused = fused_stats([StatsInput("l", a, z, relu=True)])["l"]
    one = block_stats(a, z, None, None, None, relu=True)
    assert fused.keys() == one.keys()
    assert math.isnan(fused["z_max"]) and math.isnan(one["z_max"]) and math.isnan(fused["a_mean"])
    assert fused["dead_fraction"] == one["dead_fraction"] == 0.5  # map 0 holds a NaN: not dead


def test_relu_maps_in_any_layout_and_dtype_agree_with_block_stats() -> None:
    """The per-channel sums read contiguous rows; a channels-last or float64 map takes the other
    path: the same numbers. A map of one exact zero channel among others is dead, counted exactly."""
    torch.manual_seed(1)
    z = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    z[:, 2] = -torch.rand(3, 4, 6, dtype=torch.float64)  # channel 2 never positive: dead
    for zz in (z, z.float(), z.float().to(memory_format=torch.channels_last)):
        a = torch.relu(zz)
        fused = fused_stats([StatsInput("l", a, zz, relu=True)])["l"]
        one = block_stats(a, zz, None, None, None, relu=True)
        assert fused.keys() == one.keys()
        for key, value in one.items():
            assert fused[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (zz.dtype, key)
        assert fused["dead_fraction"] == 0.2 and fused["a_min"] == 0.0


def test_update_ratio_of_a_zero_weight_is_what_torch_divides() -> None:
    w, prev = torch.zeros(2, 2), torch.tensor([[0.0, 3.0], [4.0, 0.0]])  # ‖W − W_prev‖ = 5, ‖W‖ = 0
    assert fused_stats([StatsInput("l", weight=w, previous_weight=prev)])["l"]["update_ratio"] == math.inf
    assert math.isnan(fused_stats([StatsInput("l", weight=w, previous_weight=w)])["l"]["update_ratio"])


class ResidualMix(nn.Module):
    """The patterns a statistics step's taps meet: conv→BN→ReLU(inplace) (z overwritten), conv→BN
    then a residual `+=` into it (z of a block with no activation, overwritten), a downsample
    conv→BN added out of place (z read when the next block starts), a lone in-place ReLU, conv→tanh
    (not ReLU: a's own min and max), a linear at the end (its z read after the pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.r1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.down, self.bd = nn.Conv2d(4, 6, 1, stride=2), nn.BatchNorm2d(6)
        self.c3, self.b3 = nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.c4, self.t4 = nn.Conv2d(6, 5, 3), nn.Tanh()
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            raise RuntimeError("one example")
        x = self.r1(self.b1(self.c1(x)))
        out = self.b2(self.c2(x))
        out += x
        x = self.relu(out)
        x = self.relu(self.b3(self.c3(x)) + self.bd(self.down(x)))
        x = self.t4(self.c4(x)).mean((2, 3))
        return self.fc(x)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_reductions_as_the_pass_makes_them_equal_block_stats_of_a_full_capture(
    memory_format: torch.memory_format,
) -> None:
    """The statistics step's path (z, a and dL/da reduced by the probe's taps, dL/da not kept)
    against block_stats of a full capture of the same step on a twin model: the same numbers. Every
    block but the last had its z read during the pass. Every callback's time, by the Reductions'
    clock (one tick a read here), is in `spent`. No hook is left and the model is what the twin
    is, also after a forward that raised."""
    from _helpers import assert_same_model

    from convscope.train.model_hooks import STATS_KEEP
    from convscope.train.stats import Reductions

    torch.manual_seed(3)
    model = ResidualMix().to(memory_format=memory_format)
    with torch.no_grad():
        model.b1.bias[1] = -40.0  # a dead map (BN output about -40 everywhere)
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=memory_format)
    y = torch.tensor([0, 1, 2, 0])
    ticks = itertools.count()
    seen = Reductions(lambda block: block.activation in RELU, clock=lambda: float(next(ticks)))
    calls = [0]

    def counted(fn: Any) -> Any:
        def call(*args: Any) -> Any:
            calls[0] += 1
            return fn(*args)

        return call

    opt, twin_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    used = {n: p.detach().clone() for n, p in model.named_parameters()}
    with Probe(model, keep=STATS_KEEP, tap=counted(seen.tap), overwrite=counted(seen.overwrite),
               grad_tap=counted(seen.grad_tap)) as probe:  # fmt: skip
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert calls[0] > 20 and seen.take_spent() == calls[0] and seen.spent == 0.0
    with Probe(twin) as full:
        F.cross_entropy(twin(x), y).backward()
        twin_opt.step()
    modules = dict(model.named_modules())
    rows, names = [], list(probe.trace)
    for name, b in probe.trace.items():
        assert b.grad_a is None  # reduced in the backward, not kept
        assert b.activation is None or b.z is None, name  # let go once its activation's map was reduced
        s = seen.pop(b)
        assert (s is not None and s.z_range is not None) == (name != "fc"), name  # (fc's z: read after)
        if s is not None:
            assert (s.a is not None) == (s.grad_a is not None) == (b.activation is not None), name
        current = getattr(modules.get(name), "weight", None) if b.kind != "activation" else None
        prev = used.get(f"{name}.weight") if current is not None else None
        rows.append(StatsInput(name, b.a, b.z, b.grad_a, current, b.grad_weight, prev,
                               relu=b.activation in RELU, seen=s))  # fmt: skip
    got = fused_stats(rows)
    assert names == list(full.trace) and set(got) == set(names)
    for name, b in full.trace.items():
        prev = used.get(f"{name}.weight") if b.kind != "activation" else None
        w = getattr(dict(twin.named_modules()).get(name), "weight", None) if prev is not None else None
        one = block_stats(b.a, b.z, b.grad_a, w, b.grad_weight, prev, relu=b.activation in RELU)
        assert got[name].keys() == one.keys(), name
        for key, value in one.items():
            assert got[name][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)
    assert got["c1"]["dead_fraction"] == 0.25 and got["c2"]["z_min"] < 0  # z before the `+=` wrote into it
    stats_probe = Probe(model, keep=STATS_KEEP, tap=seen.tap, overwrite=seen.overwrite, grad_tap=seen.grad_tap)
    with pytest.raises(RuntimeError, match="one example"), stats_probe:
        model(x[:1])
    with pytest.raises(RuntimeError, match="one example"):
        twin(x[:1])
    assert_same_model(model, twin)


def test_update_ratio_of_big_weights_in_chunks_equals_float64() -> None:
    """W bigger than CHUNK goes through the chunked ‖W − W_prev‖ (nchw and channels-last, the
    copy laid out alike); a copy laid out otherwise takes the one-tensor path: the same numbers as
    a float64 computation, and the chunks leave W and W_prev untouched."""
    from convscope.analysis.stats import CHUNK

    torch.manual_seed(4)
    w = torch.randn(72, 64, 8, 8)  # 294,912 elements: two chunks
    assert w.numel() > CHUNK
    prev = w + 1e-3 * torch.randn_like(w)
    w_cl, prev_cl = w.contiguous(memory_format=torch.channels_last), prev.contiguous(memory_format=torch.channels_last)
    flat2 = torch.randn(3 * CHUNK + 5)
    flat_prev = flat2 - 1e-2 * torch.rand_like(flat2)
    rows = [StatsInput("nchw", weight=w, previous_weight=prev), StatsInput("cl", weight=w_cl, previous_weight=prev_cl),
            StatsInput("mixed", weight=w_cl, previous_weight=prev), StatsInput("long", weight=flat2, previous_weight=flat_prev)]  # fmt: skip
    keep = [(r.weight.clone(), r.previous_weight.clone()) for r in rows if r.weight is not None and r.previous_weight is not None]
    got = fused_stats(rows)
    for r, (w0, p0) in zip(rows, keep, strict=True):
        assert r.weight is not None and r.previous_weight is not None
        want = ((r.weight.double() - r.previous_weight.double()).norm() / r.weight.double().norm()).item()
        assert got[r.name]["update_ratio"] == pytest.approx(want, rel=1e-5), r.name
        assert got[r.name]["weight_norm"] == pytest.approx(r.weight.double().norm().item(), rel=1e-5)
        assert torch.equal(r.weight, w0) and torch.equal(r.previous_weight, p0)


def test_range_and_norm_of_a_big_gradient_in_chunks_equals_float64() -> None:
    """dL/da bigger than two CHUNKs is reduced chunk by chunk (its norm, max and min while each chunk
    is in the cache): the min and max exactly torch's, the norm a float64 computation's; a NaN in one
    chunk makes all three NaN, an inf the max and the norm inf; a small tensor takes torch's own
    ops (their values, bit for bit). The chunked norm is nearer float64 than torch's one-pass norm
    of the whole (short float32 sums)."""
    from convscope.analysis.stats import CHUNK, range_and_norm

    torch.manual_seed(5)
    g = torch.randn(3 * CHUNK + 7) * 1e-3  # four chunks, the last of 7 elements
    g[CHUNK + 11] = -0.25  # the minimum, in the second chunk
    g[-1] = 0.5  # the maximum, in the short last chunk
    lo, hi, norm = range_and_norm(g)
    assert (lo.item(), hi.item()) == (-0.25, 0.5)
    exact = g.double().norm().item()
    assert norm.item() == pytest.approx(exact, rel=1e-5)  # (here 1.7e-6 off; float32 sums)
    assert abs(norm.item() - exact) <= abs(torch.linalg.vector_norm(g).item() - exact)  # (5.2e-6 off)
    with_nan, with_inf = g.clone(), g.clone()
    with_nan[2 * CHUNK + 3] = math.nan
    with_inf[5] = math.inf
    assert all(math.isnan(v.item()) for v in range_and_norm(with_nan))
    lo, hi, norm = range_and_norm(with_inf)
    assert lo.item() == -0.25 and hi.item() == math.inf and norm.item() == math.inf
    with_inf[3 * CHUNK] = -math.inf  # (the last chunk's first element)
    lo, hi, norm = range_and_norm(with_inf)
    assert lo.item() == -math.inf and hi.item() == math.inf and norm.item() == math.inf
    small = torch.randn(2 * CHUNK)
    want = (*torch.aminmax(small), torch.linalg.vector_norm(small))
    assert all(torch.equal(a, b) for a, b in zip(range_and_norm(small), want, strict=True))


def test_a_statistics_pass_lets_go_of_z_once_its_activation_map_is_reduced() -> None:
    """conv → ReLU (not in place) → pool: autograd keeps a (ReLU's result), not z. The statistics
    probe's reductions let go of the kept z at the ReLU's tap, so z is freed there, before the next
    block's conv runs (its memory reused while in the CPU cache); a full capture keeps it. The
    numbers are block_stats' of the full capture; no hook is left and the model is its twin's, also
    after a tap that raised mid-pass."""
    from _helpers import assert_same_model

    from convscope.train.model_hooks import STATS_KEEP
    from convscope.train.stats import Reductions

    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))  # fmt: skip
    twin = copy.deepcopy(model)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    seen = Reductions(lambda block: block.activation in RELU)
    z_of: dict[str, Any] = {}
    alive_at_next_conv: list[bool] = []

    def tap(block: Any, field: str, t: torch.Tensor) -> None:
        if field == "z":
            z_of[block.name] = weakref.ref(t)
        if field == "x" and block.name == "3":
            alive_at_next_conv.append(z_of["0"]() is not None)
        seen.tap(block, field, t)

    with Probe(model, keep=STATS_KEEP, tap=tap, overwrite=seen.overwrite, grad_tap=seen.grad_tap) as probe:
        F.cross_entropy(model(x), y).backward()
    assert alive_at_next_conv == [False]  # conv 0's z freed before conv 3 ran
    assert probe.trace["0"].z is None and probe.trace["3"].z is None and probe.trace["6"].z is not None
    with Probe(twin) as full:
        F.cross_entropy(twin(x), y).backward()
    assert full.trace["0"].z is not None
    got = fused_stats([StatsInput(n, b.a, b.z, b.grad_a, relu=b.activation in RELU, seen=seen.pop(b))
                       for n, b in probe.trace.items()])  # fmt: skip
    for name, b in full.trace.items():
        one = block_stats(b.a, b.z, b.grad_a, None, None, relu=b.activation in RELU)
        assert got[name] == pytest.approx(one, rel=1e-6, abs=1e-7), name
    assert_same_model(model, twin)

    def raising(block: Any, field: str, t: torch.Tensor) -> None:
        seen.tap(block, field, t)
        if field == "x" and block.name == "3":  # after conv 0's z was let go
            raise RuntimeError("tap failed")

    with pytest.raises(RuntimeError, match="tap failed"), Probe(model, keep=STATS_KEEP, tap=raising,
                                                                overwrite=seen.overwrite, grad_tap=seen.grad_tap):  # fmt: skip
        model(x)
    assert_same_model(model, twin)
