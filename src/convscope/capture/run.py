"""capture(): one probed forward (and backward of a class score) in a single call.

    trace = cs.capture(model, x, target=3)     # gradients of the score of class 3
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from convscope.capture.probe import Probe, Trace


def capture(
    model: nn.Module,
    x: Tensor,
    *,
    target: int | None = None,
    layers: list[str] | None = None,
    keep: tuple[str, ...] | None = None,
    **forward_kwargs: Any,
) -> tuple[Trace, Tensor]:
    """Run `model(x)` inside a Probe; with `target`, back-propagate the sum over the batch of
    that class's score so every block gets dL/dW, dL/dz, dL/da (L = score[target]).
    Returns the trace and the model's output logits (detached). The model is left as it was:
    parameter `.grad`s are restored after the backward."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if not torch.isfinite(x).all():
        raise ValueError("input contains NaN or Inf")
    saved = {p: p.grad for p in model.parameters()}
    try:
        with Probe(model, layers, keep=keep) as probe, torch.enable_grad():
            out = model(x, **forward_kwargs)
            logits = logits_of(out)
            if target is not None:
                if not 0 <= target < logits.shape[-1]:
                    raise ValueError(
                        f"target class {target} out of range: the model has {logits.shape[-1]} outputs"
                    )
                logits[..., target].sum().backward()
        return probe.trace, logits.detach()
    finally:
        for p, g in saved.items():
            p.grad = g


def logits_of(out: Any) -> Tensor:
    """The logits in a model output: a tensor, the first of a tuple, or out["logits"|"out"|"output"]."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, dict):
        for key in ("logits", "out", "output"):
            if isinstance(out.get(key), Tensor):
                return out[key]  # type: ignore[no-any-return]
    raise TypeError(f"cannot find the logits in the model's output of type {type(out).__name__}")
