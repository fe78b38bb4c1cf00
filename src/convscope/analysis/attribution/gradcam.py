"""Grad-CAM (Selvaraju et al. 2017): https://arxiv.org/abs/1610.02391

    GradCAM(model, layer="layer4").attribute(x, target=3)                 # (B, 1, h, w) at the layer's size
    GradCAM(model, layer="layer4").attribute(x, target=3, upsample=True)  # (B, 1, H, W) at the input's size

ReLU(Σ_k α_k A^k) with α_k = the spatial mean of d score / dA^k: the layer's maps weighted by
how much the class score wants each of them. `layer` is a block (its activation map a, the
feature map) or any module (its output). Equals Captum's `LayerGradCam(relu_attributions=True)`
on the same tensor. Upsampling is bilinear (`mode=` to change it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.analysis.attribution.base import (
    Attribution,
    AttributionError,
    AttributionMap,
    Target,
)
from convscope.analysis.attribution.rules import PLAIN


class GradCAM(Attribution):
    """Class activation maps weighted by gradients, at one layer."""

    method = "gradcam"

    def __init__(self, model: nn.Module, *, layer: str) -> None:
        super().__init__(model)
        if not isinstance(layer, str) or not layer:
            raise AttributionError("GradCAM needs layer=<name of a block or module>")
        self.layer = layer

    def cam(self, x: Tensor, target: Target = None) -> tuple[Tensor, dict[str, object]]:
        """(B, 1, h, w) ReLU(Σ_k α_k A^k) at the layer's size, and the call's metadata."""
        xg = self._input(x)
        with self._session(None):
            out, tap = self._forward(xg, self.layer, stop=False, catch=True)
            assert out is not None and tap is not None and tap.tensor is not None
            try:
                t = self._targets(out, target)
                if tap.tensor.dim() != 4:
                    raise AttributionError(
                        f"Grad-CAM needs spatial maps (B, C, h, w); layer {self.layer!r} gives {tuple(tap.tensor.shape)}"
                    )
                score = out.gather(1, t[:, None]).sum()
                if tap.tensor._version == tap.version:  # the backward can stop at the layer
                    (grads,) = torch.autograd.grad(score, tap.tensor)  # (B, C, h, w)
                else:  # changed in place after the layer: the hook caught dL/dA of the old version
                    torch.autograd.grad(score, xg)
                    assert tap.grad is not None
                    grads = tap.grad
            finally:
                tap.release()
        assert tap.value is not None
        acts = tap.value  # (B, C, h, w), as it was at the layer
        alpha = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        cam = F.relu((alpha * acts).sum(dim=1, keepdim=True))  # (B, 1, h, w)
        meta: dict[str, object] = {
            "method": self.method,
            "target": t.tolist(),
            "layer": self.layer,
            "tensor": tap.what,
            "rules": dict(PLAIN),
        }
        return cam, meta

    def attribute(
        self, x: Tensor, target: Target = None, *, upsample: bool = False, mode: str = "bilinear"
    ) -> AttributionMap:
        cam, meta = self.cam(x, target)
        if upsample:
            cam = _resize(cam, tuple(x.shape[2:]), mode)
        meta["upsample"] = mode if upsample else None
        return AttributionMap.wrap(cam, meta, x)


def _resize(cam: Tensor, size: tuple[int, ...], mode: str) -> Tensor:
    if mode == "nearest":
        return F.interpolate(cam, size=size, mode="nearest")
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(cam, size=size, mode=mode, align_corners=False)
    raise AttributionError(f"mode must be 'nearest', 'bilinear' or 'bicubic'; got {mode!r}")
