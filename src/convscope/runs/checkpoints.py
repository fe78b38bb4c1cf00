"""Checkpoint files beside a run: checkpoints/NAME.safetensors, written atomically (temp file, fsync,
rename, directory fsync) and recorded in the run's `checkpoints` table.

    tensors = state_tensors(model.state_dict())          # CPU copies, checked str -> Tensor
    save_atomic(tensors, run / "checkpoints" / "last.safetensors", {"model": "zoo:tiny"})
    load_file(str(path))                                  # safetensors: never a pickle
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from convscope.runs.schema import fsync_dir, retry, write_txn


def state_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU clones of a state dict's tensors (clones: safetensors refuses shared storage)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping str -> Tensor, got {type(state_dict).__name__}"
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(
                f"state_dict entries must be str -> Tensor, got {key!r}: {type(value).__name__}"
            )
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    return tensors


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    extra = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise TypeError("checkpoint metadata must map str to str (JSON text for lists)")
    return extra


def save_atomic(tensors: dict[str, torch.Tensor], final: Path, metadata: dict[str, str]) -> int:
    """Write `tensors` to `final` so that it is either absent, the old file, or complete; returns
    the file's size in bytes."""
    from safetensors.torch import save_file

    final.parent.mkdir(exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return final.stat().st_size


def record(conn: sqlite3.Connection, name: str, file: str, step: int | None, size: int) -> None:
    """The checkpoint's row (table checkpoints) and meta "last_checkpoint", in one transaction."""
    row = (name, file, step, time.time(), size)

    def body(c: sqlite3.Connection) -> None:
        c.execute(
            "INSERT OR REPLACE INTO checkpoints (name, file, step, time, bytes) VALUES (?, ?, ?, ?, ?)",
            row,
        )
        c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_checkpoint', ?)",
            (json.dumps(name),),
        )

    retry(lambda: write_txn(conn, body), "save_checkpoint")


def load(path: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {name!r} in {path.parent}")
    return load_file(str(path))
