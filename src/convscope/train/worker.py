"""The projections worker: answers the dashboard's `project` requests for a run whose trainer has
ended, from the run's newest checkpoint (DESIGN §3 "Analyses on demand": the server never runs a
model; `convscope serve` starts this as a separate process when such a request arrives).

    python -m convscope answer --run runs/exp1        # what the server starts; exits when idle

Safety as the built-in trainer's: the model is rebuilt only from a zoo name or layer-spec text
recorded in the run (never an import path), weights only from a safetensors checkpoint that must
fit it key for key. A run recorded by `watch()` holds the user's own model, which is not in the
run: its projections are answered by `watch()` itself while the user's loop runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from torch import nn

from convscope.errors import one_line
from convscope.runs import RunReader, RunWriter
from convscope.train.embedding_live import answer_embedding
from convscope.train.occlusion_live import answer_occlusion
from convscope.train.projections import answer_projection
from convscope.train.trainer_controls import build_allowed, state_mismatch
from convscope.train.trainer_data import Data, train_config_of
from convscope.train.units_live import answer_unit

IDLE_S = 60.0  # the worker exits after this long without a request
POLL_S = 0.2  # seconds between looks at the run's control rows
ENDED = ("finished", "stopped", "crashed")


class WorkerError(ValueError):
    """This run cannot be answered by a worker; the message says why in one line."""


def rebuild(meta: dict[str, Any]) -> nn.Module:
    """The run's model from its meta: a zoo net or layer-spec text, built as its trainer did."""
    model = str(meta.get("model", ""))
    spec, shape = meta.get("spec"), meta.get("input_shape")
    if model == "layer spec" and isinstance(spec, str) and isinstance(shape, list) and len(shape) == 3:
        model = spec
    dims = (int(shape[0]), int(shape[1]), int(shape[2])) if isinstance(shape, list) and len(shape) == 3 else None
    try:
        return build_allowed(model, dims)[0]
    except ValueError as err:  # ModelChoiceError included
        raise WorkerError(f"the run's model cannot be rebuilt: {one_line(err)}") from None


def _newest_checkpoint(reader: RunReader) -> dict[str, Any]:
    rows = [c for c in reader.checkpoints() if isinstance(c.get("step"), int)]
    if not rows:
        raise WorkerError("the run has no checkpoint to project with (save one while it trains)")
    return max(rows, key=lambda c: (c["step"], c.get("time", 0)))


def _first_layer(reader: RunReader) -> str:
    found = reader.json("layers")
    rows = found[1] if found is not None and isinstance(found[1], list) else []
    if not rows or not isinstance(rows[0], dict) or "name" not in rows[0]:
        raise WorkerError("the run has no layer table yet")
    return str(rows[0]["name"])


def check_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, newest checkpoint row) of a run a worker can answer for; WorkerError otherwise."""
    with RunReader(run_dir) as r:
        meta = r.meta()
        if meta.get("status") not in ENDED:
            raise WorkerError(f"the run is {meta.get('status')}: its trainer answers its own requests")
        if meta.get("trainer") != "builtin":
            raise WorkerError(
                "this run was recorded by watch() in your own loop: its model is not in the run, so "
                "projections are answered only while your loop runs"
            )
        if r.read_only:
            raise WorkerError("this run is read-only: answers cannot be stored")
        return meta, _newest_checkpoint(r)


def answer_requests(run_dir: str | Path, *, idle_s: float = IDLE_S, poll_s: float = POLL_S) -> int:
    """Answer `project` rows until `idle_s` passes without one (or the process that started this
    one ends); returns how many were answered. A run that cannot be answered has its pending
    requests refused with the reason (the page shows it), then WorkerError."""
    meta, ckpt = check_run(run_dir)
    status = str(meta["status"])
    parent = os.getppid()
    writer = RunWriter(run_dir, resume=True)  # sets "running" for a moment: put the status back
    answered = 0
    try:
        writer.set_meta("status", status)
        last = writer.last_step or 0
        writer.commit(last)
        with RunReader(run_dir) as reader:
            try:
                model = _load(writer, meta, ckpt)
                first = _first_layer(reader)
            except WorkerError as err:
                for ctrl in writer.poll_controls():
                    writer.ack_control(ctrl.id, last, result={"ok": False, "error": str(err)})
                raise
            probe = _Probe(reader)
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < idle_s and os.getppid() == parent:
                rows = writer.poll_controls()
                for ctrl in rows:
                    result = _answer(model, writer, reader, probe, first, ctrl.id, ctrl.key, ctrl.value, last, ckpt)
                    writer.ack_control(ctrl.id, last, result=result)
                    answered += 1
                if rows:
                    quiet_since = time.monotonic()
                else:
                    time.sleep(poll_s)
    finally:
        writer.close(status)
    return answered


def _load(writer: RunWriter, meta: dict[str, Any], ckpt: dict[str, Any]) -> nn.Module:
    model = rebuild(meta)
    try:
        state = writer.load_checkpoint(str(ckpt["name"]))
    except Exception as exc:  # safetensors' own error types: one line, never a traceback
        raise WorkerError(f"checkpoint {ckpt['name']!r} cannot be read: {one_line(exc)}") from None
    bad, extra = state_mismatch(model.state_dict(), state)
    if bad or extra:
        raise WorkerError(f"checkpoint {ckpt['name']!r} does not fit the run's model")
    model.load_state_dict(state)
    return model.eval()


def _answer(
    model: nn.Module,
    writer: RunWriter,
    reader: RunReader,
    probe: _Probe,
    first: str,
    ident: int,
    key: str,
    value: Any,
    last: int,
    ckpt: dict[str, Any],
) -> dict[str, Any]:
    if key == "unit":
        return _answer_unit(model, writer, probe, ident, value, last, ckpt)
    if key in ("occlude", "embed"):
        return _answer_analysis(model, writer, probe, ident, key, value, last, ckpt)
    if key != "project":
        return {"ok": False, "error": f"the run has ended: only projections, units, occlusion and embeddings are answered, not '{key}'"}
    wanted = value.get("step") if isinstance(value, dict) else None
    step = wanted if isinstance(wanted, int) and not isinstance(wanted, bool) else None
    found = reader.snapshot(first, "x", step) or reader.snapshot(first, "x")
    if found is None:
        return {"ok": False, "error": "the run has no snapshot of an input to project"}
    input_step, x = found
    weights = f"checkpoint {ckpt['name']} (step {ckpt['step']})"
    try:
        out = answer_projection(
            model, writer, ident, value, x.float(), step=last, input_step=input_step, weights=weights
        )
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": one_line(exc)}
    out["checkpoint"] = str(ckpt["name"])
    return out


class _Probe:
    """The run's validation images and normalisation, rebuilt from its config (as its trainer
    made them) on the first unit request and kept for the worker's life."""

    def __init__(self, reader: RunReader) -> None:
        self.reader = reader
        self._data: Data | None = None

    def data(self) -> Data:
        if self._data is None:
            shape = self.reader.meta().get("input_shape")
            if not (isinstance(shape, list) and len(shape) == 3):
                raise ValueError("the run has no input_shape")
            self._data = Data(train_config_of(self.reader.config()), (int(shape[0]), int(shape[1]), int(shape[2])))
        return self._data


def _answer_unit(
    model: nn.Module, writer: RunWriter, probe: _Probe, ident: int, value: Any, last: int, ckpt: dict[str, Any]
) -> dict[str, Any]:
    """The unit explorer over the run's own validation images, with its normalisation."""
    try:
        data = probe.data()
        return answer_unit(
            model, writer, ident, value, data.xval, data.norm, step=last,
            weights=f"checkpoint {ckpt['name']} (step {ckpt['step']})",
        )  # fmt: skip
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": one_line(exc)}


def _answer_analysis(
    model: nn.Module, writer: RunWriter, probe: _Probe, ident: int, key: str, value: Any, last: int, ckpt: dict[str, Any]
) -> dict[str, Any]:
    """Occlusion panels (train/occlusion_live.py) or the held-out t-SNE map (train/embedding_live.py)."""
    weights = f"checkpoint {ckpt['name']} (step {ckpt['step']})"
    try:
        data = probe.data()
        if key == "occlude":
            return answer_occlusion(model, writer, ident, value, data.norm, step=last, weights=weights)
        return answer_embedding(model, writer, ident, value, data.xval, data.norm, data.yval, step=last, weights=weights)
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": one_line(exc)}
