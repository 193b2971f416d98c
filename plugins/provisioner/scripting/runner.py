"""Running one provisioner script, node daemon side.

The script runs in a child process (``child.py``) with its own mount namespace, so a
script that mounts, chroots or dies cannot touch the daemon. Parent and child talk JSON
lines over a socket pair; the parent answers the child's volume requests through the
``VolumeBackend`` it is given, and reads the child's stdout and stderr as log lines.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("pvc_plugins.provisioner.scripting")

CHILD_MODULE = "pvc_plugins.provisioner.scripting.child"
LINE_LIMIT = 64 * 1024  # a longer line without a newline is passed on in pieces
DRAIN_SECONDS = 2.0  # after the child ended: how long its last output may take to arrive


class ScriptFailed(Exception):
    """A script run that failed: ``stage`` where, ``message`` why (the script's text)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage, self.message = stage, message


class VolumeBackend(Protocol):
    """What the node daemon does for the script's volume requests; an exception is a
    failure and its text the message the script gets."""

    def add(self, pool: str, name: str, size_bytes: int) -> None: ...

    def clone(self, pool: str, source: str, name: str) -> None: ...

    def map(self, pool: str, name: str) -> str: ...

    def unmap(self, pool: str, name: str) -> None: ...


def check_script(text: str) -> str | None:
    """None if ``text`` compiles and defines a top-level class ``VMBuilderScript``; else
    the problem in one line. The script is parsed and compiled, never run."""
    try:
        tree = ast.parse(text, filename="<script>")
        compile(tree, "<script>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    except (ValueError, TypeError) as exc:
        return str(exc)
    if not any(isinstance(node, ast.ClassDef) and node.name == "VMBuilderScript"
               for node in tree.body):
        return "it does not define a class VMBuilderScript"
    return None


def run_script(script: str, vm_name: str, vm_profile: str, vm_data: dict[str, Any], *,
               volumes: VolumeBackend, on_stage: Callable[[str], None],
               on_log: Callable[[str, str], None], on_xml: Callable[[str], None],
               config: dict[str, Any], vm_uuid: str | None = None,
               timeout: float | None = None) -> None:
    """Run ``script``'s stages for VM ``vm_name`` in a child process.

    ``on_stage(name)`` as setup, create, prepare, install and cleanup begin; ``on_log(level,
    text)`` for the script's logs (info, warning, error) and output lines (stdout, stderr);
    ``on_xml(xml)`` with what ``create()`` returned. Raises ScriptFailed (after the child
    ran ``cleanup()`` where it still could); an exception from ``on_stage`` or ``on_xml``
    stops the script, which then cleans up, and is raised as it is.
    """
    start = {"script": script, "vm_name": vm_name, "vm_profile": vm_profile,
             "vm_data": vm_data, "vm_uuid": vm_uuid, "config": config}
    _Run(start, volumes, on_stage, on_log, on_xml, timeout).run()


class _Stream:
    """One byte stream from the child, cut into lines (output lines longer than ``limit``
    are cut there too; the channel's messages are not)."""

    def __init__(self, name: str, fd: int, limit: int | None = LINE_LIMIT) -> None:
        self.name, self.fd, self.limit = name, fd, limit
        self.buffer = b""
        self.closed = False

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        lines = []
        while True:
            cut = self.buffer.find(b"\n")
            if cut < 0:
                if self.limit is not None and len(self.buffer) >= self.limit:
                    cut = self.limit - 1
                else:
                    break
            lines.append(self.buffer[:cut + 1].rstrip(b"\r\n").decode(errors="replace"))
            self.buffer = self.buffer[cut + 1:]
        return lines

    def rest(self) -> list[str]:
        rest, self.buffer = self.buffer, b""
        return [rest.decode(errors="replace")] if rest else []


class _Run:
    """The parent's side of one run."""

    def __init__(self, start: dict[str, Any], volumes: VolumeBackend,
                 on_stage: Callable[[str], None], on_log: Callable[[str, str], None],
                 on_xml: Callable[[str], None], timeout: float | None) -> None:
        self.start, self.volumes, self.timeout = start, volumes, timeout
        self.on_stage, self.on_log, self.on_xml = on_stage, on_log, on_xml
        self.stage = "setup"
        self.result: dict[str, Any] | None = None
        self.callback_error: Exception | None = None
        self.protocol_error: str | None = None
        self.timed_out = False
        self.outgoing = (json.dumps(start, default=str) + "\n").encode()

    # -- the process ------------------------------------------------------------------

    def run(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(),), start_new_session=True, cwd="/")
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            self.serve(proc, ours)
        finally:
            if proc.returncode is None:
                self.kill_group(proc)
                proc.wait()
            ours.close()
            proc.stdout.close()
            proc.stderr.close()
        self.outcome(proc.returncode)

    @staticmethod
    def kill_group(proc: subprocess.Popen) -> None:
        """SIGKILL the child's process group (call only before the child is reaped, so its
        id cannot belong to anyone else yet)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def has_exited(proc: subprocess.Popen) -> bool:
        """Whether the child ended, without reaping it."""
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def serve(self, proc: subprocess.Popen, sock: socket.socket) -> None:
        """Answer the child until it ended (or the time is up), then read what is left."""
        sock.setblocking(False)
        streams = {"stdout": _Stream("stdout", proc.stdout.fileno()),
                   "stderr": _Stream("stderr", proc.stderr.fileno())}
        channel = _Stream("channel", sock.fileno(), limit=None)
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, channel)
        for stream in streams.values():
            os.set_blocking(stream.fd, False)
            selector.register(stream.fd, selectors.EVENT_READ, stream)
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
            selector.register(pidfd, selectors.EVENT_READ, None)
        except (AttributeError, OSError):
            pidfd = None
        deadline = time.monotonic() + self.timeout if self.timeout is not None else None
        try:
            ended = False
            while not ended:
                wait = None if pidfd is not None else 0.1
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.timed_out = True
                        break
                    wait = left if wait is None else min(wait, left)
                for key, mask in selector.select(wait):
                    if key.data is None:
                        ended = True
                    else:
                        self.pump(selector, sock, key.data, mask)
                if self.protocol_error:
                    break
                if pidfd is None and self.has_exited(proc):
                    ended = True
                if not channel.closed:  # wake up for writing only with something to send
                    events = selectors.EVENT_READ | (
                        selectors.EVENT_WRITE if self.outgoing else 0)
                    if selector.get_key(sock).events != events:
                        selector.modify(sock, events, channel)
            # the child ended, or must: end whatever it left behind, then read the rest
            self.kill_group(proc)
            self.drain(selector, sock, [channel, *streams.values()])
        finally:
            selector.close()
            if pidfd is not None:
                os.close(pidfd)

    def drain(self, selector: selectors.BaseSelector, sock: socket.socket,
              streams: list[_Stream]) -> None:
        """Read the child's last lines (its processes are gone or going)."""
        until = time.monotonic() + DRAIN_SECONDS
        for key in list(selector.get_map().values()):
            if key.data is None:
                selector.unregister(key.fileobj)
            elif key.data.name == "channel":
                selector.modify(key.fileobj, selectors.EVENT_READ, key.data)
        self.outgoing = b""
        while any(not s.closed for s in streams) and time.monotonic() < until:
            for key, mask in selector.select(max(0.0, until - time.monotonic())):
                self.pump(selector, sock, key.data, mask)
        for stream in streams:
            if stream.name != "channel":
                for line in stream.rest():
                    self.log_line(stream.name, line)

    def pump(self, selector: selectors.BaseSelector, sock: socket.socket, stream: _Stream,
             mask: int) -> None:
        """Move what is ready on one of the child's streams."""
        if stream.name == "channel" and mask & selectors.EVENT_WRITE and self.outgoing:
            try:
                sent = sock.send(self.outgoing)
                self.outgoing = self.outgoing[sent:]
            except BlockingIOError:
                pass
            except OSError:
                self.outgoing = b""  # the child is gone: nobody to answer
        if not mask & selectors.EVENT_READ or stream.closed:
            return
        try:
            data = os.read(stream.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            stream.closed = True
            selector.unregister(sock if stream.name == "channel" else stream.fd)
            return
        for line in stream.feed(data):
            if stream.name == "channel":
                self.handle(line)
            else:
                self.log_line(stream.name, line)

    # -- the child's messages ---------------------------------------------------------

    def log_line(self, level: str, text: str) -> None:
        try:
            self.on_log(level, text)
        except Exception:
            log.exception("provisioner script log callback failed")

    def reply(self, ok: bool, value: Any = None, error: str | None = None) -> None:
        answer = {"ok": ok, "value": value} if ok else {"ok": False, "error": error}
        self.outgoing += (json.dumps(answer) + "\n").encode()

    def callback(self, call: Callable[[], None]) -> None:
        """Run one of the caller's callbacks; its exception stops the script."""
        if self.callback_error is not None:
            self.reply(False, error=f"stopped by the node: {self.callback_error}")
            return
        try:
            call()
        except Exception as exc:
            self.callback_error = exc
            self.reply(False, error=f"stopped by the node: {exc or type(exc).__name__}")
        else:
            self.reply(True)

    def handle(self, line: str) -> None:
        try:
            message = json.loads(line)
            kind = message["t"]
        except (ValueError, KeyError, TypeError):
            self.protocol_error = f"unreadable message from the script runner: {line[:200]!r}"
            return
        if kind == "log":
            self.log_line(str(message.get("level", "info")), str(message.get("text", "")))
        elif kind == "stage":
            self.stage = str(message.get("stage"))
            self.callback(lambda: self.on_stage(self.stage))
        elif kind == "xml":
            self.callback(lambda: self.on_xml(str(message.get("xml", ""))))
        elif kind == "volume":
            self.volume(message)
        elif kind == "result":
            self.result = message
        else:
            self.reply(False, error=f"unknown request {kind!r}")

    def volume(self, message: dict[str, Any]) -> None:
        op, pool, name = message.get("op"), str(message.get("pool")), str(message.get("name"))
        try:
            if op == "add":
                self.reply(True, self.volumes.add(pool, name, int(message["size_bytes"])))
            elif op == "clone":
                self.reply(True, self.volumes.clone(pool, str(message["source"]), name))
            elif op == "map":
                self.reply(True, str(self.volumes.map(pool, name)))
            elif op == "unmap":
                self.reply(True, self.volumes.unmap(pool, name))
            else:
                self.reply(False, error=f"unknown volume operation {op!r}")
        except Exception as exc:
            self.reply(False, error=str(exc) or type(exc).__name__)

    # -- the outcome ------------------------------------------------------------------

    def outcome(self, returncode: int) -> None:
        if self.timed_out:
            raise ScriptFailed(self.stage, f"the script did not finish within "
                                           f"{self.timeout:g} s and was stopped")
        if self.protocol_error:
            raise ScriptFailed(self.stage, self.protocol_error)
        if self.result is None:
            raise ScriptFailed(self.stage, "the script's process ended before the script "
                                           f"finished ({_status(returncode)})"
                               ) from self.callback_error
        if self.callback_error is not None:
            raise self.callback_error
        failure = self.result.get("failure")
        if failure:
            raise ScriptFailed(str(failure.get("stage")), str(failure.get("message")))


def _status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
