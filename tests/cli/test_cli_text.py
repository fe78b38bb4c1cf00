"""Issue 9 §1 item 12: the CLI's own text. `--help` shows no `<bool>` and cuts no help text; the
command list shows each command's first paragraph whole; `convscope zoo` keeps the bracketed
layer pattern (no rich markup eats it); `train` on an existing run folder names `--resume`; a
bad setting says its allowed range (config.CONTROL_RANGES)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convscope.cli import app
from convscope.config import CONTROL_RANGES, TrainConfig
from convscope.runs import RunWriter

runner = CliRunner()


def words(text: str) -> str:
    return " ".join(text.split())


def help_of(*args: str) -> str:
    res = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    return res.output


def test_help_shows_no_bool_placeholder_and_no_cut_text() -> None:
    top = help_of()
    commands = [c for c in app.registered_commands if not c.hidden]
    assert len(commands) >= 10
    for cmd in commands:
        name = cmd.name or cmd.callback.__name__  # type: ignore[union-attr]
        first = words(cmd.callback.__doc__.strip().split("\n\n")[0])  # type: ignore[union-attr]
        assert first in words(top), f"{name}'s line in --help is cut: {first!r}"
        text = help_of(name)
        assert "<bool>" not in text and "…" not in text.replace("[:…]", ""), name
    assert "<bool>" not in top and "--debug  show tracebacks on errors" in top


def test_diagnose_data_help_is_whole() -> None:
    text = words(help_of("diagnose"))
    assert (
        "--data <str> builtin:photo-crops[:train|val|test], builtin:digits[:…], a dataset folder, or "
        ".npz/.npy (default: photo-crops train, the images the net learnt from; digits for a 1-channel model)"
    ) in text


def test_zoo_keeps_the_bracketed_layer_pattern() -> None:
    done = subprocess.run([sys.executable, "-m", "convscope", "zoo"], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3× [conv5×5-ReLU-pool2]" in done.stdout and "2× [conv3×3-ReLU ×2, pool2]" in done.stdout


def test_train_on_an_existing_run_says_resume(tmp_path: Path) -> None:
    RunWriter(tmp_path / "run", config={}, meta={}).close()
    done = subprocess.run(
        [sys.executable, "-m", "convscope", "train", "--run", str(tmp_path / "run"), "--train-size", "64", "--steps", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'run'} already holds a run: pass --resume to continue it, or choose a new --run folder"
    ]


@pytest.mark.parametrize(
    ("setting", "value"), [("lr", -1.0), ("momentum", 1.5), ("batch_size", 0), ("weight_decay", -0.5)]
)
def test_a_bad_setting_says_its_range(setting: str, value: float) -> None:
    allowed = CONTROL_RANGES[setting][0]
    with pytest.raises(ValueError) as err:
        TrainConfig(**{setting: value})  # type: ignore[arg-type]
    assert str(err.value) == f"bad training setting(s): {setting}={value!r} (must be {allowed})"


def test_a_bad_setting_on_the_command_line_says_its_range(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convscope", "train", "--run", str(tmp_path / "run"), "--lr", "-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: bad training setting(s): lr=-1.0 (must be 0 < lr <= 10)"]
    assert not (tmp_path / "run").exists()


def test_debug_after_the_command_shows_the_traceback(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "convscope", "inspect", "--image", "no-such.png", "--out", str(tmp_path / "r")]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=120)
    debug = subprocess.run([*args, "--debug"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("error: image 'no-such.png' is neither a file nor a built-in photo")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_zoo_says_what_its_accuracy_is_of() -> None:
    done = subprocess.run([sys.executable, "-m", "convscope", "zoo"], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "photo-crops acc" in text and "(builtin:photo-crops, not CIFAR-10)" in text
    assert "zoo:tiny-vgg: CNN Explainer's Tiny VGG: 2× [conv3×3-ReLU ×2, pool2], fc 1690→10" in text
