"""TopPatches against brute force: every map of every image in memory, ranked in plain Python.

Exact equality of values, dataset indices and positions on a net with nn.ReLU modules (read
with plain hooks after the first batch), one with functional ReLUs (a Probe on every batch) and
the ResNet-18-shaped zoo net (one in-place ReLU module called twice per block); ties by index;
two halves merged equal the whole; a save/load round trip; clear errors; the model left as it was.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from convscope.analysis.units import TopPatches, TopPatchesResult, receptive_field
from convscope.analysis.units.base import LayerReader
from convscope.analysis.units.receptive_field import ReceptiveFieldError
from convscope.capture import Probe, UnknownLayerError, count_hooks
from convscope.capture.naming import role
from convscope.models import resolve_model


class ModuleNet(nn.Module):
    """conv-ReLU-pool, conv-BN-ReLU, a residual add and a lone ReLU, fc: every ReLU a module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU(inplace=True)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.relu1(self.conv1(x)))  # (B, 6, 6, 6)
        out = self.relu3(self.relu2(self.bn2(self.conv2(h))) + h)  # (B, 6, 6, 6)
        return self.fc(out.mean((2, 3)))


class FunctionalNet(ModuleNet):
    """The same with F.relu calls: no module outputs the maps, a Probe must see them."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(F.relu(self.conv1(x)))
        out = F.relu(F.relu(self.bn2(self.conv2(h))) + h)
        return self.fc(out.mean((2, 3)))


def images(n: int, size: int = 12, seed: int = 0) -> Tensor:
    """n random images, with repeats (equal values: ties) at 3, 9 and 17 of image 5."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)  # (N, 3, H, W)
    for i in (3, 9, 17):
        if i < n and n > 5:
            x[i] = x[5]
    return x


def all_maps(model: nn.Module, layers: list[str], x: Tensor, batch: int) -> dict[str, np.ndarray]:
    """Every map of every image (N, C, H, W), batch by batch as TopPatches runs them, by a Probe
    (block names) or a forward hook (module outputs)."""
    modules = dict(model.named_modules())
    outs = [n for n in layers if n in modules and role(modules[n]) is None]
    blocks = [n for n in layers if n not in outs]
    got: dict[str, list[Tensor]] = {n: [] for n in layers}
    model.eval()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            seen: dict[str, Tensor] = {}
            handles = [modules[n].register_forward_hook(lambda m, a, o, n=n, seen=seen: seen.setdefault(n, o.clone())) for n in outs]
            with Probe(model, blocks, keep=("z", "a")) as probe:
                model(x[s : s + batch])
            for h in handles:
                h.remove()
            for n in blocks:
                block = probe.trace[n]
                seen[n] = block.a if block.a is not None else block.z
            for n in layers:
                got[n].append(seen[n])
    return {n: torch.cat(v).numpy() for n, v in got.items()}


def brute_force(maps: np.ndarray, k: int) -> list[list[tuple[float, int, tuple[int, int]]]]:
    """Per channel: [(value, index, (i, j))] of the k strongest images, by a Python sort."""
    n, c, _, w = maps.shape
    out = []
    for ch in range(c):
        per_image = []
        for ix in range(n):
            m = maps[ix, ch]
            flat = int(np.argmax(m))  # numpy: the first maximum in row-major order
            per_image.append((float(m.flat[flat]), ix, (flat // w, flat % w)))
        out.append(sorted(per_image, key=lambda t: (-t[0], t[1]))[:k])
    return out


def assert_equals_brute_force(model: nn.Module, layers: list[str], x: Tensor, *, k: int, batch: int) -> TopPatchesResult:
    result = TopPatches(model, layers=layers, k=k).run(x, batch_size=batch)
    maps = all_maps(model, layers, x, batch)
    for name in layers:
        want = brute_force(maps[name], k)
        got = result[name]
        assert len(got) == maps[name].shape[1]
        rf = receptive_field(model, name, tuple(x.shape[1:]))
        for c, hits in enumerate(want):
            assert [(h.value, h.index, h.position) for h in got[c]] == hits, f"{name}[{c}]"
            assert [h.box for h in got[c]] == [rf.box(*p) for _, _, p in hits]
    assert result.inputs == len(x) and result.k == k
    return result


# ---- the oracle -----------------------------------------------------------------------------
def test_module_relus_equal_brute_force() -> None:
    torch.manual_seed(1)
    model = ModuleNet()
    x = images(23)
    r = assert_equals_brute_force(model, ["conv1", "pool", "bn2", "relu3"], x, k=4, batch=5)
    assert r["relu3"].field.size == (8, 8)  # conv 3, pool 2 (jump 2), conv 3: 8; the add's other side: 4


def test_functional_relus_equal_brute_force() -> None:
    torch.manual_seed(1)
    assert_equals_brute_force(FunctionalNet(), ["relu", "conv2", "pool", "relu#2"], images(23), k=5, batch=6)


def test_resnet18_shaped_equals_brute_force() -> None:
    torch.manual_seed(2)
    model, _ = resolve_model("zoo:resnet18-shaped")
    layers = ["relu", "layer1.0.relu#1", "layer2.0.bn2", "layer2"]
    assert_equals_brute_force(model, layers, images(12, size=32), k=3, batch=5)


def test_the_reader_takes_plain_hooks_only_when_modules_output_the_maps() -> None:
    def maxima(name: str, a: Tensor) -> tuple[Tensor, ...]:
        return (a.amax((2, 3)),)

    x = images(4)
    for model, path in ((ModuleNet(), "hooks"), (FunctionalNet(), "probe")):
        reader = LayerReader(model.eval(), ["relu1" if path == "hooks" else "relu", "pool"], maxima)
        with torch.no_grad():
            first, second = reader.read(x), reader.read(x)
        assert reader.path == path
        assert all(torch.equal(first[n][0], second[n][0]) for n in first)


# ---- ties, merge, files ---------------------------------------------------------------------
def test_ties_go_to_the_lower_index_and_the_first_position() -> None:
    torch.manual_seed(0)
    model = ModuleNet()
    with torch.no_grad():
        model.conv1.bias.fill_(0.5)
    x = torch.zeros(6, 3, 12, 12)  # every conv1 map is the constant relu(0.5)
    result = TopPatches(model, layers=["conv1"], k=4).run(x, batch_size=4)
    for hits in result["conv1"]:
        assert [(h.value, h.index, h.position) for h in hits] == [(0.5, i, (0, 0)) for i in range(4)]
    repeats = TopPatches(model, layers=["conv2"], k=9).run(images(23), batch_size=7)["conv2"]
    for hits in repeats:  # images 3, 5, 9 and 17 are one image: equal values in index order
        ix = [h.index for h in hits if h.index in (3, 5, 9, 17)]
        assert ix == sorted(ix)


def test_two_halves_merged_equal_the_whole_run() -> None:
    torch.manual_seed(3)
    model = ModuleNet()
    x = images(29)
    tp = TopPatches(model, layers=["conv1", "relu3"], k=6)
    whole = tp.run(x, batch_size=8)
    # the same batch boundaries as the whole run: a conv's float sums may differ with batch size
    a = tp.run(x[:16], batch_size=8)
    b = tp.run(TensorDataset(x[16:], torch.zeros(13, dtype=torch.long)), batch_size=8, first_index=16)
    for merged in (a.merge(b), b.merge(a)):
        assert merged.inputs == 29
        for name in whole:
            for t in ("values", "indices", "positions"):
                assert torch.equal(getattr(merged[name], t), getattr(whole[name], t)), (name, t)
    with pytest.raises(ValueError, match="the parts share dataset indices"):
        a.merge(a)
    with pytest.raises(ValueError, match="cannot merge results of layers"):
        a.merge(TopPatches(model, layers=["conv1"], k=6).run(x[16:], first_index=16))


def test_any_data_form_gives_the_same_result() -> None:
    torch.manual_seed(4)
    model = ModuleNet()
    x = images(10)
    y = torch.arange(10)
    tp = TopPatches(model, layers=["relu2"], k=3)
    want = tp.run(x, batch_size=4)["relu2"]
    done: list[tuple[int, int | None]] = []
    forms = [(x, y), TensorDataset(x, y), DataLoader(TensorDataset(x), batch_size=4)]
    for data in forms:
        got = tp.run(data, batch_size=None if isinstance(data, DataLoader) else 4, progress=lambda d, t: done.append((d, t)))["relu2"]
        for t in ("values", "indices", "positions"):
            assert torch.equal(getattr(got, t), getattr(want, t))
    assert done == [(4, 10), (8, 10), (10, 10)] * 3


def test_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(5)
    model = ModuleNet()
    result = TopPatches(model, layers=["conv1", "relu3"], k=5).run(images(11), batch_size=4)
    path = tmp_path / "units.safetensors"
    result.save(path)
    back = TopPatches.load(path)
    assert list(back) == list(result) and back.k == 5 and back.inputs == 11
    for name in result:
        assert back[name].field == result[name].field
        assert [back[name][c] for c in range(len(back[name]))] == [result[name][c] for c in range(6)]
        assert back[name].values.dtype == torch.float64
    assert TopPatchesResult.load(path)["conv1"][2] == result["conv1"][2]
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="is not a saved TopPatches result"):
        TopPatches.load(other)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match=r"is not a readable \.safetensors file"):
        TopPatches.load(tmp_path / "junk.safetensors")


# ---- bad input ------------------------------------------------------------------------------
def test_bad_input_is_one_clear_error() -> None:
    model = ModuleNet()
    with pytest.raises(UnknownLayerError, match=r"unknown layer\(s\) \['conv9'\]; valid: conv1, relu1, conv2, bn2, relu2, relu3, fc; or any module name \(its output: pool\)"):
        TopPatches(model, layers=["conv9"])
    for k in (0, -1, 10_001, True, 2.0):
        with pytest.raises(ValueError, match="k must be an int from 1 to 10000"):
            TopPatches(model, layers=["conv1"], k=k)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="layers must be a list of layer names"):
        TopPatches(model, layers="conv1")
    with pytest.raises(ValueError, match="layers is empty"):
        TopPatches(model, layers=[])
    tp = TopPatches(model, layers=["conv1", "fc"])
    with pytest.raises(ReceptiveFieldError, match=r"layer 'fc' has no spatial maps \(its output is \(1, 3\)"):
        tp.run(images(4))
    tp = TopPatches(model, layers=["conv1"])
    with pytest.raises(ValueError, match="the DataLoader draws with a RandomSampler"):
        tp.run(DataLoader(TensorDataset(images(4)), shuffle=True))
    with pytest.raises(ValueError, match="a DataLoader brings its own batch size"):
        tp.run(DataLoader(TensorDataset(images(4))), batch_size=2)
    with pytest.raises(ValueError, match="the data has no inputs"):
        tp.run(torch.zeros(0, 3, 12, 12))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        tp.run(images(4), batch_size=0)
    with pytest.raises(ValueError, match="first_index must be an int >= 0"):
        tp.run(images(4), first_index=-1)
    with pytest.raises(IndexError, match=r"layer 'conv1' has feature maps 0\.\.5, not 6"):
        tp.run(images(4))["conv1"][6]
    nan = images(4)
    nan[2, :, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layer 'conv1' has NaN activations on inputs 0..3"):
        tp.run(nan)


# ---- the model is left as it was ------------------------------------------------------------
def test_no_hook_and_the_model_unchanged() -> None:
    model, _ = resolve_model("zoo:resnet18-shaped")
    model.train()
    model.layer2.eval()
    before = copy.deepcopy(model)
    TopPatches(model, layers=["layer1.0.relu#1", "layer2", "conv1"], k=2).run(images(6, size=32), batch_size=3)
    assert_same_model(model, before)  # also BatchNorm's running stats: the pass ran in eval mode
    assert model.training and model.layer1.training and not model.layer2.training
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("fail_at", [1, 2, 3])  # the probed pass, probe + hooks, hooks alone
def test_no_hook_left_when_the_forward_raises(fail_at: int) -> None:
    class Breaks(ModuleNet):
        calls = 0

        def forward(self, x: Tensor) -> Tensor:
            Breaks.calls += 1
            if Breaks.calls == fail_at + 1:  # the first call is the receptive-field walk
                raise RuntimeError("boom")
            return super().forward(x)

    model = Breaks().train()
    before = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="boom"):
        TopPatches(model, layers=["relu1", "relu3", "pool"]).run(images(12), batch_size=4)
    assert count_hooks(model) == 0
    assert_same_model(model, before)
    assert torch._C._len_torch_function_stack() == 0
