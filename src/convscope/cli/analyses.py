"""`convscope inspect | project | occlusion | units | embed | evolution | diagnose`: the analyses,
thin commands over the library (each writes a report under --out)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from convscope.cli.app import (
    ImageOpt,
    InputSizeOpt,
    ModelOpt,
    WeightsOpt,
    _check_choice,
    _check_range,
    _data_opt,
    _free_threads,
    _main_rank,
    _progress,
    app,
    console,
)
from convscope.errors import one_line

EVOLUTION_STEPS = 1000  # `evolution` with no --run: the steps trained first (checkpoints after 1, 2, 5, ..., 1000)


@app.command()
def inspect(
    model: ModelOpt = "zoo:convnetjs-cifar",
    weights: WeightsOpt = None,
    image: ImageOpt = None,
    target: Annotated[
        int | None, typer.Option(help="class whose score is back-propagated (default: the top prediction)")
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for index.html, report.json and the PNGs")] = Path("report"),
    layers: Annotated[
        list[str] | None, typer.Option("--layer", help="keep only this block (repeatable, or comma-separated)")
    ] = None,
    norm: Annotated[str, typer.Option(help="map: each map on its own scale; layer: one scale per picture")] = "map",
    input_size: InputSizeOpt = None,
    all_channels: Annotated[
        bool,
        typer.Option(help="draw every map, filter and input channel (default: the 64 strongest maps per"
                     " picture; of W and dL/dW over an RGB input up to 64 filters in colour, deeper the 16 with the"
                     " largest norm over input channels"
                     " 0-15); large and slow on deep nets"),
    ] = False,
) -> None:
    """Write an HTML report for one image: an overview page and a page per block, PNGs beside them.

    Example: convscope inspect --model zoo:convnetjs-cifar --image chelsea:test --out report/
    """
    _check_choice("--norm", norm, ("map", "layer"))
    from convscope.inspect import NonFiniteOutputWarning
    from convscope.inspect import inspect as run_inspect

    with console.status("capturing and rendering…"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonFiniteOutputWarning)
        path = run_inspect(
            model,
            weights=weights,
            image=image,
            target=target,
            out=out,
            layers=_layer_list(layers),
            norm=norm,  # type: ignore[arg-type]
            input_size=input_size,
            all_channels=all_channels,
        )
    for w in caught:
        if issubclass(w.category, NonFiniteOutputWarning):
            typer.echo(f"warning: {w.message}", err=True)
        else:  # any other warning as Python would have shown it
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    typer.echo(f"report: {path.resolve()}")


@app.command()
def project(
    model: ModelOpt = "zoo:convnetjs-cifar",
    weights: WeightsOpt = None,
    image: ImageOpt = None,
    layer: Annotated[
        str | None, typer.Option(help="the layer whose feature maps are projected (default: the last conv layer)")
    ] = None,
    channel: Annotated[int | None, typer.Option(help="project this feature map only")] = None,
    top: Annotated[int, typer.Option(help="project the N maps that fire most on this image")] = 9,
    methods: Annotated[
        list[str] | None,
        typer.Option("--method", help="deconvnet|guided|saliency|smoothgrad|gradcam|guided-gradcam (repeatable; default: all)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for index.html, projections.json and the PNGs")] = Path("projections"),
    input_size: InputSizeOpt = None,
) -> None:
    """Project feature maps and class scores back to pixels (deconvnet, guided backprop, Grad-CAM, ...).

    Example: convscope project --model zoo:zfnet-small --layer conv5 --top 9 --out proj/
    """
    from convscope.project import project as run_project
    from convscope.render.projection_report import write_projection_report

    if channel is not None and top != 9:
        raise typer.BadParameter("give --channel or --top, not both")
    _free_threads()
    with console.status("projecting…"):
        result = run_project(
            model,
            weights=weights,
            image=image,
            layer=layer,
            channel=channel,
            top=top,
            methods=methods,
            input_size=input_size,
        )
        path = write_projection_report(result, out)
    typer.echo(f"report: {path.resolve()}")


@app.command()
def occlusion(
    model: ModelOpt = "zoo:convnetjs-cifar",
    weights: WeightsOpt = None,
    image: ImageOpt = None,
    layer: Annotated[
        str | None, typer.Option(help="the layer whose strongest feature map is followed (default: the last conv layer)")
    ] = None,
    window: Annotated[int | None, typer.Option(help="side of the grey square, pixels (default: a seventh of the image)")] = None,
    stride: Annotated[int | None, typer.Option(help="step between positions, pixels (default: half the window)")] = None,
    target: Annotated[int | None, typer.Option(help="the class whose probability is mapped (default: the predicted one)")] = None,
    method: Annotated[
        str | None, typer.Option(help="incremental|full (default: incremental, exact, where the model allows it)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="occluder positions per pass")] = 64,
    approx: Annotated[
        float | None,
        typer.Option(help="APPROXIMATE: each conv/pool recomputes at most this fraction of its map (0-1); the error against exact is measured and shown"),
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for index.html, occlusion.json and the PNGs")] = Path("occlusion"),
    input_size: InputSizeOpt = None,
) -> None:
    """What a prediction depends on: slide a grey square over the image (Zeiler & Fergus Fig. 7).

    Example: convscope occlusion --model zoo:zfnet-small --image chelsea:test --layer conv5 --window 16 --stride 8 --out occ/
    """

    for flag, value in (("--window", window), ("--stride", stride), ("--batch-size", batch_size)):
        _check_range(flag, value, 1)
    _check_range("--approx", approx, 0, 1, integer=False, lo_open=True, hi_open=True)
    _check_choice("--method", method, ("incremental", "full"))
    from convscope.occlusion import occlusion as run_occlusion
    from convscope.render.occlusion_report import write_occlusion_report

    _free_threads()
    with _progress("occluding", "positions") as progress:
        result = run_occlusion(model, weights=weights, image=image, layer=layer, window=window, stride=stride,
                               target=target, input_size=input_size, method=method, batch=batch_size, approx=approx,
                               progress=progress)  # fmt: skip
    if not _main_rank():
        return
    with console.status("writing the report…"):
        path = write_occlusion_report(result, out)
    g = result.grid
    typer.echo(
        f"{len(g.rows) * len(g.cols)} positions of a {g.window}px square, {g.meta.get('method')};"
        f" p({result.classes[g.target]}) {float(g.probability.min()):.3f}–{float(g.probability.max()):.3f}"
        f" (unoccluded {g.clean_probability:.3f})"
    )
    err = g.meta.get("approx_error")
    if isinstance(err, dict):
        typer.echo(f"approximation vs exact: max |Δp| {err['max_abs_probability']:.4f}, top-10% IoU {err['top10_iou']:.2f}")
    typer.echo(f"report: {path.resolve()}")


@app.command()
def units(
    model: ModelOpt = "zoo:convnetjs-cifar",
    weights: WeightsOpt = None,
    data: Annotated[str | None, _data_opt("photo-crops val")] = None,
    layers: Annotated[
        list[str] | None,
        typer.Option("--layer", "--layers", help="a layer to show: repeatable, or comma-separated as conv1,conv2 "
                                                 "(default: the last conv layer)"),
    ] = None,
    k: Annotated[int, typer.Option(help="strongest images per feature map")] = 9,
    maps: Annotated[int, typer.Option(help="feature maps shown per layer (those with the strongest top hit)")] = 16,
    limit: Annotated[int | None, typer.Option(help="stop after this many images")] = None,
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 64,
    stimulus_steps: Annotated[
        int, typer.Option(help="optimisation steps for each map's optimal stimulus (0: none)")
    ] = 128,
    out: Annotated[Path, typer.Option(help="folder for index.html, units.json and the PNGs")] = Path("units"),
    input_size: InputSizeOpt = None,
) -> None:
    """What excites each feature map: its top-k dataset patches, their projections, its optimal stimulus.

    Example: convscope units --model zoo:zfnet-small --layers conv1,conv5 --k 9 --out units/
    """

    _check_range("--k", k, 1, 10_000)
    _check_range("--batch-size", batch_size, 1)
    names = _layer_list(layers)
    from convscope.render.units_report import write_units_report
    from convscope.units import units as run_units

    _free_threads()
    with _progress("streaming", "images") as progress:
        result = run_units(
            model,
            weights=weights,
            data=data,
            layers=names,
            k=k,
            maps=maps,
            limit=limit,
            batch_size=batch_size,
            stimulus_steps=stimulus_steps,
            input_size=input_size,
            progress=progress,
        )
    if not _main_rank():
        return
    with console.status("writing the report…"):
        path = write_units_report(result, out)
    typer.echo(f"report: {path.resolve()}")


@app.command()
def embed(
    model: ModelOpt = "zoo:convnetjs-cifar",
    weights: WeightsOpt = None,
    data: Annotated[str | None, _data_opt("photo-crops val")] = None,
    layer: Annotated[
        str | None, typer.Option(help="the layer whose codes are mapped (default: the one before the classifier)")
    ] = None,
    n: Annotated[int | None, typer.Option(
        "--n", "--images", help="images mapped (default: 5000, or all of a smaller dataset); under torchrun write --images"
    )] = None,
    seed: Annotated[int, typer.Option(help="seed of the image sample, PCA and t-SNE (same seed, same map)")] = 0,
    perplexity: Annotated[float, typer.Option(help="t-SNE perplexity (needs at least 3 × perplexity + 1 images)")] = 30.0,
    side: Annotated[int | None, typer.Option(help="the grid's side (default: 40, or the largest square fewer images fill)")] = None,
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 64,
    out: Annotated[Path, typer.Option(help="folder for index.html, embedding.json and the PNGs")] = Path("embed"),
    input_size: InputSizeOpt = None,
) -> None:
    """t-SNE of a layer's codes over a dataset: a scatter of thumbnails and a grid, framed by class.

    Example: convscope embed --model zoo:zfnet-small --layer fc7 --n 5000 --out embed/
    """

    _check_range("--perplexity", perplexity, 1, 1000, integer=False)
    _check_range("--side", side, 1, 1000)
    _check_range("--n (--images)", n, 1)
    _check_range("--batch-size", batch_size, 1)
    from convscope.embed import embed as run_embed
    from convscope.render.embedding_report import write_embedding_report

    _free_threads()
    with _progress("codes", "images") as update:

        def progress(done: int, total: int | None) -> None:
            last = total is not None and done >= total
            update(done, total, "PCA and t-SNE of the codes…" if last else None)

        result = run_embed(model, weights=weights, data=data, layer=layer, n=n, seed=seed, perplexity=perplexity,
                           side=side, batch_size=batch_size, input_size=input_size, progress=progress)  # fmt: skip
    if result is None:  # another torchrun rank: rank 0 writes
        return
    with console.status("writing the report…"):
        path = write_embedding_report(result, out)
    r = result.result
    typer.echo(f"{r.n} codes of layer {r.layer} ({r.codes.shape[1]} numbers each, {r.codes_bytes / 2**20:.1f} MiB as float16)")
    typer.echo(f"report: {path.resolve()}")


@app.command()
def evolution(
    run: Annotated[
        Path | None,
        typer.Option(help="a run folder written by the built-in trainer (convscope train / demo); default: "
                          f"OUT/run, where zoo:convnetjs-cifar is first trained on builtin:photo-crops for {EVOLUTION_STEPS} steps"),
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for index.html, evolution.json and the PNGs")] = Path("evolution"),
    layer: Annotated[
        str | None, typer.Option(help="the layer whose feature maps are followed (default: the last conv layer)")
    ] = None,
    channels: Annotated[str | None, typer.Option(help="comma-separated feature maps to follow, e.g. 0,3,5")] = None,
    top: Annotated[
        int | None, typer.Option(help="follow the N maps with the strongest activation at the last checkpoint (default 8)")
    ] = None,
    images: Annotated[int | None, typer.Option(help="search only the first N held-out images (default: all)")] = None,
) -> None:
    """How feature maps evolve over training (Zeiler & Fergus Fig. 4): per map, its strongest
    activation over the held-out set at each kept checkpoint, as the input patch and its deconvnet projection.

    The built-in trainer keeps the checkpoints for this (evo-NNNNNN after 1, 2, 5, 10, 20, 50, ... steps).

    Example: convscope evolution --run runs/exp1 --layer conv2 --top 8 --out evo/
    """

    from convscope.evolution import EvolutionError
    from convscope.evolution import evolution as run_evolution
    from convscope.render.evolution_report import write_evolution_report

    chosen = None
    if channels is not None:
        parts = [c.strip() for c in channels.split(",") if c.strip()]
        if not parts or not all(c.isdigit() for c in parts):
            raise EvolutionError(f"--channels needs comma-separated map numbers such as 0,3,5; got {channels!r}")
        chosen = [int(c) for c in parts]
    _free_threads()
    if run is None:
        run = _evolution_run(out / "run")
    with _progress("two passes over the checkpoints") as progress:
        result = run_evolution(
            run,
            layer=layer,
            channels=chosen,
            top=top,
            images=images,
            progress=progress,
        )
    with console.status("writing the report…"):
        path = write_evolution_report(result, out)
    typer.echo(f"report: {path.resolve()}")


@app.command()
def diagnose(
    model: ModelOpt = "zoo:convnetjs-cifar",
    weights: WeightsOpt = None,
    data: Annotated[str | None, _data_opt("photo-crops train, the images the net learnt from")] = None,
    out: Annotated[Path, typer.Option(help="folder for index.html and diagnosis.json")] = Path("diag"),
    batch_size: Annotated[int, typer.Option(help="inputs per forward pass")] = 64,
    limit: Annotated[int | None, typer.Option(help="stop after this many inputs")] = None,
    layers: Annotated[
        list[str] | None, typer.Option("--layer", help="diagnose only this block (repeatable, or comma-separated)")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="your SGD learning rate, for the update/weight ratio (default: 0.01, assumed)")
    ] = None,
    mostly_dead: Annotated[
        float, typer.Option(help="mostly dead = all-zero map on at least this fraction of the inputs")
    ] = 0.99,
    gradients: Annotated[
        bool | None,
        typer.Option(help="sample gradient health with cross-entropy on the data's labels "
                          "(default: when they fit the model's head; --gradients: always)"),
    ] = None,
    input_size: InputSizeOpt = None,
) -> None:
    """Find dead, mostly-dead, noisy and saturated filters and check gradient health over a dataset.

    Streams the data through the model (memory does not grow with it).

    Writes OUT/index.html (self-contained: flagged filters next to healthy ones) and OUT/diagnosis.json.

    Example: convscope diagnose --model zoo:convnetjs-cifar --data builtin:photo-crops --out diag/
    """
    _check_range("--batch-size", batch_size, 1)
    _check_range("--limit", limit, 1)
    _check_range("--mostly-dead", mostly_dead, 0, 1, integer=False, lo_open=True)
    _check_range("--lr", lr, 0, integer=False, lo_open=True)
    import torch

    from convscope.data import open_dataset
    from convscope.distributed import (
        diagnose as run_diagnose,  # each torchrun rank streams its shard
    )
    from convscope.inspect import open_model
    from convscope.render.diagnose_report import write_diagnosis_report

    _free_threads()
    loaded = open_model(model, weights=weights, input_size=input_size)
    c, h, w = loaded.input_shape
    spec = data or ("builtin:digits" if c == 1 else "builtin:photo-crops")
    with console.status(f"opening {spec}…"):
        dataset = open_dataset(spec, size=(h, w), channels=c)
    mean = std = None
    if loaded.mean is not None and loaded.std is not None:
        mean = torch.tensor(loaded.mean).view(1, -1, 1, 1)  # (1, C, 1, 1)
        std = torch.tensor(loaded.std).view(1, -1, 1, 1)
    with _progress("diagnosing", "inputs") as progress:
        diag = run_diagnose(
            loaded.model,
            dataset,
            _layer_list(layers),
            batch_size=batch_size,
            limit=limit,
            lr=lr,
            mostly_dead=mostly_dead,
            gradients=gradients,
            transform=None if mean is None or std is None else (lambda x: (x - mean) / std),
            data_name=spec,
            progress=progress,
            classes=loaded.classes or None,
            untrained=_untrained(model, weights, loaded.metadata),
        )
    if not _main_rank():
        return
    path = write_diagnosis_report(diag, out, model=model)
    if diag.untrained:
        console.print(f"[bold]weights look untrained[/bold]: {diag.untrained}", highlight=False, soft_wrap=True)
    console.print(f"gradient health: {diag.gradients}", highlight=False, soft_wrap=True)
    for g in diag.groups[:8]:
        console.print(f"[bold]{g.severity:>6}[/bold] {g.summary}", highlight=False, soft_wrap=True)
    if len(diag.groups) > 8:
        console.print(f"… and {len(diag.groups) - 8} more in the report", highlight=False)
    if not diag.findings:
        console.print("no findings on this data", highlight=False)
    typer.echo(f"report: {path.resolve()}")


def _layer_list(values: list[str] | None) -> list[str] | None:
    """--layer given repeatedly and/or comma-separated (conv1,conv2), as one list (None: not given)."""
    if values is None:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--layer needs layer names such as conv1 or conv1,conv2; got {', '.join(map(repr, values))}")
    return names


def _evolution_run(run: Path) -> Path:
    """The run `evolution` follows when no --run is given: OUT/run, where the built-in trainer first
    trains zoo:convnetjs-cifar on builtin:photo-crops for EVOLUTION_STEPS steps (its evolution
    checkpoints after 1, 2, 5, 10, ... steps); a finished one left there by an earlier call is reused."""
    from convscope.config import TrainConfig
    from convscope.runs import RunReader
    from convscope.train import Trainer

    if run.exists():
        try:
            with RunReader(run) as reader:
                status = reader.meta().get("status")
        except Exception as err:  # not a run store, or a broken one: never overwritten
            raise ValueError(f"{run} is in the way of the default run (not a run: {one_line(err)}): "
                             "delete it, or pass --run or another --out") from None
        if status != "finished":
            raise ValueError(f"{run} holds an unfinished run (status {status!r}): delete it, or pass --run")
        typer.echo(f"following {run}, trained by an earlier call (delete it to train anew)")
        return run
    typer.echo(f"no --run: training zoo:convnetjs-cifar on builtin:photo-crops for {EVOLUTION_STEPS} steps into {run}")
    trainer = Trainer(TrainConfig(steps=EVOLUTION_STEPS), run)
    with _progress("training", "steps") as progress:
        trainer.run(on_step=lambda step: progress(step + 1, EVOLUTION_STEPS))
    with RunReader(run) as reader:
        status = reader.meta().get("status")
    if status != "finished":
        raise ValueError(f"training into {run} ended {status}: delete it and run again, or pass --run")
    return run


def _untrained(model: str, weights: str | None, metadata: dict[str, str]) -> str | None:
    """Why the model is untrained as far as the CLI can tell: no weights were loaded (None: some
    were; diagnose still checks for a default initialisation itself)."""
    if weights is not None or metadata:
        return None
    if model.startswith("zoo:"):
        return f"no weights were given (--weights) and none ship with {model}: it is at its random initialisation"
    return f"no weights were given (--weights): unless {model} sets its own, it is at its random initialisation"


