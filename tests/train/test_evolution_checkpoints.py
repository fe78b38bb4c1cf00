"""The built-in trainer keeps evolution checkpoints evo-NNNNNN after 1, 2, 5, 10, 20, ... steps,
within its stated budget (TrainConfig.evolution_checkpoints / evolution_max_bytes)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from convscope.config import TrainConfig
from convscope.runs import RunReader
from convscope.train import Trainer
from convscope.train.loop import is_evolution_step

# tests/train/test_trainer.py's SMALL settings on the smallest zoo net, with few validations/snapshots
SMALL = dict(
    model="zoo:convnetjs-mnist", data="builtin:digits", train_size=256, val_size=64, test_images=4,
    batch_size=16, val_every=1000, snapshot_every=1e6,
)  # fmt: skip


def test_the_schedule_is_the_1_2_5_series() -> None:
    assert [n for n in range(-3, 100_001) if is_evolution_step(n)] == [
        m * 10**k for k in range(5) for m in (1, 2, 5)
    ] + [100_000]


def test_the_trainer_keeps_checkpoints_at_exactly_the_stated_steps(tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(**SMALL, steps=11), tmp_path / "run")  # type: ignore[arg-type]
    after: dict[int, dict[str, torch.Tensor]] = {}
    for done in range(1, 6):
        trainer.train_step()
        after[done] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()  # on to 11 steps, then "last"
    with RunReader(tmp_path / "run") as r:
        rows = r.checkpoints()
        meta = r.meta()
    assert [(c["name"], c["step"]) for c in rows] == [
        ("evo-000001", 0), ("evo-000002", 1), ("evo-000005", 4), ("evo-000010", 9), ("last", 10),
    ]  # fmt: skip
    assert "evolution_note" not in meta
    ckpts = tmp_path / "run" / "checkpoints"
    for done in (1, 2, 5):  # the weights after exactly that many steps
        saved = load_file(str(ckpts / f"evo-{done:06d}.safetensors"))
        assert saved.keys() == after[done].keys()
        assert all(torch.equal(saved[k], after[done][k]) for k in saved)
    assert not torch.equal(load_file(str(ckpts / "evo-000001.safetensors"))["conv1.weight"], after[2]["conv1.weight"])


def test_at_most_the_stated_number(tmp_path: Path) -> None:
    Trainer(TrainConfig(**SMALL, steps=12, evolution_checkpoints=3), tmp_path / "run").run()  # type: ignore[arg-type]
    with RunReader(tmp_path / "run") as r:
        assert [c["name"] for c in r.checkpoints()] == ["evo-000001", "evo-000002", "evo-000005", "last"]
        note = r.meta()["evolution_note"]
    assert note == "evolution checkpoints end before step 10: the run keeps at most 3 (TrainConfig.evolution_checkpoints)"


def test_within_the_byte_budget(tmp_path: Path) -> None:
    probe = Trainer(TrainConfig(**SMALL, steps=1, evolution_checkpoints=0), tmp_path / "probe")  # type: ignore[arg-type]
    size = sum(t.numel() * t.element_size() for t in probe.model.state_dict().values())
    probe.recorder.close("stopped")
    budget = int(2.5 * size)
    Trainer(TrainConfig(**SMALL, steps=5, evolution_max_bytes=budget), tmp_path / "run").run()  # type: ignore[arg-type]
    with RunReader(tmp_path / "run") as r:
        rows = r.checkpoints()
        note = r.meta()["evolution_note"]
    evo = [c for c in rows if c["name"].startswith("evo-")]
    assert [c["name"] for c in evo] == ["evo-000001", "evo-000002"]
    assert sum(c["bytes"] for c in evo) <= budget
    assert note.startswith("evolution checkpoints end before step 5: the next (") and "TrainConfig.evolution_max_bytes" in note


def test_turned_off(tmp_path: Path) -> None:
    Trainer(TrainConfig(**SMALL, steps=3, evolution_checkpoints=0), tmp_path / "run").run()  # type: ignore[arg-type]
    with RunReader(tmp_path / "run") as r:
        assert [c["name"] for c in r.checkpoints()] == ["last"]
        assert "evolution_note" not in r.meta()
