"""Helpers shared by the test folders (importable as `_helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

from convscope.capture import count_hooks


def assert_same_model(probed: nn.Module, plain: nn.Module) -> None:
    """No hook left on `probed`, and its parameters and buffers equal those of `plain`, a deep
    copy that ran the same code without a probe."""
    assert count_hooks(probed) == 0
    a, b = probed.state_dict(), plain.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the plain run"
    assert probed.training == plain.training
