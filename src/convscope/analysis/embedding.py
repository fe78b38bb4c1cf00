"""t-SNE of layer codes (van der Maaten & Hinton 2008; CS231n, Karpathy's cnnembed): https://www.jmlr.org/papers/v9/vandermaaten08a.html

    emb = Embedding(model, layer="fc7").run(dataset, n=5000, seed=0)   # streams codes, PCA to 50
    emb.xy, emb.labels, emb.indices        # (n, 2) map, (n,) labels (-1: none), (n,) dataset indices
    emb.codes, emb.codes_bytes             # (n, D) float16 codes and their memory
    emb.grid(side=40)                      # (side, side) rows of xy, one per cell (-1: empty)
    emb.transform(later_codes)             # (m, 2): codes of a later checkpoint in the same map

A layer's code is its output for one image, flattened (layer names as `LayerReader` resolves
them: a block name means its activation map `a`, any other module its output). The n images
are a seeded random sample of the data (sorted by index; all of it when n equals its size),
read in one streaming pass under torch.no_grad and eval mode (each module's mode restored),
kept as float16. PCA (scikit-learn, seeded) takes them to 50 dimensions, then openTSNE
(Poličar et al. 2019; Barnes-Hut below 10,000 points, FFT-accelerated above, its own choice;
it places new points into an existing map) to 2, one thread (the same seed, the same map);
scikit-learn's TSNE only when openTSNE is not installed (no `transform` then).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]  # (scipy comes with scikit-learn)
from scipy.spatial.distance import cdist  # type: ignore[import-untyped]
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from convscope.analysis.stream import Progress, open_batches, split_batch
from convscope.analysis.units.base import LayerReader, eval_mode, split_layers

PCA_DIMS = 50  # codes are reduced to this many dimensions before t-SNE (as cnnembed / openTSNE advise)
MAX_SIDE = 1000  # grid side at most (a million cells)
MAX_COST = 50_000_000  # cells × images in the grid's cost matrix at most (400 MB of float64)
FLOAT16_MAX = 65504.0


@dataclass
class EmbeddingResult:
    """The map of n images' codes: positions, labels, dataset indices, and what it took."""

    layer: str
    xy: npt.NDArray[np.float64]  # (n, 2) t-SNE positions
    labels: npt.NDArray[np.int64]  # (n,) class of each image, -1 without labels
    indices: npt.NDArray[np.int64]  # (n,) dataset index of each image, ascending
    codes: Tensor  # (n, D) float16: each image's flattened layer output
    codes_bytes: int  # memory of `codes`
    classes: list[str]  # class names when the data has them
    method: str  # "openTSNE 1.0.4" or "sklearn TSNE 1.x (openTSNE missing)"
    perplexity: float
    seed: int
    seconds: dict[str, float] = field(default_factory=dict)  # "codes", "pca", "tsne"
    pca_mean: Tensor | None = None  # (D,) float32
    pca_components: Tensor | None = None  # (k, D) float32
    tsne: Any = None  # openTSNE's TSNEEmbedding (None with the scikit-learn fallback)

    #: set by convscope.render (which this layer may not import): EmbeddingResult → HTML for Jupyter
    display: ClassVar[Callable[[EmbeddingResult], str] | None] = None

    def _repr_html_(self) -> str | None:
        return None if EmbeddingResult.display is None else EmbeddingResult.display(self)

    @property
    def n(self) -> int:
        return int(self.xy.shape[0])

    def __repr__(self) -> str:
        return (
            f"EmbeddingResult(layer={self.layer!r}, n={self.n}, dim={int(self.codes.shape[1])}, "
            f"codes={self.codes_bytes / 2**20:.1f} MiB, {self.method})"
        )

    def pca(self, codes: Tensor) -> npt.NDArray[np.float32]:
        """(m, D) codes → (m, k) in this map's PCA basis."""
        assert self.pca_mean is not None and self.pca_components is not None
        if not isinstance(codes, Tensor) or codes.dim() != 2 or codes.shape[1] != self.pca_mean.shape[0]:
            got = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"codes must be a tensor shaped (m, {self.pca_mean.shape[0]}), got {got}")
        c = codes.detach().cpu().float() - self.pca_mean  # (m, D)
        out: npt.NDArray[np.float32] = (c @ self.pca_components.T).numpy()  # (m, k)
        return out

    def transform(self, codes: Tensor) -> npt.NDArray[np.float64]:
        """Place new codes (m, D) — e.g. the same images at a later checkpoint — into this map: (m, 2)."""
        if self.tsne is None:
            raise ValueError("placing new points into a map needs openTSNE (pip install openTSNE); this map was made with scikit-learn")
        return np.asarray(self.tsne.transform(self.pca(codes)), dtype=np.float64)

    def grid(self, side: int = 40) -> npt.NDArray[np.int64]:
        """Snap the map to a side×side grid, one image per cell, by linear assignment
        (scipy's linear_sum_assignment) of the min-max-scaled positions to the cell centres,
        least total squared distance. Row 0 is the top (largest y). With more images than
        cells, the best-placed subset fills every cell; with fewer, some cells stay -1.
        Returns (side, side) int64: the row of xy/labels/indices in each cell."""
        if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_SIDE:
            raise ValueError(f"side must be an int from 1 to {MAX_SIDE}, got {side!r}")
        if side * side * self.n > MAX_COST:
            raise ValueError(
                f"a {side}×{side} grid over {self.n:,} images needs a {side * side:,} × {self.n:,} cost matrix,"
                f" more than {MAX_COST:,} entries: use a smaller side or fewer images"
            )
        return snap_to_grid(self.xy, side)


def snap_to_grid(xy: npt.NDArray[np.float64], side: int) -> npt.NDArray[np.int64]:
    """See `EmbeddingResult.grid`."""
    pts = np.asarray(xy, dtype=np.float64)  # (n, 2)
    lo, span = pts.min(0), np.ptp(pts, axis=0)
    unit = (pts - lo) / np.where(span > 0, span, 1.0)  # (n, 2) in [0, 1]
    r, c = np.divmod(np.arange(side * side), side)  # (side²,) cell row, column
    centres = np.stack([(c + 0.5) / side, 1 - (r + 0.5) / side], 1)  # (side², 2) as (x, y)
    cost = cdist(centres, unit, "sqeuclidean")  # (side², n)
    cells, rows = linear_sum_assignment(cost)
    out = np.full(side * side, -1, dtype=np.int64)
    out[cells] = rows
    return out.reshape(side, side)


class Embedding:
    """t-SNE of one layer's codes over a dataset; see the module docstring."""

    def __init__(self, model: nn.Module, layer: str = "fc7") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Embedding needs an nn.Module, got {type(model).__name__}")
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a layer name (str), got {type(layer).__name__}")
        split_layers(model, [layer])  # fails fast, listing the valid names
        self.model, self.layer = model, layer

    def run(
        self,
        data: Any,
        n: int = 5000,
        seed: int = 0,
        batch_size: int | None = 64,
        transform: Callable[[Tensor], Tensor] | None = None,
        progress: Progress | None = None,
        *,
        perplexity: float = 30.0,
    ) -> EmbeddingResult:
        """Codes of n images of `data` (a Dataset of x or (x, y), an (X, y) pair of tensors, X
        alone, or a sequential DataLoader: its first n images), PCA, t-SNE. transform: applied
        to each batch x (e.g. normalisation). progress(done, total) after each batch."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if isinstance(perplexity, bool) or not isinstance(perplexity, int | float) or not 1 <= perplexity <= 1000:
            raise ValueError(f"perplexity must be a number from 1 to 1000, got {perplexity!r}")
        size = _size(data)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (size is not None and n > size):
            top = f"an int in 1..{size} (the data holds {size} images)" if size is not None else "an int >= 1"
            raise ValueError(f"n must be {top}, got {n!r}")
        need = int(3 * perplexity) + 1
        if n < need:
            raise ValueError(
                f"{n} images are too few for perplexity {perplexity:g}: t-SNE needs at least {need}"
                " (3 × perplexity + 1); give more images or a lower perplexity"
            )
        data, indices = _sample(data, n, size, seed)
        t0 = time.perf_counter()
        codes, labels = self._codes(data, n, batch_size, transform, progress)
        if len(codes) < n:
            raise ValueError(f"the data gave {len(codes)} images, fewer than n={n}")
        indices = indices if indices is not None else np.arange(n, dtype=np.int64)
        t1 = time.perf_counter()
        mean, comps, low = _pca(codes, seed)  # (D,), (k, D), (n, k)
        t2 = time.perf_counter()
        xy, method, tsne = _tsne(low, perplexity, seed)
        t3 = time.perf_counter()
        return EmbeddingResult(
            layer=self.layer, xy=xy, labels=labels, indices=indices, codes=codes,
            codes_bytes=codes.numel() * codes.element_size(), classes=_classes(data), method=method,
            perplexity=float(perplexity), seed=seed,
            seconds={"codes": t1 - t0, "pca": t2 - t1, "tsne": t3 - t2},
            pca_mean=mean, pca_components=comps, tsne=tsne,
        )  # fmt: skip

    def _codes(
        self, data: Any, n: int, batch_size: int | None, transform: Callable[[Tensor], Tensor] | None,
        progress: Progress | None,
    ) -> tuple[Tensor, npt.NDArray[np.int64]]:  # fmt: skip
        """(n, D) float16 codes and (n,) labels (-1: none), one streaming pass."""
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(data, DataLoader):
            batch_size = None
        batches, total, _, _ = open_batches(data, batch_size)
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        reader = LayerReader(self.model, [self.layer], lambda name, a: (a.detach().flatten(1).to("cpu", torch.float16),))
        codes: Tensor | None = None
        labels = np.full(n, -1, dtype=np.int64)
        seen = 0
        with eval_mode(self.model), torch.no_grad():
            for batch in batches:
                x, y = split_batch(batch)
                x = x.to(device)
                if transform is not None:
                    x = transform(x)
                (flat,) = reader.read(x)[self.layer]  # (B, D) float16
                take = min(flat.shape[0], n - seen)
                if codes is None:
                    codes = torch.empty((n, flat.shape[1]), dtype=torch.float16)  # (n, D)
                if not bool(torch.isfinite(flat[:take]).all()):
                    raise ValueError(
                        f"layer {self.layer!r} gives NaN/Inf codes or values beyond float16's range"
                        f" (|a| > {FLOAT16_MAX:g}) on images {seen}..{seen + take - 1}"
                    )
                codes[seen : seen + take] = flat[:take]
                if y is not None:
                    labels[seen : seen + take] = y[:take].reshape(-1).to(torch.int64).numpy()
                seen += take
                if progress is not None:
                    progress(seen, n if total is not None else None)
                if seen >= n:
                    break
        if codes is None:
            raise ValueError("the data has no inputs")
        return codes[:seen], labels[:seen]


def _size(data: Any) -> int | None:
    if isinstance(data, Tensor):
        return int(data.shape[0])
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return int(data[0].shape[0])
    if isinstance(data, DataLoader):
        return len(data.dataset) if hasattr(data.dataset, "__len__") else None
    return len(data) if hasattr(data, "__len__") else None


def _sample(data: Any, n: int, size: int | None, seed: int) -> tuple[Any, npt.NDArray[np.int64] | None]:
    """n of the data's images chosen with the seed (ascending dataset indices); a DataLoader: its first n."""
    if isinstance(data, DataLoader) or size is None or n == size:
        return data, None if size is None or n != size else np.arange(n, dtype=np.int64)
    idx = np.sort(np.random.default_rng(seed).choice(size, size=n, replace=False)).astype(np.int64)
    if isinstance(data, Tensor):
        return data[torch.from_numpy(idx)], idx
    if isinstance(data, tuple | list):
        return (data[0][torch.from_numpy(idx)], data[1][torch.from_numpy(idx)]), idx
    if isinstance(data, Dataset):
        return Subset(data, idx.tolist()), idx
    return data, None


def _classes(data: Any) -> list[str]:
    inner = data.dataset if isinstance(data, Subset | DataLoader) else data
    names = getattr(inner, "classes", None)
    return [str(c) for c in names] if isinstance(names, list | tuple) else []


def _pca(codes: Tensor, seed: int) -> tuple[Tensor, Tensor, npt.NDArray[np.float32]]:
    """scikit-learn's PCA to min(50, n, D) dimensions (seeded, so deterministic): mean, components, (n, k)."""
    from sklearn.decomposition import PCA

    x = codes.float().numpy()  # (n, D)
    k = min(PCA_DIMS, x.shape[0], x.shape[1])
    pca = PCA(n_components=k, random_state=seed)
    low = pca.fit_transform(x).astype(np.float32)  # (n, k)
    mean = torch.from_numpy(pca.mean_.astype(np.float32))  # (D,)
    comps = torch.from_numpy(pca.components_.astype(np.float32))  # (k, D)
    return mean, comps, low


def _tsne(low: npt.NDArray[np.float32], perplexity: float, seed: int) -> tuple[npt.NDArray[np.float64], str, Any]:
    """2-D t-SNE positions, the method's name, and openTSNE's embedding (for `transform`)."""
    try:
        import openTSNE
    except ImportError:
        import sklearn
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(low)
        return np.asarray(xy, dtype=np.float64), f"sklearn TSNE {sklearn.__version__} (openTSNE missing)", None
    emb = openTSNE.TSNE(
        n_components=2, perplexity=perplexity, random_state=seed, n_jobs=1, negative_gradient_method="auto"
    ).fit(low)
    return np.asarray(emb, dtype=np.float64), f"openTSNE {openTSNE.__version__}", emb
