"""`convscope diagnose` end to end: a user model and array data with exact counts, the built-in net
on built-in data, the report files, one-line errors with exit code 2, and --help with an example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html import escape
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from convscope.cli import app

NET_PY = '''
import torch
from torch import nn

class Net(nn.Module):
    """conv 1->3 (1x1, weight 1): bias 0 copies the image, -100 is dead, -0.5 fires above 0.5.
    fc set too: a random one gave conv's update ratio a "too high" finding now and then (flaky order)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.copy_(torch.tensor([0.0, -100.0, -0.5]))
            self.fc.weight.copy_(torch.linspace(-0.5, 0.5, self.fc.weight.numel()).view_as(self.fc.weight))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))
'''


def _user_files(tmp: Path, *, labels: bool = True) -> None:
    (tmp / "net.py").write_text(NET_PY)
    x = np.zeros((10, 1, 2, 2), np.float32)  # images 0-6 at most 0.4, 7-9 with a pixel above 0.5
    for i in range(2, 7):
        x[i, 0, 0, 0] = 0.1 * (i - 2)
        x[i, 0, 1, 1] = 0.2
    x[7, 0, 0, 1], x[8, 0, 1, 0], x[9, 0, 1, 1] = 0.9, 1.0, 0.75
    arrays = {"x": x, "y": np.array([0, 1] * 5)} if labels else {"x": x}
    np.savez(tmp / "imgs.npz", **arrays)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convscope", *args], capture_output=True, text=True, cwd=cwd, timeout=180
    )


def test_user_model_and_array_data_exact_counts(tmp_path: Path) -> None:
    _user_files(tmp_path)
    res = run_cli("diagnose", "--model", "net.py:Net", "--input-size", "1x2x2", "--data", "imgs.npz",
                  "--out", "diag", "--batch-size", "3", "--lr", "0.1", "--mostly-dead", "0.7", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"report: {(tmp_path / 'diag' / 'index.html').resolve()}"
    assert "1 of 3 filters of conv are dead on this data (10 inputs of imgs.npz)" in res.stderr
    doc = json.loads((tmp_path / "diag" / "diagnosis.json").read_text())
    conv = doc["layers"][0]
    assert (conv["name"], conv["zero_inputs"], conv["dead"], conv["mostly_dead"]) == ("conv", [2, 10, 7], [1], [2])
    assert doc["inputs"] == 10 and doc["lr"] == 0.1 and doc["lr_assumed"] is False
    assert doc["gradients"].startswith("cross-entropy against the labels on 4 batch(es) spread over the data")
    assert [f["kind"] for f in doc["findings"]][:2] == ["dead", "mostly_dead"]
    html = (tmp_path / "diag" / "index.html").read_text()
    assert "dead filters" in html and "https://" not in html


def test_unlabelled_data_and_layer_and_limit(tmp_path: Path) -> None:
    _user_files(tmp_path, labels=False)
    res = CliRunner().invoke(app, ["diagnose", "--model", f"{tmp_path / 'net.py'}:Net", "--input-size", "1x2x2",
                                   "--data", str(tmp_path / "imgs.npz"), "--out", str(tmp_path / "d"),
                                   "--limit", "7", "--layer", "conv"])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "d" / "diagnosis.json").read_text())
    assert [layer["name"] for layer in doc["layers"]] == ["conv"]
    assert doc["layers"][0]["zero_inputs"] == [2, 7, 7] and doc["layers"][0]["dead"] == [1, 2]
    assert doc["gradients"] == "not measured: the data has no labels"


@pytest.mark.slow
def test_builtin_net_on_builtin_data(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["diagnose", "--data", "builtin:photo-crops:val", "--limit", "300",
                                   "--out", str(tmp_path / "diag")])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "diag" / "diagnosis.json").read_text())
    assert doc["inputs"] == 300 and doc["data"] == "builtin:photo-crops:val"
    assert [layer["name"] for layer in doc["layers"]] == ["conv1", "conv2", "conv3", "fc"]
    assert [layer["filters"] for layer in doc["layers"]] == [16, 20, 20, 10]
    assert doc["layers"][0]["roughness"] is not None and len(doc["layers"][0]["roughness"]) == 16
    assert "cross-entropy against the labels" in doc["gradients"]
    assert doc["untrained"] is None  # the shipped weights are trained
    # a colour model on the digits: the classes differ, so no gradient health, and one line says why
    res = CliRunner().invoke(app, ["diagnose", "--data", "builtin:digits:val", "--limit", "64",
                                   "--out", str(tmp_path / "digits")])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "digits" / "diagnosis.json").read_text())
    assert doc["gradients"].startswith("not measured: the data's classes (0, 1, 2, 3, … 10 in all) are not the model's")
    assert all(layer["grad_batches"] == 0 for layer in doc["layers"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "no-such-dir"], "no-such-dir: no such file or directory"),
        (["--model", "zoo:nope"], "unknown zoo model 'nope'"),
        (["--layer", "conv9", "--data", "builtin:digits:val"], "unknown layer"),
        (["--mostly-dead", "2", "--data", "builtin:digits:val"], "--mostly-dead must be a number in (0, 1]; got 2"),
        (["--model", "net.py:Net", "--input-size", "1x2x2", "--data", "imgs.npz", "--batch-size", "5", "--gradients"],
         "labels of a batch run from 0 to 4 but the model has 2 outputs"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "net.py").write_text(NET_PY)
    np.savez(tmp_path / "imgs.npz", x=np.zeros((10, 1, 2, 2), np.float32), y=np.arange(10))
    res = run_cli("diagnose", "--out", "diag", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert message in lines[0] and "Traceback" not in res.stderr


def test_a_head_that_does_not_match_the_labels_skips_gradient_health_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "wide.py").write_text(NET_PY.replace("nn.Linear(3, 2)", "nn.Linear(3, 1000)"))
    x = np.random.default_rng(0).random((20, 1, 2, 2), dtype=np.float32)
    np.savez(tmp_path / "imgs.npz", x=x, y=np.arange(20) % 10)
    res = run_cli("diagnose", "--model", "wide.py:Net", "--input-size", "1x2x2", "--data", "imgs.npz",
                  "--out", "diag", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    skip = (
        "not measured: the labels seen span 0…9 (10 classes) but the model has 1000 outputs and neither names "
        "its classes, so the labels may not mean the model's classes (gradients=True / --gradients measures anyway)"
    )
    doc = json.loads((tmp_path / "diag" / "diagnosis.json").read_text())
    assert doc["gradients"] == skip and all(layer["grad_batches"] == 0 for layer in doc["layers"])
    assert doc["layers"][0]["dead"] == [1]  # dead filters still counted
    assert doc["untrained"] == "no weights were given (--weights): unless wide.py:Net sets its own, it is at its random initialisation"
    text = " ".join(res.stderr.split())
    assert text.count("gradient health: " + skip) == 1 and "weights look untrained: no weights were given" in text
    assert escape(skip) in (tmp_path / "diag" / "index.html").read_text()
    # --gradients measures anyway and says what it doubts
    res = run_cli("diagnose", "--model", "wide.py:Net", "--input-size", "1x2x2", "--data", "imgs.npz",
                  "--out", "forced", "--gradients", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "forced" / "diagnosis.json").read_text())
    assert doc["gradients"].startswith("cross-entropy against the labels") and "measured as asked although" in doc["gradients"]


def test_a_zoo_net_without_weights_is_said_to_be_untrained(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["diagnose", "--model", "zoo:convnetjs-mnist", "--limit", "40",
                                   "--out", str(tmp_path / "d")])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "d" / "diagnosis.json").read_text())
    reason = "no weights were given (--weights) and none ship with zoo:convnetjs-mnist: it is at its random initialisation"
    assert doc["untrained"] == reason
    assert doc["gradients"].startswith("cross-entropy against the labels")  # 10 digit classes, 10 outputs
    assert "The weights look untrained:" in (tmp_path / "d" / "index.html").read_text()


def test_help_has_an_example(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["diagnose", "--help"])
    assert res.exit_code == 0
    # help is wrapped at 80 columns, also after the hyphen of a word ("photo-\ncrops")
    text = " ".join(re.sub(r"(?<=\w-)\s+", "", res.output).split())
    assert "Example: convscope diagnose --model zoo:convnetjs-cifar --data builtin:photo-crops --out diag/" in text
    assert "--no-gradients" in text and "--mostly-dead" in text
