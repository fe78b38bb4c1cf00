"""Checks of what a caller hands the run store: names, steps, numbers, JSON values. Each bad value
is one clear error naming it, raised in the caller's thread before anything is buffered.

    check_step(12) -> 12                 check_number("scalar 'loss'", torch.tensor(2.5)) -> 2.5
    check_name("layer", "")  -> ValueError "layer must be a non-empty string, got ''"
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from convscope.runs.schema import RESERVED_META

_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_step(value: object) -> int:
    if type(value) is int and value >= 0:  # the common case, without the abstract-class check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"step must be an int, got {type(value).__name__}")
    step = int(value)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


def check_number(what: str, value: object) -> float:
    """A finite or non-finite real number as float; anything else is a TypeError."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{what} must be a single number, got a tensor of shape {tuple(value.shape)}"
            )
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{what} must be a real number, got a {value.dtype} tensor")
        return float(value.detach().cpu().item())
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"{what} must be a single number, got an array of shape {value.shape}")
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{what} must be a real number, got a {value.dtype} array")
        return float(value.reshape(()))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError as exc:
        raise ValueError(f"{what} = {value} does not fit a float") from exc


def check_meta_key(key: object) -> str:
    key = check_name("meta key", key)
    if key in RESERVED_META:
        raise ValueError(
            f"meta key {key!r} is set by the run store; reserved: {list(RESERVED_META)}"
        )
    return key


def check_checkpoint_name(name: object) -> str:
    if not isinstance(name, str) or not _CHECKPOINT_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"checkpoint name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit, "
            f"no '..', no path separators), got {name!r}"
        )
    return name


def dumps(what: str, value: object) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what} must be JSON-serialisable: {exc}") from exc


def json_mapping(what: str, mapping: Mapping[str, Any]) -> dict[str, str]:
    """{key: JSON text} of a mapping with non-empty str keys and JSON values."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping of str keys, got {type(mapping).__name__}")
    return {check_name(f"{what} key", k): dumps(f"{what}[{k!r}]", v) for k, v in mapping.items()}


def loads_or_none(text: str) -> Any:
    """JSON written by anything (a control row is not trusted): None when it cannot be read."""
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return None


def sql_real(x: float) -> float | None:
    return None if math.isnan(x) else x  # SQLite turns NaN into NULL anyway; say so explicitly
