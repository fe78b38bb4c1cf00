"""Patterns that were already right and must stay right (issue 8 §1), on faithful small replicas
checked by the autograd oracle: MobileNetV3's inverted residual (SE gate, hard-swish,
hard-sigmoid), EfficientNet's MBConv (SiLU, stochastic depth in training), GoogLeNet's
functional in-place relu and concat, ShuffleNet's channel split/shuffle; and, when they import,
the real timm and torchvision definitions."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from capture._oracle import Keep, check
from torch import Tensor, nn

from convscope.capture import Probe, count_hooks


def cna(c_in: int, c_out: int, k: int, *, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """torchvision.ops.Conv2dNormActivation: conv (no bias) → BN → activation(inplace=True)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation."""

    def __init__(self, c: int, squeeze: int, act: type[nn.Module], scale: type[nn.Module]) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.activation = act()
        self.scale_activation = scale()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth, mode "row"."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = torch.empty([x.shape[0], 1, 1, 1], dtype=x.dtype).bernoulli_(survival)
        return x * noise.div_(survival)


class InvertedResidual(nn.Module):
    """MobileNetV3's (hard-swish, SE with hard-sigmoid) or EfficientNet's MBConv (SiLU, SE with
    sigmoid, stochastic depth): expand → depthwise → SE → project, plus the input."""

    def __init__(self, c: int, act: type[nn.Module], gate: type[nn.Module], p: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            cna(c, 4 * c, 1, act=act), cna(4 * c, 4 * c, 3, groups=4 * c, act=act),
            SqueezeExcitation(4 * c, c, act=nn.ReLU if gate is nn.Hardsigmoid else nn.SiLU, scale=gate),
            cna(4 * c, c, 1, act=None),
        )  # fmt: skip
        self.stochastic_depth = StochasticDepth(p)

    def forward(self, x: Tensor) -> Tensor:
        result = self.stochastic_depth(self.block(x))
        result += x
        return result


class Net(nn.Module):
    def __init__(self, body: nn.Module, c: int) -> None:
        super().__init__()
        self.stem = cna(3, c, 3, stride=2, act=nn.Hardswish)
        self.body = body
        self.fc = nn.Linear(c, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(self.stem(x)).mean(dim=(2, 3)))


def _cna(seq: nn.Sequential, x: Tensor, keep: Keep, name: str, act: str | None) -> Tensor:
    z = keep(f"{name}:z", seq[1](keep(f"{name}:conv", seq[0](x))))
    if act is None:
        return z
    return keep(f"{name}:a", getattr(F, act)(z))


def _inverted_reference(act: str, gate: str, se_act: str, p: float) -> object:
    def reference(m: nn.Module, x: Tensor, keep: Keep) -> Tensor:
        h = _cna(m.stem, x, keep, "stem.0", "hardswish")
        blk = m.body.block
        e = _cna(blk[0], h, keep, "body.block.0.0", act)
        d = _cna(blk[1], e, keep, "body.block.1.0", act)
        se = blk[2]
        s = keep("body.block.2.fc1:z", se.fc1(F.adaptive_avg_pool2d(d, 1)))
        s = keep("body.block.2.fc2:z", se.fc2(keep("body.block.2.fc1:a", getattr(F, se_act)(s))))
        g = keep("body.block.2.fc2:a", getattr(F, gate)(s))
        out = _cna(blk[3], g * d, keep, "body.block.3.0", None)
        if m.training and p > 0:
            noise = torch.empty([out.shape[0], 1, 1, 1]).bernoulli_(1 - p) / (1 - p)
            out = out * noise
        return m.fc((out + h).mean(dim=(2, 3)))

    return reference


@pytest.mark.parametrize(
    ("act_cls", "gate_cls", "act", "gate", "se_act", "p", "train"),
    [
        (nn.Hardswish, nn.Hardsigmoid, "hardswish", "hardsigmoid", "relu", 0.0, False),  # MobileNetV3
        (nn.SiLU, nn.Sigmoid, "silu", "sigmoid", "silu", 0.5, True),  # EfficientNet, stochastic depth on
        (nn.SiLU, nn.Sigmoid, "silu", "sigmoid", "silu", 0.5, False),
    ],
)
def test_inverted_residual_with_se_gate(
    act_cls: type[nn.Module], gate_cls: type[nn.Module], act: str, gate: str, se_act: str, p: float, train: bool
) -> None:
    model = Net(InvertedResidual(4, act_cls, gate_cls, p), 4).train(train)
    names = ("stem.0", "body.block.0.0", "body.block.1.0", "body.block.2.fc1", "body.block.2.fc2", "body.block.3.0")
    reference = _inverted_reference(act, gate, se_act, p)
    trace = check(model, torch.randn(4, 3, 8, 8), reference, {n: n for n in names}, seed=3)  # type: ignore[arg-type]
    assert list(trace) == [*names, "fc"]
    dw = trace["body.block.1.0"]
    assert dw.spec.groups == 16 and dw.weight.shape == (16, 1, 3, 3)
    assert (dw.activation, dw.norm_name, dw.act_name) == (act_cls.__name__, "body.block.1.1", "body.block.1.2")
    assert trace["body.block.2.fc2"].activation == gate_cls.__name__
    project = trace["body.block.3.0"]
    assert project.a is None and (project.z < 0).any()  # `result += x` wrote a copy, not z


# ---- GoogLeNet ---------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """torchvision's GoogLeNet BasicConv2d: conv → BN(eps=0.001) → F.relu(inplace=True)."""

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(c, 2, 1)
        self.branch2 = nn.Sequential(BasicConv2d(c, 2, 1), BasicConv2d(2, 3, 3))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), BasicConv2d(c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(3, 4, 3)
        self.inception = Inception(4)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.inception(self.conv1(x)).mean(dim=(2, 3)))


def _googlenet_reference(m: nn.Module, x: Tensor, keep: Keep) -> Tensor:
    def basic(b: nn.Module, h: Tensor, name: str) -> Tensor:
        z = keep(f"{name}.conv:z", b.bn(keep(f"{name}.conv:conv", b.conv(keep(f"{name}.conv:x", h)))))
        return keep(f"{name}.conv:a", F.relu(z))

    h = basic(m.conv1, x, "conv1")
    i = m.inception
    b1 = basic(i.branch1, h, "inception.branch1")
    b2 = basic(i.branch2[1], basic(i.branch2[0], h, "inception.branch2.0"), "inception.branch2.1")
    b4 = basic(i.branch4[1], F.max_pool2d(h, 3, 1, 1), "inception.branch4.1")
    return m.fc(torch.cat([b1, b2, b4], 1).mean(dim=(2, 3)))


def test_googlenet_functional_inplace_relu_and_concat() -> None:
    model = GoogLeNet().eval()
    trace = check(model, torch.randn(2, 3, 6, 6), _googlenet_reference, {"conv1.conv": "conv1.conv", "inception.branch2.1.conv": "inception.branch2.1.conv"})
    b = trace["inception.branch2.1.conv"]
    assert (b.norm_name, b.act_name, b.activation) == ("inception.branch2.1.bn", "inception.branch2.1.relu", "relu")
    assert trace["inception.branch2.1.relu"] is b and (b.z < 0).any()


# ---- ShuffleNet --------------------------------------------------------------------------------
def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """torchvision.models.shufflenetv2.channel_shuffle."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's stride-1 InvertedResidual: split, branch2 on one half, concat, shuffle."""

    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.branch2 = nn.Sequential(
            nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h),
            nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch2(x2)), dim=1), 2)


def _shuffle_reference(m: nn.Module, x: Tensor, keep: Keep) -> Tensor:
    x1, x2 = x.chunk(2, dim=1)
    b = m.branch2
    a = keep("branch2.0:a", F.relu(keep("branch2.0:z", b[1](b[0](keep("branch2.0:x", x2))))))
    d = keep("branch2.3:z", b[4](keep("branch2.3:conv", b[3](a))))
    p = keep("branch2.5:a", F.relu(keep("branch2.5:z", b[6](b[5](d)))))
    return channel_shuffle(torch.cat((x1, p), dim=1), 2)


def test_shufflenet_split_and_channel_shuffle() -> None:
    model = ShuffleUnit(4).eval()
    trace = check(model, torch.randn(2, 4, 5, 5), _shuffle_reference, {"branch2.3": "branch2.3"})
    assert list(trace) == ["branch2.0", "branch2.3", "branch2.5"]
    assert trace["branch2.3"].norm_name == "branch2.4" and trace["branch2.3"].a is None


# ---- the real definitions, when their packages import here -------------------------------------
def _zoo() -> list[tuple[str, str]]:
    return [("timm", n) for n in ("resnet18", "efficientnet_b0", "mobilenetv3_small_050", "convnext_atto", "densenet121")] + [
        ("torchvision", n) for n in ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "densenet121", "googlenet", "shufflenet_v2_x0_5")
    ]  # fmt: skip


@pytest.mark.parametrize(("lib", "arch"), _zoo())
def test_real_definitions(lib: str, arch: str) -> None:
    if importlib.util.find_spec(lib) is None:
        pytest.skip(f"{lib} does not import here (torchvision's PyPI wheel needs CUDA torch; timm needs torchvision)")
    if lib == "timm":
        import timm

        model = timm.create_model(arch, pretrained=False, num_classes=5)
    else:
        import torchvision

        kwargs = {"aux_logits": False, "init_weights": False} if arch == "googlenet" else {}
        model = getattr(torchvision.models, arch)(weights=None, num_classes=5, **kwargs)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with Probe(model) as probe:
        out = model(x)
        out.sum().backward()
    trace = probe.trace
    assert torch.allclose(out, model(x), atol=1e-5)
    for block in trace.values():
        assert block.stale == set(), block.name
        if block.activation is not None:
            assert block.a is not None and block.z is not None and block.grad_a is not None
        for member in block.members:
            assert trace[member] is block
        if block.channels_last:
            assert block.a is None or block.a.shape[1] == block.spec.out_channels
    assert count_hooks(model) == 0
