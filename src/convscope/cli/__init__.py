"""The `convscope` command: thin commands over the library (run `convscope --help`).

    convscope demo                                      # train the built-in net, live dashboard
    convscope inspect                                   # built-in net and photo → report/index.html
    convscope inspect --model my.py:Net --input-size 3x64x64 --image cat.png --out out/
    convscope diagnose --data builtin:photo-crops       # dead / noisy filters → diag/index.html
    convscope zoo                                       # the built-in nets

Errors are one line on stderr and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from convscope.cli import analyses as analyses  # registers its commands (order: --help's)
from convscope.cli import live as live
from convscope.cli.app import _state, app, console

__all__ = ["app", "main"]


@app.command()
def zoo() -> None:
    """List the built-in nets.

    Example: convscope zoo
    """
    from convscope.data import PHOTO_CLASSES
    from convscope.models import ZOO

    out = Console()
    table = Table()
    for col in ("name", "input", "classes", "weights", "photo-crops acc"):
        table.add_column(col, no_wrap=True)
    for name, entry in ZOO.items():
        path = entry.weights_path
        shipped = "yes" if path is not None and path.exists() else "no"
        # the shipped weights' accuracy on held-out built-in photo crops (scripts/train_zoo.py)
        acc = entry.shipped_metadata().get("test_accuracy") if shipped == "yes" else None
        table.add_row(f"zoo:{name}", "×".join(map(str, entry.input_shape)), str(entry.num_classes), shipped,
                      "-" if acc is None else f"{float(acc):.3f}")
    out.print(table)
    for name, entry in ZOO.items():  # below the table: whole at any terminal width
        out.print(Text(f"zoo:{name}: ", style="bold") + Text(entry.description), soft_wrap=False)
    out.print(Text(
        "photo-crops acc: the shipped weights' accuracy on held-out crops of the built-in photos (builtin:photo-crops, "
        f"not CIFAR-10): the class is which photo a crop comes from ({', '.join(PHOTO_CLASSES)})."
    ))


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
    argv = sys.argv
    if "--debug" in argv[2:]:  # given after the command's name too (`convscope inspect --debug`)
        sys.argv = [argv[0], "--debug", *(a for a in argv[1:] if a != "--debug")]
    try:
        app()
    except SystemExit:
        _leave_group()
        raise
    except Exception as exc:
        _leave_group()
        if _state["debug"]:
            raise
        from convscope.errors import one_line

        console.print(f"[red]error:[/red] {one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _leave_group() -> None:
    if "torch.distributed" not in sys.modules:  # nothing ran that could have joined a group
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

