"""Safe model and weights loading: model specs, .safetensors, and weights-only torch checkpoints.

A model is named by a spec string:

    zoo:NAME                    a zoo net (convscope.models.zoo.ZOO)
    path/to/file.py:ClassName   a class (or zero-arg factory) in a Python file
    package.module:factory      a class (or zero-arg factory) in an importable module

Weights load from ``.safetensors`` (the safetensors library) or ``.pt/.pth/.bin`` through
``torch.load(..., weights_only=True)`` only: never plain pickle, so a checkpoint can't run
code. Every failure is one LoadError with a message meant for the user.

    >>> from convscope.models.load import load_model
    >>> model, entry, metadata = load_model("zoo:convnetjs-cifar")   # eval mode, on CPU
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import pickle
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from convscope.models.names import zoo_names
from convscope.models.zoo import UnknownModelError, ZooEntry, get_entry

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_NESTED_KEYS = ("state_dict", "model")  # where training scripts usually nest the state dict
_SPEC_FORMS = "zoo:NAME, path/to/file.py:ClassName or package.module:factory"
_WANT = "name an nn.Module subclass, an nn.Module instance or a zero-argument factory returning one"
# C-level callables: never a model factory, and some end the process (sys.exit, os.abort)
_BUILTIN_CALLABLES = (
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


class LoadError(ValueError):
    """A model or weights file that can't be loaded; the message says why and what to do."""


class SaveError(ValueError):
    """Weights that can't be saved as asked (wrong suffix, non-string metadata)."""


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


def load_weights(
    model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True
) -> dict[str, str]:
    """Load the weights in ``path`` into ``model`` in place and return the file's metadata.

    ``.safetensors``: the metadata is the file header's ``__metadata__``. ``.pt/.pth/.bin``:
    read with ``torch.load(weights_only=True)``; the state dict may be bare or nested under
    ``"state_dict"``/``"model"``, and the metadata is then the checkpoint's other top-level
    str/int/float/bool entries (e.g. ``epoch``) as strings. A ``module.`` prefix on every key
    (DataParallel) is stripped. Any mismatch with the model raises one LoadError listing
    missing, unexpected and mis-shaped keys; ``strict=False`` tolerates missing and
    unexpected keys but never a shape mismatch.
    """
    file = Path(path)
    if not file.is_file():
        raise LoadError(f"weights file not found: {file}")
    suffix = file.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state, metadata = _read_safetensors(file)
    elif suffix in TORCH_SUFFIXES:
        state, metadata = _read_torch_checkpoint(file)
    else:
        known = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise LoadError(
            f"unknown weights file type {file.suffix!r} for {file}; expected one of {known}"
        )
    state = _strip_prefix(state, "module.")
    _check_tensors(state, file=file)
    _check_match(model, state, file=file, strict=strict)
    try:
        model.load_state_dict(state, strict=False)  # keys, shapes and kinds were checked above
    except (RuntimeError, TypeError, ValueError) as err:  # e.g. a dtype torch can't convert
        reason = " ".join(str(err).split())[:300]
        raise LoadError(f"could not load the weights in {file}: {reason}") from err
    return metadata


def _check_tensors(state: Mapping[str, torch.Tensor], *, file: Path) -> None:
    """Refuse tensors that can't be copied into parameters: sparse, quantized, meta, complex."""
    for key, t in state.items():
        problem = _tensor_problem(t)
        if problem is not None:
            raise LoadError(
                f"weights in {file}: {key!r} is {problem}; convscope loads dense real CPU tensors"
            )


def _tensor_problem(t: torch.Tensor) -> str | None:
    if t.layout != torch.strided:
        return f"layout {t.layout}"
    if t.is_quantized:
        return "a quantized tensor"
    if t.device.type != "cpu":
        return f"on device {t.device.type}"
    if t.is_complex():
        return f"dtype {t.dtype}"
    return None


def save_weights(
    model: nn.Module, path: str | os.PathLike[str], *, metadata: dict[str, str] | None = None
) -> None:
    """Save ``model``'s state dict to ``path`` (must end in ``.safetensors``), with ``metadata``.

    The file is written beside its destination and renamed into place, so a reader never
    sees half a file. Tensors that share memory (tied weights) are stored once.
    """
    file = Path(path)
    if file.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise SaveError(f"save_weights writes .safetensors files; got {file}")
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise SaveError(f"metadata keys and values must be strings; not so for: {bad}")
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        safetensors.torch.save_model(
            model, str(tmp), metadata=None if metadata is None else dict(metadata)
        )
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def _read_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safetensors.safe_open(str(file), framework="pt", device="cpu") as f:
            metadata: dict[str, str] = dict(f.metadata() or {})
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    # TypeError/ValueError/RuntimeError: torch refusing what the header declares, e.g. a shape
    # (0, 2**63) that safetensors accepts (0 elements) but torch's int64 sizes can't hold
    except (safetensors.SafetensorError, OSError, TypeError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise LoadError(f"could not read safetensors file {file}: {reason}") from err
    return state, metadata


def _read_torch_checkpoint(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise LoadError(
            f"unsafe checkpoint: {file} holds something other than tensors and plain "
            f"containers ({_unpickler_reason(err)}); convscope loads only weights "
            "(torch.load weights_only=True). Save a state dict, or convert it to .safetensors."
        ) from err
    except Exception as err:  # a damaged file can fail anywhere inside the unpickler
        reason = " ".join(str(err).split())[:300]  # torch's messages can run over many lines
        raise LoadError(
            f"could not read checkpoint {file}: {type(err).__name__}: {reason}"
        ) from err
    return _find_state_dict(obj, file=file)


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    """The one informative line of torch's long weights-only refusal message."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    boilerplate = ("Weights only load failed", "(1)", "(2)", "Check the documentation", "Please")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    reason = reasons[0] if reasons else "refused by the weights-only unpickler"
    return reason.split(". Please", 1)[0].rstrip(".")


def _find_state_dict(obj: object, *, file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Pick the state dict out of a loaded checkpoint: bare, or under "state_dict"/"model"."""
    if not isinstance(obj, Mapping):
        raise LoadError(
            f"checkpoint {file} holds an object of type {type(obj).__name__}, not a state dict"
        )
    nested = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
    state: Mapping[Any, Any] = obj if nested is None else obj[nested]
    metadata: dict[str, str] = {}
    if nested is not None:  # the checkpoint's scalar entries (epoch, arch, ...) as metadata
        metadata = {
            str(k): str(v) for k, v in obj.items() if isinstance(v, str | int | float | bool)
        }
    not_tensors = [
        f"{k!r} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor)
    ]
    if not_tensors:
        where = "checkpoint" if nested is None else f"checkpoint's {nested!r} entry"
        raise LoadError(
            f"{where} in {file} is not a state dict of tensors: non-tensor entries "
            f"{', '.join(not_tensors[:10])}{' ...' if len(not_tensors) > 10 else ''}"
        )
    return {str(k): v for k, v in state.items()}, metadata


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from every key when every key has it (DataParallel's ``module.``)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _check_match(
    model: nn.Module, state: dict[str, torch.Tensor], *, file: Path, strict: bool
) -> None:
    """Raise ONE LoadError naming every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _alias_present(k, expected, state)]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    problems: list[str] = []
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {_first(missing, ', ')}")
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_first(unexpected, ', ')}")
    if misshaped:
        problems.append(f"mis-shaped keys ({len(misshaped)}): {_first(misshaped, '; ')}")
    if problems:
        raise LoadError(
            f"weights in {file} don't match {type(model).__name__}:\n  " + "\n  ".join(problems)
        )


def _first(items: list[str], sep: str, limit: int = 20) -> str:
    """The first `limit` items joined; a file with 100,000 stray keys gives a readable message."""
    more = f"{sep}... ({len(items) - limit} more)" if len(items) > limit else ""
    return sep.join(item[:200] for item in items[:limit]) + more


def _alias_present(
    key: str, expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> bool:
    """True when ``key`` is a tied tensor (same memory) of another key the file does hold."""
    t = expected[key]
    if t.numel() == 0:
        return False
    ident = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
    for other, u in expected.items():
        if (
            other != key
            and other in state
            and u.numel() > 0
            and (u.untyped_storage().data_ptr(), u.storage_offset(), u.shape, u.stride()) == ident
        ):
            return True
    return False


# --------------------------------------------------------------------------------------
# Model specs
# --------------------------------------------------------------------------------------


def resolve_model(spec: str) -> tuple[nn.Module, ZooEntry | None]:
    """Build the model named by ``spec`` (randomly initialised); the ZooEntry for ``zoo:`` specs.

    ``zoo:NAME`` builds a zoo net. ``path/to/file.py:Name`` imports the file (its folder is
    on ``sys.path`` during the import, so sibling imports work). ``package.module:Name``
    imports the module. ``Name`` may be an ``nn.Module`` subclass, a zero-argument factory
    returning one, or an ``nn.Module`` instance; a dotted ``Name`` reaches nested attributes.
    """
    if not isinstance(spec, str):
        raise LoadError(
            f"model spec must be a string like {_SPEC_FORMS}; got {type(spec).__name__}"
        )
    if spec.startswith("zoo:"):
        try:
            entry = get_entry(spec[len("zoo:") :])
        except UnknownModelError as err:
            raise LoadError(str(err)) from None
        return entry.factory(), entry
    where, colon, attr = spec.rpartition(":")
    if not colon or not where or not attr:
        raise LoadError(
            f"model spec {spec!r} needs the form {_SPEC_FORMS} "
            f"(zoo names: {', '.join(zoo_names())})"
        )
    module = _import_file(where) if where.endswith(".py") else _import_module(where)
    target = _get_attr(module, attr, spec=spec)
    return _build(target, spec=spec), None


def load_model(
    spec: str, *, weights: str | os.PathLike[str] | None = None
) -> tuple[nn.Module, ZooEntry | None, dict[str, str]]:
    """Resolve ``spec``, load weights, switch to eval mode; return (model, zoo entry, metadata).

    Weights come from ``weights`` when given. Otherwise a zoo net with shipped weights
    (``ZooEntry.weights``) gets them when that file is present; when the file is absent
    (e.g. before the training script has produced it) the net stays randomly initialised
    and the metadata is empty: skipped quietly, by design, so the zoo works without it.
    """
    model, entry = resolve_model(spec)
    metadata: dict[str, str] = {}
    if weights is not None:
        metadata = load_weights(model, weights)
    elif entry is not None and entry.weights_path is not None and entry.weights_path.is_file():
        metadata = load_weights(model, entry.weights_path)
    model.eval()
    return model, entry, metadata


def _import_file(where: str) -> ModuleType:
    file = Path(where).expanduser()
    if not file.is_file():
        raise LoadError(f"model file not found: {file}")
    file = file.resolve()
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:12]
    name = f"_convscope_user_{file.stem.replace('-', '_')}_{digest}"
    import_spec = importlib.util.spec_from_file_location(name, file)
    if import_spec is None or import_spec.loader is None:
        raise LoadError(f"can't import {file} as a Python module")
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up here
    folder = str(file.parent)
    sys.path.insert(0, folder)
    try:
        import_spec.loader.exec_module(module)
    except BaseException as err:  # SystemExit/KeyboardInterrupt from user code: report, don't obey
        sys.modules.pop(name, None)
        raise LoadError(f"importing model file {file} failed: {_describe(err)}") from err
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _import_module(where: str) -> ModuleType:
    try:
        return importlib.import_module(where)
    except BaseException as err:  # SystemExit/KeyboardInterrupt from user code: report, don't obey
        raise LoadError(f"importing module {where!r} failed: {_describe(err)}") from err


_MISSING = object()


def _get_attr(module: ModuleType, attr: str, *, spec: str) -> object:
    target: object = module
    for part in attr.split("."):
        try:
            found = getattr(target, part, _MISSING)
        except BaseException as err:  # a property or module __getattr__ of user code
            raise LoadError(f"{spec!r}: reading {part!r} failed: {_describe(err)}") from err
        if found is _MISSING:
            candidates = _model_like_names(module)
            hint = (
                f"model-like names it defines: {', '.join(candidates)}"
                if candidates
                else "it defines no nn.Module subclass, instance or zero-arg function"
            )
            raise LoadError(f"{spec!r}: {_module_label(module)} has no attribute {attr!r}; {hint}")
        target = found
    return target


def _module_label(module: ModuleType) -> str:
    file = getattr(module, "__file__", None)
    return (
        f"file {file}"
        if module.__name__.startswith("_convscope_user_")
        else f"module {module.__name__!r}"
    )


def _model_like_names(module: ModuleType) -> list[str]:
    """Names defined in ``module`` that could be a model: Module subclasses/instances, zero-arg functions."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        defined_here = getattr(value, "__module__", None) == module.__name__  # not imported
        is_class = isinstance(value, type) and issubclass(value, nn.Module)
        is_factory = inspect.isfunction(value) and _callable_without_args(value)
        if isinstance(value, nn.Module) or (defined_here and (is_class or is_factory)):
            names.append(name)
    return sorted(names)


def _callable_without_args(fn: object) -> bool:
    try:
        inspect.signature(fn).bind()  # type: ignore[arg-type]
    except TypeError:
        return False
    except ValueError:  # no signature available (some builtins): let the call decide
        return True
    return True


def _build(target: object, *, spec: str) -> nn.Module:
    """The model ``target`` names: an nn.Module instance as is, else the result of calling it.

    Only an nn.Module subclass or a zero-argument callable returning an nn.Module is called;
    other classes and built-in functions (``sys:exit``, ``os:abort``) are refused unrun.
    SystemExit and KeyboardInterrupt raised by the user's code become a LoadError too.
    """
    if isinstance(target, nn.Module):
        return target
    if isinstance(target, type) and not issubclass(target, nn.Module):
        raise LoadError(
            f"{spec!r} is the class {target.__name__}, not an nn.Module subclass; {_WANT}"
        )
    if isinstance(target, _BUILTIN_CALLABLES):
        raise LoadError(
            f"{spec!r} is the built-in function {getattr(target, '__name__', '?')}, "
            f"not a model; {_WANT}"
        )
    if not callable(target):
        raise LoadError(
            f"{spec!r} is an object of type {type(target).__name__}, "
            "not an nn.Module subclass or a factory"
        )
    if not _callable_without_args(target):
        raise LoadError(
            f"{spec!r} needs arguments {inspect.signature(target)}; "
            "name a class or factory callable with no arguments"
        )
    try:
        model = target()
    except BaseException as err:  # SystemExit/KeyboardInterrupt from user code: report, don't obey
        raise LoadError(f"building {spec!r} failed: {_describe(err)}") from err
    if not isinstance(model, nn.Module):
        raise LoadError(
            f"{spec!r} returned an object of type {type(model).__name__}, not an nn.Module"
        )
    return model


def _describe(err: BaseException) -> str:
    """One line for an exception raised by user code, SystemExit and KeyboardInterrupt included."""
    if isinstance(err, SystemExit):
        return f"it called exit (SystemExit: {err.code!r})"
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    return " ".join(f"{type(err).__name__}: {err}".split())
