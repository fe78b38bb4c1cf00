"""Errors raised by convscope.data: one ValueError subclass, one-line messages naming the file."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset or data file cannot be used; the message names the file and the problem."""
