"""capture(): one probed forward (and backward of a class score) in a single call.

    trace = cs.capture(model, x, target=3)     # gradients of the score of class 3
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor, nn

from convscope.capture.probe import Probe, Trace

#: what a forward raises on an input it does not take: re-raised as the same type, its message
#: prefixed with x's shape (subclasses such as torch.OutOfMemoryError pass on as they were)
_PLAIN = (RuntimeError, ValueError, TypeError, IndexError)


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
    parameter `.grad`s are restored after the backward, and no hook stays, also when it raises.

    `x` is a float image batch (B, C, H, W); `target` a class index (an int) in range of the
    model's outputs. Either wrong is one TypeError/ValueError naming it, before any forward; an
    error the forward raises on x (e.g. a channel count the model does not take) keeps its type
    and message, prefixed with x's shape."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    problem = batch_problem(x, image=any(isinstance(m, nn.Conv2d) for m in model.modules()))
    if problem is not None:
        error, line = problem
        raise error(line)
    if target is not None:
        target = _class_index(target)
    saved = {p: p.grad for p in model.parameters()}
    try:
        with Probe(model, layers, keep=keep) as probe, torch.enable_grad():
            try:
                out = model(x, **forward_kwargs)
            except _PLAIN as exc:
                if type(exc) not in _PLAIN:  # a subclass (torch.OutOfMemoryError, the model's own) as it was
                    raise
                raise type(exc)(f"the model's forward failed on x of shape {tuple(x.shape)} ({x.dtype}): {exc}") from exc
            logits = logits_of(out)
            if target is not None:
                if not 0 <= target < logits.shape[-1]:
                    raise ValueError(
                        f"target class {target} out of range: the model has {logits.shape[-1]} outputs"
                        f" (0..{logits.shape[-1] - 1})"
                    )
                logits[..., target].sum().backward()
        return probe.trace, logits.detach()
    finally:
        for p, g in saved.items():
            p.grad = g


def batch_problem(x: object, *, image: bool = True) -> tuple[type[Exception], str] | None:
    """What is wrong with `x` as a model's input batch, or None: (the exception a caller without an
    error class of its own raises, one line). `image`: a (B, C, H, W) batch, as 2-d convolutions
    take; else any (B, ...) batch (1-d convolutions, an MLP). Float and finite in both. Shared by
    `capture` and the attribution methods (analysis/attribution/base.py)."""
    if not isinstance(x, Tensor):
        return TypeError, f"x must be a tensor (B, C, H, W), got {type(x).__name__}"
    if image and x.dim() != 4:
        hint = ": one image needs a batch dimension, x.unsqueeze(0)" if x.dim() == 3 else ""
        return ValueError, f"x must be shaped (B, C, H, W); got {tuple(x.shape)}{hint}"
    if not image and x.dim() < 2:
        return ValueError, f"x must be a batch (B, ...); got shape {tuple(x.shape)}"
    if not x.is_floating_point():
        return TypeError, f"x must be a float tensor; got {x.dtype}"
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):  # the sum first: cheap
        return ValueError, "x holds NaN or Inf values"
    return None


def _class_index(target: object) -> int:
    """target as an int class index: an int (numpy's, or a one-element integer tensor, too)."""
    if isinstance(target, bool):
        raise TypeError(f"target must be a class index (an int), got bool {target!r}")
    try:
        return operator.index(target)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"target must be a class index (an int), got {type(target).__name__} {target!r}") from None


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
