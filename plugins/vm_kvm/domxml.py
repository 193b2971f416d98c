"""Libvirt domain XML: parse and validate what PVC needs, and the few rewrites it makes."""

from __future__ import annotations

import functools
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from pvc_kernel.sdk import schema

UNITS = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000 ** 2,
         "m": 1024 ** 2, "mib": 1024 ** 2, "gb": 1000 ** 3, "g": 1024 ** 3, "gib": 1024 ** 3,
         "tb": 1000 ** 4, "t": 1024 ** 4, "tib": 1024 ** 4}
VIRT_TYPES = ("kvm", "qemu")
MAX_NAME = 64


class XmlError(ValueError):
    """The document is not a usable libvirt domain; the message says why."""


@dataclass
class Domain:
    """The facts PVC reads from a domain definition."""

    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    virt_type: str
    arch: str = ""
    machine: str = ""
    emulator: str = ""
    description: str = ""
    features: list[str] = field(default_factory=list)
    disks: list[dict[str, Any]] = field(default_factory=list)
    nics: list[dict[str, Any]] = field(default_factory=list)
    controllers: list[dict[str, Any]] = field(default_factory=list)
    console_type: str = ""
    console_log: str | None = None
    vnc: dict[str, str | None] = field(default_factory=lambda: {"listen": None, "port": None})
    vcpu_topology: str = "N/A"


def parse_root(text: str) -> ET.Element:
    if not isinstance(text, str) or not text.strip():
        raise XmlError("the XML document is empty")
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise XmlError("DOCTYPE and ENTITY declarations are not allowed")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise XmlError(f"the XML document is not well-formed: {exc}") from None
    if root.tag != "domain":
        raise XmlError(f"the root element must be <domain>, not <{root.tag}>")
    return root


def memory_mib(el: ET.Element | None) -> int:
    """A libvirt memory element (default unit KiB) in MiB, rounded down."""
    if el is None or not (el.text or "").strip():
        raise XmlError("<memory> is missing")
    unit = (el.get("unit") or "KiB").lower()
    if unit not in UNITS:
        raise XmlError(f"<memory> has an unknown unit {el.get('unit')!r}")
    try:
        value = int(el.text.strip())
    except ValueError:
        raise XmlError(f"<memory> must be an integer, not {el.text.strip()!r}") from None
    mib = value * UNITS[unit] // (1024 ** 2)
    if mib < 1:
        raise XmlError("<memory> must be at least 1 MiB")
    return mib


def _text(root: ET.Element, path: str) -> str:
    el = root.find(path)
    return (el.text or "").strip() if el is not None else ""


@functools.lru_cache(maxsize=8192)
def parse_cached(text: str) -> Domain:
    """``parse``, remembered by the document's text: for readers that leave the Domain as it
    is (a VM list reads the same thousand documents on every request)."""
    return parse(text)


def parse(text: str) -> Domain:
    """Validate and read a domain: name, uuid, memory and vcpu are required."""
    root = parse_root(text)
    name = _text(root, "name")
    if not name:
        raise XmlError("<name> is missing")
    if len(name) > MAX_NAME or not schema.valid_segment(name):
        raise XmlError(f"invalid VM name {name!r}: use at most {MAX_NAME} letters, digits "
                       "and . _ - + = : @")
    raw_uuid = _text(root, "uuid")
    if not raw_uuid:
        raise XmlError("<uuid> is missing")
    try:
        uuid = str(uuidlib.UUID(raw_uuid))
    except ValueError:
        raise XmlError(f"<uuid> {raw_uuid!r} is not a valid UUID") from None
    vcpu_text = _text(root, "vcpu")
    if not vcpu_text:
        raise XmlError("<vcpu> is missing")
    try:
        vcpus = int(vcpu_text)
    except ValueError:
        raise XmlError(f"<vcpu> must be an integer, not {vcpu_text!r}") from None
    if vcpus < 1:
        raise XmlError("<vcpu> must be at least 1")
    virt_type = root.get("type", "")
    if virt_type not in VIRT_TYPES:
        raise XmlError(f"<domain type> must be one of {', '.join(VIRT_TYPES)}, "
                       f"not {virt_type!r}")
    os_type = root.find("os/type")
    topo = root.find("cpu/topology")
    dom = Domain(
        name=name, uuid=uuid, memory_mib=memory_mib(root.find("memory")), vcpus=vcpus,
        virt_type=virt_type,
        arch=os_type.get("arch", "") if os_type is not None else "",
        machine=os_type.get("machine", "") if os_type is not None else "",
        emulator=_text(root, "devices/emulator"),
        description=_text(root, "description"),
        features=[f.tag for f in (root.find("features") or [])],
        disks=disks(root), nics=nics(root),
        controllers=[{"type": c.get("type", ""), "model": c.get("model")}
                     for c in root.findall("devices/controller")],
        vcpu_topology=(f"{topo.get('sockets', '1')}/{topo.get('cores', '1')}/"
                       f"{topo.get('threads', '1')}") if topo is not None else "N/A",
    )
    serial = root.find("devices/serial")
    console = root.find("devices/console")
    dev = serial if serial is not None else console
    if dev is not None:
        dom.console_type = dev.get("type", "")
        source, log = dev.find("source"), dev.find("log")
        if log is not None and log.get("file"):
            dom.console_log = log.get("file")
        elif dev.get("type") == "file" and source is not None:
            dom.console_log = source.get("path")
    graphics = root.find("devices/graphics[@type='vnc']")
    if graphics is not None:
        dom.vnc = {"listen": graphics.get("listen"), "port": graphics.get("port")}
    return dom


def disks(root: ET.Element) -> list[dict[str, Any]]:
    """Every <disk>: {type, device, source, protocol, format, target, bus}."""
    out = []
    for d in root.findall("devices/disk"):
        src = d.find("source")
        driver = d.find("driver")
        target = d.find("target")
        source = None
        if src is not None:
            source = src.get("file") or src.get("dev") or src.get("name") or src.get("volume")
        out.append({"type": d.get("type", ""), "device": d.get("device", "disk"),
                    "source": source, "protocol": src.get("protocol") if src is not None else None,
                    "format": driver.get("type") if driver is not None else None,
                    "target": target.get("dev") if target is not None else None,
                    "bus": target.get("bus") if target is not None else None})
    return out


def nics(root: ET.Element) -> list[dict[str, Any]]:
    out = []
    for i in root.findall("devices/interface"):
        src, mac, model = i.find("source"), i.find("mac"), i.find("model")
        source = ""
        if src is not None:
            source = src.get("bridge") or src.get("dev") or src.get("network") or ""
        out.append({"type": i.get("type", ""), "source": source,
                    "mac": mac.get("address", "") if mac is not None else "",
                    "model": model.get("type") if model is not None else None,
                    "target": (i.find("target").get("dev") if i.find("target") is not None
                               else None)})
    return out


def to_text(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


def rename(text: str, new_name: str) -> str:
    root = parse_root(text)
    el = root.find("name")
    if el is None:
        raise XmlError("<name> is missing")
    el.text = new_name
    return to_text(root)


def for_host(text: str, virt_type: str) -> str:
    """The XML to start on a node whose usable accelerator is ``virt_type``.

    A ``kvm`` domain on a TCG-only node becomes ``qemu`` and loses host CPU modes (TCG cannot
    pass the host CPU through); a ``qemu`` domain stays as it is.
    """
    root = parse_root(text)
    if root.get("type") == "kvm" and virt_type == "qemu":
        root.set("type", "qemu")
        cpu = root.find("cpu")
        if cpu is not None and cpu.get("mode") in ("host-passthrough", "host-model",
                                                   "maximum"):
            root.remove(cpu)
    return to_text(root)


def with_disk_access(text: str, access: dict[str, dict[str, Any]]) -> str:
    """Fill in network disks' ``<host>`` and ``<auth>`` from storage answers.

    ``access`` maps a disk's target (``vda``) to ``{"hosts": [{"name", "port"}], "username",
    "secret"}`` (see the ``pvc_vm_disk_prepare`` hook). What the XML already says wins: hosts
    are added only to a ``<source>`` without any, ``<auth>`` only where there is none.
    """
    if not access:
        return text
    root = parse_root(text)
    for disk in root.findall("devices/disk"):
        target, src = disk.find("target"), disk.find("source")
        info = access.get(target.get("dev", "")) if target is not None else None
        if disk.get("type") != "network" or src is None or not info:
            continue
        if src.find("host") is None:
            for host in info.get("hosts") or []:
                attrs = {"name": str(host["name"])}
                if host.get("port"):
                    attrs["port"] = str(host["port"])
                ET.SubElement(src, "host", attrs)
        if info.get("secret") and src.find("auth") is None and disk.find("auth") is None:
            secret_type = "ceph" if src.get("protocol") == "rbd" else "iscsi"
            auth = ET.SubElement(src, "auth", username=str(info.get("username") or "admin"))
            ET.SubElement(auth, "secret", type=secret_type, uuid=str(info["secret"]))
    return to_text(root)


def device(text: str) -> ET.Element:
    """A device element for hot attach/detach (``<disk>``, ``<interface>``, ...)."""
    if not isinstance(text, str) or not text.strip() or re.search(r"<!(DOCTYPE|ENTITY)", text):
        raise XmlError("Specified XML document is not valid")
    try:
        return ET.fromstring(text)
    except ET.ParseError:
        raise XmlError("Specified XML document is not valid") from None
