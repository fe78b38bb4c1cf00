"""units: what excites each feature map, over a dataset (the `convscope units` job; ZF 2013 Fig. 2).

    from convscope.units import units
    from convscope.render.units_report import write_units_report
    result = units("zoo:zfnet-small", data="builtin:photo-crops:val", layers=["conv1", "conv5"])
    write_units_report(result, "units/")               # index.html + units.json + PNGs
    result                                             # in Jupyter: draws itself

For each chosen layer, its `maps` feature maps with the strongest top-1 activation: the k (9)
images where each fires most (one position per image, its max, then the top k images — as
DeepVis does; `TopPatches`), each as the input patch under the unit's receptive field beside
its deconvnet projection cropped to the same box, and (with `stimulus_steps` > 0) the map's
optimal stimulus (`Optimize`, Olah et al. 2017). Like `inspect`, it ties models and data to
analysis and render, so it sits on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from convscope.analysis.attribution import AttributionError
from convscope.analysis.units import TopPatches, TopPatchesResult, crops
from convscope.data import open_dataset
from convscope.distributed import top_patches, world
from convscope.inspect import DEFAULT_MODEL, LoadedModel, open_model
from convscope.project import last_conv
from convscope.render.units_report import units_html

MAX_MAPS = 64


@dataclass
class UnitHits:
    """One feature map: its hits with their patches and projections, and its optimal stimulus."""

    channel: int
    values: list[float]  # strongest first
    indices: list[int]  # dataset indices
    positions: list[tuple[int, int]]
    boxes: list[tuple[int, int, int, int]]  # (y0, x0, y1, x1), half-open, clipped to the image
    patches: list[Tensor]  # (C, h, w) in [0, 1]: the input under each box
    projections: list[Tensor]  # (C, h, w): the deconvnet projection of that hit, same box
    stimulus: Tensor | None = None  # (C, S, S) in [0, 1]
    stimulus_activation: float | None = None
    # the largest mean activation of the map over its top-k images (a lower bound of the dataset's):
    # an optimal stimulus below it did not converge, and the report says so
    best_image_activation: float | None = None


@dataclass
class Units:
    """Everything `write_units_report` draws."""

    model: str
    data: str
    inputs: int
    k: int
    layers: dict[str, list[UnitHits]]
    fields: dict[str, dict[str, Any]]  # layer → receptive field (size, jump, start, ...)
    seconds: dict[str, float] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        return units_html(self)


def units(
    model: str = DEFAULT_MODEL,
    *,
    weights: str | None = None,
    data: str | None = None,
    layers: list[str] | None = None,
    k: int = 9,
    maps: int = 16,
    limit: int | None = None,
    batch_size: int = 64,
    stimulus_steps: int = 128,
    input_size: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Units:
    """Run the top-k pass and draw material for the report (see the module docstring)."""
    if isinstance(maps, bool) or not isinstance(maps, int) or not 1 <= maps <= MAX_MAPS:
        raise ValueError(f"--maps must be an integer in 1..{MAX_MAPS}; got {maps!r}")
    if isinstance(stimulus_steps, bool) or not isinstance(stimulus_steps, int) or not 0 <= stimulus_steps <= 4096:
        raise ValueError(f"--stimulus-steps must be an integer in 0..4096; got {stimulus_steps!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit must be a positive integer; got {limit!r}")
    loaded = open_model(model, weights=weights, input_size=input_size)
    net = loaded.model
    c, h, w = loaded.input_shape
    spec = data or ("builtin:digits" if c == 1 else "builtin:photo-crops:val")
    dataset = open_dataset(spec, size=(h, w), channels=c)
    if limit is not None and limit < len(dataset):  # type: ignore[arg-type]
        dataset = torch.utils.data.Subset(dataset, range(limit))
    norm = loaded.normalize
    if not layers:
        probe_x = norm(_image(dataset, 0)[None])
        layers = [last_conv(net, probe_x)]
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    # under torchrun each rank streams its shard and every rank gets the merged hits
    result: TopPatchesResult = top_patches(
        TopPatches(net, layers=layers, k=k), dataset, batch_size=batch_size, transform=norm, progress=progress
    )
    seconds["top-k pass"] = time.perf_counter() - t0
    rank = world()
    if rank is not None and not rank.main:  # rank 0 alone draws and writes
        return Units(model=model, data=spec, inputs=result.inputs, k=k, layers={}, fields={}, seconds=seconds)
    out: dict[str, list[UnitHits]] = {}
    fields: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for layer in layers:
        hits = result[layer]
        fields[layer] = hits.field.as_dict()
        order = hits.values[:, 0].argsort(descending=True, stable=True)[:maps].tolist()
        out[layer] = [_unit(net, dataset, norm, layer, ch, hits[ch]) for ch in order]
    seconds["patches and projections"] = time.perf_counter() - t0
    if stimulus_steps:
        t0 = time.perf_counter()
        _stimuli(loaded, dataset, out, stimulus_steps)
        seconds["optimal stimuli"] = time.perf_counter() - t0
    return Units(model=model, data=spec, inputs=result.inputs, k=k, layers=out, fields=fields, seconds=seconds)


def _image(dataset: Any, index: int) -> Tensor:
    item = dataset[index]
    x: Tensor = item[0] if isinstance(item, tuple | list) else item
    return x.float()  # (C, H, W) in [0, 1]


def _unit(net: Any, dataset: Any, norm: Callable[[Tensor], Tensor], layer: str, ch: int, hits: list[Any]) -> UnitHits:
    patches, projections = [], []
    for hit in hits:
        try:
            patch, proj = crops(net, _image(dataset, hit.index), hit, layer=layer, channel=ch, transform=norm)
        except AttributionError as err:
            raise ValueError(f"projecting map {ch} of {layer}: {err}") from None
        patches.append(patch)
        projections.append(proj)
    return UnitHits(
        channel=ch,
        values=[hit.value for hit in hits],
        indices=[hit.index for hit in hits],
        positions=[tuple(hit.position) for hit in hits],
        boxes=[tuple(hit.box) for hit in hits],
        patches=patches,
        projections=projections,
    )


def _stimuli(loaded: LoadedModel, dataset: Any, layers: dict[str, list[UnitHits]], steps: int) -> None:
    from convscope.analysis.units.optimize import Optimize

    c, h, _ = loaded.input_shape
    for layer, hits in layers.items():
        for u in hits:
            opt = Optimize(loaded.model, layer=layer, channel=u.channel, mean=loaded.mean, std=loaded.std, channels=c)
            s = opt.run(steps=steps, size=h, seed=u.channel)
            u.stimulus, u.stimulus_activation = s.image[0].detach(), s.activation
            u.best_image_activation = max(opt.activation(_image(dataset, i)[None]) for i in dict.fromkeys(u.indices))
