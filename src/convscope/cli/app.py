"""The `convscope` Typer app and what its commands share: options, progress, the torchrun guard."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from convscope.models import zoo_names

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
    str | None,
    typer.Option(help="an image file; a built-in photo (chelsea, astronaut, coffee, ...: the whole photo); or NAME:test, "
                      "a held-out crop of it as the zoo nets were trained on (default: chelsea:test)"),
]
InputSizeOpt = Annotated[
    str | None, typer.Option(help="C x H x W for a model that is not from the zoo, e.g. 3x64x64")
]


@contextmanager
def _progress(what: str, unit: str = "") -> Iterator[Callable[..., None]]:
    """The progress bar (with ETA, on stderr) every long job shows: yields update(done, total,
    description=None). Where no bar can be drawn (stderr is a file or a pipe: a CI log, `2> log`)
    a line every LINE_EVERY_S seconds says the same (`_Lines`)."""
    if not console.is_terminal:
        yield _Lines(what, unit)
        return
    import rich.progress as rp

    columns: list[Any] = [rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn()]
    if unit:
        columns.append(rp.TextColumn(unit))
    columns.append(rp.TimeRemainingColumn())
    with rp.Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int | None, description: str | None = None) -> None:
            bar.update(task, completed=done, total=total, description=description)

        yield update


LINE_EVERY_S = 10.0  # a progress line this often where no bar can be drawn


class _Lines:
    """`_progress` without a terminal: "what: done/total unit (p%), ~N s left" on stderr at most
    every `every` seconds (the first after `every`: a short job prints none), and at once when the
    job names a new phase (`description`). The time left is reckoned from the phase's start, or
    from where the count last went back (a pass started over)."""

    def __init__(self, what: str, unit: str, clock: Callable[[], float] = time.monotonic, every: float | None = None) -> None:
        self.what, self.unit, self._clock = what, unit, clock
        self._every = LINE_EVERY_S if every is None else every
        self._start = self._last = clock()
        self._from = self._done = 0  # the count where the time left is reckoned from; the last count

    def __call__(self, done: int, total: int | None, description: str | None = None) -> None:
        now = self._clock()
        if done < self._done:  # counting again from the start
            self._start, self._from = now, done
        self._done = done
        if description is not None and description != self.what:
            self.what, self._start, self._from = description, now, done
        elif now - self._last < self._every:
            return
        self._last = now
        line = f"{self.what}: {done}" + (f"/{total}" if total else "") + (f" {self.unit}" if self.unit else "")
        if total and 0 < done <= total:
            line += f" ({100 * done // total}%)"
            if done > self._from:
                line += f", ~{math.ceil((now - self._start) / (done - self._from) * (total - done))} s left"
        console.print(line, markup=False, highlight=False, soft_wrap=True, emoji=False)


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
    if "WORLD_SIZE" not in os.environ:
        return  # not under torchrun: nothing to join (and no torch to import before the command needs it)
    if ctx.invoked_subcommand not in DISTRIBUTED:
        raise ValueError(
            f"`convscope {ctx.invoked_subcommand}` runs in one process; under torchrun use one of {', '.join(DISTRIBUTED)}"
        )
    from convscope.distributed import init_from_env

    w = init_from_env()  # under torchrun: join the process group, each rank streams its shard
    if w is not None and not w.main:  # rank 0 alone prints and writes
        console.quiet = True


def _free_threads() -> None:
    """torch's thread count for an analysis command: the cores other processes leave free
    (train/threads.py `free_threads`; the environment's OMP_NUM_THREADS wins)."""
    import torch

    from convscope.train.threads import free_threads

    n = free_threads()
    if n is not None:
        torch.set_num_threads(n)


def _main_rank() -> bool:
    """False on torchrun's ranks other than 0: they stream their shard and write nothing."""
    from convscope.distributed import world

    w = world()
    return w is None or w.main


def _check_range(flag: str, value: float | None, lo: float, hi: float | None = None, *,
                 integer: bool = True, lo_open: bool = False, hi_open: bool = False) -> None:
    """An option outside its range is one `error: --flag …` line before anything heavy is imported
    (the library checks it again, in its own parameter's name). None: the option's default."""
    if value is None:
        return
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo)
    ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
    if ok:
        return
    kind = "an integer" if integer else "a number"
    if hi is None:
        where = f"{'>' if lo_open else '>='} {lo:g}"
    elif lo_open or hi_open:
        where = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    else:
        where = f"in {lo:g}..{hi:g}"
    raise ValueError(f"{flag} must be {kind} {where}; got {value if integer else format(value, 'g')}")


def _check_choice(flag: str, value: str | None, choices: tuple[str, ...]) -> None:
    """A word option that is not one of `choices` (None: its default): one `error: --flag …` line."""
    if value is not None and value not in choices:
        raise ValueError(f"{flag} must be one of {', '.join(choices)}; got {value!r}")

