"""Held update/weight ratios: a layer whose measured ‖ΔW‖/‖W‖ stays outside [1e-4, 1e-2] — https://cs231n.github.io/neural-networks-3/#ratio

CS231n: the ratio of the update's size to the weights' size "should be somewhere around 1e-3".
One step outside the range says little (a batch can be odd); a ratio that stays out for many
consecutive measured steps says the learning rate (or momentum, or weight decay) does not suit
the layer. This watches the ratio actually measured after each optimizer step (W after the
step against W used in its forward; it includes momentum and weight decay), not an estimate.

    hold = UpdateHold(hold=100)
    hold.observe(step, "conv1", 0.02)        # after each recorded step, per layer
    hold.findings()                           # [Finding(kind="update_ratio", ...)] for held ones
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from convscope.analysis.diagnose import Finding
from convscope.analysis.gradient_health import (
    TYPICAL_UPDATE_RATIO,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
)

HOLD_STEPS = 100  # measured steps in a row outside the range before it is a finding


@dataclass
class _Streak:
    side: str  # "high" | "low"
    first: int  # step it started at
    last: int  # last step seen
    count: int  # measured steps in the streak
    lo: float  # smallest and largest ratio in it
    hi: float


class UpdateHold:
    """Per layer, the current run of measured update/weight ratios on one side of the range."""

    def __init__(self, *, low: float = UPDATE_RATIO_LOW, high: float = UPDATE_RATIO_HIGH, hold: int = HOLD_STEPS) -> None:
        if not 0 < low < high:
            raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
        if hold < 1:
            raise ValueError(f"hold must be >= 1 step, got {hold}")
        self.low, self.high, self.hold = low, high, hold
        self._streaks: dict[str, _Streak] = {}

    def observe(self, step: int, layer: str, ratio: float) -> None:
        """The ratio measured for `layer` at `step`; a ratio inside the range (or not finite) ends
        the layer's streak."""
        side = "high" if ratio > self.high else "low" if ratio < self.low else None
        if side is None or not math.isfinite(ratio):
            self._streaks.pop(layer, None)
            return
        s = self._streaks.get(layer)
        if s is None or s.side != side:
            self._streaks[layer] = _Streak(side, step, step, 1, ratio, ratio)
            return
        s.last, s.count, s.lo, s.hi = step, s.count + 1, min(s.lo, ratio), max(s.hi, ratio)

    def reset(self) -> None:
        """Forget every streak (a new model)."""
        self._streaks.clear()

    def findings(self) -> list[Finding]:
        """One finding per layer whose ratio has stayed out for at least `hold` measured steps."""
        out = []
        for layer, s in self._streaks.items():
            if s.count < self.hold:
                continue
            bound = self.high if s.side == "high" else self.low
            where = "above" if s.side == "high" else "below"
            out.append(Finding(
                kind="update_ratio", layer=layer, filters=(), severity="medium" if s.side == "high" else "low",
                summary=f"{layer}'s measured update/weight ratio ‖ΔW‖/‖W‖ has stayed {where} {bound:g} for "
                        f"{s.count} steps in a row (steps {s.first}–{s.last}: {s.lo:.1e} … {s.hi:.1e}); "
                        f"about {TYPICAL_UPDATE_RATIO:g} is healthy",
                advice=("The learning rate may be too high for this layer (with momentum m an SGD step is "
                        "about lr/(1−m)·dL/dW): try a smaller learning rate; large updates can kill ReLU filters."
                        if s.side == "high" else
                        "The learning rate may be too low for this layer — or training has converged (a "
                        "trained net has small gradients on its training data)."),
                evidence={"update_ratio_min": s.lo, "update_ratio_max": s.hi, "steps": s.count,
                          "first_step": s.first, "last_step": s.last, "low": self.low, "high": self.high,
                          "typical": TYPICAL_UPDATE_RATIO, "measured": True},
            ))  # fmt: skip
        return out
