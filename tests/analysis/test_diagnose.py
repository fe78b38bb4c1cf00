"""diagnose on tiny hand-built nets: exact per-filter counts, maps, roughness, gradient numbers,
findings and their wording; every run leaves no hook and an unchanged model, also when it raises."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from convscope import diagnose
from convscope.analysis.diagnose import Diagnoser, Diagnosis, _Tap
from convscope.analysis.gradient_health import depth_flags, saturated_count, update_ratio
from convscope.analysis.smoothness import roughness
from convscope.capture import Probe, count_hooks


# ------------------------------------------------------------------------------ a hand-built net
class Thresholds(nn.Module):
    """conv 1→3 (1×1, weight 1): filter 0 bias 0 (copies the image), filter 1 bias -100 (dead on
    images in [0, 1]), filter 2 bias -0.5 (fires only on pixels above 0.5); ReLU; mean-pool; fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.copy_(torch.tensor([0.0, -100.0, -0.5]))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, -1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.conv(x))  # (B, 3, H, W)
        return self.fc(a.mean(dim=(2, 3)))  # (B, 2)


def images() -> torch.Tensor:
    """10 one-channel 2×2 images: 0-1 all zero, 2-6 dim (max 0.4), 7-9 with a pixel above 0.5."""
    x = torch.zeros(10, 1, 2, 2)
    for i in range(2, 7):
        x[i, 0, 0, 0] = 0.1 * (i - 2)  # 0.0, 0.1, ..., 0.4 (image 2 is all zero too)
        x[i, 0, 1, 1] = 0.2
    x[7, 0, 0, 1] = 0.9
    x[8, 0, 1, 0] = 1.0
    x[9, 0, 1, 1] = 0.75
    return x


def test_dead_filter_reported_with_the_exact_input_count() -> None:
    model = Thresholds()
    plain = copy.deepcopy(model)
    d = diagnose(model, images(), batch_size=3, data_name="the ten images")
    assert_same_model(model, plain)
    s = d.layer("conv")
    assert (s.filters, s.inputs, s.activation) == (3, 10, "ReLU")
    # image 0 and 1 are all zero → filter 0 is zero on them; image 2 has 0.2 at (1, 1): not zero
    assert s.zero_inputs == [2, 10, 7]
    assert s.dead == [1] and s.mostly_dead == []
    assert s.dead_fraction == pytest.approx(1 / 3)
    x = images()
    a = torch.relu(x * 1.0 + torch.tensor([0.0, -100.0, -0.5]).view(1, 3, 1, 1))  # (10, 3, 2, 2)
    assert s.zero_fraction == pytest.approx((a == 0).float().mean(dim=(0, 2, 3)).tolist())
    assert s.max_activation == pytest.approx([1.0, 0.0, 0.5])
    assert s.top_input == [8, 0, 8]  # first input reaching the max (filter 1: never above 0)
    assert torch.allclose(s.mean_map, a.mean(dim=0))
    assert torch.equal(s.top_map[0], a[8, 0]) and torch.equal(s.top_map[2], a[8, 2])
    dead = d.of_kind("dead")
    assert len(dead) == 1
    f = dead[0]
    assert (f.layer, f.filters, f.severity) == ("conv", (1,), "medium")
    assert f.summary == (
        "1 of 3 filters of conv are dead on this data (10 inputs of the ten images): "
        "their activation map is zero on all 10 inputs"
    )
    assert f.evidence["zero_on_inputs"] == {"1": 10} and f.evidence["inputs"] == 10
    assert "learning rate" in f.advice and "LeakyReLU" in f.advice and "may" in f.advice
    assert d.of_kind("mostly_dead") == [] and d.of_kind("noisy") == []  # 1×1 filters: no roughness
    assert s.roughness is None
    assert d.gradients == "not measured: the data has no labels"


def test_mostly_dead_threshold_and_a_filter_dead_on_one_dataset_only() -> None:
    model = Thresholds()
    d = diagnose(model, images(), mostly_dead=0.7)
    assert d.layer("conv").mostly_dead == [2]  # zero on 7 of 10 ≥ 0.7, but not on all
    (f,) = d.of_kind("mostly_dead")
    assert f.filters == (2,) and f.evidence["zero_on_inputs"] == {"2": 7}
    # filter 2 fires only above 0.5: dead on the dim images, alive on the bright ones
    dim, bright = images()[:7], images()[7:]
    on_dim = diagnose(model, dim, data_name="dim images")
    on_bright = diagnose(model, bright, data_name="bright images")
    assert on_dim.layer("conv").dead == [1, 2]
    assert on_bright.layer("conv").dead == [1]
    (f_dim,) = on_dim.of_kind("dead")
    assert f_dim.summary.startswith("2 of 3 filters of conv are dead on this data (7 inputs of dim images)")
    assert "They may still fire on inputs unlike these." in f_dim.advice


def test_batching_and_data_forms_give_identical_counts() -> None:
    x = images()
    y = torch.tensor([0, 1] * 5)
    model = Thresholds()
    ref = diagnose(model, x, batch_size=10).layer("conv")
    forms = [
        diagnose(model, (x, y), batch_size=4, gradients=False),
        diagnose(model, TensorDataset(x, y), batch_size=3, gradients=False),
        diagnose(model, DataLoader(TensorDataset(x), batch_size=6), gradients=False),
    ]
    for d in forms:
        s = d.layer("conv")
        assert (s.zero_inputs, s.top_input, s.inputs) == (ref.zero_inputs, ref.top_input, 10)
        assert torch.allclose(s.mean_map, ref.mean_map) and torch.equal(s.top_map, ref.top_map)
    # 10 batches of one: every count from all of them, mean maps and zero shares from 4 spread out
    one = diagnose(model, x, batch_size=1)
    s = one.layer("conv")
    assert (s.zero_inputs, s.top_input, s.inputs, s.map_inputs) == (ref.zero_inputs, ref.top_input, 10, 4)
    picked = [0, 2, 5, 7]  # i * 10 // 4
    a = torch.relu(x + torch.tensor([0.0, -100.0, -0.5]).view(1, 3, 1, 1))  # (10, 3, 2, 2)
    assert torch.allclose(s.mean_map, a[picked].mean(dim=0))
    assert s.zero_fraction == pytest.approx((a[picked] == 0).float().mean(dim=(0, 2, 3)).tolist())
    assert "Mean activation maps and shares of zeros are from 4 of the inputs" in one.notes[-1]
    limited = diagnose(model, x, batch_size=4, limit=7).layer("conv")  # the 7 dim images
    assert limited.inputs == 7 and limited.zero_inputs == [2, 7, 7]


def test_json_has_every_number_and_no_nan() -> None:
    d = diagnose(Thresholds(), images(), data_name="the ten images")
    doc = json.loads(d.to_json())
    assert doc["inputs"] == 10 and doc["data"] == "the ten images"
    assert doc["lr"] == 0.01 and doc["lr_assumed"] is True
    conv = next(layer for layer in doc["layers"] if layer["name"] == "conv")
    assert conv["zero_inputs"] == [2, 10, 7] and conv["dead"] == [1] and conv["roughness"] is None
    assert doc["findings"][0]["kind"] == "dead" and doc["findings"][0]["filters"] == [1]
    assert set(doc["thresholds"]) >= {"mostly_dead", "noisy_roughness", "update_ratio_high"}
    assert all("meaning" in t for t in doc["thresholds"].values())
    fc = next(layer for layer in doc["layers"] if layer["name"] == "fc")
    assert fc["inputs"] == 0 and fc["dead"] == []  # no activation after fc: weights only


# ------------------------------------------------------------------------------ roughness
def test_roughness_exact_values() -> None:
    const = torch.ones(1, 2, 3, 3)
    checker = (torch.arange(3).view(3, 1) + torch.arange(3).view(1, 3)) % 2 * 2.0 - 1  # ±1
    ramp = torch.tensor([[0.0, 1.0, 2.0]]).expand(3, 3)  # columns 0,1,2
    zero = torch.zeros(1, 1, 3, 3)
    w = torch.cat([const, torch.stack([checker, checker]).unsqueeze(0),
                   torch.stack([ramp, ramp]).unsqueeze(0), zero.expand(1, 2, 3, 3)])  # fmt: skip
    r = roughness(w)  # (4,)
    assert r[0].item() == 0.0
    assert r[1].item() == 2.0  # every neighbour pair differs by 2: 4 / (2 · 1)
    # ramp: 6 horizontal pairs differ by 1, 6 vertical by 0 → mean 0.5; mean square (0+1+4)/3
    assert r[2].item() == pytest.approx(0.5 / (2 * 5 / 3))
    assert math.isnan(r[3].item())
    # pairs never cross channels: opposite colours in R and G do not add roughness
    two_colours = torch.stack([torch.ones(3, 3), -torch.ones(3, 3)]).unsqueeze(0)
    assert roughness(two_colours).item() == 0.0
    # white noise scores 1 on average whatever the size
    torch.manual_seed(0)
    assert roughness(torch.randn(4000, 3, 5, 5)).mean().item() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="at least 2 taps"):
        roughness(torch.ones(2, 2, 1, 1))
    with pytest.raises(ValueError, match="conv filters"):
        roughness(torch.ones(2, 2))


def test_noisy_first_layer_found_and_deeper_layers_not_flagged() -> None:
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1), nn.ReLU())
    checker = ((torch.arange(3).view(3, 1) + torch.arange(3).view(1, 3)) % 2 * 2.0 - 1)  # (3, 3) ±1
    with torch.no_grad():
        net[0].weight.copy_(torch.stack([checker, torch.ones(3, 3), -checker]).unsqueeze(1))
        net[0].bias.fill_(1.0)
        net[2].weight.copy_(checker.expand(2, 3, 3, 3))  # rough too, but deeper: shown, not flagged
        net[2].bias.fill_(1.0)
    d = diagnose(net, torch.rand(4, 1, 5, 5))
    assert d.layer("0").roughness == [2.0, 0.0, 2.0]
    assert d.layer("2").roughness == [2.0, 2.0]
    (f,) = d.of_kind("noisy")
    assert (f.layer, f.filters, f.severity) == ("0", (0, 2), "medium")
    assert f.evidence["median_roughness"] == 2.0 and f.evidence["threshold"] == 0.8
    assert "(weights only: does not depend on the data)" in f.summary
    assert "undertrained" in f.advice and "regularisation" in f.advice
    assert diagnose(net, torch.rand(4, 1, 5, 5), noisy=2.5).of_kind("noisy") == []


# ------------------------------------------------------------------------------ gradients
def test_gradient_norms_and_update_ratio_match_plain_autograd() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    plain = copy.deepcopy(net)
    d = diagnose(net, (x, y), batch_size=2, grad_batches=None, lr=0.1)
    assert_same_model(net, plain)
    norms: dict[str, list[float]] = {"0": [], "3": []}
    for i in range(0, 6, 2):
        loss = F.cross_entropy(plain(x[i : i + 2]), y[i : i + 2])
        g0, g3 = torch.autograd.grad(loss, [plain[0].weight, plain[3].weight])
        norms["0"].append(g0.double().norm().item())
        norms["3"].append(g3.double().norm().item())
    for name, param in (("0", plain[0].weight), ("3", plain[3].weight)):
        s = d.layer(name)
        g = sum(norms[name]) / 3
        assert s.grad_batches == 3
        assert s.grad_norm == pytest.approx(g, rel=1e-6)
        assert s.weight_norm == pytest.approx(param.double().norm().item(), rel=1e-12)
        assert s.update_ratio == pytest.approx(0.1 * g / param.double().norm().item(), rel=1e-6)
    assert d.lr == 0.1 and d.lr_assumed is False
    assert d.gradients.startswith("cross-entropy against the labels on 3 batch(es) (every batch) (6 inputs")
    assert net[0].weight.grad is None  # no .grad written into the model


def test_gradient_batches_are_spread_over_the_data() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    seen: list[int] = []

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(int(y[0]))
        return F.cross_entropy(logits, y.clamp(max=1))

    x, y = torch.zeros(20, 1, 2, 2), torch.arange(20)
    d = diagnose(net, (x, y), batch_size=2, grad_batches=4, loss_fn=loss_fn)
    assert seen == [0, 4, 10, 14]  # batches 0, 2, 5, 7 of 10
    assert d.layer("0").grad_batches == 4
    assert "the given loss_fn on 4 batch(es)" in d.gradients


def test_update_ratio_findings_and_depth_flags() -> None:
    assert update_ratio(grad_norm=2.0, weight_norm=4.0, lr=0.01) == 0.005
    assert update_ratio(grad_norm=1.0, weight_norm=0.0, lr=0.01) == math.inf
    flags = depth_flags([1e-7, 1e-2, 1e-3])
    assert flags[0] is not None and (flags[0].kind, flags[0].against) == ("vanishing", 1)
    assert flags[0].factor == pytest.approx(1e-5)
    assert flags[1] is None and flags[2] is None  # 10× apart is fine; the last has nothing after it
    flags = depth_flags([1.0, 1e-4, 1e-3])
    assert flags[0] is not None and (flags[0].kind, flags[0].against) == ("exploding", 1)
    assert flags[0].factor == pytest.approx(1e4)
    assert [f.kind if f else None for f in depth_flags([math.nan, 1.0])] == ["exploding", None]
    # a net whose first layer gets a tiny gradient: scaled down 1e4 after the ReLU
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
    with torch.no_grad():
        net[0].weight.mul_(1e4)  # large W, same-sized gradient: relative gradient 1e4 smaller
        net[0].bias.fill_(1e4)
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    d = diagnose(net, (x, y), lr=1.0)
    (v,) = d.of_kind("vanishing_gradient")
    assert v.layer == "0" and v.evidence["compared_with"] == "3"
    assert v.evidence["factor"] < 1e-3 and v.summary.startswith("gradients may be vanishing at 0 on this data")
    high = [f for f in d.of_kind("update_ratio") if f.severity == "medium"]
    assert [f.layer for f in high] == ["3"]  # lr 1: the fc step is far above 1e-2 of its weights
    assert "(assumed" not in high[0].summary and "Adam" in high[0].advice


# ------------------------------------------------------------------------------ saturation, NaN
def test_saturated_tanh_units_and_nonfinite_maps() -> None:
    a = torch.tensor([[[0.995, -0.999, 0.5], [0.0, 0.2, -0.99]]])  # (B=1, C=2, S=3)
    assert saturated_count(a, "tanh").tolist() == [2, 1]  # |a| ≥ 0.99
    assert saturated_count(torch.tensor([[[0.005, 0.5, 0.995]]]), "sigmoid").tolist() == [2]
    assert saturated_count(a, "relu") is None

    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.Tanh())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.copy_(torch.tensor([5.0, 0.0, 1.0]))  # tanh 0.9999 / 0 / 0.76
    d = diagnose(net, torch.rand(3, 1, 2, 2))
    s = d.layer("0")
    assert s.saturated_fraction == [1.0, 0.0, 0.0]
    (f,) = d.of_kind("saturated")
    assert f.filters == (0,) and f.evidence["layer_fraction"] == pytest.approx(1 / 3)
    (dead,) = d.of_kind("dead")  # tanh(0) = 0 everywhere: collapsed, and said so without ReLU talk
    assert dead.filters == (1,) and "collapsed to zero weights" in dead.advice
    assert "LeakyReLU" not in dead.advice

    with torch.no_grad():
        net[0].bias[2] = math.nan
    d = diagnose(net, torch.rand(3, 1, 2, 2))
    (f,) = d.of_kind("nonfinite")
    assert f.filters == (2,) and f.severity == "high" and f.evidence["nonfinite_inputs"] == {"2": 3}
    doc = json.loads(d.to_json())  # NaN never reaches the JSON
    assert doc["layers"][0]["max_activation"][2] is None


# ------------------------------------------------------------------------------ model safety
class Branchy(nn.Module):
    """Functional ReLU, in-place ReLU, BatchNorm, a shared ReLU module, dropout: every kind of
    block and a training-mode module inside an eval-mode parent."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(self.conv1(x)))
        b = self.act(self.conv2(a))
        b = self.act(b + a)  # the shared module again: a lone activation
        return self.fc(self.drop(b.mean(dim=(2, 3))))


def test_every_kind_of_model_left_unchanged_and_without_hooks() -> None:
    torch.manual_seed(0)
    model = Branchy()
    model.eval()
    model.drop.train()  # mixed modes must come back exactly
    plain = copy.deepcopy(model)
    x, y = torch.rand(6, 3, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    d = diagnose(model, (x, y), batch_size=4)
    assert_same_model(model, plain)
    assert model.drop.training and not model.bn1.training
    assert [s.name for s in d.layers] == ["conv1", "conv2", "act#1", "fc"]
    assert [s.activation for s in d.layers] == ["relu", "ReLU", "ReLU", None]
    assert d.layer("conv1").inputs == 6 and d.layer("act#1").filters == 4
    assert d.layer("conv1").grad_batches == 2 and d.layer("fc").grad_norm is not None
    # the same numbers as an independent oracle: the maps computed by hand in eval mode
    with torch.no_grad():
        plain.eval()
        a1 = F.relu(plain.bn1(plain.conv1(x)))  # (6, 4, 5, 5)
    zero = (a1.flatten(2).amax(dim=2) == 0).sum(dim=0).tolist()
    assert d.layer("conv1").zero_inputs == zero
    assert torch.allclose(d.layer("conv1").mean_map, a1.mean(dim=0), atol=1e-6)
    # layer selection
    only = diagnose(model, x, ["conv2"])
    assert [s.name for s in only.layers] == ["conv2"]
    assert_same_model(model, plain)


class ModulesOnly(nn.Module):
    """Every activation a module: the light path (forward hooks) after the first probed batch.
    A shared in-place ReLU called twice per pass, BatchNorm, a tanh, a linear block with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.tanh = nn.Tanh()
        self.fc1 = nn.Linear(4, 5)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.bn1(self.conv1(x)))
        b = self.act(self.conv2(a) - 0.3)  # the shared module again, on a computed input: lone
        c = self.tanh(b * 3)
        return self.fc2(self.relu(self.fc1(c.mean(dim=(2, 3)))))


def test_light_path_matches_a_probe_on_every_batch() -> None:
    torch.manual_seed(0)
    model = ModulesOnly().eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
    plain = copy.deepcopy(model)
    x, y = torch.randn(9, 3, 4, 4), torch.tensor([0, 1, 2] * 3)
    d = diagnose(model, (x, y), batch_size=3, grad_batches=None)
    assert_same_model(model, plain)
    # the oracle: a Probe around every batch, autograd for the gradients, observe() each trace
    oracle = Diagnoser(data="the given (X, y) tensors")
    with Probe(plain, keep=("a", "weight", "grad_weight")) as probe:
        for i in range(0, 9, 3):
            loss = F.cross_entropy(plain(x[i : i + 3]), y[i : i + 3])
            torch.autograd.grad(loss, [p for n, p in plain.named_parameters() if n.endswith("weight") and "bn" not in n])
            oracle.observe(probe.trace)
    o = oracle.result()
    assert [s.name for s in d.layers] == [s.name for s in o.layers] == ["conv1", "conv2", "act#1", "tanh", "fc1", "fc2"]
    for s, t in zip(d.layers, o.layers, strict=True):
        assert (s.zero_inputs, s.top_input, s.inputs, s.dead, s.grad_batches) == (
            t.zero_inputs, t.top_input, t.inputs, t.dead, t.grad_batches), s.name  # fmt: skip
        assert s.max_activation == t.max_activation and s.saturated_fraction == t.saturated_fraction
        assert s.zero_fraction == pytest.approx(t.zero_fraction)
        if s.grad_norm is not None or t.grad_norm is not None:
            assert s.grad_norm == pytest.approx(t.grad_norm, rel=1e-6), s.name
        for field in ("mean_map", "top_map"):
            a, b = getattr(s, field), getattr(t, field)
            assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6), (s.name, field)
    assert d.layer("conv2").activation is None and d.layer("act#1").filters == 4
    assert count_hooks(model) == 0
    # this model takes the light path; one with a functional ReLU stays with the Probe
    for net, light in ((plain, True), (Branchy().eval(), False)):
        with Probe(net, keep=("a", "weight")) as probe, torch.no_grad():
            net(torch.rand(1, 3, 4, 4))
        assert (_Tap.of(net, probe.trace, Diagnoser()) is not None) == light


class Boom(nn.Module):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2)
        self.calls, self.at = 0, at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("boom")
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("labels", [False, True])
def test_no_hook_left_and_model_unchanged_when_the_forward_raises(labels: bool) -> None:
    torch.manual_seed(0)
    model = Boom(at=3)
    model.train()
    plain = copy.deepcopy(model)
    x, y = torch.rand(8, 1, 2, 2), torch.tensor([0, 1] * 4)
    with pytest.raises(RuntimeError, match="boom"):
        diagnose(model, (x, y) if labels else x, batch_size=2)
    model.calls = plain.calls = 0
    assert_same_model(model, plain)
    assert model.training and all(p.grad is None for p in model.parameters())
    # a bad loss is an error too when gradients are asked for, with the same guarantees
    # (without gradients=True such labels skip gradient health: test_diagnose_labels.py)
    model.at = 0
    with pytest.raises(ValueError, match="labels of a batch run from 2 to 3 but the model has 2 outputs"):
        diagnose(model, (x, torch.arange(8)), batch_size=2, gradients=True)
    assert count_hooks(model) == 0 and model.training


def test_bad_arguments_fail_fast_with_one_clear_error() -> None:
    model, x = Thresholds(), images()
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ({"limit": 0}, ValueError, "limit must be a positive int"),
        ({"mostly_dead": 1.5}, ValueError, "mostly_dead must be a fraction"),
        ({"noisy": 0.0}, ValueError, "noisy must be a positive roughness"),
        ({"lr": -1.0}, ValueError, "lr must be a positive number"),
        ({"grad_batches": 0}, ValueError, "grad_batches must be a positive int"),
        ({"gradients": True}, ValueError, "gradients=True needs labels"),
        ({"loss_fn": 3}, TypeError, "loss_fn must be callable"),
    ]
    for kwargs, exc, text in cases:
        with pytest.raises(exc, match=text):
            diagnose(model, x, **kwargs)  # type: ignore[arg-type]
        assert count_hooks(model) == 0
    with pytest.raises(TypeError, match=r"needs an nn\.Module"):
        diagnose("net", x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be a Dataset, a DataLoader"):
        diagnose(model, [1, 2, 3])
    with pytest.raises(ValueError, match="a DataLoader brings its own batch size"):
        diagnose(model, DataLoader(TensorDataset(x)), batch_size=4)
    with pytest.raises(ValueError, match="X and y differ in length"):
        diagnose(model, (x, torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match="X must be a float tensor"):
        diagnose(model, torch.zeros(4, 1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="no inputs"):
        diagnose(model, x[:0])
    with pytest.raises(ValueError, match="class indices"):
        diagnose(model, (x, torch.zeros(10)))
    assert count_hooks(model) == 0


def test_diagnoser_streams_traces_from_a_users_own_probe() -> None:
    model = Thresholds()
    diag = Diagnoser(data="my stream")
    with Probe(model, keep=("a", "weight")) as probe, torch.no_grad():
        for part in images().split(4):
            model(part)
            diag.observe(probe.trace)
    d = diag.result()
    assert isinstance(d, Diagnosis)
    assert d.inputs == 10 and d.layer("conv").zero_inputs == [2, 10, 7]
    assert d.of_kind("dead")[0].summary.startswith("1 of 3 filters of conv are dead on this data (10 inputs of my stream)")
    with pytest.raises(ValueError, match="unknown finding kind"):
        d.of_kind("sad")
    with pytest.raises(KeyError, match="no layer 'nope'"):
        d.layer("nope")
    assert count_hooks(model) == 0
