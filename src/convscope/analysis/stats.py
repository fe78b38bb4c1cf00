"""Summary numbers of an activation map or gradient: min, max, mean, sparsity (ConvNetJS's max/min
activation readout; CS231n's fraction of zero activations).

    map_stats(trace["conv1"].a)   # MapStats(min=0.0, max=3.2, mean=0.41, std=.., sparsity=0.53, ...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


def flat(t: Tensor) -> Tensor:
    """`t` as a 1-D view in memory order when its storage is dense (channels-last included), else a
    flattened copy. For reductions over every element: torch reduces a channels-last map 4x slower
    than the same memory viewed flat (aminmax of a (32, 16, 32, 32) map here: 0.40 vs 0.10 ms)."""
    if t.is_contiguous():
        return t.view(-1)
    p = _memory_order(t)
    return p.view(-1) if p.is_contiguous() else t.reshape(-1)


def _memory_order(t: Tensor) -> Tensor:
    """`t` permuted so that its dims run outermost first in memory (contiguous iff t is dense)."""
    strides = t.stride()
    return t.permute(sorted(range(t.dim()), key=lambda d: -strides[d]))


CHUNK = 1 << 18  # elements per step of `chunked_norm` (1 MiB of float32: stays in the CPU cache)


def chunked_norm(t: Tensor, minus: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """‖t − minus‖ (or ‖t‖) computed in `dtype` (default: t's), CHUNK elements at a time through
    one small buffer, instead of making a t-sized temporary (W − W_prev, a float64 copy): writing
    that to fresh memory costs more than the norm (a float64 norm of a 20M-element gradient: 77 ms
    and 39k page faults through a copy; resnet18-shaped's W − W_prev: ~13 ms of ~20). `minus`
    has t's shape; laid out otherwise than t (other strides, or not dense), the difference is made
    whole."""
    dtype = dtype or t.dtype
    alike = minus is None or (
        minus.shape == t.shape and minus.stride() == t.stride() and _memory_order(t).is_contiguous()
    )
    if (minus is None and dtype == t.dtype) or not alike:
        whole: Tensor = torch.linalg.vector_norm(t if minus is None else t - minus, dtype=dtype)
        return whole
    ft = flat(t)
    fm = None if minus is None else flat(minus)
    n = ft.numel()
    buf = torch.empty(min(n, CHUNK), dtype=dtype, device=ft.device)
    parts: list[Tensor] = []
    for i in range(0, n, CHUNK):
        b = buf[: min(CHUNK, n - i)]
        if fm is None:
            b.copy_(ft[i : i + CHUNK])
        else:
            torch.sub(ft[i : i + CHUNK], fm[i : i + CHUNK], out=b)
        parts.append(torch.linalg.vector_norm(b))
    if not parts:
        return torch.zeros((), dtype=dtype, device=ft.device)
    norm: Tensor = torch.linalg.vector_norm(torch.stack(parts))
    return norm


def range_and_norm(f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """min, max and ‖f‖ of a 1-D tensor. Past two CHUNKs, each chunk is reduced while it is in the
    CPU cache, not the whole tensor twice: a map bigger than the cache is read from memory once
    (dL/da of resnet18-shaped at batch 8: each of its first maps is 6.4-25.7 MB). The chunk's norm
    reads it from memory (a streaming sum of squares: ~15 GB/s here, against ~8 for aminmax), then
    amax and amin read it from the cache (two passes there beat one aminmax: ~43 against ~19 GB/s):
    dL/da's three numbers on resnet18-shaped at batch 8, 12.3 ms a step against 14.7 with aminmax
    first (docs/speed.md). NaN anywhere gives NaN for all three, as torch's do."""
    if f.numel() <= 2 * CHUNK:
        return (*torch.aminmax(f), torch.linalg.vector_norm(f))
    lows, highs, norms = [], [], []
    for chunk in f.split(CHUNK):
        norms.append(torch.linalg.vector_norm(chunk))
        highs.append(chunk.amax())
        lows.append(chunk.amin())
    return torch.stack(lows).min(), torch.stack(highs).max(), torch.linalg.vector_norm(torch.stack(norms))


@dataclass(frozen=True)
class MapStats:
    """Statistics over every element of a tensor (all examples, channels and positions)."""

    min: float
    max: float
    mean: float
    std: float
    sparsity: float  # fraction of elements exactly 0 (a ReLU's "off" units)
    numel: int
    dead_channels: int  # channels (dim 1) that are 0 everywhere in the tensor

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def map_stats(t: Tensor) -> MapStats:
    """Stats of a (B, C, H, W) or (B, F) tensor; NaN/Inf are an error, not a statistic."""
    if t.numel() == 0:
        raise ValueError("cannot summarise an empty tensor")
    v = t.detach().float()
    if not torch.isfinite(v).all():
        raise ValueError("tensor contains NaN or Inf")
    zero = v == 0
    dead = int(zero.transpose(0, 1).reshape(v.shape[1], -1).all(dim=1).sum()) if v.dim() >= 2 else 0
    return MapStats(
        min=float(v.min()),
        max=float(v.max()),
        mean=float(v.mean()),
        std=float(v.std(unbiased=False)),
        sparsity=float(zero.float().mean()),
        numel=v.numel(),
        dead_channels=dead,
    )


def block_stats(
    a: Tensor | None,
    z: Tensor | None,
    grad_a: Tensor | None,
    weight: Tensor | None,
    grad_weight: Tensor | None,
    previous_weight: Tensor | None = None,
    *,
    relu: bool = False,
) -> dict[str, float]:
    """The per-step numbers the live dashboard plots for one block (cheap: a few reductions).

    a_min/a_max/a_mean, z_min/z_max, grad_a_min/grad_a_max/grad_a_norm, weight_norm,
    grad_weight_norm, update_ratio = ‖W − W_prev‖ / ‖W‖ (CS231n: about 1e-3 is healthy), and
    dead_fraction = fraction of maps (channels) that are 0 for every example and position of the
    batch. Absent inputs give absent keys; NaN stays NaN (it is information).
    `relu=True` says a = max(z, 0): then a's min and max follow from z's and one pass is saved."""
    out: dict[str, Tensor] = {}
    if relu and a is not None and z is not None and a.dim() >= 2:
        z_min, z_max = torch.aminmax(z)
        out["z_min"], out["z_max"] = z_min, z_max
        hi = a.amax(dim=(0, *range(2, a.dim())))  # (C,): a ≥ 0, so a map is all zero iff its max is 0
        out["a_min"], out["a_max"] = z_min.clamp_min(0), hi.max()
        out["dead_fraction"] = (hi == 0).float().mean()
        out["a_mean"] = a.mean()
        a = z = None  # done
    if a is not None:
        if a.dim() >= 2:
            dims = (0, *range(2, a.dim()))  # all but the channel dim (amax/amin beat aminmax(dim) here)
            hi, lo = a.amax(dim=dims), a.amin(dim=dims)  # (C,) each
            out["a_min"], out["a_max"] = lo.min(), hi.max()
            out["dead_fraction"] = ((hi == 0) & (lo == 0)).float().mean()
        else:
            out["a_min"], out["a_max"] = torch.aminmax(a)
        out["a_mean"] = a.mean()
    if z is not None:
        out["z_min"], out["z_max"] = torch.aminmax(z)
    if grad_a is not None:
        out["grad_a_min"], out["grad_a_max"] = torch.aminmax(grad_a)
        out["grad_a_norm"] = torch.linalg.vector_norm(grad_a)
    if weight is not None:
        w_norm = torch.linalg.vector_norm(weight)
        out["weight_norm"] = w_norm
        if previous_weight is not None:
            out["update_ratio"] = torch.linalg.vector_norm(weight - previous_weight) / w_norm
    if grad_weight is not None:
        out["grad_weight_norm"] = torch.linalg.vector_norm(grad_weight)
    if not out:
        return {}
    values = torch.stack([v.detach().reshape(()).float() for v in out.values()]).tolist()
    return dict(zip(out.keys(), values, strict=True))
