"""Driving VMs on the lab with the `pvc` CLI as an administrator would, and reading the
lab guests' serial consoles (shared by the lab tier's VM and network tests)."""

from __future__ import annotations

import json
import os
import sys
import uuid

from pvc_lab.guest import build, domain_xml
from pvc_lab.libvirt import Libvirtd, console_dir

PVC = [sys.executable, "-m", "pvc_cli"]
BOOT = 120


def pvc(lab, *args: str, timeout: float = 300.0):
    env = dict(os.environ, NO_COLOR="1", PVC_CLI_CONFIG="/nonexistent/pvc.json")
    return lab.admin_exec([*PVC, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(lab, *args: str) -> str:
    out = pvc(lab, *args)
    assert out.returncode == 0, f"pvc {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


def info(lab, name: str) -> dict:
    return json.loads(ok(lab, "vm", "info", name, "-f", "json"))


def console(lab, name: str) -> str:
    try:
        with open(os.path.join(console_dir(lab.spec), f"{name}.log"), errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def ticks(lab, name: str) -> list[tuple[int, float]]:
    out = []
    for line in console(lab, name).splitlines():
        p = line.split()
        if len(p) >= 3 and p[0] == "tick":
            out.append((int(p[1]), float(p[2])))
    return out


def define(lab, name: str, node: str, memory: int = 128, disk: str | None = None,
           cmdline: str = "", nics: tuple[tuple[str, str], ...] = ()):
    log = os.path.join(console_dir(lab.spec), f"{name}.log")
    if os.path.exists(log):
        os.unlink(log)
    path = lab.vm_dir / f"{name}.xml"
    path.write_text(domain_xml(name, build(), log, memory_mib=memory, uuid=str(uuid.uuid4()),
                               disk=disk, cmdline=cmdline, nics=nics))
    lab.vm_names.append(name)
    out = pvc(lab, "vm", "define", str(path), "--target", node)
    return out


def start_booted(lab, name: str, node: str, **define_args) -> None:
    out = define(lab, name, node, **define_args)
    assert out.returncode == 0, out.stdout + out.stderr
    ok(lab, "vm", "start", name, "--wait")
    lab.wait_for(lambda: "GUEST-BOOTED" in console(lab, name) and len(ticks(lab, name)) >= 2,
                 BOOT, f"{name} to boot and tick")


def uris(lab) -> dict[str, str]:
    svc = Libvirtd()
    return {n.name: svc.uri(lab.spec, n) for n in lab.spec.nodes}
