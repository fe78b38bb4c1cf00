"""Turn a dataset spec string into a Dataset of (x float32 (C, H, W), label int).

Accepted specs (ACCEPTED lists them; the CLI derives its help from it):

    builtin:photo-crops[:train|val|test]   the default natural-image set (builtin.photo_crops)
    builtin:digits[:train|val|test]        scikit-learn's handwritten digits
    DIR with CIFAR-10 .bin batches         data_batch_*.bin (or cifar-10-batches-bin/ inside)
    DIR with MNIST IDX files               *idx3-ubyte[.gz] images + *idx1-ubyte[.gz] labels
    DIR of class sub-folders of images     an image folder
    FILE.npz / FILE.npy                    numpy arrays (see arrays.ArrayDataset)

Every item is brought to the asked `size` (H, W) and `channels` (1 grey, 3 RGB).

    >>> ds = open_dataset("builtin:photo-crops", size=(32, 32), channels=3)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from convscope.data.arrays import ArrayDataset
from convscope.data.builtin import SPLITS, digits, photo_crops
from convscope.data.cifar_bin import CIFAR10Bin, find_cifar_batches
from convscope.data.errors import DataError
from convscope.data.folder import ImageFolder
from convscope.data.mnist_idx import MNISTIdx
from convscope.data.transforms import conform

__all__ = ["ACCEPTED", "BUILTIN_DATASETS", "ConformedDataset", "TensorPairs", "open_dataset"]

BUILTIN_DATASETS: tuple[str, ...] = ("photo-crops", "digits")
ACCEPTED: tuple[str, ...] = (
    *(f"builtin:{name}[:{'|'.join(SPLITS)}]" for name in BUILTIN_DATASETS),
    "a directory of CIFAR-10 .bin batches",
    "a directory of MNIST IDX files (*idx3-ubyte[.gz] + *idx1-ubyte[.gz])",
    "an image folder (one sub-folder of images per class)",
    "a .npz or .npy file",
)


class TensorPairs(Dataset[tuple[torch.Tensor, int]]):
    """In-memory X (N, C, H, W) and y (N,) tensors as a Dataset of (x (C, H, W), label int)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, *, classes: tuple[str, ...] = ()) -> None:
        if X.ndim != 4 or y.ndim != 1 or X.shape[0] != y.shape[0]:
            raise DataError(
                f"TensorPairs: need X (N, C, H, W) and y (N,), got {tuple(X.shape)}, {tuple(y.shape)}"
            )
        self.X = X  # (N, C, H, W)
        self.y = y  # (N,)
        self.classes = classes

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.X[i], int(self.y[i])


class ConformedDataset(Dataset[tuple[torch.Tensor, int]]):
    """Wraps a dataset so each x becomes float32 (channels, size[0], size[1]) (transforms.conform)."""

    def __init__(
        self, inner: Dataset[tuple[torch.Tensor, int]], *, size: tuple[int, int], channels: int
    ) -> None:
        self.inner = inner
        self.size = size
        self.channels = channels
        self.classes: tuple[str, ...] = tuple(getattr(inner, "classes", ()))

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.inner[i]
        return conform(x, size=self.size, channels=self.channels), int(y)


def _unknown(spec: str, problem: str) -> DataError:
    return DataError(f"{spec}: {problem}; accepted: {'; '.join(ACCEPTED)}")


def _builtin(spec: str, size: tuple[int, int], channels: int) -> Dataset[tuple[torch.Tensor, int]]:
    parts = spec.split(":")
    name = parts[1] if len(parts) > 1 else ""
    split = parts[2] if len(parts) > 2 else "train"
    if name not in BUILTIN_DATASETS or len(parts) > 3 or split not in SPLITS:
        raise _unknown(spec, "unknown built-in dataset")
    side = max(size)
    if name == "photo-crops":
        from convscope.data.builtin import PHOTO_CLASSES

        n = 10000 if split == "train" else 2000
        X, y = photo_crops(split, n, size=side)  # (n, 3, side, side)
        pairs = TensorPairs(X, y, classes=PHOTO_CLASSES)
    else:
        X, y = digits(split, size=side)  # (n, 1, side, side)
        pairs = TensorPairs(X, y, classes=tuple(str(d) for d in range(10)))
    native = (X.shape[1], X.shape[2], X.shape[3])
    if native == (channels, size[0], size[1]):
        return pairs
    return ConformedDataset(pairs, size=size, channels=channels)


def _mnist_files(d: Path) -> tuple[Path, Path] | None:
    files = [p for p in d.iterdir() if p.is_file()]
    images = sorted(p for p in files if "idx3" in p.name)
    labels = sorted(p for p in files if "idx1" in p.name)
    if not images and not labels:
        return None
    if len(images) > 1 or len(labels) > 1:  # several splits: take the training pair
        images = [p for p in images if p.name.startswith("train")] or images
        labels = [p for p in labels if p.name.startswith("train")] or labels
    if len(images) != 1 or len(labels) != 1:
        raise DataError(
            f"{d}: cannot pair MNIST IDX files (images: {[p.name for p in images]}, "
            f"labels: {[p.name for p in labels]}); expected one *idx3* and one *idx1* file"
        )
    return images[0], labels[0]


def open_dataset(
    spec: str, *, size: tuple[int, int], channels: int
) -> Dataset[tuple[torch.Tensor, int]]:
    """Open `spec` (see ACCEPTED) as a Dataset of (x float32 (channels, *size) in [0, 1], label int)."""
    if len(size) != 2 or min(size) <= 0:
        raise DataError(f"open_dataset: size must be (H, W) with positive ints, got {size}")
    if channels not in (1, 3):
        raise DataError(f"open_dataset: channels must be 1 or 3, got {channels}")
    if spec.startswith("builtin:"):
        return _builtin(spec, size, channels)
    path = Path(spec)
    if not path.exists():
        raise _unknown(spec, "no such file or directory, and not a built-in dataset")
    if path.is_file():
        if path.suffix.lower() in (".npz", ".npy"):
            return ConformedDataset(ArrayDataset(path), size=size, channels=channels)
        raise _unknown(spec, f"unsupported file type {path.suffix or '(none)'}")
    if find_cifar_batches(path, split="train"):
        return ConformedDataset(CIFAR10Bin(path), size=size, channels=channels)
    mnist = _mnist_files(path)
    if mnist is not None:
        return ConformedDataset(MNISTIdx(*mnist), size=size, channels=channels)
    return ImageFolder(path, size=size, channels=channels)
