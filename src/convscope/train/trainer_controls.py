"""The built-in trainer's own controls, from the dashboard through the run store (train/loop.py's
Trainer mixes this in; `watch()`'s recorder answers pause/resume and the analyses itself,
train/answers.py, and hands the rest here): learning rate, momentum, batch size, weight decay,
another zoo net or an edited layer spec (restart), save/load a checkpoint, and predictions for
an uploaded image. See docs/run-store.md.

A row in the store is not trusted: the `model` control names a zoo net or carries layer-spec
text, never an import path (nothing in the store makes the trainer import or run code), and a
checkpoint that cannot be read is refused with one line while training goes on unchanged.
"""

from __future__ import annotations

import base64
import io
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from torch import Tensor, nn

from convscope.config import CONTROL_RANGES, TrainConfig
from convscope.data import prepare
from convscope.errors import one_line
from convscope.models import get_entry, zoo_names
from convscope.models.spec import build_spec, spec_of
from convscope.runs import Control, RunWriter
from convscope.train.trainer_data import Data
from convscope.train.watch import Recorder

MAX_PREDICT_PIXELS = 25_000_000  # an uploaded picture larger than this is refused before decoding
SPEC_OPS = ("conv", "pool", "fc", "dropout")  # the first word of a layer-spec line (models.spec)


class ModelChoiceError(ValueError):
    """A model that is neither a zoo net nor layer-spec text; `choices` lists the valid ones."""

    def __init__(self, spec: str) -> None:
        self.choices = [f"zoo:{name}" for name in zoo_names()] + ["layer-spec text"]
        shown = spec if len(spec) <= 80 else spec[:77] + "..."
        super().__init__(
            f"model {shown!r} is not a choice of the built-in trainer: a zoo net "
            f"({', '.join(self.choices[:-1])}) or layer-spec text such as 'conv 8 3 pad 1 relu; pool 2; fc 10' "
            "(import paths are not accepted here)"
        )


def _is_spec_text(text: str) -> bool:
    """Layer-spec text (parsed, never imported) rather than a name: more than one word, or a layer
    word alone ('fc'). A single other word -- `file.py:Net`, `module:function`, an unknown net --
    is a model name, refused with the choices (ModelChoiceError); a spec with a bad line gets
    build_spec's error naming that line."""
    words = text.split()
    return len(words) > 1 or (len(words) == 1 and words[0].lower() in SPEC_OPS)


def build_allowed(spec: str, input_shape: tuple[int, int, int] | None) -> tuple[nn.Module, tuple[int, int, int]]:
    """A zoo net (`NAME` or `zoo:NAME`) or layer-spec text — nothing else: `spec` may come from a
    row in the run store, so it is never imported (ModelChoiceError otherwise). The trainer and
    the projections worker build models only through this."""
    text = spec.strip()
    name = text.removeprefix("zoo:")
    if name in zoo_names():
        entry = get_entry(name)
        return entry.factory().train(), entry.input_shape
    if not _is_spec_text(text):
        raise ModelChoiceError(spec)
    if input_shape is None:
        raise ValueError("a layer spec needs an input shape: start from a zoo net")
    return build_spec(spec, input_shape), input_shape  # spec unstripped: its line numbers are the user's


def decay_weights(model: nn.Module) -> list[Tensor]:
    """The parameters weight decay's loss reads (every `*weight`)."""
    return [p for n, p in model.named_parameters() if n.endswith("weight")]


def state_mismatch(own: dict[str, Tensor], state: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    """(keys missing or different in shape/dtype, keys not in the model): both empty when `state`
    fits `own` key for key (checked before any weight is copied)."""
    bad = sorted(k for k in own if k not in state or state[k].shape != own[k].shape or state[k].dtype != own[k].dtype)
    return bad, sorted(k for k in state if k not in own)


class TrainerControls:
    """The built-in trainer's answers to its controls (the attributes below are the Trainer's)."""

    config: TrainConfig
    model: nn.Module
    model_spec: str
    input_shape: tuple[int, int, int]
    data: Data
    opt: torch.optim.SGD
    recorder: Recorder
    writer: RunWriter
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    nonfinite_step: int | None
    _weights: list[Tensor]
    _perm: Tensor
    _cursor: int
    _val_cost: float | None
    _acc_window: deque[float]
    _net_start: int
    _settings_logged: tuple[float, ...] | None
    _evolution_off: bool
    _build: Callable[[str], tuple[nn.Module, tuple[int, int, int]]]
    _optimizer: Callable[[], torch.optim.SGD]
    _describe_input: Callable[[], None]
    _top3: Callable[[Tensor], list[list[Any]]]
    checkpoint_metadata: Callable[[], dict[str, str]]

    def _control(self, ctrl: Control) -> dict[str, Any]:
        key, value = ctrl.key, ctrl.value
        if key in CONTROL_RANGES:
            allowed, fits = CONTROL_RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} needs a number, got {type(value).__name__}: {key} must be {allowed}")
            if not fits(value):  # compared before float(): a 400-digit int is refused, not overflowed
                shown = repr(value) if len(str(value)) <= 30 else f"a {len(str(value))}-digit number"
                raise ValueError(f"{key}={shown} is out of range: {key} must be {allowed}")
            v = float(value)
            if key == "batch_size":
                self.batch_size = int(v)
            else:
                setattr(self, key, v)
                if key == "lr":
                    self.recorder.lr = v
                for group in self.opt.param_groups:
                    group[key] = v
            return {"ok": True, key: v}
        if key == "save_checkpoint":  # a taken name is versioned (NAME-2, NAME-3, ...): nothing is overwritten
            asked = str(value or f"step-{self.recorder.step_index}")
            name = next(n for n in (asked, *(f"{asked}-{i}" for i in range(2, 10_000)))
                        if not self.writer.checkpoint_path(n).exists())  # fmt: skip
            path = self.writer.save_checkpoint(self.model.state_dict(), name, self.checkpoint_metadata())
            return {"ok": True, "name": name, "path": str(path), "step": _checkpoint_step(path),
                    **({"asked": asked} if name != asked else {})}  # fmt: skip
        if key == "load_checkpoint":
            return self._load_checkpoint(str(value))
        if key == "model":
            try:
                return self._restart(str(value))
            except ModelChoiceError as exc:
                return {"ok": False, "error": str(exc), "choices": exc.choices}
        if key == "predict":
            return self._predict_upload(ctrl.id, value)
        raise ValueError(f"unknown control {key!r}")

    def _load_checkpoint(self, name: str) -> dict[str, Any]:
        """Every check before the first weight is copied: a refused checkpoint leaves the model as it was."""
        try:
            state = self.writer.load_checkpoint(name)
        except FileNotFoundError:
            raise  # "no checkpoint NAME in DIR" says it already
        except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as exc:
            raise ValueError(f"checkpoint {name!r} cannot be read: {one_line(exc)}") from None
        bad, extra = state_mismatch(self.model.state_dict(), state)
        if bad or extra:
            parts = ([f"missing or different: {_some(bad)}"] if bad else []) + (
                [f"not in this model: {_some(extra)}"] if extra else []
            )
            raise ValueError(f"checkpoint {name!r} does not fit this model ({'; '.join(parts)})")
        self.model.load_state_dict(state)
        self.nonfinite_step = None
        return {"ok": True, "name": name, "step": _checkpoint_step(self.writer.checkpoint_path(name))}

    def _restart(self, spec: str) -> dict[str, Any]:
        model, shape = self._build(spec)
        if shape != self.input_shape:
            self.data = Data(self.config, shape)
            self.writer.log_snapshot(self.recorder.step_index, "_test", "input", self.data.xtest)
            self._perm, self._cursor = torch.randperm(len(self.data.xtr_normed)), 0
        self.model, self.input_shape, self.model_spec = model, shape, spec
        self._weights = decay_weights(model)
        self.opt = self._optimizer()
        self._val_cost = None  # a new net: validated at the next multiple of val_every
        self._acc_window.clear()
        self.nonfinite_step = None
        self._net_start = self.recorder.step_index  # this net's first step: its own evolution series
        self._settings_logged = None  # logged again on its first step (the page reads a net's own span)
        self._evolution_off = self.config.evolution_checkpoints == 0
        self.recorder.swap_model(model)
        self.recorder.probe_images, self.recorder.probe_transform = self.data.xval, self.data.norm
        self.recorder.probe_labels = self.data.yval
        self._describe_input()
        self.writer.set_meta("model", spec if "\n" not in spec else "layer spec")
        self.writer.set_meta("spec", spec_of(model))
        self.writer.set_meta("input_shape", list(shape))
        return {"ok": True, "model": spec}

    def _predict_upload(self, ident: int, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or not isinstance(value.get("png_b64"), str):
            raise ValueError("predict needs {'png_b64': ...}")
        raw = base64.b64decode(value["png_b64"], validate=True)
        try:
            with Image.open(io.BytesIO(raw)) as im:
                if im.format != "PNG":
                    raise ValueError("predict expects a PNG made by the server")
                if im.width * im.height > MAX_PREDICT_PIXELS:
                    raise ValueError(f"predict: a {im.width}×{im.height} picture is over {MAX_PREDICT_PIXELS:,} pixels")
                img = np.asarray(im.convert("RGB"))
        except Image.DecompressionBombError as exc:
            raise ValueError(f"predict: {exc}") from None
        c, h, w = self.input_shape
        x = prepare(np.ascontiguousarray(img), size=(h, w), channels=c).unsqueeze(0)  # (1, C, H, W)
        was = self.model.training
        self.model.eval()
        try:
            with self.recorder.probing() as probe, torch.no_grad():
                probs = torch.softmax(self.model(self.data.norm(x)), dim=1)[0]
            trace = probe.trace
        finally:
            self.model.train(was)
        step = max(self.recorder.step_index - 1, 0)
        prefix = f"upload:{ident}"
        self.writer.log_snapshot(step, f"{prefix}/input", "x", x)
        for name, block in trace.items():
            for kind in ("z", "a"):
                t = getattr(block, kind)
                if t is not None:
                    self.writer.log_snapshot(step, f"{prefix}/{name}", kind, t[:1])
        result = {"top": self._top3(probs), "layers": list(trace.keys())}
        self.writer.log_json(step, prefix, result)
        self.writer.commit(step)
        return {"ok": True, **result}


def _some(keys: list[str], shown: int = 5) -> str:
    """The first `shown` keys, and how many more there are: 'a, b, c, d, e … and 2 more'."""
    more = len(keys) - shown
    return ", ".join(keys[:shown]) + (f" … and {more} more" if more > 0 else "")


def _checkpoint_step(path: Path) -> int | None:
    """The training step a checkpoint's weights are from (its metadata `step`), None if unsaid."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return int((f.metadata() or {}).get("step", ""))
    except (ValueError, OSError, SafetensorError):
        return None
