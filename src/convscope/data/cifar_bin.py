"""Reader for CIFAR-10 binary batches (data_batch_1.bin ... test_batch.bin).

A batch file is a run of 3073-byte records: 1 label byte (0..9) then 3072 pixel bytes,
the 32x32 red plane, then green, then blue, each row-major. See
https://www.cs.toronto.edu/~kriz/cifar.html ("binary version").

    >>> X, y = read_cifar10_batch("cifar-10-batches-bin/test_batch.bin")  # (N, 3, 32, 32) uint8
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from convscope.data.errors import DataError

__all__ = [
    "CIFAR10_CLASSES",
    "RECORD_BYTES",
    "CIFAR10Bin",
    "find_cifar_batches",
    "read_cifar10_batch",
]

RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + R, G, B planes
# Class names in label order, as in batches.meta.txt of the official archive.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_MAX_FILE_BYTES = 2**31  # no CIFAR-10 batch comes near this; refuse to read bigger files
_MAX_META_BYTES = 2**16  # batches.meta.txt holds 10 short class names


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch: X uint8 (N, 3, 32, 32) with channel 0 = red, y int64 (N,) in 0..9."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: CIFAR-10 batch file not found")
    size = p.stat().st_size
    if size > _MAX_FILE_BYTES:
        raise DataError(f"{p}: {size} bytes is too large for a CIFAR-10 batch")
    try:
        raw = np.fromfile(p, dtype=np.uint8)  # (N * 3073,)
    except OSError as err:
        raise DataError(f"{p}: cannot read CIFAR-10 batch ({err.strerror or err})") from None
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(
            f"{p}: {raw.size} bytes is not a whole number of CIFAR-10 records "
            f"({RECORD_BYTES} bytes each: 1 label + 3072 pixels)"
        )
    records = raw.reshape(-1, RECORD_BYTES)  # (N, 3073)
    y = records[:, 0].astype(np.int64)  # (N,)
    bad = np.flatnonzero(y > 9)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{p}: record {i} has label {int(y[i])}, CIFAR-10 labels are 0..9")
    X = records[:, 1:].reshape(-1, 3, 32, 32).copy()  # (N, 3, 32, 32): planes R, G, B
    return X, y


def find_cifar_batches(root: str | Path, *, split: str = "train") -> list[Path]:
    """The batch files of a CIFAR-10 directory (or its cifar-10-batches-bin/ sub-folder).

    split "train" -> data_batch_*.bin, "test" -> test_batch.bin; a folder holding other
    .bin files only gives all of them. Empty list when none is found.
    """
    if split not in ("train", "test"):
        raise DataError(f"{root}: CIFAR-10 split must be 'train' or 'test', got {split!r}")
    d = Path(root)
    if (d / "cifar-10-batches-bin").is_dir():
        d = d / "cifar-10-batches-bin"
    pattern = "data_batch_*.bin" if split == "train" else "test_batch.bin"
    files = sorted(d.glob(pattern))
    if not files and not any(d.glob("data_batch_*.bin")) and not any(d.glob("test_batch.bin")):
        files = sorted(d.glob("*.bin"))
    return files


def _read_meta(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta.txt"
    if not meta.is_file():
        return CIFAR10_CLASSES
    try:
        with meta.open("rb") as fh:
            raw = fh.read(_MAX_META_BYTES + 1)
    except OSError as err:
        raise DataError(f"{meta}: cannot read class names ({err.strerror or err})") from None
    if len(raw) > _MAX_META_BYTES:
        raise DataError(f"{meta}: over {_MAX_META_BYTES} bytes, too large for 10 class names")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{meta}: class names are not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    names = tuple(line.strip() for line in text.splitlines())
    names = tuple(n for n in names if n)
    if len(names) != 10:
        raise DataError(f"{meta}: expected 10 class names, found {len(names)}")
    return names


class CIFAR10Bin(Dataset[tuple[torch.Tensor, int]]):
    """CIFAR-10 binary batches as a Dataset of (x float32 (3, 32, 32) in [0, 1], label int).

    `root_or_files` is a directory (its data_batch_*.bin for split="train", test_batch.bin
    for split="test") or an explicit list of batch files. `classes` come from
    batches.meta.txt beside the batches when present, else the standard CIFAR-10 names.
    """

    def __init__(
        self, root_or_files: str | Path | Sequence[str | Path], *, split: str = "train"
    ) -> None:
        if isinstance(root_or_files, str | Path):
            root = Path(root_or_files)
            if not root.is_dir():
                raise DataError(f"{root}: not a directory of CIFAR-10 batches")
            files = find_cifar_batches(root, split=split)
            if not files:
                raise DataError(f"{root}: no CIFAR-10 .bin batches found for split {split!r}")
        else:
            files = [Path(f) for f in root_or_files]
            if not files:
                raise DataError("CIFAR10Bin: the list of batch files is empty")
        parts = [read_cifar10_batch(f) for f in files]
        self.files: list[Path] = files
        self.images: np.ndarray = np.concatenate([x for x, _ in parts])  # (N, 3, 32, 32) uint8
        self.labels: np.ndarray = np.concatenate([y for _, y in parts])  # (N,) int64
        self.classes: tuple[str, ...] = _read_meta(files[0].parent)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).to(torch.float32) / 255.0  # (3, 32, 32)
        return x, int(self.labels[i])
