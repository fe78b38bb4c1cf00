"""One kind of error a route raises: `ApiError(status, "one clear line")` -> JSON {"error": line}.

The app's handlers (app.py) turn it, FastAPI's own errors and anything unexpected into a
4xx/5xx JSON body with one line and never a stack trace.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: HTTP `status` and a one-line `message` for the page."""

    def __init__(self, status: int, message: str) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"ApiError status must be 4xx or 5xx, got {status}")
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())  # one line
