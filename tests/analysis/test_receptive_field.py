"""receptive_field against an autograd oracle: the box of unit (c, i, j) is the support of d a[c, i, j] / dx.

With all-positive weights (BatchNorm in eval mode: a positive affine map) and a positive input,
every unit is active and no gradient cancels, so the pixels with a non-zero gradient are exactly
the pixels the unit sees. Max-pooling routes its gradient to the window's argmax only, so the
oracle runs every max-pool as a sum-pool over the same window (a depthwise conv of ones with
the same kernel, stride, padding and dilation): the field of a max-pool is its whole window.
Also: hand-computed fields of the zoo nets, clear errors, and a model left as it was.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from convscope.analysis.units import ReceptiveFieldError, box, receptive_field, receptive_fields
from convscope.capture import Block, Probe, UnknownLayerError, count_hooks
from convscope.capture.naming import role
from convscope.models import resolve_model


# ---- the oracle -----------------------------------------------------------------------------
class _MaxAsSum(TorchFunctionMode):
    """Every max-pool becomes a sum over the same window (zero padding): its gradient reaches the
    whole window, not only the argmax."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") not in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices"):
            return func(*args, **kwargs)
        names = ("kernel_size", "stride", "padding", "dilation")
        p = dict(zip(names, args[1:], strict=False)) | {k: v for k, v in kwargs.items() if k in names}
        x, k = args[0], p["kernel_size"]
        kh, kw = (k, k) if isinstance(k, int) else k
        ones = torch.ones(x.shape[1], 1, kh, kw, dtype=x.dtype)
        return F.conv2d(x, ones, stride=p.get("stride") or k, padding=p.get("padding", 0),
                        dilation=p.get("dilation", 1), groups=x.shape[1])  # fmt: skip


def positive(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every parameter in [0.5, 1] (conv/linear weights / fan-in, so values
    stay near 1: positive sums of positive products, no cancellation, no underflow)."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(0.5, 1.0)
            if p.dim() > 1:
                p /= p[0].numel()
    return net


def live_maps(net: nn.Module, layers: list[str], x: Tensor) -> dict[str, Tensor]:
    """Each layer's tensor, in the graph: a Probe tap for block names, a forward hook otherwise."""
    got: dict[str, Tensor] = {}
    modules = dict(net.named_modules())
    outputs = [n for n in layers if n in modules and role(modules[n]) is None]
    blocks = [n for n in layers if n not in outputs]

    def tap(block: Block, field: str, t: Tensor) -> None:  # z, then a replaces it
        for name in blocks:
            if field in ("z", "a") and name in (block.name, block.norm_name, block.act_name):
                got[name] = t

    handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: got.setdefault(n, out)) for n in outputs]
    try:
        with Probe(net, blocks, keep=(), tap=tap):
            net(x)
    finally:
        for h in handles:
            h.remove()
    return got


Support = tuple[tuple[int, int, int, int], bool]


def support_boxes(model: nn.Module, spots: dict[str, list[tuple[int, int]]], input_size: tuple[int, int, int], *, union: bool) -> dict[str, list[Support]]:
    """Per layer and map position (i, j): the bounding box (y0, x0, y1, x1) of the non-zero pixels
    of d a[c, i, j] / dx (channel c = u mod C for the u-th position; with `union`, of the sum over
    every active channel: concatenated branches differ, and the field is their union), and whether
    those pixels fill it. One forward, one backward per layer."""
    net = positive(model)
    n = max(len(v) for v in spots.values())
    x = torch.full((n, *input_size), 0.5, requires_grad=True)
    with _MaxAsSum():
        maps = live_maps(net, list(spots), x)  # layer → (n, C, H', W')
    out: dict[str, list[Support]] = {}
    for layer, where in spots.items():
        a = maps[layer]
        seed = torch.zeros_like(a)
        for u, (i, j) in enumerate(where):
            if union:
                seed[u, :, i, j] = (a[u, :, i, j] > 0).float()
            else:
                c = u % a.shape[1]
                assert a[u, c, i, j] > 0, "the unit must be active for the oracle"
                seed[u, c, i, j] = 1.0
        (g,) = torch.autograd.grad(a, x, seed, retain_graph=True)
        out[layer] = []
        for u in range(len(where)):
            nz = g[u].abs().sum(0) > 0  # (H, W)
            rows, cols = nz.any(1).nonzero()[:, 0], nz.any(0).nonzero()[:, 0]
            y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
            out[layer].append(((y0, x0, y1, x1), bool(nz[y0:y1, x0:x1].all())))
    return out


def spots_of(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Two corners, a point near the other two and the centre of a map."""
    h, w = shape
    return sorted({(0, 0), (h - 1, w - 1), (min(1, h - 1), w - 1), (h - 1, w // 3), (h // 2, w // 2)})


def check(model: nn.Module, layers: list[str], input_size: tuple[int, int, int], *, union: bool = False) -> None:
    fields = receptive_fields(model, layers, input_size)
    spots = {layer: spots_of(fields[layer].map_size) for layer in layers}
    supports = support_boxes(model, spots, input_size, union=union)
    for layer in layers:
        rf = fields[layer]
        for (i, j), (want, filled) in zip(spots[layer], supports[layer], strict=True):
            assert box(rf, i, j, input_size[1:]) == want, f"{layer} unit {(i, j)}: {rf}"
            assert rf.box(i, j) == want
            assert filled, f"{layer} unit {(i, j)}: the support has holes"


# ---- architectures --------------------------------------------------------------------------
class ZFStack(nn.Module):
    """Stride, padding, dilation, overlapping max and average pools, 'same' padding with an even
    kernel, a functional ReLU and max-pool, replicate padding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 7, stride=2, padding=3)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 5, stride=2, padding=2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.AvgPool2d(3, stride=1, padding=1)
        self.conv4 = nn.Conv2d(4, 4, 4, padding="same")
        self.conv5 = nn.Conv2d(4, 3, 3, padding=1, padding_mode="replicate")
        self.relu5 = nn.ReLU()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))  # (B, 3, 16, 15) for 61×57
        x = self.relu3(self.conv3(self.relu2(self.conv2(x))))  # (B, 4, 8, 8)
        x = F.relu(self.conv4(self.pool3(x)))
        x = F.max_pool2d(x, 3, stride=2, dilation=1)  # (B, 4, 3, 3)
        x = self.relu5(self.conv5(x))
        return self.fc(x.mean((2, 3)))


class Concat(nn.Module):
    """Inception-style branches of different fields (1×1, 5×5, pool + 1×1, 2×2 + asymmetric
    F.pad), concatenated, then a squeeze-excitation gate (every unit sees the whole image)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 3, 3, padding=1)
        self.stem_relu = nn.ReLU()
        self.a = nn.Conv2d(3, 2, 1)
        self.b1 = nn.Conv2d(3, 2, 3, padding=1)
        self.b2 = nn.Conv2d(2, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.c = nn.Conv2d(3, 2, 1)
        self.d = nn.Conv2d(3, 2, 2)
        self.act = nn.ReLU()
        self.reduce = nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.reduce_relu = nn.ReLU()
        self.post = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_relu(self.stem(x))  # (B, 3, H, W)
        d = F.pad(self.d(x), (0, 1, 0, 1))  # 2×2 conv: one unit short, padded right/bottom
        x = self.act(torch.cat([self.a(x), self.b2(self.b1(x)), self.c(self.pool(x)), d], dim=1))
        x = self.reduce_relu(self.reduce(x))  # (B, 4, H/2, W/2)
        return self.post(x * torch.sigmoid(F.adaptive_avg_pool2d(x, 1)))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_zf_stack_equals_the_gradient_support() -> None:
    layers = ["conv1", "relu1", "pool1", "conv2", "relu3", "pool3", "conv4", "relu", "conv5", "relu5"]
    check(ZFStack(), layers, (2, 61, 57))


def test_resnet18_shaped_equals_the_gradient_support() -> None:
    model, _ = resolve_model("zoo:resnet18-shaped")
    layers = ["conv1", "maxpool", "layer1.0.relu#1", "layer1.1.bn2", "layer2.0.downsample.0",
              "layer2.0.relu#1", "layer2"]  # fmt: skip
    check(model, layers, (3, 64, 64))


def test_concatenation_and_broadcast_equal_the_gradient_support() -> None:
    check(Concat(), ["stem", "d", "b2", "act", "reduce", "reduce_relu", "post"], (2, 23, 29), union=True)


def test_dilation_on_the_image_gives_the_bounding_box() -> None:
    """A dilated conv on the image sees pixels with holes between them: the box is their bounding
    box; at the border it is clipped, so it may begin on a hole (the row above is padding)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=2, dilation=2), nn.ReLU())
    rf = receptive_field(net, "1", (1, 9, 9))
    assert (rf.size, rf.jump, rf.start) == ((5, 5), (1, 1), (0.0, 0.0))
    spots = {"1": [(4, 4), (2, 6), (1, 1)]}
    (inner, f1), (edge, f2), (corner, _) = support_boxes(net, spots, (1, 9, 9), union=False)["1"]
    assert (rf.box(4, 4), rf.box(2, 6)) == (inner, edge) == ((2, 2, 7, 7), (0, 4, 5, 9))
    assert not f1 and not f2  # holes: every other pixel
    assert corner == (1, 1, 4, 4) and rf.box(1, 1) == (0, 0, 4, 4)  # pixel -1 is padding, 0 a hole


def test_fields_by_hand() -> None:
    """Numbers composed by hand (and, for ResNet-18, the published 435 px at stride 32)."""
    resnet, _ = resolve_model("zoo:resnet18-shaped")
    rf = receptive_field(resnet, "layer4", (3, 224, 224))
    assert (rf.size, rf.jump, rf.start, rf.map_size) == ((435, 435), (32, 32), (0.0, 0.0), (7, 7))
    assert rf.box(3, 3) == (0, 0, 224, 224)
    cifar, _ = resolve_model("zoo:convnetjs-cifar")
    # conv5p2 → 5; pool2 → 6 (jump 2); conv5p2 → 14; pool2 → 16 (jump 4); conv5p2 → 32, first -14
    rf = receptive_field(cifar, "relu3", (3, 32, 32))
    assert (rf.size, rf.jump, rf.start, rf.map_size) == ((32, 32), (4, 4), (1.5, 1.5), (8, 8))
    assert rf.box(0, 0) == (0, 0, 18, 18)  # [-14, 18) clipped
    assert rf.box(7, 2) == (14, 0, 32, 26)  # rows [14, 46), columns [-6, 26)
    zf, _ = resolve_model("zoo:zfnet-small")
    rf = receptive_field(zf, "pool5", (3, 112, 112))  # no padding in the last pool: centre 16
    assert (rf.size, rf.jump, rf.start) == ((171, 171), (32, 32), (16.0, 16.0))


def test_box_is_clipped_and_half_open() -> None:
    rf = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), "0", (1, 5, 6))
    assert (rf.size, rf.jump, rf.start) == ((3, 3), (1, 1), (0.0, 0.0))
    assert rf.box(0, 0) == (0, 0, 2, 2)
    assert rf.box(2, 3) == (1, 2, 4, 5)
    assert rf.box(4, 5) == (3, 4, 5, 6)
    with pytest.raises(ValueError, match=r"outside layer '0''s 5×6 maps"):
        rf.box(5, 0)


# ---- errors ---------------------------------------------------------------------------------
def test_unknown_layer_lists_the_valid_names() -> None:
    with pytest.raises(UnknownLayerError, match=r"unknown layer\(s\) \['conv9'\]; valid: conv1, relu1, conv2, .*fc; or any module name \(its output: pool1, pool3\)"):
        receptive_field(ZFStack(), "conv9", (2, 61, 57))


def test_a_layer_without_spatial_maps_is_one_clear_error() -> None:
    with pytest.raises(ReceptiveFieldError, match=r"layer 'fc' has no spatial maps \(its output is \(1, 2\)"):
        receptive_field(ZFStack(), "fc", (2, 61, 57))


def test_an_op_that_moves_pixels_is_named() -> None:
    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.relu = nn.ReLU()

        def forward(self, x: Tensor) -> Tensor:
            return self.relu(self.conv(F.interpolate(x, scale_factor=2)))

    with pytest.raises(ReceptiveFieldError, match="cannot derive the receptive field of layer 'relu': interpolate moves pixels"):
        receptive_field(Up(), "relu", (1, 8, 8))
    flipped = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(0), nn.Unflatten(0, (1, 1, 6, 6)), nn.ReLU())
    rf = receptive_field(flipped, "3", (1, 8, 8))  # a map rebuilt from a flat tensor sees everything
    assert rf.box(0, 0) == rf.box(5, 5) == (0, 0, 8, 8)


@pytest.mark.parametrize("size", [(8, 8), (1, 8, 8, 8), (1, 0, 8), (1, 8.0, 8), "188"])
def test_bad_input_size(size: object) -> None:
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\)"):
        receptive_field(ZFStack(), "conv1", size)  # type: ignore[arg-type]


# ---- the model is left as it was ------------------------------------------------------------
def test_no_hook_no_mode_and_the_model_unchanged() -> None:
    model, _ = resolve_model("zoo:resnet18-shaped")
    model.train()
    model.layer1.eval()
    before = copy.deepcopy(model)
    receptive_fields(model, ["layer1.0.relu#1", "layer2", "conv1"], (3, 64, 64))
    assert_same_model(model, before)
    assert model.training and not model.layer1.training and model.layer2.training
    assert torch._C._len_torch_function_stack() == 0


def test_no_hook_left_when_the_forward_raises() -> None:
    class Broken(ZFStack):
        def forward(self, x: Tensor) -> Tensor:
            self.pool1(self.relu1(self.conv1(x)))
            raise RuntimeError("boom")

    model = Broken().train()
    before = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="boom"):
        receptive_fields(model, ["conv1", "pool1"], (2, 61, 57))
    assert count_hooks(model) == 0
    assert_same_model(model, before)
    assert torch._C._len_torch_function_stack() == 0
