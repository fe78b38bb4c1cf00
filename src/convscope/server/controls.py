"""Validation of the dashboard's controls before they become rows the trainer polls.

    value = check_control("lr", 0.01, trainer="builtin", status="running", checkpoints=[...])

Known keys and their values (docs/run-store.md): pause, resume (no value); 0 < lr <= 10;
0 <= momentum < 1; batch_size an integer in 1..4096; 0 <= weight_decay <= 1; model (one of the
zoo nets the run's trainer lists in meta "zoo", or a layer spec text -- never an import path or
`module:function`, see `check_model`); save_checkpoint (optional name); load_checkpoint (the
name of one of the run's checkpoints; `describe_checkpoints` tells the page which net each is of
and whether it fits the net training now). `predict` is sent by the upload route only. Runs
recorded by `convscope.watch` take pause/resume only: the rest belongs to the user's own code.

The bounds are sane limits, not advice: an lr above 10 or a weight decay above 1 diverges any
net in a few steps, and a JSON number like 1e308 or a 400-digit integer is refused here with
the range, before it can overflow anything on either side.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from convscope.config import CONTROL_RANGES

from .errors import ApiError

NUMERIC = ("lr", "momentum", "batch_size", "weight_decay")
KEYS = ("pause", "resume", *NUMERIC, "model", "save_checkpoint", "load_checkpoint")
WATCH_KEYS = ("pause", "resume")  # what a convscope.watch run obeys
MAX_SPEC_CHARS = 20_000
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # as the run store allows
ZOO_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # what a zoo name looks like: no ':', '/', '.'
SPEC_LAYERS = ("conv", "pool", "fc", "dropout")  # first word of each line of a layer spec
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "none")  # as models/spec.py: no weights
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
    -- is a 400 in one line: nothing from HTTP may name code to import. A spec's error names its
    line as the text box numbers it (blank and comment lines counted, as models/spec.py does).
    The trainer checks again on its side and parses the spec fully (its errors come back in the
    ack). A spec is passed on with its leading lines kept, so both sides number lines alike."""
    names = [z for z in zoo if isinstance(z, str) and ZOO_NAME.fullmatch(z)]
    if not isinstance(value, str):
        raise ApiError(400, f"model must be the name of a zoo net or layer-spec text; got {json_type(value)}")
    if not value.strip():
        raise ApiError(400, "model is empty: pick a zoo net or write a layer spec (e.g. 'conv 8 3 relu; pool 2; fc 10')")
    if len(value) > MAX_SPEC_CHARS:
        raise ApiError(400, f"model spec is {len(value)} characters, over {MAX_SPEC_CHARS}")
    text = value.strip()
    bare = text.removeprefix("zoo:")
    if bare in names:
        return bare
    words = text.split()
    if len(words) == 1 and words[0].lower() not in SPEC_LAYERS:  # a name, not a spec
        raise ApiError(
            400,
            f"{_cut(text)} is not a zoo net this run's trainer offers ({', '.join(names) or 'none listed'}); "
            "the dashboard takes a zoo net or layer-spec text, never an import path",
        )
    for n, line in enumerate(value.rstrip().splitlines(), 1):
        for part in line.split(";"):
            layer = part.split("#", 1)[0].strip().lower().split()
            if not layer:
                continue
            if layer[0] not in SPEC_LAYERS:
                raise ApiError(400, f"line {n}: {_cut(layer[0])} is not a layer ({', '.join(SPEC_LAYERS)})")
            bad = next((w for w in layer[1:] if not SPEC_WORD.fullmatch(w)), None)
            if bad is not None:
                raise ApiError(400, f"line {n}: {layer[0]} cannot take {_cut(bad)} (words and whole numbers only)")
    return value.rstrip()


def _cut(word: str, limit: int = 40) -> str:
    """`word` quoted for an error message, cut to `limit` characters."""
    return repr(word if len(word) <= limit else word[:limit] + "…")


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


def describe_checkpoints(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """The run's checkpoint rows (RunReader.checkpoints()) for the page, each with "net": the net
    its metadata names (a zoo net's name, "layer spec", None when it says none), and "fits":
    whether its weights fit the net the run trains now (meta model/spec/input_shape) -- True,
    False, or None when either side does not say. Read from each file's safetensors header only."""
    now = _net_key(meta.get("model"), meta.get("spec"), meta.get("input_shape"), meta.get("zoo"))
    out = []
    for row in rows:
        md = _metadata(run_dir / str(row.get("file", "")))
        model = md.get("model")
        mine = _net_key(model, md.get("spec"), _json_list(md.get("input_shape")), None)
        net = model.removeprefix("zoo:") if model else None
        fits = None if mine is None or now is None else mine == now
        out.append({**row, "net": net, "fits": fits})
    return out


def _net_key(model: Any, spec: Any, shape: Any, zoo: Any) -> tuple[Any, ...] | None:
    """What decides whether weights fit a net: a zoo net's name; for a layer spec, its conv, pool
    and fc lines without activations (they hold no weights) and the input shape; else None."""
    if isinstance(model, str) and (model.startswith("zoo:") or (isinstance(zoo, list) and model in zoo)):
        return ("zoo", model.removeprefix("zoo:"))
    if not isinstance(spec, str) or not isinstance(shape, list):
        return None
    layers = [
        " ".join(w for w in line.lower().split() if w not in ACTIVATIONS)
        for line in spec.splitlines()
        if line.split() and line.split()[0].lower() in ("conv", "pool", "fc")
    ]
    return ("spec", tuple(layers), tuple(shape))


def _metadata(path: Path) -> dict[str, str]:
    """A checkpoint's safetensors metadata ({} when it has none or cannot be read)."""
    try:
        with safe_open(str(path), "numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}


def _json_list(text: str | None) -> list[Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, list) else None
