"""A small IPMI-over-LAN client (pyghmi, in-process): power status, off and on.

The password is held in a ``BmcAccess`` whose ``repr`` hides it, and it is given to pyghmi
in memory only: no command line, no log line and no exception message carries it. Every
call opens its own RMCP+ session and logs out, and is bounded by ``timeout`` (an
unreachable BMC costs about 4.5 s inside pyghmi; the bound covers anything slower).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pvc_plugins.fencing_ipmi.errors import BmcError

log = logging.getLogger(__name__)
T = TypeVar("T")
ON, OFF = "on", "off"


@dataclass(frozen=True)
class BmcAccess:
    """How to reach one node's BMC. ``password`` never shows in ``repr``/``str``."""

    host: str
    user: str
    password: str = field(repr=False)
    port: int = 623

    def public(self) -> dict[str, Any]:
        """What may be published or shown: everything but the password."""
        return {"host": self.host, "port": self.port, "user": self.user}


def _run_bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run ``fn`` on a helper thread; BmcError if it raises or takes longer than timeout."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="ipmi", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise BmcError(f"{what}: no answer within {timeout:g} s")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, BmcError):
            raise exc
        text = str(exc) if str(exc) not in ("", "None") else type(exc).__name__
        raise BmcError(f"{what}: {text}") from None
    return box["value"]


ATTEMPTS = 3
RETRY_PAUSE = 0.3


class IpmiClient:
    """Power control of one BMC. Methods raise BmcError with a message fit for a log."""

    def __init__(self, access: BmcAccess, timeout: float = 10.0) -> None:
        self.access = access
        self.timeout = timeout

    def _forget(self) -> None:
        """Drop pyghmi's cached half-open session of this BMC: after a logout pyghmi would
        hand the dead session to the next ``Command`` ("Session no longer connected")."""
        from pyghmi.ipmi.private import session

        a = self.access
        session.Session.initting_sessions.pop((a.host, a.user, a.password, a.port, None), None)

    def _session(self) -> Any:
        from pyghmi.ipmi import command

        a = self.access
        self._forget()
        return command.Command(bmc=a.host, userid=a.user, password=a.password, port=a.port,
                               keepalive=False)

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        where = f"BMC {self.access.host}:{self.access.port} {what}"

        def work() -> T:
            # IPMI runs over UDP: a lost datagram or a slow BMC fails a session now and then,
            # so retry with a fresh session while time is left (power commands are idempotent)
            deadline = time.monotonic() + self.timeout * 0.7
            for attempt in range(1, ATTEMPTS + 1):
                cmd = None
                try:
                    cmd = self._session()
                    return fn(cmd)
                except Exception as exc:
                    if attempt == ATTEMPTS or time.monotonic() > deadline:
                        raise
                    log.info("%s failed (%s); retrying with a new session", where,
                             str(exc) or type(exc).__name__)
                    time.sleep(RETRY_PAUSE)
                finally:
                    if cmd is not None:
                        try:
                            cmd.ipmi_session.logout()
                        except Exception:
                            log.debug("IPMI logout failed", exc_info=True)
                    self._forget()
            raise AssertionError("unreachable")
        return _run_bounded(work, self.timeout, where)

    def power_state(self) -> str:
        """"on" or "off"."""
        result = self._call("power status", lambda c: c.get_power())
        state = str((result or {}).get("powerstate", "")).lower()
        if state not in (ON, OFF):
            raise BmcError(f"BMC {self.access.host}: unexpected power state {state!r}")
        return state

    def power_off(self) -> None:
        """Hard power off (chassis control 0); returns once the BMC accepted it."""
        self._call("power off", lambda c: c.set_power(OFF, wait=False))

    def power_on(self) -> None:
        self._call("power on", lambda c: c.set_power(ON, wait=False))

    def check(self) -> dict[str, Any]:
        """A self-check: {"reachable": bool, "power": "on"|"off"|None, "error": str}."""
        try:
            return {"reachable": True, "power": self.power_state(), "error": ""}
        except BmcError as exc:
            return {"reachable": False, "power": None, "error": str(exc)}
