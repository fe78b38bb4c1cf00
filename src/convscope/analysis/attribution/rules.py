"""Backward rules at the activations: what guided backprop and the deconvnet pass through each
activation call, applied by a `TorchFunctionMode` during the attribution's forward.

At a ReLU (however it is called: `nn.ReLU`, `F.relu`, `torch.relu`, `x.relu_()`) one fused autograd
Function per rule — in place when the call was, no copy: guided `[z > 0]·max(g, 0)`, deconvnet
`max(g, 0)`. At other activations (SiLU, GELU, ...) the same idea on their own derivative (guided:
`f'(z)·max(g, 0)`) or the rectification alone (deconvnet: `max(g, 0)`), and `rule_text` says so
in every result's `.meta["rules"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from convscope.capture.naming import ACTIVATION_FUNCTIONS, RELU, is_inplace

#: rule(z, y, shown) → a tensor equal to y whose backward to z is the method's rule
Rule = Callable[[Tensor, Tensor, str], Tensor]


class RuleMode(TorchFunctionMode):
    """Replaces each activation call by the same values with `rule`'s backward (ReLU itself by
    `relu_fn`, one fused autograd Function: no copy, no Python hook, in place when asked)."""

    def __init__(self, rule: Rule, method: str) -> None:
        super().__init__()
        self.rule = rule
        self.relu_fn = RELU_FUNCTIONS.get(method)
        self.seen: dict[str, int] = {}

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        fname = getattr(func, "__name__", "")
        if fname not in ACTIVATION_FUNCTIONS or not args or not isinstance(args[0], Tensor):
            return func(*args, **kwargs)
        z = args[0]
        if not (z.requires_grad and torch.is_grad_enabled()):
            return func(*args, **kwargs)
        shown = ACTIVATION_FUNCTIONS[fname]
        self.seen[shown] = self.seen.get(shown, 0) + 1
        inplace = is_inplace(fname, kwargs)
        if self.relu_fn is not None and fname in ("relu", "relu_") and len(args) == 1 and "out" not in kwargs:
            return self.relu_fn.apply(z, inplace)
        if inplace:  # same values written into z; the graph goes through the rule
            y = self.rule(z, func(z.clone(), *args[1:], **kwargs), shown)
            return z.copy_(y)
        return self.rule(z, func(*args, **kwargs), shown)


class _GuidedReLU(torch.autograd.Function):
    """y = max(z, 0) (in place when asked); backward [y > 0] · max(g, 0)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, inplace: bool) -> Tensor:
        y = torch.relu_(z) if inplace else torch.relu(z)
        if inplace:
            ctx.mark_dirty(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0).clamp_(min=0), None


class _DeconvReLU(torch.autograd.Function):
    """y = max(z, 0) (in place when asked); backward max(g, 0), whatever z was (ZF)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, inplace: bool) -> Tensor:
        y = torch.relu_(z) if inplace else torch.relu(z)
        if inplace:
            ctx.mark_dirty(z)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad.clamp(min=0), None


class _PositiveGrad(torch.autograd.Function):
    """Forward: y = f(z) (computed by `fn`). Backward: max(dL/dy, 0) straight to z (deconvnet)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, y: Tensor) -> Tensor:
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad.clamp(min=0), None


def guided_rule(z: Tensor, y: Tensor, shown: str) -> Tensor:
    """Guided backprop: f'(z) · max(dL/da, 0). For ReLU: [z > 0] · max(dL/da, 0)."""
    y.register_hook(lambda g: g.clamp(min=0))
    return y


def deconvnet_rule(z: Tensor, y: Tensor, shown: str) -> Tensor:
    """Deconvnet (ZF 2013): the rectified signal max(dL/da, 0) passes to z, whatever f'(z)."""
    out: Tensor = _PositiveGrad.apply(z, y.detach())  # type: ignore[no-untyped-call]
    return out


#: `.meta["rules"]` of a method without a rule: every activation passes its own derivative
PLAIN = {"every activation": "plain gradient f'(z)·g"}
#: the backward rule of each method that has one (the others are plain autograd)
RULES: dict[str, Rule] = {"guided": guided_rule, "deconvnet": deconvnet_rule}
#: the same rules for ReLU itself, fused into one autograd Function each
RELU_FUNCTIONS: dict[str, type[torch.autograd.Function]] = {"guided": _GuidedReLU, "deconvnet": _DeconvReLU}


def rule_text(method: str, seen: dict[str, int]) -> dict[str, str]:
    """What was applied at each kind of activation the forward met (for `.meta` and the docs)."""
    text: dict[str, str] = {}
    for shown in seen:
        relu = shown in RELU
        if method == "guided":
            text[shown] = "[z>0]·max(g,0)" if relu else f"{shown}'(z)·max(g,0) (guided rule on its own derivative)"
        elif method == "deconvnet":
            text[shown] = "max(g,0)" if relu else f"max(g,0) (deconvnet rectification; {shown}'s derivative ignored)"
        else:
            text[shown] = "plain gradient"
    return text
