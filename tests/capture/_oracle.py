"""An independent oracle for the capture tests: plain autograd on a deep copy of the model.

`check(model, x, reference, expect)` runs `model` inside a Probe and, beside it, a deep copy
with every in-place flag turned off through `reference(copy, x, keep)` — the forward written
out by hand, calling `keep("block:field", tensor)` on each tensor it expects the probe to
record (field ∈ x, conv, z, a; channels-first). Then it compares outputs, each kept tensor,
dL/dz and dL/da (from `torch.autograd.grad` on those very tensors) and dL/dW of each block, and
that no hook is left and the probed model equals a third copy that ran without the probe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol

import torch
from _helpers import assert_same_model
from torch import Tensor, nn

from convscope.capture import Probe, Trace


class Keep(Protocol):
    def __call__(self, key: str, t: Tensor, *, last: bool = False) -> Tensor: ...


Reference = Callable[[nn.Module, Tensor, Keep], Tensor]
GRAD_OF = {"z": "grad_z", "a": "grad_a"}


def inplace_off(model: nn.Module) -> nn.Module:
    """A deep copy with every `inplace` flag False (modules, and replicas' functional flags)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return twin


def check(
    model: nn.Module,
    x: Tensor,
    reference: Reference,
    weights: dict[str, str],
    *,
    seed: int = 0,
) -> Trace:
    """Probe `model(x)` (loss = Σ r·out for a fixed random r) against the oracle; `weights` maps
    block name → module name whose dL/dW the block must hold. Returns the probe's trace."""
    plain, twin = copy.deepcopy(model), inplace_off(model)
    torch.manual_seed(seed)
    with Probe(model) as probe:
        out = model(x)
        r = torch.randn_like(out)
        (out * r).sum().backward()
    torch.manual_seed(seed)
    plain_out = plain(x)
    (plain_out * torch.randn_like(plain_out)).sum().backward()
    torch.equal(out, plain_out) or _fail("the probe changed the model's output")
    assert_same_model(model, plain)
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), "the probe changed a parameter gradient"

    kept: dict[str, Tensor] = {}
    channels_last: set[str] = set()

    def keep(key: str, t: Tensor, *, last: bool = False) -> Tensor:
        """Expect the probe to record `t` as `key`; `last`: t is (B, H, W, C), shown channels-first."""
        assert key not in kept, key
        kept[key] = t
        if last:
            channels_last.add(key)
        return t

    torch.manual_seed(seed)
    ref_out = reference(twin, x, keep)
    torch.testing.assert_close(out, ref_out.detach())
    keys = list(kept)
    modules = dict(twin.named_modules())
    params = [modules[m].weight for m in weights.values()]
    live = [k for k in keys if kept[k].requires_grad]
    found = torch.autograd.grad(
        (ref_out * r).sum(), [kept[k] for k in live] + params, allow_unused=True
    )
    by_key = dict(zip(live, found, strict=False))
    grads = [by_key.get(k) for k in keys]
    w_grads = dict(zip(weights, found[len(live) :], strict=True))
    trace = probe.trace
    for key, want, grad in zip(keys, (kept[k] for k in keys), grads, strict=True):
        if key in channels_last:
            want, grad = want.permute(0, 3, 1, 2), None if grad is None else grad.permute(0, 3, 1, 2)
        name, fld = key.split(":")
        block = trace[name]
        got = getattr(block, fld)
        assert got is not None, f"{key} was not recorded (stale: {block.stale})"
        torch.testing.assert_close(got, want.detach(), msg=lambda m, k=key: f"{k}: {m}")
        if fld in GRAD_OF:
            g = getattr(block, GRAD_OF[fld])
            expected = grad if grad is not None else torch.zeros_like(want)
            assert g is not None, f"{key}: no {GRAD_OF[fld]}"
            torch.testing.assert_close(g, expected, msg=lambda m, k=key: f"d{k}: {m}")
    for name, mod_name in weights.items():
        block, w, gw = trace[name], modules[mod_name].weight, w_grads[name]
        assert block.grad_weight is not None and gw is not None, name
        want_w = gw if block.grad_weight.dim() == w.dim() else gw[:, :, None, None]
        torch.testing.assert_close(block.grad_weight, want_w, msg=lambda m, n=name: f"{n} dL/dW: {m}")
        assert block.weight is not None and torch.equal(
            block.weight, w.detach() if w.dim() == want_w.dim() else w.detach()[:, :, None, None]
        )
    assert torch._C._len_torch_function_stack() == 0
    return trace


def _fail(message: str) -> bool:
    raise AssertionError(message)
