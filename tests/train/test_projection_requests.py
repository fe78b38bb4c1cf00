"""The dashboard's `project` control answered by the recorder between two steps of the user's loop:
stored projections equal the API's on the snapshot's example with the weights of the answer."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.analysis.attribution import Deconvnet, GuidedBackprop
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
        x = self.pool(F.relu(self.conv1(x)))  # functional ReLU: the recorder must still project
        x = self.pool(self.conv2(x).relu_())
        return self.fc(x.flatten(1))


def _loop(tmp_path: Path, requests: list[dict[str, object]]) -> tuple[Net, list[Tensor], list[int]]:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    xs = [torch.randn(2, 3, 16, 16) for _ in range(3)]
    ids: list[int] = []
    with Recorder(model, tmp_path / "run", snapshot_every=0.0, poll_every=0.0) as run:
        for i, x in enumerate(xs):
            loss = F.cross_entropy(model(x), torch.tensor([0, 2]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i == 1:  # the page asks while the run goes on
                with RunReader(tmp_path / "run") as r:
                    ids = [r.send_control("project", value) for value in requests]
            run.step(loss=loss)
            if i == 1:
                weights = {k: v.clone() for k, v in model.state_dict().items()}
    answered = Net()
    answered.load_state_dict(weights)  # the weights when the answer was computed (after step 1)
    return answered, xs, ids


def test_one_map_and_the_top_nine_equal_the_api(tmp_path: Path) -> None:
    model, xs, ids = _loop(
        tmp_path,
        [{"layer": "conv2", "channel": 3, "step": 1}, {"layer": "conv1", "channel": None, "step": 0}],
    )
    x1, x0 = xs[1][:1], xs[0][:1]
    with RunReader(tmp_path / "run") as r:
        acks = {c["id"]: c["result"] for c in r.controls() if c["key"] == "project"}
        assert acks[ids[0]] == {"ok": True, "units": 1, "asked": 1}
        assert acks[ids[1]] == {"ok": True, "units": 4, "asked": 4}  # conv1 has 4 maps: all of them
        step, one = r.json(f"project:{ids[0]}")  # type: ignore[misc]
        assert step == 1 and one["layer"] == "conv2" and one["input_step"] == 1
        assert one["tensor"] == "a of block conv2 (after relu#1)"
        assert one["rules"]["deconvnet"] == {"relu": "max(g,0)"}
        ((unit,),) = (one["units"],)
        assert unit["channel"] == 3
        expected = Deconvnet(model).attribute(x1, layer="conv2", channel=3, position="max")
        _, stored = r.snapshot(f"project:{ids[0]}/3", "deconvnet", 1)  # type: ignore[misc]
        torch.testing.assert_close(stored.float(), expected.as_subclass(Tensor), atol=1e-3, rtol=1e-2)
        _, top = r.json(f"project:{ids[1]}")  # type: ignore[misc]
        a = F.relu(model.conv1(x0))[0]  # (4, 16, 16)
        peaks = a.detach().reshape(4, -1).amax(dim=1)
        assert [u["channel"] for u in top["units"]] == peaks.argsort(descending=True, stable=True).tolist()
        for u in top["units"]:
            k = u["channel"]
            assert u["value"] == float(peaks[k])
            i, j = u["position"]
            assert float(a[k, i, j]) == float(peaks[k])
            _, g = r.snapshot(f"project:{ids[1]}/{k}", "guided", 1)  # type: ignore[misc]
            ref = GuidedBackprop(model).attribute(x0, layer="conv1", channel=k, position=(i, j))
            torch.testing.assert_close(g.float(), ref.as_subclass(Tensor), atol=1e-3, rtol=1e-2)
            _, amap = r.snapshot(f"project:{ids[1]}/{k}", "a", 1)  # type: ignore[misc]
            torch.testing.assert_close(amap.float()[0, 0], a[k].detach(), atol=1e-3, rtol=1e-2)


def test_bad_requests_are_answered_not_fatal(tmp_path: Path) -> None:
    _, _, ids = _loop(
        tmp_path,
        [{"layer": "conv9", "channel": 0}, {"layer": "conv2", "channel": 5}, "conv2", {"layer": "fc", "channel": 1}],
    )
    with RunReader(tmp_path / "run") as r:
        acks = {c["id"]: c["result"] for c in r.controls() if c["key"] == "project"}
        assert r.meta()["status"] == "finished"
    assert acks[ids[0]]["ok"] is False and acks[ids[0]]["error"].startswith("unknown layer 'conv9'; valid: conv1,")
    assert acks[ids[1]] == {"ok": False, "error": "project: channel 5 is out of range for layer 'conv2': 0..4"}
    assert acks[ids[2]] == {"ok": False, "error": "project needs {'layer': NAME, 'channel': K or null}"}
    assert acks[ids[3]] == {"ok": True, "units": 1, "asked": 1}  # a dense layer: no position, still projected


def test_no_hook_left_after_answers(tmp_path: Path) -> None:
    model = Net()
    with Recorder(model, tmp_path / "run", snapshot_every=0.0, poll_every=0.0) as run:
        model(torch.randn(2, 3, 16, 16)).sum().backward()
        with RunReader(tmp_path / "run") as r:
            r.send_control("project", {"layer": "conv1", "channel": 0})
        run.step(loss=1.0)
    assert count_hooks(model) == 0
    assert model.training
