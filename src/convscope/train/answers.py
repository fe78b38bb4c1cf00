"""The dashboard's controls as `watch()`'s recorder answers them (train/watch.py's Recorder mixes
this in): pause and resume, and the analyses a page asks of the live model — a projection back to
pixels (train/projections.py), what excites a unit (train/units_live.py), occlusion panels
(train/occlusion_live.py), the t-SNE map of the probe images (train/embedding_live.py). Anything
else goes to the built-in trainer's `on_control`. A control never ends the run: a failure is its
answer, one line. Controls still pending when a recorder opens the run are refused, not applied late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from torch import Tensor, nn

from convscope.errors import one_line
from convscope.runs import Control, RunWriter
from convscope.train.embedding_live import answer_embedding
from convscope.train.occlusion_live import answer_occlusion
from convscope.train.projections import answer_projection
from convscope.train.units_live import answer_unit

ControlHandler = Callable[[Control], dict[str, Any] | None]
STALE_CONTROL = "sent while no trainer was running"


class ControlAnswers:
    """Answers the dashboard's controls for a recorder (the attributes below are the recorder's)."""

    writer: RunWriter
    model: nn.Module
    step_index: int
    paused: bool
    on_control: ControlHandler | None
    probe_images: Tensor | None
    probe_labels: Tensor | None
    probe_transform: Callable[[Tensor], Tensor]
    _closed: bool
    _last_commit: float
    _clock: Callable[[], float]
    _inputs: dict[int, Tensor]
    _unobserved: Callable[[], AbstractContextManager[None]]  # no model call in the block is recorded

    def handle_controls(self) -> None:
        """Apply what the dashboard asked; `pause` blocks here until `resume` (or close). The
        answers' own model calls are not recorded."""
        self._answer_and_hold(self.writer.poll_controls())

    def _answer_and_hold(self, controls: list[Control]) -> None:
        self._answer(controls)
        while self.paused and not self._closed:
            self.writer.set_meta("status", "paused")
            self.writer.commit(max(self.step_index - 1, 0))
            self._last_commit = self._clock()
            time.sleep(0.1)
            self._answer(self.writer.poll_controls())
        if not self._closed:
            self.writer.set_meta("status", "running")

    def _answer(self, controls: list[Control]) -> None:
        if not controls:
            return
        with self._unobserved():
            for ctrl in controls:
                result = self._apply(ctrl)
                self.writer.ack_control(ctrl.id, self.step_index, result=result)

    def _refuse_stale_controls(self) -> None:
        """Controls still pending when this recorder opens the run were queued while no trainer
        was running (e.g. after a kill -9, before `--resume`): acknowledged as refused, so a
        resumed run neither starts paused nor takes settings nobody saw applied."""
        for ctrl in self.writer.poll_controls():
            self.writer.ack_control(ctrl.id, self.step_index, result={"ok": False, "error": STALE_CONTROL})

    def _apply(self, ctrl: Control) -> dict[str, Any]:
        if ctrl.key == "pause":
            self.paused = True
            return {"ok": True}
        if ctrl.key == "resume":
            self.paused = False
            return {"ok": True}
        if ctrl.key == "project":
            return self._project(ctrl)
        if ctrl.key == "unit":
            return self._unit(ctrl)
        if ctrl.key in ("occlude", "embed"):
            return self._analysis(ctrl)
        if self.on_control is None:
            return {"ok": False, "error": f"'{ctrl.key}' needs the built-in trainer (convscope demo)"}
        try:
            return self.on_control(ctrl) or {"ok": True}
        except (ValueError, TypeError, KeyError, RuntimeError, OSError) as exc:
            return {"ok": False, "error": one_line(exc)}
        except Exception as exc:  # a control never ends the run: any failure is its answer
            return {"ok": False, "error": f"{type(exc).__name__}: {one_line(exc)}"}

    def _project(self, ctrl: Control) -> dict[str, Any]:
        """A feature map back to pixels for the example the page shows (train/projections.py)."""
        if not self._inputs:
            return {"ok": False, "error": "no snapshot of an input yet: wait for the first pictures"}
        wanted = ctrl.value.get("step") if isinstance(ctrl.value, dict) else None
        steps = sorted(self._inputs)
        at = steps[-1]
        if isinstance(wanted, int) and not isinstance(wanted, bool):
            earlier = [s for s in steps if s <= wanted]
            at = earlier[-1] if earlier else steps[0]
        try:
            return answer_projection(
                self.model, self.writer, ctrl.id, ctrl.value, self._inputs[at],
                step=max(self.step_index - 1, 0), input_step=at,
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": one_line(exc)}

    def _unit(self, ctrl: Control) -> dict[str, Any]:
        """What excites one feature map over the probe images (train/units_live.py)."""
        if self.probe_images is None:
            return {"ok": False, "error": "the unit explorer needs probe images: watch(model, dir, probe=images)"}
        try:
            return answer_unit(
                self.model, self.writer, ctrl.id, ctrl.value, self.probe_images, self.probe_transform,
                step=max(self.step_index - 1, 0),
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": one_line(exc)}

    def _analysis(self, ctrl: Control) -> dict[str, Any]:
        """Occlusion panels of an image (train/occlusion_live.py); the held-out images' t-SNE map
        (train/embedding_live.py, needs probe images; labels when `probe_labels` is set)."""
        step = max(self.step_index - 1, 0)
        try:
            if ctrl.key == "occlude":
                return answer_occlusion(self.model, self.writer, ctrl.id, ctrl.value, self.probe_transform, step=step)
            if self.probe_images is None:
                return {"ok": False, "error": "the embedding needs probe images: watch(model, dir, probe=images)"}
            return answer_embedding(self.model, self.writer, ctrl.id, ctrl.value, self.probe_images,
                                    self.probe_transform, self.probe_labels, step=step)  # fmt: skip
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": one_line(exc)}
