"""Attribution methods against oracles: Captum, hand-computed values, an explicit ZF deconvnet.

Every method also leaves no hook, no `.grad`, the same parameters/buffers/`requires_grad`
flags and each module's train/eval mode, on success and when the forward raises.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, GuidedGradCam, LayerGradCam
from captum.attr import GuidedBackprop as CaptumGuided
from captum.attr import Saliency as CaptumSaliency
from torch import Tensor, nn

from convscope.analysis.attribution import (
    METHODS,
    AttributionError,
    Deconvnet,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    Saliency,
    SmoothGrad,
)
from convscope.capture import count_hooks
from convscope.models import resolve_model

warnings.filterwarnings("ignore", module="captum")


# ---- test nets: one set of weights, four ways of writing the ReLUs ---------------------------
class ModuleReLU(nn.Module):
    """conv-ReLU-pool, conv-BN-ReLU, residual add, ReLU, pool, fc: every ReLU an nn.ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU()
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(6 * 4 * 4, 4)

    def body(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.pool(self.relu1(self.conv1(x)))  # (B, 6, 8, 8)
        return h, self.relu2(self.bn2(self.conv2(h)))

    def forward(self, x: Tensor) -> Tensor:
        h, a2 = self.body(x)
        out = self.relu3(a2 + h)  # residual add
        return self.fc(torch.flatten(F.max_pool2d(out, 2), 1))


class FunctionalReLU(ModuleReLU):
    def body(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.pool(F.relu(self.conv1(x)))
        return h, torch.relu(self.bn2(self.conv2(h)))

    def forward(self, x: Tensor) -> Tensor:
        h, a2 = self.body(x)
        return self.fc(torch.flatten(F.max_pool2d(F.relu(a2 + h), 2), 1))


class InplaceReLU(ModuleReLU):
    def body(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.pool(self.conv1(x).relu_())
        return h, F.relu(self.bn2(self.conv2(h)), inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        h, a2 = self.body(x)
        out = a2 + h
        out.relu_()
        return self.fc(torch.flatten(F.max_pool2d(out, 2), 1))


class SharedReLU(ModuleReLU):
    """One nn.ReLU(inplace=True) module called three times (torchvision's ResNet habit)."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def body(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.pool(self.relu(self.conv1(x)))
        return h, self.relu(self.bn2(self.conv2(h)))

    def forward(self, x: Tensor) -> Tensor:
        h, a2 = self.body(x)
        return self.fc(torch.flatten(F.max_pool2d(self.relu(a2 + h), 2), 1))


def _nets() -> dict[str, nn.Module]:
    torch.manual_seed(3)
    ref = ModuleReLU()
    with torch.no_grad():  # BN with non-trivial running statistics and affine parameters
        ref.bn2.running_mean.uniform_(-0.5, 0.5)
        ref.bn2.running_var.uniform_(0.5, 2.0)
        ref.bn2.weight.uniform_(0.5, 1.5)
        ref.bn2.bias.uniform_(-0.2, 0.2)
    nets: dict[str, nn.Module] = {"module": ref}
    for name, cls in (("functional", FunctionalReLU), ("inplace", InplaceReLU), ("shared", SharedReLU)):
        net = cls()
        net.load_state_dict(ref.state_dict())
        nets[name] = net
    for net in nets.values():
        net.eval()
    return nets


def _x(b: int = 2) -> Tensor:
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(7))


# ---- exact against Captum ---------------------------------------------------------------------
@pytest.mark.parametrize("form", ["module", "functional", "inplace", "shared"])
def test_every_relu_form_equals_captum_on_the_nn_relu_model(form: str) -> None:
    nets = _nets()
    ref, net = nets["module"], nets[form]
    x, target = _x(), torch.tensor([1, 3])
    pairs = [
        (GuidedBackprop(net).attribute(x, target), CaptumGuided(ref).attribute(x.clone(), target=target)),
        (Deconvnet(net).attribute(x, target), Deconvolution(ref).attribute(x.clone(), target=target)),
        (Saliency(net).attribute(x, target), CaptumSaliency(ref).attribute(x.clone(), target=target)),
        (
            GradCAM(net, layer="conv2").attribute(x, target),  # the block's a = relu2's output
            LayerGradCam(ref, ref.relu2).attribute(x.clone(), target=target, relu_attributions=True),
        ),
        (
            GuidedGradCAM(net, layer="conv2").attribute(x, target),
            GuidedGradCam(ref, ref.relu2).attribute(x.clone(), target=target),
        ),
    ]
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape
        assert float(theirs.detach().abs().max()) > 0
        torch.testing.assert_close(ours.as_subclass(Tensor), theirs, atol=1e-5, rtol=1e-5)
    assert count_hooks(net) == 0


def test_captum_is_wrong_on_functional_relus_and_we_are_not() -> None:
    nets = _nets()
    x, target = _x(), 2
    truth = CaptumGuided(nets["module"]).attribute(x.clone(), target=target)
    captum_f = CaptumGuided(nets["functional"]).attribute(x.clone(), target=target)
    ours_f = GuidedBackprop(nets["functional"]).attribute(x, target)
    plain = CaptumSaliency(nets["functional"]).attribute(x.clone(), target=target, abs=False)
    assert not torch.allclose(captum_f, truth, atol=1e-4)  # Captum saw no nn.ReLU: plain gradient
    torch.testing.assert_close(captum_f, plain)
    torch.testing.assert_close(ours_f.as_subclass(Tensor), truth, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("zoo", ["convnetjs-cifar", "tiny-vgg", "zfnet-small"])
def test_zoo_nets_equal_captum(zoo: str) -> None:
    torch.manual_seed(0)
    model, entry = resolve_model(f"zoo:{zoo}")
    model.eval()
    x = torch.rand(2, *entry.input_shape)
    for ours, theirs in ((GuidedBackprop, CaptumGuided), (Deconvnet, Deconvolution)):
        a, b = ours(model).attribute(x, target=4), theirs(model).attribute(x.clone(), target=4)
        torch.testing.assert_close(a.as_subclass(Tensor), b, atol=1e-5, rtol=1e-5)
    assert count_hooks(model) == 0


def test_resnet_shaped_with_shared_inplace_relu_equals_captum_on_an_unshared_copy() -> None:
    """Captum hooks the shared ReLU module once per call; ours follows every call. On the real
    zoo ResNet both agree, and Grad-CAM on a stage (a container module) equals Captum's."""
    torch.manual_seed(0)
    model, _ = resolve_model("zoo:resnet18-shaped")
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    ours = GuidedBackprop(model).attribute(x, target=2)
    theirs = CaptumGuided(model).attribute(x.clone(), target=2)
    torch.testing.assert_close(ours.as_subclass(Tensor), theirs, atol=1e-5, rtol=1e-4)
    cam = GradCAM(model, layer="layer4").attribute(x, target=2)
    ref = LayerGradCam(model, model.layer4).attribute(x.clone(), target=2, relu_attributions=True)
    torch.testing.assert_close(cam.as_subclass(Tensor), ref, atol=1e-6, rtol=1e-5)
    assert cam.meta["tensor"] == "output of module layer4 (Sequential)"


# ---- hand-set weights, known answers ------------------------------------------------------
def _scalar_net(w1: float, w2: float) -> nn.Sequential:
    """x (1,1,1,1) → z = w1·x → relu → score = w2·a (class 0), 0 (class 1)."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(w1)
        net[3].weight.copy_(torch.tensor([[w2], [0.0]]))
    return net


@pytest.mark.parametrize(
    ("w1", "w2", "x", "saliency", "guided", "deconv"),
    [
        (2.0, -3.0, 1.0, -6.0, 0.0, 0.0),  # unit on, negative signal: guided and deconvnet stop it
        (2.0, 3.0, 1.0, 6.0, 6.0, 6.0),  # unit on, positive signal: all three pass it
        (2.0, 3.0, -1.0, 0.0, 0.0, 6.0),  # unit off: only the deconvnet passes (it ignores z)
    ],
)
def test_rules_on_a_scalar_net(w1: float, w2: float, x: float, saliency: float, guided: float, deconv: float) -> None:
    net, xx = _scalar_net(w1, w2), torch.full((1, 1, 1, 1), x)
    assert Saliency(net).attribute(xx, 0, abs=False).item() == saliency
    assert Saliency(net).attribute(xx, 0).item() == abs(saliency)
    assert GuidedBackprop(net).attribute(xx, 0).item() == guided
    assert Deconvnet(net).attribute(xx, 0).item() == deconv


def test_non_relu_activation_rule_is_stated_and_applied() -> None:
    """SiLU: guided passes SiLU'(z)·max(g,0); deconvnet passes max(g,0); meta says which."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.SiLU(), nn.Flatten(), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[3].weight.copy_(torch.tensor([[3.0], [-1.0]]))
    x = torch.full((1, 1, 1, 1), 0.5)
    z = torch.tensor(1.0, requires_grad=True)
    (dsilu,) = torch.autograd.grad(F.silu(z), z)
    g = GuidedBackprop(net).attribute(x, 0)
    assert g.item() == pytest.approx(2.0 * float(dsilu) * 3.0, rel=1e-6)
    assert GuidedBackprop(net).attribute(x, 1).item() == 0.0  # negative signal stopped
    assert Deconvnet(net).attribute(x, 0).item() == pytest.approx(6.0)
    assert g.meta["rules"] == {"silu": "silu'(z)·max(g,0) (guided rule on its own derivative)"}
    assert Deconvnet(net).attribute(x, 0).meta["rules"] == {
        "silu": "max(g,0) (deconvnet rectification; silu's derivative ignored)"
    }


# ---- ZF's deconvnet, written out by hand --------------------------------------------------
class ZFStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(5, 7, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(7, 4, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(self.relu3(self.conv3(x)), 1))


def _zf_oracle(m: ZFStyle, x: Tensor, channel: int, position: tuple[int, int] | None) -> Tensor:
    """Forward recording the pooling switches; seed one map of conv3's a; then unpool with the
    switches, rectify, filter with the transposed filters, layer by layer, down to pixels."""
    a1 = F.relu(F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=1))
    p1, s1 = F.max_pool2d(a1, 2, return_indices=True)
    a2 = F.relu(F.conv2d(p1, m.conv2.weight, m.conv2.bias, padding=1))
    p2, s2 = F.max_pool2d(a2, 2, return_indices=True)
    a3 = F.relu(F.conv2d(p2, m.conv3.weight, m.conv3.bias, padding=1))
    seed = torch.zeros_like(a3)
    for b in range(x.shape[0]):
        fmap = a3[b, channel]
        if position is None:
            i, j = divmod(int(fmap.argmax()), fmap.shape[1])
        else:
            i, j = position
        seed[b, channel, i, j] = fmap[i, j]
    r = F.conv_transpose2d(F.relu(seed), m.conv3.weight, padding=1)
    r = F.max_unpool2d(r, s2, 2, output_size=a2.shape[2:])
    r = F.conv_transpose2d(F.relu(r), m.conv2.weight, padding=1)
    r = F.max_unpool2d(r, s1, 2, output_size=a1.shape[2:])
    return F.conv_transpose2d(F.relu(r), m.conv1.weight, padding=1)


@pytest.mark.parametrize("position", [None, (0, 0)])
def test_layer_deconvnet_equals_the_explicit_zf_construction(position: tuple[int, int] | None) -> None:
    torch.manual_seed(5)
    m = ZFStyle().eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        a3 = F.relu(m.conv3(m.pool2(F.relu(m.conv2(m.pool1(F.relu(m.conv1(x))))))))
    on = a3.amin(dim=0)  # (C, H, W): on for every example
    channel = int(on.amax(dim=(1, 2)).argmax())  # a channel that is on
    if position is not None:  # a position where that map is on in every example
        flat = int(on[channel].argmax())
        position = divmod(flat, on.shape[2])
    expected = _zf_oracle(m, x, channel, position)
    ours = Deconvnet(m).attribute(x, layer="conv3", channel=channel, position=position or "max")
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(ours.as_subclass(Tensor), expected, atol=1e-6, rtol=1e-5)
    assert ours.meta["tensor"] == "a of block conv3 (after relu3)"
    # the activation's own name and the conv's name mean the same feature map
    same = Deconvnet(m).attribute(x, layer="relu3", channel=channel, position=position or "max")
    assert torch.equal(same.as_subclass(Tensor), ours.as_subclass(Tensor))


def test_layer_guided_whole_map_equals_autograd_with_the_guided_mask() -> None:
    """GuidedBackprop from a whole feature map (position=None): d(Σ a_k · a_k)/dx under the rule,
    checked against the module-ReLU net's Captum-free construction through backward hooks."""
    torch.manual_seed(2)
    m = ZFStyle().eval()
    x = torch.randn(2, 3, 16, 16)
    ours = GuidedBackprop(m).attribute(x, layer="conv2", channel=3, position=None)
    handles = [
        r.register_full_backward_hook(lambda mod, gi, go: (F.relu(gi[0]),)) for r in (m.relu1, m.relu2)
    ]
    try:
        xg = x.clone().requires_grad_(True)
        a2 = m.relu2(m.conv2(m.pool1(m.relu1(m.conv1(xg)))))
        seed = torch.zeros_like(a2)
        seed[:, 3] = a2.detach()[:, 3]
        (expected,) = torch.autograd.grad(a2, xg, grad_outputs=seed)
    finally:
        for h in handles:
            h.remove()
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(ours.as_subclass(Tensor), expected, atol=1e-6, rtol=1e-5)


# ---- SmoothGrad ------------------------------------------------------------------------------
def test_smoothgrad_is_the_mean_of_saliency_over_the_same_noisy_inputs() -> None:
    net = _nets()["inplace"]
    x = _x()
    sg = SmoothGrad(net, base="saliency", samples=5, sigma=0.2, generator=torch.Generator().manual_seed(11), batch=4)
    ours = sg.attribute(x, target=1)
    eps = torch.randn((5, *x.shape), generator=torch.Generator().manual_seed(11))
    span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).reshape(1, -1, 1, 1, 1)
    noisy = x.unsqueeze(0) + eps * (0.2 * span)
    expected = torch.stack([Saliency(net).attribute(n, 1).as_subclass(Tensor) for n in noisy]).mean(dim=0)
    torch.testing.assert_close(ours.as_subclass(Tensor), expected, atol=1e-7, rtol=1e-5)
    assert ours.meta["samples"] == 5 and ours.meta["base"] == "saliency"


# ---- Grad-CAM details -------------------------------------------------------------------------
def test_gradcam_upsampled_is_the_bilinear_resize_of_the_layer_map() -> None:
    net = _nets()["module"]
    x = _x()
    cam = GradCAM(net, layer="conv2").attribute(x, 0).as_subclass(Tensor)
    up = GradCAM(net, layer="conv2").attribute(x, 0, upsample=True).as_subclass(Tensor)
    assert cam.shape == (2, 1, 8, 8) and up.shape == (2, 1, 16, 16)
    torch.testing.assert_close(up, F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False))


def test_gradcam_on_a_tensor_changed_in_place_later_uses_its_value_before_the_change() -> None:
    """`out = bn2(...); out += identity`: Grad-CAM on bn2 must use bn2's output and dL/d(that)."""

    class InplaceAdd(ModuleReLU):
        def forward(self, x: Tensor) -> Tensor:
            h = self.pool(self.relu1(self.conv1(x)))
            out = self.bn2(self.conv2(h))
            out += h
            return self.fc(torch.flatten(F.max_pool2d(F.relu(out), 2), 1))

    class OutOfPlace(ModuleReLU):
        def forward(self, x: Tensor) -> Tensor:
            h = self.pool(self.relu1(self.conv1(x)))
            out = self.bn2(self.conv2(h))
            return self.fc(torch.flatten(F.max_pool2d(F.relu(out + h), 2), 1))

    ref = _nets()["module"]
    a, b = InplaceAdd().eval(), OutOfPlace().eval()
    a.load_state_dict(ref.state_dict())
    b.load_state_dict(ref.state_dict())
    x = _x()
    ours = GradCAM(a, layer="bn2").attribute(x, 2).as_subclass(Tensor)
    expected = LayerGradCam(b, b.bn2).attribute(x.clone(), target=2, relu_attributions=True)
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)


# ---- the model is left as it was ----------------------------------------------------------------
def _all_methods(model: nn.Module, layer: str) -> list[tuple[str, object]]:
    return [
        ("saliency", lambda x: Saliency(model).attribute(x, 0)),
        ("guided", lambda x: GuidedBackprop(model).attribute(x, 0)),
        ("deconvnet", lambda x: Deconvnet(model).attribute(x, 0)),
        ("deconvnet-layer", lambda x: Deconvnet(model).attribute(x, layer=layer, channel=0, position="max")),
        ("guided-layer", lambda x: GuidedBackprop(model).attribute(x, layer=layer, channel=1)),
        ("smoothgrad", lambda x: SmoothGrad(model, samples=2, generator=torch.Generator().manual_seed(0)).attribute(x, 0)),
        ("gradcam", lambda x: GradCAM(model, layer=layer).attribute(x, 0)),
        ("guided-gradcam", lambda x: GuidedGradCAM(model, layer=layer).attribute(x, 0)),
    ]


def _snapshot(model: nn.Module) -> tuple[dict[str, Tensor], list[bool], list[bool], list[bool]]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return (
        state,
        [p.requires_grad for p in model.parameters()],
        [p.grad is None for p in model.parameters()],
        [m.training for m in model.modules()],
    )


def _assert_unchanged(model: nn.Module, before: tuple[dict[str, Tensor], list[bool], list[bool], list[bool]]) -> None:
    state, req, nograd, modes = before
    assert count_hooks(model) == 0
    after = model.state_dict()
    assert after.keys() == state.keys()
    for k in state:
        assert torch.equal(after[k], state[k]), k
    assert [p.requires_grad for p in model.parameters()] == req
    assert [p.grad is None for p in model.parameters()] == nograd
    assert [m.training for m in model.modules()] == modes


def test_methods_registry_names_every_method() -> None:
    assert set(METHODS) == {"deconvnet", "guided", "saliency", "smoothgrad", "gradcam", "guided-gradcam"}


@pytest.mark.parametrize("form", ["module", "shared", "inplace"])
def test_every_method_leaves_the_model_as_it_was(form: str) -> None:
    model = _nets()[form]
    model.train()  # train mode must come back (the methods run in eval mode)
    model.bn2.eval()  # a mixed state must come back exactly
    model.conv1.weight.requires_grad_(False)  # a frozen layer stays frozen
    before = _snapshot(model)
    plain = copy.deepcopy(model).eval()(_x())
    for name, run in _all_methods(model, "conv2"):
        result = run(_x())  # type: ignore[operator]
        assert result.meta["method"] in METHODS, name
        _assert_unchanged(model, before)
    torch.testing.assert_close(copy.deepcopy(model).eval()(_x()), plain)


class Boom(RuntimeError):
    pass


def test_every_method_cleans_up_when_the_forward_raises() -> None:
    model = _nets()["shared"]

    def explode(module: nn.Module, args: object, out: Tensor) -> None:
        raise Boom("in fc")

    handle = model.fc.register_forward_hook(explode)
    before_hooks = count_hooks(model)
    model.train()
    before = _snapshot(model)
    try:
        for name, run in _all_methods(model, "conv2"):
            if name.endswith("-layer"):
                continue  # these stop at conv2, before fc: they succeed
            with pytest.raises(Boom):
                run(_x())  # type: ignore[operator]
            assert count_hooks(model) == before_hooks, name
            assert [m.training for m in model.modules()] == before[3], name
    finally:
        handle.remove()
    _assert_unchanged(model, before)


# ---- bad input: one clear error ------------------------------------------------------------------
def test_bad_input_errors_name_the_problem() -> None:
    model = _nets()["module"]
    x = _x()
    with pytest.raises(AttributionError, match=r"unknown layer 'conv9'; valid: conv1, relu1, conv2, bn2, relu2, relu3, fc; or any module"):
        Deconvnet(model).attribute(x, layer="conv9", channel=0)
    with pytest.raises(AttributionError, match=r"channel 6 is out of range for layer 'conv2': 0\.\.5"):
        Deconvnet(model).attribute(x, layer="conv2", channel=6)
    with pytest.raises(AttributionError, match=r"layer 'fc' has no spatial maps \(shape \(2, 4\)\)"):
        Deconvnet(model).attribute(x, layer="fc", channel=1, position="max")
    with pytest.raises(AttributionError, match=r"position \(8, 0\) is outside layer 'conv2''s 8×8 maps"):
        Deconvnet(model).attribute(x, layer="conv2", channel=1, position=(8, 0))
    with pytest.raises(AttributionError, match=r"target \[4, 4\] is out of range: the model has classes 0\.\.3"):
        Saliency(model).attribute(x, 4)
    with pytest.raises(AttributionError, match=r"x holds NaN or Inf"):
        Saliency(model).attribute(torch.full((1, 3, 16, 16), float("nan")), 0)
    with pytest.raises(AttributionError, match=r"x must be shaped \(B, C, H, W\); got \(3, 16, 16\)"):
        Saliency(model).attribute(x[0], 0)
    with pytest.raises(AttributionError, match=r"Grad-CAM needs spatial maps .* layer 'fc' gives \(2, 4\)"):
        GradCAM(model, layer="fc").attribute(x, 0)
    feature_only = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with pytest.raises(AttributionError, match=r"class scores shaped \(B, classes\); this one returns \(2, 2, 14, 14\)"):
        GuidedBackprop(feature_only).attribute(x, 0)
    with pytest.raises(AttributionError, match=r"either target .* or layer"):
        Deconvnet(model).attribute(x, 1, layer="conv2")
    assert count_hooks(model) == 0


def test_default_target_is_the_top_class() -> None:
    model = _nets()["module"]
    x = _x()
    top = model(x).argmax(dim=1)
    ours = GuidedBackprop(model).attribute(x)
    assert ours.meta["target"] == top.tolist()
    torch.testing.assert_close(ours.as_subclass(Tensor), GuidedBackprop(model).attribute(x, top).as_subclass(Tensor))
