"""Occlusion under torchrun (2 processes, gloo): the positions split among the ranks give the
one-process maps bit for bit (the CLI's occlusion.json), exact and approximate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _helpers import one_thread
from _torchrun import torchrun
from typer.testing import CliRunner

from convscope.cli import app


@pytest.mark.parametrize("extra", [[], ["--approx", "0.5"]], ids=["exact", "approx"])
def test_occlusion_cli_under_torchrun_equals_one_process(tmp_path: Path, extra: list[str]) -> None:
    # batch 16 over 7 × 7 = 49 positions: 4 batches, 2 per rank (the last one short)
    args = ["--window", "8", "--stride", "4", "--batch-size", "16", *extra]
    torchrun("-m", "convscope", "occlusion", *args, "--out", str(tmp_path / "two"))
    with one_thread():  # as each torchrun process: kernels round alike
        res = CliRunner().invoke(app, ["occlusion", *args, "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    one = json.loads((tmp_path / "one" / "occlusion.json").read_text())
    two = json.loads((tmp_path / "two" / "occlusion.json").read_text())
    assert len(one["probability"]) * len(one["probability"][0]) == 49
    for key in ("probability", "label", "feature", "channel", "target", "clean_probability", "rows", "cols"):
        assert one[key] == two[key], key
    assert two["meta"]["ranks"] == 2 and "ranks" not in one["meta"]
