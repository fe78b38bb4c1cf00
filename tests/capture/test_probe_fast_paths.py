"""The Probe's per-pass shortcuts record exactly what the plain path did.

Shortcuts (probe.py): torch's own conv/linear/norm modules get a post-hook only (a call of one
outside every module still starts a pass); a model's module plan is cached while its module
tree is unchanged (and holds the model weakly); the function mode is off inside torch's own
non-in-place activation modules that only the probe hooks. Each is checked against plain
autograd, with no hook, no function mode left and the model unchanged, also when the forward raises.
"""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from capture._oracle import Keep, check
from torch import Tensor, nn

from convscope.capture import Probe, count_hooks


class Net(nn.Module):
    """conv → ReLU module, then a functional tanh and an in-place add in the model's own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.conv1(x))
        z = self.bn(self.conv2(h))
        z += 1.0  # in place on the norm's output: z must be copied first, not marked stale
        return self.fc(torch.tanh(z).flatten(1))


def _reference(m: nn.Module, x: Tensor, keep: Keep) -> Tensor:
    assert isinstance(m, Net)
    c1 = keep("conv1:conv", m.conv1(keep("conv1:x", x)))
    h = keep("conv1:a", F.relu(keep("conv1:z", c1)))
    c2 = keep("conv2:conv", m.conv2(keep("conv2:x", h)))
    z = keep("conv2:z", m.bn(c2))
    t = keep("tanh:a", torch.tanh(keep("tanh:z", z + 1.0)))
    return m.fc(keep("fc:x", t.flatten(1)))


def test_post_hook_only_leaders_norms_and_paused_mode_match_autograd() -> None:
    model = Net().eval()
    trace = check(model, torch.randn(2, 2, 4, 4), _reference, {"conv1": "conv1", "conv2": "conv2", "fc": "fc"})
    assert list(trace) == ["conv1", "conv2", "tanh", "fc"]
    assert trace["relu"] is trace["conv1"] and trace["bn"] is trace["conv2"]
    assert trace["conv2"].norm_type == "BatchNorm2d" and not trace["conv2"].stale
    assert count_hooks(model) == 0


def test_a_leaf_module_called_alone_starts_a_pass_each_time() -> None:
    model = Net().eval()
    x = torch.randn(1, 2, 4, 4)
    with Probe(model) as probe:
        out = model.conv1(x)
        assert probe.passes == 1 and list(probe.trace) == ["conv1"]
        model.conv1(x + 1)  # the pass's first module again, from outside: the next pass
        assert probe.passes == 2
    block = probe.trace["conv1"]
    assert torch.equal(block.x, x + 1)
    assert torch.equal(block.conv, F.conv2d(x + 1, model.conv1.weight, model.conv1.bias, padding=1))
    assert torch.equal(out, F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1))
    assert count_hooks(model) == 0 and torch._C._len_torch_function_stack() == 0


def test_a_changed_module_tree_is_seen_by_the_next_probe() -> None:
    model = Net().eval()
    x = torch.randn(1, 2, 4, 4)
    with Probe(model) as probe:
        model(x)
    assert probe.trace["conv1"].activation == "ReLU"
    model.relu = nn.Tanh()  # same attribute, another module: a new plan
    with Probe(model) as probe:
        model(x)
    b = probe.trace["conv1"]
    assert b.activation == "Tanh" and torch.equal(b.a, torch.tanh(b.z))
    model.conv2 = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())  # a deeper tree: names follow it
    with Probe(model, layers=["conv2.0"]) as probe:
        model(x)
    assert list(probe.trace) == ["conv2.0"] and probe.trace["conv2.0"].act_name == "conv2.1"
    assert count_hooks(model) == 0


def test_the_plan_cache_does_not_keep_a_model_alive() -> None:
    model = Net()
    with Probe(model):
        model(torch.randn(1, 2, 4, 4))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


class _Boom(nn.ReLU):
    """A user's activation subclass: not torch's own, so the mode stays on inside it."""


def test_activation_raising_inside_a_paused_mode_leaves_nothing_behind() -> None:
    model = Net().eval()
    plain = copy.deepcopy(model)
    x = torch.randn(1, 2, 4, 4)

    def bad_forward(t: Tensor) -> Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), Probe(model) as probe:
        model.relu.forward = bad_forward  # type: ignore[method-assign]
        model(x)
    del model.relu.forward
    assert probe.trace["conv1"].z is not None
    assert count_hooks(model) == 0 and torch._C._len_torch_function_stack() == 0
    assert_same_model(model, plain)
    with Probe(model) as probe:  # and the next probe of it works as before
        model(x)
    assert torch.equal(probe.trace["conv1"].a, torch.relu(probe.trace["conv1"].z))


def test_mode_stays_on_where_something_else_may_write() -> None:
    # In-place ReLU modules, a user's hook on the activation and a user's subclass keep the
    # function mode on inside them: z stays what entered the activation.
    for relu, hook in ((nn.ReLU(inplace=True), False), (nn.ReLU(), True), (_Boom(), False)):
        model = Net().eval()
        model.relu = relu
        seen: list[bool] = []
        if hook:
            relu.register_forward_hook(
                lambda m, a, out, seen=seen: seen.append(torch._C._len_torch_function_stack() > 0)
            )
        x = torch.randn(1, 2, 4, 4)
        with Probe(model) as probe:
            model(x)
        b = probe.trace["conv1"]
        want = F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1)
        assert torch.equal(b.z, want) and torch.equal(b.a, torch.relu(want)) and not b.stale
        assert seen == ([True] if hook else [])
        assert torch._C._len_torch_function_stack() == 0
