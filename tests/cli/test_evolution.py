"""`convscope evolution` (ZF Fig. 4) on a short real run of the built-in trainer: the values equal a
brute-force recomputation from the checkpoints, the report is written, bad input is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from convscope import cli
from convscope.analysis.attribution import Deconvnet
from convscope.config import TrainConfig
from convscope.evolution import evolution
from convscope.models import get_entry
from convscope.render.evolution_report import Evolution, write_evolution_report
from convscope.train import Trainer
from convscope.train.trainer_data import Data
from convscope.train.watch import watch

# the smallest zoo net on the built-in digits; 6 steps keep evo-000001, -000002, -000005 and "last"
SMALL = dict(
    model="zoo:convnetjs-mnist", data="builtin:digits", train_size=256, val_size=64, test_images=4,
    batch_size=16, val_every=1000, snapshot_every=1e6,
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("evo") / "run"
    Trainer(TrainConfig(**SMALL, steps=6), path).run()  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="module")
def evo(run: Path) -> Evolution:
    return evolution(run)


def test_defaults_last_conv_layer_top_8_every_kept_checkpoint(evo: Evolution) -> None:
    assert evo.layer == "conv2" and evo.layer_tensor == "a of block conv2 (after relu2)"
    assert [(c.name, c.steps) for c in evo.columns] == [
        ("evo-000001", 1), ("evo-000002", 2), ("evo-000005", 5), ("last", 6),
    ]  # fmt: skip
    assert len(evo.strips) == 8 and all(len(cells) == 4 for cells in evo.strips.values())


def test_values_equal_a_brute_force_recomputation(run: Path, evo: Evolution) -> None:
    """Each checkpoint loaded by hand, the held-out set forwarded (the same 64-image batches), the
    map's max over positions and images: value, image, position exact; then the patch and the
    deconvnet projection of that very activation, cropped to the cell's box."""
    data = Data(TrainConfig(**SMALL, steps=6), (1, 24, 24))  # type: ignore[arg-type]
    x = data.xval  # (N, 1, 24, 24)
    assert evo.images == len(x)
    model = get_entry("convnetjs-mnist").factory().eval()
    finals: dict[int, float] = {}
    for k, col in enumerate(evo.columns):
        model.load_state_dict(load_file(str(run / "checkpoints" / f"{col.name}.safetensors")))
        maps: list[Tensor] = []
        relu2: nn.Module = model.get_submodule("relu2")
        handle = relu2.register_forward_hook(lambda m, i, o, maps=maps: maps.append(o.detach().clone()))
        try:
            with torch.no_grad():
                for s in range(0, len(x), 64):
                    model(data.norm(x[s : s + 64]))
        finally:
            handle.remove()
        a = torch.cat(maps)  # (N, 16, h, w)
        c_all, w = a.shape[1], a.shape[3]
        flat = a.flatten(2)  # (N, C, h*w)
        per_image, where = flat.max(dim=2)  # (N, C): the first max of each map
        for c, cells in evo.strips.items():
            cell = cells[k]
            best = float(per_image[:, c].max())
            index = int(torch.nonzero(per_image[:, c] == best)[0])  # the first image with it
            assert cell.value == best and cell.index == index
            assert cell.position == divmod(int(where[index, c]), w)
            y0, x0, y1, x1 = cell.box
            assert torch.equal(cell.patch, x[index, :, y0:y1, x0:x1])
            proj = Deconvnet(model).attribute(data.norm(x[index : index + 1]), layer="conv2", channel=c,
                                              position=cell.position).as_subclass(Tensor)  # fmt: skip
            assert torch.equal(cell.projection, proj[0, :, y0:y1, x0:x1])
            assert proj.abs().sum() > 0 or best == 0
        if k == len(evo.columns) - 1:
            finals = {c: float(per_image[:, c].max()) for c in range(c_all)}
    ranked = sorted(finals, key=lambda c: (-finals[c], c))[:8]
    assert list(evo.strips) == ranked


def test_report_files(evo: Evolution, tmp_path: Path) -> None:
    html = write_evolution_report(evo, tmp_path / "out")
    doc = html.read_text()
    assert 'http-equiv="Content-Security-Policy"' in doc and "<script" not in doc and "http://" not in doc
    summary = json.loads((tmp_path / "out" / "evolution.json").read_text())
    assert summary["layer"] == "conv2" and [c["steps"] for c in summary["checkpoints"]] == [1, 2, 5, 6]
    assert [m["channel"] for m in summary["maps"]] == list(evo.strips)
    for m in summary["maps"]:
        for cell, ours in zip(m["cells"], evo.strips[m["channel"]], strict=True):
            assert cell["value"] == ours.value and cell["index"] == ours.index
            assert (tmp_path / "out" / cell["patch"]).is_file() and (tmp_path / "out" / cell["deconvnet"]).is_file()


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`convscope ARGS` in this process (cli.main: one-line errors, exit 2): (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["convscope", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def test_the_cli_with_only_run_and_out(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(monkeypatch, capsys, "evolution", "--run", str(run), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert out.strip() == f"report: {(tmp_path / 'o' / 'index.html').resolve()}"
    summary = json.loads((tmp_path / "o" / "evolution.json").read_text())
    assert summary["layer"] == "conv2" and len(summary["maps"]) == 8


@pytest.fixture(scope="module")
def watch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("watch") / "run"
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    rec = watch(model, path)
    model(torch.rand(1, 1, 8, 8))
    rec.step(loss=1.0)
    rec.close()
    return path


@pytest.fixture(scope="module")
def no_evo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("noevo") / "run"
    Trainer(TrainConfig(**SMALL, steps=1, evolution_checkpoints=0), path).run()  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("case", "extra", "expected"),
    [
        ("missing", [], "is not a convscope run: it does not exist"),
        ("watch", [], "this run was recorded by watch() in your own loop: its model is not in the run"),
        ("no_evo", [], "the run has no evolution checkpoints (evo-NNNNNN): train it with the built-in trainer"),
        ("run", ["--layer", "conv9"], "unknown layer(s) ['conv9']; valid: conv1, relu1, conv2, relu2, fc"),
        ("run", ["--channels", "3,16"], "--channels 16 out of range: layer 'conv2' has feature maps 0..15"),
        ("run", ["--channels", "3,x"], "--channels needs comma-separated map numbers such as 0,3,5"),
        ("run", ["--channels", "3", "--top", "2"], "give --channels or --top, not both"),
        ("run", ["--top", "0"], "--top must be an integer in 1..64; got 0"),
        ("run", ["--layer", "fc"], "layer 'fc' has no spatial maps"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], case: str, extra: list[str], expected: str,
) -> None:  # fmt: skip
    fixture = {"watch": "watch_run", "no_evo": "no_evo_run", "run": "run"}.get(case)
    where = tmp_path / "nowhere" if fixture is None else request.getfixturevalue(fixture)
    code, out, err = _cli(monkeypatch, capsys, "evolution", "--run", str(where), "--out", str(tmp_path / "o"), *extra)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not (tmp_path / "o").exists()
