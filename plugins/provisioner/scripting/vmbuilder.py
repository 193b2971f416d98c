"""The ``VMBuilder`` base class provisioner scripts subclass, its exceptions and helpers.

Inside the script runner's child process this module is what ``daemon_lib.vmbuilder``
names (see ``compat``). Logging and ``open_zk`` go through the runner's channel to the
node daemon; outside a runner the log methods write to stderr and ``open_zk`` refuses.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["VMBuilder", "ValidationError", "ClusterError", "ProvisioningError", "chroot",
           "open_zk", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


class ValidationError(Exception):
    """Something the script was given is not acceptable."""


class ClusterError(Exception):
    """The cluster cannot do what the script needs."""


class ProvisioningError(Exception):
    """A provisioning step failed (the default of ``VMBuilder.fail``)."""


class RunnerChannel(Protocol):
    """What the script runner's child offers this module: logs and requests to the node."""

    def log(self, level: str, text: str) -> None: ...

    def request(self, kind: str, **fields: Any) -> dict[str, Any]: ...


_channel: RunnerChannel | None = None


def attach_channel(channel: RunnerChannel | None) -> None:
    """Route logs and volume requests of this process through ``channel``."""
    global _channel
    _channel = channel


def current_channel() -> RunnerChannel | None:
    return _channel


def trailing_number(name: str) -> int:
    """The digits at the end of ``name`` as an int; 0 if it does not end in digits."""
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else 0


def parse_size(size: str | int) -> int:
    """Bytes in a size such as ``4G``, ``512M``, ``10GB``, ``2GiB`` or ``1048576``
    (units are powers of 1024); ValueError if it is not one."""
    if isinstance(size, bool):
        raise ValueError(f"invalid size {size!r}")
    if isinstance(size, int):
        if size < 0:
            raise ValueError(f"invalid size {size!r}: it is negative")
        return size
    match = _SIZE.match(str(size))
    if not match:
        raise ValueError(f"invalid size {size!r}: expected a number with an optional unit "
                         "K, M, G, T or P (e.g. 4G, 512M, 10GB)")
    number, unit = match.group(1), match.group(2).lower()
    if unit == "" and match.group(3) and match.group(3).lower() == "ib":
        raise ValueError(f"invalid size {size!r}")
    return int(float(number) * 1024 ** _UNITS[unit])


class VMBuilder:
    """The base of a script's ``VMBuilderScript``: override the five stages.

    ``create()`` returns the VM's libvirt XML; ``cleanup()`` also runs after a failure in
    any earlier stage.
    """

    def __init__(self, vm_name: str, vm_profile: str, vm_data: dict[str, Any],
                 vm_uuid: uuid.UUID | str | None = None) -> None:
        self.vm_name = vm_name
        self.vm_id = trailing_number(vm_name)
        self.vm_profile = vm_profile
        self.vm_data = vm_data
        if vm_uuid is None:
            self.vm_uuid = uuid.uuid4()
        elif isinstance(vm_uuid, uuid.UUID):
            self.vm_uuid = vm_uuid
        else:
            self.vm_uuid = uuid.UUID(str(vm_uuid))

    # -- the stages a script overrides --------------------------------------------------

    def setup(self) -> None:
        """Check what the script needs before anything is made."""

    def create(self) -> str | None:
        """Return the complete libvirt domain XML of the VM."""
        return None

    def prepare(self) -> None:
        """Get the VM's disks ready (map, partition, mount)."""

    def install(self) -> None:
        """Install the guest (the host's ``/`` is read-only here; ``/tmp`` is private)."""

    def cleanup(self) -> None:
        """Undo ``prepare`` (unmount, unmap); also runs after a failure."""

    # -- helpers ------------------------------------------------------------------------

    def log_info(self, msg: Any) -> None:
        _log("info", msg)

    def log_warn(self, msg: Any) -> None:
        _log("warning", msg)

    def log_err(self, msg: Any) -> None:
        _log("error", msg)

    def fail(self, msg: Any, exception: type[BaseException] = ProvisioningError) -> None:
        """Log ``msg`` as an error, then raise ``exception(msg)``."""
        self.log_err(msg)
        error = exception(msg)
        try:
            error.pvc_logged = True  # the runner need not log a traceback for it
        except AttributeError:
            pass
        raise error


def _log(level: str, msg: Any) -> None:
    text = str(msg)
    if _channel is not None:
        _channel.log(level, text)
    else:
        print(f"[{level}] {text}", file=sys.stderr)


@contextmanager
def chroot(destination: str) -> Iterator[None]:
    """Run the block with ``destination`` as ``/``; the old root and working directory are
    back afterwards (also when the block raises)."""
    old_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        old_cwd: int | None = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        old_cwd = None
    try:
        os.chroot(destination)
        os.chdir("/")
        try:
            yield
        finally:
            os.fchdir(old_root)
            os.chroot(".")
            os.fchdir(old_cwd if old_cwd is not None else old_root)
    finally:
        os.close(old_root)
        if old_cwd is not None:
            os.close(old_cwd)


class ZkHandle:
    """What ``open_zk`` yields: no ZooKeeper session, just the way to the node daemon that
    the ``daemon_lib.ceph`` helpers send their volume requests along."""

    def __init__(self, channel: RunnerChannel, config: Any) -> None:
        self.channel = channel
        self.config = config


@contextmanager
def open_zk(config: Any) -> Iterator[ZkHandle]:
    """A handle for the ceph helpers (pass it as their ``zk``)."""
    if _channel is None:
        raise ClusterError("open_zk works only inside the provisioner's script runner")
    yield ZkHandle(_channel, config)
