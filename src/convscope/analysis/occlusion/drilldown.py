"""Krypton's adaptive drill-down (Nakandala et al., SIGMOD 2019, §4.2): https://arxiv.org/abs/1807.08351

APPROXIMATE occlusion maps in two passes over the (P, Q) grid of occluder positions:

    coarse  every other position in both directions (and the last row/column), exactly as asked;
    fine    each remaining position whose coarse neighbours disagree — their probabilities of the
            target span more than DRILL of the coarse map's range (and more than FLOOR), or their
            most probable labels differ — is computed too;
    the rest are bilinear interpolations of their coarse neighbours' class scores (logits) and map
    totals, so probability and label of an interpolated cell stay consistent with each other.

Where the map is flat (the occluder changes nothing) only about a quarter of the positions run;
where it changes, the map is exact. `approx_error` (occlusion.py) measures the result against the
exact maps; Occlusion.sensitivity(approx=τ) uses this together with the projective-field threshold τ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

DRILL = 0.1  # a neighbourhood spanning more than this fraction of the coarse p-range is computed exactly
FLOOR = 1e-3  # ... and more than this much probability in absolute terms
Scores = tuple[Tensor, Tensor | None]  # (M, K) class scores, (M,) map totals or None


def _coarse(n: int) -> list[int]:
    return sorted({*range(0, n, 2), n - 1})


def _brackets(coarse: list[int], n: int) -> tuple[Tensor, Tensor, Tensor]:
    """For each of n indices: the rank of the coarse index at or before it, at or after it, and
    the interpolation weight of the latter (0 on a coarse index)."""
    at = torch.tensor(coarse)
    idx = torch.arange(n)
    lo = torch.searchsorted(at, idx, right=True) - 1  # (n,)
    hi = torch.searchsorted(at, idx, right=False)  # (n,)
    span = (at[hi] - at[lo]).to(torch.float32)
    w = torch.where(span > 0, (idx - at[lo]).to(torch.float32) / span.clamp(min=1), torch.zeros(n))
    return lo, hi, w


def drill_down(run: Callable[[list[int]], Scores], p: int, q: int, target: int) -> tuple[Scores, dict[str, int]]:
    """The (P·Q, K) scores and (P·Q,) totals of the grid (row-major), computing positions through
    `run(flat indices)` only where needed; and how many positions ran in each pass."""
    ri, ci = _coarse(p), _coarse(q)
    coarse = [i * q + j for i in ri for j in ci]
    logits_c, feats_c = run(coarse)  # (Mc, K), (Mc,)
    k = logits_c.shape[1]
    lc = logits_c.view(len(ri), len(ci), k)
    fc = None if feats_c is None else feats_c.view(len(ri), len(ci))
    prob_c = torch.softmax(lc, dim=-1)[..., target]  # (Pc, Qc)
    label_c = lc.argmax(dim=-1)
    gate = max(DRILL * float(prob_c.max() - prob_c.min()), FLOOR)
    r0, r1, wr = _brackets(ri, p)  # (P,) coarse rows above/below each row, and the weight of the lower one
    c0, c1, wc = _brackets(ci, q)
    corners = [(r0[:, None], c0[None, :]), (r0[:, None], c1[None, :]), (r1[:, None], c0[None, :]), (r1[:, None], c1[None, :])]
    wi, wj = wr[:, None], wc[None, :]
    weights = [(1 - wi) * (1 - wj), (1 - wi) * wj, wi * (1 - wj), wi * wj]  # each (P, Q)
    logits = torch.stack([w[..., None] * lc[a, b] for w, (a, b) in zip(weights, corners, strict=True)]).sum(0)  # (P, Q, K) bilinear
    ps = torch.stack([prob_c[a, b] for a, b in corners])  # (4, P, Q)
    labs = torch.stack([label_c[a, b] for a, b in corners])  # (4, P, Q)
    is_coarse = torch.zeros(p, q, dtype=torch.bool)
    is_coarse[torch.tensor(ri)[:, None], torch.tensor(ci)[None, :]] = True
    drill = ((ps.amax(0) - ps.amin(0)) > gate) | (labs.amax(0) != labs.amin(0))
    fine = torch.nonzero((drill & ~is_coarse).flatten()).flatten().tolist()
    logits = logits.reshape(p * q, k).to(logits_c.dtype)  # exact at the coarse cells (weight 1 on themselves)
    feats = None
    if fc is not None:
        feats = torch.stack([w * fc[a, b] for w, (a, b) in zip(weights, corners, strict=True)]).sum(0).reshape(p * q).to(fc.dtype)
    logits[torch.tensor(coarse)] = logits_c  # the coarse cells as computed (not re-summed)
    if feats is not None and feats_c is not None:
        feats[torch.tensor(coarse)] = feats_c
    if fine:
        logits_f, feats_f = run(fine)
        logits[fine] = logits_f
        if feats is not None and feats_f is not None:
            feats[fine] = feats_f
    return (logits, feats), {"coarse_positions": len(coarse), "fine_positions": len(fine)}
