"""Tensor <-> bytes for run-store snapshots: float16 when that keeps every value, else float32;
zlib-compressed, little-endian, with dtype, shape and a power-of-two scale beside the bytes.

    enc = encode(tensor)              # Encoded(dtype="float16", shape=(1, 16, 32, 32), scale_exp=3, data=b"...")
    decode(enc.dtype, enc.shape, enc.scale_exp, enc.data)   # float32 tensor, same shape
    pack(prepare(tensor)) == encode(tensor)   # the two halves: `prepare` checks and copies (the
                                              # caller's thread), `pack` compresses (the writer thread)

The rule ("never lose a value silently"):
- NaN/Inf anywhere, or a finite |value| > 65504 (float16's max) -> float32, values as they are.
- otherwise float16 of `value * 2**scale_exp`, with `scale_exp >= 0` chosen so the largest |value|
  lands in [2**14, 2**15): tensors of small numbers (gradients ~1e-7) keep float16's 11 bits
  instead of flushing to zero. Scaling by a power of two is exact, so values that are float16
  numbers round-trip exactly. If float16 would still turn a non-zero into 0 -> float32 (a ReLU
  map's zeros vs. non-zeros are exactly what "dead filter" diagnosis reads).
- float64/int input whose finite values overflow float32 -> ValueError (never inf silently).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

F16_MAX = 65504.0
# zlib level 1 with the run-length strategy: on (1, 16, 32, 32) maps about 2x faster than
# level 1 default and 4x faster than level 6, and as small or smaller (float bytes rarely repeat
# at a distance; runs of zeros in ReLU maps are what compresses). A standard zlib stream.
_LEVEL, _STRATEGY = 1, zlib.Z_RLE
# Filters and their gradients barely compress (random-looking float16: 92% of their size, at
# ~130 MB/s): when samples of the bytes do not shrink below _WORTH of their size, the stream holds
# them in zlib's stored blocks (level 0: still a zlib stream, decoded alike; ~20x faster). On
# resnet18-shaped's 90 MB of W and dL/dW that is ~0.7 s less of the writer thread per snapshot.
# A snapshot of a small net is mostly small signed maps (z, dL/dz, dL/da of one example: 32 KB of
# float16 for a (16, 32, 32) map, 0.5 ms to compress to 92%): above _ALWAYS bytes they are sampled
# too, in _SMALL_PIECE pieces (0.06 ms; a ReLU map's sample shrinks to ~60%, a signed one's ~97%).
_SAMPLE, _WORTH = 16 * 1024, 0.9
_SMALL_PIECE, _ALWAYS = 512, 4 * 1024
_MAX_SCALE_EXP = 100  # 2**100 is exact in float32; tinier tensors are stored as float32
DTYPES = {"float16": "<f2", "float32": "<f4"}


@dataclass(frozen=True)
class Encoded:
    """A snapshot as stored: dtype name, shape, scale exponent and zlib-compressed bytes."""

    dtype: str
    shape: tuple[int, ...]
    scale_exp: int
    data: bytes


def prepare(value: object) -> np.ndarray:
    """`value` (torch.Tensor or numpy array; float, int or bool) as a float32 array of its own
    (never a view of the caller's memory: the caller may change its tensor right after), with every
    check `encode` makes; what is left for `pack` cannot fail."""
    return _as_float32(value, copy=True)


def _as_float32(value: object, *, copy: bool = False) -> np.ndarray:
    """`value` (torch.Tensor or numpy array; float, int or bool) as a C-contiguous float32 array
    (`copy`: never sharing memory with `value`; the numpy and 64-bit paths always copy)."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_complex():
            raise TypeError(f"snapshot tensors must be real, got {t.dtype}")
        if t.dtype in (torch.float64, torch.int64, torch.int32, torch.uint64, torch.uint32):
            arr = t.to("cpu", torch.float64).numpy()
        else:
            return np.ascontiguousarray(t.to("cpu", torch.float32, copy=copy).numpy())
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiub":
            raise TypeError(f"snapshot arrays must be real numbers, got dtype {value.dtype}")
        arr = value.astype(np.float64, copy=False)
    else:
        raise TypeError(
            f"a snapshot must be a torch.Tensor or numpy array, got {type(value).__name__}"
        )
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    overflow = np.isfinite(arr) & ~np.isfinite(out)
    if overflow.any():
        bad = float(arr[overflow].flat[0])
        raise ValueError(
            f"snapshot value {bad!r} does not fit float32 (max 3.4e38); scale it first"
        )
    return np.ascontiguousarray(out)


def encode(value: object) -> Encoded:
    """Encode a tensor or array (see the module docstring for the dtype rule)."""
    return pack(_as_float32(value))


def pack(v: np.ndarray) -> Encoded:
    """Encode a float32 array from `prepare` (float16 when lossless, zlib)."""
    shape = tuple(int(n) for n in v.shape)
    f16 = _to_float16(v)
    if f16 is None:
        return Encoded("float32", shape, 0, _compress(v.astype("<f4").tobytes()))
    h, exp = f16
    return Encoded("float16", shape, exp, _compress(h.tobytes()))


def _compress(data: bytes) -> bytes:
    level, strategy = (_LEVEL, _STRATEGY) if _shrinks(data) else (0, zlib.Z_DEFAULT_STRATEGY)
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    return c.compress(data) + c.flush()


def _shrinks(data: bytes) -> bool:
    """Whether compressing `data` pays: its start, middle and end (`_SAMPLE` bytes each, or
    `_SMALL_PIECE` for data up to 4 `_SAMPLE`s) shrink below `_WORTH` of their size. Data of at
    most `_ALWAYS` bytes is always compressed (a sample would cost about as much)."""
    n = len(data)
    if n <= _ALWAYS:
        return True
    piece = _SAMPLE if n > 4 * _SAMPLE else _SMALL_PIECE
    mid = (n - piece) // 2
    sample = data[:piece] + data[mid : mid + piece] + data[-piece:]
    c = zlib.compressobj(_LEVEL, zlib.DEFLATED, 15, 9, _STRATEGY)
    return len(c.compress(sample) + c.flush()) < _WORTH * len(sample)


def _to_float16(v: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(float16 array of v * 2**exp, exp), or None when float16 would lose a value. numpy, not
    torch: this runs on the writer thread, where torch's ops would start helper threads of their
    own whose CPU its clock (the recorder's budget) does not see."""
    if v.size == 0:
        return v.astype("<f2"), 0
    lo, hi = float(v.min()), float(v.max())  # NaN propagates: not finite
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    m = max(-lo, hi)
    if m > F16_MAX:
        return None
    exp = 0 if m == 0.0 or m >= 2.0**14 else 14 - math.floor(math.log2(m))
    if exp > _MAX_SCALE_EXP:
        return None
    scaled = v * np.float32(2.0**exp) if exp else v  # exact: a power of two, no overflow
    h = scaled.astype("<f2")
    # a non-zero flushed to ±0 (0 stays 0): count the zeros of both (float16's by its bits without
    # the sign: numpy counts float16 20x slower)
    if np.count_nonzero(h.view("<u2") & np.uint16(0x7FFF)) != v.size - np.count_nonzero(v == 0):
        return None
    return h, exp


def decode(dtype: str, shape: tuple[int, ...], scale_exp: int, data: bytes) -> torch.Tensor:
    """The float32 tensor that `encode` stored."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown snapshot dtype {dtype!r}; this convscope reads {sorted(DTYPES)}")
    arr = np.frombuffer(zlib.decompress(data), dtype=DTYPES[dtype]).astype(np.float32)
    if scale_exp:
        arr *= np.float32(2.0**-scale_exp)
    return torch.from_numpy(arr.reshape(shape))
