"""Tests for convscope.models.load.resolve_model: zoo, file.py:Name and module:factory specs.

Run: .venv/bin/python -m pytest tests/models/test_resolve.py -q
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from convscope.models.load import LoadError, load_model, resolve_model
from convscope.models.zoo import ZOO, TinyVGG

USER_MODEL = '''
"""A user's model file."""
import torch
from torch import nn

from cs_helper_layers import WIDTH  # a sibling file: the file's folder is importable


class Net(nn.Module):
    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, kernel_size=3, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x):
        return self.conv(x)


def make_net():
    return Net(width=2)


def needs_args(width):
    return Net(width)


def not_a_model():
    return 3


INSTANCE = Net(width=1)
CONSTANT = 3
'''


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Iterator[Path]:
    write(tmp_path / "cs_helper_layers.py", "WIDTH = 4\n")
    yield write(tmp_path / "my_model.py", USER_MODEL)
    sys.modules.pop("cs_helper_layers", None)  # the user file's sibling import


# -- zoo --------------------------------------------------------------------------------


def test_zoo_spec_builds_entry_factory() -> None:
    model, entry = resolve_model("zoo:tiny-vgg")
    assert isinstance(model, TinyVGG) and entry is ZOO["tiny-vgg"]


def test_zoo_spec_unknown_name_lists_names() -> None:
    with pytest.raises(LoadError) as info:
        resolve_model("zoo:lenet")
    assert str(info.value) == (
        "unknown zoo model 'lenet'; valid names: convnetjs-cifar, convnetjs-mnist, "
        "tiny-vgg, zfnet-small, resnet18-shaped"
    )


# -- file.py:Name -----------------------------------------------------------------------


def test_file_class_spec(model_file: Path) -> None:
    path_before = list(sys.path)
    model, entry = resolve_model(f"{model_file}:Net")
    assert entry is None
    assert type(model).__name__ == "Net" and isinstance(model, nn.Module)
    assert model.conv.weight.shape == (4, 1, 3, 3)  # WIDTH came from the sibling module
    out = model(torch.ones(1, 1, 3, 3))
    assert torch.equal(out, torch.full((1, 4, 1, 1), 9.0))  # all-ones 3×3 filter over ones
    assert sys.path == path_before  # the folder was on sys.path only during the import


def test_file_factory_and_instance_specs(model_file: Path) -> None:
    model, _ = resolve_model(f"{model_file}:make_net")
    assert model.conv.weight.shape == (2, 1, 3, 3)
    model, _ = resolve_model(f"{model_file}:INSTANCE")
    assert model.conv.weight.shape == (1, 1, 3, 3)


def test_file_spec_builds_a_fresh_model_each_time(model_file: Path) -> None:
    a, _ = resolve_model(f"{model_file}:Net")
    b, _ = resolve_model(f"{model_file}:Net")
    assert a is not b


def test_relative_file_spec(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(model_file.parent)
    model, _ = resolve_model("my_model.py:make_net")
    assert model.conv.out_channels == 2


def test_load_model_with_file_spec_is_eval(model_file: Path) -> None:
    model, entry, metadata = load_model(f"{model_file}:Net")
    assert (model.training, entry, metadata) == (False, None, {})


# -- package.module:factory -------------------------------------------------------------


def test_module_factory_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "cs_userpkg_a"
    pkg.mkdir()
    write(pkg / "__init__.py", "")
    write(
        pkg / "nets.py",
        """
        from torch import nn

        def build():
            return nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU())

        class Small(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 7)
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("cs_userpkg_a", "cs_userpkg_a.nets"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    model, entry = resolve_model("cs_userpkg_a.nets:build")
    assert entry is None
    assert isinstance(model, nn.Sequential) and model[0].out_channels == 5
    model, _ = resolve_model("cs_userpkg_a.nets:Small")
    assert model.fc.out_features == 7


def test_module_spec_dotted_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "cs_usermod_b.py",
        """
        from torch import nn

        class Builders:
            @staticmethod
            def tiny():
                return nn.Linear(1, 1)
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cs_usermod_b", raising=False)
    model, _ = resolve_model("cs_usermod_b:Builders.tiny")
    assert isinstance(model, nn.Linear)


# -- errors -----------------------------------------------------------------------------


def test_spec_without_colon() -> None:
    with pytest.raises(LoadError) as info:
        resolve_model("resnet18")
    assert str(info.value) == (
        "model spec 'resnet18' needs the form zoo:NAME, path/to/file.py:ClassName or "
        "package.module:factory (zoo names: convnetjs-cifar, convnetjs-mnist, tiny-vgg, "
        "zfnet-small, resnet18-shaped)"
    )
    with pytest.raises(LoadError, match="needs the form"):
        resolve_model("my_model.py:")


def test_file_missing(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as info:
        resolve_model(f"{tmp_path / 'absent.py'}:Net")
    assert str(info.value) == f"model file not found: {tmp_path / 'absent.py'}"


def test_file_import_failure_says_why(tmp_path: Path) -> None:
    bad = write(tmp_path / "broken.py", "import cs_no_such_package_xyz\n")
    modules_before = set(sys.modules)
    with pytest.raises(LoadError) as info:
        resolve_model(f"{bad}:Net")
    assert str(info.value) == (
        f"importing model file {bad} failed: ModuleNotFoundError: "
        "No module named 'cs_no_such_package_xyz'"
    )
    assert set(sys.modules) - modules_before == set()  # the half-imported module is dropped

    syntax = write(tmp_path / "syntax.py", "def f(:\n")
    with pytest.raises(LoadError, match=r"^importing model file .*syntax\.py failed: SyntaxError"):
        resolve_model(f"{syntax}:Net")

    raising = write(tmp_path / "raising.py", "raise RuntimeError('no GPU here')\n")
    with pytest.raises(LoadError) as info:
        resolve_model(f"{raising}:Net")
    assert str(info.value).endswith("failed: RuntimeError: no GPU here")


def test_module_import_failure() -> None:
    with pytest.raises(LoadError) as info:
        resolve_model("cs_no_such_module_q.nets:build")
    assert str(info.value) == (
        "importing module 'cs_no_such_module_q.nets' failed: ModuleNotFoundError: "
        "No module named 'cs_no_such_module_q'"
    )


def test_missing_attribute_lists_model_like_names(model_file: Path) -> None:
    with pytest.raises(LoadError) as info:
        resolve_model(f"{model_file}:Nett")
    # Net (Module subclass), INSTANCE (Module), make_net and not_a_model (zero-arg functions);
    # not: nn/torch (imported), needs_args (takes an argument), CONSTANT (an int)
    assert str(info.value) == (
        f"'{model_file}:Nett': file {model_file} has no attribute 'Nett'; "
        "model-like names it defines: INSTANCE, Net, make_net, not_a_model"
    )


def test_missing_attribute_in_module_without_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "cs_usermod_c.py", "from torch import nn\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cs_usermod_c", raising=False)
    with pytest.raises(LoadError) as info:
        resolve_model("cs_usermod_c:Net")
    assert str(info.value) == (
        "'cs_usermod_c:Net': module 'cs_usermod_c' has no attribute 'Net'; "
        "it defines no nn.Module subclass, instance or zero-arg function"
    )


def test_result_not_a_module(model_file: Path) -> None:
    with pytest.raises(LoadError) as info:
        resolve_model(f"{model_file}:not_a_model")
    assert str(info.value) == (
        f"'{model_file}:not_a_model' returned an object of type int, not an nn.Module"
    )
    with pytest.raises(LoadError) as info:
        resolve_model(f"{model_file}:CONSTANT")
    assert str(info.value) == (
        f"'{model_file}:CONSTANT' is an object of type int, not an nn.Module subclass or a factory"
    )


def test_factory_needing_arguments(model_file: Path) -> None:
    with pytest.raises(LoadError) as info:
        resolve_model(f"{model_file}:needs_args")
    assert str(info.value) == (
        f"'{model_file}:needs_args' needs arguments (width); "
        "name a class or factory callable with no arguments"
    )


def test_factory_that_raises(tmp_path: Path) -> None:
    path = write(
        tmp_path / "boom.py",
        """
        def build():
            raise ValueError("width must be even")
        """,
    )
    with pytest.raises(LoadError) as info:
        resolve_model(f"{path}:build")
    assert str(info.value) == f"building '{path}:build' failed: ValueError: width must be even"


# -- issue 7 case 8: only models are built; exits from user code are reported ------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sys:exit", "'sys:exit' is the built-in function exit, not a model; name an nn.Module"),
        ("os:abort", "'os:abort' is the built-in function abort, not a model"),
        ("os:getpid", "'os:getpid' is the built-in function getpid, not a model"),
        ("builtins:object", "'builtins:object' is the class object, not an nn.Module subclass"),
        ("collections:OrderedDict", "'collections:OrderedDict' is the class OrderedDict, not an"),
        ("os:sep", "'os:sep' is an object of type str, not an nn.Module subclass or a factory"),
    ],
)
def test_spec_naming_no_model_is_refused_unrun(spec: str, message: str) -> None:
    with pytest.raises(LoadError) as info:
        resolve_model(spec)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_exit_and_interrupt_in_user_code_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "exits.py",
        """
        import sys

        def quits():
            sys.exit(3)

        def interrupts():
            raise KeyboardInterrupt

        class Lazy:
            @property
            def net(self):
                raise SystemExit("bye")

        LAZY = Lazy()
        """,
    )
    with pytest.raises(LoadError) as info:
        resolve_model(f"{path}:quits")
    assert str(info.value) == f"building '{path}:quits' failed: it called exit (SystemExit: 3)"
    with pytest.raises(LoadError) as info:
        resolve_model(f"{path}:interrupts")
    assert str(info.value) == (
        f"building '{path}:interrupts' failed: interrupted (KeyboardInterrupt)"
    )
    with pytest.raises(LoadError) as info:
        resolve_model(f"{path}:LAZY.net")
    assert str(info.value) == (
        f"'{path}:LAZY.net': reading 'net' failed: it called exit (SystemExit: 'bye')"
    )


def test_exit_while_importing_user_code_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write(tmp_path / "script.py", "import sys\nsys.exit(0)\n")
    modules_before = set(sys.modules)
    with pytest.raises(LoadError) as info:
        resolve_model(f"{script}:Net")
    assert str(info.value) == (
        f"importing model file {script} failed: it called exit (SystemExit: 0)"
    )
    assert set(sys.modules) - modules_before == set()
    write(tmp_path / "cs_usermod_exit.py", "raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LoadError) as info:
        resolve_model("cs_usermod_exit:Net")
    assert str(info.value) == (
        "importing module 'cs_usermod_exit' failed: interrupted (KeyboardInterrupt)"
    )
