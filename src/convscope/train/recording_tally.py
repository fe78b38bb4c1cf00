"""What the recorder kept and skipped over some steps (`Tally`), and the one sentence the page
shows about it (`describe`): train/recorder_budget.py counts, the run's json "recording" row holds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Tally:
    """What was recorded and skipped over some steps (a report window, or the whole run)."""

    steps: int = 0
    stats_steps: int = 0
    stats_skipped: int = 0  # steps that could have had statistics (every `every`-th) and had none
    weight_steps: int = 0  # statistics steps that had the weights' side too (‖W‖, ‖dL/dW‖, update ratio)
    snapshots: int = 0
    snapshots_late: int = 0  # steps a due snapshot waited for its pool
    diagnosis_samples: int = 0
    diagnosis_skipped: int = 0
    train_s: float = 0.0  # the loop's own time (probe overhead not counted)
    cost_s: float = 0.0  # the recorder's

    def as_dict(self) -> dict[str, Any]:
        share = self.cost_s / self.train_s if self.train_s > 0 else None
        return {
            "steps": self.steps, "stats_steps": self.stats_steps, "stats_skipped": self.stats_skipped,
            "weight_stats_steps": self.weight_steps,
            "snapshots": self.snapshots, "snapshot_steps_late": self.snapshots_late,
            "diagnosis_samples": self.diagnosis_samples, "diagnosis_skipped": self.diagnosis_skipped,
            "cost_share": share,
        }  # fmt: skip


def describe(share: float | None, t: Tally) -> str:
    """One sentence for the page: what the recorder kept and what it skipped, and why."""
    if t.steps == 0:
        return "no steps recorded yet"
    parts = [f"per-layer statistics on {t.stats_steps} of {t.steps} steps"]
    if t.weight_steps < t.stats_steps:  # (statistics of the maps only on the others: recorder_budget.py MAPS)
        parts[0] += f" (‖W‖, ‖dL/dW‖ and the update ratio on {t.weight_steps} of them)"
    if t.snapshots:
        parts.append(f"{t.snapshots} snapshot{'s' if t.snapshots != 1 else ''}")
    if t.diagnosis_skipped:
        parts.append(f"{t.diagnosis_skipped} live-diagnosis sample{'s' if t.diagnosis_skipped != 1 else ''} skipped")
    if t.snapshots_late:
        parts.append(f"snapshots waited {t.snapshots_late} step{'s' if t.snapshots_late != 1 else ''} for the budget")
    text = "; ".join(parts)
    used = f"{100 * t.cost_s / t.train_s:.1f}%" if t.train_s > 0 else "unknown"
    if share is None:
        return f"{text} (no budget: everything on schedule; recording cost {used} of the step time)"
    why = f"to keep recording within {100 * share:g}% of the step time" if t.stats_skipped else "all within the budget"
    over = ", over the budget: what is never skipped (the scalars, the first snapshot) costs more on steps this short"
    return f"{text}, {why} (measured: {used}{over if t.train_s > 0 and t.cost_s > share * t.train_s * 1.5 else ''})"
