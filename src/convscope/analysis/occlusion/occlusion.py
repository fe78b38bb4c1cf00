"""Occlusion sensitivity (Zeiler & Fergus 2013, Fig. 7; Captum's Occlusion): https://arxiv.org/abs/1311.2901

    occ = Occlusion(model)
    grid = occ.sensitivity(x, window=16, stride=8, baseline="grey", target=c, layer="conv5")
    grid.feature, grid.probability, grid.label       # (P, Q): one value per occluder position
    grid.projection                                   # the strongest map's deconvnet projection (ZF 7c)
    attr = occ.attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=0.5, target=c)

ZF slide a grey square over the image and, per position, record (b) the total activation of
the layer's strongest feature map (strongest = the largest activation in the unoccluded image),
(d) the probability of the class `target`, (e) the most probable label. `attribute` is Captum's
per-pixel form: each pixel gets the mean, over the windows covering it, of
score(x) − score(x occluded), the score being the `target` logit. Windows start every stride
from 0 and the last one is cut at the border (as Captum: ceil((D − w) / s) + 1 positions).

`method="incremental"` (the default when it applies) recomputes per position only what the
occluder can reach (incremental.py, exact); `method="full"` runs batched full forwards. Which
ran, and from which node on the incremental pass used full tensors, is in the result's `meta`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, fx, nn

from convscope.analysis.attribution.base import (
    Attribution,
    AttributionError,
    AttributionMap,
    Target,
    _is_container,
    check_version,
)
from convscope.analysis.attribution.deconvnet import Deconvnet
from convscope.analysis.occlusion.incremental import Incremental, IncrementalUnsupported
from convscope.analysis.occlusion.windows import (
    Window,
    baseline_value,
    chunks,
    mask,
    triple,
    windows,
)
from convscope.capture import capture

METHODS = ("incremental", "full")
Progress = Callable[[int, int], None]  # (positions done, positions in all)


@dataclass
class Sensitivity:
    """ZF Fig. 7 for one image: (P, Q) maps over occluder positions, and what they refer to."""

    feature: Tensor | None  # (P, Q) total activation of map `channel` of `layer` (7b); None without a layer
    probability: Tensor  # (P, Q) softmax probability of `target` (7d)
    label: Tensor  # (P, Q) most probable class (7e)
    projection: AttributionMap | None  # (1, C, H, W) deconvnet projection of the strongest map, clean image (7c)
    rows: list[int]  # P occluder top edges (pixels)
    cols: list[int]  # Q occluder left edges
    window: int
    stride: int
    baseline: Tensor  # (C,) the occluder's value per input channel
    target: int
    layer: str | None
    channel: int | None  # the strongest map of `layer` in the clean image
    clean_probability: float  # of `target`, unoccluded
    clean_feature: float | None  # total activation of the map, unoccluded
    meta: dict[str, Any] = field(default_factory=dict)  # method, fallback, seconds, tensor

    #: set by convscope.render (which this layer may not import): Sensitivity → HTML for Jupyter
    display: ClassVar[Callable[[Sensitivity], str] | None] = None

    def _repr_html_(self) -> str | None:
        return None if Sensitivity.display is None else Sensitivity.display(self)


class Occlusion(Attribution):
    """Slide an occluder over the image; record what the model says at each position."""

    method = "occlusion"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._traced: dict[frozenset[str], fx.GraphModule] = {}
        self._tau: float | None = None  # sensitivity(approx=τ) for the duration of the call

    # ---- Captum's verb -----------------------------------------------------------------------
    def attribute(
        self,
        x: Tensor,
        sliding_window_shapes: tuple[int, int, int],
        strides: int | tuple[int, int, int] = 1,
        baselines: float | Tensor = 0.0,
        target: Target = None,
        *,
        method: str | None = None,
        batch: int = 64,
    ) -> AttributionMap:
        """Captum's `Occlusion.attribute` (one input tensor): a map shaped like x."""
        x = self._input(x).detach()  # (B, C, H, W)
        win = triple(sliding_window_shapes, "sliding_window_shapes")
        step = triple(strides, "strides")
        for i, (d, w, s) in enumerate(zip(x.shape[1:], win, step, strict=True)):
            if not 1 <= w <= d or s < 1 or (s > w and w < d):  # as Captum: no pixel left uncovered
                raise AttributionError(
                    f"sliding_window_shapes {win} / strides {step} do not fit input {tuple(x.shape[1:])}"
                    f" (dim {i}: need 1 <= window <= size and 1 <= stride <= window)"
                )
        b = x.shape[0]
        base = torch.as_tensor(baselines, dtype=x.dtype).expand_as(x)  # (B, C, H, W)
        out = torch.zeros_like(x)
        meta: dict[str, Any] = {"method": self.method, "window": win, "strides": step}
        with self._session(None), torch.no_grad():
            logits = self.model(x)
            t = self._targets(logits, target)  # (B,)
            wins = windows(x.shape[1:], win, step)
            for i in range(b):
                scores, how = self._occluded(x[i : i + 1], base[i : i + 1], wins, method, batch, None)
                diff = logits[i, t[i]] - scores[0][:, t[i]]  # (M,)
                total = torch.zeros_like(x[i])
                count = torch.zeros_like(x[i])
                for (c0, c1, r0, r1, q0, q1), d in zip(wins, diff, strict=True):
                    total[c0:c1, r0:r1, q0:q1] += d
                    count[c0:c1, r0:r1, q0:q1] += 1
                out[i] = total / count
                meta.update(how)
        meta["target"] = t.tolist()
        return AttributionMap.wrap(out, meta, x)  # (B, C, H, W)

    # ---- ZF Fig. 7 ---------------------------------------------------------------------------
    def sensitivity(
        self,
        x: Tensor,
        *,
        window: int = 16,
        stride: int = 8,
        baseline: str | float | Tensor = "grey",
        target: int | None = None,
        layer: str | None = None,
        normalize: tuple[list[float], list[float]] | None = None,
        method: str | None = None,
        batch: int = 64,
        progress: Progress | None = None,
        approx: float | None = None,
    ) -> Sensitivity:
        """The (P, Q) maps for one image x (1, C, H, W). `baseline="grey"`: 0.5 in pixel space,
        mapped through `normalize=(mean, std)` when the model's input is normalised.
        `progress(done, total)` is called after each batch of positions. `approx=τ` (0 < τ < 1):
        APPROXIMATE incremental inference (each conv/pool recomputes at most τ of its output side);
        see `approx_error` for its error against the exact maps."""
        if approx is not None and (isinstance(approx, bool) or not 0.0 < float(approx) < 1.0):
            raise AttributionError(f"approx must be a fraction in (0, 1); got {approx!r}")
        if approx is not None and method == "full":
            raise AttributionError("approx needs the incremental method, not method='full'")
        self._tau = approx
        x = self._input(x).detach()
        if x.shape[0] != 1:
            raise AttributionError(f"sensitivity takes one image (1, C, H, W); got a batch of {x.shape[0]}")
        _, c, h, w = x.shape
        for name, v in (("window", window), ("stride", stride)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AttributionError(f"{name} must be a positive integer; got {v!r}")
        if window > min(h, w):
            raise AttributionError(f"window {window} is larger than the {h}×{w} image")
        grey = baseline_value(baseline, c, normalize, x.dtype)  # (C,)
        base = grey.view(1, c, 1, 1).expand_as(x)
        masks = windows((c, h, w), (c, window, window), (c, stride, stride))
        rows = sorted({m[2] for m in masks})
        cols = sorted({m[4] for m in masks})
        t0 = time.perf_counter()
        channel = clean_feature = None
        projection = None
        tensor_name = None
        if layer is not None:
            maps, tensor_name = self.layer_output(x, layer)  # (1, C', h', w') or (1, F)
            flat = maps[0].reshape(maps.shape[1], -1)  # (C', h'w')
            channel = int(flat.amax(dim=1).argmax())
            clean_feature = float(flat[channel].sum())
            position = "max" if maps.dim() == 4 else None
            projection = Deconvnet(self.model).attribute(x, layer=layer, channel=channel, position=position)
        with self._session(None), torch.no_grad():
            logits = self.model(x)  # (1, K)
            k = logits.shape[1]
            tgt = int(logits.argmax()) if target is None else int(target)
            if not 0 <= tgt < k:
                raise AttributionError(f"target {target} is out of range: the model has classes 0..{k - 1}")
            scores, how = self._occluded(x, base, masks, method, batch, (layer, channel), progress)
        probs = torch.softmax(scores[0], dim=1)  # (M, K)
        p, q = len(rows), len(cols)
        how["seconds"] = time.perf_counter() - t0
        if tensor_name is not None:
            how["tensor"] = tensor_name
        return Sensitivity(
            feature=None if scores[1] is None else scores[1].view(p, q),
            probability=probs[:, tgt].reshape(p, q),
            label=probs.argmax(dim=1).reshape(p, q),
            projection=projection,
            rows=rows,
            cols=cols,
            window=window,
            stride=stride,
            baseline=grey,
            target=tgt,
            layer=layer,
            channel=channel,
            clean_probability=float(torch.softmax(logits, dim=1)[0, tgt]),
            clean_feature=clean_feature,
            meta=how,
        )

    # ---- the passes --------------------------------------------------------------------------
    def _occluded(
        self,
        x: Tensor,
        base: Tensor,
        masks: list[Window],
        method: str | None,
        batch: int,
        tap: tuple[str | None, int | None] | None,
        progress: Progress | None = None,
    ) -> tuple[tuple[Tensor, Tensor | None], dict[str, Any]]:
        """Outputs (M, K) and the tapped map's totals (M,) for each occluder mask; how they ran."""
        if method is not None and method not in METHODS:
            raise AttributionError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise AttributionError(f"batch must be a positive integer; got {batch!r}")
        layer, channel = tap if tap is not None else (None, None)
        how: dict[str, Any] = {"method": "full", "positions": len(masks), "batch": batch}
        tau = self._tau if tap is not None else None
        if method != "full":
            try:
                return self._incremental(x, base, masks, batch, layer, channel, how, progress, tau), how
            except IncrementalUnsupported as e:
                if method == "incremental" or tau is not None:
                    raise AttributionError(f"incremental occlusion does not apply: {e}") from None
                how["incremental"] = f"not used: {e}"
        return self._full(x, base, masks, batch, layer, channel, progress), how

    def _full(
        self,
        x: Tensor,
        base: Tensor,
        masks: list[Window],
        batch: int,
        layer: str | None,
        channel: int | None,
        progress: Progress | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        outs, feats = [], []
        _, c, h, w = x.shape
        for chunk in chunks(masks, batch):
            m = mask(chunk, c, torch.zeros(len(chunk), 1, dtype=torch.long), h, w).to(x.device)  # (N, C, H, W)
            xb = torch.where(m, base, x)  # (N, C, H, W)
            out, tap = self._forward(xb, layer, stop=False)
            assert out is not None
            outs.append(out)
            if tap is not None:
                check_version(tap)
                assert tap.tensor is not None and channel is not None
                feats.append(tap.tensor[:, channel].reshape(len(chunk), -1).sum(dim=1))
            if progress is not None:
                progress(sum(len(o) for o in outs), len(masks))
        return torch.cat(outs), torch.cat(feats) if feats else None

    def _incremental(
        self,
        x: Tensor,
        base: Tensor,
        masks: list[Window],
        batch: int,
        layer: str | None,
        channel: int | None,
        how: dict[str, Any],
        progress: Progress | None = None,
        tau: float | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        leaves = frozenset({layer}) if layer is not None and self._is_container_layer(layer) else frozenset()
        try:  # traced once per Occlusion object; each call checks the trace still gives model(x)
            engine = Incremental(self.model, x, leaves=leaves, traced=self._traced.get(leaves), tau=tau)
        except IncrementalUnsupported:
            if self._traced.pop(leaves, None) is None:
                raise
            engine = Incremental(self.model, x, leaves=leaves, tau=tau)  # the model changed since: trace again
        self._traced[leaves] = engine.gm
        node = self._layer_node(engine, x, layer) if layer is not None else None
        outs, feats, fallback = [], [], set()
        _, c, h, w = x.shape
        for i, chunk in enumerate(chunks(masks, batch)):
            hh = max(r1 - r0 for _, _, r0, r1, _, _ in chunk)  # one box size for the batch
            ww = max(q1 - q0 for _, _, _, _, q0, q1 in chunk)
            rows = torch.tensor([min(r0, h - hh) for _, _, r0, _, _, _ in chunk])  # (N,) box corners
            cols = torch.tensor([min(q0, w - ww) for _, _, _, _, q0, _ in chunk])
            m = mask(chunk, c, rows[:, None], hh, ww, cols[:, None]).to(x.device)  # (N, C, hh, ww)
            rr = (rows[:, None] + torch.arange(hh)).to(x.device)  # (N, hh)
            cc = (cols[:, None] + torch.arange(ww)).to(x.device)  # (N, ww)
            clean = x[0][:, rr[:, :, None], cc[:, None, :]].permute(1, 0, 2, 3)  # (N, C, hh, ww)
            grey = base[0][:, rr[:, :, None], cc[:, None, :]].permute(1, 0, 2, 3)  # (N, C, hh, ww)
            patch = torch.where(m, grey, clean)  # (N, C, hh, ww)
            out, kept = engine.run(patch.contiguous(), rows, cols, keep=(node,) if node is not None else ())
            fallback.update(engine.fallback_nodes)
            if i == 0 and tau is None:  # a cheap guard against a wrong map: the first positions against full forwards
                ref, _ = self._full(x, base, chunk[:2], 2, None, None)
                if not torch.allclose(out[:2], ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-5):
                    raise IncrementalUnsupported("its first outputs differ from full forwards")
            outs.append(out)
            if node is not None:
                assert channel is not None
                full = engine.full(node, kept[node], len(chunk))  # (N, C', ...)
                feats.append(full[:, channel].reshape(len(chunk), -1).sum(dim=1))
            if progress is not None:
                progress(sum(len(o) for o in outs), len(masks))
        how["method"] = "incremental" if tau is None else f"approximate (tau={tau})"
        how["full_tensors_from"] = sorted(fallback)
        return torch.cat(outs), torch.cat(feats) if feats else None

    def _is_container_layer(self, layer: str) -> bool:
        module = dict(self.model.named_modules()).get(layer)
        return module is not None and _is_container(module)

    def _layer_node(self, engine: Incremental, x: Tensor, layer: str) -> fx.Node:
        """The fx node of the tensor `layer_output` starts from (a block's a, a module's output)."""
        name, call = layer, 0
        if not self._is_container_layer(layer):
            trace, _ = capture(self.model, x, keep=())
            if layer in trace:
                block = trace[layer]
                name = block.act_name or block.norm_name or block.name
            if "#" in name:
                name, n = name.split("#", 1)
                call = int(n)
        node = engine.node_for(name, call)
        want, _ = self.layer_output(x, layer)
        got = engine.clean.get(node) if node is not None else None
        if node is None or not isinstance(got, Tensor) or got.shape != want.shape or not torch.equal(got, want):
            raise IncrementalUnsupported(f"layer {layer!r} is not a module call in the traced graph")
        return node


def approx_error(approx: Sensitivity, exact: Sensitivity) -> dict[str, float]:
    """Krypton's measures of an approximate map against the exact one: the largest absolute
    difference of the probability maps, and the overlap (intersection over union) of their
    top-10% regions — the positions where occluding lowers the probability most."""
    a, e = approx.probability.flatten(), exact.probability.flatten()
    k = max(1, math.ceil(0.1 * e.numel()))
    low_a = set(a.argsort(stable=True)[:k].tolist())
    low_e = set(e.argsort(stable=True)[:k].tolist())
    return {
        "max_abs_probability": float((a - e).abs().max()),
        "top10_iou": len(low_a & low_e) / len(low_a | low_e),
        "label_agreement": float((approx.label == exact.label).float().mean()),
    }


__all__ = ["METHODS", "Occlusion", "Sensitivity", "approx_error"]
