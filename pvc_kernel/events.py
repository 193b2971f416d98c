"""Typed events carried by the bus to the ``pvc_event`` hook.

``obj`` names the object an event is about (``"node:hv1"``, ``"task:1a2b"``,
``"vm:<uuid>"``); events of one object are handled in order, one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    obj: str


@dataclass(frozen=True)
class ConnectionChanged(Event):
    """The ZooKeeper session changed: ``state`` is connected, suspended or lost."""

    state: str = "connected"


@dataclass(frozen=True)
class RoleChanged(Event):
    """This coordinator's state changed (primary, secondary, takeover, relinquish)."""

    role: str = "secondary"


@dataclass(frozen=True)
class DataChanged(Event):
    """A watched key changed; ``value`` is None when it was deleted."""

    key: str = ""
    path: str = ""
    value: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildrenChanged(Event):
    """The children of a watched key changed."""

    key: str = ""
    path: str = ""
    children: tuple[str, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TimerFired(Event):
    """A periodic timer registered with ``Bus.every`` fired."""

    name: str = ""
