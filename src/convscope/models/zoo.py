"""The model zoo: small classic CNNs defined in code, and ZOO, the one registry naming them.

Every net is a plain ``nn.Module`` whose layers are attributes with readable names, so
the layer names convscope shows read like the papers: ``conv1, relu1, pool1, ..., fc``
for the plain nets, torchvision's names (``conv1, bn1, relu, maxpool, layer1.0.conv1,
..., fc``) for the ResNet. Each activation is its own module, so a forward hook sees it.

    >>> from convscope.models.zoo import get_entry
    >>> entry = get_entry("convnetjs-cifar")
    >>> model = entry.factory()                      # random init; no download
    >>> entry.input_shape, entry.num_classes
    ((3, 32, 32), 10)

Trained weights, when a net ships them, live in ``convscope/models/weights/`` under the
file name ``ZooEntry.weights`` (see ``convscope.models.load.load_model``), written by
``scripts/train_zoo.py`` with self-describing metadata (``ZooEntry.shipped_metadata()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import safetensors
import torch
from torch import nn

from convscope.models.names import ZOO_NAMES, zoo_names

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Where shipped zoo weights live (``<package>/models/weights/<ZooEntry.weights>``)."""


class UnknownModelError(ValueError):
    """A zoo name that is not in ZOO; the message lists the valid names."""


# --------------------------------------------------------------------------------------
# ConvNetJS demo nets (Karpathy): https://cs.stanford.edu/people/karpathy/convnetjs/
# --------------------------------------------------------------------------------------


class ConvNetJSCifar(nn.Module):
    """ConvNetJS's CIFAR-10 demo net: three conv(5×5, pad 2)-ReLU-pool(2/2) blocks, then fc.

    Input (B, 3, 32, 32) → logits (B, 10).
    """

    def __init__(self, *, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=5, stride=1, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(16, 20, kernel_size=5, stride=1, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv3 = nn.Conv2d(20, 20, kernel_size=5, stride=1, padding=2)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(20 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))  # (B, 16, 16, 16)
        x = self.pool2(self.relu2(self.conv2(x)))  # (B, 20, 8, 8)
        x = self.pool3(self.relu3(self.conv3(x)))  # (B, 20, 4, 4)
        logits: torch.Tensor = self.fc(self.flatten(x))  # (B, 320) → (B, num_classes)
        return logits


class ConvNetJSMnist(nn.Module):
    """ConvNetJS's MNIST demo net: conv(5×5×8)-ReLU-pool(2/2), conv(5×5×16)-ReLU-pool(3/3), fc.

    Input (B, 1, 24, 24) (ConvNetJS trains on random 24×24 crops of the 28×28 digits)
    → logits (B, 10).
    """

    def __init__(self, *, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=5, stride=1, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=5, stride=1, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=3)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))  # (B, 8, 12, 12)
        x = self.pool2(self.relu2(self.conv2(x)))  # (B, 16, 4, 4)
        logits: torch.Tensor = self.fc(self.flatten(x))  # (B, 256) → (B, num_classes)
        return logits


# --------------------------------------------------------------------------------------
# CNN Explainer's Tiny VGG: https://poloclub.github.io/cnn-explainer/
# --------------------------------------------------------------------------------------


class TinyVGG(nn.Module):
    """CNN Explainer's Tiny VGG: two blocks of [conv3×3 (no pad)-ReLU ×2, max-pool 2], fc.

    Input (B, 3, 64, 64) → logits (B, 10). Every conv has 10 filters.
    """

    def __init__(self, *, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1_1 = nn.Conv2d(3, 10, kernel_size=3)
        self.relu1_1 = nn.ReLU()
        self.conv1_2 = nn.Conv2d(10, 10, kernel_size=3)
        self.relu1_2 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2_1 = nn.Conv2d(10, 10, kernel_size=3)
        self.relu2_1 = nn.ReLU()
        self.conv2_2 = nn.Conv2d(10, 10, kernel_size=3)
        self.relu2_2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(10 * 13 * 13, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1_1(self.conv1_1(x))  # (B, 10, 62, 62)
        x = self.relu1_2(self.conv1_2(x))  # (B, 10, 60, 60)
        x = self.pool1(x)  # (B, 10, 30, 30)
        x = self.relu2_1(self.conv2_1(x))  # (B, 10, 28, 28)
        x = self.relu2_2(self.conv2_2(x))  # (B, 10, 26, 26)
        x = self.pool2(x)  # (B, 10, 13, 13)
        logits: torch.Tensor = self.fc(self.flatten(x))  # (B, 1690) → (B, num_classes)
        return logits


# --------------------------------------------------------------------------------------
# ZFNet, scaled down: Zeiler & Fergus 2013, https://arxiv.org/abs/1311.2901
# --------------------------------------------------------------------------------------


class ZFNetSmall(nn.Module):
    """ZFNet's shape at input 3×112×112 (half ZFNet's 224) with about a quarter of its channels.

    As in ZFNet: a 7×7 stride-2 first conv, a 5×5 stride-2 second conv, each followed by
    ReLU and a 3×3 stride-2 max-pool; three 3×3 convs and a last 3×3 stride-2 max-pool;
    two hidden fully connected layers with dropout (fc6, fc7), then the classifier fc8.
    ZFNet's local contrast normalisation is left out. Channels 24-64-96-96-64, fc width 256.

    Input (B, 3, 112, 112) → logits (B, 10).
    """

    def __init__(self, *, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=7, stride=2, padding=3)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(24, 64, kernel_size=5, stride=2, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(64, 96, kernel_size=3, padding=1)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(96, 96, kernel_size=3, padding=1)
        self.relu4 = nn.ReLU()
        self.conv5 = nn.Conv2d(96, 64, kernel_size=3, padding=1)
        self.relu5 = nn.ReLU()
        self.pool5 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.flatten = nn.Flatten()
        self.fc6 = nn.Linear(64 * 3 * 3, 256)
        self.relu6 = nn.ReLU()
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(256, 256)
        self.relu7 = nn.ReLU()
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))  # (B, 24, 56, 56)
        x = self.pool1(x)  # (B, 24, 28, 28)
        x = self.relu2(self.conv2(x))  # (B, 64, 14, 14)
        x = self.pool2(x)  # (B, 64, 7, 7)
        x = self.relu3(self.conv3(x))  # (B, 96, 7, 7)
        x = self.relu4(self.conv4(x))  # (B, 96, 7, 7)
        x = self.relu5(self.conv5(x))  # (B, 64, 7, 7)
        x = self.pool5(x)  # (B, 64, 3, 3)
        x = self.flatten(x)  # (B, 576)
        x = self.drop6(self.relu6(self.fc6(x)))  # (B, 256)
        x = self.drop7(self.relu7(self.fc7(x)))  # (B, 256)
        logits: torch.Tensor = self.fc8(x)  # (B, num_classes)
        return logits


# --------------------------------------------------------------------------------------
# ResNet-18 shape: He et al. 2015, https://arxiv.org/abs/1512.03385
# --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    ONE ``self.relu`` module is called twice per forward (as torchvision does), so hooks on
    it fire twice: a case convscope's capture has to name apart.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        # shortcut: x itself, or a 1×1 stride-s conv + BN when the shape changes
        identity: torch.Tensor = x if self.downsample is None else self.downsample(x)
        out: torch.Tensor = self.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, C_out, H/s, W/s)
        out = self.relu(out + identity)  # second call of the same ReLU module
        return out


class ResNet18Shaped(nn.Module):
    """ResNet-18's shape: 7×7 stride-2 stem, BasicBlock ×[2, 2, 2, 2] at 64/128/256/512 channels.

    Module names follow torchvision's resnet18 (``conv1, bn1, relu, maxpool, layer1.0.conv1,
    ..., layer2.0.downsample.0, ..., avgpool, fc``). Input (B, 3, 224, 224) → logits (B, 10).
    """

    def __init__(self, *, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(64, 64, stride=1)
        self.layer2 = self._stage(64, 128, stride=2)
        self.layer3 = self._stage(128, 256, stride=2)
        self.layer4 = self._stage(256, 512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, *, stride: int) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(in_channels, out_channels, stride=stride),
            BasicBlock(out_channels, out_channels, stride=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 64, 112, 112)
        x = self.maxpool(x)  # (B, 64, 56, 56)
        x = self.layer1(x)  # (B, 64, 56, 56)
        x = self.layer2(x)  # (B, 128, 28, 28)
        x = self.layer3(x)  # (B, 256, 14, 14)
        x = self.layer4(x)  # (B, 512, 7, 7)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512)
        logits: torch.Tensor = self.fc(x)  # (B, num_classes)
        return logits


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooEntry:
    """One zoo net: how to build it and what it expects."""

    name: str  # the NAME in the model spec ``zoo:NAME``
    factory: Callable[[], nn.Module]  # builds the net, randomly initialised (no download)
    input_shape: tuple[int, int, int]  # (C, H, W) of one input image
    num_classes: int  # length of the logits vector
    description: str  # one line for --help and the dashboard
    source: str  # link to the paper or demo the architecture comes from
    weights: str | None = None  # file name in WEIGHTS_DIR when trained weights ship, else None

    @property
    def weights_path(self) -> Path | None:
        """Where this net's shipped weights file is (or would be); None when none ship."""
        return None if self.weights is None else WEIGHTS_DIR / self.weights

    def shipped_metadata(self) -> dict[str, str]:
        """The shipped weights file's metadata (``test_accuracy``, ``classes``, ``recipe``, ...)
        read from its header without loading tensors; {} when no file ships (or it is absent)."""
        path = self.weights_path
        if path is None or not path.is_file():
            return {}
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})


def _registry(*entries: ZooEntry) -> dict[str, ZooEntry]:
    names = tuple(entry.name for entry in entries)
    if names != ZOO_NAMES:  # models/names.py is what --help lists without importing this module
        raise RuntimeError(f"models/names.py's ZOO_NAMES {ZOO_NAMES} != the registered nets {names}")
    return {entry.name: entry for entry in entries}


ZOO: dict[str, ZooEntry] = _registry(
    ZooEntry(
        name="convnetjs-cifar",
        factory=ConvNetJSCifar,
        input_shape=(3, 32, 32),
        num_classes=10,
        description="ConvNetJS CIFAR-10 demo net: 3× [conv5×5-ReLU-pool2], fc 320→10",
        source="https://cs.stanford.edu/people/karpathy/convnetjs/demo/cifar10.html",
        weights="convnetjs-cifar.safetensors",
    ),
    ZooEntry(
        name="convnetjs-mnist",
        factory=ConvNetJSMnist,
        input_shape=(1, 24, 24),
        num_classes=10,
        description="ConvNetJS MNIST demo net: conv5×5×8-pool2, conv5×5×16-pool3, fc 256→10",
        source="https://cs.stanford.edu/people/karpathy/convnetjs/demo/mnist.html",
    ),
    ZooEntry(
        name="tiny-vgg",
        factory=TinyVGG,
        input_shape=(3, 64, 64),
        num_classes=10,
        description="CNN Explainer's Tiny VGG: 2× [conv3×3-ReLU ×2, pool2], fc 1690→10",
        source="https://poloclub.github.io/cnn-explainer/",
        weights="tiny-vgg.safetensors",
    ),
    ZooEntry(
        name="zfnet-small",
        factory=ZFNetSmall,
        input_shape=(3, 112, 112),
        num_classes=10,
        description="ZFNet's shape at 112×112: conv7×7/2, conv5×5/2, 3× conv3×3, fc6, fc7, fc8",
        source="https://arxiv.org/abs/1311.2901",
        weights="zfnet-small.safetensors",
    ),
    ZooEntry(
        name="resnet18-shaped",
        factory=ResNet18Shaped,
        input_shape=(3, 224, 224),
        num_classes=10,
        description="ResNet-18's shape (BasicBlock ×[2,2,2,2], BatchNorm, shared block ReLU)",
        source="https://arxiv.org/abs/1512.03385",
    ),
)
"""THE registry of zoo nets, keyed by name; CLI choices are derived from it."""


def get_entry(name: str) -> ZooEntry:
    """The ZooEntry called ``name``; UnknownModelError listing the valid names otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown zoo model {name!r}; valid names: {', '.join(zoo_names())}"
        ) from None
