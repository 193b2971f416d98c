"""Looking at a running lab from the root namespace: ZooKeeper's four-letter words, the
cluster state in ZooKeeper, polling, ``status``, and entering the admin namespace.

Lab addresses exist only inside the lab's namespaces. Two ways to reach them:

* ``Lab.in_admin(fn)`` / ``Lab.store()`` (used by the lab, tests and benches): run ``fn`` on
  a short-lived thread that entered the admin namespace; threads it starts (kazoo's) stay
  there, the caller does not move. Safe in a pytest run shared with other tiers.
* ``enter_admin_namespace(lab)`` / ``with admin_namespace(lab):``: move the calling thread
  (setns(2) is per thread; threads started later inherit it), e.g. before ``requests``
  opens connections to the API. Restore before the thread goes back to loopback work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pvc_lab import netns
from pvc_lab.errors import LabError
from pvc_lab.zookeeper import four_letter, parse_mode

NODE_KEYS = ("daemon_state", "coordinator_state", "keepalive")


class Observer:
    """Mixin of ``Lab``: reads, never changes, the lab (needs ``spec``, ``services``,
    ``_require_up`` and ``_node_services`` from the class it is mixed into)."""

    _store: Any
    _store_lock: Any

    def in_admin(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` on a thread inside the admin namespace (threads it starts stay there)."""
        return netns.call_in(self.spec.admin_netns, fn, *args, **kwargs)

    # -- ZooKeeper -----------------------------------------------------------------------
    def zk_modes(self) -> dict[str, str | None]:
        """{coordinator: leader|follower|standalone|None (not serving)}."""
        coords = self.spec.coordinators

        def query() -> dict[str, str | None]:
            return {c.name: parse_mode(four_letter(c.address, "srvr", timeout=1.0))
                    for c in coords}
        return self.in_admin(query)

    def zk_mode(self, node: str) -> str | None:
        addr = self.node(node).address
        return self.in_admin(lambda: parse_mode(four_letter(addr, "srvr", timeout=1.0)))

    def zk_command(self, node: str, word: str) -> str:
        """A four-letter word's reply from the node's ZooKeeper server ("" if none)."""
        addr = self.node(node).address
        return self.in_admin(four_letter, addr, word)

    def zk_leader(self) -> str | None:
        for name, mode in self.zk_modes().items():
            if mode in ("leader", "standalone"):
                return name
        return None

    def store(self, timeout: float = 15.0):
        """A connected ``pvc_kernel.state.Store`` from the admin namespace (kept open)."""
        with self._store_lock:
            if self._store is None:
                from pvc_kernel.state import Store

                hosts = self.spec.zk_hosts

                def connect():
                    st = Store(hosts, timeout=10.0)
                    st.start(timeout=timeout)
                    return st
                try:
                    self._store = self.in_admin(connect)
                except Exception as exc:
                    raise LabError(f"cannot reach ZooKeeper at {','.join(hosts)}: "
                                   f"{exc or type(exc).__name__}") from None
            return self._store

    def close(self) -> None:
        """Close the ZooKeeper client of ``store()``."""
        with self._store_lock:
            if self._store is not None:
                try:
                    self._store.stop()
                except Exception:
                    pass
                self._store = None

    def _read(self, keys: list[tuple[str, dict]], timeout: float = 3.0) -> list[str | None]:
        """Read several schema keys at once; None for missing keys or on any error."""
        from pvc_kernel.state import schema

        client = self.store().client
        asyncs = [client.get_async(schema.path(k, **kw)) for k, kw in keys]
        out: list[str | None] = []
        for a in asyncs:
            try:
                data, _ = a.get(timeout=timeout)
                out.append(data.decode() if data is not None else None)
            except Exception:
                out.append(None)
        return out

    def node_state(self, node: str) -> dict[str, Any]:
        """{daemon_state, coordinator_state, keepalive (float epoch or None)} from ZooKeeper."""
        vals = self._read([(f"node.{k}", {"node": node}) for k in NODE_KEYS])
        out: dict[str, Any] = dict(zip(NODE_KEYS, vals, strict=True))
        try:
            out["keepalive"] = float(out["keepalive"]) if out["keepalive"] else None
        except ValueError:
            out["keepalive"] = None
        return out

    def node_states(self) -> dict[str, dict[str, Any]]:
        return {n: self.node_state(n) for n in self.nodes}

    def primary(self) -> str | None:
        """``config.primary_node`` if that coordinator also reports ``primary``, else None."""
        (name,) = self._read([("config.primary_node", {})])
        if not name or name == "none" or name not in self.coordinators:
            return None
        if self.node_state(name).get("coordinator_state") != "primary":
            return None
        return name

    # -- waiting -----------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str,
                 interval: float = 0.1) -> Any:
        """Poll ``predicate`` until it returns a true value (returned); LabError on timeout.
        Exceptions raised by the predicate count as "not yet"."""
        deadline = time.monotonic() + max(0.0, timeout)
        last_exc = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:
                last_exc = exc
            if time.monotonic() >= deadline:
                extra = f" (last error: {last_exc})" if last_exc else ""
                raise LabError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
            time.sleep(interval)

    # -- status ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        s = self._require_up()
        modes = self.zk_modes() if s.coordinators else {}
        serving = any(modes.values())
        states: dict[str, dict[str, Any]] = {}
        primary = None
        zk_error = None
        if serving:
            try:
                states = self.node_states()
                primary = self.primary()
            except LabError as exc:
                zk_error = str(exc)
        else:
            zk_error = "no ZooKeeper server is serving"
        now = time.time()
        nodes = []
        for n in s.nodes:
            svc = {v.name: v.status(self, n) for v in self._node_services(n)}
            if "zookeeper" in svc:
                svc["zookeeper"]["mode"] = modes.get(n.name)
            st = states.get(n.name, {})
            ka = st.get("keepalive")
            nodes.append({
                "name": n.name, "address": n.address, "netns": n.netns,
                "coordinator": n.coordinator, "namespace": netns.exists(n.netns),
                "link": {True: "up", False: "down", None: "missing"}[
                    netns.link_is_up(s.switch_netns, n.port)],
                "processes": len(netns.pids(n.netns)),
                "services": svc,
                "daemon_state": st.get("daemon_state"),
                "coordinator_state": st.get("coordinator_state"),
                "keepalive_age": round(now - ka, 1) if ka else None,
            })
        return {"name": s.name, "state_dir": s.state_dir, "subnet": s.subnet,
                "admin_netns": s.admin_netns, "admin_address": s.admin_address,
                "zookeeper": {"hosts": s.zk_hosts, "leader": next(
                    (k for k, m in modes.items() if m in ("leader", "standalone")), None),
                    "error": zk_error},
                "api": {"hosts": s.api_hosts}, "primary": primary, "nodes": nodes}


def enter_admin_namespace(lab: Any) -> Callable[[], None]:
    """Move the CALLING THREAD into the lab's admin namespace; returns a function that moves
    it back. Threads started afterwards from this thread (kazoo, requests' pools) inherit the
    namespace, so call it before they start. Prefer ``Lab.in_admin``/``Lab.store`` in tests
    that share a process with other tiers."""
    return netns.enter(lab.admin_netns)


class admin_namespace:  # noqa: N801 (used like a function: ``with admin_namespace(lab):``)
    """Context manager form of ``enter_admin_namespace``."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self._restore: Callable[[], None] | None = None

    def __enter__(self) -> Any:
        self._restore = enter_admin_namespace(self.lab)
        return self.lab

    def __exit__(self, *exc: Any) -> None:
        if self._restore:
            self._restore()
