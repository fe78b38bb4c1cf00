"""Where a step is longer than 0.25 s the recorder wants statistics on every step: the maps'
statistics (z, a, dL/da) come first, the weights' side (‖W‖, ‖dL/dW‖, the update ratio) as often
as the rest of the budget pays for it (train/recorder_budget.py MAPS). Made-up costs with
hand-worked answers, then a real recorder whose steps of each kind are checked against an oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from train.test_recorder_budget import _net, _twin_step  # the net and its hand-written oracle step

from convscope.capture import count_hooks
from convscope.runs import RunReader
from convscope.train import watch
from convscope.train.recorder_budget import MAPS, PLAIN, SNAPSHOT, STATS, WEIGHTS_FLOOR, Budget
from convscope.train.recording_tally import Tally, describe

# Share 1/8 of 8-second loops: a step earns 1, less a plain step's own 0.125. The first snapshot's
# cost is a one-time one (no estimate): the picture pool's cap is 0, so all 0.875 reach statistics.
COSTS = {PLAIN: 0.125, STATS: 2.125, SNAPSHOT: 4.125, MAPS: 0.625}  # the weights' side: 1.5 of the 2


def _run(costs: dict[str, float], steps: int, step_s: float, diagnose_every: int = 0,
         sample_s: float = 0.0) -> tuple[str, list[float], Budget, list[int]]:  # fmt: skip
    """Plans of `steps` steps (S, M, . and the snapshot's S), the statistics pool after each, the
    budget, and the steps that had a diagnosis sample (costing `sample_s`)."""
    b = Budget(0.125, snapshot_every=1e9, every=1, diagnose_every=diagnose_every)
    plans, pools, sampled = [], [], []
    for step in range(steps):
        kind = b.plan(step, now=float(step), step_s=step_s)
        if kind == SNAPSHOT:
            b.last_snapshot = float(step)
        d = 0.0
        if kind != MAPS and kind != PLAIN and diagnose_every and b.diagnose(step, step_s):
            d = sample_s
            sampled.append(step)
        plans.append("." if kind == PLAIN else kind[0].upper())
        b.observe(kind, 8.0 if step else None, costs[kind] + d, diagnosis_s=d)
        pools.append(b.stats_pool)
    return "".join(plans), pools, b, sampled


def test_long_steps_have_the_maps_statistics_every_step_and_the_weights_side_when_the_pool_holds_it() -> None:
    """1-second steps. 0: the snapshot; 1, 2: statistics (the first is its kind's one-time cost: no
    estimate; the second measures 2): the pool nets 0.875 - 2 = -1.125; 3, 4: plain (-0.25, 0.625);
    5-8: the maps' statistics (5: one-time, no estimate; 6 on: 0.5): each nets 0.375, to 2.125 at
    8, which holds the whole statistics' 2: step 9 has them (2.125 + 0.875 - 2 = 1.0), and so on:
    three steps of the maps' statistics, one with the weights' side, none without statistics."""
    plans, pools, b, _ = _run(COSTS, 16, step_s=1.0)
    assert plans == "SSS..MMMMSMMMSMM"
    assert pools == pytest.approx([0.0, 0.0, -1.125, -0.25, 0.625, 1.0, 1.375, 1.75, 2.125,
                                   1.0, 1.375, 1.75, 2.125, 1.0, 1.375, 1.75], abs=1e-9)  # fmt: skip
    assert (b.estimate(STATS), b.estimate(MAPS)) == pytest.approx((2.0, 0.5))
    t = b.total
    assert (t.steps, t.stats_steps, t.weight_steps, t.stats_skipped) == (16, 14, 5, 2)
    assert "per-layer statistics on 14 of 16 steps (‖W‖, ‖dL/dW‖ and the update ratio on 5 of them)" in describe(0.125, t)


def test_short_steps_never_leave_out_the_weights_side() -> None:
    """The same costs on 0.1-second steps (statistics wanted every 0.25 s, not every step): a
    statistics step has the weights' side or none is taken, as before."""
    plans, _, b, _ = _run(COSTS, 16, step_s=0.1)
    assert plans == "SSS....S.S..S.S."
    assert b.total.weight_steps == b.total.stats_steps == 7
    assert "‖W‖" not in describe(0.125, b.total)


def test_the_weights_side_comes_at_least_every_eighth_statistics_step_and_may_owe_its_cost() -> None:
    """The maps' statistics cost 0.725 (own 0.85), 0.15 less than a step earns: eight of them (5-12)
    bring the pool to 1.825, short of the whole statistics' 2. After WEIGHTS_FLOOR (8) of them the
    weights' side is due, and the pool may owe one step's weights' side (2 - 0.725 = 1.275): it
    needs 0.725, so step 13 has the whole statistics (1.825 + 0.875 - 2 = 0.7) and no step is
    left plain: the pool earns 8 x 0.15 = 1.2 over the next eight, what the weights' side costs
    beyond the maps' (1.275) less the 0.075 it still owes."""
    assert WEIGHTS_FLOOR == 8
    plans, pools, b, _ = _run({**COSTS, MAPS: 0.85}, 32, step_s=1.0)
    assert plans == "SSS..MMMMMMMMSMMMMMMMMSMMMMMMMMS"
    assert b.estimate(MAPS) == pytest.approx(0.725)
    assert pools[12:14] == pytest.approx([1.825, 0.7]) and pools[21:23] == pytest.approx([1.9, 0.775])


def test_maps_that_take_all_a_step_earns_leave_a_step_plain_for_the_weights_side() -> None:
    """The maps' statistics cost 0.875, all a step earns: the pool stays at 0.625 (5-12). The
    weights' side is then due and needs the pool to hold 2 - 1.125 (what it may owe) = 0.875: step
    13 is plain (1.5), 14 has the whole statistics (0.375), and so on: one step in ten without
    statistics keeps the recorder within its share."""
    plans, pools, _, _ = _run({**COSTS, MAPS: 1.0}, 24, step_s=1.0)
    assert plans == "SSS..MMMMMMMM.SMMMMMMMM."
    assert pools[12:15] == pytest.approx([0.625, 1.5, 0.375]) and pools[22:] == pytest.approx([0.375, 1.25])


def test_an_overdue_diagnosis_sample_is_saved_for_while_the_maps_statistics_go_on() -> None:
    """A sample (cost 3) wanted on every statistics step: 0 and 1 have one (the first ones are
    taken while the costs are learnt; the pool goes to -3). Later ones would delay statistics, so
    they wait (6, 13, 17, 21); after 4 waits (DIAGNOSIS_FLOOR x 1) the weights' side waits until the
    pool holds both costs (2 + 3) while the maps' statistics go on (22-29: the pool climbs by 0.375
    a step to 4.0); the 8th of them in a row (WEIGHTS_FLOOR) makes step 30 one with the whole
    statistics at their own cost, and the pool holds the overdue sample's 3 too: it is taken there
    (4.0 + 0.875 - 2 - 3 = -0.125)."""
    plans, pools, _, sampled = _run(COSTS, 31, step_s=1.0, diagnose_every=1, sample_s=3.0)
    assert plans == "SS....S.MMMMMSMMMSMMMSMMMMMMMMS"
    assert sampled == [0, 1, 30]
    assert pools[29] == pytest.approx(4.0) and pools[30] == pytest.approx(-0.125)


def test_the_pictures_keep_their_third_of_a_long_steps_earnings() -> None:
    """A plain step nets 0.875; with a picture pool that has room (a snapshot estimated at 10) it
    gives 1/3 to pictures and 2/3 to statistics whether the step is long (the maps' statistics
    may come first) or short: the maps' statistics come first within the statistics' part."""
    got = []
    for step_s in (1.0, 0.1):
        b = Budget(0.125, snapshot_every=1e9, every=1, diagnose_every=0)
        b.last_snapshot = 0.0
        b.costs.own[MAPS].extend([0.625] * 3)
        b.costs.own[STATS].extend([2.125] * 3)
        b.costs.own[SNAPSHOT].extend([10.125] * 3)
        b.costs.plain_own.extend([0.125] * 3)
        b.costs.plain_loop.extend([8.0] * 3)
        b.costs.update()
        assert (b.estimate(MAPS), b.estimate(STATS), b.estimate(SNAPSHOT)) == pytest.approx((0.5, 2.0, 10.0))
        b.observe(PLAIN, 8.0, 0.125)
        assert b.plan(2, 2.0, step_s=step_s) == (MAPS if step_s == 1.0 else PLAIN)  # 0.583 holds the maps' 0.5
        got.append((b.stats_pool, b.picture_pool))
    assert got == [pytest.approx((0.875 * 2 / 3, 0.875 / 3))] * 2


def test_no_budget_never_leaves_out_the_weights_side() -> None:
    b = Budget(None, snapshot_every=1e9, every=1, diagnose_every=0)
    b.last_snapshot = 0.0
    assert {b.plan(s, float(s), step_s=5.0) for s in range(5)} == {STATS}
    assert Tally(steps=3, stats_steps=3, weight_steps=3).as_dict()["weight_stats_steps"] == 3


# ---- a real recorder -----------------------------------------------------------------------------
WEIGHT_KEYS = {"weight_norm", "grad_weight_norm", "update_ratio"}


@pytest.mark.parametrize("fail", [False, True])
def test_a_recorder_writes_the_maps_statistics_exactly_and_no_weights_side_on_their_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    """Steps planned as the maps' statistics (every odd one, scripted) hold z's, a's and dL/da's
    numbers equal to the oracle's and none of the weights' side; the others hold all of them. The
    run says how many steps had the weights' side; no hook is left and the weights are the twin's,
    also when a forward raises on a maps step (the steps before it are kept)."""
    script = iter([MAPS if s % 2 else STATS for s in range(1, 20)])  # (step 0: a snapshot, armed at the start)

    def plan(self: Budget, step: int, now: float, step_s: float = 0.0) -> str:
        self.coast(step, now)
        return next(script)

    monkeypatch.setattr(Budget, "plan", plan)
    model, twin = _net(), _net()
    opt, opt_twin = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, twin))
    expected: dict[int, dict[str, Any]] = {}
    gen = torch.Generator().manual_seed(1)
    raised = False
    with watch(model, tmp_path / "run", commit_every=0.0) as run:
        for i in range(6):
            x, y = torch.randn(4, 1, 4, 4, generator=gen), torch.tensor([0, 1, 2, 1])
            if fail and i == 5:
                with pytest.raises(RuntimeError, match=r"shapes cannot|mat1"):
                    model(torch.randn(4, 1, 5, 5))  # a wrong batch inside a maps step's probe
                raised = True
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss)
            expected[i], _ = _twin_step(twin, opt_twin, x, y)  # (the oracle: the step written out by hand)
        rec: Any = run.budget.report(reset_window=False)
    assert raised == fail
    assert count_hooks(model) == 0
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    with RunReader(tmp_path / "run") as r:
        rows = {row["step"]: row for row in r.layer_stats(layer="0")}
        assert [s for s, _ in r.scalars()["loss"]] == list(range(6))
    assert sorted(rows) == list(range(6))
    for s, row in rows.items():
        want = expected[s] if s % 2 == 0 else {k: v for k, v in expected[s].items() if k not in WEIGHT_KEYS}
        assert set(want) <= set(row) and not (s % 2 and WEIGHT_KEYS & set(row)), (s, sorted(row))
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (s, key)
    total = rec["total"]
    assert (total["steps"], total["stats_steps"], total["weight_stats_steps"]) == (6, 6, 3)
    assert "(‖W‖, ‖dL/dW‖ and the update ratio on 3 of them)" in rec["note"]
