"""Top-k dataset patches per feature map (Zeiler & Fergus 2013, Fig. 2): https://arxiv.org/abs/1311.2901

    tp = TopPatches(model, layers=["conv2", "conv3"], k=9)
    result = tp.run(dataset, batch_size=64)          # one streaming pass under torch.no_grad
    hits = result["conv2"][5]                        # feature map 5 of conv2: k hits, strongest first
    hits[0].value, hits[0].index, hits[0].position, hits[0].box   # activation, dataset index,
                                                     # (i, j) in the map, (y0, x0, y1, x1) in pixels
    whole = part1.merge(part2)                       # exact (parts run with first_index= their offset)
    result.save("units.safetensors"); TopPatches.load("units.safetensors")

As DeepVis does, each image counts once per feature map: at its strongest position (ties: the
first in row-major order); then the k strongest images per map, ties broken by dataset index
(lower first), so results are deterministic and merges of disjoint parts exact. Memory is O(k ×
feature maps) whatever the dataset size: per map a running top-k (values, indices, positions)
joined with each batch's maxima by a stable sort. Boxes come from `receptive_field` (derived
from the model) and are clipped to the image. The model runs in eval mode (restored after).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler

from convscope.analysis.attribution import Deconvnet
from convscope.analysis.stream import Progress, open_batches, split_batch
from convscope.analysis.units.base import LayerReader, eval_mode, split_layers
from convscope.analysis.units.receptive_field import ReceptiveField, box, receptive_fields

MAX_K = 10_000  # hits kept per feature map at most
FORMAT = "convscope.top_patches/1"  # the safetensors metadata tag of a saved result


@dataclass(frozen=True)
class Hit:
    """One of a feature map's strongest images."""

    value: float  # the map's maximum on this image
    index: int  # the image's dataset index
    position: tuple[int, int]  # (i, j) of that maximum in the map
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open: input pixels under unit (i, j)


class LayerHits(Sequence[list[Hit]]):
    """The hits of every feature map of one layer: `layer_hits[c]` → k hits, strongest first."""

    def __init__(self, name: str, values: Tensor, indices: Tensor, positions: Tensor, field: ReceptiveField) -> None:
        self.name = name
        self.values = values  # (C, n) float64, each row descending; n = min(k, inputs)
        self.indices = indices  # (C, n) int64 dataset indices
        self.positions = positions  # (C, n, 2) int64 (i, j)
        self.field = field

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @overload
    def __getitem__(self, c: int) -> list[Hit]: ...
    @overload
    def __getitem__(self, c: slice) -> Sequence[list[Hit]]: ...
    def __getitem__(self, c: int | slice) -> list[Hit] | Sequence[list[Hit]]:
        if isinstance(c, slice):
            return [self[i] for i in range(len(self))[c]]
        n = len(self)
        if isinstance(c, bool) or not isinstance(c, int) or not -n <= c < n:
            raise IndexError(f"layer {self.name!r} has feature maps 0..{n - 1}, not {c!r}")
        image = self.field.input_size
        return [
            Hit(v, ix, (i, j), box(self.field, i, j, image))
            for v, ix, (i, j) in zip(
                self.values[c].tolist(), self.indices[c].tolist(), self.positions[c].tolist(), strict=True
            )
        ]

    def __repr__(self) -> str:
        return f"LayerHits({self.name!r}, maps={len(self)}, hits={self.values.shape[1]})"


class TopPatchesResult(Mapping[str, LayerHits]):
    """`result[layer][c]` → the k strongest hits of feature map c; `.merge`, `.save`, `.load`."""

    def __init__(self, layers: dict[str, LayerHits], *, k: int, inputs: int) -> None:
        self.layers, self.k, self.inputs = layers, k, inputs

    def __getitem__(self, layer: str) -> LayerHits:
        if layer not in self.layers:
            raise KeyError(f"no layer {layer!r} in this result; layers: {', '.join(self.layers)}")
        return self.layers[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"TopPatchesResult(layers={list(self.layers)}, k={self.k}, inputs={self.inputs})"

    def _repr_html_(self) -> str:
        """Jupyter: per layer, each map's strongest values and their dataset indices (the
        patches themselves need the data: `convscope units` or `cs.render` draw them)."""
        import html

        parts = [f"<p>top-{self.k} over {self.inputs:,} inputs</p>"]
        for name, hits in self.layers.items():
            rows = "".join(
                f"<tr><td>{c}</td><td>{', '.join(f'{v:.3g}' for v in hits.values[c].tolist())}</td>"
                f"<td>{', '.join(str(i) for i in hits.indices[c].tolist())}</td></tr>"
                for c in range(len(hits))
            )
            parts.append(
                f"<details><summary>{html.escape(name)}: {len(hits)} maps, field {hits.field.size[0]}×"
                f"{hits.field.size[1]} px</summary><table><tr><th>map</th><th>values</th><th>images</th></tr>"
                f"{rows}</table></details>"
            )
        return "".join(parts)

    def merge(self, other: TopPatchesResult) -> TopPatchesResult:
        """The result of both parts' data together (exact: parts over disjoint dataset indices)."""
        if not isinstance(other, TopPatchesResult):
            raise TypeError(f"merge needs a TopPatchesResult, got {type(other).__name__}")
        if list(self.layers) != list(other.layers) or self.k != other.k:
            raise ValueError(
                f"cannot merge results of layers {list(self.layers)} k={self.k} and {list(other.layers)} k={other.k}"
            )
        merged: dict[str, LayerHits] = {}
        for name, a in self.layers.items():
            b = other.layers[name]
            if a.field != b.field or len(a) != len(b):
                raise ValueError(f"layer {name!r} differs between the parts ({a.field} vs {b.field}): same model and input size?")
            w = a.field.map_size[1]
            idx = torch.cat([a.indices, b.indices], 1)  # (C, n_a + n_b)
            both = torch.sort(idx, dim=1).values
            if bool((both[:, 1:] == both[:, :-1]).any()):
                raise ValueError("the parts share dataset indices: run them with disjoint first_index ranges")
            flat = [p[..., 0] * w + p[..., 1] for p in (a.positions, b.positions)]  # (C, n) each
            v, i, p = _best(torch.cat([a.values, b.values], 1), idx, torch.cat(flat, 1), self.k)
            merged[name] = LayerHits(name, v, i, torch.stack([p // w, p % w], -1), a.field)
        return TopPatchesResult(merged, k=self.k, inputs=self.inputs + other.inputs)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Tensors and a JSON description (layers, fields, k, inputs) in one .safetensors file."""
        tensors: dict[str, Tensor] = {}
        layers = []
        for n, (name, h) in enumerate(self.layers.items()):
            tensors |= {f"{n}.values": h.values, f"{n}.indices": h.indices, f"{n}.positions": h.positions}
            layers.append({"name": name, "field": h.field.as_dict()})
        meta = {"k": self.k, "inputs": self.inputs, "layers": layers}
        save_file({k: t.contiguous() for k, t in tensors.items()}, os.fspath(path),
                  metadata={"format": "pt", "convscope": FORMAT, "top_patches": json.dumps(meta)})  # fmt: skip

    @staticmethod
    def load(path: str | os.PathLike[str]) -> TopPatchesResult:
        """A result written by `save` (no pickle: safetensors and JSON only)."""
        try:
            with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
                meta_all = f.metadata() or {}
                if meta_all.get("convscope") != FORMAT:
                    raise ValueError(f"{os.fspath(path)} is not a saved TopPatches result")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except SafetensorError as err:
            raise ValueError(f"{os.fspath(path)} is not a readable .safetensors file ({err})") from None
        try:
            meta = json.loads(meta_all["top_patches"])
            k, inputs = int(meta["k"]), int(meta["inputs"])
            layers: dict[str, LayerHits] = {}
            for n, entry in enumerate(meta["layers"]):
                v, i, p = (tensors[f"{n}.{t}"] for t in ("values", "indices", "positions"))
                if v.dim() != 2 or i.shape != v.shape or p.shape != (*v.shape, 2):
                    raise ValueError(f"layer {entry['name']!r} has mismatched tensors")
                layers[str(entry["name"])] = LayerHits(str(entry["name"]), v, i, p, ReceptiveField.from_dict(entry["field"]))
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{os.fspath(path)}: malformed TopPatches result ({err})") from None
        return TopPatchesResult(layers, k=k, inputs=inputs)


def crops(
    model: nn.Module, image: Tensor, hit: Hit, *, layer: str, channel: int,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """A hit's input patch and its deconvnet projection (ZF Fig. 2), both cut to the hit's box:
    (C, h, w) each. image: the hit's image (C, H, W) as ranked; transform: as given to `run`
    (what the model is fed). AttributionError when the layer cannot be projected."""
    y0, x0, y1, x1 = hit.box
    x = image[None] if transform is None else transform(image[None])  # (1, C, H, W)
    proj = Deconvnet(model).attribute(x, layer=layer, channel=channel, position=hit.position)
    return image[:, y0:y1, x0:x1], proj.as_subclass(Tensor)[0, :, y0:y1, x0:x1]


def _best(values: Tensor, indices: Tensor, positions: Tensor, k: int, *, in_order: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the k largest values; equal values: lower dataset index first. All (C, m).
    in_order: the indices already rise along each row (a stream), no need to sort them first."""
    if not in_order:
        by_index = torch.sort(indices, dim=1, stable=True).indices  # (C, m)
        values, indices, positions = (t.gather(1, by_index) for t in (values, indices, positions))
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]  # keeps index order on ties
    return values.gather(1, order), indices.gather(1, order), positions.gather(1, order)


def _maxima(name: str, a: Tensor, floor: Tensor | None = None) -> tuple[Tensor, ...]:
    """Each map's maximum and its first position in row-major order: (B, C) each.

    With `floor` (C,), the k-th value held so far, positions are found only where the maximum
    beats it (ties go to the lower index, which is held already): elsewhere -1, never used."""
    if a.dim() != 4:
        raise ValueError(
            f"layer {name!r} has no spatial maps (its output is {tuple(a.shape)}): top patches need (B, C, H, W) maps"
        )
    a = a.detach()
    if floor is None:
        values, pos = a.flatten(2).max(dim=2)  # (B, C) each; torch: the first maximum
        return values.to(torch.float64), pos
    values = a.amax(dim=(2, 3))  # (B, C): the same numbers as max(dim=2)
    pos = torch.full(values.shape, -1, dtype=torch.int64, device=a.device)
    bi, ci = (values.to(torch.float64) > floor.to(a.device)).nonzero(as_tuple=True)
    if bi.numel():
        pos[bi, ci] = a[bi, ci].flatten(1).argmax(dim=1)  # first maximum, as max(dim=2) gives
    return values.to(torch.float64), pos


class TopPatches:
    """The k strongest images of every feature map of `layers`, in one streaming pass."""

    def __init__(self, model: nn.Module, *, layers: list[str] | tuple[str, ...], k: int = 9) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"TopPatches needs an nn.Module, got {type(model).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be an int from 1 to {MAX_K}, got {k!r}")
        split_layers(model, layers)  # fails fast, listing the valid names
        self.model, self.layers, self.k = model, list(layers), k

    load = staticmethod(TopPatchesResult.load)

    def run(
        self,
        data: Any,
        batch_size: int | None = None,
        progress: Progress | None = None,
        *,
        first_index: int = 0,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> TopPatchesResult:
        """One pass over `data`: a Dataset of x or (x, y), a DataLoader (sequential), an (X, y) pair
        of tensors or X alone (N, C, H, W). batch_size: for a Dataset or tensors (default 64).
        first_index: the dataset index of data's first image (for parts of a larger dataset).
        transform: applied to each batch x (e.g. normalisation; it must keep H×W).
        progress(done, total): called after each batch."""
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(first_index, bool) or not isinstance(first_index, int) or first_index < 0:
            raise ValueError(f"first_index must be an int >= 0, got {first_index!r}")
        if isinstance(data, DataLoader) and not isinstance(data.sampler, SequentialSampler) and data.sampler.__class__.__name__ != "_InfiniteConstantSampler":
            raise ValueError(
                f"the DataLoader draws with a {type(data.sampler).__name__}: hits are numbered by position in"
                " the stream, so give a sequential one (shuffle=False), e.g. over a Subset with first_index"
            )
        batches, total, _, _ = open_batches(data, batch_size)
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        state: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

        def reduce(name: str, a: Tensor) -> tuple[Tensor, ...]:  # positions only where they can count
            held = state.get(name)
            floor = held[0][:, self.k - 1] if held is not None and held[0].shape[1] >= self.k else None
            return _maxima(name, a, floor)

        reader = LayerReader(self.model, self.layers, reduce)
        fields: dict[str, ReceptiveField] = {}
        seen, shape = 0, None
        with eval_mode(self.model), torch.no_grad():
            for batch in batches:
                x, _ = split_batch(batch)
                x = x.to(device)
                if transform is not None:
                    x = transform(x)
                if x.dim() != 4:
                    raise ValueError(f"inputs must be image batches (B, C, H, W), got {tuple(x.shape)}")
                if shape is None:
                    shape = tuple(x.shape[1:])
                    fields = receptive_fields(self.model, self.layers, shape)
                elif tuple(x.shape[1:]) != shape:
                    raise ValueError(f"inputs change size from {shape} to {tuple(x.shape[1:])}: boxes need one size")
                got = reader.read(x)
                first = first_index + seen
                b = int(x.shape[0])
                ix = torch.arange(first, first + b, dtype=torch.int64)  # (B,)
                for name, (vals, pos) in got.items():
                    if bool(torch.isnan(vals).any()):
                        raise ValueError(f"layer {name!r} has NaN activations on inputs {first}..{first + b - 1}")
                    vals, pos = vals.cpu().T, pos.cpu().T  # (C, B)
                    old = state.get(name)
                    new = (vals, ix.expand_as(pos), pos)
                    if old is not None:
                        new = (torch.cat([old[0], vals], 1), torch.cat([old[1], new[1]], 1), torch.cat([old[2], pos], 1))
                    state[name] = _best(*new, self.k, in_order=True)  # old hits come before this batch
                seen += b
                if progress is not None:
                    progress(seen, total)
        if seen == 0:
            raise ValueError("the data has no inputs: nothing to rank")
        layers = {}
        for name in self.layers:
            v, i, p = state[name]
            w = fields[name].map_size[1]
            layers[name] = LayerHits(name, v, i.contiguous(), torch.stack([p // w, p % w], -1), fields[name])
        return TopPatchesResult(layers, k=self.k, inputs=seen)
