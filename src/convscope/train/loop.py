"""The built-in trainer: trains a zoo net on built-in data and records everything for the dashboard.

    convscope train --run runs/exp1 --steps 2000          # foreground, no server
    convscope demo                                          # this trainer in a child process + the dashboard

It obeys the dashboard's controls (rows in the run store it polls): pause/resume, learning
rate, momentum, batch size, weight decay, another zoo net or an edited layer spec (restart),
save/load a checkpoint, and predictions for an uploaded image. See docs/run-store.md.

A row in the store is not trusted: the `model` control names a zoo net or carries layer-spec
text, never an import path (nothing in the store makes the trainer import or run code), and a
checkpoint that cannot be read is refused with one line while training goes on unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from torch import Tensor, nn

from convscope.config import CONTROL_RANGES, EVOLUTION_PREFIX, TrainConfig
from convscope.data import PHOTO_CLASSES, digits, open_dataset, photo_crops, prepare
from convscope.errors import one_line
from convscope.models import get_entry, zoo_names
from convscope.models.spec import build_spec, spec_of
from convscope.runs import Control
from convscope.train.threads import TrainerThreads
from convscope.train.watch import Recorder

VAL_SHARE = 0.03  # validation passes may take at most this share of the training time


def train_config_of(config: dict[str, Any]) -> TrainConfig:
    """A run's TrainConfig read back from its stored config (keys of another version left out)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**{k: v for k, v in config.items() if k in known})
    except (TypeError, ValueError) as err:
        raise ValueError(f"the run's training config cannot be read back: {err}") from None


class Data:
    """Val / test tensors in [0, 1] for one input shape, with class names; the training set is kept
    normalised (`xtr_normed`, channels-last): a batch is then one index and a flip of about half
    of it, 0.29 -> 0.10 ms at batch 32 (flip and the per-channel normalisation commute)."""

    def __init__(self, config: TrainConfig, input_shape: tuple[int, int, int]) -> None:
        c, h, w = input_shape
        per_example = c * h * w * 4
        n_train = max(1, min(config.train_size, config.max_data_bytes // per_example))
        self.note = (
            f"training set cut to {n_train:,} examples to fit {config.max_data_bytes >> 20} MiB"
            if n_train < config.train_size
            else ""
        )
        n_test = max(config.test_images, 1)
        spec = config.data
        if spec == "builtin:photo-crops":
            if c != 3:
                raise ValueError("builtin:photo-crops is colour: pick a 3-channel model or builtin:digits")
            xtr, self.ytr = photo_crops("train", n_train, size=h, seed=config.seed)
            self.xval, self.yval = photo_crops("val", config.val_size, size=h, seed=config.seed + 1)
            self.xtest, self.ytest = photo_crops("test", n_test, size=h, seed=config.seed + 2)
            self.classes = list(PHOTO_CLASSES)
        elif spec == "builtin:digits":
            if c != 1 or h != w:
                raise ValueError("builtin:digits is 1-channel square: pick e.g. zoo:convnetjs-mnist")
            xtr, self.ytr = digits("train", size=h)
            self.xval, self.yval = digits("val", size=h)
            self.xtest, self.ytest = digits("test", size=h)
            xtr, self.ytr = xtr[:n_train], self.ytr[:n_train]
            self.classes = [str(i) for i in range(10)]
        else:
            ds = open_dataset(spec, size=(h, w), channels=c)
            n = len(ds)  # type: ignore[arg-type]
            if n < 3:
                raise ValueError(f"dataset {spec} has {n} examples: too few to train on")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed)).tolist()
            n_val = min(config.val_size, max(1, n // 10))
            n_te = min(n_test, max(1, n // 10))

            def pick(ids: list[int]) -> tuple[Tensor, Tensor]:
                return torch.stack([ds[i][0] for i in ids]), torch.tensor([int(ds[i][1]) for i in ids])

            self.xval, self.yval = pick(order[:n_val])
            self.xtest, self.ytest = pick(order[n_val : n_val + n_te])
            xtr, self.ytr = pick(order[n_val + n_te :][:n_train])
            classes = getattr(ds, "classes", None)
            k = int(self.ytr.max()) + 1
            self.classes = list(classes) if classes else [f"class {i}" for i in range(k)]
        self.xtest, self.ytest = self.xtest[: config.test_images], self.ytest[: config.test_images]
        self.mean = xtr.mean(dim=(0, 2, 3))  # (C,)
        self.std = xtr.std(dim=(0, 2, 3)).clamp_min(1e-3)
        # batches index it, channels-last as the weights (Trainer._build); no raw copy is kept
        self.xtr_normed = self.norm(xtr).contiguous(memory_format=torch.channels_last)

    def norm(self, x: Tensor) -> Tensor:
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


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


def is_evolution_step(done: int) -> bool:
    """True after 1, 2, 5, 10, 20, 50, 100, ... training steps (the 1-2-5 series, log-spaced as ZF's
    epochs 1, 2, 5, 10, 20, ... of their Fig. 4): when the trainer keeps an evolution checkpoint."""
    if done < 1:
        return False
    while done % 10 == 0:
        done //= 10
    return done in (1, 2, 5)


def _is_spec_text(text: str) -> bool:
    lines = [ln.split("#", 1)[0].strip() for part in text.splitlines() for ln in part.split(";")]
    first = next((ln for ln in lines if ln), "")
    return bool(first) and first.split()[0].lower() in SPEC_OPS


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
    return build_spec(text, input_shape), input_shape


def _weights(model: nn.Module) -> list[Tensor]:
    """The parameters weight decay's loss reads (every `*weight`)."""
    return [p for n, p in model.named_parameters() if n.endswith("weight")]


def state_mismatch(own: dict[str, Tensor], state: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    """(keys missing or different in shape/dtype, keys not in the model): both empty when `state`
    fits `own` key for key (checked before any weight is copied)."""
    bad = sorted(k for k in own if k not in state or state[k].shape != own[k].shape or state[k].dtype != own[k].dtype)
    return bad, sorted(k for k in state if k not in own)


class Trainer:
    """Runs until `config.steps` or `stop()`; everything goes through a `Recorder` into the run store.

    `notify` receives one line for the terminal when the loss first turns non-finite."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self._stop = threading.Event()
        self.notify = notify
        self.nonfinite_step: int | None = None  # the first step with a NaN/Inf loss (since the last restart)
        torch.manual_seed(config.seed)
        self._threads = TrainerThreads(config.threads, self.run_dir)  # train/threads.py
        self.model_spec = config.model
        self.model, self.input_shape = self._build(config.model)
        self.data = Data(config, self.input_shape)
        self.lr, self.momentum = config.lr, config.momentum
        self.weight_decay, self.batch_size = config.weight_decay, config.batch_size
        self.opt = self._optimizer()
        meta = {
            "model": config.model,
            "trainer": "builtin",
            "dataset": config.data,
            "classes": self.data.classes,
            "input_shape": list(self.input_shape),
            "zoo": zoo_names(),
            "spec": spec_of(self.model),
        }
        self.recorder = Recorder(
            self.model, self.run_dir, config=asdict(self.config), meta=meta, resume=resume,
            snapshot_every=config.snapshot_every, on_control=self._control,
            probe=self.data.xval, probe_transform=self.data.norm,  # the unit explorer's images
        )  # fmt: skip
        self.writer = self.recorder.writer
        self.writer.set_meta("threads", self.threads)
        self.recorder.lr = self.lr
        self.recorder.probe_labels = self.data.yval  # the snapshots' fixed image is xval[0]
        self._describe_input()
        self._weights = _weights(self.model)
        self._val_cost: float | None = None  # CPU seconds of the last validation pass
        self._trained_since_val = 0.0  # CPU seconds of training steps since then
        self._val_note = ""
        self._acc_window: deque[float] = deque(maxlen=100)
        self._perm = torch.randperm(len(self.data.xtr_normed))
        self._cursor = 0
        self._evolution_off = config.evolution_checkpoints == 0

    # ---- threads (train/threads.py) ------------------------------------------------------
    @property
    def threads(self) -> int:
        """torch's thread count for this run, as last set."""
        return self._threads.count

    @property
    def watched(self) -> bool:
        """A page watches this run (a core is kept for the dashboard server)."""
        return self._threads.watched

    def _recheck_threads(self, now: float) -> None:
        if self._threads.recheck(now):
            self.writer.set_meta("threads", self.threads)

    # ---- building ------------------------------------------------------------------------
    def _build(self, spec: str) -> tuple[nn.Module, tuple[int, int, int]]:
        """The net, its 4-D weights channels-last: with channels-last batches (`_batch`) a training
        step of every zoo net takes 1.15-1.64x less CPU on this machine (bench/trainer.py)."""
        model, shape = build_allowed(spec, getattr(self, "input_shape", None))
        for p in model.parameters():  # what model.to(memory_format=...) does (absent from its typing)
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
        return model, shape

    def _optimizer(self) -> torch.optim.SGD:
        return torch.optim.SGD(
            self.model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    # ---- the loop ------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop after the current step (also ends a pause); safe from a signal handler."""
        self._stop.set()
        self.recorder.paused = False

    def run(self) -> None:
        """Train until done or stopped; the run is closed as finished / stopped / crashed."""
        status = "crashed"
        try:
            self.writer.log_snapshot(self.recorder.step_index, "_test", "input", self.data.xtest)
            if self.data.note:
                self.writer.set_meta("note", self.data.note)
            steps = self.config.steps
            while not self._stop.is_set() and (steps is None or self.recorder.step_index < steps):
                self.train_step()
            status = "finished" if not self._stop.is_set() else "stopped"
        except KeyboardInterrupt:
            status = "stopped"
        finally:
            if status != "crashed" and self.nonfinite_step is None:
                self._save_last()
            self.recorder.close(status)

    def _describe_input(self) -> None:
        """The input normalisation in the run's meta: the page draws x as the colour image."""
        self.writer.set_meta("input_mean", [round(float(v), 5) for v in self.data.mean])
        self.writer.set_meta("input_std", [round(float(v), 5) for v in self.data.std])

    def checkpoint_metadata(self) -> dict[str, str]:
        """What a checkpoint needs to describe itself (DESIGN §3): the model (a zoo name or layer
        spec), input shape, the input normalisation and the class names — `convscope inspect
        --weights` and the other commands read them back."""
        name = self.model_spec.strip().removeprefix("zoo:")
        spec = spec_of(self.model)
        return {
            "model": f"zoo:{name}" if name in zoo_names() else "layer spec",
            **({"spec": spec} if spec else {}),
            "input_shape": json.dumps(list(self.input_shape)),
            "mean": json.dumps([round(float(v), 5) for v in self.data.mean]),
            "std": json.dumps([round(float(v), 5) for v in self.data.std]),
            "classes": json.dumps(self.data.classes),
            "trained_on": self.config.data,
        }

    def _save_last(self) -> None:
        """Checkpoint "last" when the run ends: the dashboard's projections of a finished run
        (a worker process, train/worker.py) and `--resume` start from it. A full disk is said
        in the run's meta, not raised: the run's own data is already committed."""
        try:
            self.writer.save_checkpoint(self.model.state_dict(), "last", self.checkpoint_metadata())
        except OSError as exc:
            self.writer.set_meta("note", f"the final checkpoint could not be written: {exc}")

    def train_step(self) -> int:
        step = self.recorder.step_index
        metrics: dict[str, float] = {}
        self._recheck_threads(time.monotonic())
        started = time.process_time()
        final = self.config.steps is not None and step == self.config.steps - 1  # a finished run ends validated
        if (step % self.config.val_every == 0 and self._val_affordable()) or final:
            with self.recorder.unobserved():  # not a training pass: no probe, no statistics
                metrics["val_acc"] = self._validate(step)
            self._val_cost, self._trained_since_val = time.process_time() - started, 0.0
            started = time.process_time()
        xb, yb = self._batch()
        if not self.model.training:
            self.model.train()
        out = self.model(xb)  # normalised already (Data.xtr_normed)
        loss = F.cross_entropy(out, yb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value) and self.nonfinite_step is None:
            self.nonfinite_step = step
            if self.notify is not None:
                self.notify(
                    f"step {step}: the loss is {loss_value} (not finite); training goes on but the weights are "
                    f"ruined: try a smaller learning rate (now {self.lr:g}) or load a checkpoint"
                )
        with torch.no_grad():
            right = (out.argmax(1) == yb).sum().float()
            norms = torch._foreach_norm(self._weights) if self._weights else []  # ‖W‖ of all layers, one call
            hits, *w_norms = torch.stack([right, *norms]).tolist()  # one host transfer
        sq = sum(v * v for v in w_norms)
        self._acc_window.append(hits / len(yb))
        metrics.update(
            train_acc=sum(self._acc_window) / len(self._acc_window),
            wd_loss=0.5 * self.weight_decay * sq,
            lr=self.lr, momentum=self.momentum, batch_size=float(self.batch_size),
            weight_decay=self.weight_decay,
        )  # fmt: skip
        step = self.recorder.step(loss=loss_value, **metrics)
        self._keep_evolution(step + 1)
        self._trained_since_val += time.process_time() - started
        return step

    def _val_affordable(self) -> bool:
        """A validation pass every `val_every` steps, unless it would cost more than VAL_SHARE of
        the training time since the last one: then at the next multiple of `val_every` that fits
        (said in meta "validation")."""
        if self._val_cost is None or self._val_cost <= VAL_SHARE * self._trained_since_val:
            return True
        every = self.config.val_every
        note = (f"validation ({len(self.data.xval):,} images, {self._val_cost:.2f} s of CPU) less often than every "
                f"{every} steps, to keep it within {VAL_SHARE:.0%} of the training time")  # fmt: skip
        if note != self._val_note:
            self._val_note = note
            self.writer.set_meta("validation", note)
        return False

    def _keep_evolution(self, done: int) -> None:
        """Checkpoint evo-NNNNNN once `done` steps are committed, for `done` in 1, 2, 5, 10, ...
        (`convscope evolution` draws them), while they fit the budget: at most
        `evolution_checkpoints` of them, together at most `evolution_max_bytes`. The budget or a
        full disk ends them for the run, said in meta "evolution_note"; training goes on."""
        if self._evolution_off or self.nonfinite_step is not None or not is_evolution_step(done):
            return
        name = f"{EVOLUTION_PREFIX}{done:06d}"
        state = self.model.state_dict()
        kept = list(self.writer.checkpoint_path(name).parent.glob(f"{EVOLUTION_PREFIX}*.safetensors"))
        used = sum(p.stat().st_size for p in kept)
        size = sum(t.numel() * t.element_size() for t in state.values())  # + a small safetensors header
        stop = ""
        if len(kept) >= self.config.evolution_checkpoints:
            stop = f"the run keeps at most {self.config.evolution_checkpoints} (TrainConfig.evolution_checkpoints)"
        elif used + size > self.config.evolution_max_bytes:
            stop = (
                f"the next ({size:,} bytes) would pass {self.config.evolution_max_bytes:,} bytes in all"
                " (TrainConfig.evolution_max_bytes)"
            )
        else:
            try:
                self.writer.save_checkpoint(state, name, self.checkpoint_metadata())
                return
            except OSError as exc:
                stop = f"one could not be written: {exc}"
        self._evolution_off = True
        self.writer.set_meta("evolution_note", f"evolution checkpoints end before step {done}: {stop}")

    def _batch(self) -> tuple[Tensor, Tensor]:
        """The next `batch_size` training examples, normalised, about half flipped left-right."""
        xtr = self.data.xtr_normed
        n = len(xtr)
        b = min(self.batch_size, n)
        if self._cursor + b > n:
            self._perm, self._cursor = torch.randperm(n), 0
        idx = self._perm[self._cursor : self._cursor + b]
        self._cursor += b
        xb = xtr[idx]  # (B, C, H, W), channels-last as the weights (_build)
        flip = (torch.rand(b) < 0.5).nonzero().view(-1)  # a left-right flip for about half of them
        xb[flip] = xtr[idx[flip]].flip(-1)
        return xb, self.data.ytr[idx]

    @torch.no_grad()
    def _predict(self, x: Tensor) -> Tensor:
        was = self.model.training
        self.model.eval()
        try:
            probs = [torch.softmax(self.model(self.data.norm(x[i : i + 250])), dim=1) for i in range(0, len(x), 250)]
        finally:
            self.model.train(was)
        return torch.cat(probs)

    def _validate(self, step: int) -> float:
        probs = self._predict(self.data.xval)
        acc = float((probs.argmax(1) == self.data.yval).float().mean())
        if len(self.data.xtest):
            test = self._predict(self.data.xtest)
            self.writer.log_json(step, "predictions", [
                {"index": i, "label": int(y), "label_name": self._name(int(y)),
                 "top": self._top3(p), "correct": int(p.argmax()) == int(y)}
                for i, (p, y) in enumerate(zip(test, self.data.ytest, strict=True))
            ])  # fmt: skip
        return acc

    def _name(self, k: int) -> str:
        return self.data.classes[k] if k < len(self.data.classes) else f"class {k}"

    def _top3(self, p: Tensor) -> list[list[Any]]:
        top = torch.topk(p, min(3, p.numel()))
        return [[int(i), self._name(int(i)), round(float(v), 5)] for v, i in zip(top.values, top.indices, strict=True)]

    # ---- controls ------------------------------------------------------------------------
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
            parts = ([f"missing or different: {', '.join(bad[:5])}"] if bad else []) + (
                [f"not in this model: {', '.join(extra[:5])}"] if extra else []
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
        self._weights = _weights(model)
        self.opt = self._optimizer()
        self._val_cost = None  # a new net: validated at the next multiple of val_every
        self._acc_window.clear()
        self.nonfinite_step = None
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


def _checkpoint_step(path: Path) -> int | None:
    """The training step a checkpoint's weights are from (its metadata `step`), None if unsaid."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return int((f.metadata() or {}).get("step", ""))
    except (ValueError, OSError, SafetensorError):
        return None
