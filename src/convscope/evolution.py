"""evolution: how a feature map's strongest activation changes over training (ZF Fig. 4).

    from convscope.evolution import evolution
    from convscope.render.evolution_report import write_evolution_report
    evo = evolution("runs/exp1", layer="conv2", top=8)     # or channels=[0, 3, 5]
    write_evolution_report(evo, "evo/")                    # index.html + evolution.json + PNGs

    convscope evolution --run runs/exp1 --layer conv2 --top 8 --out evo/

For a run of the built-in trainer, which keeps checkpoints evo-NNNNNN after 1, 2, 5, 10, 20, ...
steps (TrainConfig.evolution_checkpoints) and "last" at the end: at each kept checkpoint, for
each chosen feature map of `layer`, the strongest activation over a fixed held-out set (the run's
validation split, normalised as the trainer normalised it: train.trainer_data.Data), found by
`TopPatches(k=1)`, with the input patch under its receptive field and its deconvnet projection
cropped to the same box. Default: the last conv layer, the 8 maps with the strongest final
activation.

Safety as the projections worker's (train/worker.py): the model is rebuilt only from the zoo
name or layer-spec text recorded in the run, never imported; weights only from the run's own
safetensors checkpoints, each of which must fit the model key for key. Like `project`, this ties
train/models/data to analysis and render, so it sits on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from convscope.analysis.attribution import Saliency
from convscope.analysis.units import LayerHits, TopPatches, crops
from convscope.config import EVOLUTION_PREFIX, TrainConfig
from convscope.project import last_conv
from convscope.render.evolution_report import Evolution, EvolutionCell, EvolutionColumn
from convscope.runs import RunReader
from convscope.train.trainer_data import Data, train_config_of
from convscope.train.units_live import net_start
from convscope.train.worker import WorkerError, rebuild

MAX_TOP = 64  # --top at most
HOW_TO_GET = (
    "train it with the built-in trainer (`convscope train --run DIR --steps N` or `convscope demo`), which "
    "keeps them after 1, 2, 5, 10, 20, 50, ... steps unless TrainConfig.evolution_checkpoints=0"
)


class EvolutionError(ValueError):
    """This run, layer or choice of maps cannot be followed; the message says why in one line."""


def evolution(
    run: str | Path,
    *,
    layer: str | None = None,
    channels: Sequence[int] | None = None,
    top: int | None = None,
    images: int | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> Evolution:
    """Follow feature maps of `layer` over a run's kept checkpoints (see the module docstring).
    channels: these maps; top: the N maps with the strongest activation at the last checkpoint
    (default 8); images: the first N held-out images (default: all of them);
    progress(done, total): after each checkpoint."""
    t0 = time.perf_counter()
    if channels is not None and top is not None:
        raise EvolutionError("give --channels or --top, not both")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP):
        raise EvolutionError(f"--top must be an integer in 1..{MAX_TOP}; got {top!r}")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 1):
        raise EvolutionError(f"--images must be a positive integer; got {images!r}")
    run_dir = Path(run)
    with RunReader(run_dir) as reader:
        meta, config, rows = reader.meta(), reader.config(), reader.checkpoints()
        start = net_start(reader.controls(), reader.last_step() or 0)  # the net now in the run (restarts)
    if meta.get("trainer") != "builtin":
        raise EvolutionError(
            "this run was recorded by watch() in your own loop: its model is not in the run, so it cannot be "
            "rebuilt here; for feature evolution, " + HOW_TO_GET
        )
    try:
        model = rebuild(meta).eval()
    except WorkerError as err:
        raise EvolutionError(str(err)) from None
    columns = _columns(rows, start)
    notes: list[str] = []
    earlier = sum(1 for r in rows if str(r["name"]).startswith(EVOLUTION_PREFIX) and _is_step(r["step"]) and r["step"] < start)
    if earlier:
        notes.append(f"{earlier} evolution checkpoint(s) of the net(s) before the restart at step {start} were left out;"
                     " steps are counted from this net's first.")
    if isinstance(meta.get("evolution_note"), str):
        notes.append(str(meta["evolution_note"]))
    if meta.get("status") == "running":
        notes.append("The run was still training: these are the checkpoints kept so far.")

    shape = _input_shape(meta)
    blank = torch.zeros(1, *shape)  # (1, C, H, W): enough to find and check the layer
    layer = layer or last_conv(model, blank)
    tp = TopPatches(model, layers=[layer], k=1)  # fails fast on an unknown layer, listing the valid ones
    maps, layer_tensor = Saliency(model).layer_output(blank, layer)
    if maps.dim() != 4:
        raise EvolutionError(f"layer {layer!r} has no spatial maps ({layer_tensor} is {tuple(maps.shape)}): pick a conv layer")
    chosen = None if channels is None else _check_channels(channels, layer, int(maps.shape[1]))

    data = Data(_train_config(config), shape)
    x = data.xval if images is None else data.xval[:images]  # (N, C, H, W) in [0, 1]
    held = "the validation split" + (" (its first images)" if images is not None and images < len(data.xval) else "")
    heldout = f"{config.get('data', '?')}: {held}, normalised with the training set's mean/std as the trainer did"

    fitted: list[tuple[EvolutionColumn, dict[str, Tensor]]] = []
    for col, row in columns:
        state, why = _state(run_dir, row, model)
        if state is None:
            notes.append(f"Checkpoint {col.name} was left out: {why}.")
        else:
            fitted.append((col, state))
    if not fitted:
        raise EvolutionError(f"no checkpoint of {run_dir} fits the run's model ({notes[-1] if notes else ''})")

    hits: list[LayerHits] = []
    for n, (_, state) in enumerate(fitted):
        model.load_state_dict(state)
        hits.append(tp.run(x, batch_size=batch_size, transform=data.norm)[layer])
        if progress is not None:
            progress(n + 1, 2 * len(fitted))
    if chosen is None:  # the `top` maps with the strongest activation at the last checkpoint
        final = hits[-1].values[:, 0]  # (C,) float64; equal values: the lower channel first
        chosen = [int(c) for c in torch.sort(final, descending=True, stable=True).indices[: top or 8]]

    strips: dict[int, list[EvolutionCell]] = {c: [] for c in chosen}
    for n, ((_, state), layer_hits) in enumerate(zip(fitted, hits, strict=True)):
        model.load_state_dict(state)
        for c in chosen:
            hit = layer_hits[c][0]
            patch, proj = crops(model, x[hit.index], hit, layer=layer, channel=c, transform=data.norm)
            strips[c].append(EvolutionCell(
                value=hit.value, index=hit.index, position=hit.position, box=hit.box,
                patch=patch.clone(), projection=proj.clone(),
            ))  # fmt: skip
        if progress is not None:
            progress(len(fitted) + n + 1, 2 * len(fitted))
    return Evolution(
        run=str(run_dir),
        model=str(meta.get("model", "?")),
        layer=layer,
        layer_tensor=layer_tensor,
        heldout=heldout,
        images=len(x),
        columns=[col for col, _ in fitted],
        strips=strips,
        notes=notes,
        seconds=time.perf_counter() - t0,
    )


def _columns(rows: list[dict[str, Any]], start: int = 0) -> list[tuple[EvolutionColumn, dict[str, Any]]]:
    """The evolution checkpoints and "last" of the net that started at step `start` (0: the run's
    first), in step order; one per step (evo-* before "last"). A checkpoint's row holds the last
    committed step index; its weights had that + 1 - `start` steps of this net."""
    mine = [r for r in rows if _is_step(r["step"]) and r["step"] >= start]
    evo = [r for r in mine if str(r["name"]).startswith(EVOLUTION_PREFIX)]
    if not evo:
        if start and any(str(r["name"]).startswith(EVOLUTION_PREFIX) for r in rows):
            raise EvolutionError(f"the run's evolution checkpoints are of the net before the restart at step {start}:"
                                 " this net has none yet")
        raise EvolutionError(f"the run has no evolution checkpoints ({EVOLUTION_PREFIX}NNNNNN): {HOW_TO_GET}")
    last = [r for r in mine if r["name"] == "last"]
    by_step: dict[int, dict[str, Any]] = {}
    for r in evo + last:
        by_step.setdefault(int(r["step"]) + 1 - start, r)
    return [(EvolutionColumn(str(by_step[s]["name"]), s), by_step[s]) for s in sorted(by_step)]


def _is_step(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _state(run_dir: Path, row: dict[str, Any], model: nn.Module) -> tuple[dict[str, Tensor] | None, str]:
    """The checkpoint's tensors if they fit `model` key for key, else (None, why)."""
    folder = (run_dir / "checkpoints").resolve()
    path = (run_dir / str(row["file"])).resolve()
    if path.parent != folder or path.suffix != ".safetensors":
        return None, f"its file {row['file']!r} is not a .safetensors file in the run's checkpoints/ folder"
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        return None, f"it cannot be read ({' '.join(str(exc).split()) or type(exc).__name__})"
    own = model.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        return None, "it does not fit the run's model (saved before a change of model?)"
    return state, ""


def _train_config(config: dict[str, Any]) -> TrainConfig:
    try:
        return train_config_of(config)
    except ValueError as err:
        raise EvolutionError(str(err)) from None


def _input_shape(meta: dict[str, Any]) -> tuple[int, int, int]:
    shape = meta.get("input_shape")
    if isinstance(shape, list) and len(shape) == 3 and all(_is_step(s) and s > 0 for s in shape):
        return int(shape[0]), int(shape[1]), int(shape[2])
    raise EvolutionError(f"the run's meta has no input shape (C, H, W): {shape!r}")


def _check_channels(channels: Sequence[int], layer: str, n: int) -> list[int]:
    """`channels` without repeats, each a map of the layer's n."""
    chosen = list(dict.fromkeys(channels))
    bad = [c for c in chosen if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n]
    if not chosen or bad:
        raise EvolutionError(
            f"--channels {', '.join(map(str, bad)) or '(none)'} out of range: layer {layer!r} has feature maps 0..{n - 1}"
        )
    return chosen
