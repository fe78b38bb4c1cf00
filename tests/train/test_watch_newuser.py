"""Issue 9 §1, the training side: the README's watch() loop runs as written and its `acc` is the
accuracy the page draws (items 1, 2); snapshot maps are of one fixed held-out image, checked
against plain autograd (item 8); a measured update/weight ratio held outside [1e-4, 1e-2] is a
live finding (item 10); the built-in trainer goes back to its first zoo net (item 3)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convscope as cs
from convscope.analysis.update_hold import UpdateHold
from convscope.config import TrainConfig
from convscope.runs import RunReader
from convscope.train import Trainer
from convscope.train.watch import Recorder

README = Path(__file__).resolve().parents[2] / "README.md"


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


def test_the_readme_watch_loop_runs_as_written_and_records_its_accuracy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```python\n(run = cs\.watch\(model, \"runs/exp1\".*?)```", README.read_text(), re.S)
    assert block is not None, "the README's watch() snippet moved"
    model = _net()
    twin = copy.deepcopy(model)
    xs = [torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    loader = [(x, torch.tensor([0, 1, 2, 1])) for x in xs]
    monkeypatch.chdir(tmp_path)
    scope = {"cs": cs, "F": F, "model": model, "loader": loader, "acc": 0.75,
             "opt": torch.optim.SGD(model.parameters(), lr=0.1)}  # fmt: skip
    exec(compile(block.group(1), str(README), "exec"), scope)  # the README's own text
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    expected = []
    for x, y in loader:  # the same loop by hand: the accuracy each step should record
        logits = twin(x)
        expected.append(float((logits.argmax(1) == y).float().mean()))
        opt.zero_grad()
        F.cross_entropy(logits, y).backward()
        opt.step()
    with RunReader(tmp_path / "runs" / "exp1") as r:
        got = r.scalars(["train_acc", "loss"])
        assert r.meta()["status"] == "finished"
    assert got["train_acc"] == list(enumerate(expected))  # what the page's accuracy chart reads
    assert len(got["loss"]) == 3


def test_acc_and_train_acc_together_is_one_clear_error(tmp_path: Path) -> None:
    with cs.watch(_net(), tmp_path / "run") as run, pytest.raises(ValueError, match="acc= or train_acc=, not both"):
        run.step(loss=1.0, acc=0.5, train_acc=0.5)


def test_snapshots_show_one_fixed_held_out_image_checked_against_autograd(tmp_path: Path) -> None:
    model, twin = _net(), _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    probe = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    label = torch.tensor([2, 0, 1, 1, 0])
    mean, std = 0.25, 0.5
    run = cs.watch(model, tmp_path / "run", snapshot_every=0.0, probe=probe, probe_transform=lambda x: (x - mean) / std)
    run.probe_labels = label
    for i in range(3):
        x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(i))  # a different batch each step
        y = torch.tensor([0, 1, 2, 1])
        for m, o in ((model, opt), (twin, opt_twin)):
            loss = F.cross_entropy(m(x), y)
            o.zero_grad()
            loss.backward()
            o.step()
        run.step(loss=loss)
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):  # the probe pass touched no .grad
            assert torch.equal(p, q) and p.grad is not None and q.grad is not None and torch.equal(p.grad, q.grad)
    run.close()
    # the oracle: plain autograd on the probe image, in eval mode, loss on its label, the weights after the last step
    x0 = ((probe[:1] - mean) / std).requires_grad_(True)
    with RunReader(tmp_path / "run") as r:
        assert r.meta()["snapshot_example"] == "probe"
        assert r.snapshot_steps("0", "x") == [0, 1, 2]
        xs = [r.snapshot("0", "x", s)[1] for s in (0, 1, 2)]  # type: ignore[index]
        a1 = r.snapshot("0", "a", 2)[1]  # type: ignore[index]
        ga1 = r.snapshot("0", "grad_a", 2)[1]  # type: ignore[index]
    for t in xs:  # the same input at every step
        torch.testing.assert_close(t.float(), x0.detach(), atol=2e-3, rtol=2e-3)
    z = twin[0](x0)
    a = twin[1](z)
    a.retain_grad()
    F.cross_entropy(twin[3](twin[2](a)), label[:1]).backward()
    torch.testing.assert_close(a1.float(), a.detach(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(ga1.float(), a.grad, atol=1e-4, rtol=2e-3)


def test_update_hold_flags_a_ratio_held_out_of_range_and_nothing_else() -> None:
    hold = UpdateHold(hold=3)
    for step, r in enumerate([0.02, 0.03, 0.5e-2, 0.02, 0.04, 0.015]):  # back in range at step 2: starts again
        hold.observe(step, "conv1", r)
    for step, r in enumerate([1e-5, 2e-5, 3e-5]):
        hold.observe(step, "fc", r)
    for step, r in enumerate([1e-3, 2e-2, 1e-5]):  # out on both sides in turn: no streak of 3
        hold.observe(step, "conv2", r)
    found = {f.layer: f for f in hold.findings()}
    assert sorted(found) == ["conv1", "fc"]
    c = found["conv1"]
    assert (c.kind, c.severity, c.evidence["steps"], c.evidence["first_step"], c.evidence["last_step"]) == (
        "update_ratio", "medium", 3, 3, 5)
    assert c.evidence["update_ratio_min"] == 0.015 and c.evidence["update_ratio_max"] == 0.04
    assert c.summary.startswith("conv1's measured update/weight ratio ‖ΔW‖/‖W‖ has stayed above 0.01 for 3 steps")
    assert found["fc"].severity == "low" and "below 0.0001" in found["fc"].summary
    hold.observe(6, "conv1", 1e-3)  # one healthy step ends it
    hold.reset()
    assert hold.findings() == []
    with pytest.raises(ValueError, match="hold must be >= 1"):
        UpdateHold(hold=0)


def test_live_diagnosis_says_when_the_measured_ratio_stays_too_high(tmp_path: Path) -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)  # far too large for this net
    rec = Recorder(model, tmp_path / "run", snapshot_every=1e9, diagnose_every=1, findings_every=0.0, budget=None)
    rec._held.hold = 5
    rec.lr = 0.5
    ratios = []
    for i in range(8):
        x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(i))
        w0 = model[0].weight.detach().clone()
        loss = F.cross_entropy(model(x), torch.arange(8) % 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        w1 = model[0].weight.detach()
        ratios.append(float((w1 - w0).norm() / w1.norm()))
        rec.step(loss=loss)
    rec.close()
    assert min(ratios[:5]) > 1e-2  # the oracle: the ratio the recorder measures, by hand
    with RunReader(tmp_path / "run") as r:
        _, rows = r.json("findings")  # type: ignore[misc]
    held = [f for f in rows if f["kind"] == "update_ratio" and f["layer"] == "0"]
    assert len(held) == 1 and held[0]["evidence"]["measured"] is True
    assert held[0]["message"].startswith("0's measured update/weight ratio ‖ΔW‖/‖W‖ has stayed above 0.01 for")
    assert held[0]["evidence"]["update_ratio_min"] == pytest.approx(min(ratios[: held[0]["evidence"]["steps"]]), rel=1e-3)


SMALL = dict(train_size=64, val_size=16, test_images=2, batch_size=8, val_every=50, snapshot_every=0.0,
             evolution_checkpoints=0)  # fmt: skip


def test_trainer_leaves_and_comes_back_to_its_zoo_net_and_describes_its_input(tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(**SMALL), tmp_path / "run")  # type: ignore[arg-type]
    reader = RunReader(tmp_path / "run")
    trainer.train_step()
    trainer.train_step()
    meta = reader.meta()
    assert meta["input_mean"] == [round(float(v), 5) for v in trainer.data.mean]
    assert meta["input_std"] == [round(float(v), 5) for v in trainer.data.std]
    assert meta["snapshot_example"] == "probe"
    x0, x1 = (reader.snapshot("conv1", "x", s)[1] for s in (0, 1))  # type: ignore[index]
    assert torch.equal(x0, x1)  # the same held-out image at both steps
    torch.testing.assert_close(x0.float(), trainer.data.norm(trainer.data.xval[:1]), atol=1e-2, rtol=1e-3)
    for name in ("tiny-vgg", "convnetjs-cifar"):
        ident = reader.send_control("model", name)
        trainer.recorder.handle_controls()
        trainer.train_step()
        row = reader.control(ident)
        assert row is not None and row["result"] == {"ok": True, "model": name}
    assert next(row["name"] for row in reader.json("layers")[1]) == "conv1"  # type: ignore[index]
    assert trainer.input_shape == (3, 32, 32) and reader.meta()["model"] == "convnetjs-cifar"
    trainer.recorder.close("stopped")
    reader.close()


def test_saving_over_a_name_keeps_both_and_a_load_says_its_step(tmp_path: Path) -> None:
    """Item 4's second half: a taken checkpoint name is versioned, never overwritten; a load says
    which step's weights it loaded."""
    trainer = Trainer(TrainConfig(**SMALL), tmp_path / "run")  # type: ignore[arg-type]
    reader = RunReader(tmp_path / "run")
    trainer.train_step()
    first = reader.send_control("save_checkpoint", "mine")
    trainer.recorder.handle_controls()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step()
    trainer.train_step()
    second = reader.send_control("save_checkpoint", "mine")
    trainer.recorder.handle_controls()
    a, b = reader.control(first), reader.control(second)
    assert a is not None and b is not None
    assert a["result"] == {"ok": True, "name": "mine", "path": str(tmp_path / "run/checkpoints/mine.safetensors"), "step": 0}
    assert b["result"] == {"ok": True, "name": "mine-2", "asked": "mine", "step": 2,
                           "path": str(tmp_path / "run/checkpoints/mine-2.safetensors")}  # fmt: skip
    load = reader.send_control("load_checkpoint", "mine")
    trainer.recorder.handle_controls()
    row = reader.control(load)
    assert row is not None and row["result"] == {"ok": True, "name": "mine", "step": 0}
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the first save was not overwritten
    trainer.recorder.close("stopped")
    reader.close()
