"""The plugin's errors."""

from __future__ import annotations


class BmcError(Exception):
    """The BMC could not be reached, refused the session or the command."""


class FenceLost(Exception):
    """This coordinator no longer owns the fence (lock or role lost, monitor stopped, or the
    record changed under it): stop, the coordinator that owns it resumes the record."""
