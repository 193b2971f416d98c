"""The plugin's errors: each carries the HTTP status the API answers with."""

from __future__ import annotations


class StorageError(Exception):
    """A refused or failed storage operation (bad input, conflict, Ceph said no): 400."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotFound(StorageError):
    """The pool, volume, snapshot, OSD or benchmark does not exist: 404 on reads."""

    status = 404


class Unavailable(StorageError):
    """Ceph is not configured on this node or does not answer: 503."""

    status = 503
