"""The plugin's errors."""

from __future__ import annotations


class VmError(Exception):
    """A VM request that cannot be done: ``status`` is the API answer's (4xx), ``message``
    its text (the original's wording where there is one)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
