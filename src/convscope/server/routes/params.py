"""Numbers from a URL, checked at the edge: each query or path number has a stated range, and a
value outside it (a 400-digit integer, -5, 1e999, "abc") is a 400 naming that range before any
route code runs -- never an OverflowError deep in SQLite (a 500).

    def scalars(since: Since = None, max_points: MaxPoints = None): ...

The ranges are also in the OpenAPI schema (minimum/maximum), so the fuzz test
(tests/fuzz/test_api_schema.py) generates values inside and outside them. (`int_param` puts
the BeforeValidator after the Query/Path bounds: it still runs first, and pydantic then writes
the bounds as JSON Schema's minimum/maximum rather than as stray "ge"/"le" keys.)
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

MAX_STEP = 2**63 - 1  # SQLite's INTEGER: steps and control ids are stored as one
MAX_SAMPLE = 65_535  # index of an image inside a recorded batch
MAX_POINTS = 1_000_000  # points per series after thinning
MAX_SCALE = 3.4e38  # a float32's largest finite value: pictures are float32 tensors
_INT = re.compile(r"[+-]?[0-9]{1,20}")


def int_in(what: str, lo: int, hi: int) -> Callable[[Any], int]:
    """A pydantic before-validator: `value` as an int in lo..hi, else one error naming the range
    (the app's handler puts the parameter's name first: "since: must be an integer in ...";
    `what` is said too when that name is not plain, as for path parameters)."""

    def check(value: Any) -> int:
        n: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        elif isinstance(value, str) and _INT.fullmatch(value.strip()):
            n = int(value.strip())
        if n is None or not lo <= n <= hi:
            raise PydanticCustomError(
                "int_range", "{what}must be an integer in {lo}..{hi}",
                {"what": what, "lo": lo, "hi": hi},
            )  # fmt: skip
        return n

    return check


def float_in(what: str, lo: float, hi: float) -> Callable[[Any], float]:
    """A before-validator: `value` as a finite float with lo < value <= hi."""

    def check(value: Any) -> float:
        x = math.nan
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number or (isinstance(value, str) and len(value) <= 64):
            with contextlib.suppress(ValueError, OverflowError):  # x stays NaN: refused below
                x = float(value)
        if not (math.isfinite(x) and lo < x <= hi):
            raise PydanticCustomError(
                "float_range", "must be a number with {lo} < {what} <= {hi}",
                {"what": what, "lo": lo, "hi": hi},
            )  # fmt: skip
        return x

    return check


def int_param(where: Callable[..., Any], lo: int, hi: int, description: str, *, what: str = "") -> Any:
    """`Query(...)` or `Path(...)` metadata for an int in lo..hi: the range in the OpenAPI
    schema, and `int_in`'s check (the BeforeValidator, appended after the bounds) before any
    other. `what` names a path parameter in the error."""
    info = where(ge=lo, le=hi, description=description)
    info.metadata.append(BeforeValidator(int_in(what, lo, hi)))
    return info


Since = Annotated[int | None, int_param(Query, -1, MAX_STEP, "only steps > since (-1 or absent: all)")]
Step = Annotated[int | None, int_param(Query, 0, MAX_STEP, "the newest at or before this step (absent: newest)")]
SinceId = Annotated[int, int_param(Query, 0, MAX_STEP, "only controls with id > since_id")]
MaxPoints = Annotated[int | None, int_param(Query, 2, MAX_POINTS, "thin each series to about this many points")]
Sample = Annotated[int, int_param(Query, 0, MAX_SAMPLE, "which image of the recorded batch")]
Scale = Annotated[
    float | None,
    Query(gt=0, le=MAX_SCALE, description="with norm=global: the value drawn at full colour"),
    BeforeValidator(float_in("scale", 0, MAX_SCALE)),
]
UploadId = Annotated[
    int, int_param(Path, 1, MAX_STEP, "the id POST .../uploads answered", what="upload id ")
]
TestIndex = Annotated[
    int, int_param(Path, 0, MAX_SAMPLE, "index of the run's test image", what="test image index ")
]
