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
    rank_r = {r: a for a, r in enumerate(ri)}
    rank_c = {c: a for a, c in enumerate(ci)}
    logits = torch.empty(p * q, k, dtype=logits_c.dtype)
    feats = None if fc is None else torch.empty(p * q, dtype=fc.dtype)
    fine: list[int] = []
    for i in range(p):
        a0 = max(a for a, r in enumerate(ri) if r <= i)
        a1 = min(a for a, r in enumerate(ri) if r >= i)
        wi = 0.0 if a1 == a0 else (i - ri[a0]) / (ri[a1] - ri[a0])
        for j in range(q):
            flat = i * q + j
            if i in rank_r and j in rank_c:
                logits[flat] = lc[rank_r[i], rank_c[j]]
                if feats is not None and fc is not None:
                    feats[flat] = fc[rank_r[i], rank_c[j]]
                continue
            b0 = max(b for b, c in enumerate(ci) if c <= j)
            b1 = min(b for b, c in enumerate(ci) if c >= j)
            wj = 0.0 if b1 == b0 else (j - ci[b0]) / (ci[b1] - ci[b0])
            near = [(a0, b0), (a0, b1), (a1, b0), (a1, b1)]
            ps = [float(prob_c[a, b]) for a, b in near]
            if max(ps) - min(ps) > gate or len({int(label_c[a, b]) for a, b in near}) > 1:
                fine.append(flat)
            w = [(1 - wi) * (1 - wj), (1 - wi) * wj, wi * (1 - wj), wi * wj]
            logits[flat] = sum(wk * lc[a, b] for wk, (a, b) in zip(w, near, strict=True))  # type: ignore[assignment]
            if feats is not None and fc is not None:
                feats[flat] = sum(wk * fc[a, b] for wk, (a, b) in zip(w, near, strict=True))  # type: ignore[assignment]
    if fine:
        logits_f, feats_f = run(fine)
        logits[fine] = logits_f
        if feats is not None and feats_f is not None:
            feats[fine] = feats_f
    return (logits, feats), {"coarse_positions": len(coarse), "fine_positions": len(fine)}
