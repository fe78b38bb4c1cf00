"""Tests for convscope.models.zoo: registry, exact layer output sizes, parameter counts, forwards.

Run: .venv/bin/python -m pytest tests/models/test_zoo.py -q
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.data import PHOTO_CLASSES, photo_crops
from convscope.models import load_model
from convscope.models.zoo import (
    WEIGHTS_DIR,
    ZOO,
    BasicBlock,
    UnknownModelError,
    ZooEntry,
    get_entry,
    zoo_names,
)


def conv_params(c_in: int, c_out: int, k: int, *, bias: bool = True) -> int:
    return c_out * c_in * k * k + (c_out if bias else 0)


def fc_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def output_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, output shape without batch) for every direct child, in call order."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = [
        child.register_forward_hook(
            lambda _m, _i, out, name=name: seen.append((name, tuple(out.shape[1:])))
        )
        for name, child in model.named_children()
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


# -- registry ---------------------------------------------------------------------------


def test_registry_names_in_order() -> None:
    assert zoo_names() == [
        "convnetjs-cifar",
        "convnetjs-mnist",
        "tiny-vgg",
        "zfnet-small",
        "resnet18-shaped",
    ]
    assert all(ZOO[name].name == name for name in ZOO)


def test_get_entry_unknown_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_entry("alexnet")
    assert str(info.value) == (
        "unknown zoo model 'alexnet'; valid names: convnetjs-cifar, convnetjs-mnist, "
        "tiny-vgg, zfnet-small, resnet18-shaped"
    )
    assert isinstance(info.value, ValueError)


def test_entries_are_frozen_and_describe_inputs() -> None:
    entry = get_entry("convnetjs-cifar")
    assert (entry.input_shape, entry.num_classes) == ((3, 32, 32), 10)
    assert entry.weights == "convnetjs-cifar.safetensors"
    assert entry.weights_path == WEIGHTS_DIR / "convnetjs-cifar.safetensors"
    mnist = get_entry("convnetjs-mnist")
    assert mnist.weights is None and mnist.weights_path is None and mnist.shipped_metadata() == {}
    assert {n: e.weights for n, e in ZOO.items() if e.weights} == {
        "convnetjs-cifar": "convnetjs-cifar.safetensors",
        "tiny-vgg": "tiny-vgg.safetensors",
        "zfnet-small": "zfnet-small.safetensors",
    }
    with pytest.raises(AttributeError):
        entry.num_classes = 3  # type: ignore[misc]
    shapes = {n: (e.input_shape, e.num_classes) for n, e in ZOO.items()}
    assert shapes == {
        "convnetjs-cifar": ((3, 32, 32), 10),
        "convnetjs-mnist": ((1, 24, 24), 10),
        "tiny-vgg": ((3, 64, 64), 10),
        "zfnet-small": ((3, 112, 112), 10),
        "resnet18-shaped": ((3, 224, 224), 10),
    }
    for e in ZOO.values():
        assert isinstance(e, ZooEntry) and e.description and e.source.startswith("https://")


@pytest.mark.parametrize("name", zoo_names())
def test_zero_batch_forward_gives_batch_by_classes(name: str) -> None:
    entry = get_entry(name)
    model = entry.factory().eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *entry.input_shape))
    assert out.shape == (2, entry.num_classes)
    torch.testing.assert_close(out[0], out[1])  # same input, same logits (up to kernel order)


# -- convnetjs-cifar --------------------------------------------------------------------


def test_convnetjs_cifar_layer_sizes_and_params() -> None:
    model = get_entry("convnetjs-cifar").factory()
    assert output_shapes(model, torch.zeros(1, 3, 32, 32)) == [
        ("conv1", (16, 32, 32)),
        ("relu1", (16, 32, 32)),
        ("pool1", (16, 16, 16)),
        ("conv2", (20, 16, 16)),
        ("relu2", (20, 16, 16)),
        ("pool2", (20, 8, 8)),
        ("conv3", (20, 8, 8)),
        ("relu3", (20, 8, 8)),
        ("pool3", (20, 4, 4)),
        ("flatten", (320,)),
        ("fc", (10,)),
    ]
    counts = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_children()}
    assert conv_params(3, 16, 5) == 1216
    assert {k: v for k, v in counts.items() if v} == {
        "conv1": conv_params(3, 16, 5),
        "conv2": conv_params(16, 20, 5),  # 8020
        "conv3": conv_params(20, 20, 5),  # 10020
        "fc": fc_params(320, 10),  # 3210
    }
    assert sum(p.numel() for p in model.parameters()) == 22466


def test_convnetjs_cifar_matches_functional_oracle() -> None:
    torch.manual_seed(0)
    model = get_entry("convnetjs-cifar").factory().eval()
    x = torch.randn(2, 3, 32, 32)
    h = x
    for conv in (model.conv1, model.conv2, model.conv3):
        h = F.max_pool2d(F.relu(F.conv2d(h, conv.weight, conv.bias, padding=2)), 2, 2)
    expected = F.linear(h.reshape(2, -1), model.fc.weight, model.fc.bias)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_convnetjs_cifar_hand_set_weights() -> None:
    """All filters zero: every activation is relu(bias), so the logits are known exactly."""
    model = get_entry("convnetjs-cifar").factory().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.conv3.bias.fill_(2.0)  # a3 = relu(2) = 2 everywhere → 320 features of 2
        model.fc.weight.fill_(0.5)
        model.fc.bias.copy_(torch.arange(10.0))
        out = model(torch.randn(1, 3, 32, 32))
    assert torch.equal(out, (torch.arange(10.0) + 320 * 2 * 0.5).unsqueeze(0))


# -- convnetjs-mnist --------------------------------------------------------------------


def test_convnetjs_mnist_layer_sizes_and_params() -> None:
    model = get_entry("convnetjs-mnist").factory()
    assert output_shapes(model, torch.zeros(1, 1, 24, 24)) == [
        ("conv1", (8, 24, 24)),
        ("relu1", (8, 24, 24)),
        ("pool1", (8, 12, 12)),
        ("conv2", (16, 12, 12)),
        ("relu2", (16, 12, 12)),
        ("pool2", (16, 4, 4)),
        ("flatten", (256,)),
        ("fc", (10,)),
    ]
    assert model.pool2.kernel_size == 3 and model.pool2.stride == 3
    assert conv_params(1, 8, 5) == 208 and conv_params(8, 16, 5) == 3216
    assert sum(p.numel() for p in model.parameters()) == 208 + 3216 + fc_params(256, 10) == 5994


# -- tiny-vgg ---------------------------------------------------------------------------


def test_tiny_vgg_layer_sizes_and_params() -> None:
    model = get_entry("tiny-vgg").factory()
    assert output_shapes(model, torch.zeros(1, 3, 64, 64)) == [
        ("conv1_1", (10, 62, 62)),
        ("relu1_1", (10, 62, 62)),
        ("conv1_2", (10, 60, 60)),
        ("relu1_2", (10, 60, 60)),
        ("pool1", (10, 30, 30)),
        ("conv2_1", (10, 28, 28)),
        ("relu2_1", (10, 28, 28)),
        ("conv2_2", (10, 26, 26)),
        ("relu2_2", (10, 26, 26)),
        ("pool2", (10, 13, 13)),
        ("flatten", (1690,)),
        ("fc", (10,)),
    ]
    total = conv_params(3, 10, 3) + 3 * conv_params(10, 10, 3) + fc_params(1690, 10)
    assert total == 280 + 3 * 910 + 16910 == 19920
    assert sum(p.numel() for p in model.parameters()) == total


def test_tiny_vgg_matches_functional_oracle() -> None:
    torch.manual_seed(1)
    model = get_entry("tiny-vgg").factory().eval()
    x = torch.randn(2, 3, 64, 64)
    h = x
    for a, b in ((model.conv1_1, model.conv1_2), (model.conv2_1, model.conv2_2)):
        h = F.relu(F.conv2d(h, a.weight, a.bias))
        h = F.max_pool2d(F.relu(F.conv2d(h, b.weight, b.bias)), 2)
    expected = F.linear(h.flatten(1), model.fc.weight, model.fc.bias)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


# -- zfnet-small ------------------------------------------------------------------------


def test_zfnet_small_layer_sizes_and_params() -> None:
    model = get_entry("zfnet-small").factory().eval()
    assert output_shapes(model, torch.zeros(1, 3, 112, 112)) == [
        ("conv1", (24, 56, 56)),
        ("relu1", (24, 56, 56)),
        ("pool1", (24, 28, 28)),
        ("conv2", (64, 14, 14)),
        ("relu2", (64, 14, 14)),
        ("pool2", (64, 7, 7)),
        ("conv3", (96, 7, 7)),
        ("relu3", (96, 7, 7)),
        ("conv4", (96, 7, 7)),
        ("relu4", (96, 7, 7)),
        ("conv5", (64, 7, 7)),
        ("relu5", (64, 7, 7)),
        ("pool5", (64, 3, 3)),
        ("flatten", (576,)),
        ("fc6", (256,)),
        ("relu6", (256,)),
        ("drop6", (256,)),
        ("fc7", (256,)),
        ("relu7", (256,)),
        ("drop7", (256,)),
        ("fc8", (10,)),
    ]
    assert (model.conv1.kernel_size, model.conv1.stride) == ((7, 7), (2, 2))
    assert (model.conv2.kernel_size, model.conv2.stride) == ((5, 5), (2, 2))
    total = (
        conv_params(3, 24, 7)
        + conv_params(24, 64, 5)
        + conv_params(64, 96, 3)
        + conv_params(96, 96, 3)
        + conv_params(96, 64, 3)
        + fc_params(576, 256)
        + fc_params(256, 256)
        + fc_params(256, 10)
    )
    assert total == 451882
    assert sum(p.numel() for p in model.parameters()) == total


def test_zfnet_small_matches_functional_oracle_in_eval() -> None:
    torch.manual_seed(2)
    model = get_entry("zfnet-small").factory().eval()
    x = torch.randn(1, 3, 112, 112)

    def conv_relu(h: torch.Tensor, c: nn.Conv2d) -> torch.Tensor:
        return F.relu(F.conv2d(h, c.weight, c.bias, stride=c.stride, padding=c.padding))

    h = F.max_pool2d(conv_relu(x, model.conv1), 3, 2, padding=1)  # (1, 24, 28, 28)
    h = F.max_pool2d(conv_relu(h, model.conv2), 3, 2, padding=1)  # (1, 64, 7, 7)
    for c in (model.conv3, model.conv4, model.conv5):
        h = conv_relu(h, c)
    h = F.max_pool2d(h, 3, 2).flatten(1)  # (1, 576)
    h = F.relu(F.linear(h, model.fc6.weight, model.fc6.bias))  # dropout is identity in eval
    h = F.relu(F.linear(h, model.fc7.weight, model.fc7.bias))
    expected = F.linear(h, model.fc8.weight, model.fc8.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_zfnet_small_dropout_only_in_training() -> None:
    model = get_entry("zfnet-small").factory()
    assert model.drop6.p == 0.5 and model.drop7.p == 0.5
    ones = torch.ones(1, 1000)
    model.eval()
    assert torch.equal(model.drop6(ones), ones)
    model.train()
    torch.manual_seed(4)
    dropped = model.drop6(ones)
    assert set(dropped.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1/(1-p)


# -- resnet18-shaped --------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """One resnet18-shaped net in eval mode for the read-only tests below (it takes ~0.4 s to build)."""
    return get_entry("resnet18-shaped").factory().eval()


def test_resnet18_layer_sizes_and_torchvision_names(resnet: nn.Module) -> None:
    model = resnet
    with torch.no_grad():
        shapes = output_shapes(model, torch.zeros(1, 3, 224, 224))
    assert shapes == [
        ("conv1", (64, 112, 112)),
        ("bn1", (64, 112, 112)),
        ("relu", (64, 112, 112)),
        ("maxpool", (64, 56, 56)),
        ("layer1", (64, 56, 56)),
        ("layer2", (128, 28, 28)),
        ("layer3", (256, 14, 14)),
        ("layer4", (512, 7, 7)),
        ("avgpool", (512, 1, 1)),
        ("fc", (10,)),
    ]
    keys = list(model.state_dict())
    assert len(keys) == 122  # torchvision resnet18's state dict has 122 entries too
    assert keys[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    assert [k for k in keys if k.startswith("layer2.0.")] == [
        "layer2.0.conv1.weight",
        *(f"layer2.0.bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var")),
        "layer2.0.bn1.num_batches_tracked",
        "layer2.0.conv2.weight",
        *(f"layer2.0.bn2.{s}" for s in ("weight", "bias", "running_mean", "running_var")),
        "layer2.0.bn2.num_batches_tracked",
        "layer2.0.downsample.0.weight",
        *(f"layer2.0.downsample.1.{s}" for s in ("weight", "bias", "running_mean", "running_var")),
        "layer2.0.downsample.1.num_batches_tracked",
    ]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    with_downsample = [n for n, m in model.named_modules() if n.endswith(".downsample")]
    assert with_downsample == ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]


def test_resnet18_param_count(resnet: nn.Module) -> None:
    model = resnet
    # torchvision's resnet18 has 11,689,512 parameters with a 512→1000 fc; ours ends 512→10
    expected = 11_689_512 - fc_params(512, 1000) + fc_params(512, 10)
    assert expected == 11_181_642
    assert sum(p.numel() for p in model.parameters()) == expected
    stem = conv_params(3, 64, 7, bias=False) + 2 * 64
    assert stem == 9536
    assert sum(p.numel() for p in model.conv1.parameters()) + 128 == stem


def test_resnet18_block_relu_is_one_module_called_twice(resnet: nn.Module) -> None:
    calls: dict[str, int] = {}
    relus = {name: m for name, m in resnet.named_modules() if isinstance(m, nn.ReLU)}
    block_relus = [f"layer{i}.{j}.relu" for i in range(1, 5) for j in range(2)]
    assert sorted(relus) == sorted(["relu", *block_relus])
    handles = []
    for name, m in relus.items():
        assert m.inplace
        handles.append(
            m.register_forward_hook(
                lambda *_a, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
            )
        )
    try:
        with torch.no_grad():
            resnet(torch.zeros(1, 3, 224, 224))
    finally:
        for h in handles:
            h.remove()
    assert calls == {"relu": 1, **dict.fromkeys(block_relus, 2)}


def test_basic_block_matches_functional_oracle() -> None:
    torch.manual_seed(3)
    block = BasicBlock(4, 8, stride=2)
    with torch.no_grad():  # non-trivial BatchNorm statistics, then eval mode
        for bn in (block.bn1, block.bn2, block.downsample[1]):  # type: ignore[index]
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    block.eval()
    x = torch.randn(2, 4, 10, 10)

    def bn(t: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    ds_conv, ds_bn = block.downsample  # type: ignore[misc]
    shortcut = bn(F.conv2d(x, ds_conv.weight, stride=2), ds_bn)  # (2, 8, 5, 5)
    h = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    h = bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
    expected = F.relu(h + shortcut)
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 8, 5, 5)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert BasicBlock(8, 8).downsample is None


# -- shipped weights --------------------------------------------------------------------

TRAINED = ["tiny-vgg", "zfnet-small"]  # trained by scripts/train_zoo.py (convnetjs-cifar: train_default.py)


@pytest.mark.parametrize("name", TRAINED)
def test_shipped_weights_reproduce_their_stated_test_accuracy(name: str) -> None:
    """Load the shipped file as a user does; its metadata describes it, and the accuracy it
    states is recomputed exactly on the built-in test crops it names."""
    entry = get_entry(name)
    model, loaded_entry, meta = load_model(f"zoo:{name}")
    assert loaded_entry is entry and not model.training
    assert meta == entry.shipped_metadata()
    assert meta["model"] == f"zoo:{name}"
    assert json.loads(meta["input_shape"]) == list(entry.input_shape)
    assert json.loads(meta["classes"]) == list(PHOTO_CLASSES)
    assert meta["recipe"].startswith(f"scripts/train_zoo.py {name} --epochs ")
    assert int(meta["step"]) > 0
    found = re.fullmatch(r"builtin:photo-crops test n=(\d+) seed=(\d+)", meta["test_set"])
    assert found is not None, meta["test_set"]
    n, seed = int(found[1]), int(found[2])
    x, y = photo_crops("test", n, size=entry.input_shape[-1], seed=seed)  # (n, 3, H, W) in [0, 1]
    mean = torch.tensor(json.loads(meta["mean"]), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(json.loads(meta["std"]), dtype=torch.float32).view(1, 3, 1, 1)
    with torch.no_grad():  # the script's batches of 250: same kernels, same logits
        pred = torch.cat([model((x[i : i + 250] - mean) / std).argmax(1) for i in range(0, n, 250)])
    accuracy = int((pred == y).sum()) / n
    assert abs(accuracy - float(meta["test_accuracy"])) <= 1e-6
    assert accuracy > 0.5  # ten classes: chance is 0.1


def test_shipped_weights_are_package_data_and_small() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["convscope"]
    shipped = [e for e in ZOO.values() if e.weights is not None]
    assert [e.name for e in shipped] == ["convnetjs-cifar", "tiny-vgg", "zfnet-small"]
    for entry in shipped:
        path = entry.weights_path
        assert path is not None and path.is_file(), path
        assert path.parent == WEIGHTS_DIR and WEIGHTS_DIR.parent.name == "models"
        relative = f"models/weights/{entry.weights}"
        assert any(fnmatch.fnmatch(relative, g) for g in globs), (relative, globs)
        assert path.stat().st_size < 5_000_000
