"""occlusion: one image → Zeiler & Fergus's occlusion panels (the `convscope occlusion` job).

    from convscope.occlusion import occlusion, write_occlusion_report
    result = occlusion("zoo:zfnet-small", image="chelsea:test", layer="conv5", window=16, stride=8)
    write_occlusion_report(result, "occ/")            # index.html + occlusion.json + PNGs
    result                                            # in Jupyter: draws itself

A grey square slides over the image; per position the model is run again (exactly, and
incrementally where it can: convscope.analysis.occlusion) and ZF Fig. 7's maps are kept:
(b) the total activation of the layer's strongest feature map, (c) that map's deconvnet
projection, (d) the probability of the class (default: the one predicted for the unoccluded
image), (e) the most probable label. Like `project`, it ties models and data to analysis and
render, so it sits on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from convscope.analysis.attribution import AttributionError
from convscope.analysis.occlusion import OcclusionResult, approx_error
from convscope.distributed import DistributedOcclusion
from convscope.inspect import DEFAULT_MODEL, open_image, open_model
from convscope.project import last_conv
from convscope.render.occlusion_report import write_occlusion_report

__all__ = ["default_window", "occlusion", "write_occlusion_report"]


def default_window(size: int) -> tuple[int, int]:
    """(window, stride) for an image side: about a seventh of it, half-overlapping (112 → 16, 8)."""
    window = max(2, round(size / 7))
    return window, max(1, window // 2)


def occlusion(
    model: str = DEFAULT_MODEL,
    *,
    weights: str | None = None,
    image: str | None = None,
    layer: str | None = None,
    window: int | None = None,
    stride: int | None = None,
    target: int | None = None,
    input_size: str | None = None,
    method: str | None = None,
    batch: int = 64,
    progress: Callable[[int, int], None] | None = None,
    approx: float | None = None,
) -> OcclusionResult:
    """Compute the occlusion maps of one image (see the module docstring)."""
    loaded = open_model(model, weights=weights, input_size=input_size)
    img, image_name = open_image(image, loaded.input_shape[0])
    x, shown = loaded.to_input(img)
    net = loaded.model
    net.eval()
    layer = layer or last_conv(net, x)
    side = min(loaded.input_shape[1:])
    win, step = default_window(side)
    window = win if window is None else window
    stride = step if stride is None else stride
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1)[0]  # (K,)
    k = probs.shape[0]
    if target is not None and (isinstance(target, bool) or not 0 <= target < k):
        raise AttributionError(f"--target {target} is out of range: the model has classes 0..{k - 1}")
    names = loaded.classes if len(loaded.classes) == k else [f"class {i}" for i in range(k)]
    normalize = (loaded.mean, loaded.std) if loaded.mean is not None and loaded.std is not None else None
    t0 = time.perf_counter()
    occ = DistributedOcclusion(net)  # under torchrun each rank runs a share of the positions
    grid = occ.sensitivity(
        x,
        window=window,
        stride=stride,
        baseline="grey",
        target=target,
        layer=layer,
        normalize=normalize,
        method=method,
        batch=batch,
        progress=progress,
        approx=approx,
    )
    seconds = {"occlusion": time.perf_counter() - t0}
    if approx is not None:  # the approximation's error, measured against the exact maps
        t1 = time.perf_counter()
        exact = occ.sensitivity(x, window=window, stride=stride, baseline="grey", target=grid.target,
                                layer=layer, normalize=normalize, batch=batch)  # fmt: skip
        seconds["exact (to measure the error)"] = time.perf_counter() - t1
        grid.meta["approx_error"] = approx_error(grid, exact)
    return OcclusionResult(
        model=model,
        image_name=image_name,
        image=shown,
        x=x,
        classes=names,
        clean_probs=probs,
        grid=grid,
        seconds=seconds,
    )
