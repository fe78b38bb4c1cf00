"""JSON that a browser can parse: NaN and +-Inf (a diverged loss) become null, never a 500."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

from convscope.render.html import finite


def dumps(value: Any) -> str:
    """Compact JSON; tries the fast path first and cleans non-finite numbers only when needed."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(finite(value), separators=(",", ":"), allow_nan=False)


class SafeJSONResponse(JSONResponse):
    """The app's default response class: `dumps` instead of json.dumps(allow_nan=False)."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")
