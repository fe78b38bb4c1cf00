"""Batches from whatever data an analysis is given — a Dataset, a DataLoader, an (X, y) pair of
tensors or X alone — for the dataset-wide passes (diagnose, top patches, embedding).

    batches, total, name, per_batch = open_batches(data, batch_size)
    for batch in batches:
        x, y = split_batch(batch)                    # y is None for unlabelled data
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from convscope.data.arrays import UNLABELLED

DEFAULT_BATCH = 64  # inputs per forward pass when data is a Dataset or tensors

Progress = Callable[[int, int | None], None]  # progress(done, total or None), after each batch


def open_batches(data: Any, batch_size: int | None) -> tuple[Iterable[Any], int | None, str, int | None]:
    """(batches, number of inputs or None, a name for the data, inputs per batch or None)."""
    if isinstance(data, DataLoader):
        if batch_size is not None:
            raise ValueError("a DataLoader brings its own batch size: leave batch_size unset")
        total = len(data.dataset) if hasattr(data.dataset, "__len__") else None
        per = data.batch_size if data.batch_sampler is not None and data.batch_size else None
        return data, total, f"a DataLoader over {type(data.dataset).__name__}", per
    bs = batch_size or DEFAULT_BATCH
    if isinstance(data, Tensor):
        _check_x(data)
        return _slices(data, None, bs), int(data.shape[0]), "the given tensor", bs
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        X, y = data
        _check_x(X)
        if y.shape[:1] != X.shape[:1]:
            raise ValueError(f"X and y differ in length: {tuple(X.shape)} and {tuple(y.shape)}")
        return _slices(X, y, bs), int(X.shape[0]), "the given (X, y) tensors", bs
    if isinstance(data, Dataset):
        total = len(data) if hasattr(data, "__len__") else None
        return DataLoader(data, batch_size=bs, shuffle=False), total, f"a {type(data).__name__}", bs
    raise TypeError(
        f"data must be a Dataset, a DataLoader, an (X, y) pair of tensors or a tensor X, got {type(data).__name__}"
    )


def split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """(x, y) of a batch; y is None without labels, also when every label is UNLABELLED (-1,
    what convscope's array datasets give unlabelled images)."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, tuple | list) and batch and isinstance(batch[0], Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        if y is not None and not y.dtype.is_floating_point and bool((y == UNLABELLED).all()):
            y = None
        return batch[0], y
    raise TypeError(
        f"each batch must be a tensor x or a pair (x, y), got {type(batch).__name__}"
    )


def _check_x(X: Tensor) -> None:
    if X.dim() < 2 or not X.dtype.is_floating_point:
        raise ValueError(f"X must be a float tensor (N, C, H, W), got {X.dtype} {tuple(X.shape)}")


def _slices(X: Tensor, y: Tensor | None, bs: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    for i in range(0, X.shape[0], bs):
        yield X[i : i + bs], None if y is None else y[i : i + bs]
