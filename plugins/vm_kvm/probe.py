"""Is KVM really usable on this host? Detect it, never assume it.

``/dev/kvm`` can exist and still be useless: a PVM-backed ``/dev/kvm`` (``kvm_pvm``, no
vmx/svm visible to the host) runs stock guest kernels ~100x slower and then dies on
"KVM internal error ... emulation failure", while ``virsh domcapabilities`` still lists
``kvm``. The probe therefore checks, cheapest first:

1. ``/dev/kvm`` opens read-write;
2. the CPU exposes hardware virtualisation (``vmx`` or ``svm`` in /proc/cpuinfo);
3. libvirt's domain capabilities for ``kvm``;
4. a real test: a tiny transient ``kvm`` domain (SeaBIOS only) must stay running for
   2 s; with ``probe_kernel``/``probe_initrd`` configured, that kernel must also print on
   its serial console within ``probe_timeout`` s.

The verdict is cached in a JSON file keyed by everything it depends on (host kernel,
QEMU binary, /dev/kvm, CPU flags), so it runs once per host and software change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

KVM_DEV = "/dev/kvm"
QEMU = "/usr/bin/qemu-system-x86_64"


@dataclass
class Verdict:
    virt_type: str          # "kvm" or "qemu"
    reason: str
    checked_at: float = 0.0
    seconds: float = 0.0
    cached: bool = False


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cache_key(flags: set[str]) -> str:
    parts = [os.uname().release, sorted(flags & {"vmx", "svm", "hypervisor"})]
    for path in (KVM_DEV, QEMU):
        try:
            st = os.stat(path)
            parts.append([path, st.st_rdev, st.st_mtime_ns, st.st_size])
        except OSError:
            parts.append([path, None])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _read_cache(path: str, key: str) -> Verdict | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
        if data.get("key") == key:
            return Verdict(**{**data["verdict"], "cached": True})
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def _write_cache(path: str, key: str, verdict: Verdict) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"key": key, "verdict": asdict(verdict)}, fh)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the KVM probe cache %s: %s", path, exc)


def static_checks(flags: set[str], kvm_dev: str = KVM_DEV) -> str | None:
    """The reason KVM cannot work, from facts that need no VM; None if it might."""
    try:
        fd = os.open(kvm_dev, os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError as exc:
        return f"{kvm_dev} is not usable ({exc.strerror})"
    if not flags & {"vmx", "svm"}:
        return ("the CPU exposes no hardware virtualisation (no vmx/svm flag; "
                f"{kvm_dev} is likely PVM or emulated)")
    return None


def _test_domain(name: str, kernel: str | None, initrd: str | None, serial: str | None) -> str:
    boot = ""
    if kernel and initrd:
        boot = (f"<kernel>{kernel}</kernel><initrd>{initrd}</initrd>"
                "<cmdline>console=ttyS0 panic=-1 quiet</cmdline>")
    dev = (f"<serial type='file'><source path='{serial}'/><target port='0'/></serial>"
           if serial else "")
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid>"
            "<memory unit='MiB'>128</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type>" + boot + "</os>"
            "<cpu mode='host-passthrough'><feature policy='disable' name='arch-capabilities'/>"
            "</cpu><features><acpi/></features><on_poweroff>destroy</on_poweroff>"
            "<on_crash>destroy</on_crash><devices>" + dev +
            "<memballoon model='none'/></devices></domain>")


def real_test(conn: Any, kernel: str | None = None, initrd: str | None = None,
              timeout: float = 20.0, workdir: str = "/var/tmp") -> str | None:
    """Run a short KVM guest through ``conn``; None if it behaved, else what went wrong."""
    import libvirt

    try:
        conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
    except libvirt.libvirtError as exc:
        return f"libvirt offers no kvm domains: {exc.get_error_message()}"
    name = f"pvc-kvm-probe-{uuidlib.uuid4().hex[:8]}"
    serial = os.path.join(workdir, f"{name}.serial") if kernel else None
    try:
        dom = conn.createXML(_test_domain(name, kernel, initrd, serial), 0)
    except libvirt.libvirtError as exc:
        return f"a kvm domain does not start: {exc.get_error_message()}"
    try:
        deadline = time.monotonic() + (timeout if kernel else 2.0)
        while time.monotonic() < deadline:
            try:
                state = dom.state()[0]
            except libvirt.libvirtError:
                return "the kvm test domain died"
            if state != libvirt.VIR_DOMAIN_RUNNING:
                return f"the kvm test domain stopped running (state {state})"
            if serial and _printed(serial):
                return None
            time.sleep(0.1)
        return f"the kvm test kernel printed nothing within {timeout:g} s" if kernel else None
    finally:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        if serial:
            try:
                os.unlink(serial)
            except OSError:
                pass


def _printed(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def decide(conn: Any, wanted: str = "auto", cache: str | None = None,
           kernel: str | None = None, initrd: str | None = None,
           timeout: float = 20.0, flags: set[str] | None = None) -> Verdict:
    """The accelerator to use: ``wanted`` if it is kvm or qemu, else the probe's verdict."""
    if wanted in ("kvm", "qemu"):
        return Verdict(wanted, "set in the configuration (virt_type)", time.time())
    flags = cpu_flags() if flags is None else flags
    key = _cache_key(flags) + ("+boot" if kernel else "")
    if cache:
        found = _read_cache(cache, key)
        if found:
            return found
    started = time.monotonic()
    problem = static_checks(flags) or real_test(conn, kernel, initrd, timeout)
    verdict = Verdict("qemu" if problem else "kvm",
                      f"KVM unusable: {problem}; using QEMU TCG" if problem
                      else "KVM works (real test passed)", time.time(),
                      round(time.monotonic() - started, 3))
    if cache:
        _write_cache(cache, key, verdict)
    return verdict
