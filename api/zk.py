"""Pipelined ZooKeeper reads with the API's time-out (``Store.fetch``: every request sent
at once, then collected).

A request answers in one round trip however many keys it reads, and never blocks longer than
``timeout`` (kazoo's synchronous calls wait forever while the connection is down). Keys
under the subtrees in pvcapid's view (``Store.use_view``) are answered from memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pvc_kernel.state import Store
from pvc_kernel.state.store import Read

Request = Read
"""(``"get"`` | ``"versioned"`` | ``"children"``, schema key name, placeholder values)."""


def get(name: str, **kw: Any) -> Request:
    """Read a key's value as text (None when it does not exist)."""
    return ("get", name, kw)


def versioned(name: str, **kw: Any) -> Request:
    """Read a key as (text, version); (None, -1) when it does not exist."""
    return ("versioned", name, kw)


def children(name: str, **kw: Any) -> Request:
    """List a key's children, sorted ([] when it does not exist)."""
    return ("children", name, kw)


def fetch(store: Store, requests: Sequence[Request], timeout: float,
          watch: Callable[[Any], None] | None = None) -> list[Any]:
    """Run ``requests`` concurrently; results in the same order (see ``Store.fetch``).

    ``watch`` (optional) is set as a one-shot watch on every key read. Raises kazoo's
    ConnectionLoss/SessionExpiredError or KazooTimeoutError when ZooKeeper cannot answer.
    """
    return store.fetch(requests, timeout, watch)


def load_json(text: str | None, default: Any) -> Any:
    """Decode a JSON value read by ``fetch``; ``default`` if absent, invalid or of another type."""
    if not text:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default
