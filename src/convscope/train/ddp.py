"""watch() under DistributedDataParallel (torchrun): one run for the whole job, stats of the global batch.

    dist.init_process_group("gloo")                 # torchrun --nproc-per-node 2 train.py
    model = DDP(net)
    run = cs.watch(model, "runs/x")                  # on every rank: rank 0 records, the others help
    for x, y in loader:                              # each rank its own shard (DistributedSampler)
        loss = F.cross_entropy(model(x), y)          # a MEAN-reduced loss (see below)
        opt.zero_grad(); loss.backward(); opt.step()
        run.step(loss=loss)

Every rank computes its layer statistics; they are reduced across ranks so the recorded numbers are
those of one process over the same global batch: min → MIN, max → MAX, a_mean from sums and counts,
dead_fraction from per-channel max/min reduced across ranks. Each rank's dL/da is for its LOCAL mean
loss, so grad_a_min/max/norm are scaled by B_local/B_global before they are combined: this ASSUMES
a mean-reduced loss (with a sum-reduced loss they come out B_global/B_local times too small).
weight_norm, grad_weight_norm and update_ratio are rank 0's (DDP keeps the weights equal on every
rank; grad_weight is read from `param.grad`, which DDP has averaged, when it is still there at
`step()`, else the probe's local copy is used). The loss is the batch-weighted mean of the ranks'
losses and `examples` counts the global batch; other metrics, timings and examples_per_s are rank
0's. BatchNorm normalises each rank by its own batch (SyncBatchNorm gives one-process equality).

Rank 0 alone opens and writes the run; snapshots come from its batch and it alone answers projection
and unit requests (running the unwrapped module, which never syncs). The other ranks open no store
and write nothing: after one probed pass they compute their share in module hooks (ddp_hooks.py) and
join one small all_gather per step. Controls are read by rank 0 and the pause flag rides in that
all_gather, so a pause from the page pauses every rank and resume resumes them all. A failed
collective (a rank died) or torchrun's SIGTERM closes the run as "crashed". Every rank must run its forward and backward before
each `step()` (DDP does) and watch the same layers. Buffers live on the GPU under nccl, on the CPU
otherwise (gloo is what the tests run).
"""

from __future__ import annotations

import atexit
import math
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from convscope.analysis import block_stats
from convscope.capture import Probe, Trace
from convscope.capture.naming import RELU
from convscope.runs.writer import ending
from convscope.train.ddp_hooks import Item, LightHooks, a_items, g_items, g_raw, z_items
from convscope.train.watch import Recorder, _number

FOLLOWER_KEEP = ("z", "a", "grad_a")  # what a rank > 0 needs for its share of the statistics
HOLD_S = 0.1  # seconds between the heartbeat all_reduces while paused
HEAD = 4  # [pause flag, Σ loss·B, Σ B (ranks that gave a loss), Σ B] in front of the SUM buffer


def world() -> tuple[int, int] | None:
    """(rank, world size) when a torch.distributed process group with more than one rank is up."""
    if not dist.is_available() or not dist.is_initialized():
        return None
    size = dist.get_world_size()
    return (dist.get_rank(), size) if size > 1 else None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (its own forward never syncs)."""
    inner = getattr(model, "module", None)
    if isinstance(model, nn.parallel.DistributedDataParallel) and isinstance(inner, nn.Module):
        return inner
    return model


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---- statistics from per-rank partials -------------------------------------------------------
class Partials:
    """One rank's share of every block's statistics as a SUM part and a MAX part (minima are kept
    negated, so one MAX serves both). The same model gives the same layout on every rank."""

    def __init__(self) -> None:
        self.sums: list[Tensor] = []
        self.maxes: list[Tensor] = []
        self._factors: dict[bool, list[float]] = {True: [], False: []}  # per element
        self._squares: list[int] = []  # elements of the SUM buffer that are norms to square
        self.plan: list[tuple[str, list[tuple[str, bool, int]]]] = []  # block → [(key, is_sum, size)]

    def add(self, name: str, a: Tensor | None, z: Tensor | None, g: Tensor | None, *, relu: bool, batch: int) -> None:
        """A block's share from its recorded tensors (ddp_hooks computes the same in hooks)."""
        items: list[Item] = []
        if a is not None:
            items += a_items(a.detach(), relu and z is not None)
        if z is not None:
            items += z_items(z.detach())
        if g is not None:
            items += g_items(g_raw(g.detach()), batch)
        self.add_items(name, items)

    def add_items(self, name: str, items: list[Item]) -> None:
        plan: list[tuple[str, bool, int]] = []
        for key, is_sum, t, factor in items:
            n = t.numel()
            if is_sum and key.endswith("_sq"):
                self._squares.append(len(self._factors[True]))
            (self.sums if is_sum else self.maxes).append(t.reshape(-1))
            self._factors[is_sum] += [factor] * n
            plan.append((key, is_sum, n))
        self.plan.append((name, plan))

    def buffer(self, is_sum: bool) -> Tensor:
        """The SUM or MAX part as one float64 vector, factors applied (a few ops for all blocks)."""
        parts = self.sums if is_sum else self.maxes
        if not parts:
            return torch.zeros(0, dtype=torch.float64)
        v = torch.cat(parts).double()
        if is_sum and self._squares:
            v[self._squares] = v[self._squares].square()
        return v * torch.tensor(self._factors[is_sum], dtype=torch.float64)

    def finish(self, sums: Tensor, maxes: Tensor, batch: int) -> dict[str, dict[str, float]]:
        """Each block's statistics from the reduced buffers (`batch` = the global batch size)."""
        out: dict[str, dict[str, float]] = {}
        at = {True: 0, False: 0}
        for name, items in self.plan:
            v: dict[str, Tensor] = {}
            for key, is_sum, size in items:
                buf = sums if is_sum else maxes
                v[key] = buf[at[is_sum] : at[is_sum] + size]
                at[is_sum] += size
            out[name] = _combine(v, batch)
        return out


def _combine(v: dict[str, Tensor], batch: int) -> dict[str, float]:
    """block_stats' activation keys from reduced partials (see Partials.add for the keys)."""
    s: dict[str, float] = {}
    if "z_max" in v:
        s["z_min"], s["z_max"] = -float(v["-z_min"][0]), float(v["z_max"][0])
    if "hi" in v:
        hi = v["hi"]
        if "-lo" in v:
            lo = -v["-lo"]
            s["a_min"] = float(lo.min())
            dead = (hi == 0) & (lo == 0)
        else:  # ReLU: min a = max(min z, 0)
            s["a_min"] = max(s["z_min"], 0.0)
            dead = hi == 0
        s["a_max"] = float(hi.max())
        s["dead_fraction"] = float(dead.float().mean())  # float32, as block_stats
    elif "a_max" in v:
        s["a_min"], s["a_max"] = -float(v["-a_min"][0]), float(v["a_max"][0])
    if "a_sum" in v:
        s["a_mean"] = float(v["a_sum"][0] / v["a_n"][0])
    if "g_max" in v:
        s["grad_a_min"] = -float(v["-g_min"][0]) / batch
        s["grad_a_max"] = float(v["g_max"][0]) / batch
        s["grad_a_norm"] = math.sqrt(float(v["g_sq"][0])) / batch
    return s


def partials(trace: Trace, batch: int) -> Partials:
    """This rank's share of the statistics of every block in `trace`."""
    p = Partials()
    with torch.no_grad():
        for name, block in trace.items():
            p.add(name, block.a, block.z, block.grad_a, relu=block.activation in RELU, batch=batch)
    return p


class Exchange:
    """The reduced result of one step: pause flag, global loss, global batch, block statistics."""

    def __init__(self, paused: bool, loss: float | None, batch: int, stats: dict[str, dict[str, float]]) -> None:
        self.paused, self.loss, self.batch, self.stats = paused, loss, batch, stats


def exchange(paused: bool, loss: float | None, batch: int, parts: Partials | None, *, finish: bool) -> Exchange:
    """The step's one collective: an all_gather of [head, SUM part, MAX part] (a few hundred
    numbers), summed and maxed here; one gloo call costs this rank more CPU than the arithmetic.
    `finish`: turn the reduced buffers into statistics (rank 0; the others only contribute)."""
    dev = _device()
    head = torch.tensor([float(paused), (loss or 0.0) * batch, batch if loss is not None else 0, batch], dtype=torch.float64)
    n_sum = 0
    pieces = [head]
    if parts is not None:
        pieces += [parts.buffer(True), parts.buffer(False)]
        n_sum = pieces[1].numel()
    mine = torch.cat(pieces).to(dev)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    if not finish:  # a follower needs only rank 0's pause flag
        return Exchange(bool(every[0][0].item() > 0), None, 0, {})
    table = torch.stack(every).cpu()
    h = table[:, :HEAD].sum(0).tolist()
    total = int(h[3])
    stats = {}
    if parts is not None:
        sums = table[:, HEAD : HEAD + n_sum].sum(0)
        maxes = table[:, HEAD + n_sum :].amax(0)
        stats = parts.finish(sums, maxes, max(total, 1))
    return Exchange(bool(table[0, 0].item() > 0), h[1] / h[2] if h[2] > 0 else None, total, stats)


def _flag(paused: bool) -> bool:
    """The heartbeat while paused: rank 0 says whether it still is, the others add 0."""
    t = torch.tensor([float(paused)], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return bool(t.item() > 0)


def _handshake(ok: bool, start: int, every: int) -> tuple[bool, int, int]:
    """Rank 0 tells the others whether it opened the run, its first step and `every`."""
    t = torch.tensor([float(ok), float(start), float(every)], dtype=torch.float64, device=_device())
    dist.broadcast(t, src=0)
    v = t.tolist()
    return v[0] > 0, int(v[1]), int(v[2])


# ---- rank 0: the recorder, with reduced statistics and shared controls -------------------------
class DDPRecorder(Recorder):
    """Rank 0's recorder (see the module docstring); built by `watch()` under torchrun."""

    def __init__(self, model: nn.Module, run_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(unwrap(model), run_dir, **kwargs)
        self._reduced: dict[str, dict[str, float]] = {}
        self._poll_at = -math.inf
        self._lost = False
        self._exiting = False
        self._old_term: Any = None
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        atexit.register(self._at_exit)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        """torchrun stops the job (a rank failed): unwind, so the run is closed as crashed. Once the
        run is closing (a collective already failed, or the interpreter is exiting) the signal only
        marks it lost: an exit raised inside close() would leave the run reading "running"."""
        self._lost = True
        if self._closed or self._exiting:
            return
        raise SystemExit(128 + signum)

    def _at_exit(self) -> None:
        self._exiting = True
        if not self._closed and (self._lost or getattr(sys, "last_value", None) is not None):
            self.close("crashed")

    def step(self, loss: float | Tensor | None = None, **metrics: float | Tensor) -> int:
        if self._closed:
            raise RuntimeError("this recorder is closed")
        mine = None if loss is None else _number("loss", loss)
        for k, v in metrics.items():
            _number(k, v)  # the same one-line errors on every rank, before any collective
        try:
            now = time.perf_counter()
            if now - self._poll_at >= self.poll_every:
                self._poll_at = now
                self._poll()
            armed = self._armed  # the probe Recorder armed for this step (stats or snapshot)
            trace = armed.trace if armed is not None and armed.passes > self._armed_passes else None
            batch = _batch_size(trace) if trace is not None else 0
            stats_step = trace is not None and self.step_index % self.every == 0
            parts = partials(trace, batch) if stats_step and trace is not None else None
            got = exchange(self.paused, mine, batch, parts, finish=True)
            self._reduced = got.stats
            self._examples += got.batch - batch  # Recorder.step adds this rank's batch: count the global one
            step = super().step(loss=got.loss, **metrics)
            if got.paused:
                self._hold()
        except BaseException as exc:
            self._lost = True
            self.close(ending(type(exc)))
            raise
        return step

    def handle_controls(self) -> None:
        """Controls are polled by `step()` before its all_gather (so every rank pauses together)."""

    def _poll(self) -> None:
        for ctrl in self.writer.poll_controls():
            result = self._apply(ctrl)
            self.writer.ack_control(ctrl.id, self.step_index, result=result)

    def _hold(self) -> None:
        """Paused: every HOLD_S, poll the page and tell the other ranks (blocked in `_flag`)."""
        while True:
            self.writer.set_meta("status", "paused")
            self.writer.commit(max(self.step_index - 1, 0))
            time.sleep(HOLD_S)
            self._poll()
            if not _flag(self.paused and not self._closed):
                break
        self.writer.set_meta("status", "running")

    def _log_stats(self, step: int, trace: Trace) -> None:
        for name, block in trace.items():
            used = block.weight
            current = self._current_weight(block)
            if current is None or used is None or current.shape != used.shape:
                current, used = used, None
            grad = block.grad_weight
            synced = getattr(current, "grad", None) if used is not None else None
            if isinstance(synced, Tensor) and grad is not None and synced.shape == grad.shape:
                grad = synced  # DDP's average over the ranks (the probe saw this rank's own)
            with torch.no_grad():
                own = block_stats(None, None, None, current, grad, used)
            stats = {**self._reduced.get(name, {}), **own}
            if stats:
                self.writer.log_layer_stats(step, name, stats)

    def close(self, status: str = "finished") -> None:
        if self._closed:
            return
        if not self._exiting:
            atexit.unregister(self._at_exit)
        try:
            super().close(status)  # torchrun's SIGTERM meanwhile only marks the run lost (_on_term)
        finally:
            if self._old_term is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._old_term)
                self._old_term = None


# ---- ranks > 0: statistics only, no store ------------------------------------------------------
class Follower(Recorder):
    """A rank > 0 under `watch()`: contributes its share of the statistics and follows rank 0's
    pauses; opens no store and writes nothing (it has no `writer`)."""

    def __init__(self, model: nn.Module, *, start: int, every: int, layers: list[str] | None) -> None:
        # Recorder.__init__ is not called: it would open the run
        self.model = unwrap(model)
        self.step_index = start
        self._every = every
        self.paused = False
        self._closed = False
        self._seen_passes = 0
        self.light: LightHooks | None = None  # after the first probed pass (ddp_hooks.py)
        self.probe = Probe(self.model, layers, keep=FOLLOWER_KEEP)
        self.probe.__enter__()

    @property
    def every(self) -> int:
        return self._every

    def step(self, loss: float | Tensor | None = None, **metrics: float | Tensor) -> int:
        if self._closed:
            raise RuntimeError("this recorder is closed")
        mine = None if loss is None else _number("loss", loss)
        for k, v in metrics.items():
            _number(k, v)
        wanted = self.step_index % self.every == 0
        parts: Partials | None = None
        batch = 0
        if self.light is not None:
            if self.light.fresh:
                batch = self.light.batch
                if wanted:
                    parts = Partials()
                    for name, items in self.light.take():
                        parts.add_items(name, items)
                self.light.fresh = False
        elif self.probe.passes > self._seen_passes:
            self._seen_passes = self.probe.passes
            trace = self.probe.trace
            batch = _batch_size(trace)
            parts = partials(trace, batch) if wanted else None
            self._lighten(trace)
        got = exchange(False, mine, batch, parts, finish=False)
        step = self.step_index
        self.step_index += 1
        if self.light is not None:
            self.light.active = self.step_index % self.every == 0
        paused = got.paused
        while paused:
            self.paused = True
            paused = _flag(False)
        self.paused = False
        return step

    def _lighten(self, trace: Trace) -> None:
        """Swap the full probe for module hooks once the blocks are known (when they can be)."""
        plan = LightHooks.plan(self.model, trace)
        if plan is not None:
            self.probe.close()
            self.light = LightHooks(self.model, plan)

    def handle_controls(self) -> None:
        """Rank 0 reads the controls; this rank follows them in `step()`."""

    def swap_model(self, model: nn.Module) -> None:
        raise RuntimeError("swap_model is for the built-in trainer, which does not run under torchrun")

    def close(self, status: str = "finished") -> None:
        if not self._closed:
            self._closed = True
            try:
                self.probe.close()
            finally:
                if self.light is not None:
                    self.light.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _batch_size(trace: Trace) -> int:
    for block in trace.values():
        for t in (block.x, block.a, block.z):
            if t is not None and t.dim() >= 1:
                return int(t.shape[0])
    return 0


def watch_ddp(model: nn.Module, run_dir: str | Path, rank: int, **kwargs: Any) -> Recorder:
    """`watch()` on one rank of a process group: rank 0 records, the others follow (one handshake)."""
    every = int(kwargs.get("every", 1))
    if rank == 0:
        try:
            rec = DDPRecorder(model, run_dir, **kwargs)
        except BaseException:
            _handshake(False, 0, every)
            raise
        _handshake(True, rec.step_index, rec.every)
        return rec
    ok, start, every = _handshake(False, 0, every)
    if not ok:
        raise RuntimeError("rank 0 could not open the run (its own error says why); this rank stops too")
    return Follower(model, start=start, every=every, layers=kwargs.get("layers"))

