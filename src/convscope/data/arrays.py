"""Numpy arrays (in memory or a .npy / .npz file) as a Dataset of (x (C, H, W), label).

Accepted image layouts: (N, C, H, W) with C 1 or 3, (N, H, W) grey, (N, H, W, C) with C 1
or 3. uint8 values are divided by 255; float values are kept as they are. Files are read
with allow_pickle=False (object arrays are refused); a .npz holds the images under one of
x / X / images / data and the labels under one of y / labels / targets.

    >>> ds = ArrayDataset("my_images.npz")
    >>> x, label = ds[0]                        # x float32 (C, H, W)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from convscope.data.errors import DataError

__all__ = ["NPZ_IMAGE_KEYS", "NPZ_LABEL_KEYS", "UNLABELLED", "ArrayDataset"]

NPZ_IMAGE_KEYS: tuple[str, ...] = ("x", "X", "images", "data")
NPZ_LABEL_KEYS: tuple[str, ...] = ("y", "labels", "targets")
UNLABELLED = -1  # the label given to every example when no labels are supplied


def _load_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise DataError(f"{path}: array file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.keys())
                xkey = next((k for k in NPZ_IMAGE_KEYS if k in keys), None)
                if xkey is None:
                    raise DataError(
                        f"{path}: no image array; expected one of the keys "
                        f"{', '.join(NPZ_IMAGE_KEYS)} (found {', '.join(keys) or 'none'})"
                    )
                ykey = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
                return npz[xkey], (npz[ykey] if ykey is not None else None)
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as err:  # incl. "Object arrays cannot be loaded..."
        raise DataError(f"{path}: cannot read numpy file ({err})") from None
    raise DataError(f"{path}: expected a .npy or .npz file, got {suffix or 'no suffix'}")


class ArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images from numpy arrays or a .npy/.npz file: items are (x float32 (C, H, W), label int).

    `y` (N,) integer labels; when absent (and not in the .npz) every label is UNLABELLED (-1).
    """

    def __init__(self, X: np.ndarray | str | Path, y: np.ndarray | None = None) -> None:
        name = "X"
        if isinstance(X, str | Path):
            name = str(X)
            X, file_y = _load_file(Path(X))
            y = y if y is not None else file_y
        if not isinstance(X, np.ndarray):
            raise TypeError(
                f"ArrayDataset: X must be a numpy array or a path, not {type(X).__name__}"
            )
        if X.dtype.kind not in "uifb":
            raise DataError(f"{name}: image array dtype {X.dtype} is not numeric")
        if X.ndim == 3:
            layout = "NHW"
        elif X.ndim == 4 and X.shape[1] in (1, 3):
            layout = "NCHW"
        elif X.ndim == 4 and X.shape[3] in (1, 3):
            layout = "NHWC"
        else:
            raise DataError(
                f"{name}: image array shape {X.shape} is not (N, C, H, W), (N, H, W) or "
                "(N, H, W, C) with C 1 or 3"
            )
        n = X.shape[0]
        if y is not None:
            y = np.asarray(y)
            if y.ndim != 1 or y.dtype.kind not in "iu":
                raise DataError(
                    f"{name}: labels must be integers of shape (N,), got {y.dtype} {y.shape}"
                )
            if y.shape[0] != n:
                raise DataError(f"{name}: {y.shape[0]} labels for {n} images")
        self.images: np.ndarray = X
        self.layout: str = layout
        self.labels: np.ndarray = (
            y.astype(np.int64) if y is not None else np.full(n, UNLABELLED, dtype=np.int64)
        )  # (N,)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        a = np.asarray(self.images[i])
        if self.layout == "NHW":
            a = a[None]  # (1, H, W)
        elif self.layout == "NHWC":
            a = a.transpose(2, 0, 1)  # (C, H, W)
        x = torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # (C, H, W), a copy
        return (x / 255.0 if a.dtype == np.uint8 else x), int(self.labels[i])
