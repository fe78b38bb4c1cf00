"""The `convscope` command: thin commands over the library (run `convscope --help`).

    convscope demo                                      # train the built-in net, live dashboard
    convscope inspect                                   # built-in net and photo → report/index.html
    convscope inspect --model my.py:Net --input-size 3x64x64 --image cat.png --out out/
    convscope diagnose --data builtin:photo-crops       # dead / noisy filters → diag/index.html
    convscope zoo                                       # the built-in nets

Errors are one line on stderr and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from convscope.config import TrainConfig
from convscope.models import ZOO, zoo_names

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="See inside convolutional networks: x, W, z = W*x + b, a = f(z) and their gradients.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(stderr=True)
_state = {"debug": False}

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help=f"zoo:NAME ({', '.join(zoo_names())}), path/file.py:Class, or package.module:factory",
    ),
]

WeightsOpt = Annotated[
    str | None, typer.Option(help=".safetensors or a torch checkpoint (loaded with weights_only=True)")
]
ImageOpt = Annotated[
    str | None, typer.Option(help="an image file, or a built-in photo name such as chelsea, astronaut, coffee")
]
InputSizeOpt = Annotated[
    str | None, typer.Option(help="C x H x W for a model that is not from the zoo, e.g. 3x64x64")
]


@contextmanager
def _progress(what: str, unit: str = "") -> Iterator[Callable[..., None]]:
    """The progress bar (with ETA, on stderr) every long job shows: yields update(done, total,
    description=None)."""
    import rich.progress as rp

    columns: list[Any] = [rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn()]
    if unit:
        columns.append(rp.TextColumn(unit))
    columns.append(rp.TimeRemainingColumn())
    with rp.Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int | None, description: str | None = None) -> None:
            bar.update(task, completed=done, total=total, description=description)

        yield update


def _data_opt(default: str) -> Any:
    return typer.Option(
        help="builtin:photo-crops[:train|val|test], builtin:digits[:…], a dataset folder, or "
        f".npz/.npy (default: {default}; digits for a 1-channel model)"
    )


# the commands that split their data among torchrun's ranks (convscope.distributed)
DISTRIBUTED = ("diagnose", "units", "embed", "occlusion")


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False,
) -> None:
    _state["debug"] = debug
    from convscope.distributed import init_from_env

    if "WORLD_SIZE" in os.environ and ctx.invoked_subcommand not in DISTRIBUTED:
        raise ValueError(
            f"`convscope {ctx.invoked_subcommand}` runs in one process; under torchrun use one of {', '.join(DISTRIBUTED)}"
        )
    w = init_from_env()  # under torchrun: join the process group, each rank streams its shard
    if w is not None and not w.main:  # rank 0 alone prints and writes
        console.quiet = True


def _main_rank() -> bool:
    """False on torchrun's ranks other than 0: they stream their shard and write nothing."""
    from convscope.distributed import world

    w = world()
    return w is None or w.main


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
        list[str] | None, typer.Option("--layer", help="keep only this block (repeatable)")
    ] = None,
    norm: Annotated[str, typer.Option(help="map: each map on its own scale; layer: one scale per picture")] = "map",
    input_size: InputSizeOpt = None,
) -> None:
    """Write a self-contained HTML report of every block for one image.

    Example: convscope inspect --model zoo:convnetjs-cifar --image chelsea --out report/
    """
    from convscope.inspect import inspect as run_inspect

    with console.status("capturing and rendering…"):
        path = run_inspect(
            model,
            weights=weights,
            image=image,
            target=target,
            out=out,
            layers=layers,
            norm=norm,  # type: ignore[arg-type]
            input_size=input_size,
        )
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

    from convscope.occlusion import occlusion as run_occlusion
    from convscope.render.occlusion_report import write_occlusion_report

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
        str | None, typer.Option(help="comma-separated layers, e.g. conv1,conv2 (default: the last conv layer)")
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

    from convscope.render.units_report import write_units_report
    from convscope.units import units as run_units

    names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
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
    n: Annotated[int | None, typer.Option("--n", help="images mapped (default: 5000, or all of a smaller dataset)")] = None,
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

    from convscope.embed import embed as run_embed
    from convscope.render.embedding_report import write_embedding_report

    with _progress("codes", "images") as update:

        def progress(done: int, total: int | None) -> None:
            last = total is not None and done >= total
            update(done, total, "PCA and t-SNE of the codes…" if last else None)

        result = run_embed(model, weights=weights, data=data, layer=layer, n=n, seed=seed, perplexity=perplexity,
                           side=side, batch_size=batch_size, input_size=input_size, progress=progress)  # fmt: skip
    with console.status("writing the report…"):
        path = write_embedding_report(result, out)
    r = result.result
    typer.echo(f"{r.n} codes of layer {r.layer} ({r.codes.shape[1]} numbers each, {r.codes_bytes / 2**20:.1f} MiB as float16)")
    typer.echo(f"report: {path.resolve()}")


@app.command()
def evolution(
    run: Annotated[Path, typer.Option(help="a run folder written by the built-in trainer (convscope train / demo)")],
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
    data: Annotated[str | None, _data_opt("photo-crops")] = None,
    out: Annotated[Path, typer.Option(help="folder for index.html and diagnosis.json")] = Path("diag"),
    batch_size: Annotated[int, typer.Option(help="inputs per forward pass")] = 64,
    limit: Annotated[int | None, typer.Option(help="stop after this many inputs")] = None,
    layers: Annotated[
        list[str] | None, typer.Option("--layer", help="diagnose only this block (repeatable)")
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
    import torch

    from convscope.data import open_dataset
    from convscope.distributed import (
        diagnose as run_diagnose,  # each torchrun rank streams its shard
    )
    from convscope.inspect import open_model
    from convscope.render.diagnose_report import write_diagnosis_report

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
            layers,
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


def _untrained(model: str, weights: str | None, metadata: dict[str, str]) -> str | None:
    """Why the model is untrained as far as the CLI can tell: no weights were loaded (None: some
    were; diagnose still checks for a default initialisation itself)."""
    if weights is not None or metadata:
        return None
    if model.startswith("zoo:"):
        return f"no weights were given (--weights) and none ship with {model}: it is at its random initialisation"
    return f"no weights were given (--weights): unless {model} sets its own, it is at its random initialisation"


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="dashboard port (a free one is chosen if taken)")] = 8000,
    steps: Annotated[int | None, typer.Option(help="stop training after this many steps")] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="do not open a browser")] = False,
    runs: Annotated[Path, typer.Option(help="folder of runs; the demo run is kept there")] = Path("runs"),
    model: Annotated[str, typer.Option("--model", "-m", help=f"a zoo net: zoo:NAME ({', '.join(zoo_names())})")] = "zoo:convnetjs-cifar",
    data: Annotated[str, typer.Option(help="builtin:photo-crops, builtin:digits, or a dataset folder")] = "builtin:photo-crops",
    allow_host: Annotated[list[str] | None, typer.Option("--allow-host", help="another Host name the dashboard answers to (repeatable), e.g. this machine's name; localhost, 127.0.0.1, [::1] and --host always are")] = None,
) -> None:
    """Train the built-in net on built-in data and watch it live at http://127.0.0.1:PORT.

    The trainer runs in a child process and the dashboard in this one; they meet only in the run
    store (runs/demo-*/run.sqlite). Ctrl-C stops both; the run stays on disk.

    Example: convscope demo --steps 5000 --no-browser
    """
    import webbrowser

    run_dir = runs / time.strftime("demo-%Y%m%d-%H%M%S")
    cmd = [sys.executable, "-m", "convscope", "train", "--run", str(run_dir), "--model", model, "--data", data]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    child = subprocess.Popen(cmd, preexec_fn=_end_with_parent())
    try:
        _wait_for_run(run_dir, child)
        port = _free_port(port)
        url = f"http://127.0.0.1:{port}/?run={run_dir.name}"
        typer.echo(f"dashboard: {url}   (Ctrl-C stops training and the dashboard; the run stays in {run_dir})")
        if not no_browser:
            webbrowser.open(url)
        _serve(runs, host="127.0.0.1", port=port, token=None, allow_hosts=tuple(allow_host or ()))
    finally:
        _stop_child(child)
    typer.echo(f"run kept: {run_dir.resolve()}")


_TRAIN = TrainConfig()  # the built-in trainer's defaults, shown by `train --help`


@app.command()
def train(
    run: Annotated[Path, typer.Option(help="the run folder to write (created)")],
    model: Annotated[str, typer.Option("--model", "-m", help=f"a zoo net: zoo:NAME ({', '.join(zoo_names())})")] = "zoo:convnetjs-cifar",
    data: Annotated[str, typer.Option(help="builtin:photo-crops, builtin:digits, or a dataset folder")] = "builtin:photo-crops",
    steps: Annotated[int | None, typer.Option(help="stop after this many steps (default: until Ctrl-C)")] = None,
    lr: Annotated[float, typer.Option(help="SGD learning rate")] = _TRAIN.lr,
    batch_size: Annotated[int, typer.Option(help="examples per step")] = _TRAIN.batch_size,
    momentum: Annotated[float, typer.Option(help="SGD momentum")] = _TRAIN.momentum,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay")] = _TRAIN.weight_decay,
    train_size: Annotated[int, typer.Option(help="training examples")] = _TRAIN.train_size,
    resume: Annotated[bool, typer.Option(help="append to an existing run")] = False,
) -> None:
    """Run the built-in trainer into a run folder (watch it with `convscope serve`).

    Example: convscope train --run runs/exp1 --steps 2000 --lr 0.02
    """
    from convscope.train import Trainer

    cfg = TrainConfig(model=model, data=data, steps=steps, lr=lr, batch_size=batch_size, momentum=momentum,
                      weight_decay=weight_decay, train_size=train_size)
    started: list[Trainer] = []
    stop_asked: list[int] = []

    def graceful(signum: int, frame: object) -> None:  # finish the step, close the run as "stopped"
        stop_asked.append(signum)  # also while the trainer is still being built (demo's parent died)
        if started:
            started[0].stop()

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    from convscope.runs.store import RunExistsError

    try:
        trainer = Trainer(cfg, run, resume=resume, notify=lambda line: typer.echo(f"warning: {line}", err=True))
    except RunExistsError:
        raise ValueError(f"{run} already holds a run: pass --resume to continue it, or choose a new --run folder") from None
    started.append(trainer)
    if stop_asked:
        trainer.stop()
    typer.echo(f"training {model} on {data} into {run}")
    trainer.run()


@app.command(hidden=True)
def answer(
    run: Annotated[Path, typer.Option(help="the run directory whose projection requests to answer")],
    idle: Annotated[float, typer.Option(help="exit after this many seconds without a request")] = 60.0,
) -> None:
    """Answer a finished run's projection requests from its newest checkpoint (`serve` starts this).

    Example: convscope answer --run runs/exp1
    """
    from convscope.train.worker import answer_requests

    if not 0 < idle <= 3600:
        raise typer.BadParameter("--idle must be in (0, 3600] seconds")
    done = answer_requests(run, idle_s=idle)
    typer.echo(f"answered {done} request(s)")


@app.command()
def serve(
    runs: Annotated[Path, typer.Argument(help="folder holding run folders")] = Path("runs"),
    host: Annotated[str, typer.Option(help="address to bind; anything but 127.0.0.1 needs a token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (a free one is chosen if taken)")] = 8000,
    token: Annotated[str | None, typer.Option(help="access token (generated when --host is not loopback)")] = None,
    allow_host: Annotated[list[str] | None, typer.Option("--allow-host", help="another Host name the dashboard answers to (repeatable), e.g. this machine's name; localhost, 127.0.0.1, [::1] and --host always are")] = None,
) -> None:
    """Serve the dashboard over recorded runs (the trainer may be running in another process).

    Example: convscope serve runs/ --port 8080
    """
    import secrets

    if not runs.is_dir():
        raise ValueError(f"{runs} is not a folder of runs")
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        token = secrets.token_urlsafe(24)
    port = _free_port(port)
    suffix = f"?token={token}" if token else ""
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"dashboard: http://{shown}:{port}/{suffix}")
    _serve(runs, host=host, port=port, token=token, allow_hosts=tuple(allow_host or ()))


def _serve(runs: Path, *, host: str, port: int, token: str | None, allow_hosts: tuple[str, ...] = ()) -> None:
    """Blocking; Ctrl-C or SIGTERM ends the live streams and returns (open pages do not hold it
    up), so `demo` can stop its trainer. uvicorn re-raises the signal it caught once it has shut
    down: SIGTERM's default action would end the process before any `finally` ran."""
    from convscope.config import ServeConfig
    from convscope.server.serve import serve

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        serve(runs, ServeConfig(host=host, port=port, token=token, allow_hosts=allow_hosts))
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _free_port(preferred: int) -> int:
    import socket

    for candidate in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def _wait_for_run(run_dir: Path, child: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "run.sqlite").exists():
        code = child.poll()
        if code is not None:
            raise RuntimeError(f"the trainer exited with code {code} before writing {run_dir}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the trainer did not create {run_dir} within {timeout:.0f} s")
        time.sleep(0.2)


def _end_with_parent() -> Callable[[], None] | None:
    """Popen's preexec_fn for demo's trainer child: on Linux the child gets SIGTERM when this
    process dies, even by kill -9 (prctl PR_SET_PDEATHSIG), and closes its run as "stopped"
    instead of training on as an orphan. Elsewhere None (only Ctrl-C/SIGTERM stop the child)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import os

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: no import after the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG; kept across exec
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # the trainer finishes its step and closes the run as "stopped"
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@app.command()
def zoo() -> None:
    """List the built-in nets.

    Example: convscope zoo
    """
    table = Table()
    for col in ("name", "input", "classes", "weights", "test acc"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="fold")
    for name, entry in ZOO.items():
        path = entry.weights_path
        shipped = "yes" if path is not None and path.exists() else "no"
        # the shipped weights' accuracy on held-out built-in photo crops (scripts/train_zoo.py)
        acc = entry.shipped_metadata().get("test_accuracy") if shipped == "yes" else None
        table.add_row(f"zoo:{name}", "×".join(map(str, entry.input_shape)), str(entry.num_classes), shipped,
                      "-" if acc is None else f"{float(acc):.3f}", Text(entry.description))
    Console().print(table)


def _short_helps() -> None:
    """Each command's line in `convscope --help` is its docstring's first paragraph, whole (click
    would cut it at the terminal's width with "...")."""
    for cmd in app.registered_commands:
        if cmd.short_help is None and cmd.callback is not None and cmd.callback.__doc__:
            cmd.short_help = " ".join(cmd.callback.__doc__.strip().split("\n\n")[0].split())


_short_helps()


def main() -> None:
    """Entry point: usage errors as the CLI library prints them; any other error as one line
    and exit code 2 (the traceback only with --debug)."""
    try:
        app()
    except SystemExit:
        _leave_group()
        raise
    except Exception as exc:
        _leave_group()
        if _state["debug"]:
            raise
        from convscope.train.watch import one_line

        console.print(f"[red]error:[/red] {one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
