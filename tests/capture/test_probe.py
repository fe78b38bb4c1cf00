"""The capture engine against exact answers: hand-set weights, F.conv2d, and plain autograd."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from torch import nn

from convscope.capture import Probe, UnknownLayerError, capture, count_hooks


def test_hand_set_conv_relu_exact_values() -> None:
    # 1 input channel 3×3 image, one 2×2 filter of ones, bias -10: z = window sums - 10.
    conv = nn.Conv2d(1, 1, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-10.0)
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.arange(9.0).reshape(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]
    with Probe(model) as probe:
        model(x).sum().backward()
    b = probe.trace["0"]
    assert b.conv.tolist() == [[[[-2.0, 2.0], [10.0, 14.0]]]]
    assert b.z.tolist() == b.conv.tolist()
    assert b.a.tolist() == [[[[0.0, 2.0], [10.0, 14.0]]]]
    assert b.grad_a.tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]]
    assert b.grad_z.tolist() == [[[[0.0, 1.0], [1.0, 1.0]]]]
    # dL/dW[i,j] = sum over live outputs of the input under that weight
    assert b.grad_weight.tolist() == [[[[1.0 + 3 + 4, 2.0 + 4 + 5], [4.0 + 6 + 7, 5.0 + 7 + 8]]]]
    assert b.grad_bias.tolist() == [3.0]
    assert b.spec.formula == "1 × 1 × 2 × 2 + 1 = 5"
    assert count_hooks(model) == 0


def _seq(inplace: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, stride=2, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Flatten(),
        nn.Linear(5 * 2 * 2, 3),
    )


def _oracle_seq(model: nn.Sequential, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same forward written out by hand, with autograd.grad for every quantity."""
    w1, b1, w2, b2 = model[0].weight, model[0].bias, model[3].weight, model[3].bias
    z1 = F.conv2d(x, w1, b1, padding=1)
    a1 = torch.relu(z1)
    z2 = F.conv2d(F.max_pool2d(a1, 2), w2, b2, stride=2, padding=1)
    a2 = torch.relu(z2)
    out = model[6](a2.flatten(1))
    loss = out.square().sum()
    names = ["z1", "a1", "z2", "a2", "w1", "b1", "w2", "b2"]
    grads = torch.autograd.grad(loss, [z1, a1, z2, a2, w1, b1, w2, b2])
    result = {f"g_{n}": g for n, g in zip(names, grads, strict=True)}
    result.update(z1=z1.detach(), a1=a1.detach(), z2=z2.detach(), a2=a2.detach(), out=out.detach())
    return result


@pytest.mark.parametrize("inplace", [False, True])
def test_sequential_conv_relu_matches_autograd(inplace: bool) -> None:
    model = _seq(inplace)
    plain = copy.deepcopy(model)
    x = torch.randn(2, 3, 8, 8)
    ref = _oracle_seq(copy.deepcopy(model), x)
    with Probe(model) as probe:
        out = model(x)
        out.square().sum().backward()
    plain_out = plain(x)
    plain_out.square().sum().backward()
    assert torch.equal(out, plain_out)  # the probe does not change what the model computes
    t = probe.trace
    assert list(t) == ["0", "3", "6"]
    b1, b2, fc = t["0"], t["3"], t["6"]
    assert (b1.act_name, b1.activation, b2.act_name) == ("1", "ReLU", "4")
    assert t["1"] is b1 and t["4"] is b2  # the activation's name finds its block
    assert torch.equal(b1.x, x)
    assert torch.allclose(b1.conv, F.conv2d(x, model[0].weight, model[0].bias, padding=1))
    assert torch.equal(b1.z, b1.conv)
    assert (b1.z < 0).any(), "z must keep its negatives even with an in-place ReLU"
    assert torch.equal(b1.a, torch.relu(b1.z))
    assert torch.equal(b2.a, torch.relu(b2.z))
    assert torch.allclose(b1.z, ref["z1"]) and torch.allclose(b2.z, ref["z2"])
    for blk, i in ((b1, "1"), (b2, "2")):
        assert torch.allclose(blk.grad_z, ref[f"g_z{i}"], atol=1e-6)
        assert torch.allclose(blk.grad_a, ref[f"g_a{i}"], atol=1e-6)
        assert torch.allclose(blk.grad_weight, ref[f"g_w{i}"], atol=1e-5)
        assert torch.allclose(blk.grad_bias, ref[f"g_b{i}"], atol=1e-5)
    assert torch.equal(b1.grad_weight, model[0].weight.grad)
    assert fc.kind == "linear" and fc.a is None and torch.equal(fc.z, out.detach())
    assert fc.spec.formula == "3 × 20 + 3 = 63"
    assert_same_model(model, plain)
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("train", [True, False])
def test_conv_batchnorm_relu_z_after_norm(train: bool) -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(inplace=True))
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.5, -0.5, 1.0]))
        model[1].running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    model.train(train)
    plain = copy.deepcopy(model)
    x = torch.randn(4, 2, 6, 6)
    with Probe(model) as probe:
        y = model(x)
        y.sum().backward()
    py = plain(x)
    py.sum().backward()
    assert torch.equal(y, py)
    b = probe.trace["0"]
    assert b.norm_name == "1" and b.norm_type == "BatchNorm2d" and b.act_name == "2"
    assert torch.allclose(b.conv, F.conv2d(x, model[0].weight, model[0].bias))
    expected_z = copy.deepcopy(plain[1]).train(train)(b.conv) if not train else None
    if expected_z is not None:
        assert torch.allclose(b.z, expected_z, atol=1e-6)
    else:  # batch statistics
        mean = b.conv.mean(dim=(0, 2, 3), keepdim=True)
        var = b.conv.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        assert torch.allclose(b.z, (b.conv - mean) / torch.sqrt(var + 1e-5), atol=1e-5)
    assert torch.equal(b.a, torch.relu(b.z)) and torch.equal(b.a, py.detach())
    # dL/dz through the norm: ones where z > 0
    assert torch.equal(b.grad_z, (b.z > 0).float())
    assert torch.equal(b.grad_a, torch.ones_like(b.a))
    assert torch.allclose(b.grad_weight, plain[0].weight.grad, atol=1e-6)
    assert t_names(probe) == ["0"]
    assert_same_model(model, plain)


def t_names(probe: Probe) -> list[str]:
    return list(probe.trace)


class Functional(nn.Module):
    """One conv per functional activation, called the ways people write them."""

    kinds = ("F.relu", "torch.relu", "relu_", "leaky_relu", "tanh", "sigmoid", "gelu")

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(2, 2, 3, padding=1) for _ in self.kinds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.convs
        x = F.relu(c[0](x))
        x = torch.relu(c[1](x))
        x = c[2](x).relu_()
        x = F.leaky_relu(c[3](x), 0.1)
        x = torch.tanh(c[4](x))
        x = torch.sigmoid(c[5](x))
        return F.gelu(c[6](x))


FUNCS = {
    "relu": torch.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.1),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
}


def test_functional_activations_seen_through_torch_function_mode() -> None:
    model = Functional()
    plain = copy.deepcopy(model)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    with Probe(model) as probe:
        model(x).square().sum().backward()
    plain(x).square().sum().backward()
    t = probe.trace
    assert list(t) == [f"convs.{i}" for i in range(7)]
    expected = ["relu", "relu", "relu", "leaky_relu", "tanh", "sigmoid", "gelu"]
    names = [t[f"convs.{i}"].act_name for i in range(7)]
    assert names == ["relu", "relu#1", "relu#2", "leaky_relu", "tanh", "sigmoid", "gelu"]
    for i, fn in enumerate(expected):
        b = t[f"convs.{i}"]
        assert b.activation == fn
        assert torch.allclose(b.conv, F.conv2d(b.x, model.convs[i].weight, model.convs[i].bias, padding=1))
        assert torch.equal(b.a, FUNCS[fn](b.z)), fn
        assert b.grad_weight is not None and torch.allclose(
            b.grad_weight, plain.convs[i].weight.grad, atol=1e-5
        )
    assert (t["convs.2"].z < 0).any()  # x.relu_() did not corrupt z
    # grad_a / grad_z against autograd.grad on the same tensors, recomputed by hand
    zs, acts, h = [], [], x
    for i, fn in enumerate(expected):
        z = F.conv2d(h, plain.convs[i].weight, plain.convs[i].bias, padding=1)
        h = FUNCS[fn](z)
        zs.append(z)
        acts.append(h)
    grads = torch.autograd.grad(h.square().sum(), zs + acts)
    for i in range(7):
        b = t[f"convs.{i}"]
        assert torch.allclose(b.grad_z, grads[i], atol=1e-5)
        assert torch.allclose(b.grad_a, grads[7 + i], atol=1e-5)
    assert_same_model(model, plain)


class Basic(nn.Module):
    """A ResNet basic block whose forward calls one `self.relu` twice."""

    def __init__(self, c: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 3, padding=1)
        self.layer1 = nn.Sequential(Basic(), Basic())
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def test_shared_relu_gives_two_records_and_z_is_what_entered() -> None:
    model = TinyResNet()
    plain, oracle = copy.deepcopy(model), copy.deepcopy(model)
    x = torch.randn(2, 3, 6, 6)
    with Probe(model) as probe:
        model(x).sum().backward()
    plain(x).sum().backward()
    t = probe.trace
    assert list(t) == [
        "stem",
        "layer1.0.conv1", "layer1.0.conv2", "layer1.0.relu#1",
        "layer1.1.conv1", "layer1.1.conv2", "layer1.1.relu#1",
        "fc",
    ]  # fmt: skip
    first, second = t["layer1.0.conv1"], t["layer1.0.relu#1"]
    assert first.act_name == "layer1.0.relu" and first.norm_name == "layer1.0.bn1"
    assert t["layer1.0.conv2"].a is None  # the residual add comes between bn2 and the ReLU
    assert second.kind == "activation" and second.act_name == "layer1.0.relu#1"
    # second ReLU: z = bn2(conv2(.)) + identity, exactly what entered the nonlinearity
    blk0 = oracle.layer1[0]
    stem_out = oracle.stem(x)
    mid = blk0.relu(blk0.bn1(blk0.conv1(stem_out)))
    expected_z = blk0.bn2(blk0.conv2(mid)) + stem_out
    assert torch.allclose(second.z, expected_z, atol=1e-6)
    assert (second.z < 0).any() and torch.equal(second.a, torch.relu(second.z))
    # the bn2 output was not corrupted by `out += identity`
    conv2 = t["layer1.0.conv2"]
    assert torch.allclose(conv2.z, blk0.bn2(blk0.conv2(mid)), atol=1e-6)
    assert torch.allclose(conv2.z + t["stem"].z, second.z, atol=1e-6)
    assert second.grad_z is not None and second.grad_a is not None
    assert torch.allclose(first.grad_weight, plain.layer1[0].conv1.weight.grad, atol=1e-5)
    assert_same_model(model, plain)


def test_dense_blocks_and_tuple_dict_outputs_and_extra_args() -> None:
    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc1 = nn.Linear(8, 4)
            self.act = nn.Tanh()
            self.fc2 = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, scale: float, *, as_dict: bool = False):  # type: ignore[no-untyped-def]
            h = torch.relu(self.conv(x)).flatten(1)
            h = self.act(self.fc1(h))
            out = self.fc2(h) * scale
            return {"logits": out, "hidden": h} if as_dict else (out, h)

    model = Heads()
    x = torch.randn(3, 1, 4, 4)
    for as_dict in (False, True):
        with Probe(model) as probe:
            out = model(x, 2.0, as_dict=as_dict)
            logits = out["logits"] if as_dict else out[0]
            logits.sum().backward()
        t = probe.trace
        assert list(t) == ["conv", "fc1", "fc2"]
        fc1 = t["fc1"]
        assert fc1.kind == "linear" and fc1.activation == "Tanh"
        assert torch.allclose(fc1.conv, F.linear(fc1.x, model.fc1.weight, model.fc1.bias))
        assert torch.equal(fc1.a, torch.tanh(fc1.z))
        assert fc1.grad_a.shape == (3, 4) and fc1.grad_weight.shape == (4, 8)
        assert t["conv"].activation == "relu" and t["conv"].act_name == "relu"
        assert count_hooks(model) == 0


def test_no_grad_and_eval_mode() -> None:
    model = _seq(True).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad(), Probe(model) as probe:
        out = model(x)
    b = probe.trace["0"]
    assert b.a is not None and b.grad_a is None and b.grad_z is None and b.grad_weight is None
    assert torch.equal(probe.trace["6"].z, out)
    assert count_hooks(model) == 0 and not model.training


def test_hooks_removed_and_model_unchanged_when_forward_raises() -> None:
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.bn = nn.BatchNorm2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            F.relu(self.bn(self.conv(x)))
            raise RuntimeError("boom")

    model = Boom()
    plain = copy.deepcopy(model)
    x = torch.randn(2, 1, 3, 3)
    with pytest.raises(RuntimeError, match="boom"), Probe(model):
        model(x)
    with pytest.raises(RuntimeError, match="boom"):
        plain(x)
    assert_same_model(model, plain)
    # the torch function mode is gone too: a later functional call is not recorded anywhere
    assert torch._C._len_torch_function_stack() == 0
    # and a new probe works normally afterwards
    with pytest.raises(RuntimeError), Probe(model) as probe:
        model(x)
    assert probe.trace["conv"].activation == "relu"


def test_layers_filter_and_unknown_names() -> None:
    model = TinyResNet()
    x = torch.randn(1, 3, 6, 6)
    with Probe(model, layers=["layer1.0.conv1", "layer1.1.relu#1"]) as probe:
        model(x).sum().backward()
    assert list(probe.trace) == ["layer1.0.conv1", "layer1.1.relu#1"]
    assert probe.trace["layer1.0.conv1"].grad_weight is not None
    with pytest.raises(UnknownLayerError) as err:
        Probe(model, layers=["layer1.0.conv9"])
    msg = str(err.value)
    assert "layer1.0.conv9" in msg and "layer1.0.conv1" in msg and "fc" in msg
    Probe(Functional(), layers=["relu#2", "convs.3"])  # functional names are accepted
    assert count_hooks(model) == 0


def test_keep_subset_device_and_float16() -> None:
    model = _seq(False)
    x = torch.randn(2, 3, 8, 8)
    with Probe(model, keep=("a", "grad_weight"), dtype=torch.float16, device="cpu") as probe:
        model(x).sum().backward()
    b = probe.trace["0"]
    assert b.x is None and b.z is None and b.conv is None and b.grad_a is None
    assert b.a.dtype == torch.float16 and b.grad_weight.dtype == torch.float16
    assert torch.allclose(b.a.float(), torch.relu(F.conv2d(x, model[0].weight, model[0].bias, padding=1)), atol=1e-2)
    with pytest.raises(ValueError, match="unknown field"):
        Probe(model, keep=("activations",))


def test_weight_is_the_weight_used_in_the_forward_even_after_optimizer_steps() -> None:
    model = _seq(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(2, 3, 8, 8)
    w0 = model[0].weight.detach().clone()
    with Probe(model) as probe:
        model(x).sum().backward()
        opt.step()  # inside the probe
    trace = probe.trace
    opt.step()  # and after it
    assert torch.equal(trace["0"].weight, w0)
    assert not torch.equal(model[0].weight.detach(), w0)
    assert trace["0"].stale == set()


def test_multiple_passes_keep_the_last_and_capture_helper() -> None:
    model = _seq(False)
    with Probe(model) as probe:
        model(torch.zeros(1, 3, 8, 8))
        model(torch.ones(1, 3, 8, 8))
    assert probe.passes == 2 and torch.equal(probe.trace["0"].x, torch.ones(1, 3, 8, 8))
    x = torch.randn(1, 3, 8, 8)
    trace, logits = capture(model, x, target=1)
    assert logits.shape == (1, 3) and model[0].weight.grad is None
    ref = torch.autograd.grad(model(x)[0, 1], model[0].weight)[0]
    assert torch.allclose(trace["0"].grad_weight, ref, atol=1e-6)
    with pytest.raises(ValueError, match="target class 7 out of range"):
        capture(model, x, target=7)
    with pytest.raises(ValueError, match="NaN"):
        capture(model, torch.full((1, 3, 8, 8), float("nan")))
    assert count_hooks(model) == 0


def test_forget_lets_go_of_the_last_trace_and_a_held_one_stays_valid() -> None:
    """After forget() the probe holds no trace (its maps are freed unless the caller holds them),
    `trace` says so, a trace the caller kept is intact, and the next pass gives a new one."""
    model = _seq(False)
    with Probe(model) as probe:
        model(torch.ones(1, 3, 8, 8))
        kept = probe.trace
        gone = weakref.ref(probe.trace["0"].a)
        probe.forget()
        with pytest.raises(RuntimeError, match="no forward pass"):
            _ = probe.trace
        assert torch.equal(kept["0"].x, torch.ones(1, 3, 8, 8))
        del kept
        gc.collect()
        assert gone() is None  # nothing else held the maps
        model(torch.zeros(1, 3, 8, 8))
        assert probe.passes == 2 and torch.equal(probe.trace["0"].x, torch.zeros(1, 3, 8, 8))
    assert count_hooks(model) == 0


def test_probe_without_forward_says_so() -> None:
    with Probe(_seq(False)) as probe:
        pass
    with pytest.raises(RuntimeError, match="no forward pass"):
        _ = probe.trace
    with pytest.raises(TypeError, match=r"nn\.Module"):
        Probe("not a model")  # type: ignore[arg-type]


def test_forward_only_probe_shares_weights_and_says_when_they_changed() -> None:
    model = _seq(False)
    x = torch.randn(1, 3, 8, 8)
    with Probe(model) as probe:
        model(x)  # no backward: the probe does not copy W at close
    block = probe.trace["0"]
    assert block.weight is not None and block.weight.data_ptr() == model[0].weight.data_ptr()
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # changed after the probe closed
    with pytest.warns(UserWarning, match="changed in place after the probe closed"):
        assert block.weight is None
    assert block.stale == {"weight"}
    assert block.bias is not None  # untouched: still valid


def test_overwrite_reads_a_kept_z_before_an_in_place_relu_and_keeps_no_copy() -> None:
    """`overwrite` sees z (with its negatives) just before ReLU(inplace=True) writes into it;
    returning True leaves block.z None (not stale: read, not lost) and a as usual; returning False
    keeps the usual copy. A residual `+=` into a norm's output (z of a block with no activation)
    is seen too. No hook is left; the model computes what it computes without the probe, also
    when the forward raises."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(inplace=True))
    plain = copy.deepcopy(model)
    x = torch.randn(2, 2, 5, 5)
    z_ref = plain[1](plain[0](x)).detach()
    seen: list[tuple[str, str, torch.Tensor]] = []

    def read(block: object, field: str, t: torch.Tensor) -> bool:
        seen.append((block.name, field, t.clone()))  # type: ignore[attr-defined]
        return field == "z"

    with Probe(model, overwrite=read) as probe:
        y = model(x)
        y.sum().backward()
    b = probe.trace["0"]
    assert [(n, f) for n, f, _ in seen] == [("0", "z")]
    assert torch.allclose(seen[0][2], z_ref, atol=1e-6) and (seen[0][2] < 0).any()
    assert b.z is None and not b.stale and torch.equal(b.a, y.detach())
    with Probe(model, overwrite=lambda block, field, t: False) as probe:
        model(x)
    assert torch.allclose(probe.trace["0"].z, z_ref, atol=1e-6)  # the usual copy
    assert count_hooks(model) == 0

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.bn(self.conv(x))
            z = out.detach().clone()
            out += x  # in place into z of the block "conv"
            if x.shape[0] == 3:
                raise RuntimeError("boom")
            return out, z  # type: ignore[return-value]

    net = Residual().eval()
    twin = copy.deepcopy(net)
    seen.clear()
    with Probe(net, overwrite=read) as probe:
        out, z = net(x)
    assert [(n, f) for n, f, _ in seen] == [("conv", "z")] and torch.equal(seen[0][2], z)
    assert probe.trace["conv"].z is None and torch.equal(out, twin(x)[0])
    with pytest.raises(RuntimeError, match="boom"), Probe(net, overwrite=read):
        net(torch.randn(3, 2, 5, 5))
    assert count_hooks(net) == 0 and count_hooks(model) == 0
    assert_same_model(net, twin)


def test_grad_tap_sees_the_gradients_a_full_probe_keeps_without_keeping_them() -> None:
    """`grad_tap` gets dL/da and dL/dz of every block as the backward makes them, equal to what a
    probe that keeps them holds (plain autograd as the oracle for one of them), channels first
    for a channels-last model; with keep=() nothing is kept. No hook is left; the model computes
    what it computes without the probe, also when the backward or the forward raises."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3), nn.Tanh()
    ).to(memory_format=torch.channels_last)
    twin = copy.deepcopy(model)
    x = torch.randn(2, 2, 6, 6).contiguous(memory_format=torch.channels_last)
    with Probe(twin) as full:
        twin(x).square().sum().backward()
    tapped: dict[tuple[str, str], torch.Tensor] = {}

    def tap(block: object, field: str, g: torch.Tensor) -> None:
        tapped[(block.name, field)] = g.clone()  # type: ignore[attr-defined]

    with Probe(model, keep=(), grad_tap=tap) as probe:
        model(x).square().sum().backward()
    assert set(tapped) == {("0", "grad_a"), ("0", "grad_z"), ("3", "grad_a"), ("3", "grad_z")}
    for (name, field), g in tapped.items():
        kept = getattr(full.trace[name], field)
        assert g.shape == kept.shape and torch.allclose(g, kept, atol=1e-6), (name, field)
    a3 = torch.tanh(model[3](model[2](model[1](model[0](x))))).detach().requires_grad_(True)
    (oracle,) = torch.autograd.grad(a3.square().sum(), a3)
    assert torch.allclose(tapped[("3", "grad_a")], oracle, atol=1e-6)
    assert all(b.grad_a is None and b.grad_z is None and b.a is None for b in probe.trace.values())
    assert count_hooks(model) == 0
    plain = copy.deepcopy(model)

    def boom(block: object, field: str, g: torch.Tensor) -> None:
        raise RuntimeError("tap failed")

    with pytest.raises(RuntimeError, match="tap failed"), Probe(model, keep=(), grad_tap=boom):
        model(x).sum().backward()
    with pytest.raises(RuntimeError, match="Given groups"), Probe(model, keep=(), grad_tap=tap):
        model(torch.randn(2, 5, 6, 6))
    plain(x).sum().backward()  # the same calls without a probe
    with pytest.raises(RuntimeError, match="Given groups"):
        plain(torch.randn(2, 5, 6, 6))
    assert count_hooks(model) == 0
    assert_same_model(model, plain)
