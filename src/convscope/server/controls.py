"""Validation of the dashboard's controls before they become rows the trainer polls.

    value = check_control("lr", 0.01, trainer="builtin", status="running", checkpoints=[...])

Known keys and their values (docs/run-store.md): pause, resume (no value); 0 < lr <= 10;
0 <= momentum < 1; batch_size an integer in 1..4096; 0 <= weight_decay <= 1; model (one of the
zoo nets the run's trainer lists in meta "zoo", or a layer spec text -- never an import path or
`module:function`, see `check_model`); save_checkpoint (optional name); load_checkpoint (the
name of one of the run's checkpoints). `predict` is sent by the upload route only. Runs
recorded by `convscope.watch` take pause/resume only: the rest belongs to the user's own code.

The bounds are sane limits, not advice: an lr above 10 or a weight decay above 1 diverges any
net in a few steps, and a JSON number like 1e308 or a 400-digit integer is refused here with
the range, before it can overflow anything on either side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from convscope.config import CONTROL_RANGES

from .errors import ApiError

NUMERIC = ("lr", "momentum", "batch_size", "weight_decay")
KEYS = ("pause", "resume", *NUMERIC, "model", "save_checkpoint", "load_checkpoint")
WATCH_KEYS = ("pause", "resume")  # what a convscope.watch run obeys
MAX_SPEC_CHARS = 20_000
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # as the run store allows
ZOO_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # what a zoo name looks like: no ':', '/', '.'
SPEC_LAYERS = ("conv", "pool", "fc", "dropout")  # first word of each line of a layer spec
SPEC_WORD = re.compile(r"[a-z_]{1,16}|[0-9]{1,9}(\.[0-9]{1,9})?")  # options, sizes, dropout p


def check_control(
    key: Any,
    value: Any,
    *,
    trainer: str,
    status: str,
    checkpoints: Sequence[str],
    zoo: Sequence[str] = (),
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
        return check_model(value, zoo)
    if key == "save_checkpoint":
        if value is None or value == "":
            return None
        return _name(value)
    name = _name(value)  # load_checkpoint
    if name not in checkpoints:
        known = ", ".join(checkpoints) or "none yet"
        raise ApiError(400, f"no checkpoint named {name!r} in this run (have: {known})")
    return name


RANGES = {key: text for key, (text, _) in CONTROL_RANGES.items()}


def _number(key: str, value: Any) -> float | int:
    """`value` for numeric control `key`, or a 400 naming the allowed range (RANGES)."""
    allowed = f"{key} must be {RANGES[key]}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"{allowed}; got {json_type(value)}")
    if isinstance(value, int) and abs(value) > 2**53:  # no float can hold it exactly, or at all
        raise ApiError(400, f"{allowed}; got an integer of {len(str(abs(value)))} digits")
    v = float(value)
    ok = math.isfinite(v) and CONTROL_RANGES[key][1](v)
    if not ok:
        raise ApiError(400, f"{allowed}; got {value!r}")
    return int(v) if key == "batch_size" else v


def check_model(value: Any, zoo: Sequence[str]) -> str:
    """A `model` control's value: a zoo net the run's trainer lists (`zoo`, meta "zoo"; also as
    "zoo:NAME"; sent as the bare name) or a layer spec text (lines starting with conv, pool, fc
    or dropout, made of plain words and numbers). Anything else -- a file path, `module:function`
    -- is a 400 listing the choices: nothing from HTTP may name code to import. The trainer
    checks again on its side and parses the spec fully (its errors come back in the ack)."""
    names = [z for z in zoo if isinstance(z, str) and ZOO_NAME.fullmatch(z)]
    choices = (
        f"one of the zoo nets this run's trainer offers ({', '.join(names) or 'none listed'}) "
        f"or a layer spec text (one layer per line: {', '.join(SPEC_LAYERS)}, "
        "e.g. 'conv 16 5 pad 2 relu', 'pool 2', 'fc 10'); import paths and module:function "
        "are not accepted from the dashboard"
    )
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"model must be {choices}; got {json_type(value)}")
    if len(value) > MAX_SPEC_CHARS:
        raise ApiError(400, f"model spec is {len(value)} characters, over {MAX_SPEC_CHARS}")
    text = value.strip()
    bare = text.removeprefix("zoo:")
    if bare in names:
        return bare
    lines = [ln.split("#", 1)[0].strip().lower() for p in text.splitlines() for ln in p.split(";")]
    lines = [ln for ln in lines if ln]
    if lines and all(_spec_line(ln) for ln in lines):
        return text
    shown = text if len(text) <= 80 else text[:77] + "..."
    raise ApiError(400, f"model {shown!r} is not accepted: it must be {choices}")


def _spec_line(line: str) -> bool:
    words = line.split()
    return words[0] in SPEC_LAYERS and all(SPEC_WORD.fullmatch(w) for w in words[1:])


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
