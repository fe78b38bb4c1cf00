"""embed: t-SNE of a layer's codes over a dataset, with image thumbnails (the `convscope embed` job).

    from convscope.embed import embed
    from convscope.render.embedding_report import write_embedding_report
    result = embed("zoo:convnetjs-cifar", data="builtin:photo-crops:val", n=2000)
    write_embedding_report(result, "embed/")     # index.html + embedding.json + png/scatter.png, png/grid.png
    result                                        # in Jupyter: draws itself

The layer defaults to the one before the classifier: the input of the model's last nn.Linear
call, i.e. the last module called before it that is not a Dropout (convnetjs-cifar: `flatten`,
the 320 numbers of conv3's pooled maps; zfnet-small: fc7's activation; resnet18-shaped:
`avgpool`). The images are those of the data (default: the held-out photo crops, val split),
normalised with the model's mean/std. `Embedding` does the work (analysis/embedding.py); this
module ties models and data to it and to the report, so it sits on top, like `units`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import Tensor

from convscope.analysis.embedding import (
    Embedding,
    EmbeddingResult,
    before_classifier,
    neighbour_agreement,
)
from convscope.data import open_dataset
from convscope.distributed import embedding
from convscope.inspect import DEFAULT_MODEL, open_model
from convscope.render.embedding_report import embedding_html

__all__ = ["Embed", "before_classifier", "embed", "neighbour_agreement"]

DEFAULT_N = 5000
DEFAULT_SIDE = 40  # the grid's side at most by default (1,600 cells, as cnnembed's 40×40)


@dataclass
class Embed:
    """Everything `write_embedding_report` draws."""

    model: str
    data: str
    result: EmbeddingResult
    thumbs: npt.NDArray[np.uint8]  # (n, H, W, 3): the images, in the order of result.xy
    side: int  # the grid's side
    cells: npt.NDArray[np.int64]  # (side, side): row of result.xy in each cell, -1 empty
    agreement: float | None  # mean fraction of each image's NEIGHBOURS nearest map neighbours with its label
    chance: float | None  # the same for a map with labels shuffled (Σ class share²)
    seconds: dict[str, float] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        return embedding_html(self)


def embed(
    model: str = DEFAULT_MODEL,
    *,
    weights: str | None = None,
    data: str | None = None,
    layer: str | None = None,
    n: int | None = None,
    seed: int = 0,
    perplexity: float = 30.0,
    side: int | None = None,
    batch_size: int = 64,
    input_size: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Embed | None:
    """Codes, t-SNE, grid and thumbnails (see the module docstring). n: images (default: 5,000,
    or all of a smaller dataset); side: the grid's side (default: 40, or the largest square fewer images fill).
    Under torchrun each rank computes the codes of its share; rank 0 gets the result, the others None."""
    loaded = open_model(model, weights=weights, input_size=input_size)
    net = loaded.model
    c, h, w = loaded.input_shape
    spec = data or ("builtin:digits:val" if c == 1 else "builtin:photo-crops:val")
    dataset = open_dataset(spec, size=(h, w), channels=c)
    size = len(dataset)  # type: ignore[arg-type]
    if n is None:
        n = min(DEFAULT_N, size)
    norm = loaded.normalize
    if layer is None:
        layer = before_classifier(net, norm(_image(dataset, 0)[None]))
    result = embedding(
        Embedding(net, layer=layer), dataset, n=n, seed=seed, batch_size=batch_size, transform=norm,
        progress=progress, perplexity=perplexity,
    )  # fmt: skip
    if result is None:  # another torchrun rank: rank 0 maps and writes
        return None
    if side is None:
        side = max(1, min(DEFAULT_SIDE, int(np.sqrt(result.n))))
    seconds = dict(result.seconds)
    t0 = time.perf_counter()
    cells = result.grid(side)
    seconds["grid"] = time.perf_counter() - t0
    thumbs = np.stack([_uint8(_image(dataset, int(i))) for i in result.indices])  # (n, H, W, 3)
    agreement, chance = neighbour_agreement(result.xy, result.labels)
    if not result.classes and loaded.classes:
        result.classes = list(loaded.classes)
    return Embed(model=model, data=spec, result=result, thumbs=thumbs, side=side, cells=cells,
                 agreement=agreement, chance=chance, seconds=seconds)  # fmt: skip


def _image(dataset: Any, index: int) -> Tensor:
    item = dataset[index]
    x: Tensor = item[0] if isinstance(item, tuple | list) else item
    return x.float()  # (C, H, W) in [0, 1]


def _uint8(chw: Tensor) -> npt.NDArray[np.uint8]:
    """(C, H, W) in [0, 1] → (H, W, 3) uint8."""
    hwc = chw.clamp(0, 1).permute(1, 2, 0)  # (H, W, C)
    if hwc.shape[2] == 1:
        hwc = hwc.expand(-1, -1, 3)
    out: npt.NDArray[np.uint8] = np.rint(hwc[:, :, :3].numpy() * 255).astype(np.uint8)
    return out
