"""Validation of the dashboard's controls before they become rows the trainer polls.

    value = check_control("lr", 0.01, trainer="builtin", status="running", checkpoints=[...])

Known keys and their values (docs/run-store.md): pause, resume (no value); lr > 0;
0 <= momentum < 1; batch_size an integer in 1..4096; weight_decay >= 0; model (a zoo name or
a layer spec text); save_checkpoint (optional name); load_checkpoint (the name of one of the
run's checkpoints). `predict` is sent by the upload route only. Runs recorded by
`convscope.watch` take pause/resume only: the rest belongs to the user's own code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from .errors import ApiError

NUMERIC = ("lr", "momentum", "batch_size", "weight_decay")
KEYS = ("pause", "resume", *NUMERIC, "model", "save_checkpoint", "load_checkpoint")
WATCH_KEYS = ("pause", "resume")  # what a convscope.watch run obeys
MAX_BATCH = 4096
MAX_SPEC_CHARS = 20_000
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # as the run store allows


def check_control(
    key: Any, value: Any, *, trainer: str, status: str, checkpoints: Sequence[str]
) -> Any:
    """The value to send for control `key`, or ApiError(400/409) with one clear line."""
    if not isinstance(key, str) or key not in KEYS:
        hint = " (use POST .../uploads for an image)" if key == "predict" else ""
        raise ApiError(400, f"unknown control {key!r}{hint}; known: {', '.join(KEYS)}")
    if status in ("finished", "stopped", "crashed"):
        raise ApiError(409, f"the run is {status}: no trainer is listening for '{key}'")
    if trainer != "builtin" and key not in WATCH_KEYS:
        raise ApiError(
            409,
            f"'{key}' needs the built-in trainer; this run is recorded by convscope.{trainer} "
            "inside your own loop, which obeys pause/resume only",
        )
    if key in ("pause", "resume"):
        return True
    if key in NUMERIC:
        return _number(key, value)
    if key == "model":
        if not isinstance(value, str) or not value.strip():
            raise ApiError(
                400, "model needs a zoo name (e.g. convnetjs-cifar) or a layer spec text"
            )
        if len(value) > MAX_SPEC_CHARS:
            raise ApiError(400, f"model spec is {len(value)} characters, over {MAX_SPEC_CHARS}")
        return value.strip()
    if key == "save_checkpoint":
        if value is None or value == "":
            return None
        return _name(value)
    name = _name(value)  # load_checkpoint
    if name not in checkpoints:
        known = ", ".join(checkpoints) or "none yet"
        raise ApiError(400, f"no checkpoint named {name!r} in this run (have: {known})")
    return name


def _number(key: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"{key} must be a number, got {json_type(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise ApiError(400, f"{key} must be finite, got {value!r}")
    if key == "lr" and not v > 0:
        raise ApiError(400, f"lr must be > 0, got {value!r}")
    if key == "momentum" and not 0 <= v < 1:
        raise ApiError(400, f"momentum must be in [0, 1), got {value!r}")
    if key == "weight_decay" and not v >= 0:
        raise ApiError(400, f"weight_decay must be >= 0, got {value!r}")
    if key == "batch_size":
        if v != int(v) or not 1 <= v <= MAX_BATCH:
            raise ApiError(400, f"batch_size must be an integer in 1..{MAX_BATCH}, got {value!r}")
        return int(v)
    return v


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"a checkpoint name must be a string, got {json_type(value)}")
    if not CHECKPOINT_NAME.fullmatch(value) or ".." in value:
        raise ApiError(
            400,
            f"checkpoint name {value[:140]!r}: 1-128 letters, digits, '-', '_', '.', "
            "starting with a letter or digit",
        )
    return value


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), repr(value)
    )
