"""Tests for convscope.models.load weights I/O: round trips, refusals, mismatch report, load_model.

Run: .venv/bin/python -m pytest tests/models/test_load.py -q
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import convscope.models.zoo as zoo
from convscope.models.load import LoadError, SaveError, load_model, load_weights, save_weights
from convscope.models.zoo import ConvNetJSMnist, ResNet18Shaped


def mnist_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return ConvNetJSMnist()


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


# -- round trips ------------------------------------------------------------------------


def test_safetensors_round_trip_with_metadata(tmp_path: Path) -> None:
    src, dst = mnist_net(0), mnist_net(1)
    assert not torch.equal(src.conv1.weight, dst.conv1.weight)
    path = tmp_path / "sub" / "w.safetensors"
    save_weights(src, path, metadata={"epoch": "3", "note": "hello"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]  # no temp left
    assert load_weights(dst, path) == {"epoch": "3", "note": "hello"}
    assert_same_state(src, dst)


def test_safetensors_round_trip_without_metadata_gives_empty_dict(tmp_path: Path) -> None:
    src, dst = mnist_net(0), mnist_net(1)
    save_weights(src, tmp_path / "w.safetensors")
    assert load_weights(dst, str(tmp_path / "w.safetensors")) == {}
    assert_same_state(src, dst)


def test_safetensors_round_trip_keeps_batchnorm_buffers(tmp_path: Path) -> None:
    src = ResNet18Shaped()
    with torch.no_grad():
        src.bn1.running_mean.copy_(torch.arange(64.0))
        src.bn1.num_batches_tracked.fill_(7)
    save_weights(src, tmp_path / "r.safetensors")
    dst = ResNet18Shaped()
    load_weights(dst, tmp_path / "r.safetensors")
    assert torch.equal(dst.bn1.running_mean, torch.arange(64.0))
    assert dst.bn1.num_batches_tracked.item() == 7
    assert dst.bn1.num_batches_tracked.dtype == torch.int64
    assert_same_state(src, dst)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_torch_checkpoint_round_trip_bare_state_dict(tmp_path: Path, suffix: str) -> None:
    src, dst = mnist_net(0), mnist_net(1)
    torch.save(src.state_dict(), tmp_path / f"w{suffix}")
    assert load_weights(dst, tmp_path / f"w{suffix}") == {}
    assert_same_state(src, dst)


@pytest.mark.parametrize("nest", ["state_dict", "model"])
def test_torch_checkpoint_nested_state_dict_and_scalar_metadata(tmp_path: Path, nest: str) -> None:
    src, dst = mnist_net(0), mnist_net(1)
    ckpt = {
        nest: src.state_dict(),
        "epoch": 12,
        "lr": 0.5,
        "arch": "convnetjs-mnist",
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.5}]},
    }
    torch.save(ckpt, tmp_path / "ckpt.pt")
    assert load_weights(dst, tmp_path / "ckpt.pt") == {
        "epoch": "12",
        "lr": "0.5",
        "arch": "convnetjs-mnist",
    }
    assert_same_state(src, dst)


def test_dataparallel_module_prefix_is_stripped(tmp_path: Path) -> None:
    src, dst = mnist_net(0), mnist_net(1)
    prefixed = OrderedDict((f"module.{k}", v) for k, v in src.state_dict().items())
    torch.save(prefixed, tmp_path / "dp.pth")
    load_weights(dst, tmp_path / "dp.pth")
    assert_same_state(src, dst)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4, bias=False)
        self.dec = nn.Linear(4, 4, bias=False)
        self.dec.weight = self.enc.weight  # tied: one tensor, two names


def test_tied_weights_saved_once_and_restored(tmp_path: Path) -> None:
    src = Tied()
    with torch.no_grad():
        src.enc.weight.copy_(torch.arange(16.0).reshape(4, 4))
    save_weights(src, tmp_path / "t.safetensors")
    dst = Tied()
    load_weights(dst, tmp_path / "t.safetensors")  # strict, yet the dropped alias is not "missing"
    assert torch.equal(dst.dec.weight, torch.arange(16.0).reshape(4, 4))
    assert dst.dec.weight is dst.enc.weight


# -- refusals ---------------------------------------------------------------------------


def test_checkpoint_with_custom_class_instance_is_refused_unsafe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cs_custom_thing.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cs_custom_thing", raising=False)
    import cs_custom_thing  # type: ignore[import-not-found]

    state = dict(mnist_net(0).state_dict())
    state["thing"] = cs_custom_thing.Thing()
    torch.save(state, tmp_path / "custom.pt")
    model = mnist_net(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoadError) as info:
        load_weights(model, tmp_path / "custom.pt")
    message = str(info.value)
    assert message.startswith(f"unsafe checkpoint: {tmp_path / 'custom.pt'} holds something")
    assert "cs_custom_thing.Thing" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


class RunsCode:
    """Unpickling this object would call os.mkdir(target): proof that nothing runs."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.target,))


def test_checkpoint_with_function_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "should_not_exist"
    torch.save(
        {"conv1.weight": torch.zeros(1), "payload": RunsCode(str(target))}, tmp_path / "e.pt"
    )
    with pytest.raises(LoadError, match=r"^unsafe checkpoint: .*e\.pt .*\(.*GLOBAL posix\.mkdir"):
        load_weights(mnist_net(0), tmp_path / "e.pt")
    assert not target.exists()


def test_pickled_module_object_is_refused_unsafe(tmp_path: Path) -> None:
    torch.save(mnist_net(0), tmp_path / "whole_model.pt")
    with pytest.raises(LoadError, match=r"^unsafe checkpoint: .*ConvNetJSMnist"):
        load_weights(mnist_net(0), tmp_path / "whole_model.pt")


def test_garbage_pt_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(
        LoadError, match=r"^(could not read checkpoint|unsafe checkpoint:) .*junk\.pt"
    ):
        load_weights(mnist_net(0), tmp_path / "junk.pt")


def test_non_tensor_entries_in_state_dict_are_named(tmp_path: Path) -> None:
    state = dict(mnist_net(0).state_dict())
    state["epoch"] = 3  # type: ignore[assignment]
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(LoadError) as info:
        load_weights(mnist_net(0), tmp_path / "mixed.pt")
    assert str(info.value) == (
        f"checkpoint in {tmp_path / 'mixed.pt'} is not a state dict of tensors: "
        "non-tensor entries 'epoch' (int)"
    )


def test_checkpoint_that_is_not_a_mapping(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(LoadError) as info:
        load_weights(mnist_net(0), tmp_path / "list.pt")
    assert str(info.value) == (
        f"checkpoint {tmp_path / 'list.pt'} holds an object of type list, not a state dict"
    )


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as info:
        load_weights(mnist_net(0), tmp_path / "nope.safetensors")
    assert str(info.value) == f"weights file not found: {tmp_path / 'nope.safetensors'}"
    (tmp_path / "w.h5").write_bytes(b"\x00")
    with pytest.raises(LoadError) as info:
        load_weights(mnist_net(0), tmp_path / "w.h5")
    assert str(info.value) == (
        f"unknown weights file type '.h5' for {tmp_path / 'w.h5'}; "
        "expected one of .safetensors, .pt, .pth, .bin"
    )


def test_corrupt_safetensors_file(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(LoadError, match=r"^could not read safetensors file .*bad\.safetensors"):
        load_weights(mnist_net(0), tmp_path / "bad.safetensors")


# -- mismatch report --------------------------------------------------------------------


def mismatched_state() -> dict[str, torch.Tensor]:
    state = dict(mnist_net(0).state_dict())
    del state["fc.bias"]  # missing
    state["extra.weight"] = torch.zeros(2)  # unexpected
    state["conv1.weight"] = torch.zeros(4, 1, 5, 5)  # mis-shaped (expected 8×1×5×5)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_mismatch_is_one_error_naming_all_three(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    if suffix == ".pt":
        torch.save(mismatched_state(), path)
    else:
        from safetensors.torch import save_file

        save_file(mismatched_state(), str(path))
    model = mnist_net(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoadError) as info:
        load_weights(model, path)
    assert str(info.value) == (
        f"weights in {path} don't match ConvNetJSMnist:\n"
        "  missing keys (1): fc.bias\n"
        "  unexpected keys (1): extra.weight\n"
        "  mis-shaped keys (1): conv1.weight: expected (8, 1, 5, 5), found (4, 1, 5, 5)"
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_non_strict_ignores_missing_and_extra_but_not_shapes(tmp_path: Path) -> None:
    state = mismatched_state()
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(LoadError) as info:
        load_weights(mnist_net(1), tmp_path / "m.pt", strict=False)
    assert str(info.value).endswith(
        "\n  mis-shaped keys (1): conv1.weight: expected (8, 1, 5, 5), found (4, 1, 5, 5)"
    )
    assert "missing" not in str(info.value)

    state["conv1.weight"] = torch.full((8, 1, 5, 5), 0.25)
    torch.save(state, tmp_path / "ok.pt")
    model = mnist_net(1)
    old_fc_bias = model.fc.bias.detach().clone()
    load_weights(model, tmp_path / "ok.pt", strict=False)
    assert torch.equal(model.conv1.weight, torch.full((8, 1, 5, 5), 0.25))
    assert torch.equal(model.fc.bias, old_fc_bias)  # missing key: left as it was


# -- save errors ------------------------------------------------------------------------


def test_save_weights_refuses_other_suffix_and_non_string_metadata(tmp_path: Path) -> None:
    with pytest.raises(SaveError) as info:
        save_weights(mnist_net(0), tmp_path / "w.pt")
    assert str(info.value) == f"save_weights writes .safetensors files; got {tmp_path / 'w.pt'}"
    with pytest.raises(SaveError) as info:
        save_weights(mnist_net(0), tmp_path / "w.safetensors", metadata={"epoch": 3})  # type: ignore[dict-item]
    assert str(info.value) == "metadata keys and values must be strings; not so for: ['epoch']"
    assert list(tmp_path.iterdir()) == []


# -- load_model -------------------------------------------------------------------------


def test_load_model_zoo_without_shipped_file_is_random_and_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)  # an empty weights folder
    model, entry, metadata = load_model("zoo:convnetjs-cifar")
    assert entry is zoo.ZOO["convnetjs-cifar"]
    assert metadata == {}
    assert not model.training and not any(m.training for m in model.modules())


def test_load_model_zoo_uses_shipped_file_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    torch.manual_seed(5)
    trained = zoo.ConvNetJSCifar()
    save_weights(trained, tmp_path / "convnetjs-cifar.safetensors", metadata={"acc": "0.71"})
    model, _, metadata = load_model("zoo:convnetjs-cifar")
    assert metadata == {"acc": "0.71"}
    assert_same_state(trained, model)


def test_load_model_explicit_weights_win(tmp_path: Path) -> None:
    src = mnist_net(7)
    torch.save({"state_dict": src.state_dict(), "epoch": 2}, tmp_path / "c.pt")
    model, entry, metadata = load_model("zoo:convnetjs-mnist", weights=tmp_path / "c.pt")
    assert entry is not None and entry.name == "convnetjs-mnist"
    assert metadata == {"epoch": "2"}
    assert_same_state(src, model)
    assert not model.training


def test_load_model_explicit_weights_mismatch_raises(tmp_path: Path) -> None:
    save_weights(mnist_net(0), tmp_path / "mnist.safetensors")
    with pytest.raises(LoadError, match="don't match TinyVGG"):
        load_model("zoo:tiny-vgg", weights=str(tmp_path / "mnist.safetensors"))


def test_mismatch_message_lists_at_most_20_keys_per_kind(tmp_path: Path) -> None:
    """A file with thousands of stray keys gives a readable message, not one naming them all."""
    from safetensors.torch import save_file

    path = tmp_path / "many.safetensors"
    save_file({f"stray.{i}": torch.zeros(1) for i in range(5000)}, str(path))
    with pytest.raises(LoadError) as info:
        load_weights(nn.Linear(1, 1), path)
    text = str(info.value)
    assert "unexpected keys (5000): stray.0, stray.1, " in text
    assert text.count("stray.") == 20 and text.endswith(", ... (4980 more)")
    assert "missing keys (2): weight, bias" in text and len(text) < 1000
