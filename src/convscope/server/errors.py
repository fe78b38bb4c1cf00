"""One kind of error a route raises: `ApiError(status, "one clear line")` -> JSON {"error": line}.

The app's handlers (app.py) turn it, FastAPI's own errors and anything unexpected into a
4xx/5xx JSON body with one line and never a stack trace.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the server refuses: HTTP `status` and a one-line `message` for the page."""

    def __init__(self, status: int, message: str) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"ApiError status must be 4xx or 5xx, got {status}")
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())  # one line


#: What every route declares for its 4xx answers in the OpenAPI schema (`{"error": "one line"}`).
#: A "4XX" entry also keeps FastAPI from declaring its own 422 body, which this app never sends
#: (app.py turns validation errors into a 400 with one line).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "refused: one line saying why",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                    "additionalProperties": False,
                }
            }
        },
    }
}
