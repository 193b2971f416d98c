"""Network namespaces: create the lab's switch and node namespaces, find their processes,
and run Python code inside one of them.

Nothing here touches the root namespace's links or addresses: the bridge, the veth
pairs and every address are created directly inside the lab's own namespaces
(``ip -n NS link add ... peer name eth0 netns NODE``).

Reaching lab addresses from Python: a network namespace belongs to a *thread* in
Linux (setns(2) with CLONE_NEWNET is per thread) and a new thread starts in the
namespace of the thread that created it. ``enter`` moves the calling thread;
``call_in`` runs a function on a fresh thread that entered the namespace first, so
the caller stays where it is but every thread the function starts (kazoo's
connection and worker threads, for example) lives in the namespace for good.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class NetnsError(Exception):
    """An ``ip`` command or a setns(2) call failed."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; raise NetnsError with ip's own message on failure."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise NetnsError(f"ip {' '.join(args)}: {msg[-1] if msg else 'failed'}")
    return proc


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def names() -> list[str]:
    """Every named network namespace on the machine."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def add(ns: str) -> None:
    ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "lo", "up")


def delete(ns: str) -> None:
    if exists(ns):
        ip("netns", "del", ns)


def add_bridge(ns: str, bridge: str, address: str | None, prefix: int = 24) -> None:
    ip("-n", ns, "link", "add", bridge, "type", "bridge")
    if address:
        ip("-n", ns, "addr", "add", f"{address}/{prefix}", "dev", bridge)
    ip("-n", ns, "link", "set", bridge, "up")


def add_port(switch_ns: str, bridge: str, port: str, node_ns: str, address: str | None,
             prefix: int = 24, ifname: str = "eth0") -> None:
    """A veth pair: ``port`` on the bridge in ``switch_ns``, ``ifname`` (with ``address``,
    if any) in ``node_ns``."""
    ip("-n", switch_ns, "link", "add", port, "type", "veth", "peer", "name", ifname,
       "netns", node_ns)
    ip("-n", switch_ns, "link", "set", port, "master", bridge, "up")
    if address:
        ip("-n", node_ns, "addr", "add", f"{address}/{prefix}", "dev", ifname)
    ip("-n", node_ns, "link", "set", ifname, "up")


def set_link(ns: str, link: str, up: bool) -> None:
    ip("-n", ns, "link", "set", link, "up" if up else "down")


def link_is_up(ns: str, link: str) -> bool | None:
    """True/False from the link's admin flag; None if the link or namespace is missing."""
    if not exists(ns):
        return None
    proc = ip("-n", ns, "-o", "link", "show", link, check=False)
    if proc.returncode != 0:
        return None
    flags = proc.stdout.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in proc.stdout else []
    return "UP" in flags


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids(ns: str) -> list[int]:
    """PIDs of the processes whose main thread is in ``ns`` (like ``ip netns pids``).

    Zombies are not listed (their namespace links are gone). The calling process and
    its ancestors are left out, so a command run from a lab shell never kills itself.
    """
    want = _ns_id(os.path.join(NETNS_DIR, ns))
    if want is None:
        return []
    skip = _self_and_ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        if _ns_id(f"/proc/{entry}/ns/net") == want:
            found.append(int(entry))
    return sorted(found)


def _self_and_ancestors() -> set[int]:
    seen, pid = set(), os.getpid()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return seen


_libc = ctypes.CDLL(None, use_errno=True)


def _setns_fd(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(err)}")


def enter(ns: str) -> Callable[[], None]:
    """Move the calling thread into ``ns``; returns a function that moves it back."""
    path = os.path.join(NETNS_DIR, ns)
    try:
        old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    except OSError as exc:
        raise NetnsError(f"cannot open this thread's namespace: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        os.close(old)
        raise NetnsError(f"network namespace {ns} does not exist") from None
    try:
        _setns_fd(fd)
    except NetnsError:
        os.close(old)
        raise
    finally:
        os.close(fd)

    def restore() -> None:
        try:
            _setns_fd(old)
        finally:
            os.close(old)

    return restore


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """``with inside(ns):`` runs the block's thread in ``ns`` and moves it back afterwards."""
    restore = enter(ns)
    try:
        yield
    finally:
        restore()


def call_in(ns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on a new thread inside ``ns`` and return its result (or raise its error)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter(ns)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
