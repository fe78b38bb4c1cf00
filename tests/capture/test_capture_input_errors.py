"""`cs.capture` on bad input: one TypeError/ValueError naming the argument (`x`, `target`, `model`)
before any forward, or the model's own error on x prefixed with x's shape; either way the model
is left as it was (weights, grads, training mode) and no hook stays behind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs
from convscope.capture import count_hooks


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))


def _raises_and_leaves_model(model: nn.Module, err: type[Exception], text: str, *args: Any, **kw: Any) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad for p in model.parameters()]
    training = model.training
    with pytest.raises(err) as info:
        cs.capture(model, *args, **kw)
    assert str(info.value) == text
    assert count_hooks(model) == 0
    assert model.training == training
    assert [p.grad for p in model.parameters()] == grads
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("target", "err", "text"),
    [
        (2.5, TypeError, "target must be a class index (an int), got float 2.5"),
        ("cat", TypeError, "target must be a class index (an int), got str 'cat'"),
        (True, TypeError, "target must be a class index (an int), got bool True"),
        (torch.tensor(2.0), TypeError, "target must be a class index (an int), got Tensor tensor(2.)"),
        (10, ValueError, "target class 10 out of range: the model has 10 outputs (0..9)"),
        (-1, ValueError, "target class -1 out of range: the model has 10 outputs (0..9)"),
    ],
)
def test_a_bad_target_is_one_error_naming_it(target: object, err: type[Exception], text: str) -> None:
    _raises_and_leaves_model(_net(), err, text, torch.rand(2, 3, 32, 32), target=target)


def test_int_like_targets_are_class_indices() -> None:
    model, x = _net(), torch.rand(2, 3, 32, 32)
    ref, _ = cs.capture(model, x, target=3)
    for target in (np.int64(3), torch.tensor(3)):
        trace, logits = cs.capture(model, x, target=target)  # type: ignore[arg-type]
        assert logits.shape == (2, 10)
        assert torch.equal(trace["0"].grad_weight, ref["0"].grad_weight)
    assert count_hooks(model) == 0 and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("x", "err", "text"),
    [
        (torch.rand(3, 32, 32), ValueError,
         "x must be shaped (B, C, H, W); got (3, 32, 32): one image needs a batch dimension, x.unsqueeze(0)"),
        (torch.rand(32, 32), ValueError, "x must be shaped (B, C, H, W); got (32, 32)"),
        (torch.randint(0, 255, (1, 3, 32, 32)), TypeError, "x must be a float tensor; got torch.int64"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "x must be a float tensor; got torch.uint8"),
        (np.zeros((1, 3, 32, 32), np.float32), TypeError, "x must be a tensor (B, C, H, W), got ndarray"),
        (torch.full((1, 3, 32, 32), float("inf")), ValueError, "x holds NaN or Inf values"),
    ],
)  # fmt: skip
def test_a_bad_x_is_one_error_naming_it(x: object, err: type[Exception], text: str) -> None:
    _raises_and_leaves_model(_net(), err, text, x, target=1)


def test_a_net_without_2d_convolutions_takes_any_batch() -> None:
    """A 1-d convolution's batch is (B, C, L), an MLP's (B, F): only a net of 2-d convolutions
    needs (B, C, H, W)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(12, 4))
    trace, logits = cs.capture(net, torch.rand(5, 2, 6), target=1)
    assert logits.shape == (5, 4) and trace["0"].grad_weight is not None
    _raises_and_leaves_model(net, ValueError, "x must be a batch (B, ...); got shape (6,)", torch.rand(6), target=1)


def test_a_forward_that_fails_on_x_says_so_with_its_shape_and_the_models_message() -> None:
    model = _net()
    with pytest.raises(RuntimeError) as direct:
        model(torch.rand(1, 1, 32, 32))
    _raises_and_leaves_model(
        model, RuntimeError,
        f"the model's forward failed on x of shape (1, 1, 32, 32) (torch.float32): {direct.value}",
        torch.rand(1, 1, 32, 32), target=1,
    )  # fmt: skip
    with pytest.raises(RuntimeError) as direct:
        model(torch.rand(1, 3, 16, 16))
    assert "mat1 and mat2 shapes cannot be multiplied" in str(direct.value)
    _raises_and_leaves_model(
        model, RuntimeError,
        f"the model's forward failed on x of shape (1, 3, 16, 16) (torch.float32): {direct.value}",
        torch.rand(1, 3, 16, 16),
    )  # fmt: skip


def test_the_models_own_exception_types_pass_unchanged() -> None:
    class Refuses(Exception):
        pass

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.conv(x)
            raise Refuses("not today")

    model = Net()
    with pytest.raises(Refuses, match=r"^not today$"):
        cs.capture(model, torch.rand(1, 3, 8, 8), target=0)
    assert count_hooks(model) == 0


def test_a_non_module_model_is_named() -> None:
    with pytest.raises(TypeError, match=r"^model must be an nn.Module, got function$"):
        cs.capture(lambda t: t, torch.rand(1, 3, 8, 8))  # type: ignore[arg-type]


def test_a_model_in_eval_mode_with_grads_stays_so() -> None:
    model = _net().eval()
    model(torch.rand(1, 3, 32, 32)).sum().backward()
    _raises_and_leaves_model(model, TypeError, "target must be a class index (an int), got float 2.5",
                             torch.rand(1, 3, 32, 32), target=2.5)  # fmt: skip
    _raises_and_leaves_model(
        model, RuntimeError,
        "the model's forward failed on x of shape (1, 3, 16, 16) (torch.float32): "
        "mat1 and mat2 shapes cannot be multiplied (1x784 and 3600x10)",
        torch.rand(1, 3, 16, 16),
    )  # fmt: skip
