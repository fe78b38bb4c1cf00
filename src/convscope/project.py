"""project: one image → its projections back to pixels (the `convscope project` job).

    from convscope.project import project, write_projection_report
    result = project("zoo:zfnet-small", image="chelsea:test", layer="conv5", top=9)
    write_projection_report(result, "proj/")          # index.html + projections.json + PNGs
    result                                            # in Jupyter: draws itself

Two parts, as in the papers:
- **units** (Zeiler & Fergus Fig. 1/2): the `top` feature maps of `layer` that fire most on
  this image (or one `channel`), each with its strongest activation projected to pixels by the
  layer-capable methods (deconvnet, guided backprop, saliency) — everything else in the layer
  set to zero;
- **classes**: every class method (saliency, SmoothGrad, guided backprop, deconvnet, Grad-CAM at
  `layer`, Guided Grad-CAM) side by side for the top-3 predicted classes.

Like `inspect`, it ties models and data to analysis and render, so it sits on top.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from convscope.analysis.attribution import (
    METHODS,
    AttributionError,
    AttributionMap,
    ClassMaps,
    Deconvnet,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    Projection,
    Saliency,
    SmoothGrad,
    Unit,
)
from convscope.analysis.attribution.projection import strongest_units
from convscope.analysis.units import ReceptiveFieldError, receptive_field
from convscope.capture import capture
from convscope.inspect import DEFAULT_MODEL, open_image, open_model

#: methods that can start from one feature map of a layer (the others start from a class score)
LAYER_METHODS = ("deconvnet", "guided", "saliency")


def last_conv(model: nn.Module, x: Tensor) -> str:
    """The name of the last conv block (what `inspect` and `project` look at by default)."""
    trace, _ = capture(model, x, keep=())
    convs = [name for name, b in trace.items() if b.kind == "conv"]
    if not convs:
        raise AttributionError("the model has no conv layer: name one with --layer")
    return convs[-1]


def project(
    model: str = DEFAULT_MODEL,
    *,
    weights: str | None = None,
    image: str | None = None,
    layer: str | None = None,
    channel: int | None = None,
    top: int = 9,
    methods: list[str] | None = None,
    input_size: str | None = None,
    smoothgrad_samples: int = 25,
) -> Projection:
    """Compute the projections of one image (see the module docstring)."""
    chosen = list(METHODS) if not methods else list(dict.fromkeys(methods))
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise AttributionError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 64:
        raise AttributionError(f"--top must be an integer in 1..64; got {top!r}")
    loaded = open_model(model, weights=weights, input_size=input_size)
    img, image_name = open_image(image, loaded.input_shape[0])
    x, shown = loaded.to_input(img)
    net = loaded.model
    net.eval()
    layer = layer or last_conv(net, x)
    seconds: dict[str, float] = {}

    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1)[0]  # (K,)
    k = probs.shape[0]
    names = loaded.classes if len(loaded.classes) == k else [f"class {i}" for i in range(k)]

    # the layer's maps: the same tensor the methods start from (a of the block, or the module output)
    out, what = Saliency(net).layer_output(x, layer)  # validates the name
    maps = out[0]  # (C, h, w) or (C,)
    units = _units(net, x, layer, maps, channel, top, [m for m in chosen if m in LAYER_METHODS], seconds)
    if maps.dim() == 3:  # spatial maps: zoom each unit to the input pixels it sees (ZF crop)
        try:
            rf = receptive_field(net, layer, loaded.input_shape)
        except (ReceptiveFieldError, ValueError):
            rf = None  # an op the walk does not know: the report shows whole images only
        for u in units:
            if rf is not None and u.position is not None:
                u.box = rf.box(*u.position)
    top3 = probs.topk(min(3, k))
    classes = []
    for p, t in zip(top3.values.tolist(), top3.indices.tolist(), strict=True):
        class_maps: dict[str, AttributionMap] = {}
        for m in chosen:
            t0 = time.perf_counter()
            class_maps[m] = _class_method(m, net, layer, smoothgrad_samples).attribute(x, t)  # type: ignore[attr-defined]
            seconds[m] = seconds.get(m, 0.0) + time.perf_counter() - t0
        classes.append(ClassMaps(t, names[t], float(p), class_maps))
    rules = {m: dict(cm.maps[m].meta.get("rules", {})) for cm in classes[:1] for m in cm.maps}
    return Projection(
        model=model,
        image_name=image_name,
        image=shown,
        x=x,
        layer=layer,
        layer_tensor=what,
        maps=maps,
        units=units,
        classes=classes,
        methods=chosen,
        rules=rules,
        seconds=seconds,
    )


def _class_method(name: str, net: nn.Module, layer: str, samples: int) -> object:
    if name == "gradcam":
        return GradCAM(net, layer=layer)
    if name == "guided-gradcam":
        return GuidedGradCAM(net, layer=layer)
    if name == "smoothgrad":
        return SmoothGrad(net, samples=samples, sigma=0.15, generator=torch.Generator().manual_seed(0))
    return METHODS[name](net)


def _units(
    net: nn.Module,
    x: Tensor,
    layer: str,
    maps: Tensor,
    channel: int | None,
    top: int,
    methods: list[str],
    seconds: dict[str, float],
) -> list[Unit]:
    spatial = maps.dim() == 3
    units = []
    for ch, value, pos in strongest_units(maps, top=top, channel=channel, layer=layer, what="--channel"):
        projections: dict[str, AttributionMap] = {}
        for m in methods:
            t0 = time.perf_counter()
            where: dict[str, Any] = {"layer": layer, "channel": ch, "position": "max" if spatial else None}
            if m == "deconvnet":
                projections[m] = Deconvnet(net).attribute(x, **where)
            elif m == "guided":
                projections[m] = GuidedBackprop(net).attribute(x, **where)
            else:
                projections[m] = Saliency(net).attribute(x, abs=True, **where)
            seconds[f"{m} (unit)"] = seconds.get(f"{m} (unit)", 0.0) + time.perf_counter() - t0
        units.append(Unit(ch, value, pos, projections))
    return units
