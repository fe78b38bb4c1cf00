"""A restart with another net (the dashboard's `model` control) starts that net's own evolution
series: the built-in trainer keeps evo-* checkpoints after 1, 2, 5, ... steps of the new net (none
of the old net's numbers with the new net's weights), and `convscope evolution` follows only the
net now in the run, counting its own steps, the earlier net's checkpoints left out and said."""

from __future__ import annotations

from pathlib import Path

from convscope.config import TrainConfig
from convscope.evolution import evolution
from convscope.runs import RunReader
from convscope.train import Trainer

SMALL = dict(
    model="zoo:convnetjs-mnist", data="builtin:digits", train_size=256, val_size=64, test_images=4,
    batch_size=16, val_every=1000, snapshot_every=1e6,
)  # fmt: skip


def test_a_restart_starts_its_own_evolution_series(tmp_path: Path) -> None:
    path = tmp_path / "run"
    trainer = Trainer(TrainConfig(**SMALL, steps=12), path)  # type: ignore[arg-type]
    trainer.recorder.poll_every = 0.0  # the control is read at the next step

    def on_step(step: int) -> None:
        if step == 2:
            with RunReader(path) as r:
                r.send_control("model", "zoo:convnetjs-mnist")  # the same net, new weights

    trainer.run(on_step=on_step)
    with RunReader(path) as r:
        (ctrl,) = [c for c in r.controls() if c["key"] == "model"]
        rows = {c["name"]: c["step"] for c in r.checkpoints()}
    assert ctrl["applied_step"] == 4 and ctrl["result"]["ok"] is True  # the new net's first step is 4
    # the first net: after its 1st and 2nd step; the new one: after its 1st, 2nd and 5th (run steps 5, 6, 9)
    evo = {name: step for name, step in rows.items() if name.startswith("evo-")}
    assert evo == {"evo-000001": 0, "evo-000002": 1, "evo-000005": 4, "evo-000006": 5, "evo-000009": 8}
    assert rows["last"] == 11
    evo_result = evolution(path, top=2)
    assert [(c.name, c.steps) for c in evo_result.columns] == [
        ("evo-000005", 1), ("evo-000006", 2), ("evo-000009", 5), ("last", 8)
    ]
    assert evo_result.notes[0] == ("2 evolution checkpoint(s) of the net(s) before the restart at step 4 were left out;"
                                   " steps are counted from this net's first.")
