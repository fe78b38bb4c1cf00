"""inspect: one image through one model → the HTML report of every block (the `convscope inspect` job).

    from convscope.inspect import inspect
    html_path = inspect("zoo:convnetjs-cifar", image="chelsea", out="report/")

It ties the layers together (models + data → capture → render) and so sits on top, like the CLI.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from convscope.analysis import image_gradient, map_stats
from convscope.capture import Block, Trace, capture, logits_of
from convscope.data import PHOTO_CLASSES, PHOTOS, digits, load_image, photo, prepare
from convscope.data.builtin import split_regions
from convscope.models import ZooEntry, load_model
from convscope.render.normalize import Mode
from convscope.render.report import BlockView, ReportInput, write_report

DEFAULT_MODEL = "zoo:convnetjs-cifar"
DEFAULT_IMAGE = "chelsea:test"  # a held-out crop of the cat: in the demo net's training distribution


@dataclass
class LoadedModel:
    """A model with what is needed to feed it: input shape, class names, input normalisation."""

    spec: str
    model: nn.Module
    entry: ZooEntry | None
    metadata: dict[str, str]
    input_shape: tuple[int, int, int]  # (C, H, W)
    classes: list[str]
    mean: list[float] | None
    std: list[float] | None

    def to_input(self, img: npt.NDArray[np.uint8]) -> tuple[Tensor, npt.NDArray[np.uint8]]:
        """uint8 (H, W, 3) → the model's input (1, C, H, W), and the image as shown: its centre in the
        input's aspect, resized (nothing stretched)."""
        c, h, w = self.input_shape
        x = prepare(img, size=(h, w), channels=c, crop=True)  # (C, H, W) in [0, 1], centre-cropped
        shown = (x.permute(1, 2, 0).expand(h, w, 3) * 255).round().to(torch.uint8).numpy()
        return self.normalize(x.unsqueeze(0)), np.ascontiguousarray(shown)

    def normalize(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (B, C, H, W) → what the model is fed: (x − mean) / std when the
        weights state them, else x unchanged."""
        if self.mean is None or self.std is None:
            return x
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)  # (1, C, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std


def parse_shape(text: str) -> tuple[int, int, int]:
    """'3x32x32' → (3, 32, 32)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0 or dims[0] not in (1, 3):
        raise ValueError(f"input size must look like 3x32x32 (channels 1 or 3), got {text!r}")
    return dims


def open_model(spec: str, *, weights: str | None = None, input_size: str | None = None) -> LoadedModel:
    """Resolve and load a model (zoo:NAME, file.py:Class, package.module:factory) with its metadata."""
    model, entry, meta = load_model(spec, weights=weights)
    shape: tuple[int, int, int] | None = None
    if input_size:
        shape = parse_shape(input_size)
    elif "input_shape" in meta:
        shape = parse_shape("x".join(str(d) for d in json.loads(meta["input_shape"])))
    elif entry is not None:
        shape = entry.input_shape
    if shape is None:
        raise ValueError(f"model {spec} is not from the zoo: give its input size, e.g. --input-size 3x32x32")
    classes = json.loads(meta["classes"]) if "classes" in meta else []
    mean = json.loads(meta["mean"]) if "mean" in meta else None
    std = json.loads(meta["std"]) if "std" in meta else None
    return LoadedModel(spec, model, entry, meta, shape, list(classes), mean, std)


def open_image(source: str | None, channels: int) -> tuple[npt.NDArray[np.uint8], str]:
    """An image file path, a built-in photo name (`chelsea`), a held-out test cell of a
    photo-crops class (`chelsea:test`), or (None) the default: `chelsea:test` for colour
    models, a built-in handwritten digit for one-channel models."""
    if source is None:
        if channels == 1:
            x, _ = digits("test")
            img = (x[0, 0] * 255).round().to(torch.uint8).numpy()  # (H, W)
            return np.ascontiguousarray(np.stack([img] * 3, axis=-1)), "digits:test[0]"
        source = DEFAULT_IMAGE
    if source in PHOTOS:
        return photo(source), source
    name, _, split = source.partition(":")
    if split == "test" and name in PHOTO_CLASSES:
        full = photo(name)
        cells = [full[r.top : r.bottom, r.left : r.right] for r in split_regions(name, "test")]
        cell = max(cells, key=lambda c: float(c.std()))  # the most textured held-out cell
        return np.ascontiguousarray(cell), f"{name} (held-out test cell)"
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"image {source!r} is neither a file nor a built-in photo ({', '.join(PHOTOS)}; "
            f"or NAME:test, a held-out crop, for {', '.join(PHOTO_CLASSES)})"
        )
    return load_image(path), path.name


def inspect(
    model: str = DEFAULT_MODEL,
    *,
    weights: str | None = None,
    image: str | None = None,
    target: int | None = None,
    out: str | Path = "report",
    layers: list[str] | None = None,
    norm: Mode = "map",
    input_size: str | None = None,
    all_channels: bool = False,
) -> Path:
    """Write the report for one image; `target` defaults to the top predicted class.
    `all_channels` draws every map, filter and input channel (else at most the 64 strongest maps
    per picture; of W and dL/dW up to 64 filters in colour over an RGB input, deeper the 16
    filters with the largest norm over input channels 0-15; the report says what is left out)."""
    if norm not in ("map", "layer"):
        raise ValueError(f"norm must be 'map' or 'layer', got {norm!r}")
    # one image: torch's intra-op threads only add sync cost to its many small ops (measured on 2
    # busy cores: 7.1 s CPU with one thread, 10.3 s with two, wall no better) — restored after
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _inspect(model, weights, image, target, out, layers, norm, input_size, all_channels)
    finally:
        torch.set_num_threads(threads)


class NonFiniteOutputWarning(UserWarning):
    """The model's output for the inspected image is NaN or ±Inf (the report says so too)."""


def _inspect(
    model: str, weights: str | None, image: str | None, target: int | None, out: str | Path,
    layers: list[str] | None, norm: Mode, input_size: str | None, all_channels: bool,
) -> Path:
    loaded = open_model(model, weights=weights, input_size=input_size)
    img, image_name = open_image(image, loaded.input_shape[0])
    x, shown = loaded.to_input(img)
    with torch.no_grad():
        logits = logits_of(loaded.model(x))
    k = logits.shape[-1]
    classes = loaded.classes if len(loaded.classes) == k else [f"class {i}" for i in range(k)]
    if target is None:
        target = int(logits.argmax())
    elif not 0 <= target < k:
        raise ValueError(f"--target {target} out of range: the model has {k} classes (0..{k - 1})")
    trace, logits = capture(loaded.model, x, target=target, layers=layers)
    notes = []
    ih, iw = img.shape[:2]
    _, h, w = loaded.input_shape
    if ih * w != iw * h:
        notes.append(f"The {iw}×{ih} image was centre-cropped to the net's aspect, then resized to {w}×{h}:"
                     " nothing is stretched, and the edges cut off are not seen.")
    if "photo-crops" in loaded.metadata.get("trained_on", ""):
        notes.append(
            "This net was trained on builtin:photo-crops: its 10 classes say which photo a small crop"
            " comes from. A whole photo or your own picture is outside what it was trained on, so its"
            " predictions there mean little; the maps still show what each filter responds to."
        )
    if not loaded.metadata and loaded.entry is not None and loaded.entry.weights is None:
        notes.append("This zoo net ships no trained weights: its filters are random initialisation.")
    if not bool(torch.isfinite(logits).all()):
        bad = sum(int((~torch.isfinite(p)).sum()) for p in loaded.model.parameters())
        why = f"{bad:,} of its parameter values are NaN or ±Inf" if bad else "its parameters are finite"
        note = (f"The model's output for this image is not finite (NaN or ±Inf; {why}): no prediction"
                " is shown, and maps that are not finite are marked, not drawn.")
        notes.append(note)
        warnings.warn(note, NonFiniteOutputWarning, stacklevel=2)
    gu, gv = image_gradient(x[0].detach().float())  # (C, H, W) each
    info = ReportInput(
        title=f"convscope inspect — {model}",
        model=model,
        image=shown,
        image_name=image_name,
        logits=logits,
        classes=classes,
        target=target,
        image_gradient=(gu.mean(dim=0), gv.mean(dim=0)),  # (H, W): averaged over colour channels
        batch=int(x.shape[0]),
        norm=norm,
        all_channels=all_channels,
        notes=notes,
    )
    return write_report(block_views(trace, x, shown), info, out)


# ------------------------------------------------------------------ trace → plain data for render
FIELDS = ("x", "weight", "z", "a", "grad_weight", "grad_z", "grad_a")


def block_views(trace: Trace, x: Tensor, image: npt.NDArray[np.uint8]) -> list[BlockView]:
    """The report's view of each block of a one-image trace: the first example's tensors, the
    layer spec in words, the statistics of a. x is marked as the RGB image when it is the model's
    input `x` (1, 3, H, W), and as an earlier block's a when it is exactly that tensor."""
    views: list[BlockView] = []
    previous: list[tuple[str, Tensor]] = []  # (name, a) of the blocks so far
    for name, block in trace.items():
        tensors = {f: t for f in FIELDS if (t := _field(block, f)) is not None}
        bx = block.x
        x_image = image if bx is not None and bx.shape == x.shape and x.shape[1] == 3 and torch.equal(bx, x) else None
        x_from = None
        if bx is not None and x_image is None:
            x_from = next((n for n, a in reversed(previous) if a.shape == bx.shape and torch.equal(a, bx)), None)
        if block.a is not None:
            previous.append((name, block.a))
        stats = map_stats(block.a[:1]).as_dict() if block.a is not None and torch.isfinite(block.a).all() else None
        views.append(BlockView(
            name=name, title=" → ".join(block.members), facts=_facts(block), tensors=tensors,
            stats=stats, x_image=x_image, x_from=x_from, stale=tuple(sorted(block.stale)),
            meta={"kind": block.kind, "norm": block.norm_name, "activation": block.act_name,
                  "out_shape": list(block.out_shape or ()),
                  "spec": None if block.spec is None else
                  {"type": block.spec.type, "params": block.spec.params, "formula": block.spec.formula}},
        ))  # fmt: skip
    return views


def _field(block: Block, fld: str) -> Tensor | None:
    t: Tensor | None = getattr(block, fld)
    if t is None:
        return None
    return t.detach() if fld in ("weight", "grad_weight") else t.detach()[0]  # maps: the one example


def _facts(block: Block) -> tuple[tuple[str, str], ...]:
    """The layer spec as (label, value) rows, as ConvNetJS prints them beside a layer."""
    spec = block.spec
    facts: list[tuple[str, str]] = []
    if spec is not None:
        facts.append(("type", spec.type))
        if spec.kernel_size is not None:
            k = "×".join(str(v) for v in spec.kernel_size)
            groups = f", {spec.groups} groups" if spec.groups > 1 else ""
            facts.append(("filters", f"{spec.out_channels} of {k} over {spec.in_channels} channel(s){groups}"))
            facts.append(("stride / padding", f"{_tup(spec.stride)} / {_tup(spec.padding)}"))
        else:
            facts.append(("units", f"{spec.in_channels} → {spec.out_channels}"))
        facts.append(("parameters", spec.formula))
    if block.norm_type:
        facts.append(("norm", block.norm_type))
    facts.append(("activation f", block.activation or "none (z is the output)"))
    if block.out_shape is not None:
        facts.append(("output size", " × ".join(str(d) for d in block.out_shape)))
    return tuple(facts)


def _tup(v: object) -> str:
    return "×".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
