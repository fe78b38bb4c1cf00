"""A long run's history read thinned, for RunReader.scalars / layer_stats(max_points=): the page
asks for ~3,000 points a series when it opens a run (docs/speed.md).

    thinned(items, 3000)                      # every k-th item and the last, k = ceil(n / 3000)
    thin_scalars(read, where, params, 3000)   # name -> [(step, value)], thinned in SQL where it can be
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
#: a reader's query: (sql, params) -> rows
Read = Callable[[str, list[Any]], list[Any]]


def check_max_points(max_points: int | None) -> None:
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")


def thinned(items: list[T], max_points: int | None) -> list[T]:
    """Every k-th item (and always the last) so at most about `max_points` remain, k =
    ceil(len / max_points); all of them when there are no more than that."""
    if max_points is None or len(items) <= max_points:
        return items
    k = -(-len(items) // max_points)
    return [x for i, x in enumerate(items) if i % k == 0 or i == len(items) - 1]


def thinned_per(items: Sequence[T], key: Callable[[T], Hashable], max_points: int) -> list[T]:
    """`items` with each group's (same `key`) items `thinned`, in their order."""
    per: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        per.setdefault(key(item), []).append(i)
    return [items[i] for i in sorted(i for at in per.values() for i in thinned(at, max_points))]


def thin_scalars(read: Read, where: str, params: list[Any], max_points: int) -> dict[str, list[Any]]:
    """name -> [(step, value)] of the scalars table's rows matching `where` (" WHERE ...", or ""),
    thinned. Per series its count and step range first. The long series of consecutive steps
    (the usual: one value per step) are read at ONE step stride k = ceil(n / max_points) of the
    longest, at the steps that are multiples of k (and each one's first and last): series logged
    together keep points at the same steps, so the page can pair them (examples and
    examples_per_s give the rate). Any other long series is read whole and `thinned` here."""
    spans = read(f"SELECT name, COUNT(*), MIN(step), MAX(step) FROM scalars{where} GROUP BY name", params)
    pick = " AND ".join(c for c in (where.removeprefix(" WHERE "), "name = ?") if c)
    runs = [n for _, n, first, last in spans if n > max_points and last - first + 1 == n]
    k = -(-max(runs, default=1) // max_points)
    out: dict[str, list[Any]] = {}
    for name, n, first, last in sorted(spans, key=lambda r: r[2]):
        if n > max_points and last - first + 1 == n:
            out[name] = read(
                f"SELECT step, value FROM scalars WHERE {pick} AND (step % ? = 0 OR step IN (?, ?)) ORDER BY step",
                [*params, name, k, first, last],
            )
        else:
            out[name] = thinned(read(f"SELECT step, value FROM scalars WHERE {pick} ORDER BY step", [*params, name]), max_points)
    return out
