"""The built-in trainer: trains a zoo net on built-in data and records everything for the dashboard.

    convscope train --run runs/exp1 --steps 2000          # foreground, no server
    convscope demo                                          # this trainer in a child process + the dashboard

It obeys the dashboard's controls (rows in the run store it polls), answered in
train/trainer_controls.py; its data is train/trainer_data.py's. See docs/run-store.md.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.config import CONTROL_RANGES, EVOLUTION_PREFIX, TrainConfig
from convscope.models import zoo_names
from convscope.models.spec import spec_of
from convscope.train.threads import TrainerThreads
from convscope.train.trainer_controls import TrainerControls, build_allowed, decay_weights
from convscope.train.trainer_data import Data
from convscope.train.watch import Recorder

VAL_SHARE = 0.03  # validation passes may take at most this share of the training time


def is_evolution_step(done: int) -> bool:
    """True after 1, 2, 5, 10, 20, 50, 100, ... training steps (the 1-2-5 series, log-spaced as ZF's
    epochs 1, 2, 5, 10, 20, ... of their Fig. 4): when the trainer keeps an evolution checkpoint."""
    if done < 1:
        return False
    while done % 10 == 0:
        done //= 10
    return done in (1, 2, 5)


class Trainer(TrainerControls):
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
        self._weights = decay_weights(self.model)
        self._val_cost: float | None = None  # CPU seconds of the last validation pass
        self._trained_since_val = 0.0  # CPU seconds of training steps since then
        self._val_note = ""
        self._acc_window: deque[float] = deque(maxlen=100)
        self._perm = torch.randperm(len(self.data.xtr_normed))
        self._cursor = 0
        self._evolution_off = config.evolution_checkpoints == 0
        self._net_start = 0  # the run's step index at which the net now training took its first step
        self._settings_logged: tuple[float, ...] | None = None  # lr, momentum, batch size, weight decay as last logged

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

    def run(self, on_step: Callable[[int], None] | None = None) -> None:
        """Train until done or stopped; the run is closed as finished / stopped / crashed.
        `on_step(step)` is called after each training step (a progress bar)."""
        status = "crashed"
        try:
            self.writer.log_snapshot(self.recorder.step_index, "_test", "input", self.data.xtest)
            if self.data.note:
                self.writer.set_meta("note", self.data.note)
            steps = self.config.steps
            while not self._stop.is_set() and (steps is None or self.recorder.step_index < steps):
                step = self.train_step()
                if on_step is not None:
                    on_step(step)
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
        metrics.update(train_acc=sum(self._acc_window) / len(self._acc_window), wd_loss=0.5 * self.weight_decay * sq)
        # the settings a control can change (CONTROL_RANGES' keys) are logged on a net's first step and
        # where one changed, not every step: a third of the ~12 scalars a step (docs/run-store.md)
        settings = tuple(float(getattr(self, k)) for k in CONTROL_RANGES)
        if settings != self._settings_logged:
            metrics.update(zip(CONTROL_RANGES, settings, strict=True))
            self._settings_logged = settings  # (before step(): a restart answered in it resets this)
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
        """Checkpoint evo-NNNNNN once `done` steps of the run are committed, when the net now
        training has had 1, 2, 5, 10, ... of them (a net started by a restart has its own series;
        NNNNNN counts the run's steps), while they fit the budget: at most `evolution_checkpoints`
        of this net, all of the run's together at most `evolution_max_bytes`. The budget or a full
        disk ends them until the next restart, said in meta "evolution_note"; training goes on.
        (`convscope evolution` and the unit explorer draw them.)"""
        own = done - self._net_start
        if self._evolution_off or self.nonfinite_step is not None or not is_evolution_step(own):
            return
        name = f"{EVOLUTION_PREFIX}{done:06d}"
        state = self.model.state_dict()
        every = list(self.writer.checkpoint_path(name).parent.glob(f"{EVOLUTION_PREFIX}*.safetensors"))
        used = sum(p.stat().st_size for p in every)
        kept = [p for p in every if _evolution_done(p) > self._net_start]  # this net's
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


def _evolution_done(path: Path) -> int:
    """The run's steps done when evo-NNNNNN was kept (-1 for a name not of that form)."""
    digits = path.stem.removeprefix(EVOLUTION_PREFIX)
    return int(digits) if digits.isdigit() else -1
