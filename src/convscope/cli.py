"""The `convscope` command: thin commands over the library (run `convscope --help`).

    convscope inspect                                   # built-in net and photo → report/index.html
    convscope inspect --model my.py:Net --input-size 3x64x64 --image cat.png --out out/
    convscope zoo                                       # the built-in nets

Errors are one line on stderr and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from convscope.models import ZOO, zoo_names

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="See inside convolutional networks: x, W, z = W*x + b, a = f(z) and their gradients.",
    pretty_exceptions_enable=False,
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


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def inspect(
    model: ModelOpt = "zoo:convnetjs-cifar",
    weights: Annotated[
        str | None, typer.Option(help=".safetensors or a torch checkpoint (loaded with weights_only=True)")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="an image file, or a built-in photo name such as chelsea, astronaut, coffee")
    ] = None,
    target: Annotated[
        int | None, typer.Option(help="class whose score is back-propagated (default: the top prediction)")
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for index.html, report.json and the PNGs")] = Path("report"),
    layers: Annotated[
        list[str] | None, typer.Option("--layer", help="keep only this block (repeatable)")
    ] = None,
    norm: Annotated[str, typer.Option(help="map: each map on its own scale; layer: one scale per picture")] = "map",
    input_size: Annotated[
        str | None, typer.Option(help="C x H x W for a model that is not from the zoo, e.g. 3x64x64")
    ] = None,
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
def demo(
    out: Annotated[Path, typer.Option(help="where the report goes")] = Path("report"),
) -> None:
    """The main job on built-in data: inspect the built-in trained net on the built-in photo.

    Example: convscope demo --out report/
    """
    from convscope.inspect import inspect as run_inspect

    with console.status("capturing and rendering…"):
        path = run_inspect(out=out)
    typer.echo(f"report: {path.resolve()}")
    typer.echo(f"open it with: xdg-open {path.resolve()}   (or chromium {path.resolve()})")


@app.command()
def zoo() -> None:
    """List the built-in nets.

    Example: convscope zoo
    """
    table = Table()
    for col in ("name", "input", "classes", "weights"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="fold")
    for name, entry in ZOO.items():
        path = entry.weights_path
        shipped = "yes" if path is not None and path.exists() else "no"
        table.add_row(f"zoo:{name}", "×".join(map(str, entry.input_shape)), str(entry.num_classes), shipped,
                      entry.description)
    Console().print(table)


def main() -> None:
    """Entry point: usage errors as the CLI library prints them; any other error as one line
    and exit code 2 (the traceback only with --debug)."""
    try:
        app()
    except Exception as exc:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/red] {_one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return " ".join(text.split())


if __name__ == "__main__":
    main()
