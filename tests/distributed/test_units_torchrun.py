"""Top-k patches under torchrun (2 processes, gloo) equal one process's, exactly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from _helpers import one_thread
from _torchrun import load_script, torchrun

from convscope.analysis.units import TopPatches, TopPatchesResult
from convscope.capture import count_hooks
from convscope.distributed import World, batch_bounds, bounds, shard

HERE = Path(__file__).parent
_script = load_script(HERE / "topk_script.py")
net, data = _script.net, _script.data


def test_shards_are_contiguous_disjoint_and_cover_everything() -> None:
    for n in (0, 1, 2, 7, 37, 100):
        for size in (1, 2, 3, 8):
            spans = [bounds(n, r, size) for r in range(size)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
            assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1
    X, y = data(7)
    part, start = shard((X, y), World(1, 2), batch=1)
    assert start == 3 and torch.equal(part[0], X[3:7]) and torch.equal(part[1], y[3:7])
    # whole batches: 37 inputs in batches of 4 = 10 batches, 5 per rank
    assert [batch_bounds(37, 4, r, 2) for r in range(2)] == [(0, 20), (20, 37)]
    assert [batch_bounds(37, 4, r, 3) for r in range(3)] == [(0, 12), (12, 24), (24, 37)]
    assert [batch_bounds(3, 4, r, 2) for r in range(2)] == [(0, 0), (0, 3)]
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        bounds(5, 2, 2)


@pytest.mark.parametrize(("n", "k"), [(37, 5), (9, 9)])
def test_two_ranks_equal_one_process(tmp_path: Path, n: int, k: int) -> None:
    out = tmp_path / "hits.safetensors"
    torchrun(str(HERE / "topk_script.py"), str(out), str(n), str(k))
    model = net()
    before = {key: v.clone() for key, v in model.state_dict().items()}
    with one_thread():  # as each torchrun process: kernels round alike
        one = TopPatches(model, layers=["1", "4"], k=k).run(data(n), batch_size=4)
    two = TopPatchesResult.load(out)
    assert two.inputs == one.inputs == n
    for name in ("1", "4"):
        a, b = one[name], two[name]
        assert torch.equal(a.indices, b.indices), name
        assert torch.equal(a.values, b.values), name  # the same batches: bit-identical
        assert torch.equal(a.positions, b.positions), name
    assert count_hooks(model) == 0
    assert all(torch.equal(before[key], v) for key, v in model.state_dict().items())


def test_units_cli_under_torchrun_writes_the_same_hits(tmp_path: Path) -> None:
    args = ["--limit", "45", "--maps", "3", "--stimulus-steps", "0", "--batch-size", "16"]
    torchrun("-m", "convscope", "units", *args, "--out", str(tmp_path / "two"))
    from typer.testing import CliRunner

    from convscope.cli import app

    res = CliRunner().invoke(app, ["units", *args, "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    one = json.loads((tmp_path / "one" / "units.json").read_text())
    two = json.loads((tmp_path / "two" / "units.json").read_text())
    assert one["inputs"] == two["inputs"] == 45
    assert one["layers"] == two["layers"]


def test_a_single_process_command_refuses_torchrun(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="runs in one process; under torchrun use one of diagnose"):
        torchrun("-m", "convscope", "inspect", "--out", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
