"""The import names scripts written for the original PVC use, provided in the script
runner's child process only.

``install(channel, config)`` puts a finder on ``sys.meta_path`` that answers for
``daemon_lib`` (``vmbuilder``, ``common``, ``ceph``, ``libvirt_schema``) and
``pvcworkerd`` (``Daemon.config``). Nothing here is importable under those names in any
other process: no such package is shipped.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import shlex
import subprocess
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pvc_plugins.provisioner.scripting import libvirt_schema, vmbuilder

Result = tuple[bool, str]


# -- daemon_lib.common ------------------------------------------------------------------

def run_os_command(command: str | Sequence[str], background: bool = False,
                   environment: Mapping[str, str] | None = None,
                   timeout: float | None = None) -> tuple[int, str, str]:
    """Run a command (a string is split like a shell would, without a shell) and return
    ``(retcode, stdout, stderr)``. ``environment`` replaces the environment when given;
    ``background`` starts it and returns ``(0, "", "")`` at once."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    env = dict(environment) if environment is not None else None
    if not argv:
        return 127, "", "empty command"
    try:
        if background:
            subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
            return 0, "", ""
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=timeout, check=False)
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    except PermissionError as exc:
        return 126, "", str(exc)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return 124, out, f"{argv[0]} did not finish within {timeout} s and was killed"
    return done.returncode, done.stdout, done.stderr


# -- daemon_lib.ceph ----------------------------------------------------------------------

def _volume_request(zk: Any, op: str, **fields: Any) -> Result:
    channel = getattr(zk, "channel", None) or vmbuilder.current_channel()
    if channel is None:
        return False, "no script runner to ask for volumes"
    reply = channel.request("volume", op=op, **fields)
    if reply.get("ok"):
        return True, str(reply.get("value") or "")
    return False, str(reply.get("error") or "the volume request failed")


def add_volume(zk: Any, pool: str, name: str, size: str | int,
               force_flag: bool = False) -> Result:
    """Make volume ``pool/name`` of ``size`` (``4G``, ``512M``, bytes...)."""
    try:
        size_bytes = vmbuilder.parse_size(size)
    except ValueError as exc:
        return False, str(exc)
    ok, text = _volume_request(zk, "add", pool=pool, name=name, size_bytes=size_bytes)
    return (True, f"Added volume {pool}/{name} of {size_bytes} bytes.") if ok else (False, text)


def clone_volume(zk: Any, pool: str, name_src: str, name_new: str,
                 force_flag: bool = False) -> Result:
    """Make volume ``pool/name_new`` as a copy of ``pool/name_src``."""
    ok, text = _volume_request(zk, "clone", pool=pool, source=name_src, name=name_new)
    return (True, f"Cloned volume {pool}/{name_src} to {pool}/{name_new}.") if ok \
        else (False, text)


def map_volume(zk: Any, pool: str, name: str) -> Result:
    """Map ``pool/name`` on this node: ``(True, block device path)``."""
    return _volume_request(zk, "map", pool=pool, name=name)


def unmap_volume(zk: Any, pool: str, name: str) -> Result:
    """Undo ``map_volume``."""
    ok, text = _volume_request(zk, "unmap", pool=pool, name=name)
    return (True, f"Unmapped volume {pool}/{name}.") if ok else (False, text)


# -- the finder ---------------------------------------------------------------------------

def _namespace(module: types.ModuleType) -> dict[str, Any]:
    return {name: getattr(module, name) for name in module.__all__}


def provided_modules(config: Mapping[str, Any]) -> dict[str, Callable[[], dict[str, Any]]]:
    """Each provided module name and what fills it."""
    return {
        "daemon_lib": lambda: {"__doc__": "PVC's script runner's stand-in for daemon_lib."},
        "daemon_lib.vmbuilder": lambda: _namespace(vmbuilder),
        "daemon_lib.libvirt_schema": lambda: _namespace(libvirt_schema),
        "daemon_lib.common": lambda: {"run_os_command": run_os_command},
        "daemon_lib.ceph": lambda: {"add_volume": add_volume, "clone_volume": clone_volume,
                                    "map_volume": map_volume, "unmap_volume": unmap_volume},
        "pvcworkerd": lambda: {"__doc__": "PVC's script runner's stand-in for pvcworkerd."},
        "pvcworkerd.Daemon": lambda: {"config": dict(config)},
    }


PACKAGES = frozenset({"daemon_lib", "pvcworkerd"})


class CompatFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads the provided modules (and only those)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.modules = provided_modules(config)

    def find_spec(self, fullname: str, path: Any = None,
                  target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.machinery.ModuleSpec(fullname, self,
                                              is_package=fullname in PACKAGES)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__.update(self.modules[module.__name__]())
        if module.__name__ in PACKAGES:
            module.__path__ = []


def install(channel: vmbuilder.RunnerChannel, config: Mapping[str, Any]) -> CompatFinder:
    """Provide the modules in this process (the runner's child) and route their logs and
    volume requests through ``channel``."""
    vmbuilder.attach_channel(channel)
    finder = CompatFinder(config)
    sys.meta_path.insert(0, finder)
    return finder
