"""Streaming tallies: per-filter counts over a stream of Probe traces — https://cs231n.github.io/neural-networks-1/#actfun

`_Tally` keeps the running numbers of one block (inputs on which each filter's map is all zero or
NaN/Inf, the share of zeros and the mean map over a sample of batches, each filter's top input and
its map there, saturation, ‖dL/dW‖ per gradient batch); memory does not grow with the stream.
`Diagnoser` feeds every block of a trace to its tally and turns the tallies into a Diagnosis:
per-layer summaries, findings (findings.py) grouped per layer kind (groups.py), whether the
weights look untrained (untrained.py).

    diag = Diagnoser(data="my stream", lr=0.01)
    with Probe(model, keep=("a", "weight", "grad_weight")) as probe:
        for x, y in loader:
            loss_fn(model(x), y).backward()
            diag.observe(probe.trace)
    result = diag.result()
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from convscope.analysis.gradient_health import (
    ASSUMED_LR,
    DEPTH_RATIO,
    SATURATED_FILTER,
    SATURATION_MARGIN,
    TYPICAL_UPDATE_RATIO,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    norm,
    saturated_count,
    saturates,
    update_ratio,
)
from convscope.analysis.smoothness import NOISY_ROUGHNESS, roughness
from convscope.capture import Trace
from convscope.capture.naming import NON_NEGATIVE

from .findings import findings
from .groups import group_findings
from .result import Diagnosis, LayerSummary
from .untrained import default_init


class _Tally:
    """Running per-filter counts of one block; memory independent of the number of inputs."""

    def __init__(self, name: str, kind: str, activation: str | None, layer_type: str | None) -> None:
        self.name, self.kind, self.activation, self.layer_type = name, kind, activation, layer_type
        self.inputs = 0
        self.detail_inputs = 0  # inputs of the batches that added to zero_values and map_sum
        self.sat_values = 0  # activation values per filter counted for saturation
        self.zero_inputs: Tensor | None = None  # (C,) int64
        self.nonfinite_inputs: Tensor | None = None  # (C,) int64
        self.zero_values: Tensor | None = None  # (C,) int64
        self.saturated: Tensor | None = None  # (C,) int64, tanh/sigmoid only
        self.map_sum: Tensor | None = None  # (C, ...) float64
        self.top_val: Tensor | None = None  # (C,) float32, -inf before anything
        self.top_map: Tensor | None = None  # (C, ...)
        self.top_input: Tensor | None = None  # (C,) int64
        self.weight: Tensor | None = None  # copy of the filters
        self._weight_key: tuple[int, int] | None = None  # (data_ptr, version) of what was copied
        self.grad_sum = 0.0  # sum of ‖dL/dW‖ over gradient batches
        self.grad_batches = 0
        self.grad_nonfinite = 0

    def state(self) -> dict[str, tuple[str, Tensor]]:
        """The running numbers with their combine op (see Diagnoser._state)."""
        f64 = torch.float64
        out: dict[str, tuple[str, Tensor]] = {
            "inputs": ("sum", torch.tensor([self.inputs])),
            "detail_inputs": ("sum", torch.tensor([self.detail_inputs])),
            "sat_values": ("sum", torch.tensor([self.sat_values])),
            "grad_sum": ("sum", torch.tensor([self.grad_sum], dtype=f64)),
            "grad_batches": ("sum", torch.tensor([self.grad_batches])),
            "grad_nonfinite": ("sum", torch.tensor([self.grad_nonfinite])),
        }
        for key in ("zero_inputs", "nonfinite_inputs", "zero_values", "saturated", "map_sum"):
            v = getattr(self, key)
            if v is not None:
                out[key] = ("sum", v)
        if self.top_val is not None:
            assert self.top_map is not None and self.top_input is not None
            out["top_val"] = ("max", self.top_val)
            out["top_map"] = ("owner:top_val", self.top_map)
            out["top_input"] = ("owner:top_val", self.top_input)
        return out

    def load(self, combined: dict[str, Tensor]) -> None:
        for key in ("inputs", "detail_inputs", "sat_values", "grad_batches", "grad_nonfinite"):
            setattr(self, key, int(combined[key].item()))
        self.grad_sum = float(combined["grad_sum"].item())
        for key in ("zero_inputs", "nonfinite_inputs", "zero_values", "saturated", "map_sum", "top_val", "top_map", "top_input"):
            if key in combined:
                setattr(self, key, combined[key])

    def add_weight(self, w: Tensor) -> None:
        key = (w.data_ptr(), w._version)
        if key != self._weight_key:  # new, or written in place since: copy again
            self.weight = w.detach().float().clone()
            if self.layer_type is not None and "Transpose" in self.layer_type and w.dim() > 2:
                self.weight = self.weight.transpose(0, 1).contiguous()  # (C_in, C_out, k..) → (C_out, C_in, k..)
            self._weight_key = key

    def add_grad(self, g: Tensor) -> None:
        n = norm(g)
        if math.isfinite(n):
            self.grad_sum += n
            self.grad_batches += 1
        else:
            self.grad_nonfinite += 1

    def add_maps(self, a: Tensor, first_input: int, *, detail: bool = True) -> None:
        """a: (B, C, ...) activation maps of B inputs, the first being input `first_input`.
        Every batch: one reduction per map (its max, and min unless a ≥ 0). With `detail` also
        the zero count and the sum map (two more passes over a)."""
        b, c = a.shape[0], a.shape[1]
        a = a.detach().contiguous()  # per-map reductions of a channels-last map: 1.5 ms, of a copy 0.3
        a3 = a.view(b, c, -1)  # (B, C, S)
        if self.zero_inputs is None:
            dev = a.device
            self.zero_inputs = torch.zeros(c, dtype=torch.int64, device=dev)
            self.nonfinite_inputs = torch.zeros(c, dtype=torch.int64, device=dev)
            self.zero_values = torch.zeros(c, dtype=torch.int64, device=dev)
            self.map_sum = torch.zeros(a.shape[1:], dtype=torch.float64, device=dev)
            self.top_val = torch.full((c,), -math.inf, dtype=torch.float32, device=dev)
            self.top_map = torch.zeros(a.shape[1:], dtype=torch.float32, device=dev)
            self.top_input = torch.zeros(c, dtype=torch.int64, device=dev)
            if saturates(self.activation):
                self.saturated = torch.zeros(c, dtype=torch.int64, device=dev)
        assert self.map_sum is not None and self.top_val is not None and self.top_map is not None
        assert self.nonfinite_inputs is not None and self.zero_values is not None and self.top_input is not None
        if tuple(a.shape[1:]) != tuple(self.map_sum.shape):
            raise ValueError(
                f"{self.name}: activation shape changed from {tuple(self.map_sum.shape)} to "
                f"{tuple(a.shape[1:])} between batches; give inputs of one size"
            )
        # per batch only reductions to (B, C) and a few ops on them: this runs on every batch
        if self.activation in NON_NEGATIVE:
            hi = a3.amax(dim=2)  # (B, C); NaN when the map has a NaN
            self.zero_inputs += (hi == 0).sum(dim=0)
            finite = math.isfinite(float(hi.sum()))  # NaN/Inf anywhere make the sum non-finite
            if not finite:
                self.nonfinite_inputs += (~torch.isfinite(hi)).sum(dim=0)
        else:
            lo, hi = torch.aminmax(a3, dim=2)  # (B, C) each
            self.zero_inputs += ((hi == 0) & (lo == 0)).sum(dim=0)
            finite = math.isfinite(float(hi.sum() + lo.sum()))
            if not finite:
                self.nonfinite_inputs += (~torch.isfinite(hi) | ~torch.isfinite(lo)).sum(dim=0)
        if detail:
            if self.activation in NON_NEGATIVE:  # a ≥ 0: sign() is 1 where a > 0 (a float sum is fast)
                zeros = torch.nan_to_num(a3.shape[2] - a3.sign().sum(dim=2), nan=0.0)  # (B, C)
                self.zero_values += zeros.sum(dim=0).round().to(torch.int64)
            else:
                self.zero_values += (a3 == 0).sum(dim=2).sum(dim=0)  # (B, C) → (C,)
            self.map_sum += a.sum(dim=0).to(torch.float64)
            self.detail_inputs += b
        if not finite or hi.dtype != torch.float32:
            hi = torch.nan_to_num(hi.float(), nan=-math.inf)
        best, where = hi.max(dim=0)  # (C,) each
        better = best > self.top_val  # (C,)
        if bool(better.any()):
            idx = better.nonzero().squeeze(1)  # (K,)
            self.top_val[idx] = best[idx]
            self.top_map[idx] = a[where[idx], idx].float()  # (K, ...)
            self.top_input[idx] = where[idx] + first_input
        if self.saturated is not None:
            sat = saturated_count(a, self.activation)
            if sat is not None:
                self.saturated += sat
                self.sat_values += b * a3.shape[2]
        self.inputs += b


class Diagnoser:
    """Streams Probe traces into per-filter counts; `result()` turns them into a Diagnosis.

    Feed it `probe.trace` after each forward (and backward, for gradient health) of a Probe
    keeping at least "a" (and "weight", "grad_weight" for smoothness and gradients). Keyword
    arguments are the thresholds and the learning rate of `diagnose`.
    """

    def __init__(
        self,
        *,
        mostly_dead: float = 0.99,
        noisy: float = NOISY_ROUGHNESS,
        lr: float | None = None,
        data: str = "this data",
    ) -> None:
        if not 0 < mostly_dead <= 1:
            raise ValueError(f"mostly_dead must be a fraction in (0, 1], got {mostly_dead!r}")
        if not noisy > 0:
            raise ValueError(f"noisy must be a positive roughness (white noise = 1), got {noisy!r}")
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.mostly_dead = mostly_dead
        self.noisy = noisy
        self.lr = lr
        self.data = data
        self.inputs = 0
        self.offset = 0  # dataset index of the first input counted (a part of a larger stream)
        self.notes: list[str] = []
        self.gradients = "not measured"
        self._tallies: dict[str, _Tally] = {}

    def observe(self, trace: Trace, *, inputs: int | None = None, detail: bool = True) -> None:
        """Count one pass. `inputs`: its batch size (default: the batch dim of the first map).
        `detail`: also add to the mean maps and zero shares (two more passes over each map; a
        long stream can give them a sample of its batches)."""
        if inputs is None:
            first = next((b.a for b in trace.values() if b.a is not None), None)
            if first is None:
                raise ValueError(
                    "no block of this trace kept its activation map: keep 'a' in the Probe, or pass inputs="
                )
            inputs = int(first.shape[0])
        for name, block in trace.items():
            t = self._tallies.get(name)
            if t is None:
                layer_type = block.spec.type if block.spec is not None else None
                t = self._tallies[name] = _Tally(name, block.kind, block.activation, layer_type)
            if block.weight is not None:
                t.add_weight(block.weight)
            if block.grad_weight is not None:
                t.add_grad(block.grad_weight)
            a = block.a
            if a is not None and a.dim() >= 2 and block.activation is not None:
                t.add_maps(a, self.offset + self.inputs, detail=detail)
        self.inputs += inputs

    def _add_maps(self, name: str, a: Tensor, *, detail: bool) -> None:
        """Count one block's maps of the current pass (the tap's path; observe() does it from a trace)."""
        self._tallies[name].add_maps(a, self.offset + self.inputs, detail=detail)

    def _add_grad(self, name: str, g: Tensor) -> None:
        self._tallies[name].add_grad(g)

    def _state(self) -> dict[str, tuple[str, Tensor]]:
        """Every count of this Diagnoser with how parts of one stream combine it ("sum", "max",
        "min", or "owner:KEY": the value of the part holding KEY's maximum, the first such part
        on a tie), for `combine` (convscope.distributed); `_load` takes the combined values."""
        out: dict[str, tuple[str, Tensor]] = {"inputs": ("sum", torch.tensor([self.inputs]))}
        for name, t in self._tallies.items():
            for key, (op, v) in t.state().items():
                out[f"{name}\x00{key}"] = (op, v)
        return out

    def _load(self, combined: dict[str, Tensor]) -> None:
        self.inputs = int(combined["inputs"].item())
        for name, t in self._tallies.items():
            t.load({key.split("\x00", 1)[1]: v for key, v in combined.items() if key.startswith(f"{name}\x00")})

    def _drop_gradients(self) -> None:
        """Forget every gradient number so far (the labels turned out not to fit the model)."""
        for t in self._tallies.values():
            t.grad_sum, t.grad_batches, t.grad_nonfinite = 0.0, 0, 0

    def _advance(self, inputs: int) -> None:
        """The current pass is counted: the next one starts at input `self.inputs`."""
        self.inputs += inputs

    def result(self) -> Diagnosis:
        """The Diagnosis of everything observed so far."""
        layers = [s for s in map(self._summary, self._tallies.values()) if s is not None]
        lr = self.lr if self.lr is not None else ASSUMED_LR
        for s in layers:
            if s.grad_norm is not None and s.weight_norm is not None:
                s.relative_grad = s.grad_norm / s.weight_norm if s.weight_norm > 0 else math.inf
                s.update_ratio = update_ratio(grad_norm=s.grad_norm, weight_norm=s.weight_norm, lr=lr)
        found = findings(layers, inputs=self.inputs, data=self.data, mostly_dead=self.mostly_dead,
                         noisy=self.noisy, lr=lr, lr_assumed=self.lr is None)  # fmt: skip
        scope = f"on this data ({self.inputs:,} inputs of {self.data})"
        thresholds = {
            "mostly_dead": self.mostly_dead,
            "noisy_roughness": self.noisy,
            "typical_update_ratio": TYPICAL_UPDATE_RATIO,
            "update_ratio_low": UPDATE_RATIO_LOW,
            "update_ratio_high": UPDATE_RATIO_HIGH,
            "depth_ratio": DEPTH_RATIO,
            "saturation_margin": SATURATION_MARGIN,
            "saturated_filter": SATURATED_FILTER,
        }
        return Diagnosis(
            data=self.data,
            inputs=self.inputs,
            layers=layers,
            findings=found,
            thresholds=thresholds,
            lr=lr,
            lr_assumed=self.lr is None,
            gradients=self.gradients,
            notes=list(self.notes),
            groups=group_findings(found, {s.name: s.kind for s in layers}, scope=scope),
            untrained=default_init(layers),
        )

    def _summary(self, t: _Tally) -> LayerSummary | None:
        w = t.weight.cpu() if t.weight is not None else None
        rough: list[float] | None = None
        if t.kind == "conv" and w is not None and w.dim() >= 3 and max(w.shape[2:]) >= 2:
            rough = roughness(w).tolist()
        grad_norm = t.grad_sum / t.grad_batches if t.grad_batches else None
        if t.grad_nonfinite:
            grad_norm = math.inf
        weight_norm = norm(w) if w is not None else None
        if t.zero_inputs is None:  # no activation counted: only weights/gradients
            if w is None:
                return None
            c = int(w.shape[0])
            return LayerSummary(
                name=t.name, kind=t.kind, activation=t.activation, layer_type=t.layer_type,
                filters=c, inputs=0, zero_inputs=[], nonfinite_inputs=[], zero_fraction=[],
                max_activation=[], dead=[], mostly_dead=[], roughness=rough,
                grad_norm=grad_norm, weight_norm=weight_norm, grad_batches=t.grad_batches, weight=w,
            )  # fmt: skip
        assert t.nonfinite_inputs is not None and t.zero_values is not None and t.map_sum is not None
        assert t.top_val is not None and t.top_map is not None and t.top_input is not None
        zero = t.zero_inputs.cpu().tolist()
        n = t.inputs
        dead = [i for i, z in enumerate(zero) if n > 0 and z == n]
        mostly = [i for i, z in enumerate(zero) if n > 0 and z < n and z >= self.mostly_dead * n]
        sat = None
        if t.saturated is not None and t.sat_values:
            sat = (t.saturated.double().cpu() / t.sat_values).tolist()
        per_map = max(1, int(t.map_sum[0].numel()))  # values per map
        return LayerSummary(
            name=t.name,
            kind=t.kind,
            activation=t.activation,
            layer_type=t.layer_type,
            filters=len(zero),
            inputs=n,
            zero_inputs=zero,
            nonfinite_inputs=t.nonfinite_inputs.cpu().tolist(),
            zero_fraction=(t.zero_values.double().cpu() / max(t.detail_inputs * per_map, 1)).tolist(),
            max_activation=t.top_val.cpu().tolist(),
            dead=dead,
            mostly_dead=mostly,
            roughness=rough,
            saturated_fraction=sat,
            grad_norm=grad_norm,
            weight_norm=weight_norm,
            grad_batches=t.grad_batches,
            map_inputs=t.detail_inputs,
            weight=w,
            mean_map=(t.map_sum / max(t.detail_inputs, 1)).float().cpu(),
            top_map=t.top_map.cpu(),
            top_input=t.top_input.cpu().tolist(),
        )
