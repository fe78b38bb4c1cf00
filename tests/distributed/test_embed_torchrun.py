"""t-SNE of layer codes under torchrun (2 processes, gloo): the same sample, the same codes in the
same order and the same seeded map as one process (the CLI's embedding.json)."""

from __future__ import annotations

import json
from pathlib import Path

from _helpers import one_thread
from _torchrun import torchrun
from typer.testing import CliRunner

from convscope.cli import app


def test_embed_cli_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    # 100 images in batches of 16: 7 batches, 3 on rank 0 and 4 on rank 1 (the last one short)
    # --images, not --n: torchrun's own parser takes --n for an abbreviation of its options
    args = ["--images", "100", "--batch-size", "16", "--perplexity", "10", "--side", "10"]
    torchrun("-m", "convscope", "embed", *args, "--out", str(tmp_path / "two"))
    with one_thread():  # as each torchrun process: kernels round alike
        res = CliRunner().invoke(app, ["embed", *args, "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    one, two = (json.loads(next((tmp_path / d).glob("*.json")).read_text()) for d in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        if key not in ("seconds",):
            assert one[key] == two[key], key
    assert len(one["indices"] if "indices" in one else one["points"]) == 100
