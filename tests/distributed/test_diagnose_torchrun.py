"""diagnose under torchrun (2 processes, gloo) equals one process's: the same dead counts, top
inputs, sampled gradient batches and findings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import one_thread
from _torchrun import load_script, torchrun

import convscope as cs
from convscope.capture import count_hooks

HERE = Path(__file__).parent
_script = load_script(HERE / "diagnose_script.py")


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal JSON, floats to 1e-9 relative (sums over the ranks add in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("n", [45, 9])
def test_two_ranks_equal_one_process(tmp_path: Path, n: int) -> None:
    out = tmp_path / "diag.json"
    torchrun(str(HERE / "diagnose_script.py"), str(out), str(n))
    two = json.loads(out.read_text())
    seen = [int((tmp_path / f"diag.json.{r}.seen").read_text()) for r in (0, 1)]
    batches = -(-n // 4)
    assert seen == [batches // 2 * 4, n - batches // 2 * 4]  # each rank streamed its whole batches only
    model = _script.net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with one_thread():  # as each torchrun process: kernels round alike
        one = json.loads(cs.diagnose(model, _script.data(n), batch_size=4, grad_batches=3, lr=0.1).to_json())
    assert count_hooks(model) == 0 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert two["inputs"] == one["inputs"] == n
    layers = {s["name"]: s for s in one["layers"]}
    assert layers["0"]["dead"] == [0, 1]  # the hand-set dead filters, found by both
    assert 5 in layers["3"]["dead"]
    assert any(0 < z < n for z in layers["3"]["zero_inputs"])  # a filter dead on some inputs only
    for s1, s2 in zip(one["layers"], two["layers"], strict=True):
        for key in ("dead", "mostly_dead", "zero_inputs", "nonfinite_inputs", "top_input", "grad_batches", "map_inputs"):
            assert s1.get(key) == s2.get(key), (s1["name"], key)
    assert [f["kind"] for f in one["findings"]] == [f["kind"] for f in two["findings"]]
    _close(one, two)


def test_diagnose_cli_under_torchrun_writes_the_same_report_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the command keeps one_thread's count (as torchrun sets it)
    args = ["--limit", "70", "--batch-size", "16"]
    torchrun("-m", "convscope", "diagnose", *args, "--out", str(tmp_path / "two"))
    from typer.testing import CliRunner

    from convscope.cli import app

    with one_thread():  # as each torchrun process: kernels round alike
        res = CliRunner().invoke(app, ["diagnose", *args, "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    one = json.loads(next((tmp_path / "one").glob("*.json")).read_text())
    two = json.loads(next((tmp_path / "two").glob("*.json")).read_text())
    assert one["inputs"] == two["inputs"] == 70
    for s1, s2 in zip(one["layers"], two["layers"], strict=True):
        assert s1["zero_inputs"] == s2["zero_inputs"] and s1["top_input"] == s2["top_input"], s1["name"]
    _close(one, two)
