"""The unit explorer's evolution strip (train/units_live.py) after a restart with another net:
only evo-* checkpoints saved at or after the current net's first step are drawn, counted in
this net's steps; a run whose evo-* checkpoints are all of an earlier net gets no strip and a
one-line note saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.runs import RunReader, RunWriter
from convscope.train.units_live import answer_unit, net_start


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.max_pool2d(F.relu(self.conv1(x)), 2).flatten(1))


def norm(x: Tensor) -> Tensor:
    return (x - 0.5) / 0.25


def commit_steps(w: RunWriter, steps: range) -> None:
    for s in steps:
        w.log_scalars(s, {"loss": 1.0})
        w.commit(s)


def restart_at(w: RunWriter, path: Path, first_step: int) -> None:
    """A `model` control answered as the built-in trainer does: applied at the new net's first step."""
    with RunReader(path) as r:
        ident = r.send_control("model", "zoo:tiny-vgg")
    (ctrl,) = w.poll_controls()
    assert ctrl.id == ident
    w.ack_control(ident, first_step, result={"ok": True, "model": "zoo:tiny-vgg"})


def unit(w: RunWriter, model: nn.Module, step: int) -> dict[str, Any]:
    probe = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ok = answer_unit(model, w, 900 + step, {"layer": "conv1", "channel": 2}, probe, norm, step=step, stimulus_steps=0)
    assert ok["ok"] is True
    w.flush()  # the commit is written by the writer's thread
    with RunReader(w.path) as r:
        found = r.json(f"unit:{900 + step}")
    assert found is not None
    return dict(found[1])


def test_only_checkpoints_of_the_current_net_are_drawn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old, new = Net(), Net()  # the same architecture: the old net's weights would fit the new one
    path = tmp_path / "run"
    w = RunWriter(path)
    try:
        commit_steps(w, range(0, 5))
        w.save_checkpoint(old.state_dict(), "evo-000001")  # at step 4: the old net
        restart_at(w, path, 5)
        commit_steps(w, range(5, 8))
        w.save_checkpoint(new.state_dict(), "evo-000008")  # at step 7: 3 updates of the new net
        commit_steps(w, range(8, 10))
        with RunReader(path) as r:
            assert [c["step"] for c in r.checkpoints()] == [4, 7]
            assert net_start(r.controls(), 9) == 5
            assert net_start(r.controls(), 3) == 0  # before the restart: the first net
        v = unit(w, new, 9)
        assert v["evolution_steps"] == [3]
        assert v["evolution_note"] is None
        with RunReader(path) as r:
            assert r.snapshot("unit:909", "evolution") is not None
    finally:
        w.close()


def test_no_strip_and_a_note_when_every_checkpoint_is_of_an_earlier_net(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old, new = Net(), Net()
    path = tmp_path / "run"
    w = RunWriter(path)
    try:
        commit_steps(w, range(0, 3))
        w.save_checkpoint(old.state_dict(), "evo-000001")  # step 2
        commit_steps(w, range(3, 6))
        w.save_checkpoint(old.state_dict(), "evo-000005")  # step 5
        restart_at(w, path, 6)
        commit_steps(w, range(6, 9))
        before = {k: t.clone() for k, t in new.state_dict().items()}
        v = unit(w, new, 8)
        assert v["evolution_steps"] == []
        assert v["evolution_note"] == (
            "no evolution strip: the run's evo-* checkpoints (steps 3–6) are of the net before the restart at step 6"
        )
        with RunReader(path) as r:
            assert r.snapshot("unit:908", "evolution") is None
        assert all(torch.equal(before[k], t) for k, t in new.state_dict().items())  # weights untouched
    finally:
        w.close()


def test_without_a_restart_every_checkpoint_counts_from_step_0(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Net()
    path = tmp_path / "run"
    w = RunWriter(path)
    try:
        commit_steps(w, range(0, 2))
        w.save_checkpoint(model.state_dict(), "evo-000002")  # step 1
        commit_steps(w, range(2, 5))
        w.save_checkpoint(model.state_dict(), "evo-000005")  # step 4
        v = unit(w, model, 4)
        assert v["evolution_steps"] == [2, 5]
        assert v["evolution_note"] is None
    finally:
        w.close()
