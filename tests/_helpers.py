"""Helpers shared by the test folders (importable as `_helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread in the block: as each torchrun process has (OMP_NUM_THREADS=1), so kernels
    round alike; and as the docs' timings (fast on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
