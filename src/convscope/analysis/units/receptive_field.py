"""Receptive fields from the model itself (size, jump, start of a layer's units) — https://distill.pub/2019/computing-receptive-fields/

    rf = receptive_field(model, "conv2", (3, 112, 112))    # input_size = (C, H, W)
    rf.size, rf.jump, rf.start                              # (h, w) each; start = centre of unit (0, 0)
    box(rf, i, j, (112, 112))                               # (y0, x0, y1, x1): pixels under unit (i, j), clipped

Nothing is hard-coded to an architecture (DeepVis's was "woefully hardcoded" to CaffeNet): one
forward of a zero image runs under a `TorchFunctionMode` that gives every tensor the field of
its units, per axis the first input pixel unit 0 sees, how many pixels one unit sees (size) and
how far apart neighbouring units' fields are (jump), as Araujo et al. compose them:

    conv / pool (kernel k, stride s, padding p, dilation d):  size += (d·(k-1))·jump
                                                               first -= p·jump;  jump *= s
    F.pad (left p; negative crops):                           first -= p·jump
    an op that keeps the maps' H×W (ReLU, BN, add, mul, cat over channels, dropout, ...):
        the union of its inputs' fields (residual adds, concatenation: the largest field);
        a 1×1 map broadcast over the maps (squeeze-excitation) joins every unit's field.

Known ops: conv2d (padding numbers, 'same', 'valid'; the padding modes through F.pad), max_pool2d
(module or functional, with indices), avg_pool2d, lp_pool2d, adaptive avg/max pooling when the
bins are equal (H divisible by the output size), pad (constant, reflect, replicate). A tensor that
is no longer a map (flatten, linear, mean over H×W) may depend on every pixel; a map made from
one again sees the whole image. Ops that move pixels (interpolate, flip, roll, transposing H and
W, pixel shuffle, transposed conv, crops by indexing, circular padding, unequal adaptive bins)
make the field unknown: asking for such a layer raises ReceptiveFieldError naming the op.
BatchNorm is per position in eval mode (the walk runs in eval mode); GroupNorm, InstanceNorm and
LayerNorm statistics mix positions but are counted as per position, as the field is usually meant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from convscope.analysis.units.base import block_map, eval_mode, split_layers
from convscope.capture import Block, HookSet, Probe


class ReceptiveFieldError(ValueError):
    """A receptive field that cannot be derived; the message names the layer and the reason."""


@dataclass(frozen=True)
class ReceptiveField:
    """The input pixels under each unit of one layer's maps (unit (i, j) of any channel)."""

    layer: str
    size: tuple[int, int]  # (h, w): input pixels one unit sees, before clipping to the image
    jump: tuple[int, int]  # (h, w): input pixels between neighbouring units (product of strides)
    start: tuple[float, float]  # centre of unit (0, 0)'s field in input pixels (< 0 with padding)
    map_size: tuple[int, int]  # (H', W') of the layer's maps for this input size
    input_size: tuple[int, int]  # (H, W) of the image the field was derived for

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1), half-open, of unit (i, j), clipped to the input image."""
        return box(self, i, j, self.input_size)

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "size": list(self.size), "jump": list(self.jump),
            "start": list(self.start), "map_size": list(self.map_size), "input_size": list(self.input_size),
        }  # fmt: skip

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ReceptiveField:
        def pair(key: str, kind: type) -> Any:
            v = d[key]
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(e, int | float) for e in v)):
                raise ValueError(f"receptive field {key!r} must be a pair of numbers, got {v!r}")
            return (kind(v[0]), kind(v[1]))

        return ReceptiveField(
            layer=str(d["layer"]), size=pair("size", int), jump=pair("jump", int), start=pair("start", float),
            map_size=pair("map_size", int), input_size=pair("input_size", int),
        )  # fmt: skip


def box(rf: ReceptiveField, i: int, j: int, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1), half-open, of the pixels unit (i, j) sees, clipped to an image_hw image."""
    h, w = image_hw
    if not (0 <= i < rf.map_size[0] and 0 <= j < rf.map_size[1]):
        raise ValueError(f"unit ({i}, {j}) is outside layer {rf.layer!r}'s {rf.map_size[0]}×{rf.map_size[1]} maps")
    y0 = int(rf.start[0] - (rf.size[0] - 1) / 2) + i * rf.jump[0]  # exact: start is a whole or half number
    x0 = int(rf.start[1] - (rf.size[1] - 1) / 2) + j * rf.jump[1]
    y1, x1 = y0 + rf.size[0], x0 + rf.size[1]
    return max(y0, 0), max(x0, 0), min(max(y1, 0), h), min(max(x1, 0), w)


# ---- the walk -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Axis:
    first: int  # first input pixel unit 0 sees
    size: int  # pixels one unit sees
    jump: int  # pixels between neighbouring units
    n: int  # units along this axis


@dataclass(frozen=True)
class _Map:
    y: _Axis
    x: _Axis


@dataclass(frozen=True)
class _Unknown:
    reason: str


class _Global:
    """A tensor that is not a map but may depend on every pixel (after flatten, linear, ...)."""


_GLOBAL = _Global()
_Field = _Map | _Unknown | _Global
_MOVES_PIXELS = frozenset({
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "grid_sample", "affine_grid",
    "flip", "fliplr", "flipud", "roll", "rot90", "pixel_shuffle", "pixel_unshuffle", "fold", "unfold",
    "conv_transpose2d", "movedim", "moveaxis", "max_unpool2d",
})  # fmt: skip


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    t = tuple(v)
    return (int(t[0]), int(t[0])) if len(t) == 1 else (int(t[0]), int(t[1]))


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str, default: Any) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name, default)


def _window(f: _Map, k: Any, s: Any, p: Any, d: Any, out: Tensor) -> _Map:
    """Compose a conv/pool window (kernel, stride, padding, dilation) onto the input's field."""
    (ky, kx), (dy, dx), (py, px) = _pair(k), _pair(d), _pair(p)
    sy, sx = _pair(k if s is None or (isinstance(s, list | tuple) and not s) else s)
    h, w = out.shape[-2:]

    def axis(a: _Axis, k: int, s: int, p: int, d: int, n: int) -> _Axis:
        return _Axis(first=a.first - p * a.jump, size=a.size + d * (k - 1) * a.jump, jump=a.jump * s, n=n)

    return _Map(axis(f.y, ky, sy, py, dy, h), axis(f.x, kx, sx, px, dx, w))


def _conv(f: _Map, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> _Field:
    weight = _arg(args, kwargs, 1, "weight", None)  # (C_out, C_in/groups, kh, kw)
    k = tuple(weight.shape[-2:])
    d = _pair(_arg(args, kwargs, 5, "dilation", 1))
    p: Any = _arg(args, kwargs, 4, "padding", 0)
    if p == "valid":
        p = 0
    elif p == "same":  # torch pads d·(k-1) in all, the odd pixel on the right
        p = ((d[0] * (k[0] - 1)) // 2, (d[1] * (k[1] - 1)) // 2)
    return _window(f, k, _arg(args, kwargs, 3, "stride", 1), p, d, out)


def _max_pool(f: _Map, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> _Field:
    k = _arg(args, kwargs, 1, "kernel_size", None)
    return _window(f, k, _arg(args, kwargs, 2, "stride", None), _arg(args, kwargs, 3, "padding", 0),
                   _arg(args, kwargs, 4, "dilation", 1), out)  # fmt: skip


def _avg_pool(f: _Map, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> _Field:
    k = _arg(args, kwargs, 1, "kernel_size", None)
    return _window(f, k, _arg(args, kwargs, 2, "stride", None), _arg(args, kwargs, 3, "padding", 0), 1, out)


def _lp_pool(f: _Map, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> _Field:
    k = _arg(args, kwargs, 2, "kernel_size", None)
    return _window(f, k, _arg(args, kwargs, 3, "stride", None), 0, 1, out)


def _adaptive(f: _Map, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> _Field:
    (h, w), (oh, ow) = (f.y.n, f.x.n), tuple(out.shape[-2:])
    if h % oh or w % ow:
        return _Unknown(f"adaptive pooling of {h}×{w} maps to {oh}×{ow} has unequal bins")
    k = (h // oh, w // ow)
    return _window(f, k, k, 0, 1, out)


def _pad(f: _Map, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> _Field:
    pad = list(_arg(args, kwargs, 1, "pad", ()))
    if _arg(args, kwargs, 2, "mode", "constant") == "circular":
        return _Unknown("circular padding wraps the field around the image border")
    left = pad[0] if pad else 0
    top = pad[2] if len(pad) >= 4 else 0
    if len(pad) > 4:
        return _Unknown("F.pad over more than the last two dimensions")
    h, w = out.shape[-2:]
    y, x = f.y, f.x
    return _Map(_Axis(y.first - top * y.jump, y.size, y.jump, h), _Axis(x.first - left * x.jump, x.size, x.jump, w))


_SPATIAL: dict[str, Callable[[_Map, tuple[Any, ...], dict[str, Any], Tensor], _Field]] = {
    "conv2d": _conv,
    "max_pool2d": _max_pool, "max_pool2d_with_indices": _max_pool, "_max_pool2d": _max_pool,
    "avg_pool2d": _avg_pool, "lp_pool2d": _lp_pool, "pad": _pad,
    "adaptive_avg_pool2d": _adaptive, "adaptive_max_pool2d": _adaptive,
    "adaptive_max_pool2d_with_indices": _adaptive, "_adaptive_max_pool2d": _adaptive,
}  # fmt: skip


def _union_axis(axes: list[_Axis], n: int, image: int) -> _Axis | str:
    """Every unit's field joined over the inputs (a 1-unit input is broadcast to all n units)."""
    full = [a for a in axes if a.n == n]
    if len(full) + sum(a.n == 1 for a in axes) < len(axes):
        return f"maps of {sorted({a.n for a in axes})} units become {n}"
    jumps = {a.jump for a in full}
    if len(jumps) > 1:
        return f"inputs with different jumps {sorted(jumps)} are combined"
    jump = jumps.pop() if jumps else 1
    spread = [a for a in axes if a.n != n]  # one unit seen by all n: unit n-1 must reach it too
    first = min([a.first for a in full] + [a.first - (n - 1) * jump for a in spread])
    end = max(a.first + a.size for a in axes)
    return _Axis(first, end - first, jump, n)


def _whole(n: int, image: int) -> _Axis:
    """Every one of n units sees all `image` pixels."""
    return _Axis(first=-(n - 1), size=image + n - 1, jump=1, n=n)


class _Walk(TorchFunctionMode):
    """Gives every tensor made during the forward the field of its units (kept by id, with the
    tensor held so the id stays its own)."""

    def __init__(self, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.image_hw = image_hw
        self.fields: dict[int, tuple[Tensor, _Field]] = {}

    def get(self, t: Tensor) -> _Field | None:
        hit = self.fields.get(id(t))
        return hit[1] if hit is not None and hit[0] is t else None

    def set(self, t: Tensor, f: _Field) -> None:
        self.fields[id(t)] = (t, f)

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        ins = [f for t in _tensors((args, kwargs)) if (f := self.get(t)) is not None]
        out = func(*args, **kwargs)
        if ins:
            fname = getattr(func, "__name__", "")
            name = fname if fname.startswith("__") else fname.rstrip("_")  # relu_ → relu
            outs = [args[0]] if name == "__setitem__" else list(_tensors(out))
            for t in outs:
                self.set(t, self._rule(name, args, kwargs, ins, t))
        return out

    def _rule(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], ins: list[_Field], out: Tensor) -> _Field:
        unknown = next((f for f in ins if isinstance(f, _Unknown)), None)
        if unknown is not None:
            return unknown
        if out.dim() != 4:
            return _GLOBAL
        h, w = out.shape[-2:]
        first = self.get(args[0]) if args and isinstance(args[0], Tensor) else None
        if name in _SPATIAL and isinstance(first, _Map):
            return _SPATIAL[name](first, args, kwargs, out)
        if name in _MOVES_PIXELS or _swaps_hw(name, args, kwargs):
            return _Unknown(f"{name} moves pixels (the walk knows conv, pooling, pad and per-position ops)")
        maps = [f for f in ins if isinstance(f, _Map)]
        (ih, iw) = self.image_hw
        maps += [_Map(_whole(1, ih), _whole(1, iw)) for f in ins if isinstance(f, _Global)]
        if not any(isinstance(f, _Map) for f in ins):
            return _Map(_whole(h, ih), _whole(w, iw))
        y, x = _union_axis([m.y for m in maps], h, ih), _union_axis([m.x for m in maps], w, iw)
        if isinstance(y, str) or isinstance(x, str):
            return _Unknown(f"{name}: {y if isinstance(y, str) else x} (an op the walk does not know)")
        return _Map(y, x)


def _swaps_hw(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """transpose/permute that moves the H or W axis of a (B, C, H, W) tensor."""
    if name in ("transpose", "swapaxes", "swapdims"):
        dims = {int(d) % 4 for d in args[1:3] if isinstance(d, int)} | {
            int(v) % 4 for k, v in kwargs.items() if k.startswith("dim") and isinstance(v, int)
        }
        return bool(dims & {2, 3}) and len(dims) == 2
    if name == "permute":
        order: Any = args[1:] if len(args) > 2 else (args[1] if len(args) == 2 else kwargs.get("dims", ()))
        return [int(d) % 4 for d in order][2:] != [2, 3]
    return False


def _tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


# ---- public ---------------------------------------------------------------------------------
def receptive_field(model: nn.Module, layer: str, input_size: Sequence[int]) -> ReceptiveField:
    """The receptive field of `layer`'s units for (C, H, W) inputs; see the module docstring."""
    if isinstance(layer, list | tuple):
        raise TypeError("receptive_field takes one layer name; receptive_fields takes a list")
    return receptive_fields(model, [layer], input_size)[layer]


def receptive_fields(model: nn.Module, layers: list[str] | tuple[str, ...], input_size: Sequence[int]) -> dict[str, ReceptiveField]:
    """Receptive fields of several layers from one forward of a zero (1, C, H, W) image."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"receptive_field needs an nn.Module, got {type(model).__name__}")
    size = tuple(input_size) if isinstance(input_size, Sequence) and not isinstance(input_size, str) else ()
    if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"input_size must be (C, H, W) positive ints, got {input_size!r}")
    blocks, outputs = split_layers(model, layers)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    x = torch.zeros((1, *size), dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else None)  # fmt: skip
    walk = _Walk((size[1], size[2]))
    walk.set(x, _Map(_Axis(0, 1, 1, size[1]), _Axis(0, 1, 1, size[2])))
    found: dict[str, tuple[_Field | None, tuple[int, ...]]] = {}

    def seen(block: Block, field: str, t: Tensor) -> None:  # z first, then a (if any) replaces it
        for name in blocks:
            if field in ("z", "a") and name in (block.name, block.norm_name, block.act_name):
                found[name] = (walk.get(t), tuple(t.shape))

    hooks = HookSet()
    modules = dict(model.named_modules())
    for name in outputs:
        def hook(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
            if name not in found and isinstance(out, Tensor):
                found[name] = (walk.get(out), tuple(out.shape))
        hooks.add(modules[name].register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad(), walk:
            if blocks:
                with Probe(model, blocks, keep=("z", "a"), tap=seen) as probe:
                    model(x)
                for name in blocks:
                    block_map(probe.trace, name)  # raises when the layer was not called
            else:
                model(x)
    finally:
        hooks.release()
    return {name: _field_of(name, found.get(name), (size[1], size[2])) for name in layers}


def _field_of(layer: str, hit: tuple[_Field | None, tuple[int, ...]] | None, image_hw: tuple[int, int]) -> ReceptiveField:
    if hit is None:
        raise ReceptiveFieldError(f"layer {layer!r} was not called in the model's forward")
    f, shape = hit
    if len(shape) != 4:
        raise ReceptiveFieldError(
            f"layer {layer!r} has no spatial maps (its output is {tuple(shape)} for one input): a receptive"
            " field needs (B, C, H, W) maps"
        )
    if f is None:
        raise ReceptiveFieldError(f"layer {layer!r} does not depend on the input image")
    if isinstance(f, _Unknown):
        raise ReceptiveFieldError(f"cannot derive the receptive field of layer {layer!r}: {f.reason}")
    assert isinstance(f, _Map)
    return ReceptiveField(
        layer=layer,
        size=(f.y.size, f.x.size),
        jump=(f.y.jump, f.x.jump),
        start=(f.y.first + (f.y.size - 1) / 2, f.x.first + (f.x.size - 1) / 2),
        map_size=(f.y.n, f.x.n),
        input_size=image_hw,
    )

