"""The Probe's per-pass shortcuts record exactly what the plain path did.

Shortcuts (probe.py): torch's own conv/linear/norm modules get a post-hook only (a call of one
outside every module still starts a pass); a model's module plan is cached while its module
tree is unchanged (and holds the model weakly); the function mode is off inside torch's own
non-in-place activation modules that only the probe hooks (and on when a mode of the model's own
is above the probe's); the probe's blocks skip the dataclass's __init__; a probe's close passes
over its kept views once when all are intact. Each is checked against plain
autograd, with no hook, no function mode left and the model unchanged, also when the forward raises.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import types
import weakref
from dataclasses import fields
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from capture._oracle import Keep, check
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from convscope.capture import Block, Probe, count_hooks
from convscope.capture.hooks import HookSet


def _left_nothing(model: nn.Module, plain: nn.Module | None = None) -> None:
    """No hook and no function mode left; the model's parameters and buffers are `plain`'s."""
    assert count_hooks(model) == 0 and torch._C._len_torch_function_stack() == 0
    if plain is not None:
        assert_same_model(model, plain)


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
    _left_nothing(model)


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
    model.conv2[1] = nn.Tanh()  # a grandchild replaced: seen at its parent
    with Probe(model, layers=["conv2.0"]) as probe:
        model(x)
    assert probe.trace["conv2.0"].activation == "Tanh"
    model.relu.__class__ = nn.Identity  # same module, another class: no activation any more
    with Probe(model) as probe:
        model(x)
    b = probe.trace["conv1"]
    assert b.act_name is None and b.a is None and "relu" not in probe.trace
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


def test_activation_raising_inside_a_paused_mode_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    model = Net().eval()
    plain = copy.deepcopy(model)
    x = torch.randn(1, 2, 4, 4)
    inside: list[int] = []

    def bad_relu(t: Tensor, inplace: bool = False) -> Tensor:
        inside.append(torch._C._len_torch_function_stack())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), Probe(model) as probe:
        monkeypatch.setattr(F, "relu", bad_relu)  # nn.ReLU's forward calls it: raises in the sealed forward
        model(x)
    monkeypatch.undo()
    assert inside == [0]  # the mode was off in torch's own ReLU, and is back on the stack... then gone
    assert probe.trace["conv1"].z is not None
    _left_nothing(model, plain)
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


def test_forward_wrappers_stand_in_for_hooks_and_seal_torchs_own_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    # While a probe is active its wrappers sit in the hooked modules' instance `forward` (no
    # module hook), and torch's own pooling/flatten/conv run with the function mode off; after
    # it, on success and when the forward raises, every module has its class's forward again.
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2))
    plain = copy.deepcopy(model)
    x = torch.randn(2, 2, 4, 4)
    depth: dict[str, int] = {}
    pool = F.max_pool2d

    def spy_pool(*args: object, **kwargs: object) -> Tensor:
        depth["pool"] = torch._C._len_torch_function_stack()
        return pool(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "max_pool2d", spy_pool)
    with Probe(model) as probe:
        assert all("forward" in m.__dict__ for m in model.modules())  # every module: hooked or sealed
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
        assert count_hooks(model) == len(list(model.modules()))  # a wrapper left would be counted
        out = model(x)
        depth["after"] = torch._C._len_torch_function_stack()
        out.sum().backward()
    assert depth == {"pool": 0, "after": 0}
    b = probe.trace["0"]
    want = F.conv2d(x, model[0].weight, model[0].bias, padding=1)
    assert torch.equal(b.z, want) and torch.equal(b.a, torch.relu(want)) and b.grad_weight is not None
    assert torch.equal(probe.trace["4"].x, pool(torch.relu(want), 2).flatten(1))
    assert all("forward" not in m.__dict__ for m in model.modules()) and count_hooks(model) == 0
    with pytest.raises(ValueError, match="bad"), Probe(model):
        monkeypatch.setattr(F, "max_pool2d", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")))
        model(x)
    assert all("forward" not in m.__dict__ for m in model.modules()) and count_hooks(model) == 0
    assert torch._C._len_torch_function_stack() == 0
    monkeypatch.undo()
    plain(x).sum().backward()
    assert_same_model(model, plain)


def test_a_module_with_its_own_instance_forward_gets_hooks_and_keeps_its_forward() -> None:
    model = Net().eval()
    calls: list[int] = []

    def forward(self: nn.Conv2d, t: Tensor) -> Tensor:  # as a library's patch would be
        calls.append(1)
        return nn.Conv2d.forward(self, t)

    patched = types.MethodType(forward, model.conv2)
    model.conv2.forward = patched  # type: ignore[method-assign]
    trace = check(model, torch.randn(2, 2, 4, 4), _reference, {"conv1": "conv1", "conv2": "conv2", "fc": "fc"})
    assert list(trace) == ["conv1", "conv2", "tanh", "fc"] and trace["bn"] is trace["conv2"]
    assert model.conv2.__dict__["forward"] is patched and calls  # its forward ran, and is still its own


def test_nested_probes_on_one_model_both_record_it() -> None:
    model = Net().eval()
    x = torch.randn(2, 2, 4, 4)
    with Probe(model) as outer:
        with Probe(model, keep=("z", "a", "grad_a")) as inner:  # the outer's wrappers: inner uses hooks
            model(x).sum().backward()
        model(x + 1)
    assert outer.passes == 2 and inner.passes == 1
    for name in ("conv1", "tanh"):
        assert inner.trace[name].grad_a is not None
    want = F.conv2d(x + 1, model.conv1.weight, model.conv1.bias, padding=1)
    assert torch.equal(outer.trace["conv1"].z, want) and torch.equal(outer.trace["conv1"].a, torch.relu(want))
    assert count_hooks(model) == 0 and all("forward" not in m.__dict__ for m in model.modules())


def test_a_wrapper_something_else_wrapped_passes_through_after_the_probe() -> None:
    # A library that wraps the module's forward while the probe is active keeps its chain: the
    # probe's wrapper stays inside it, records nothing more, and the output is the plain one.
    model = Net().eval()
    x = torch.randn(1, 2, 4, 4)
    with Probe(model) as probe:
        inner = model.conv1.forward
        model.conv1.forward = lambda t: inner(t)  # type: ignore[method-assign]
        model(x)
    assert probe.passes == 1
    with torch.no_grad():
        assert torch.equal(model(x), copy.deepcopy(model)(x))
    with Probe(model) as again:  # a module with an instance forward: hooks, and still recorded
        model(x)
    assert probe.passes == 1 and again.passes == 1 and again.trace["conv1"].z is not None
    del model.conv1.forward
    assert count_hooks(model) == 0


def test_the_probe_records_what_the_forward_returns_before_a_forward_hook_changes_it() -> None:
    model = Net().eval()
    x = torch.randn(1, 2, 4, 4)
    handle = model.conv1.register_forward_hook(lambda m, a, out: out * 2)
    with Probe(model) as probe:
        model(x)
    handle.remove()
    want = F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1)
    assert torch.equal(probe.trace["conv1"].conv, want)  # W*x + b, as the conv computed it
    assert torch.equal(probe.trace["relu"].z, want * 2)  # the ReLU got the hook's tensor: its own block
    assert count_hooks(model) == 0


def test_a_deep_copy_made_while_the_probe_is_active_computes_with_its_own_weights() -> None:
    # an EMA or a checkpoint copy taken mid-step: the copy's forward runs the copy's weights and
    # is not recorded by the probe; the probed model is left clean
    model = Net().eval()
    x = torch.randn(1, 2, 4, 4)
    with Probe(model) as probe:
        twin = copy.deepcopy(model)
        with torch.no_grad():
            for p in twin.parameters():
                p.mul_(-1.0)
        out = twin(x)
        model(x)
    assert probe.passes == 1 and count_hooks(model) == 0
    fresh = Net().eval()
    fresh.load_state_dict(twin.state_dict())
    with torch.no_grad():
        assert torch.equal(out, fresh(x)) and torch.equal(twin(x), fresh(x))
    assert count_hooks(twin) > 0  # pass-through wrappers stay on the copy, and are counted


def test_hookset_tensor_hooks_get_what_register_hook_gets_and_leave_the_users_hooks() -> None:
    """HookSet.tensor writes into the tensor's hook dict itself: on a parameter, on a non-leaf,
    and on a non-leaf written in place after the hook went on, its hook gets exactly what a
    `register_hook` hook beside it gets; release() takes out its own hooks only; a tensor subclass
    (which may override register_hook) gets register_hook itself."""
    w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    users = w.register_hook(lambda g: None)  # the user's, in the same dict: stays
    got: dict[str, list[Tensor]] = {}

    theirs_handles = []

    def both(t: Tensor, name: str, hooks: HookSet) -> None:
        theirs_handles.append(t.register_hook(lambda g: got.setdefault(f"{name} torch", []).append(g)))
        hooks.tensor(t, lambda g: got.setdefault(f"{name} ours", []).append(g))

    hooks = HookSet()
    both(w, "w", hooks)
    y = w * w
    both(y, "y", hooks)
    v = y + 1
    both(v, "v", hooks)
    v.mul_(3)  # in place after the hooks: both see dL/dv of v before the write
    (v * torch.tensor([1.0, 2.0, 3.0])).sum().backward(retain_graph=True)
    (v.sum() * 2).backward()  # a second backward through the same graph
    assert len(hooks) == 3
    for name in ("w", "y", "v"):
        ours, theirs = got[f"{name} ours"], got[f"{name} torch"]
        assert len(ours) == len(theirs) == 2 and all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert torch.equal(got["v ours"][0], torch.tensor([3.0, 6.0, 9.0]))
    hooks.release()
    hooks.release()  # idempotent
    for handle in theirs_handles:
        handle.remove()
    assert len(hooks) == 0 and list(w._backward_hooks) == [users.id]  # ours are out, the user's stays
    users.remove()

    calls: list[object] = []

    class Logged(Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func is Tensor.register_hook:
                calls.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    s = torch.ones(2, requires_grad=True).as_subclass(Logged)
    sub_hooks = HookSet()
    sub_hooks.tensor(s, lambda g: None)
    assert calls == [Tensor.register_hook] and len(sub_hooks) == 1
    sub_hooks.release()
    assert not s._backward_hooks


def test_parameter_hooks_go_on_in_the_backward_and_give_the_total_dl_dw() -> None:
    """A forward with no backward puts no hook on the parameters; dL/dW and dL/db then come
    from hooks the conv's output-gradient hook puts on in the backward, before the gradients are
    accumulated: equal to autograd's for a conv used twice (the total, in both of its blocks), for
    `torch.autograd.grad(inputs=[W])` and for a backward; with `keep=("a",)` no parameter hook."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2))
    x = torch.randn(2, 3, 4, 4)

    def param_hooks() -> int:
        return sum(len(p._backward_hooks or {}) for p in model.parameters())

    with Probe(model) as probe:
        out = model(x)
        assert param_hooks() == 0 and list(probe.trace) == ["0", "0#1", "5"]
        (gw,) = torch.autograd.grad(out.sum(), [conv.weight], retain_graph=True)
        assert param_hooks() == 4
        first, second = probe.trace["0"], probe.trace["0#1"]
        assert torch.equal(first.grad_weight, gw) and torch.equal(second.grad_weight, gw)
        (out * torch.tensor([1.0, -2.0])).sum().backward()
        assert torch.equal(first.grad_weight, conv.weight.grad) and torch.equal(first.grad_bias, conv.bias.grad)
        assert torch.equal(probe.trace["5"].grad_weight, model[5].weight.grad)
    assert count_hooks(model) == 0
    with Probe(model, keep=("a",)) as probe:
        model(x).sum().backward()
        assert param_hooks() == 0 and probe.trace["0"].grad_weight is None
    assert count_hooks(model) == 0


def test_a_quiet_activation_called_alone_starts_a_pass_each_time() -> None:
    # torch's own non-in-place activation module, called outside every module, is a pass of its
    # own: a lone activation block
    model = Net().eval()
    x = torch.randn(1, 2, 4, 4)
    with Probe(model) as probe:
        model.relu(x)
        assert probe.passes == 1 and list(probe.trace) == ["relu"]
        y = (x - 1).requires_grad_()
        model.relu(y).sum().backward()
        assert probe.passes == 2
    b = probe.trace["relu"]
    assert b.kind == "activation" and b.activation == "ReLU" and b.act_name == "relu"
    assert torch.equal(b.x, y.detach()) and torch.equal(b.z, y.detach()) and torch.equal(b.a, torch.relu(y.detach()))
    assert b.grad_a is not None and torch.equal(b.grad_a, torch.ones_like(y))
    assert b.grad_z is not None and torch.equal(b.grad_z, y.grad)
    _left_nothing(model)


def test_the_probes_blocks_are_the_dataclasss_blocks() -> None:
    # `Block._new` (the probe's constructor) leaves every other field at its dataclass default
    made, new = Block(name="c", kind="conv", spec=None, channels_last=True), Block._new("c", "conv", None, True)
    assert {f.name: getattr(new, f.name) for f in fields(Block)} == {f.name: getattr(made, f.name) for f in fields(Block)}
    other = Block._new("d", "activation", None)
    new.stale.add("x")
    new._grads["conv"] = torch.ones(1)
    new._view_versions["weight"] = 1
    assert other.stale == set() and other._grads == {} and other._view_versions == {}  # containers of its own
    assert repr(other) == repr(Block(name="d", kind="activation"))
    model = Net().eval()
    with torch.no_grad(), Probe(model) as probe:  # forward only, all intact: one pass over the views at close
        model(torch.randn(1, 2, 4, 4))
    b = probe.trace["fc"]
    unset = {"norm_name", "norm_type", "act_name", "activation", "grad_weight", "grad_bias", "grad_a", "_z_source"}
    assert {n: getattr(b, n) for n in unset} == {n: getattr(Block(name="fc", kind="linear"), n) for n in unset}
    assert b._kept and b.stale == set() and b._grads == {}
    w, bias = model.fc.weight, model.fc.bias
    assert b._view_versions == {"weight": w._version, "bias": bias._version}  # both left to be checked on access
    with torch.no_grad():
        bias.add_(1.0)
    with pytest.warns(UserWarning, match="changed in place after the probe closed"):
        assert b.bias is None
    assert b.weight is not None and b.stale == {"bias"}


class _WritesUnseen(nn.Module):
    """conv → ReLU, then a write into the ReLU's output that no function mode sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu(self.conv(x))
        with torch._C.DisableTorchFunction():
            a.mul_(2.0)  # (the probe cannot copy a first: it is dropped, and said so)
        return a


def test_an_unseen_write_in_a_forward_only_probe_drops_that_map_and_weights_are_still_watched() -> None:
    # at close, one pass over the kept views when all are intact; else the full check, then the
    # weights left shared with the model are marked as before
    model = _WritesUnseen().eval()
    plain = copy.deepcopy(model)
    x = torch.randn(1, 2, 4, 4)
    with Probe(model) as probe:
        out = model(x)
    b = probe.trace["conv"]
    assert b.a is None and b.stale == {"a"}
    want = F.conv2d(x, model.conv.weight, model.conv.bias, padding=1)
    assert b.z is not None and torch.equal(b.z, want) and torch.equal(out, 2 * torch.relu(want))
    assert_same_model(model, plain)
    assert b.weight is not None and b.weight.data_ptr() == model.conv.weight.data_ptr()
    with torch.no_grad():
        model.conv.weight.add_(1.0)
    with pytest.warns(UserWarning, match="changed in place after the probe closed"):
        assert b.weight is None
    assert b.stale == {"a", "weight"} and b.bias is not None
    _left_nothing(model)


class _Pass(TorchFunctionMode):
    """A function mode of the model's own (as `with torch.device(...)` enters one)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


class _ModeAbove(nn.Module):
    def __init__(self, device_mode: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.device_mode = device_mode

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        with torch.device("cpu") if self.device_mode else _Pass():  # a mode above the probe's
            a = self.relu(y)
        return self.relu(a - 1.0)


@pytest.mark.parametrize("device_mode", [False, True])
def test_a_quiet_activation_under_a_mode_of_the_models_own_is_recorded_once(device_mode: bool) -> None:
    # the probe's mode is not on top there: the activation runs with it on, the mode sees its relu
    # call, and the activation module's own call is what is recorded (not a second, functional one)
    model = _ModeAbove(device_mode).eval()
    plain = copy.deepcopy(model)
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    with Probe(model) as probe:
        model(x).sum().backward()
    assert list(probe.trace) == ["conv", "relu#1"]
    b = probe.trace["conv"]
    assert (b.act_name, b.activation) == ("relu", "ReLU") and not b.stale
    want = F.conv2d(x, model.conv.weight, model.conv.bias, padding=1).detach()
    assert torch.equal(b.z, want) and torch.equal(b.a, torch.relu(want))
    mask = ((torch.relu(want) - 1.0) > 0).float()
    assert b.grad_a is not None and torch.equal(b.grad_a, mask)
    assert b.grad_z is not None and torch.equal(b.grad_z, mask * (want > 0).float())
    lone = probe.trace["relu#1"]
    assert lone.kind == "activation" and torch.equal(lone.z, torch.relu(want) - 1.0)
    _left_nothing(model, plain)


class _RaisingAct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(3, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        with contextlib.suppress(RuntimeError):
            self.act(y.to(torch.int64))  # GELU of an integer tensor raises inside the module's forward
        return self.act(self.conv2(y))


def test_an_activation_whose_forward_raises_is_recorded_with_its_input() -> None:
    # (as its pre-hook did: x, z and the call's name before the forward ran; no a)
    model = _RaisingAct().eval()
    plain = copy.deepcopy(model)
    x = torch.randn(1, 2, 4, 4)
    with Probe(model) as probe:
        out = model(x)
    assert list(probe.trace) == ["conv", "act", "conv2"]
    y = F.conv2d(x, model.conv.weight, model.conv.bias, padding=1)
    lone = probe.trace["act"]
    assert lone.kind == "activation" and lone.a is None and torch.equal(lone.z, y.to(torch.int64))
    assert probe.trace["conv"].act_name is None and probe.trace["conv2"].act_name == "act#1"
    assert torch.equal(probe.trace["conv2"].a, out)
    with pytest.raises(RuntimeError, match="approximate"), Probe(nn.Sequential(model.conv, nn.GELU()), ["1"]) as p2:
        p2.model[1].approximate = "bogus"
        p2.model(x)
    assert list(p2.trace) == ["0"] and p2.trace["1"] is p2.trace["0"] and p2.trace["0"].a is None
    _left_nothing(p2.model)
    _left_nothing(model, plain)


def test_in_forward_during_the_taps_of_a_quiet_activation_called_alone() -> None:
    model = Net().eval()
    seen: list[tuple[str, str, bool]] = []
    probe = Probe(model, tap=lambda b, f, t: seen.append((b.name, f, probe.in_forward)))
    with probe:
        model.relu(torch.randn(1, 2, 4, 4))  # a pass's first call
        model.relu(torch.randn(1, 2, 4, 4))  # again from outside: the next pass
    assert seen == [("relu", "x", True), ("relu", "z", True), ("relu", "a", False)] * 2
    assert probe.passes == 2 and count_hooks(model) == 0


class _Stop(Exception):
    pass


def test_a_tap_that_raises_on_a_leaders_output_leaves_its_block_without_gradients() -> None:
    # a forward ended by a tap (attribution style) at block 2's conv output: the block is not in
    # any parameter's list, so a backward from the tapped tensor (through conv 2) gives it no dL/dW,
    # even with the parameters' hooks already on from an earlier backward in the same probe
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.ReLU())
    plain = copy.deepcopy(model)
    x = torch.randn(1, 2, 6, 6)
    got: dict[str, Any] = {}

    def tap(b: Block, f: str, t: Tensor) -> None:
        if got.get("armed") and b.name == "2" and f == "conv":
            got["t"] = t
            raise _Stop

    with Probe(model, tap=tap) as probe:
        model(x).sum().backward()
        got["armed"] = True
        with pytest.raises(_Stop):
            model(x)
        got["t"].sum().backward()
    b = probe.trace["2"]
    assert b.x is not None and b.conv is None and b.weight is None
    assert b.grad_weight is None and b.grad_bias is None
    assert probe.trace["0"].grad_weight is not None  # the backward from block 2's conv reached block 0
    assert model[2].weight.grad is not None  # (and conv 2's parameters)
    _left_nothing(model)
    model.zero_grad()
    plain.zero_grad()
    assert_same_model(model, plain)
