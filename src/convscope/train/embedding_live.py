"""Answer the dashboard's `embed` control on the side that holds the model: a t-SNE map of the run's
held-out images' codes (CS231n; Karpathy's cnnembed), and the same images at another checkpoint
placed into that map (openTSNE's transform), to watch the class clusters form during training.

    answer_embedding(model, writer, ident, {"layer": None, "n": 500}, probe, norm, labels, step=s)
    answer_embedding(model, writer, ident2, {"base": ident, "checkpoint": "evo-000010"}, ...)

`probe` are held-out images in [0, 1] (N, C, H, W), `labels` their classes (or None), `norm` what
the model is fed. The layer defaults to the one before the classifier. A new map stores under
`embed:ID`: json (xy, labels, how), and snapshots `thumbs` (the images as one sprite sheet, for the
page's hover thumbnails), `low` (the PCA codes t-SNE saw), `pca_mean`, `pca_components`. A request
with `base` reads those back, rebuilds openTSNE's map from them (its affinities from the stored
codes, its positions from the stored xy) and places the new codes into it — no state is kept
between requests, so the trainer and the ended run's worker answer it alike. `checkpoint` swaps in
that checkpoint's weights for the request and restores the model's exactly after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.analysis.embedding import (
    Embedding,
    EmbeddingResult,
    before_classifier,
    neighbour_agreement,
)
from convscope.runs import RunReader, RunWriter

MAX_N = 1000  # held-out images per map at most
MIN_N = 4  # t-SNE's smallest perplexity, 1, needs 3 × 1 + 1 images
DEFAULT_N = 500  # about 2-4 s on the zoo nets, one core
THUMB = 32  # thumbnail side in the sprite sheet, at most (pixels)
SEED = 0


def check_request(value: Any) -> dict[str, Any]:
    """layer (None: before the classifier), n, base (a map to place into, or None), checkpoint (or None)."""
    if not isinstance(value, dict):
        raise ValueError("embed needs {'layer': NAME or null, 'n': N, 'base': ID or null, 'checkpoint': NAME or null}")
    layer, ckpt, base, n = value.get("layer"), value.get("checkpoint"), value.get("base"), value.get("n")
    for key, v in (("layer", layer), ("checkpoint", ckpt)):
        if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 200):
            raise ValueError(f"embed: {key} must be a name or null")
    for key, v, lo, hi in (("base", base, 1, 1 << 40), ("n", n, MIN_N, MAX_N)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise ValueError(f"embed: {key} must be an integer in {lo}..{hi} or null")
    return {"layer": layer, "checkpoint": ckpt, "base": base, "n": n}


@contextmanager
def weights_of(model: nn.Module, writer: RunWriter, name: str | None) -> Iterator[None]:
    """The model with checkpoint `name`'s weights inside the block (its own restored exactly after)."""
    if name is None:
        yield
        return
    try:
        state = writer.load_checkpoint(name)
    except FileNotFoundError:
        raise ValueError(f"embed: the run has no checkpoint {name!r}") from None
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if set(state) != set(saved) or any(state[k].shape != saved[k].shape for k in saved):
        raise ValueError(f"embed: checkpoint {name!r} does not fit the model")
    try:
        with torch.no_grad():
            model.load_state_dict(state)
        yield
    finally:
        with torch.no_grad():
            model.load_state_dict(saved)


def sprite(images: Tensor) -> Tensor:
    """(N, C, H, W) in [0, 1] → one (1, 3, rows·t, cols·t) sheet, image i at row i // cols, column i % cols."""
    n, c, h, w = images.shape
    t = min(THUMB, max(h, w))
    small = F.interpolate(images.float(), size=(t, t), mode="area") if (h, w) != (t, t) else images.float()
    small = small.expand(n, 3, t, t) if c == 1 else small[:, :3]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = torch.zeros(3, rows * t, cols * t)
    for i in range(n):
        r, q = divmod(i, cols)
        sheet[:, r * t : (r + 1) * t, q * t : (q + 1) * t] = small[i]
    return sheet.unsqueeze(0)


def place(reader: RunReader, base: int, codes: Tensor) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    """Codes (n, D) of the base map's images placed into map `base` (rebuilt from the store): (n, 2)."""
    import openTSNE
    from openTSNE.affinity import PerplexityBasedNN

    found = reader.json(f"embed:{base}")
    if found is None or not isinstance(found[1], dict) or found[1].get("base") is not None:
        raise ValueError(f"embed: there is no map {base} to place into (ask for a new map first)")
    info = found[1]
    parts = {k: reader.snapshot(f"embed:{base}", k) for k in ("low", "pca_mean", "pca_components")}
    if any(v is None for v in parts.values()):
        raise ValueError(f"embed: map {base} has no stored codes")
    low, mean, comps = (parts[k][1] for k in ("low", "pca_mean", "pca_components"))  # type: ignore[index]
    if codes.shape[1] != mean.shape[-1]:
        raise ValueError(f"embed: the codes have {codes.shape[1]} numbers, map {base} was made of {mean.shape[-1]}")
    ref = low.reshape(low.shape[-2], low.shape[-1]).numpy().astype(np.float64)  # (n, k)
    xy = np.asarray(info["xy"], dtype=np.float64)  # (n, 2)
    aff = PerplexityBasedNN(ref, perplexity=float(info["perplexity"]), random_state=SEED, n_jobs=1)
    emb = openTSNE.TSNEEmbedding(xy, aff, random_state=SEED, n_jobs=1)
    new = ((codes.float() - mean.reshape(-1)) @ comps.reshape(comps.shape[-2], comps.shape[-1]).T).numpy()  # (n, k)
    return np.asarray(emb.transform(new.astype(np.float64)), dtype=np.float64), info


def answer_embedding(
    model: nn.Module,
    writer: RunWriter,
    ident: int,
    value: Any,
    probe: Tensor,
    norm: Callable[[Tensor], Tensor],
    labels: Tensor | None,
    *,
    step: int,
    weights: str | None = None,
) -> dict[str, Any]:
    """Compute, store and commit a map (or a placement into one); return the control's answer."""
    t0 = time.perf_counter()
    req = check_request(value)
    with RunReader(writer.path) as reader:
        meta = reader.meta()
        base_info: dict[str, Any] | None = None
        if req["base"] is not None:
            found = reader.json(f"embed:{req['base']}")
            base_info = found[1] if found is not None and isinstance(found[1], dict) else None
            if base_info is None:
                raise ValueError(f"embed: there is no map {req['base']} to place into (ask for a new map first)")
        n = int(base_info["n"]) if base_info is not None else min(req["n"] or DEFAULT_N, MAX_N, int(probe.shape[0]))
        if n > probe.shape[0]:
            raise ValueError(f"embed: map {req['base']} holds {n} images, there are {probe.shape[0]} now")
        images = probe[:n].float()  # (n, C, H, W) the first held-out images: the same ones every time
        y = labels[:n].long() if labels is not None else None
        was = model.training
        try:
            with weights_of(model, writer, req["checkpoint"]):
                layer = str(base_info["layer"]) if base_info is not None else req["layer"] or before_classifier(model, norm(images[:1]))
                emb = Embedding(model, layer=layer)
                data: Any = (images, y) if y is not None else images
                if base_info is None:
                    res = emb.run(data, n=n, seed=SEED, transform=norm, perplexity=min(30.0, (n - 1) / 3))
                    xy, method = res.xy, res.method
                else:
                    codes, _ = emb.codes(data, n, transform=norm, batch_size=128)  # (n, D) float16
                    xy, _ = place(reader, req["base"], codes)
                    method = f"placed into map {req['base']} (openTSNE transform)"
        except (KeyError, RuntimeError) as err:
            raise ValueError(f"embed: {' '.join(str(err).split())}") from None
        finally:
            model.train(was)
    lab = y.numpy().astype(np.int64) if y is not None else np.full(n, -1, dtype=np.int64)
    agreement, chance = neighbour_agreement(xy, lab)
    names = meta.get("classes")
    prefix = f"embed:{ident}"
    if base_info is None:
        _store_map(writer, step, prefix, res, images)
    answer = {
        "layer": layer,
        "n": n,
        "xy": [[round(float(a), 4), round(float(b), 4)] for a, b in xy],
        "labels": lab.tolist(),
        "classes": [str(c) for c in names] if isinstance(names, list) else [],
        "base": req["base"],
        "checkpoint": req["checkpoint"],
        "perplexity": res.perplexity if base_info is None else base_info["perplexity"],
        "method": method,
        "agreement": agreement,
        "chance": chance,
        "thumbs": req["base"] or ident,
        "thumb": int(min(THUMB, max(images.shape[2:]))),
        "step": step,
        "weights": f"checkpoint {req['checkpoint']}" if req["checkpoint"] else weights or f"step {step}",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    writer.log_json(step, prefix, answer)
    writer.commit(step)
    return {"ok": True, "n": n}


def _store_map(writer: RunWriter, step: int, prefix: str, res: EmbeddingResult, images: Tensor) -> None:
    assert res.pca_mean is not None and res.pca_components is not None
    low = res.pca(res.codes)  # (n, k): what t-SNE saw
    writer.log_snapshot(step, prefix, "low", torch.from_numpy(low))
    writer.log_snapshot(step, prefix, "pca_mean", res.pca_mean)
    writer.log_snapshot(step, prefix, "pca_components", res.pca_components)
    writer.log_snapshot(step, prefix, "thumbs", sprite(images))
