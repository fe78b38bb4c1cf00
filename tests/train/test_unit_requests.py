"""The dashboard's `unit` control (the unit explorer) answered by the recorder between two steps:
the stored hits equal TopPatches run directly over the same probe images with the same weights."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.analysis.units import TopPatches
from convscope.capture import count_hooks
from convscope.runs import RunReader
from convscope.train.watch import Recorder


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        return self.fc(self.pool(F.relu(self.conv2(x))).flatten(1))


def test_unit_answer_equals_top_patches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Net()
    probe = torch.rand(40, 3, 16, 16)
    norm = lambda x: (x - 0.5) / 0.25  # noqa: E731
    with Recorder(model, tmp_path / "run", snapshot_every=0.0, poll_every=0.0, probe=probe, probe_transform=norm) as run:
        model(torch.rand(2, 3, 16, 16)).sum().backward()
        with RunReader(tmp_path / "run") as r:
            ok = r.send_control("unit", {"layer": "conv2", "channel": 3})
            bad = r.send_control("unit", {"layer": "conv2", "channel": None})
        run.step(loss=1.0)
    with RunReader(tmp_path / "run") as r:
        acks = {c["id"]: c["result"] for c in r.controls()}
        _, v = r.json(f"unit:{ok}")  # type: ignore[misc]
        kinds = {k: r.snapshot(f"unit:{ok}", k) for k in ("patches", "projections", "filter", "activations", "stimulus")}
    assert acks[ok] == {"ok": True, "hits": 9}
    assert acks[bad] == {"ok": False, "error": "unit needs a channel (one feature map)"}
    direct = TopPatches(model, layers=["conv2"], k=9).run(probe, transform=norm)["conv2"][3]
    assert [h["index"] for h in v["hits"]] == [h.index for h in direct]
    assert [h["value"] for h in v["hits"]] == [h.value for h in direct]
    assert [tuple(h["position"]) for h in v["hits"]] == [h.position for h in direct]
    assert v["probe_images"] == 40 and v["layer"] == "conv2" and v["channel"] == 3
    assert v["stimulus_activation"] is not None and v["has_filter"] is True
    assert v["evolution_steps"] == []  # watch() keeps no evolution checkpoints
    for kind, found in kinds.items():
        assert found is not None, kind
        t = found[1]
        assert t.dim() == 4 and t.shape[:2] == (1, 3) and float(t.min()) >= 0 and float(t.max()) <= 1
    assert count_hooks(model) == 0


def test_watch_without_probe_images_says_how(tmp_path: Path) -> None:
    model = Net()
    with Recorder(model, tmp_path / "run", snapshot_every=0.0, poll_every=0.0) as run:
        model(torch.rand(2, 3, 16, 16)).sum().backward()
        with RunReader(tmp_path / "run") as r:
            ident = r.send_control("unit", {"layer": "conv1", "channel": 0})
        run.step(loss=1.0)
    with RunReader(tmp_path / "run") as r:
        result = next(c["result"] for c in r.controls() if c["id"] == ident)
    assert result == {"ok": False, "error": "the unit explorer needs probe images: watch(model, dir, probe=images)"}


def test_trainer_unit_answer_has_an_evolution_strip_and_keeps_its_weights(tmp_path: Path) -> None:
    from convscope.config import TrainConfig
    from convscope.train import Trainer

    small = dict(train_size=64, val_size=32, test_images=2, batch_size=16, val_every=50, snapshot_every=0.0)
    trainer = Trainer(TrainConfig(**small), tmp_path / "run")
    trainer.recorder.poll_every = 0.0
    for _ in range(6):
        trainer.train_step()  # keeps evo-000001, evo-000002, evo-000005
    with RunReader(tmp_path / "run") as r:
        ident = r.send_control("unit", {"layer": "conv2", "channel": 1})
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    step = trainer.recorder.step_index
    trainer.recorder.handle_controls()
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the live weights came back exactly
    with RunReader(tmp_path / "run") as r:
        result = next(c["result"] for c in r.controls() if c["id"] == ident)
        _, v = r.json(f"unit:{ident}")  # type: ignore[misc]
        strip = r.snapshot(f"unit:{ident}", "evolution")
        acts = r.snapshot(f"unit:{ident}", "activations")
    assert result == {"ok": True, "hits": 9}
    assert v["evolution_steps"] == [1, 2, 5] and v["step"] == step - 1
    assert strip is not None and acts is not None
    trainer.recorder.close()
