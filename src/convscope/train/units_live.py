"""Answer the dashboard's `unit` control on the side that holds the model: what excites one feature
map, over the run's held-out probe images — its top-9 patches beside their deconvnet projections
(ZF Fig. 2), its filter, and its optimal stimulus (Olah et al. 2017) — with the weights of now.

    answer_unit(model, writer, ident, {"layer": "conv2", "channel": 5}, probe, norm, step=s)

`probe` are images in [0, 1] (N, C, H, W) and `norm` what the model is fed (the built-in trainer:
its validation images and normalisation; `watch(..., probe=...)`: images given by the user).
Pictures are drawn here (convscope.render) and stored as (1, 3, H, W) snapshots under
`unit:ID`, kinds `patches`, `projections`, `filter`, `activations` (the map on the first probe
images now), `evolution` (ZF Fig. 4 strip from the run's evo-* checkpoints), `stimulus`; the numbers in json `unit:ID`; one commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from convscope.analysis.attribution import AttributionError, Deconvnet
from convscope.analysis.units import ReceptiveFieldError, TopPatches, crops
from convscope.analysis.units.optimize import Optimize
from convscope.capture import capture
from convscope.config import EVOLUTION_PREFIX
from convscope.render import Picture, filters, grid
from convscope.render.units_report import mosaic
from convscope.runs import RunReader, RunWriter
from convscope.train.projections import check_request

K = 9
STIMULUS_STEPS = 96  # about 0.5-1 s on the zoo nets, one core
MAX_PROBE = 1024  # probe images ranked per request (the first ones)
ACTIVATION_IMAGES = 8  # the map's live activation is shown on this many probe images
EVOLUTION_IMAGES = 256  # the evolution strip ranks the first probe images at each checkpoint
MAX_EVOLUTION = 16  # checkpoints in the strip (the newest)


def answer_unit(
    model: nn.Module,
    writer: RunWriter,
    ident: int,
    value: Any,
    probe: Tensor,
    norm: Callable[[Tensor], Tensor],
    *,
    step: int,
    weights: str | None = None,
    stimulus_steps: int = STIMULUS_STEPS,
) -> dict[str, Any]:
    """Compute, store and commit; return the control's answer. ValueError for a bad request."""
    t0 = time.perf_counter()
    layer, channel = check_request(value)
    if channel is None:
        raise ValueError("unit needs a channel (one feature map)")
    images = probe[:MAX_PROBE].float()  # (N, C, H, W) in [0, 1]
    try:
        result = TopPatches(model, layers=[layer], k=K).run(images, transform=norm)
    except (AttributionError, ReceptiveFieldError, KeyError) as err:
        raise ValueError(f"unit: {' '.join(str(err).split())}") from None
    hits_all = result[layer]
    c = len(hits_all)
    if not 0 <= channel < c:
        raise ValueError(f"unit: channel {channel} is out of range for layer {layer!r}: 0..{c - 1}")
    hits = hits_all[channel]
    patches, projections = [], []
    for hit in hits:
        patch, proj = crops(model, images[hit.index], hit, layer=layer, channel=channel, transform=norm)
        patches.append(patch)
        projections.append(proj)
    field = hits_all.field.as_dict()
    boxes = [hit.box for hit in hits]
    positions = [hit.position for hit in hits]
    prefix = f"unit:{ident}"
    writer.log_snapshot(step, prefix, "patches", _chw(mosaic(patches, boxes, positions, field, signed=False).array))
    writer.log_snapshot(step, prefix, "projections", _chw(mosaic(projections, boxes, positions, field, signed=True).array))
    weight = _filter(model, layer, norm(images[:1]))
    has_filter = weight is not None and weight.dim() == 4
    if weight is not None and has_filter:  # (C_out, C_in, k, k): the map's filter W
        pic = filters(weight[channel : channel + 1], labels=False).array
        writer.log_snapshot(step, prefix, "filter", _chw(pic))
    maps, _ = Deconvnet(model).layer_output(norm(images[:ACTIVATION_IMAGES]), layer)  # (n, C, h, w)
    if maps.dim() == 4:  # its activation map on the first probe images, now
        writer.log_snapshot(step, prefix, "activations", _chw(grid(maps[:, channel : channel + 1].transpose(0, 1), labels=False, signed=False).array))
    first_answer = value.get("stimulus", True) is not False
    evo_steps, evo_note = (
        _evolution(model, writer, layer, channel, images, norm, field, prefix, step) if first_answer else ([], None)
    )
    stim_act = None
    if stimulus_steps and first_answer:
        c_in, h, _ = images.shape[1:]
        mean, std = _mean_std(norm, int(c_in))
        s = Optimize(model, layer=layer, channel=channel, mean=mean, std=std, channels=int(c_in)).run(
            steps=stimulus_steps, size=int(h), seed=channel
        )
        writer.log_snapshot(step, prefix, "stimulus", s.image.detach().clamp(0, 1))
        stim_act = s.activation
    answer = {
        "layer": layer,
        "channel": channel,
        "hits": [
            {"value": h.value, "index": h.index, "position": list(h.position), "box": list(h.box)} for h in hits
        ],
        "probe_images": int(images.shape[0]),
        "field": field,
        "stimulus_activation": stim_act,
        "has_filter": has_filter,
        "evolution_steps": evo_steps,
        "evolution_note": evo_note,
        "step": step,
        "weights": weights or f"step {step}",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    writer.log_json(step, prefix, answer)
    writer.commit(step)
    return {"ok": True, "hits": len(hits)}


def _evolution(
    model: nn.Module, writer: RunWriter, layer: str, channel: int, images: Tensor,
    norm: Callable[[Tensor], Tensor], field: dict[str, Any], prefix: str, step: int,
) -> tuple[list[int], str | None]:
    """ZF Fig. 4 for this map: its strongest activation over the first probe images with the
    weights of each kept `evo-*` checkpoint of the net now training, as a strip (input patches
    over their projections), and None; or no steps and a one-line note saying why there is no
    strip. A checkpoint saved before the newest restart with another net (`net_start`) is of
    another net, even when its weights fit this one. The live model's weights are swapped for
    each checkpoint and restored exactly after."""
    with RunReader(writer.path) as r:
        evo = sorted((c for c in r.checkpoints() if str(c["name"]).startswith(EVOLUTION_PREFIX)), key=lambda c: c["step"])
        start = net_start(r.controls(), step)
    rows = [c for c in evo if int(c["step"]) >= start]
    if not rows:
        if not evo:
            return [], "no evolution strip: the run keeps no evo-* checkpoints"
        return [], (f"no evolution strip: the run's evo-* checkpoints (steps {int(evo[0]['step']) + 1}–"
                    f"{int(evo[-1]['step']) + 1}) are of the net before the restart at step {start}")  # fmt: skip
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    probe = images[:EVOLUTION_IMAGES]
    patches: list[Picture] = []
    projections: list[Picture] = []
    steps: list[int] = []
    try:
        for row in rows[-MAX_EVOLUTION:]:
            state = writer.load_checkpoint(str(row["name"]))
            if set(state) != set(saved) or any(state[k].shape != saved[k].shape for k in saved):
                continue  # does not fit this model (a restart the controls do not tell of)
            with torch.no_grad():
                model.load_state_dict(state)
            (hit,) = TopPatches(model, layers=[layer], k=1).run(probe, transform=norm)[layer][channel]
            patch, proj = crops(model, probe[hit.index], hit, layer=layer, channel=channel, transform=norm)
            patches.append(mosaic([patch], [hit.box], [hit.position], field, signed=False))
            projections.append(mosaic([proj], [hit.box], [hit.position], field, signed=True))
            steps.append(int(row["step"]) + 1 - start)  # weight updates of this net the checkpoint holds
    finally:
        with torch.no_grad():
            model.load_state_dict(saved)
    if not steps:
        return [], "no evolution strip: no evo-* checkpoint of this net fits the model"
    strip = Picture.vstack([Picture.hstack(patches, pad=4), Picture.hstack(projections, pad=4)], pad=4)
    writer.log_snapshot(step, prefix, "evolution", _chw(strip.array))
    return steps, None


def net_start(controls: list[dict[str, Any]], step: int) -> int:
    """The first step of the net that trains at `step` (0 without a restart): the step at which
    the newest restart with another net at or before it took effect (an answered, accepted
    `model` control; the trainer acknowledges it with the index of the net's first step)."""
    starts = [
        int(c["applied_step"]) for c in controls
        if c["key"] == "model" and c["applied_step"] is not None and isinstance(c["result"], dict)
        and c["result"].get("ok") is not False and int(c["applied_step"]) <= step + 1
    ]  # fmt: skip
    return max(starts, default=0)


def _filter(model: nn.Module, layer: str, x: Tensor) -> Tensor | None:
    """W of the conv that makes `layer`'s maps (None for a lone activation or a module output)."""
    try:
        trace, _ = capture(model, x, layers=[layer], keep=("weight",))
        return trace[layer].weight
    except (KeyError, ValueError):
        return None


def _chw(rgb: np.ndarray[Any, Any]) -> Tensor:
    """A uint8 (H, W, 3) picture as a (1, 3, H, W) tensor in [0, 1] (what image.png draws)."""
    return torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


def _mean_std(norm: Callable[[Tensor], Tensor], channels: int) -> tuple[list[float], list[float]]:
    """The affine normalisation `norm` applies, read off two constant images: x' = (x − mean)/std."""
    zero = norm(torch.zeros(1, channels, 1, 1)).flatten()  # −mean/std
    one = norm(torch.ones(1, channels, 1, 1)).flatten()  # (1 − mean)/std
    std = 1.0 / (one - zero)
    mean = -zero * std
    return mean.tolist(), std.tolist()
