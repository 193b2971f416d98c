"""The one error type of the lab: its message is one line meant for the administrator."""

from __future__ import annotations

import os


class LabError(Exception):
    """A lab operation failed."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("not root (network namespaces need root)")
