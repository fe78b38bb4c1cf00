"""The recorder's budget (train/recorder_budget.py) on made-up costs with hand-worked answers, and
the skip accounting a real recorder writes into the run."""

from __future__ import annotations

import itertools
import math
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torch.optim.optimizer as optim_hooks
from torch import Tensor, nn

from convscope.analysis import block_stats
from convscope.capture import Probe, count_hooks
from convscope.runs import RunReader, RunWriter
from convscope.train import coasting as coasting_rules
from convscope.train import recorder_budget, watch
from convscope.train.recorder_budget import MAPS, PLAIN, SNAPSHOT, STATS, WEIGHTS_FLOOR, Budget
from convscope.train.recorder_costs import Costs

MS = 1e-3


def test_first_steps_worked_out_by_hand() -> None:
    """Share 1/8 of 8-second loops (earns 1 per step); a plain step's recorder work 0.125, a
    statistics step's 1.125 (1 more), the first snapshot 4.125. Pictures never fall due again."""
    b = Budget(0.125, snapshot_every=100.0, every=1, diagnose_every=0)
    costs = {PLAIN: 0.125, STATS: 1.125, SNAPSHOT: 4.125}
    plans, pools = [], []
    for step in range(10):
        plans.append(b.plan(step, now=float(step)))
        if plans[-1] == SNAPSHOT:
            b.last_snapshot = float(step)
        b.observe(plans[-1], 8.0 if step else None, costs[plans[-1]])
        pools.append(b.stats_pool)
    # 0: the first step is a snapshot; its one-time cost is no estimate, so nothing is known yet and
    #    nothing is owed; 1: a statistics step (cost unknown) is its kind's first too; 2: measured:
    #    est 1.125 (no plain step yet), the pool nets 1 - 1.125 = -0.125; 3-4: plain, each nets
    #    1 - 0.125 = 0.875 (the picture pool is full at 0: it overflows into statistics); 5-9:
    #    statistics cost 1.125 - 0.125 = 1 and earn 0.875: the pool falls by 0.125 a step
    assert plans == [SNAPSHOT, STATS, STATS, PLAIN, PLAIN, STATS, STATS, STATS, STATS, STATS]
    assert pools == pytest.approx([0.0, 0.0, -0.125, 0.75, 1.625, 1.5, 1.375, 1.25, 1.125, 1.0], abs=1e-9)
    assert b.estimate(STATS) == 1.0 and b.picture_pool == pytest.approx(0.0, abs=1e-9)
    t = b.total
    assert (t.steps, t.stats_steps, t.stats_skipped, t.snapshots, t.snapshots_late) == (10, 8, 2, 1, 0)


def test_a_long_run_keeps_within_the_share_and_takes_snapshots_on_time() -> None:
    """10 ms steps; a plain step's recorder work 0.1 ms, statistics 1 ms more and the probe
    0.5 ms of the loop, a snapshot 4 ms: 20 simulated seconds at 3%."""
    b = Budget(0.03, snapshot_every=2.0, every=1, diagnose_every=0)
    snapshot_steps = []
    for step in range(2000):
        now = step / 100  # seconds
        kind = b.plan(step, now)
        loop = 10 * MS + (0.5 * MS if kind != PLAIN else 0.0)
        own = {PLAIN: 0.1 * MS, STATS: 1.1 * MS, SNAPSHOT: 5.1 * MS}[kind]
        if kind == SNAPSHOT:
            b.last_snapshot = now
            snapshot_steps.append(step)
        b.observe(kind, loop if step else None, own)
    t = b.total
    assert snapshot_steps == list(range(0, 2000, 200))  # every 2 s: the picture pool keeps up
    assert (t.cost_s - 5.1 * MS) / t.train_s <= 0.03  # all but the first step's one-time 5.1 ms
    assert t.cost_s / t.train_s > 0.025  # and the budget is used, not hoarded
    assert t.stats_steps + t.stats_skipped == t.steps
    # 3% of 20 s = 600 ms: 2000 plain parts of 0.1 ms, 10 snapshots of 5.5 ms, and the remaining
    # 345 ms for statistics steps of 1.5 ms (1 ms + the probe's 0.5 ms): about 230 of them
    assert 220 <= t.stats_steps <= 245


def test_no_budget_runs_everything_on_schedule() -> None:
    b = Budget(None, snapshot_every=1.0, every=3, diagnose_every=2)
    kinds, diagnosed = [], []
    for step in range(7):
        kinds.append(b.plan(step, now=0.25 * step))
        if kinds[-1] == SNAPSHOT:
            b.last_snapshot = 0.25 * step
        if kinds[-1] != PLAIN:
            diagnosed.append(b.diagnose(step))
        b.observe(kinds[-1], 0.01, 0.05)  # the recorder far costlier than training: no matter
    assert kinds == [SNAPSHOT, PLAIN, PLAIN, STATS, SNAPSHOT, PLAIN, STATS]
    assert diagnosed == [True, True, False, True]  # steps 0, 3, (4: 1 step after 3), 6
    assert b.total.stats_skipped == 0 and b.total.diagnosis_skipped == 0


def test_bad_budget_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"budget must be a share of the step time in \(0, 1\) or None, got 1.5"):
        Budget(1.5)


class Clocks:
    """Wall and CPU clocks that move only when told (plus `tick` per CPU reading)."""

    def __init__(self, tick: float) -> None:
        self.wall_t, self.cpu_t, self.tick = 0.0, 0.0, tick

    def wall(self) -> float:
        return self.wall_t

    def cpu(self) -> float:
        self.cpu_t += self.tick
        return self.cpu_t

    def train(self, seconds: float) -> None:
        self.wall_t += seconds
        self.cpu_t += seconds


def _net(inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, clocks: Clocks) -> tuple[Tensor, Tensor, Tensor]:
    """One SGD step of `_net()` on a random batch, 10 ms on the made-up clocks: (x, y, loss)."""
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    clocks.train(10 * MS)
    return x, y, loss


def _on_made_up_clocks(run: Any, clocks: Clocks, stats_ms: float = 0.0, plan_ms: float = 0.0) -> None:
    """`run` on `clocks` (no writer-thread or hook cost given); each statistics step costs it
    `stats_ms` more of its CPU, and a full step `plan_ms` more than a coasting one."""
    run._clock, run._cpu, run._hook_s = clocks.wall, clocks.cpu, 0.0
    run._thread_cpu = clocks.cpu
    log_stats, observe_coasted = run._log_stats, run._observe_coasted

    def costly_stats(*args: object) -> None:
        clocks.cpu_t += stats_ms * MS
        log_stats(*args)

    def dear_plan(*args: Any) -> Any:
        clocks.cpu_t += plan_ms * MS
        return observe_coasted(*args)

    if stats_ms:
        run._log_stats = costly_stats
    if plan_ms:
        run._observe_coasted = dear_plan


def _twin_step(twin: nn.Sequential, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> tuple[dict[str, float], Tensor]:
    """The oracle: `_net()`'s step written out by hand on a twin (autograd.grad for dL/da), and the
    statistics of its first block by block_stats; (those, z)."""
    w_before = twin[0].weight.detach().clone()
    z = F.conv2d(x, twin[0].weight, twin[0].bias, padding=1)
    a = torch.relu(z)
    t_loss = F.cross_entropy(twin[3](a.flatten(1)), y)
    g_a, g_w = torch.autograd.grad(t_loss, [a, twin[0].weight], retain_graph=True)
    opt.zero_grad()
    t_loss.backward()
    opt.step()
    return block_stats(a, z, g_a, twin[0].weight.detach(), g_w, w_before, relu=True), z.detach()


def test_the_recorder_says_what_it_skipped_and_what_it_kept_is_exact(tmp_path: Path) -> None:
    """A recorder whose every look at the CPU clock costs 1 ms on 10 ms steps is over a 3% budget:
    it skips statistics (it keeps the first step's, and some while it learns what they cost: here
    no more clock looks than a plain step, and how many depends on the run writer thread's real CPU),
    records the loss on every step, and says so in json "recording"; the statistics it kept are exact."""
    clocks = Clocks(tick=1 * MS)
    model, twin = _net(), _net()
    opt, opt_twin = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    expected = {}
    with watch(model, tmp_path / "run", commit_every=0.0) as run:
        run._clock, run._cpu, run._thread_cpu = clocks.wall, clocks.cpu, clocks.cpu  # before the first step: the budget's clocks
        for i in range(8):
            x, y, loss = _train_step(model, opt, clocks)
            run.step(loss=loss)
            expected[i], _ = _twin_step(twin, opt_twin, x, y)
    assert count_hooks(model) == 0
    with RunReader(tmp_path / "run") as r:
        rows = {row["step"]: row for row in r.layer_stats(layer="0")}
        assert [s for s, _ in r.scalars()["loss"]] == list(range(8))  # the loss: every step
        step, rec = r.json("recording")  # type: ignore[misc]
    kept = sorted(rows)
    assert kept[0] == 0 and len(kept) < 8  # the first step (a snapshot, with statistics and a diagnosis sample)
    for s, row in rows.items():
        for key, value in expected[s].items():
            assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (s, key)
    assert step == 7 and rec["budget"] == 0.03
    total = rec["total"]
    assert (total["steps"], total["stats_steps"], total["stats_skipped"], total["snapshots"]) == (8, len(kept), 8 - len(kept), 1)
    assert total["cost_share"] > 0.03
    assert "per-layer statistics on" in rec["note"] and "to keep recording within 3% of the step time" in rec["note"]
    assert rec["total_note"].startswith(f"per-layer statistics on {len(kept)} of 8 steps")  # the whole run's (the page's second line)


def _seen(*steps: tuple[int, str, float, float], snapshot_every: float = 1e9) -> Budget:
    """A Budget (share 1/10, a snapshot taken at 0) that observed `steps`: (count, kind, loop, own)."""
    b = Budget(0.1, snapshot_every=snapshot_every, every=1, diagnose_every=0)
    b.last_snapshot = 0.0
    for count, kind, loop, own in steps:
        for _ in range(count):
            b.observe(kind, loop, own)
    return b


def test_background_work_is_charged_to_the_recorder_not_the_training() -> None:
    """Share 1/10 of 10-second loops: a plain step earns 1 less its own 0.25. A second of the
    writer thread's CPU inside the loop's time is the recorder's: the training earned 0.9, and
    0.25 + 1 is spent: the step nets -0.35 where the step without it netted 0.75."""
    b = _seen((2, STATS, 10.0, 2.25))  # a statistics estimate (2.25), so the pools have room (twice that)
    before, train, cost = b.stats_pool + b.picture_pool, b.total.train_s, b.total.cost_s
    b.observe(PLAIN, 10.0, 0.25)
    plain = b.stats_pool + b.picture_pool
    assert plain - before == pytest.approx(0.75)
    b.observe(PLAIN, 10.0, 0.25, background_s=1.0)
    # (the picture pool, at its floor with no snapshot estimate, keeps 0: statistics pay 2/3 of it)
    assert (b.stats_pool + b.picture_pool - plain, b.picture_pool) == pytest.approx((-0.35 * 2 / 3, 0.0))
    assert (b.total.train_s - train, b.total.cost_s - cost) == pytest.approx((19.0, 1.5))


def test_one_time_costs_of_the_first_probed_steps_do_not_hold_statistics_back() -> None:
    """Plain loops of 10 s, own 0.25. The first statistics step's loop is 30 s (its first probe
    pass; charged, no sample), the second's 16 s (the heap growing to its new peak: a sample of 6),
    then 10.5 s (0.5) from the third on. Own 1.25 each (1 more than plain). An estimate from fewer
    than three samples is their smallest, so the 6 holds statistics back only until a usual step is
    seen: 1 + 6, then 1 + min(6, 0.5), then the median of (6, 0.5, 0.5)."""
    b = _seen((3, PLAIN, 10.0, 0.25))
    estimates = []
    for loop in (30.0, 16.0, 10.5, 10.5):
        cost = b.total.cost_s
        b.observe(STATS, loop, 1.25)
        assert b.total.cost_s - cost == pytest.approx(1.25 + loop - 10.0)  # the whole overhead is charged
        estimates.append(b.estimate(STATS))
    # (own: the first statistics step gives no sample either; until then nothing more than plain is known)
    assert estimates == pytest.approx([0.0, 1.0 + 6.0, 1.0 + 0.5, 1.0 + 0.5])
    assert list(b.costs.overhead[STATS]) == pytest.approx([6.0, 0.5, 0.5])


def test_a_probed_step_is_charged_the_median_overhead_not_its_own_swing() -> None:
    """Steady plain loops of 10 s. Probed loops of 10.5, 10.5, then 16 (a swing of the machine):
    from the third sample on the median of the samples (0.5) is charged, not 6; a probed loop
    faster than the plain ones (9) is a sample of -1 (not clamped to 0: the median of clamped
    samples is biased up once most swings fall below the overhead)."""
    b = _seen((3, PLAIN, 10.0, 0.25), (1, STATS, 10.0, 1.25))  # (a kind's first step: no sample)
    charged = []
    for loop in (10.5, 10.5, 16.0, 9.0):
        cost = b.total.cost_s
        b.observe(STATS, loop, 1.25)
        charged.append(b.total.cost_s - cost - 1.25)
    assert charged == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert list(b.costs.overhead[STATS]) == pytest.approx([0.5, 0.5, 6.0, -1.0])
    assert b.estimate(STATS) == pytest.approx(1.0 + 0.5)


def test_a_second_sample_is_charged_the_smaller_of_the_two() -> None:
    """Steady plain loops of 10 s. A kind's first sample (0.5) is charged whole; a second caught in
    a swing of the machine (16 s: 6) is charged the smaller of the two, 0.5, not 6 (on a big net
    one such charge sank the statistics pool for six steps: docs/speed.md)."""
    b = _seen((3, PLAIN, 10.0, 0.25), (1, STATS, 10.0, 1.25))  # (a kind's first step: no sample)
    charged = []
    for loop in (10.5, 16.0):
        cost = b.total.cost_s
        b.observe(STATS, loop, 1.25)
        charged.append(b.total.cost_s - cost - 1.25)
    assert charged == pytest.approx([0.5, 0.5])
    assert list(b.costs.overhead[STATS]) == pytest.approx([0.5, 6.0])
    assert b.estimate(STATS) == pytest.approx(1.0 + 0.5)


def test_the_maps_statistics_are_estimated_at_most_the_whole() -> None:
    """The maps' statistics are part of the whole statistics' work: a maps step whose one sample
    came in a swing (overhead 6, own 0.25 more than plain) is estimated at the whole's 1.5, not
    6.25, so it is planned again and sampled anew; its next samples (0.5, 0.5) bring it down."""
    b = _seen((3, PLAIN, 10.0, 0.25), (3, STATS, 10.5, 1.25), (1, MAPS, 10.0, 0.5), (1, MAPS, 16.0, 0.5))
    assert list(b.costs.overhead[MAPS]) == pytest.approx([6.0])
    assert b.estimate(STATS) == pytest.approx(1.5)
    assert b.estimate(MAPS) == pytest.approx(1.5)  # (6.25 uncapped)
    b.observe(MAPS, 10.5, 0.5)
    b.observe(MAPS, 10.5, 0.5)
    assert b.estimate(MAPS) == pytest.approx(0.25 + 0.5)
    assert _seen((3, PLAIN, 10.0, 0.25), (2, MAPS, 16.0, 0.5)).estimate(MAPS) == pytest.approx(6.25)  # (no whole known)


def test_the_timed_reductions_are_the_least_overhead_charged() -> None:
    """Steady plain loops: the median sample (0.5) is charged where the reductions timed in the
    loop took less (0.2), the timed 0.8 where they took more. Plain loops that swing (7 and 13 s:
    the median of 3 samples cannot resolve a second) are charged the timed 1.0 alone, whatever
    the samples' median (here 3)."""
    b = _seen((3, PLAIN, 10.0, 0.25), (1, STATS, 10.0, 1.25), (2, STATS, 10.5, 1.25))
    for probed, want in ((0.2, 0.5), (0.8, 0.8)):
        cost = b.total.cost_s
        b.observe(STATS, 10.5, 1.25, probed_s=probed)
        assert b.total.cost_s - cost - 1.25 == pytest.approx(want)
    noisy = _seen(*[(1, PLAIN, loop, 0.25) for loop in (7.0, 13.0) * 4], (1, STATS, 10.0, 1.25))
    for loop in (13.0, 13.0, 13.0):
        cost = noisy.total.cost_s
        noisy.observe(STATS, loop, 1.25, probed_s=1.0)
        charged = noisy.total.cost_s - cost - 1.25
    assert _median_of(noisy.costs.overhead[STATS]) == pytest.approx(3.0) and charged == pytest.approx(1.0)
    assert noisy.estimate(STATS) == pytest.approx(1.0 + 1.0)


def test_on_long_steps_a_probed_step_is_charged_its_timed_work_in_the_loop() -> None:
    """Plain loops of 9.5 and 10.5 s, then three probed loops of 12 s whose timed work (the
    reductions, the statistics probe's copy of W) took 1.0, each after a plain loop of 10 (11 plain
    loops: median 10, MAD 0.5; samples of 2). Where plan() saw short steps the samples' median, 2,
    is charged (their standard error, 1.2533 * 0.7413 * sqrt(1/3 + 1/11) = 0.6052, is below the
    timed 1.0); where it saw long ones the timed 1.0 is, and no sample is taken (a 1-s loop's swings
    bury what the timed work leaves out), also for planning; a probed step with no timed work is
    sampled as before (2), and a kind's first step is charged whole (2, no sample)."""

    def charged(long: bool, probed_s: float, first: bool = False) -> tuple[float, list[float], float]:
        b = _seen(*[(1, PLAIN, loop, 0.25) for loop in (9.5, 10.5) * 4], *[] if first else [(1, STATS, 10.0, 1.25)])
        b.plan(9, 100.0, step_s=10.0 if long else 0.1)
        for _ in range(3):
            b.observe(PLAIN, 10.0, 0.25)
            cost = b.total.cost_s
            b.observe(STATS, 12.0, 1.25, probed_s=probed_s)
            if first:
                break
        return b.total.cost_s - cost - 1.25, len(b.costs.overhead[STATS]), b.estimate(STATS) - 1.0

    assert charged(False, 1.0) == pytest.approx((2.0, 3, 2.0))  # (each sample 2)
    assert charged(True, 1.0) == pytest.approx((1.0, 0, 1.0))
    assert charged(True, 0.0) == pytest.approx((2.0, 3, 2.0))
    assert charged(True, 1.0, first=True)[:2] == pytest.approx((2.0, 0))


def _median_of(values: deque[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2]


def test_the_writer_threads_snapshot_work_is_the_pictures_alone() -> None:
    """Share 1/10 of 10-second loops. The writer thread took 2 s for two snapshots (1 s each: a
    sample of a snapshot's cost beyond its step). A plain loop holding 1 s of that work (the
    process clock counts it): the training earned 0.9, not 1; the second is charged to the
    picture pool alone, where a second of other writer work is shared by both pools."""
    b, twin = (_seen((2, STATS, 10.0, 2.25), (3, PLAIN, 10.0, 0.25)) for _ in range(2))
    for x in (b, twin):
        x.picture_cost(2.0, 2)
    assert b.estimate(SNAPSHOT) == pytest.approx(b.estimate(STATS) + 1.0)  # statistics, then writing
    pools = (b.stats_pool, b.picture_pool)
    assert pools == pytest.approx((twin.stats_pool, twin.picture_pool))
    cost, train = b.total.cost_s, b.total.train_s
    twin.observe(PLAIN, 10.0, 0.25)
    b.observe(PLAIN, 10.0, 0.25, pictures_s=1.0)
    # the twin's step netted 1 - 0.25, this one 0.9 - 0.25 to share (1/3 pictures, 2/3 statistics), less 1
    assert b.stats_pool - twin.stats_pool == pytest.approx(-0.1 * 2 / 3)
    assert b.picture_pool - twin.picture_pool == pytest.approx(-0.1 / 3 - 1.0)
    assert (b.total.cost_s - cost, b.total.train_s - train) == pytest.approx((0.25 + 1.0, 9.0))


def test_the_writer_threads_cpu_in_a_probed_loop_is_no_probe_overhead() -> None:
    """Plain loops of 10 s; a statistics step's loop of 11.5 s of which 1 s is the writer thread's
    (a snapshot compressed meanwhile, on the process clock): the probe's overhead is 0.5 s, not
    1.5 s, and that one second is charged once (as background), not twice."""
    b = _seen((3, PLAIN, 10.0, 0.25), (1, STATS, 10.0, 1.25))  # (a kind's first step: no estimate)
    train, cost = b.total.train_s, b.total.cost_s
    b.observe(STATS, 11.5, 1.25, background_s=1.0)
    assert list(b.costs.overhead[STATS]) == pytest.approx([0.5])  # (the first statistics step gave none)
    assert (b.total.train_s - train, b.total.cost_s - cost) == pytest.approx((10.0, 1.25 + 0.5 + 1.0))
    assert b.estimate(STATS) == pytest.approx((1.25 - 0.25) + 0.5)  # own 1 more, overhead 0.5


def test_a_probed_loop_that_did_other_work_is_charged_the_usual_overhead() -> None:
    """Plain loops of 10 s; probed loops of 12 s (overhead 2). Then a probed step whose loop also
    ran something else for 90 s (an evaluation, a pause, another loop between two steps): not a
    probe overhead of 92 s: the usual 2 s is charged and no sample is taken; nor 90 s of training
    the recorder may spend a share of."""
    b = _seen((3, PLAIN, 10.0, 0.25), (3, STATS, 12.0, 1.25))
    cost, train = b.total.cost_s, b.total.train_s
    b.observe(STATS, 102.0, 1.25)
    assert list(b.costs.overhead[STATS]) == pytest.approx([2.0, 2.0])  # (the first statistics step: none)
    assert b.total.cost_s - cost == pytest.approx(1.25 + 2.0)
    assert b.estimate(STATS) == pytest.approx(1.0 + 2.0)
    # and that time is no training the recorder may take 10% of: it earns as 4 usual loops at most
    assert b.total.train_s - train == pytest.approx(4 * 10.0 - 2.0)
    train = b.total.train_s
    b.observe(PLAIN, 100.0, 0.25)
    assert b.total.train_s - train == pytest.approx(4 * 10.0)


def test_within_a_budget_diagnosis_samples_every_fourth_statistics_step() -> None:
    """Statistics on every 10th step: a live-diagnosis sample on the 1st, 5th, 9th of them (not on
    every one, as counting steps alone would give); without a budget every 4th step, as before."""
    b = Budget(0.03, diagnose_every=4)
    b.stats_pool = 1.0  # plenty: no sample waits for the pool
    assert [s for s in range(0, 100, 10) if b.diagnose(s)] == [0, 40, 80]
    free = Budget(None, diagnose_every=4)
    assert [s for s in range(10) if free.diagnose(s)] == [0, 4, 8]


def test_diagnosis_samples_wait_while_they_would_delay_statistics() -> None:
    """Statistics come first (at least every 0.25 s, else on every step): with statistics at 1,
    a sample at 2 and 0.5 reaching the statistics pool a step, a sample is taken only when, both
    paid, the pool is back at 1 within the steps of 0.8 × 0.25 s: 4 steps of 0.05 s (pool ≥ 2), 1
    step of 1 s (pool ≥ 3.5). After 4 × diagnose_every statistics steps without one, a sample is
    taken when the pool holds its cost, and the skipped ones are counted."""
    from convscope.train.recorder_budget import CADENCE_MARGIN, DIAGNOSIS_FLOOR, STATS_EVERY_S

    assert (STATS_EVERY_S, CADENCE_MARGIN, DIAGNOSIS_FLOOR) == (0.25, 0.8, 4)
    b = Budget(0.03, diagnose_every=1)
    b.costs.estimates = {STATS: 1.0, "diagnosis": 2.0, SNAPSHOT: 3.0, "base": 0.0}
    b._income.extend([0.5] * 5)
    b.stats_pool = 1.99
    assert not b.diagnose(0, 0.05)
    b.stats_pool = 2.0
    assert b.diagnose(1, 0.05)
    b.stats_pool = 3.49
    assert not b.diagnose(2, 1.0)
    b.stats_pool = 3.5
    assert b.diagnose(3, 1.0)
    b.stats_pool = 2.0  # holds a sample's cost, not the cadence's: waits 4 statistics steps
    assert [b.diagnose(s, 1.0) for s in range(4, 9)] == [False, False, False, True, False]
    assert (b.total.diagnosis_samples, b.total.diagnosis_skipped) == (3, 6)


def test_plain_ahead_worked_out_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Share 1/10 of 10-second loops, a plain step's own 0.25: at most 0.75 a step to the pools.
    Statistics estimated at 1.5 (own 1.75 - 0.25), snapshots at 3. The k steps that skip planning
    skip the plans that would have seen 1..k more steps' earnings: k is the most steps whose
    earnings still leave the pools short (with a full picture pool, k × 0.75 to statistics)."""
    monkeypatch.setattr(recorder_budget, "STATS_EVERY_S", 20.0)  # steps of 10-13 s are short ones here
    b = _seen((4, PLAIN, 10.0, 0.25), (3, STATS, 10.0, 1.75), (2, SNAPSHOT, 10.0, 3.25), snapshot_every=100.0)
    assert (b.estimate(STATS), b.estimate(SNAPSHOT), b.estimate("base")) == pytest.approx((1.5, 3.0, 0.25))
    b.stats_pool, b.picture_pool = 0.0, 1.5
    assert b.plain_ahead(now=48.0, step_s=10.25) == 1  # 1.5 short: 2 steps would fill it, 1 does not
    b.stats_pool = 0.6
    assert b.plain_ahead(now=48.0, step_s=10.25) == 1  # 0.9 short: 1 step does not fill it
    b.stats_pool = 0.75
    assert b.plain_ahead(now=48.0, step_s=10.25) == 0  # 0.75 short: the next step fills it
    b.stats_pool = -3.0  # in debt (its floor: twice the estimate): 4.5 short, 5 steps; but a
    assert b.plain_ahead(now=48.0, step_s=13.0) == 3  # snapshot is due in 52 s: the 4th step of 13 s
    assert b.plain_ahead(now=48.0, step_s=0.0) == 0  # (no step length known yet: plan each)
    # below its cap (1.5) the picture pool gets its third of a step's 0.75 (0.25), the statistics
    # pool the rest (0.5), and what the picture pool would hold beyond the cap
    b.picture_pool = 0.0  # due now: the picture pool 1.5 short, the statistics pool 3 in debt
    assert b.plain_ahead(now=100.0, step_s=10.25) == 5  # 6 × 0.25 reach the cap, 6 × 0.5 the debt
    b.stats_pool = -0.5
    assert b.plain_ahead(now=100.0, step_s=10.25) == 3  # statistics 2 short: 4 × 0.5 fill it, 3 do not
    b.picture_pool = 1.25  # 0.25 below the cap: from the 2nd step on, 0.75 a step to statistics
    assert b.plain_ahead(now=48.0, step_s=10.25) == 2  # -0.5 + 2 × 0.5 + 0.25 = 0.75 after 2, 1.5 after 3
    b.picture_pool = 0.0
    b.stats_pool = 1.0
    assert b.plain_ahead(now=100.0, step_s=10.25) == 0  # statistics 0.5 short: the next step
    b.stats_pool, b.picture_pool = -3.0, 1.5
    b.observe(PLAIN, 20.0, 0.25)  # a longer loop lately: up to 2 - 0.25 = 1.75 a step
    b.stats_pool = -3.0
    assert b.plain_ahead(now=48.0, step_s=10.25) == 2  # 4.5 / 1.75 = 2.6
    assert Budget(None).plain_ahead(now=0.0, step_s=1.0) == 0  # no budget: every step planned
    # a step that plans costs 0.75 more than one that coasts (Costs.planning_extra): it earns nothing
    b.costs.planned_own.clear()
    b.costs.planned_own.extend([1.0, 1.0, 1.0])
    b.costs.coasted_own.extend([0.25, 0.25])
    assert b.costs.planning_extra() == 0.75
    b.costs.plain_loop.extend([10.0] * 18)  # (the longer loop above gone from the window)
    b.stats_pool, b.picture_pool = 0.0, 1.5
    assert b.plain_ahead(now=48.0, step_s=10.25) == 2  # 1.5 short: 2 coast, the 3rd plans (earning 0)
    b.stats_pool = 0.75
    assert b.plain_ahead(now=48.0, step_s=10.25) == 1  # 0.75 short: 1 coasts (was 0: the next step)
    # and as far as steps that bring the statistics pool what recent ones brought it (the median of
    # _income) leave it short: 1.5 short, and the planning step's 2/3 × 0.75 = 0.5 less, is 2.0
    b._income.clear()
    b._income.extend([0.25] * 5)
    b.stats_pool = 0.0
    assert b.plain_ahead(now=10.0, step_s=10.25) == 7  # 2.0 / 0.25 = 8 steps fill it, 7 do not
    assert b.plain_ahead(now=48.0, step_s=10.25) == 5  # (the snapshot due in 52 s: the 6th step of 10.25 s)
    b.stats_pool = 0.75
    assert b.plain_ahead(now=10.0, step_s=10.25) == 4  # 1.25 / 0.25 = 5
    b.stats_pool = 0.0
    b._income.clear()
    b._income.extend([0.6] * 5)
    assert b.plain_ahead(now=10.0, step_s=10.25) == 3  # 2.0 / 0.6 = 3.3 (the bound: 2)
    b._income.clear()
    b._income.extend([0.25] * 4 + [0.5])  # the last step brought more than the median: 2.0 / 0.5 = 4
    assert b.plain_ahead(now=10.0, step_s=10.25) == 3
    b._income.clear()
    b._income.extend([0.25] * 5)
    b.stats_pool = b.picture_pool = 0.0  # a snapshot due (now=100): it waits for its pool, 1.5 and the
    assert b.plain_ahead(now=100.0, step_s=10.25) == 6  # planning step's 0.25 short at 0.25 a step: 7
    b.picture_pool = 1.5
    assert b.plain_ahead(now=100.0, step_s=10.25) == 0  # its pool full: plan now
    b._income.extend([0.0] * 18)  # recent steps brought nothing: the bound alone
    assert b.plain_ahead(now=10.0, step_s=10.25) == 2
    b.costs.planned_own.clear()
    b.costs.planned_own.extend([0.25] * 3)  # planning costs no more than coasting: the bound alone
    b._income.extend([0.25] * 18)
    assert b.costs.planning_extra() == 0.0 and b.plain_ahead(now=10.0, step_s=10.25) == 1  # (as at the top)


def test_statistics_after_worked_out_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Share 1/10 of 10-second loops, statistics estimated at 1.5, a snapshot due at 100. Where a
    plan costs 0.75 more than coasting, the statistics are armed by the last of k coasting steps: k
    of what recent steps brought the statistics pool (their median, 0.25) fill it, rounded up to a
    step that wants statistics; else 0 (plan as usual)."""
    monkeypatch.setattr(recorder_budget, "STATS_EVERY_S", 20.0)  # steps of 10-13 s are short ones here
    b = _seen((4, PLAIN, 10.0, 0.25), (3, STATS, 10.0, 1.75), (2, SNAPSHOT, 10.0, 3.25), snapshot_every=100.0)
    b.costs.planned_own.clear()
    b.costs.planned_own.extend([1.0, 1.0, 1.0])
    b.costs.coasted_own.extend([0.25, 0.25])
    b._income.clear()
    b._income.extend([0.25] * 5)
    b.stats_pool = 0.0
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 6  # 1.5 / 0.25: statistics on step 16
    assert b.statistics_after(step=10, now=30.0, step_s=10.25) == 0  # the snapshot due within 7 of 10.25 s
    assert b.statistics_after(step=10, now=10.0, step_s=0.0) == 0  # (no step length known yet)
    b.snapshot_every = 1000.0  # (none due from here on)
    b.stats_pool = 0.6
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 4  # 0.9 / 0.25 = 3.6
    b.stats_pool = 0.0
    b._income.append(0.5)  # the last step brought more: still the median (no plan checks the pool again)
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 6
    b._income.clear()
    b._income.extend([0.05] * 5)  # 1.5 / 0.05 = 30 steps: more than COAST_MAX
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 0
    b._income.clear()
    b._income.extend([0.0] * 5)  # recent steps brought nothing
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 0
    b._income.clear()
    b._income.extend([0.25] * 5)
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 6
    assert b.statistics_after(step=10, now=10.0, step_s=25.0) == 0  # long steps: the maps' rule plans
    b.every = 4
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 6  # step 16 wants statistics
    assert b.statistics_after(step=11, now=10.0, step_s=10.25) == 9  # step 17 does not: step 20
    b.stats_pool = 2.0  # the pool holds them, the next step does not want them (plan() said plain)
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 2  # step 12
    b._income.clear()
    b._income.extend([0.0] * 5)  # nothing coming in: the pool could drain meanwhile, so plan as usual
    assert b.statistics_after(step=10, now=10.0, step_s=10.25) == 0
    b.every, b.stats_pool = 1, 0.0
    b.costs.planned_own.clear()
    b.costs.planned_own.extend([0.25] * 3)  # a plan costs no more than coasting: plan as usual
    assert b.costs.planning_extra() == 0.0 and b.statistics_after(step=10, now=10.0, step_s=10.25) == 0
    assert Budget(None).statistics_after(step=0, now=0.0, step_s=1.0) == 0


def test_on_long_steps_the_statistics_earn_a_margin_over_the_maps_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Share 1/10. The maps' statistics cost 0.5 (own 0.25 more than plain, overhead 0.25), the
    whole 1.5. A plain 10-s loop (own 0.25) nets 0.75: 2/3 of it (0.5) to statistics where steps
    are short; where they are long, 1.5 × 0.5 = 0.75 capped at 5/6 of the net (0.625). A 20-s loop
    nets 1.75, whose 2/3 (1.17) is already more than 0.75. (MAPS_MARGIN is 0, off, in watch():
    the statistics' part then stays 2/3.)"""
    assert recorder_budget.MAPS_MARGIN == 0.0
    monkeypatch.setattr(recorder_budget, "MAPS_MARGIN", 1.5)
    got = []
    for step_s, loop in ((0.1, 10.0), (25.0, 10.0), (25.0, 20.0)):
        b = _seen((3, PLAIN, 10.0, 0.25), (3, STATS, 10.5, 1.25), (3, SNAPSHOT, 10.5, 3.25), (3, MAPS, 10.25, 0.5))
        assert (b.estimate(MAPS), b.estimate(STATS)) == pytest.approx((0.5, 1.5))
        b.plan(100, 1.0, step_s=step_s)
        b.stats_pool = b.picture_pool = 0.0
        b.observe(PLAIN, loop, 0.25)
        got += [b.stats_pool, b.picture_pool]
    assert got == pytest.approx([0.5, 0.25, 0.625, 0.125, 1.75 * 2 / 3, 1.75 / 3])


def test_plain_ahead_on_long_steps_stops_where_the_maps_statistics_come(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps longer than STATS_EVERY_S want statistics on every step, and plan() has the maps'
    statistics once the pool holds their cost less the weights' side it may owe (`_long_step`):
    coasting stops there, not at the whole statistics' cost. The numbers of the test above."""
    monkeypatch.setattr(recorder_budget, "STATS_EVERY_S", 20.0)  # steps of 25 s are long, of 10.25 s not
    b = _seen((4, PLAIN, 10.0, 0.25), (3, STATS, 10.0, 1.75), (2, SNAPSHOT, 10.0, 3.25), snapshot_every=100.0)
    b.last_snapshot = 1000.0  # no snapshot due for a while
    b.stats_pool, b.picture_pool = -3.0, 1.5  # 0.75 a step to statistics
    assert b.plain_ahead(now=48.0, step_s=10.25) == 5  # short steps: the whole (1.5) after 6
    assert b.plain_ahead(now=48.0, step_s=25.0) == 3  # the maps' cost unknown (0): a pool of 0 has them, after 4
    assert b.plan(1, 48.0, step_s=25.0) == PLAIN
    b.stats_pool = 0.0
    assert b.plan(1, 48.0, step_s=25.0) == MAPS
    for _ in range(3):
        b.observe(MAPS, 10.0, 1.25)  # the maps' statistics cost 1.0: 0.5 less than the whole
    assert b.estimate(MAPS) == pytest.approx(1.0)
    b.stats_pool, b.picture_pool = -3.0, 1.5
    assert b.plain_ahead(now=48.0, step_s=25.0) == 4  # the maps' 1.0 less the 0.5 owed: 0.5, after 5
    b._maps_since = WEIGHTS_FLOOR  # the weights' side is due: the whole less what is owed, 1.0, after 6
    assert b.plain_ahead(now=48.0, step_s=25.0) == 5


LOOPS_MS = (10.0, 10.5, 9.5, 10.2)  # repeating: the longest is always among the recent ones
PLAIN_OWN_MS = (0.1, 0.08, 0.12, 0.09, 0.11)  # and the cheapest plain step (plain_ahead's premises)


def _simulate(
    coasting: bool, steps: int = 3000, long_steps: bool = False, planning_ms: float = 0.0, **budget: Any
) -> tuple[list[str], Budget, int]:
    """The recorder's order of work on made-up costs: loops of LOOPS_MS, a plain step's recorder
    work PLAIN_OWN_MS (and `planning_ms` more when it plans), statistics 1.1 ms plus the probe's
    0.5 ms of the loop, a snapshot 5.1 ms. A full step observes itself and plans the next;
    coasting (as Recorder.step does), the k steps plain_ahead allows after a plain plan run on it
    and the step after them observes them first (as coasted)."""
    b = Budget(0.03, snapshot_every=2.0, every=1, diagnose_every=0, **budget)
    kinds: list[str] = []
    waiting: list[tuple[int, float, float, float]] = []  # coasted: (step, entered, loop, own)
    walls: deque[float] = deque(maxlen=9)
    t = planned_at = 0.0
    entered: float | None = None
    kind, left, coasts, then = b.plan(0, 0.0), 0, 0, False

    def typical() -> float:  # what plan() is given (0: steps never count as long)
        return _median_of(walls) if long_steps and walls else 0.0

    for step in range(steps):
        loop = LOOPS_MS[step % len(LOOPS_MS)] * MS + (0.5 * MS if kind != PLAIN else 0.0)
        own = {PLAIN: PLAIN_OWN_MS[step % len(PLAIN_OWN_MS)], STATS: 1.1, MAPS: 0.6, SNAPSHOT: 5.1}[kind] * MS
        t += loop if step else 0.0
        kinds.append(kind)
        if coasting and left > 0:
            left -= 1
            coasts += 1
            waiting.append((step, t, loop, own))
            t += own
            if left == 0 and then:  # (Budget.coast_ahead: the last coasting step arms them)
                kind = STATS
            continue
        if kind == PLAIN:
            own += planning_ms * MS
        for s, at, lp, ow in waiting:
            step_s = typical()  # (as plan() had it, before this step's wall)
            if entered is not None:
                walls.append(at - entered)
            entered = at
            b.coast(s, planned_at, step_s)
            planned_at = at
            b.observe(PLAIN, lp, ow, coasted=True)
        step_s = typical()
        if entered is not None:
            walls.append(t - entered)
        entered = t
        if waiting:
            b.coast(step, planned_at, step_s)
        waiting = []
        if kind == SNAPSHOT:
            b.last_snapshot = t
        t += own
        b.observe(kind, loop if step else None, own)
        kind = b.plan(step + 1, t, typical())
        planned_at = t
        left, then = b.coast_ahead(step + 1, t, max(walls, default=0.0)) if coasting and kind == PLAIN else (0, False)
    for s, _, lp, ow in waiting:
        b.coast(s, planned_at, typical())
        b.observe(PLAIN, lp, ow, coasted=True)
    return kinds, b, coasts


def test_coasting_steps_record_what_planning_every_step_records() -> None:
    """With loops no longer than recent ones, skipping the plans plain_ahead vouches for gives the
    very same statistics and snapshot steps, and the same tallies, as planning every step."""
    planned, b1, none = _simulate(coasting=False)
    coasted, b2, coasts = _simulate(coasting=True)
    assert none == 0 and coasts > 1500  # (1946 of 3000)
    assert coasted == planned
    assert b2.total.as_dict() == pytest.approx(b1.total.as_dict())
    assert (b2.stats_pool, b2.picture_pool) == pytest.approx((b1.stats_pool, b1.picture_pool))
    assert planned.count(STATS) > 300 and planned.count(SNAPSHOT) == 16  # every 2 s of 31


def test_a_planning_step_dearer_than_a_steps_earnings_does_not_starve_the_statistics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain step the recorder plans costs 0.25 ms more than one it coasts over (its objects cold
    after the training step), where a step earns ~0.3 ms: reckoned as a shortfall of the planning
    step's earnings (Costs.planning_extra), coasting on what steps bring, and the statistics armed
    by the last coasting step (Budget.statistics_after), they come every ~9 steps; reckoned as free, a pool a step short of its target was planned at step after
    step, each plan costing more than the step earned, and they all but stopped (5 in 3000 steps).
    Both keep within the share."""
    kinds, b, coasts = _simulate(coasting=True, planning_ms=0.25)
    assert b.costs.planning_extra() == pytest.approx(0.25 * MS, abs=0.05 * MS)  # (median 0.35 less 0.12)
    assert kinds.count(STATS) > 320 and coasts > 2400  # (333, 2561; a plan before each: 277, 2259; the
    # bound alone: 236, 2130; free plans: 351)
    assert b.total.cost_s <= 0.0302 * b.total.train_s
    monkeypatch.setattr(Costs, "planning_extra", lambda self: 0.0)
    starved, b0, _ = _simulate(coasting=True, planning_ms=0.25)
    assert starved.count(STATS) < 20  # (5)
    assert b0.total.cost_s <= 0.031 * b0.total.train_s


def test_coasting_records_what_planning_records_with_a_part_left_unseen() -> None:
    """The same with watch()'s fifth left unseen, capped at 0.05 ms a step (it caps every loop here:
    a fifth of 3% of 9.5-10.5 ms is 0.057-0.063 ms): plain_ahead bounds a step's earnings as
    observe() counts them."""
    unseen = {"unseen": 0.2, "unseen_max": 0.05 * MS}
    planned, b1, _ = _simulate(coasting=False, **unseen)
    coasted, b2, coasts = _simulate(coasting=True, **unseen)
    assert coasts > 1000
    assert coasted == planned
    assert b2.total.as_dict() == pytest.approx(b1.total.as_dict())
    assert (b2.stats_pool, b2.picture_pool) == pytest.approx((b1.stats_pool, b1.picture_pool))
    uncapped, _, _ = _simulate(coasting=False, unseen=0.2)
    assert planned.count(STATS) > uncapped.count(STATS) > 200  # the cap leaves more to earn (254, 234)


def test_coasting_records_what_planning_records_on_long_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same where steps count as long (statistics wanted on every step): the maps' statistics
    (0.6 ms) come between the whole ones, and the statistics pool's part of the earnings grows to
    MAPS_MARGIN × their cost (`_to_stats`); plain_ahead bounds it as observe() counts it."""
    monkeypatch.setattr(recorder_budget, "STATS_EVERY_S", 0.005)  # steps of ~10 ms are long
    monkeypatch.setattr(recorder_budget, "MAPS_MARGIN", 1.5)  # (0, off, by default)
    planned, b1, _ = _simulate(coasting=False, long_steps=True)
    coasted, b2, coasts = _simulate(coasting=True, long_steps=True)
    assert coasted == planned and coasts > 100
    assert b2.total.as_dict() == pytest.approx(b1.total.as_dict())
    assert (b2.stats_pool, b2.picture_pool) == pytest.approx((b1.stats_pool, b1.picture_pool))
    assert planned.count(MAPS) > 400 and planned.count(STATS) > 40  # (447 and 61 of 3000)
    monkeypatch.setattr(recorder_budget, "MAPS_MARGIN", 0.0)  # the statistics' part stays 2/3
    two_thirds, _, _ = _simulate(coasting=False, long_steps=True)
    assert planned.count(MAPS) > two_thirds.count(MAPS)  # (419)
    assert planned.count(SNAPSHOT) == two_thirds.count(SNAPSHOT) == 16  # (the pictures still have enough here)


def test_a_recorder_coasts_over_plain_steps_and_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 ms steps, statistics 1 ms, the recorder otherwise free (the CPU clock moves only with the
    training, no writer-thread or hook cost): most steps coast (no planning, accounted for on the
    next full step), and the run records exactly what a recorder that plans every step records:
    the loss at every step, statistics on the same steps, the same tallies."""
    monkeypatch.setattr(RunWriter, "background_cpu_split", property(lambda self: (0.0, 0.0)))
    monkeypatch.setattr(RunWriter, "picture_costs", lambda self: [])
    runs = {}
    for coasting in (True, False):
        clocks = Clocks(tick=0.0)
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses, coasted = [], []
        path = tmp_path / f"run-{coasting}"
        with watch(model, path, snapshot_every=1.0) as run:
            _on_made_up_clocks(run, clocks, stats_ms=1.0)  # statistics cost 1 ms of the recorder's CPU
            coast = run._coast
            run._coast = lambda step, *a, c=coast, seen=coasted: seen.append(step) or c(step, *a)  # type: ignore[method-assign]
            if not coasting:
                run.budget.plain_ahead = lambda now, step_s: 0  # type: ignore[method-assign]
            torch.manual_seed(1)
            for _ in range(300):
                _, _, loss = _train_step(model, opt, clocks)
                losses.append(float(loss.detach()))
                run.step(loss=loss)
        assert count_hooks(model) == 0
        with RunReader(path) as r:
            logged = r.scalars()["loss"]
            stats_steps = sorted({row["step"] for row in r.layer_stats(layer="0")})
            snapshot_steps = r.snapshot_steps("0", "a")
            _, rec = r.json("recording")  # type: ignore[misc]
        assert [s for s, _ in logged] == list(range(300)) and [v for _, v in logged] == pytest.approx(losses)
        runs[coasting] = (len(coasted), stats_steps, snapshot_steps, rec["total"])
    (n_on, stats_on, snaps_on, total_on), (n_off, stats_off, snaps_off, total_off) = runs[True], runs[False]
    assert n_off == 0 and n_on > 100
    assert stats_on == stats_off and snaps_on == snaps_off and total_on == pytest.approx(total_off)
    assert total_on["steps"] == 300 and total_on["stats_steps"] == len(stats_on) > 20


def test_a_coasting_step_arms_the_statistics_where_plans_cost_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 ms steps, statistics 1 ms, and a step that plans 0.3 ms dearer than one that coasts (more
    than the ~0.24 ms a step earns): most statistics steps come right after a coasting step, which
    armed them (Budget.statistics_after), with no plan between; planning before each of them, none
    does, and fewer come. With statistics on every 2nd step only, each comes on an even step (a
    snapshot comes when due, with its statistics).
    Either way the loss is logged at every step, the statistics on the steps the tallies count
    (with the weights' side), no hook is left."""
    monkeypatch.setattr(RunWriter, "background_cpu_split", property(lambda self: (0.0, 0.0)))
    monkeypatch.setattr(RunWriter, "picture_costs", lambda self: [])
    runs = {}
    for armed_by_coasting, every in ((True, 1), (False, 1), (True, 2)):
        clocks = Clocks(tick=0.0)
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses, coasted = [], []
        path = tmp_path / f"run-{armed_by_coasting}-{every}"
        with watch(model, path, snapshot_every=1.0, every=every) as run:
            _on_made_up_clocks(run, clocks, stats_ms=1.0, plan_ms=0.3)  # (a full step's cost beyond coasting)
            coast = run._coast
            run._coast = lambda step, *a, c=coast, seen=coasted: seen.append(step) or c(step, *a)  # type: ignore[method-assign]
            if not armed_by_coasting:
                run.budget.statistics_after = lambda step, now, step_s: 0  # type: ignore[method-assign]
            torch.manual_seed(1)
            for _ in range(600):
                _, _, loss = _train_step(model, opt, clocks)
                losses.append(float(loss.detach()))
                run.step(loss=loss)
            extra = run.budget.costs.planning_extra()
        assert count_hooks(model) == 0 and extra == pytest.approx(0.3 * MS)
        with RunReader(path) as r:
            logged = r.scalars()["loss"]
            rows = r.layer_stats(layer="0")
            snapshot_steps = set(r.snapshot_steps("0", "a"))
            _, rec = r.json("recording")  # type: ignore[misc]
        stats_steps = sorted({row["step"] for row in rows})
        assert [s for s, _ in logged] == list(range(600)) and [v for _, v in logged] == pytest.approx(losses)
        total = rec["total"]
        assert total["steps"] == 600 and total["stats_steps"] == total["weight_stats_steps"] == len(stats_steps)
        unwanted = sum(s % every != 0 for s in snapshot_steps)  # (a snapshot comes when due, with statistics)
        assert total["stats_steps"] + total["stats_skipped"] == 600 // every + unwanted  # each wanted step: one
        assert total["snapshots"] == len(snapshot_steps) and all("update_ratio" in row for row in rows)
        after_coasting = [s for s in stats_steps if s - 1 in set(coasted) and s not in snapshot_steps]
        runs[armed_by_coasting, every] = (stats_steps, len(after_coasting), len(stats_steps) - len(snapshot_steps),
                                          snapshot_steps)  # fmt: skip
    (new, after_new, plain_stats_new, _), (old, after_old, _, _) = runs[True, 1], runs[False, 1]
    assert after_old == 0  # a plan before each (90 statistics steps, 6 of them snapshots)
    assert after_new >= 0.8 * plain_stats_new and len(new) > 1.1 * len(old)  # (97 of 101; 107 with 6 snapshots)
    second, after_second, plain_second, snapshots = runs[True, 2]
    assert all(s % 2 == 0 for s in second if s not in snapshots) and after_second >= 0.8 * plain_second


def _commits_and_statistics(
    path: Path, stats_ms: float, early: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[int], list[int], set[int], int]:
    """600 steps of `_net()` on made-up clocks (10 ms steps, a plan 0.3 ms dearer than coasting,
    statistics `stats_ms`, a snapshot every second); `early`: off, a statistics step commits only
    when a whole commit interval has passed. (commit steps, statistics steps, snapshot steps, full
    plain steps)."""
    monkeypatch.setattr(coasting_rules, "EARLY_COMMIT", 0.5 if early else 0.0)
    clocks = Clocks(tick=0.0)
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    commits: list[int] = []
    full_plain = 0
    with watch(model, path, snapshot_every=1.0) as run:
        _on_made_up_clocks(run, clocks, stats_ms=stats_ms, plan_ms=0.3)
        commit = run._commit
        run._commit = lambda now: commits.append(run.step_index - 1) or commit(now)  # type: ignore[method-assign]
        for _ in range(600):
            _, _, loss = _train_step(model, opt, clocks)
            plan, coasted = run._plan, len(run._coasted)
            run.step(loss=loss)
            full_plain += plan == PLAIN and len(run._coasted) != coasted + 1  # (a full step observes them: [])
    assert count_hooks(model) == 0 and any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with RunReader(path) as r:
        stats_steps = sorted({row["step"] for row in r.layer_stats(layer="0")})
        snapshot_steps = set(r.snapshot_steps("0", "a"))
        assert [step for step, _ in r.scalars()["loss"]] == list(range(600))
    return commits, stats_steps, snapshot_steps, full_plain


@pytest.mark.parametrize("stats_ms", [1.0, 3.0])
def test_statistics_steps_carry_the_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stats_ms: float) -> None:
    """A commit falling due (every 0.25 s) makes a step a full one, which plans anew. A statistics
    step commits once half the interval has passed: statistics that come more often than commits
    (1 ms: every ~6 steps of 10 ms; 3 ms: every ~14) then carry (almost) every commit, fewer steps
    plan, and no fewer statistics come; commits stay within an interval and a step of each other
    (what a kill -9 can lose), and at least half an interval apart except at a snapshot."""
    monkeypatch.setattr(RunWriter, "background_cpu_split", property(lambda self: (0.0, 0.0)))
    monkeypatch.setattr(RunWriter, "picture_costs", lambda self: [])
    carried, full, counts = {}, {}, {}
    for early in (False, True):
        commits, stats, snapshots, full[early] = _commits_and_statistics(tmp_path / f"run-{early}", stats_ms, early, monkeypatch)
        commits = commits[:-1]  # (the last: at close)
        carried[early] = sum(c in set(stats) or c in snapshots for c in commits) / len(commits)
        counts[early] = len(stats)
        assert max(b - a for a, b in itertools.pairwise(commits)) <= 26  # 0.25 s and a step
        apart = [b - a for a, b in itertools.pairwise(commits) if b not in snapshots]  # (a snapshot step commits)
        assert min(apart) >= (13 if early else 25)  # half the interval, 12.5 steps (or the whole)
    assert carried[True] >= 0.9 and carried[False] <= 0.5  # 1 ms: 39 of 39 against 10 of 24; 3 ms: 39 of 41, 7 of 24
    assert full[True] <= 0.5 * full[False]  # 7 against 21; 12 against 29
    assert counts[True] >= counts[False]  # 110 against 107; 44 against 42


def test_a_control_poll_and_a_report_come_with_a_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll of the page's controls, a recording report and a commit each make a step plan (no
    coasting); of the same period (0.25 s), a poll and a commit drifted apart after a snapshot's
    commit and made two such steps every period. One due within the next commit interval now comes
    with the commit: 10 ms steps, a snapshot every 0.7 s (its step commits), every poll and report
    on a commit's step, and none more than a period and a step apart."""
    monkeypatch.setattr(RunWriter, "background_cpu_split", property(lambda self: (0.0, 0.0)))
    monkeypatch.setattr(RunWriter, "picture_costs", lambda self: [])
    clocks = Clocks(tick=0.0)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    commits: list[int] = []
    polls: list[int] = []
    reports: list[int] = []
    with watch(model, tmp_path / "run", snapshot_every=0.7) as run:
        run._clock, run._cpu, run._hook_s = clocks.wall, clocks.cpu, 0.0
        run._thread_cpu = clocks.cpu
        commit, poll, report = run._commit, run.writer.poll_controls, run._report
        run._commit = lambda now: commits.append(run.step_index - 1) or commit(now)  # type: ignore[method-assign]
        run.writer.poll_controls = lambda: polls.append(run.step_index - 1) or poll()  # type: ignore[method-assign]
        run._report = lambda step, now: reports.append(step) or report(step, now)  # type: ignore[method-assign]
        for _ in range(300):
            _, _, loss = _train_step(model, opt, clocks)
            run.step(loss=loss)
    assert len(polls) > 10 and len(reports) > 1 and len(commits) >= len(polls)
    assert set(polls) <= set(commits) and set(reports[:-1]) <= set(commits)  # (the last: at close)
    assert max(b - a for a, b in itertools.pairwise(polls)) <= 26  # 0.25 s and a step
    assert count_hooks(model) == 0


def _observed(run: Any) -> list[tuple[Any, ...]]:
    """Every `run.budget.observe` call from now on, as (kind, loop_s, own_s, diagnosis_s,
    background_s, pictures_s, probed_s); each still reaches the budget."""
    calls: list[tuple[Any, ...]] = []
    observe = run.budget.observe

    def spy(kind: str, loop_s: float | None, own_s: float, diagnosis_s: float = 0.0, background_s: float = 0.0,
            pictures_s: float = 0.0, probed_s: float = 0.0, coasted: bool = False) -> None:  # fmt: skip
        calls.append((kind, loop_s, own_s, diagnosis_s, background_s, pictures_s, probed_s))
        observe(kind, loop_s, own_s, diagnosis_s, background_s, pictures_s, probed_s, coasted=coasted)

    run.budget.observe = spy
    return calls


def test_what_the_writer_does_during_step_is_no_own_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process clock counts the writer thread too, the thread clock in `step()` does not: when
    the writer compresses a snapshot (2 ms) while a statistics step's `step()` runs (its own work 1
    ms), the budget is told own 1 ms and pictures 2 ms (charged to the picture pool), not own 3 ms;
    0.5 ms of other writer work, background."""
    writer = {"all": 0.0, "pictures": 0.0}
    monkeypatch.setattr(RunWriter, "background_cpu_split", property(lambda self: (writer["all"], writer["pictures"])))
    monkeypatch.setattr(RunWriter, "picture_costs", lambda self: [])
    clocks = Clocks(tick=0.0)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, tmp_path / "run", snapshot_every=1e9, budget=None) as run:
        run._clock, run._cpu, run._hook_s = clocks.wall, clocks.cpu, 0.0
        run._thread_cpu = lambda: clocks.cpu() - writer["all"]  # (this thread's: the process's less the writer's)
        log_stats, calls = run._log_stats, _observed(run)

        def busy_stats(*args: object) -> None:  # 1 ms of the recorder, 2.5 ms of the writer meanwhile
            clocks.cpu_t += 1 * MS + 2.5 * MS
            writer["all"] += 2.5 * MS
            writer["pictures"] += 2 * MS
            log_stats(*args)

        run._log_stats = busy_stats  # type: ignore[method-assign]
        for _ in range(3):
            _train_step(model, opt, clocks)
            run.step()
    assert count_hooks(model) == 0
    seen = [(kind, own, background, pictures) for kind, _, own, _, background, pictures, _ in calls]
    kinds = [k for k, *_ in seen]
    assert kinds[1:] == ["stats", "stats"]  # (no budget: statistics every step; the first step a snapshot)
    for _, own, background, pictures in seen[1:]:
        assert (own, background, pictures) == pytest.approx((1 * MS, 0.5 * MS, 2 * MS))


def test_the_probes_reductions_are_timed_on_the_threads_cpu_clock(tmp_path: Path) -> None:
    """The least overhead a statistics step is charged is what its reductions took on the training
    thread's CPU clock (the budget's unit), not on the wall clock (a busy host's preemptions)."""
    with watch(_net(), tmp_path / "run", snapshot_every=1e9) as run:
        run._clock, run._thread_cpu = (lambda: 100.0), (lambda: 7.0)
        assert run._reductions.clock() == 7.0


def test_the_statistics_probes_copy_of_w_before_the_optimizer_step_is_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statistics step's probe copies W before the optimizer step writes into it (capture/cow.py),
    in the training loop: that copy (3 ms here, on the thread's clock) is timed as probe work in the
    loop, beside the reductions (which take no time on this clock): the budget is told 3 ms on each
    statistics step, none on the first step (a snapshot: its probe's copy is not timed, its loop is
    sampled whole). The copy runs on one torch thread (all of its CPU on the timing thread's clock),
    and torch gets its two back after it, also when the copy raises. No optimizer hook is left, on
    close or when a probe cannot be entered."""
    clocks = Clocks(tick=0.0)
    copy, threads_seen = Probe._before_step, []

    def slow_copy(self: Probe, *args: Any) -> None:
        clocks.cpu_t += 3 * MS
        threads_seen.append(torch.get_num_threads())
        copy(self, *args)

    monkeypatch.setattr(Probe, "_before_step", slow_copy)
    optimizer_hooks = len(optim_hooks._global_optimizer_pre_hooks)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with watch(model, tmp_path / "run", snapshot_every=1e9, budget=None) as run:
            run._clock, run._cpu, run._thread_cpu = clocks.wall, clocks.cpu, clocks.cpu
            calls = _observed(run)
            for _ in range(3):
                _train_step(model, opt, clocks)
                assert torch.get_num_threads() == 2
                run.step()
            assert len(optim_hooks._global_optimizer_pre_hooks) == optimizer_hooks + 3  # (the probe's, 2 timing)
        assert count_hooks(model) == 0 and len(optim_hooks._global_optimizer_pre_hooks) == optimizer_hooks
        seen = [(kind, probed) for kind, *_, probed in calls]
        assert seen == [(SNAPSHOT, 0.0), (STATS, pytest.approx(3 * MS)), (STATS, pytest.approx(3 * MS))]
        assert threads_seen == [2, 1, 1]  # (the snapshot probe's copy: torch's threads, untimed)

        def failing_copy(self: Probe, *args: Any) -> None:
            raise RuntimeError("copy failed")

        monkeypatch.setattr(Probe, "_before_step", failing_copy)
        with pytest.raises(RuntimeError, match="copy failed"), watch(model, tmp_path / "run2", budget=None) as run:
            for _ in range(2):
                _train_step(model, opt, clocks)  # (the second step's statistics probe: its copy raises)
                run.step()
        assert torch.get_num_threads() == 2
        assert count_hooks(model) == 0 and len(optim_hooks._global_optimizer_pre_hooks) == optimizer_hooks
        with watch(model, tmp_path / "run3", budget=None) as run:
            monkeypatch.setattr(Probe, "__enter__", lambda self: (_ for _ in ()).throw(RuntimeError("no entry")))
            run._disarm()
            with pytest.raises(RuntimeError, match="no entry"):
                run._arm(STATS)
            assert len(optim_hooks._global_optimizer_pre_hooks) == optimizer_hooks
    finally:
        torch.set_num_threads(threads)


def test_statistics_of_a_z_an_in_place_relu_writes_over_are_exact(tmp_path: Path) -> None:
    """ReLU(inplace=True): a statistics step reads z's min and max just before the ReLU writes over
    it (no copy kept); every recorded number equals block_stats on an independent twin, on the
    statistics steps and on the snapshot step (whose probe keeps z for its pictures)."""
    clocks = Clocks(tick=0.0)
    model, twin = _net(inplace=True), _net()
    opt, opt_twin = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    expected = {}
    with watch(model, tmp_path / "run", budget=None, snapshot_every=1e9, commit_every=0.0) as run:
        run._clock, run._cpu, run._thread_cpu = clocks.wall, clocks.cpu, clocks.cpu
        torch.manual_seed(3)
        for i in range(4):
            x, y, loss = _train_step(model, opt, clocks)
            run.step(loss=loss)
            expected[i], z = _twin_step(twin, opt_twin, x, y)
            assert (z < 0).any()  # z's minimum is not a's
    assert count_hooks(model) == 0
    with RunReader(tmp_path / "run") as r:
        rows = {row["step"]: row for row in r.layer_stats(layer="0")}
    assert sorted(rows) == [0, 1, 2, 3]  # (no budget: every step; step 0 a snapshot)
    for s, row in rows.items():
        for key, value in expected[s].items():
            assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (s, key)


def test_the_part_left_unseen_is_not_earned() -> None:
    """`unseen` = 1/2 of a 1/10 share of 10-second loops: a plain step earns 0.5, not 1, less its
    own 0.25 (watch() leaves a fifth for what it cannot measure of itself)."""
    pools = []
    for unseen in (0.0, 0.5):
        b = Budget(0.1, snapshot_every=1e9, every=1, diagnose_every=0, unseen=unseen)
        b.last_snapshot = 0.0
        b.observe(STATS, 10.0, 2.25)
        b.observe(STATS, 10.0, 2.25)  # (an estimate: the pools have room)
        before = b.stats_pool + b.picture_pool
        b.observe(PLAIN, 10.0, 0.25)
        pools.append(b.stats_pool + b.picture_pool - before)
    assert pools == pytest.approx([0.75, 0.25])
    with pytest.raises(ValueError, match="unseen must be"):
        Budget(0.03, unseen=1.0)
    from convscope.train.watch import UNSEEN, UNSEEN_MAX_S

    assert (UNSEEN, UNSEEN_MAX_S) == (0.2, 0.5e-3)


def test_the_part_left_unseen_is_at_most_unseen_max_a_step() -> None:
    """A 1/10 share, half of it unseen but at most 0.2 s a step: a 10-second loop earns 1 − 0.2
    (not 0.5), a 2-second one 0.2 − 0.1 (the half is under the cap), each less its own 0.05
    (plain_ahead bounds a step's earnings with the same `earned`: the simulation test below)."""
    got = []
    for loop in (10.0, 2.0):
        b = Budget(0.1, snapshot_every=1e9, every=1, diagnose_every=0, unseen=0.5, unseen_max=0.2)
        b.last_snapshot = 0.0
        b.observe(STATS, loop, 2.25)
        b.observe(STATS, loop, 2.25)
        before = b.stats_pool + b.picture_pool
        b.observe(PLAIN, loop, 0.05)
        got.append(b.stats_pool + b.picture_pool - before)
    assert got == pytest.approx([0.8 - 0.05, 0.1 - 0.05])
    b = Budget(0.1, unseen=0.5, unseen_max=0.2)
    assert [b.earned(t) for t in (0.0, 2.0, 4.0, 10.0)] == pytest.approx([0.0, 0.1, 0.2, 0.8])
    with pytest.raises(ValueError, match="unseen_max must be >= 0 seconds"):
        Budget(0.03, unseen_max=-1.0)
    with pytest.raises(ValueError, match="unseen_max must be >= 0 seconds"):
        Budget(0.03, unseen_max=math.nan)
