"""Answer the dashboard's `project` control on the side that holds the model (DESIGN §3
"Analyses on demand"): a feature map the user clicked, or the layer's 9 strongest, projected
back to pixels with the deconvnet (Zeiler & Fergus) and guided backprop, for the example shown.

    answer = answer_projection(model, writer, ident, {"layer": "conv2", "channel": 5}, x, step)

The example is the one the layer card shows (example 0 of the batch whose snapshot is on the
page); the weights are the model's now, so the maps are recomputed and drawn beside the
projections (the answer says both steps). Written to the run store as snapshots under
`project:ID/K` (kinds `a`, `deconvnet`, `guided`) and the JSON `project:ID`, in one commit.
Work stops at `budget_s` seconds (after the unit it is on): the answer says how many units it
did, so a big net costs the training loop a bounded pause.
"""

from __future__ import annotations

import time
from typing import Any

from torch import Tensor, nn

from convscope.analysis.attribution import AttributionError, Deconvnet, GuidedBackprop
from convscope.analysis.attribution.projection import strongest_units
from convscope.runs import RunWriter

TOP = 9  # ZF Fig. 1/2: the 9 strongest
BUDGET_S = 2.0  # the longest a projection request may hold up training (after the unit it is on)
MAX_CHANNEL = 1 << 20


def check_request(value: Any) -> tuple[str, int | None]:
    """(layer, channel or None for the top 9) from the control's value, else ValueError."""
    if not isinstance(value, dict):
        raise ValueError("project needs {'layer': NAME, 'channel': K or null}")
    layer, channel = value.get("layer"), value.get("channel")
    if not isinstance(layer, str) or not layer or len(layer) > 200:
        raise ValueError("project needs a layer name")
    if channel is not None and (
        isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < MAX_CHANNEL
    ):
        raise ValueError(f"project: channel must be an integer in 0..{MAX_CHANNEL - 1} or null")
    return layer, channel


def answer_projection(
    model: nn.Module,
    writer: RunWriter,
    ident: int,
    value: Any,
    x: Tensor,
    *,
    step: int,
    input_step: int | None,
    budget_s: float = BUDGET_S,
    weights: str | None = None,
) -> dict[str, Any]:
    """Compute, store and commit the projections; return the control's answer."""
    t0 = time.perf_counter()
    layer, channel = check_request(value)
    x = x[:1].detach()  # (1, C, H, W): the example the card shows
    try:
        maps, what = Deconvnet(model).layer_output(x, layer)  # (1, C, h, w) or (1, F)
    except AttributionError as err:
        raise ValueError(str(err)) from None
    try:
        chosen = strongest_units(maps[0], top=TOP, channel=channel, layer=layer, what="project: channel")
    except AttributionError as err:
        raise ValueError(str(err)) from None
    spatial = maps.dim() == 4
    prefix = f"project:{ident}"
    units: list[dict[str, Any]] = []
    rules: dict[str, dict[str, str]] = {}
    for k, value, pos in chosen:
        if units and time.perf_counter() - t0 > budget_s:
            break
        position = "max" if spatial else None
        deconv = Deconvnet(model).attribute(x, layer=layer, channel=k, position=position)
        guided = GuidedBackprop(model).attribute(x, layer=layer, channel=k, position=position)
        rules = {"deconvnet": deconv.meta["rules"], "guided": guided.meta["rules"]}
        if spatial:
            writer.log_snapshot(step, f"{prefix}/{k}", "a", maps[:, k : k + 1])  # (1, 1, h, w)
        writer.log_snapshot(step, f"{prefix}/{k}", "deconvnet", deconv.as_subclass(Tensor))
        writer.log_snapshot(step, f"{prefix}/{k}", "guided", guided.as_subclass(Tensor))
        units.append({"channel": k, "value": value, "position": None if pos is None else list(pos)})
    result = {
        "layer": layer,
        "tensor": what,
        "units": units,
        "asked": len(chosen),
        "step": step,  # the step the answer is stored at
        "weights": weights or f"step {step}",  # the weights used
        "input_step": input_step,  # the snapshot whose example 0 was projected
        "rules": rules,
        "seconds": round(time.perf_counter() - t0, 3),
        "budget_s": budget_s,
    }
    writer.log_json(step, prefix, result)
    writer.commit(step)
    return {"ok": True, "units": len(units), "asked": len(chosen)}
