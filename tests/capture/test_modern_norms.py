"""Pairing on modern layer patterns (issue 8 §1), on faithful small replicas checked by an oracle:
timm's BatchNormAct2d (a norm whose forward calls its activation), a ConvNeXt block (channels-last
LayerNorm and Linear), DenseNet's dense layer and final functional in-place relu, and entry
points other than forward (`forward_features`)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from capture._oracle import Keep, check
from torch import Tensor, nn

from convscope.capture import Probe, UnknownLayerError, count_hooks


# ---- timm BatchNormAct2d --------------------------------------------------------------------
class BatchNormAct2d(nn.BatchNorm2d):
    """timm.layers.norm_act.BatchNormAct2d, cut to its forward: batch norm, drop, then `self.act`."""

    def __init__(self, c: int, act_layer: type[nn.Module] | None = nn.ReLU, inplace: bool = True) -> None:
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = act_layer(inplace=inplace) if act_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        bn_training = self.training or self.running_mean is None
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            bn_training, self.momentum or 0.0, self.eps,
        )  # fmt: skip
        return self.act(self.drop(x))


class GroupNormSiLU(nn.GroupNorm):
    """A norm whose forward calls a functional activation (timm's GroupNormAct with F.silu)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(super().forward(x))


class NormActNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(4)  # ReLU(inplace=True) inside
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = GroupNormSiLU(2, 4)
        self.conv3 = nn.Conv2d(4, 6, 1)
        self.bn3 = BatchNormAct2d(6, act_layer=None)  # apply_act=False: a plain norm
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return self.fc(self.bn3(self.conv3(x)).mean(dim=(2, 3)))


def _norm_act_reference(m: nn.Module, x: Tensor, keep: Keep) -> Tensor:
    bn = m.bn1
    c1 = keep("conv1:conv", m.conv1(keep("conv1:x", x)))
    z1 = keep("conv1:z", F.batch_norm(c1, bn.running_mean, bn.running_var, bn.weight, bn.bias, m.training, bn.momentum, bn.eps))
    a1 = keep("conv1:a", torch.relu(z1))
    c2 = keep("conv2:conv", m.conv2(keep("conv2:x", a1)))
    z2 = keep("conv2:z", F.group_norm(c2, 2, m.bn2.weight, m.bn2.bias, m.bn2.eps))
    a2 = keep("conv2:a", F.silu(z2))
    c3 = keep("conv3:conv", m.conv3(a2))
    b3 = m.bn3
    z3 = keep("conv3:z", F.batch_norm(c3, b3.running_mean, b3.running_var, b3.weight, b3.bias, m.training, b3.momentum, b3.eps))
    return m.fc(z3.mean(dim=(2, 3)))


@pytest.mark.parametrize("train", [False, True])
def test_fused_norm_activation_is_the_conv_blocks_norm_and_activation(train: bool) -> None:
    model = NormActNet().train(train)
    with torch.no_grad():
        model.bn1.running_mean.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
    trace = check(model, torch.randn(2, 3, 6, 6), _norm_act_reference,
                  {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3"})  # fmt: skip
    assert list(trace) == ["conv1", "conv2", "conv3", "fc"]
    b1, b2, b3 = trace["conv1"], trace["conv2"], trace["conv3"]
    assert (b1.norm_name, b1.norm_type, b1.act_name, b1.activation) == ("bn1", "BatchNormAct2d", "bn1.act", "ReLU")
    assert (b2.norm_name, b2.act_name, b2.activation) == ("bn2", "bn2.silu", "silu")
    assert (b3.norm_name, b3.act_name, b3.a) == ("bn3", None, None)
    assert trace["bn1"] is b1 and trace["bn1.act"] is b1 and trace["bn2.silu"] is b2 and trace["bn3"] is b3
    assert (b1.z < 0).any() and b1.stale == set()  # the in-place ReLU did not write into z


@pytest.mark.parametrize("name", ["bn1", "bn1.act", "conv1"])
def test_every_member_name_selects_the_fused_block(name: str) -> None:
    model = NormActNet()
    plain = copy.deepcopy(model)
    x = torch.randn(2, 3, 5, 5)
    with Probe(model, layers=[name]) as probe:
        model(x).sum().backward()
    plain(x).sum().backward()
    assert list(probe.trace) == ["conv1"]
    b = probe.trace[name]
    assert b.norm_name == "bn1" and b.act_name == "bn1.act"
    want_conv = F.conv2d(x, model.conv1.weight, padding=1)
    assert torch.equal(b.x, x) and torch.allclose(b.conv, want_conv, atol=1e-6)
    assert torch.equal(b.a, torch.relu(b.z)) and b.grad_z is not None and b.grad_a is not None
    assert torch.equal(b.grad_weight, plain.conv1.weight.grad)
    assert_same_model(model, plain)


def test_layers_still_rejects_unknown_names() -> None:
    with pytest.raises(UnknownLayerError, match=r"bn1\.act"):
        Probe(NormActNet(), layers=["bn1.acts"])


# ---- ConvNeXt -------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """timm.layers.LayerNorm2d: LayerNorm over C of an NCHW tensor, by permuting around it."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    """torchvision.ops.misc.Permute."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


class ConvNeXtBlock(nn.Module):
    """timm's ConvNeXtBlock (conv_mlp=False): dwconv → permute → LayerNorm → Linear → GELU → Linear
    → layer scale → permute back → + shortcut."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_dw(x).permute(0, 2, 3, 1)
        x = self.fc2(self.act(self.fc1(self.norm(x))))
        x = x.mul(self.gamma.reshape(1, 1, 1, -1)).permute(0, 3, 1, 2)
        return x + shortcut


class CNBlock(nn.Module):
    """torchvision's CNBlock: the same as one Sequential with Permute modules."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
            nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]),
        )  # fmt: skip
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.layer_scale * self.block(x) + x


class ConvNeXt(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 2, stride=2), LayerNorm2d(dim, eps=1e-6))
        self.stage = nn.Sequential(ConvNeXtBlock(dim), CNBlock(dim))
        self.head = nn.Linear(dim, 3)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stage(self.stem(x))

    def forward_head(self, x: Tensor) -> Tensor:
        return self.head(x.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _convnext_reference(m: nn.Module, x: Tensor, keep: Keep) -> Tensor:
    conv, ln = m.stem
    c = keep("stem.0:conv", conv(x))
    n = F.layer_norm(c.permute(0, 2, 3, 1), ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    h = keep("stem.0:z", n.permute(0, 3, 1, 2))
    b = m.stage[0]  # timm style
    c = keep("stage.0.conv_dw:conv", b.conv_dw(keep("stage.0.conv_dw:x", h)))
    n = keep("stage.0.conv_dw:z", b.norm(c.permute(0, 2, 3, 1)), last=True)  # (B, H, W, C)
    keep("stage.0.fc1:x", n, last=True)
    g = keep("stage.0.fc1:a", F.gelu(keep("stage.0.fc1:z", b.fc1(n), last=True)), last=True)
    f2 = keep("stage.0.fc2:z", b.fc2(g), last=True)
    h = (f2 * b.gamma).permute(0, 3, 1, 2) + h
    s = m.stage[1].block  # torchvision style
    n = keep("stage.1.block.0:z", s[2](s[0](h).permute(0, 2, 3, 1)), last=True)
    g = keep("stage.1.block.3:a", F.gelu(s[3](n)), last=True)
    f2 = keep("stage.1.block.5:z", s[5](g), last=True)
    h = m.stage[1].layer_scale * f2.permute(0, 3, 1, 2) + h
    return m.head(h.mean(dim=(2, 3)))


def test_convnext_channels_last_linear_is_a_1x1_conv_and_layernorm_the_dwconvs_norm() -> None:
    model = ConvNeXt()
    x = torch.randn(2, 3, 8, 8)
    weights = {n: n for n in ("stem.0", "stage.0.conv_dw", "stage.0.fc1", "stage.0.fc2", "stage.1.block.3")}
    trace = check(model, x, _convnext_reference, weights)
    assert list(trace) == [
        "stem.0", "stage.0.conv_dw", "stage.0.fc1", "stage.0.fc2",
        "stage.1.block.0", "stage.1.block.3", "stage.1.block.5", "head",
    ]  # fmt: skip
    assert trace["stem.1"] is trace["stem.0"] and trace["stage.0.norm"] is trace["stage.0.conv_dw"]
    dw, fc1, tv = trace["stage.0.conv_dw"], trace["stage.0.fc1"], trace["stage.1.block.3"]
    assert dw.norm_type == "LayerNorm" and dw.z.shape == (2, 4, 4, 4) and dw.a is None
    assert trace["stage.1.block.2"] is trace["stage.1.block.0"]
    for b in (fc1, tv):  # 16 maps of 4×4, not 4 "maps" of 4×16
        assert b.kind == "conv" and b.channels_last and b.activation == "GELU"
        assert b.a.shape == (2, 16, 4, 4) and b.grad_a.shape == (2, 16, 4, 4)
        assert b.weight.shape == b.grad_weight.shape == (16, 4, 1, 1)
        assert b.spec.kernel_size == (1, 1) and b.spec.out_channels == 16
        assert b.spec.formula == "16 × 4 × 1 × 1 + 16 = 80"
    assert trace["head"].kind == "linear" and not trace["head"].channels_last


# ---- entry points other than forward ---------------------------------------------------------
def test_forward_features_and_forward_head_are_one_pass_each_call_of_the_stem_a_new_one() -> None:
    model = ConvNeXt()
    plain = copy.deepcopy(model)
    x = torch.randn(1, 3, 8, 8)
    with Probe(model) as probe:
        feats = model.forward_features(x)
        assert probe.passes == 1 and "stage.0.fc1" in probe.trace and "head" not in probe.trace
        logits = model.forward_head(feats)  # same pass: the head joins it
        assert probe.passes == 1 and "head" in probe.trace
        model.forward_features(x + 1)  # the stem again: a new pass
        assert probe.passes == 2 and torch.equal(probe.trace["stem.0"].x, x + 1)
        model(x)  # the model's own forward is always a pass
        assert probe.passes == 3 and list(probe.trace)[-1] == "head"
    assert torch.equal(logits, plain(x))
    assert_same_model(model, plain)
    assert torch._C._len_torch_function_stack() == 0


def test_functional_calls_between_top_level_module_calls_are_seen() -> None:
    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 2, 3)
            self.bn1 = nn.BatchNorm2d(2)
            self.conv2 = nn.Conv2d(2, 2, 1)

        def forward_features(self, x: Tensor) -> Tensor:
            x = F.relu(self.bn1(self.conv1(x)), inplace=True)
            return torch.tanh(self.conv2(x))

    model = Features().eval()
    x = torch.randn(2, 1, 5, 5)
    with Probe(model) as probe:
        out = model.forward_features(x)
        out.sum().backward()
    b1, b2 = probe.trace["conv1"], probe.trace["conv2"]
    assert (b1.norm_name, b1.act_name, b2.act_name) == ("bn1", "relu", "tanh")
    assert (b1.z < 0).any() and torch.equal(b1.a, torch.relu(b1.z)) and torch.equal(b2.a, out.detach())
    assert b1.grad_z is not None and b1.grad_weight is not None
    assert count_hooks(model) == 0 and torch._C._len_torch_function_stack() == 0


def test_forward_features_raising_leaves_nothing_behind() -> None:
    class Boom(ConvNeXt):
        def forward_features(self, x: Tensor) -> Tensor:
            self.stem(x)
            raise RuntimeError("boom")

    model = Boom()
    plain = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="boom"), Probe(model) as probe:
        model.forward_features(torch.randn(1, 3, 8, 8))
    assert probe.trace["stem.0"].z is not None
    assert_same_model(model, plain)
    assert torch._C._len_torch_function_stack() == 0


# ---- DenseNet --------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """torchvision's _DenseLayer: BN-ReLU-conv1×1-BN-ReLU-conv3×3 over the concatenated features."""

    def __init__(self, c_in: int, growth: int = 2, bn_size: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        concated = torch.cat(features, 1)
        bottleneck = self.conv1(self.relu1(self.norm1(concated)))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, c_in: int, layers: int = 2, growth: int = 2) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(c_in + i * growth, growth) for i in range(layers)})

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """torchvision's DenseNet: features end in norm5; forward applies F.relu(inplace=True)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, 4, 3, padding=1, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(4))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("denseblock1", DenseBlock(4))
        self.features.add_module("norm5", nn.BatchNorm2d(8))
        self.classifier = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        out = F.relu(features, inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


def _densenet_reference(m: nn.Module, x: Tensor, keep: Keep) -> Tensor:
    f = m.features
    h = keep("features.conv0:a", F.relu(keep("features.conv0:z", f.norm0(f.conv0(x)))))
    feats = [h]
    for i, layer in enumerate(f.denseblock1.values()):
        p = f"features.denseblock1.denselayer{i + 1}"
        n1 = keep(f"{p}.relu1:z", layer.norm1(torch.cat(feats, 1)))
        c1 = layer.conv1(keep(f"{p}.relu1:a", F.relu(n1)))
        c2 = keep(f"{p}.conv2:z", layer.conv2(keep(f"{p}.conv1:a", F.relu(keep(f"{p}.conv1:z", layer.norm2(c1))))))
        feats.append(c2)
    z = f.norm5(torch.cat(feats, 1))
    keep("relu:x", z)
    a = keep("relu:a", F.relu(keep("relu:z", z)))
    return m.classifier(a.mean(dim=(2, 3)))


@pytest.mark.parametrize("train", [False, True])
def test_densenet_final_functional_inplace_relu_holds_x_and_z(train: bool) -> None:
    model = DenseNet().train(train)
    weights = {"features.conv0": "features.conv0", "features.denseblock1.denselayer2.conv2": "features.denseblock1.denselayer2.conv2"}
    trace = check(model, torch.randn(2, 3, 5, 5), _densenet_reference, weights)
    final = trace["relu"]
    assert final.kind == "activation" and final.stale == set() and (final.z < 0).any()
    assert torch.equal(final.x, final.z) and torch.equal(final.a, torch.relu(final.z))
    assert trace["features.denseblock1.denselayer1.relu1"].kind == "activation"  # after a concat
    assert trace["features.denseblock1.denselayer1.norm2"] is trace["features.denseblock1.denselayer1.conv1"]


def test_diagnose_counts_the_channels_of_a_channels_last_block() -> None:
    from convscope.analysis.diagnose import diagnose

    model = ConvNeXt().eval()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))
    layers = {s.name: s for s in diagnose(model, (x, y), batch_size=8).layers}  # two batches
    fc1 = layers["stage.0.fc1"].as_dict()
    assert (fc1["kind"], fc1["activation"], fc1["filters"]) == ("conv", "GELU", 16)
    assert count_hooks(model) == 0
