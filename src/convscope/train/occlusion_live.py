"""Answer the dashboard's `occlude` control on the side that holds the model (DESIGN §3 "Analyses on
demand"): Zeiler & Fergus's occlusion panels (2013, Fig. 7) for an uploaded image or a test image.

    answer_occlusion(model, writer, ident, {"upload": 7, "layer": "conv5", "window": 5, "stride": 2}, norm, step=s)

The image is read from the run store: `upload` names the `predict` control row whose PNG the server
already checked and resized, `test` an index into the run's `_test` input snapshot. `norm` is what
the model is fed (x in [0, 1] → model input); the occluder is grey (0.5 in pixel space) mapped
through it. The maps are exact (convscope.analysis.occlusion: incremental where it can, full
forwards else). The panels are drawn here with convscope.render.occlusion_report.panels (the
same pictures `convscope occlusion` writes) and stored as (1, 3, H, W) snapshots under
`occlusion:ID`, kinds = panel names; the numbers (maps, legend, how) in json `occlusion:ID`; one commit.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from convscope.analysis.attribution import AttributionError
from convscope.analysis.occlusion import Occlusion, OcclusionResult
from convscope.capture import capture
from convscope.data import prepare
from convscope.render.occlusion_report import PALETTE, panels
from convscope.runs import RunReader, RunWriter

MAX_SIDE = 64  # window and stride at most (pixels)
MAX_POSITIONS = 4096  # occluder positions per request at most (a 64×64 image at stride 1)
MAX_PIXELS = 4_000_000  # a stored upload larger than this is refused before decoding


def check_request(value: Any) -> dict[str, Any]:
    """The control's value checked: exactly one of upload / test, optional layer, window, stride,
    target (None: the model's choice). ValueError naming the problem."""
    if not isinstance(value, dict):
        raise ValueError("occlude needs {'upload': ID} or {'test': INDEX}")
    src = [k for k in ("upload", "test") if value.get(k) is not None]
    if len(src) != 1:
        raise ValueError("occlude needs exactly one of 'upload' (an upload id) or 'test' (a test image index)")
    out: dict[str, Any] = {"source": src[0]}
    for key, lo, hi in ((src[0], 0, 1 << 40), ("window", 1, MAX_SIDE), ("stride", 1, MAX_SIDE), ("target", 0, 1 << 20)):
        v = value.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise ValueError(f"occlude: {key} must be an integer in {lo}..{hi} or null")
        out[key] = v
    layer = value.get("layer")
    if layer is not None and (not isinstance(layer, str) or not 0 < len(layer) <= 200):
        raise ValueError("occlude: layer must be a layer name or null")
    out["layer"] = layer
    return out


def source_image(reader: RunReader, req: dict[str, Any], shape: tuple[int, int, int]) -> tuple[Tensor, str]:
    """(1, C, H, W) in [0, 1] and a name: the upload's PNG (resized by the server), or test image k."""
    c, h, w = shape
    if req["source"] == "test":
        found = reader.snapshot("_test", "input")
        if found is None:
            raise ValueError("occlude: the run has no test images")
        x = found[1].float()  # (N, C, H, W)
        k = req["test"]
        if not 0 <= k < x.shape[0]:
            raise ValueError(f"occlude: test image {k} is out of range: the run has {x.shape[0]}")
        return x[k : k + 1].clamp(0, 1), f"test image {k}"
    row = reader.control(req["upload"])
    value = row.get("value") if row is not None and row.get("key") == "predict" else None
    if not isinstance(value, dict) or not isinstance(value.get("png_b64"), str):
        raise ValueError(f"occlude: there is no upload {req['upload']}")
    raw = base64.b64decode(value["png_b64"], validate=True)
    with Image.open(io.BytesIO(raw)) as im:
        if im.format != "PNG" or im.width * im.height > MAX_PIXELS:
            raise ValueError("occlude: the upload is not a PNG made by the server")
        img = np.ascontiguousarray(np.asarray(im.convert("RGB")))
    name = str(value.get("name") or "upload")[:100]
    return prepare(img, size=(h, w), channels=c).unsqueeze(0), f"upload {req['upload']} ({name})"


def default_layer(model: nn.Module, x: Tensor) -> str:
    """The last conv block (what `convscope occlusion` takes by default)."""
    trace, _ = capture(model, x, keep=())
    convs = [name for name, b in trace.items() if b.kind == "conv"]
    if not convs:
        raise ValueError("occlude: the model has no conv layer: name a layer")
    return convs[-1]


def answer_occlusion(
    model: nn.Module,
    writer: RunWriter,
    ident: int,
    value: Any,
    norm: Callable[[Tensor], Tensor],
    *,
    step: int,
    weights: str | None = None,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Compute, draw, store and commit the panels; return the control's answer. ValueError for a bad request."""
    t0 = time.perf_counter()
    req = check_request(value)
    with RunReader(writer.path) as reader:
        meta = reader.meta()
        shape = meta.get("input_shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) for d in shape)):
            raise ValueError("occlude: the run has no input_shape")
        img, name = source_image(reader, req, (shape[0], shape[1], shape[2]))
        names = classes if classes is not None else meta.get("classes")
    x = norm(img)  # (1, C, H, W) as the model is fed
    c, h, w = img.shape[1:]
    side = min(h, w)
    window = req["window"] or max(2, round(side / 7))
    stride = req["stride"] or max(1, window // 2)
    if window > side:
        raise ValueError(f"occlude: window {window} is larger than the {h}×{w} image")
    positions = (-(-(h - window) // stride) + 1) * (-(-(w - window) // stride) + 1)  # the last square flush with the edge
    if positions > MAX_POSITIONS:
        raise ValueError(f"occlude: window {window} stride {stride} give {positions:,} positions, over {MAX_POSITIONS:,}: take a larger stride")
    grey = norm(torch.full((1, c, 1, 1), 0.5)).flatten()  # (C,) the occluder, as the model is fed
    was = model.training
    try:
        layer = req["layer"] or default_layer(model, x)
        grid = Occlusion(model).sensitivity(x, window=window, stride=stride, baseline=grey, target=req["target"], layer=layer)
        with torch.no_grad():
            model.eval()
            probs = torch.softmax(model(x), dim=1)[0]  # (K,)
    except (AttributionError, KeyError) as err:
        raise ValueError(f"occlude: {' '.join(str(err).split())}") from None
    finally:
        model.train(was)
    k = int(probs.shape[0])
    labels = [str(n) for n in names] if isinstance(names, list) and len(names) == k else [f"class {i}" for i in range(k)]
    shown = (img[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8)  # (H, W, C)
    rgb = shown.repeat(1, 1, 3) if c == 1 else shown
    result = OcclusionResult(model=str(meta.get("model", "")), image_name=name, image=rgb.numpy(), x=x,
                             classes=labels, clean_probs=probs, grid=grid)  # fmt: skip
    prefix = f"occlusion:{ident}"
    captions = {}
    for kind, (pic, caption) in panels(result).items():
        chw = torch.from_numpy(pic.array.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        writer.log_snapshot(step, prefix, kind, chw)
        captions[kind] = caption
    lab = grid.label.numpy()
    present = sorted({int(v) for v in np.unique(lab)} | {grid.target})
    top = probs.topk(min(3, k))
    answer = {
        "image": name,
        "layer": grid.layer,
        "channel": grid.channel,
        "window": window,
        "stride": stride,
        "rows": grid.rows,
        "cols": grid.cols,
        "target": grid.target,
        "target_name": labels[grid.target],
        "clean_probability": grid.clean_probability,
        "clean_feature": grid.clean_feature,
        "probability": [[round(float(v), 5) for v in row] for row in grid.probability.tolist()],
        "feature": None if grid.feature is None else [[round(float(v), 5) for v in row] for row in grid.feature.tolist()],
        "label": lab.tolist(),
        "legend": [{"class": i, "name": labels[i], "colour": PALETTE[i % len(PALETTE)], "positions": int((lab == i).sum())} for i in present],
        "top": [[int(i), labels[int(i)], round(float(p), 5)] for p, i in zip(top.values, top.indices, strict=True)],
        "panels": [{"kind": kind, "caption": cap} for kind, cap in captions.items()],
        "method": str(grid.meta.get("method", "")),
        "positions": positions,
        "step": step,
        "weights": weights or f"step {step}",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    writer.log_json(step, prefix, answer)
    writer.commit(step)
    return {"ok": True, "positions": positions}
