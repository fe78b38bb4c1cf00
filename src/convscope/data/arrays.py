"""Numpy arrays (in memory or a .npy / .npz file) as a Dataset of (x (C, H, W), label).

Accepted image layouts: (N, C, H, W) with C 1 or 3, (N, H, W) grey, (N, H, W, C) with C 1
or 3. uint8 values are divided by 255; float values are kept as they are. Files are read
with allow_pickle=False (object arrays are refused); a .npz holds the images under one of
x / X / images / data and the labels under one of y / labels / targets.

    >>> ds = ArrayDataset("my_images.npz")
    >>> x, label = ds[0]                        # x float32 (C, H, W)
"""

from __future__ import annotations

import io
import lzma
import math
import struct
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from convscope.data.errors import DataError

__all__ = ["NPZ_IMAGE_KEYS", "NPZ_LABEL_KEYS", "UNLABELLED", "ArrayDataset"]

NPZ_IMAGE_KEYS: tuple[str, ...] = ("x", "X", "images", "data")
NPZ_LABEL_KEYS: tuple[str, ...] = ("y", "labels", "targets")
UNLABELLED = -1  # the label given to every example when no labels are supplied


_MAX_HEADER_BYTES = 10_000  # numpy's own limit for a header parsed without allow_pickle
_MAX_ARRAY_BYTES = 2**48  # no shape may describe more than this, even one with a 0 in it
_CHUNK = 2**20  # .npz members are read in chunks: memory follows the bytes really there
# what a damaged zip can raise from zipfile and its decompressors
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,  # an unsupported compression method
    RuntimeError,  # an encrypted member
    ValueError,
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
)


# what numpy's header parser (ast.literal_eval, its Python-2 tokenize fallback) can raise
_HEADER_ERRORS = (
    ValueError,
    TypeError,
    SyntaxError,
    tokenize.TokenError,
    RecursionError,
    MemoryError,
    KeyError,
)


def _read_npy_header(fp: BinaryIO, name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Parse a .npy header from ``fp`` (left at the first data byte): (shape, fortran, dtype).

    The header length is checked before the header is read, and the shape and dtype before
    any data: object dtypes (pickles) and shapes over _MAX_ARRAY_BYTES are refused.
    """
    magic = fp.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise DataError(f"{name}: not a .npy array (no \\x93NUMPY magic)")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0)):
        raise DataError(f"{name}: .npy format version {version[0]}.{version[1]} is not supported")
    length_format = "<H" if version == (1, 0) else "<I"
    raw_length = fp.read(struct.calcsize(length_format))
    if len(raw_length) < struct.calcsize(length_format):
        raise DataError(f"{name}: truncated .npy header")
    (length,) = struct.unpack(length_format, raw_length)
    if length > _MAX_HEADER_BYTES:
        raise DataError(
            f"{name}: .npy header declares {length} bytes, over the limit of {_MAX_HEADER_BYTES}"
        )
    header = fp.read(length)
    if len(header) < length:
        raise DataError(f"{name}: truncated .npy header ({len(header)} of {length} bytes)")
    parse = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about Python-2 era headers
            shape, fortran, dtype = parse(io.BytesIO(raw_length + header))
    except _HEADER_ERRORS as err:
        raise DataError(f"{name}: bad .npy header ({' '.join(str(err).split())[:200]})") from None
    if dtype.hasobject:
        raise DataError(
            f"{name}: the array holds Python objects (dtype {dtype}); convscope never unpickles "
            "data files"
        )
    if any(d < 0 for d in shape):
        raise DataError(f"{name}: .npy header declares a negative dimension in {shape}")
    if math.prod(d for d in shape if d) * max(dtype.itemsize, 1) > _MAX_ARRAY_BYTES:
        raise DataError(f"{name}: .npy header declares shape {shape} of {dtype}, too large")
    return tuple(shape), bool(fortran), dtype


def _mismatch(name: str, shape: tuple[int, ...], dtype: np.dtype[Any], have: int) -> DataError:
    need = math.prod(shape) * dtype.itemsize
    return DataError(
        f"{name}: header declares shape {shape} of {dtype} ({need} data bytes), "
        f"the file holds {have}"
    )


def _load_npy(path: Path) -> np.ndarray:
    name = str(path)
    with path.open("rb") as fh:
        shape, fortran, dtype = _read_npy_header(fh, name)
        offset = fh.tell()
    have = path.stat().st_size - offset
    if have != math.prod(shape) * dtype.itemsize:
        raise _mismatch(name, shape, dtype, have)
    if have == 0:
        return np.zeros(shape, dtype=dtype)
    order: Literal["C", "F"] = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def _load_npz_member(zf: zipfile.ZipFile, member: str, name: str) -> np.ndarray:
    where = f"{name}[{member}]"
    info = zf.getinfo(member)
    with zf.open(info) as fp:
        shape, fortran, dtype = _read_npy_header(fp, where)  # type: ignore[arg-type]
        need = math.prod(shape) * dtype.itemsize
        have = info.file_size - fp.tell()
        if have != need:
            raise _mismatch(where, shape, dtype, have)
        buf = bytearray()
        while len(buf) < need:
            chunk = fp.read(min(_CHUNK, need - len(buf)))
            if not chunk:
                raise _mismatch(where, shape, dtype, len(buf))
            buf += chunk
    order: Literal["C", "F"] = "F" if fortran else "C"
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    name = str(path)
    with zipfile.ZipFile(path) as zf:
        members = zf.namelist()
        keys = {m.removesuffix(".npy"): m for m in members}
        xkey = next((k for k in NPZ_IMAGE_KEYS if k in keys), None)
        if xkey is None:
            found = ", ".join(sorted(keys))[:200] or "none"
            raise DataError(
                f"{name}: no image array; expected one of the keys "
                f"{', '.join(NPZ_IMAGE_KEYS)} (found {found})"
            )
        ykey = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
        x = _load_npz_member(zf, keys[xkey], name)
        y = _load_npz_member(zf, keys[ykey], name) if ykey is not None else None
    return x, y


def _load_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a .npy (memory-mapped) or .npz file; never unpickles, refuses every damaged file."""
    if not path.is_file():
        raise DataError(f"{path}: array file not found")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: expected a .npy or .npz file, got {suffix or 'no suffix'}")
    try:
        return (_load_npy(path), None) if suffix == ".npy" else _load_npz(path)
    except DataError:
        raise
    except _ZIP_ERRORS as err:
        problem = " ".join(str(err).split())[:200] or type(err).__name__
        raise DataError(f"{path}: cannot read numpy file ({problem})") from None


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
        height, width = (X.shape[1], X.shape[2]) if layout != "NCHW" else (X.shape[2], X.shape[3])
        if height == 0 or width == 0:
            raise DataError(
                f"{name}: image array shape {X.shape} holds empty {height}x{width} images"
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
