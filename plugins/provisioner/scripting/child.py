"""The script runner's child process: runs one provisioner script's stages.

Started by ``runner.run_script`` as ``python -m pvc_plugins.provisioner.scripting.child FD``
where FD is its end of a socket pair. It reads one JSON line (the script, the VM, the
config), then talks JSON lines: ``log`` (no answer), ``stage``, ``xml`` and ``volume``
(each answered ``{"ok": ..., "value"|"error": ...}``) and a final ``result``.

Before the script runs the child takes its own mount namespace (every mount private), a
fresh tmpfs on ``/tmp``, and before ``install()`` makes the host's mounts read-only for
itself, except ``/dev``, ``/proc``, ``/sys``, ``/run`` and ``/tmp``.
"""

from __future__ import annotations

import ctypes
import json
import linecache
import os
import socket
import sys
import threading
import traceback
import types
from typing import Any

from pvc_plugins.provisioner.scripting import compat, vmbuilder

STAGES = ("setup", "create", "prepare", "install", "cleanup")
WRITABLE = ("/dev", "/proc", "/sys", "/run", "/tmp")

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 0x20, 0x400, 0x800, 0x1000
MS_REC, MS_PRIVATE, MS_RELATIME = 0x4000, 0x40000, 0x200000
# statvfs flag -> the mount flag a bind remount must repeat to keep it
KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
              (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
              (os.ST_RELATIME, MS_RELATIME))


class Channel:
    """This end of the socket pair: JSON lines, one request answered at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.lock = threading.Lock()

    def _write(self, message: dict[str, Any]) -> None:
        for stream in (sys.stdout, sys.stderr):  # their lines first, where it can be
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        self.sock.sendall((json.dumps(message, default=str) + "\n").encode())

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self._write(message)

    def receive(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise EOFError("the node daemon closed the runner's channel")
        return json.loads(line)

    def log(self, level: str, text: str) -> None:
        self.send({"t": "log", "level": level, "text": text})

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            self._write({"t": kind, **fields})
            return self.receive()


# -- the mount namespace --------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.unshare.argtypes = [ctypes.c_int]


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    if _libc.mount(enc(source), enc(target), enc(fstype), flags,
                   ctypes.c_char_p(enc(data)) if data is not None else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _unshare_mounts() -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(CLONE_NEWNS)
        return
    if _libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "unshare(CLONE_NEWNS)")


def _unescape(path: str) -> str:
    """A mountinfo path with its octal escapes (``\\040`` for a space) undone."""
    if "\\" not in path:
        return path
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[int, str]]:
    """(mount id, mount point) of every mount this process sees, in mountinfo order."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4:
                found.append((int(fields[0]), _unescape(fields[4])))
    return found


def _under(path: str, tops: tuple[str, ...]) -> bool:
    return any(path == top or path.startswith(top + "/") for top in tops)


class Sandbox:
    """The child's own mounts; ``warnings`` says what could not be done."""

    def __init__(self) -> None:
        self.private = False
        self.host_mounts: set[int] = set()
        self.warnings: list[str] = []

    def enter(self) -> None:
        """A private mount namespace, a fresh ``/tmp``, ``/run`` etc. as mounts of their own."""
        try:
            _unshare_mounts()
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
        except OSError as exc:
            self.warnings.append(f"no private mount namespace ({exc.strerror}): the script "
                                 "runs without one, its mounts are the node's, / stays "
                                 "writable and /tmp is the node's")
            return
        self.private = True
        for top in WRITABLE[:-1]:
            if os.path.isdir(top) and not os.path.ismount(top):
                try:  # a mount of its own, so it stays writable when / is made read-only
                    _mount(top, top, None, MS_BIND | MS_REC)
                except OSError as exc:
                    self.warnings.append(f"cannot keep {top} writable: {exc.strerror}")
        self.host_mounts = {mount_id for mount_id, _ in mounts()}
        try:
            _mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777")  # like a host /tmp: dev, suid
        except OSError as exc:
            self.warnings.append(f"no private /tmp ({exc.strerror}): /tmp is the node's")
        os.environ["TMPDIR"] = "/tmp"

    def seal(self) -> None:
        """Make the node's mounts read-only for this process, but not ``WRITABLE`` ones
        nor the mounts the script made."""
        if not self.private:
            return
        seen = mounts()
        top_at = {point: mount_id for mount_id, point in seen}
        failed = []
        for mount_id, point in seen:
            if (mount_id not in self.host_mounts or _under(point, WRITABLE)
                    or top_at.get(point) != mount_id):
                continue
            try:
                kept = os.statvfs(point).f_flag
                flags = MS_REMOUNT | MS_BIND | MS_RDONLY
                flags |= sum(ms for st, ms in KEPT_FLAGS if kept & st)
                _mount(None, point, None, flags)
            except OSError as exc:
                failed.append(f"{point} ({exc.strerror})")
        if failed:
            self.warnings.append("cannot make these read-only for install(): "
                                 + ", ".join(failed))
        elif not os.statvfs("/").f_flag & os.ST_RDONLY:
            self.warnings.append("/ is still writable for install()")


# -- running the script ---------------------------------------------------------------------

class Stopped(Exception):
    """The node daemon answered a stage or the XML with an error: stop, then clean up."""


def describe(exc: BaseException) -> str:
    """The message of a failure: the exception's own text."""
    if isinstance(exc, SystemExit):
        return f"the script called sys.exit({exc.code!r})"
    text = str(exc).strip()
    return text or type(exc).__name__


class Run:
    """One script's stages, reporting through ``channel``."""

    def __init__(self, channel: Channel, start: dict[str, Any], sandbox: Sandbox) -> None:
        self.channel, self.start, self.sandbox = channel, start, sandbox
        self.filename = f"<script {start['vm_profile']}>"
        self.stage = "setup"

    def begin(self, stage: str) -> None:
        self.stage = stage
        reply = self.channel.request("stage", stage=stage)
        if not reply.get("ok") and stage != "cleanup":
            raise Stopped(reply.get("error") or "stopped by the node")

    def log_failure(self, exc: BaseException) -> None:
        """The script's traceback as error lines (not for ``fail()``'s own errors)."""
        if isinstance(exc, Stopped) or getattr(exc, "pvc_logged", False):
            return
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        for chunk in traceback.format_exception(type(exc), exc, tb):
            for line in chunk.rstrip("\n").split("\n"):
                self.channel.log("error", line)

    def load(self) -> type:
        text = self.start["script"]
        lines = text.splitlines(keepends=True)
        linecache.cache[self.filename] = (len(text), None, lines, self.filename)
        module = types.ModuleType("pvc_provisioner_script")
        module.__file__ = self.filename
        sys.modules[module.__name__] = module
        exec(compile(text, self.filename, "exec"), module.__dict__)
        builder = getattr(module, "VMBuilderScript", None)
        if not isinstance(builder, type):
            raise vmbuilder.ValidationError("the script does not define a class "
                                            "VMBuilderScript")
        return builder

    def run(self) -> dict[str, str] | None:
        """Every stage; the first failure as {stage, message}, or None."""
        start, failure, script = self.start, None, None
        try:
            self.begin("setup")
            builder = self.load()
            script = builder(start["vm_name"], start["vm_profile"], start["vm_data"],
                             vm_uuid=start.get("vm_uuid"))
            script.setup()
            self.begin("create")
            xml = script.create()
            if not isinstance(xml, str) or not xml.strip():
                raise vmbuilder.ProvisioningError(
                    f"create() must return the VM's libvirt XML as a string, not "
                    f"{type(xml).__name__ if not isinstance(xml, str) else 'an empty one'}")
            reply = self.channel.request("xml", xml=xml)
            if not reply.get("ok"):
                raise Stopped(reply.get("error") or "the node refused the XML")
            self.begin("prepare")
            script.prepare()
            self.begin("install")
            self.sandbox.seal()
            self.report_warnings()
            script.install()
        except BaseException as exc:
            failure = {"stage": self.stage, "message": describe(exc)}
            self.log_failure(exc)
        if script is not None:
            try:
                self.begin("cleanup")
            except (OSError, EOFError, ValueError):
                pass  # no node daemon to tell: clean up all the same
            try:
                script.cleanup()
            except BaseException as exc:
                self.log_failure(exc)
                if failure is None:
                    failure = {"stage": "cleanup", "message": describe(exc)}
        return failure

    def report_warnings(self) -> None:
        while self.sandbox.warnings:
            self.channel.log("warning", self.sandbox.warnings.pop(0))


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[1]))
    os.set_inheritable(sock.fileno(), False)
    channel = Channel(sock)
    start = channel.receive()
    sandbox = Sandbox()
    sandbox.enter()
    if sandbox.private:
        os.chdir("/tmp")
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, errors="backslashreplace")
    compat.install(channel, start.get("config") or {})
    run = Run(channel, start, sandbox)
    run.report_warnings()
    channel.send({"t": "result", "failure": run.run()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
