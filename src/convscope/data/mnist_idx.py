"""Reader for IDX files (the MNIST / Fashion-MNIST format), plain or gzipped.

An IDX file is: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, each dimension as a
big-endian uint32, then the data, big-endian, row-major. See http://yann.lecun.com/exdb/mnist/.

    >>> images = read_idx("train-images-idx3-ubyte.gz")   # (60000, 28, 28) uint8
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from convscope.data.errors import DataError

__all__ = ["IDX_DTYPES", "MNISTIdx", "read_idx"]

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_DATA_BYTES = 2**31  # 2 GiB: EMNIST, the largest IDX set, needs 0.55 GiB; a gzip bomb stops here
_MAX_DIMS = 16  # MNIST uses 1 (labels) and 3 (images); numpy itself stops at 64
_MAX_CLASSES = 100_000  # a label is a class index; the dataset names classes "0".."n-1"
_CHUNK = 2**20  # read in chunks: memory grows with the bytes really there, not the declared size


class _Reader(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _read_at_most(f: _Reader, n: int) -> bytearray:
    """Up to ``n`` bytes of ``f``, read in chunks (a short file never costs ``n`` bytes of memory)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian numpy array of its shape."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: IDX file not found")
    with p.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(p, "rb") if gz else p.open("rb") as f:
            header = f.read(4)
            if len(header) < 4 or header[0] != 0 or header[1] != 0:
                raise DataError(f"{p}: not an IDX file (magic must start with two zero bytes)")
            code, ndim = header[2], header[3]
            if code not in IDX_DTYPES:
                raise DataError(f"{p}: unknown IDX dtype code 0x{code:02X}")
            if ndim == 0:
                raise DataError(f"{p}: IDX header declares 0 dimensions")
            if ndim > _MAX_DIMS:
                raise DataError(
                    f"{p}: IDX header declares {ndim} dimensions, at most {_MAX_DIMS} are supported"
                )
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{p}: truncated IDX header (expected {ndim} dimensions)")
            shape = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            dtype = IDX_DTYPES[code]
            expected = math.prod(shape) * dtype.itemsize
            # the non-zero dimensions too: numpy refuses shapes like (0, 2**32-1, 2**32-1)
            if max(expected, math.prod(d for d in shape if d) * dtype.itemsize) > _MAX_DATA_BYTES:
                raise DataError(
                    f"{p}: IDX header declares shape {shape} of {dtype.name}, over the limit "
                    f"of {_MAX_DATA_BYTES} data bytes"
                )
            data = _read_at_most(f, expected + 1)  # one byte more reveals trailing garbage
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{p}: cannot read IDX data ({err})") from None
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than declared"
        raise DataError(
            f"{p}: IDX file is {problem}: shape {shape} of {dtype.name} needs {expected} data "
            f"bytes, found {len(data) if len(data) <= expected else 'more'}"
        )
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # native byte order, writable copy


class MNISTIdx(Dataset[tuple[torch.Tensor, int]]):
    """IDX image + label files as a Dataset of (x float32 (1, H, W) in [0, 1], label int).

    Images must be uint8 (N, H, W) and labels integer (N,).
    """

    def __init__(self, images_path: str | Path, labels_path: str | Path) -> None:
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(
                f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
            )
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise DataError(
                f"{images_path}: images of size {images.shape[1]}x{images.shape[2]} are empty"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(
                f"{labels_path}: expected integer labels (N,), got {labels.dtype} {labels.shape}"
            )
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}"
            )
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= _MAX_CLASSES):
            raise DataError(
                f"{labels_path}: labels must be class indices 0..{_MAX_CLASSES - 1}, found "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        self.images: np.ndarray = images  # (N, H, W) uint8
        self.labels: np.ndarray = labels.astype(np.int64)  # (N,)
        n_classes = int(self.labels.max()) + 1 if self.labels.size else 0
        self.classes: tuple[str, ...] = tuple(str(c) for c in range(n_classes))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).to(torch.float32)[None] / 255.0  # (1, H, W)
        return x, int(self.labels[i])
