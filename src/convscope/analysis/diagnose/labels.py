"""Do the data's labels mean the model's outputs? Gradient health is skipped when they may not — https://cs231n.github.io/neural-networks-3/#ratio

Gradient health scores the labels with cross-entropy against the model's logits. On a head that
does not match the labels (10 photo classes fed to a 1000-class ImageNet head) the loss is
≈ ln 1000 whatever the filters do, and the gradient numbers mean nothing. `LabelFit` watches the
labels of a stream and says why they may not fit, in one line:

* a label outside 0 … outputs-1;
* the model names its classes (checkpoint metadata) and the data names others;
* the model names none: the data's class count (or, when it names none either, the span of the
  labels seen, 0 … max) differs from the number of outputs.

    fit = LabelFit(model_classes=None, data_classes=("cat", "dog"))
    fit.see(y, outputs=1000)       # per labelled batch: the reason for a label out of range, else None
    fit.final()                    # after the stream: "the data has 2 classes but the model 1000 outputs ..."
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


class LabelFit:
    """The labels seen so far against the model's output count; see() each labelled batch."""

    def __init__(self, *, model_classes: Sequence[str] | None, data_classes: Sequence[str] | None) -> None:
        self.model_classes = tuple(model_classes) if model_classes else None
        self.data_classes = tuple(data_classes) if data_classes else None
        self.outputs: int | None = None  # the model's output count (logits' last dim)
        self.lo: int | None = None  # smallest label seen
        self.hi: int | None = None  # largest label seen

    def see(self, y: Tensor, *, outputs: int) -> str | None:
        """Take one batch's class indices y (N,) and the model's output count; why the labels
        cannot be scored (one out of range) or may not mean the outputs (class names or count),
        else None. Other labels (float, not (N,)) are for a loss_fn, not for this check: None."""
        if y.dtype.is_floating_point or y.dim() != 1 or y.numel() == 0:
            return None
        self.outputs = outputs
        lo, hi = int(y.min()), int(y.max())
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        if self.lo < 0 or self.hi >= outputs:
            return f"labels run from {self.lo} to {self.hi} but the model has {outputs} outputs"
        return self.upfront() or self._count()

    def upfront(self) -> str | None:
        """Before any batch: the model and the data name different classes (else None)."""
        m, d = self.model_classes, self.data_classes
        if m is not None and d is not None and d != m:
            return f"the data's classes ({_names(d)}) are not the model's ({_names(m)}), so its labels mean nothing to the loss"
        return None

    def final(self) -> str | None:
        """After the stream: why the labels may not mean the model's outputs, or None when they fit."""
        k = self.outputs
        if k is None or self.hi is None or self.lo is None:
            return self.upfront()
        if self.lo < 0 or self.hi >= k:
            return f"labels run from {self.lo} to {self.hi} but the model has {k} outputs"
        if self.model_classes is not None or self.data_classes is not None:
            return self.upfront() or self._count()
        if self.hi + 1 != k:
            return (
                f"the labels seen span 0…{self.hi} ({self.hi + 1} classes) but the model has {k} outputs "
                "and neither names its classes, so the labels may not mean the model's classes"
            )
        return None

    def _count(self) -> str | None:
        """The model names no classes and the data's class count is not its output count."""
        k, d = self.outputs, self.data_classes
        if self.model_classes is None and d is not None and k is not None and len(d) != k:
            return (
                f"the data has {len(d)} classes but the model {k} outputs and no class names, so "
                "its labels may not mean the model's classes"
            )
        return None


def _names(classes: Sequence[str]) -> str:
    shown = ", ".join(classes[:4])
    return shown + (f", … {len(classes)} in all" if len(classes) > 4 else "")
