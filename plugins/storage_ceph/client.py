"""One librados connection per process, plus the ceph CLI where the bindings cannot help.

``rados``/``rbd`` are Debian's bindings (python3-rados, python3-rbd); they are imported on
first use so a node without Ceph never loads them.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pvc_plugins.storage_ceph.config import CephConfig
from pvc_plugins.storage_ceph.errors import NotFound, StorageError, Unavailable

CONNECT_TIMEOUT = 10
CLIENT_OPTIONS = {"client_mount_timeout": CONNECT_TIMEOUT, "rados_mon_op_timeout": 30,
                  "rados_osd_op_timeout": 60, "mon_client_hunt_interval": 1,
                  "mon_client_ping_interval": 1, "mon_client_ping_timeout": 3,
                  "objecter_tick_interval": 1, "objecter_timeout": 2}
"""Our connection's settings. A monitor that dies silently (its node lost power) is left for
another after 3 s instead of Ceph's 30 s, and an operation sent to an OSD that died asks the
monitors for the current OSD map after 2 s instead of 10 s: a fence's storage cut, the lock
breaks and the disk checks of the VM starts that follow must not wait for this client to
notice (issue 10)."""


class CephClient:
    """A lazily connected ``rados.Rados``; reconnects after the connection broke."""

    def __init__(self, settings: CephConfig) -> None:
        self.settings = settings
        self._cluster: Any = None
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------------------
    @property
    def conf(self) -> str:
        return self.settings.ceph_conf

    def cluster(self) -> Any:
        """The connected cluster handle (raises Unavailable)."""
        with self._lock:
            if self._cluster is not None:
                return self._cluster
            if not self.settings.enabled:
                raise Unavailable(f"Ceph is not configured on node {self.settings.node} "
                                  f"({self.conf} is not readable)")
            try:
                import rados
            except ImportError:
                raise Unavailable("the Python rados bindings are missing (apt-get install "
                                  "python3-rados python3-rbd)") from None
            cluster = rados.Rados(conffile=self.conf, rados_id=self.settings.rados_id)
            for opt, value in CLIENT_OPTIONS.items():
                cluster.conf_set(opt, str(value))
            try:
                cluster.connect(timeout=CONNECT_TIMEOUT)
            except Exception as exc:
                cluster.shutdown()
                raise Unavailable(f"cannot connect to Ceph: {exc}") from None
            self._cluster = cluster
            return cluster

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                try:
                    self._cluster.shutdown()
                finally:
                    self._cluster = None

    # -- commands ------------------------------------------------------------------------
    def mon(self, prefix: str, **args: Any) -> Any:
        """A monitor command with JSON output; raises StorageError with Ceph's message."""
        return self._command("mon_command", prefix, args)

    def mon_text(self, prefix: str, **args: Any) -> str:
        """A monitor command's plain-text output (``ceph status``, ``ceph df``)."""
        return self._command("mon_command", prefix, args, None)

    def mgr(self, prefix: str, fmt: str | None = "json", **args: Any) -> Any:
        return self._command("mgr_command", prefix, args, fmt)

    def _command(self, kind: str, prefix: str, args: dict[str, Any],
                 fmt: str | None = "json") -> Any:
        cmd = {"prefix": prefix, **args}
        if fmt:
            cmd["format"] = fmt
        try:
            ret, out, err = getattr(self.cluster(), kind)(json.dumps(cmd), b"", timeout=30)
        except StorageError:
            raise
        except Exception as exc:
            self.close()
            raise Unavailable(f"Ceph did not answer '{prefix}': {exc}") from None
        if ret != 0:
            message = err or f"error {ret}"
            raise StorageError(f"Ceph refused '{prefix}': {message}")
        text = out.decode(errors="replace").rstrip()
        if fmt != "json":
            return text
        if not text:
            return None
        # raw_decode: some commands (osd blocklist ls) print two JSON documents back to back
        return json.JSONDecoder().raw_decode(text)[0]

    @contextmanager
    def ioctx(self, pool: str) -> Iterator[Any]:
        """An I/O context on ``pool`` (NotFound if the pool does not exist)."""
        import rados

        try:
            ctx = self.cluster().open_ioctx(pool)
        except rados.ObjectNotFound:
            raise NotFound(f'Pool "{pool}" not found.', 400) from None
        try:
            yield ctx
        finally:
            ctx.close()

    def pool_exists(self, pool: str) -> bool:
        return bool(self.cluster().pool_exists(pool))

    def cli(self, argv: list[str], timeout: float = 120,
            input_text: str | None = None) -> subprocess.CompletedProcess:
        """Run a Ceph tool with this node's ceph.conf and user (text output captured)."""
        full = [argv[0], "-c", self.conf, "--id", self.settings.rados_id, *argv[1:]]
        try:
            return subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                                  input=input_text,
                                  stdin=None if input_text is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(full, 124, "", f"timed out after {timeout} s")
