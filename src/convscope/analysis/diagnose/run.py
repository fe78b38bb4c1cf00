"""The diagnose stream: a dataset through a model, counted batch by batch — https://cs231n.github.io/neural-networks-1/#actfun

`diagnose` streams a dataset through the model (memory does not grow with it): the first batch
runs inside a Probe keeping only maps and weights, which finds the blocks of any model; the rest
run under plain forward hooks on the activation modules (tap.py) when those cover every block
(a Probe stays on for functional activations). Each batch goes to a Diagnoser (tally.py). With
labels that fit the model's head (labels.py), gradient health is sampled on a few batches spread
over the data.

    diag = diagnose(model, (X, y), lr=0.01)      # X (N, C, H, W), y (N,) class indices
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.analysis.smoothness import NOISY_ROUGHNESS
from convscope.analysis.stream import Progress, open_batches, split_batch
from convscope.capture import Probe, logits_of

from .labels import LabelFit
from .result import Diagnosis
from .tally import Diagnoser
from .tap import _Tap, leader_weight

GRAD_BATCHES = 4  # gradient health is sampled on this many batches (backward costs ~2 forwards)
MAP_BATCHES = 4  # mean maps and zero shares come from this many batches (each costs 2 passes over a)

LossFn = Callable[[Tensor, Tensor], Tensor]
Combine = Callable[[dict[str, tuple[str, Tensor]]], dict[str, Tensor]]


@dataclass(frozen=True)
class Part:
    """This process's share of a stream split among processes (convscope.distributed): where it
    sits in the whole stream, and `combine`, which gives every process the numbers of all parts
    from each one's {key: (op, tensor)} (op "sum", "max", "min" or "owner:KEY", Diagnoser._state)."""

    first_batch: int  # index of this part's first batch in the whole stream
    first_input: int  # dataset index of its first input
    total: int | None  # inputs in the whole stream (the sampling plans spread over it)
    combine: Combine

# ------------------------------------------------------------------------------ the stream
def diagnose(
    model: nn.Module,
    data: Any,
    layers: list[str] | tuple[str, ...] | None = None,
    *,
    batch_size: int | None = None,
    limit: int | None = None,
    loss_fn: LossFn | None = None,
    gradients: bool | None = None,
    grad_batches: int | None = GRAD_BATCHES,
    lr: float | None = None,
    mostly_dead: float = 0.99,
    noisy: float = NOISY_ROUGHNESS,
    transform: Callable[[Tensor], Tensor] | None = None,
    data_name: str | None = None,
    progress: Progress | None = None,
    classes: Sequence[str] | None = None,
    untrained: str | None = None,
    part: Part | None = None,
) -> Diagnosis:
    """Stream `data` through `model` and diagnose its filters.

    data: a Dataset of (x, y) or x, a DataLoader, an (X, y) pair of tensors, or X alone
    ((N, C, H, W); y (N,) class indices). The model runs in eval mode (restored after) with
    one Probe keeping only activation maps and weights; each batch is counted and dropped.
    layers: limit to these blocks (Probe's selection). batch_size: for a Dataset or tensors
    (default 64; a DataLoader brings its own). limit: stop after this many inputs.
    Gradient health needs labels: `gradients` None = when the data has labels that fit the
    model's head (labels.py: with the default cross-entropy, labels out of range, class names or
    a class count that differ from the model's skip it with one line saying why); True = always
    (an error without labels or with labels out of range). It runs `loss_fn(logits, y)` (default
    cross-entropy) and autograd on `grad_batches` batches spread evenly over the data (the first
    ones when its length is unknown; None = every batch). lr: for the update/weight ratio
    (default: ASSUMED_LR, said so). mostly_dead, noisy: thresholds (THRESHOLD_TEXT).
    transform: applied to each batch x (e.g. input normalisation). progress(done, total): called
    after each batch. classes: the class names of the model's outputs when known (e.g. from
    its checkpoint). untrained: why the weights are untrained when the caller knows (e.g. none
    were loaded); otherwise a default initialisation is detected (untrained.py). part: this
    process streams one part of a larger stream (`convscope.distributed.diagnose` sets it).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"diagnose needs an nn.Module, got {type(model).__name__}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if grad_batches is not None and (not isinstance(grad_batches, int) or grad_batches < 1):
        raise ValueError(f"grad_batches must be a positive int or None (all), got {grad_batches!r}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, y), got {type(loss_fn).__name__}")
    if gradients is False and loss_fn is not None:
        raise ValueError("loss_fn is given but gradients=False: drop one of them")
    batches, total, name, per_batch = open_batches(data, batch_size)
    if limit is not None:
        total = limit if total is None else min(total, limit)
    whole = total if part is None else part.total
    plan = _plan(whole, per_batch, grad_batches)
    map_plan = _plan(whole, per_batch, MAP_BATCHES)
    diag = Diagnoser(mostly_dead=mostly_dead, noisy=noisy, lr=lr, data=data_name or name)
    diag.offset = 0 if part is None else part.first_input
    params = [w for m in model.modules() if (w := leader_weight(m)) is not None and w.requires_grad]
    modes = {m: m.training for m in model.modules()}
    fit = None if loss_fn is not None else LabelFit(model_classes=classes, data_classes=_classes_of(data))
    run = _Run(model, diag, loss_fn, params, fit, forced=gradients is True)
    labelled = False
    try:
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        first_batch = 0 if part is None else part.first_batch
        stream = enumerate(_limited(batches, limit), start=first_batch)
        tap: _Tap | None = None

        def step_batch(step: int, x: Tensor, y: Tensor | None, probe: Probe | None) -> None:
            nonlocal labelled
            if gradients is True and y is None:
                raise ValueError("gradients=True needs labels: give (X, y) or a dataset of (x, y)")
            labelled = labelled or y is not None
            x = x.to(device)
            if transform is not None:
                x = transform(x)
            want = gradients is not False and y is not None and bool(params)
            want = want and _chosen(step, plan, grad_batches)
            detail = _chosen(step, map_plan, MAP_BATCHES)
            if tap is not None:
                tap.detail = detail
                tap.new_pass()
            run.forward(x, None if y is None else y.to(device), grad=want, probe=probe is not None)
            if probe is not None:
                diag.observe(probe.trace, inputs=int(x.shape[0]), detail=detail)
            else:
                diag._advance(int(x.shape[0]))
            if progress is not None:
                progress(diag.inputs, total)

        # the first batch under a Probe finds the blocks (any model, functional activations
        # too); the rest run under plain forward hooks on the activation modules when that
        # covers every block (a Probe watches every torch call, costly on a long stream)
        with Probe(model, layers, keep=("a", "weight", "grad_weight")) as probe:
            for step, (x, y) in stream:
                step_batch(step, x, y, probe)
                if step == first_batch:
                    tap = _Tap.of(model, probe.trace, diag)
                    if tap is not None:
                        run.blocks_of = tap.blocks_of_weight
                        break
        if tap is not None:
            with tap:
                for step, (x, y) in stream:
                    step_batch(step, x, y, None)
    finally:
        for m, mode in modes.items():
            m.training = mode
    if part is not None:
        labelled = _combine(part, diag, run, fit, labelled)
    if diag.inputs == 0:
        raise ValueError("the data has no inputs: nothing to diagnose")
    doubt = fit.final() if fit is not None and run.graded else None
    if doubt is not None and gradients is not True:
        run.skip_gradients(doubt)
    loss_sum, graded, graded_inputs = run.loss_sum, run.graded, run.graded_inputs
    if run.skip is not None:
        diag.gradients = f"not measured: {run.skip} (gradients=True / --gradients measures anyway)"
    elif graded:
        what = "the given loss_fn" if loss_fn is not None else "cross-entropy against the labels"
        where = (
            "(every batch)" if grad_batches is None
            else "spread over the data" if plan is not None else "at the start of the data"
        )  # fmt: skip
        diag.gradients = (
            f"{what} on {graded} batch(es) {where} ({graded_inputs:,} inputs; mean loss "
            f"{loss_sum / graded_inputs:.4g}), model in eval mode"
        ) + ("" if doubt is None else f"; measured as asked although {doubt}")
    elif gradients is False:
        diag.gradients = "off (gradients=False)"
    elif not labelled:
        diag.gradients = "not measured: the data has no labels"
    else:
        diag.gradients = "not measured: no conv/linear weight requires grad"
    diag.notes.append(
        f"Counts are over {diag.inputs:,} inputs of {diag.data} with the model in eval mode: a filter "
        "dead on this data may fire on other data."
    )
    result = diag.result()
    result.untrained = untrained or result.untrained
    sampled = max((s.map_inputs for s in result.layers), default=0)
    if 0 < sampled < result.inputs:
        result.notes.append(
            f"Mean activation maps and shares of zeros are from {sampled:,} of the inputs "
            f"({MAP_BATCHES} batches spread over the data); dead counts, maxima and top inputs from all."
        )
    return result


def _combine(part: Part, diag: Diagnoser, run: _Run, fit: LabelFit | None, labelled: bool) -> bool:
    """Every part's counts on every process (the parts ran the same model over disjoint
    batches); returns whether any part had labels."""
    big = 2**62
    first = part.combine({
        "skip": ("max", torch.tensor([int(run.skip is not None)])),
        "labelled": ("max", torch.tensor([int(labelled)])),
        "lo": ("min", torch.tensor([big if fit is None or fit.lo is None else fit.lo])),
        "hi": ("max", torch.tensor([-big if fit is None or fit.hi is None else fit.hi])),
        "outputs": ("max", torch.tensor([-1 if fit is None or fit.outputs is None else fit.outputs])),
    })  # fmt: skip
    if fit is not None:
        lo, hi, outputs = (int(first[k].item()) for k in ("lo", "hi", "outputs"))
        fit.lo, fit.hi = (None, None) if lo == big else (lo, hi)
        fit.outputs = None if outputs < 0 else outputs
    if int(first["skip"].item()) and run.skip is None:  # another part found labels that do not fit
        run.skip_gradients((fit.final() if fit is not None else None) or "the labels of another part do not fit the model's outputs")
    state = diag._state()
    state["loss_sum"] = ("sum", torch.tensor([run.loss_sum], dtype=torch.float64))
    state["graded"] = ("sum", torch.tensor([run.graded, run.graded_inputs]))
    combined = part.combine(state)
    run.loss_sum = float(combined.pop("loss_sum").item())
    run.graded, run.graded_inputs = (int(v) for v in combined.pop("graded").tolist())
    diag._load(combined)
    return bool(first["labelled"].item())


class _Run:
    """One forward (and, on a gradient batch, loss and autograd) of a batch; gradient norms go to
    the Diagnoser through the Probe's trace, or straight from autograd on the tap's path. With a
    LabelFit it checks each labelled batch against the model's outputs: a misfit skips gradient
    health from then on (dropping what was measured) unless `forced` (gradients=True)."""

    def __init__(
        self, model: nn.Module, diag: Diagnoser, loss_fn: LossFn | None, params: list[Tensor],
        fit: LabelFit | None, *, forced: bool,
    ) -> None:  # fmt: skip
        self.model, self.diag, self.loss_fn, self.params = model, diag, loss_fn, params
        self.fit, self.forced = fit, forced
        self.blocks_of: dict[int, list[str]] = {}  # id(weight) → block names (tap path)
        self.loss_sum, self.graded, self.graded_inputs = 0.0, 0, 0
        self.skip: str | None = None  # why gradient health is skipped (None: it is not)
        if fit is not None and not forced and (reason := fit.upfront()) is not None:
            self.skip = reason

    def forward(self, x: Tensor, y: Tensor | None, *, grad: bool, probe: bool) -> None:
        """y: the batch's labels (None: unlabelled); grad: a gradient batch."""
        if y is None or not grad or self.skip is not None:
            with torch.no_grad():
                out = self.model(x)
            if y is not None and self.fit is not None and self.skip is None:
                self._check(logits_of(out), y)
            return
        with torch.enable_grad():
            logits = logits_of(self.model(x))
            if self.fit is not None:
                self._check(logits, y)
                if self.skip is not None:
                    return
            loss = _loss(self.loss_fn, logits, y)
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        if not probe:  # under a Probe its parameter hooks already put dL/dW into the trace
            for p, g in zip(self.params, grads, strict=True):
                for name in self.blocks_of.get(id(p), []) if g is not None else []:
                    self.diag._add_grad(name, g)
        self.loss_sum += float(loss.detach()) * x.shape[0]
        self.graded, self.graded_inputs = self.graded + 1, self.graded_inputs + int(x.shape[0])

    def _check(self, logits: Tensor, y: Tensor) -> None:
        assert self.fit is not None
        if logits.dim() != 2:
            reason: str | None = f"the model's output {tuple(logits.shape)} is not (batch, classes) logits"
        else:
            reason = self.fit.see(y, outputs=int(logits.shape[-1]))
        if reason is not None and not self.forced:  # forced: the loss says what is wrong, or runs
            self.skip_gradients(reason)

    def skip_gradients(self, reason: str) -> None:
        """Gradient health is off for `reason`: forget what was measured."""
        self.skip = reason
        self.diag._drop_gradients()
        self.loss_sum, self.graded, self.graded_inputs = 0.0, 0, 0


def _classes_of(data: Any) -> tuple[str, ...] | None:
    """The class names a dataset (or a DataLoader's) states in `.classes`, else None."""
    found = getattr(getattr(data, "dataset", data), "classes", None)
    if isinstance(found, list | tuple) and found and all(isinstance(c, str) for c in found):
        return tuple(found)
    return None


def _loss(loss_fn: LossFn | None, logits: Tensor, y: Tensor) -> Tensor:
    if loss_fn is not None:
        loss = loss_fn(logits, y)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn(logits, y) must return a scalar tensor")
        return loss
    if y.dtype.is_floating_point or y.dim() != 1:
        raise ValueError(
            f"the default cross-entropy loss needs class indices y (N,) of an integer type, got "
            f"{y.dtype} {tuple(y.shape)}; pass loss_fn= or gradients=False (--no-gradients)"
        )
    k = logits.shape[-1]
    if logits.dim() != 2 or int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(
            f"labels of a batch run from {int(y.min())} to {int(y.max())} but the model has {k} outputs "
            f"(logits {tuple(logits.shape)}): pass loss_fn= or gradients=False (--no-gradients)"
        )
    return F.cross_entropy(logits, y)


def _plan(total: int | None, per_batch: int | None, k: int | None) -> set[int] | None:
    """Which batches of a stream get the costly extras: `k` of them spread evenly over it (a
    folder sorted by class must not lend its first class alone). None when the length is
    unknown (then the first k) or k is None (every batch)."""
    if k is None or total is None or per_batch is None:
        return None
    n = -(-total // per_batch)  # batches in the stream
    m = min(k, n)
    return {i * n // m for i in range(m)}


def _chosen(step: int, plan: set[int] | None, k: int | None) -> bool:
    if k is None:
        return True
    return step < k if plan is None else step in plan


def _limited(batches: Iterable[Any], limit: int | None) -> Iterator[tuple[Tensor, Tensor | None]]:
    seen = 0
    for batch in batches:
        x, y = split_batch(batch)
        if limit is not None and seen + x.shape[0] > limit:
            x = x[: limit - seen]
            y = None if y is None else y[: limit - seen]
        if x.shape[0] == 0:
            return
        yield x, y
        seen += int(x.shape[0])
        if limit is not None and seen >= limit:
            return
