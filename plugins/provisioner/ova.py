"""OVA appliance import: read an uploaded OVA archive and convert its disks to raw.

An OVA is an uncompressed tar holding an OVF descriptor, optionally a ``.mf`` manifest, and the
disk images the descriptor references. Nothing is ever extracted: each disk is handed to
``qemu-img`` as a read-only byte range of the tar file, through a ``raw`` node with ``offset`` and
``size`` under the image's format driver (``vmdk``, ``qcow2``, ...). The format driver is always
named explicitly (we sniff the magic bytes ourselves, qemu never probes), backing files are
switched off, and images that still refer to other files (qcow2 backing or data files, VMDK
extents outside the member) are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from xml.etree import ElementTree
from xml.parsers import expat

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"

QEMU_IMG = "qemu-img"
MAX_OVF_BYTES = 4 * 2**20
MAX_MANIFEST_BYTES = 2**20
HASH_CHUNK = 2**20
INFO_TIMEOUT_SECONDS = 120
# Resource limits for `qemu-img info` on untrusted images (applied when prlimit exists).
INFO_LIMITS = ("--as=2147483648", "--cpu=60")

RESOURCE_CPU = "3"
RESOURCE_MEMORY = "4"
RESOURCE_DISK = "17"

DEFAULT_VCPUS = 1
DEFAULT_MEMORY_MB = 1024

_SECTOR = 512
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_MANIFEST_LINE = re.compile(r"(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9A-Fa-f]+)")
_DISK_RESOURCE = re.compile(r"(?:ovf:)?/+disk/(.+)")
_UNIT_WORDS = {
    "byte": 1, "bytes": 1,
    "kb": 2**10, "kilobyte": 2**10, "kilobytes": 2**10,
    "mb": 2**20, "megabyte": 2**20, "megabytes": 2**20,
    "gb": 2**30, "gigabyte": 2**30, "gigabytes": 2**30,
    "tb": 2**40, "terabyte": 2**40, "terabytes": 2**40,
}


class OvaError(ValueError):
    """An OVA refused for a reason the administrator can act on (one line)."""


@dataclass
class OvaDisk:
    """One disk of the appliance, in the order the virtual hardware lists it.

    ``file`` is the tar member name ("" for a blank disk that has no image), ``format`` the
    format qemu-img read it as, ``image_bytes`` the member's size in the archive.
    """

    disk_id: str
    file: str
    capacity_bytes: int
    format: str
    image_bytes: int


@dataclass
class OvaFacts:
    """What an OVA describes: the VM's name, CPUs, memory, disks and the OVF text itself."""

    name: str
    vcpus: int | None
    memory_mb: int | None
    disks: list[OvaDisk]
    ovf: str


@dataclass
class _DiskSpec:
    """A hardware disk as the OVF declares it, before the archive is looked at."""

    disk_id: str
    ovf_disk_id: str
    capacity_bytes: int
    href: str | None
    claimed_format: str | None


# ----------------------------------------------------------------------------------------------
# Public API


def inspect(path: str) -> OvaFacts:
    """Validate the OVA at ``path`` and return its facts; OvaError says what is wrong."""
    with _Archive(path) as archive:
        ovf_member = archive.descriptor()
        raw = archive.read(ovf_member, MAX_OVF_BYTES, "the OVF descriptor")
        text, root = _parse_ovf(raw)
        base = posixpath.dirname(ovf_member.name)
        files = _references(root)
        for href, declared_size in files.values():
            member = archive.member(_member_name(base, href))
            if declared_size is not None and declared_size != member.size:
                raise OvaError(f"{href!r} is {member.size} bytes but the OVF says "
                               f"{declared_size}")
        hrefs = {file_id: href for file_id, (href, _) in files.items()}
        name, vcpus, memory_mb, specs = _describe(root, hrefs)
        _verify_manifest(archive, base)
        disks = []
        for spec in specs:
            if spec.href is None:
                disks.append(OvaDisk(spec.disk_id, "", spec.capacity_bytes, "", 0))
                continue
            member = archive.member(_member_name(base, spec.href))
            fmt, virtual_size = _probe(archive, member, spec.disk_id, spec.claimed_format)
            if virtual_size > spec.capacity_bytes:
                image, declared = _size_pair(virtual_size, spec.capacity_bytes)
                raise OvaError(f"disk {spec.disk_id}: the image is {image} but the OVF "
                               f"declares {declared}")
            disks.append(OvaDisk(spec.disk_id, member.name, spec.capacity_bytes, fmt,
                                 member.size))
    return OvaFacts(name=name, vcpus=vcpus, memory_mb=memory_mb, disks=disks, ovf=text)


def convert_disk(path: str, disk: OvaDisk, target: list[str] | str, *,
                 progress: Callable[[float], None] | None = None) -> None:
    """Convert ``disk`` of the OVA at ``path`` to raw into ``target`` with ``qemu-img convert``.

    ``target`` as a string is an output filename qemu-img creates (``-O raw``): a local path, or
    ``rbd:pool/image:id=admin:conf=/etc/ceph/ceph.conf`` for an RBD image that does not exist
    yet. As a list it is extra ``qemu-img convert`` arguments whose last element is the output,
    e.g. ``["-n", "rbd:pool/image:..."]`` or :func:`rbd_target` to write into an existing
    volume of at least the image's virtual size (``-n``). ``-O raw`` is added unless the list
    uses ``--target-image-opts`` (then the options name the driver; raw is the default).
    ``progress`` is called with increasing fractions, ending with 1.0 on success.
    """
    if not disk.file:
        raise OvaError(f"disk {disk.disk_id} is blank: there is no image to convert")
    with _Archive(path) as archive:
        member = archive.member(disk.file, f"disk {disk.disk_id} needs")
        fmt, _ = _probe(archive, member, disk.disk_id, disk.format)
        source = _source_spec(archive.path, member, fmt)
    if isinstance(target, str):
        options, output = ["-O", "raw"], target
    else:
        if not target:
            raise ValueError("target must name an output")
        options, output = list(target[:-1]), target[-1]
        if "--target-image-opts" not in options:
            options = ["-O", "raw", *options]
    command = [QEMU_IMG, "convert", "-p", *options, source, output]
    _run_convert(command, disk.disk_id, progress)


def rbd_target(pool: str, image: str, *, user: str = "admin",
               conf: str = "/etc/ceph/ceph.conf") -> list[str]:
    """``convert_disk`` target arguments that write into the existing RBD image pool/image."""
    options = {"driver": "rbd", "pool": pool, "image": image, "user": user, "conf": conf}
    opts = ",".join(f"{key}={value.replace(',', ',,')}" for key, value in options.items())
    return ["-n", "--target-image-opts", opts]


def system_template_facts(facts: OvaFacts) -> dict:
    """The system-template settings an OVA implies (defaults where the OVF says nothing)."""
    return {
        "vcpu_count": facts.vcpus or DEFAULT_VCPUS,
        "vram_mb": facts.memory_mb or DEFAULT_MEMORY_MB,
    }


# ----------------------------------------------------------------------------------------------
# The tar archive


class _Archive:
    """An OVA opened for reading: member names checked, data ranges inside the file."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        try:
            self.size = os.path.getsize(self.path)
            with open(self.path, "rb") as fh:
                head = fh.read(_SECTOR)
        except OSError as exc:
            raise OvaError(f"cannot read the OVA: {exc.strerror}") from exc
        _check_tar_header(head)
        try:
            self.tar = tarfile.open(self.path, mode="r:")
        except tarfile.TarError as exc:
            raise OvaError(f"the OVA archive is truncated or corrupt ({exc})") from exc
        try:
            self.members = self._index()
        except BaseException:
            self.tar.close()
            raise

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.tar.close()

    def _index(self) -> dict[str, tarfile.TarInfo]:
        try:
            members = self.tar.getmembers()
        except tarfile.TarError as exc:
            raise OvaError(f"the OVA archive is truncated or corrupt ({exc})") from exc
        index: dict[str, tarfile.TarInfo] = {}
        for member in members:
            if not _is_safe_name(member.name):
                raise OvaError(f"the archive holds a member with an unsafe name: "
                               f"{member.name!r}")
            if not member.isreg():
                continue
            name = posixpath.normpath(member.name)
            if name in index:
                raise OvaError(f"the archive holds {name!r} twice")
            if member.offset_data + _sectors(member.size) > self.size:
                raise OvaError(f"the OVA archive is truncated: {name!r} is cut short")
            index[name] = member
        return index

    def descriptor(self) -> tarfile.TarInfo:
        found = [m for name, m in self.members.items() if name.lower().endswith(".ovf")]
        if not found:
            raise OvaError("the archive has no .ovf descriptor")
        if len(found) > 1:
            raise OvaError("the archive has more than one .ovf descriptor")
        return found[0]

    def member(self, name: str, source: str = "the OVF references") -> tarfile.TarInfo:
        """The regular member ``name``; ``source`` says who asked for it, for the error."""
        found = self.members.get(posixpath.normpath(name))
        if found is None:
            raise OvaError(f"{source} {name!r} but the archive has no such file")
        if found.sparse:
            raise OvaError(f"{name!r} is stored as a sparse tar member, which is not supported")
        return found

    def read(self, member: tarfile.TarInfo, limit: int, what: str) -> bytes:
        if member.size > limit:
            raise OvaError(f"{what} is too large ({member.size} bytes; the limit is {limit})")
        with open(self.path, "rb") as fh:
            fh.seek(member.offset_data)
            return fh.read(member.size)

    def chunks(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        """Yield the member's data in bounded chunks."""
        remaining = member.size
        with open(self.path, "rb") as fh:
            fh.seek(member.offset_data)
            while remaining > 0:
                data = fh.read(min(HASH_CHUNK, remaining))
                if not data:
                    raise OvaError(f"the OVA archive is truncated: {member.name!r} is cut short")
                remaining -= len(data)
                yield data


def _check_tar_header(head: bytes) -> None:
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        raise OvaError("the OVA is compressed; an OVA must be an uncompressed tar archive")
    if len(head) < _SECTOR:
        raise OvaError("the file is not a tar archive (too short)")
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise OvaError("the file is not a tar archive") from exc


def _sectors(size: int) -> int:
    """``size`` rounded up to whole 512-byte tar blocks."""
    return -(-size // _SECTOR) * _SECTOR


def _is_safe_name(name: str) -> bool:
    """No absolute paths, parent references, backslashes or NULs."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    return ".." not in name.split("/")


def _member_name(base: str, href: str, source: str = "the OVF references") -> str:
    """The member an href (relative to the descriptor's folder) names."""
    if "://" in href or not _is_safe_name(href):
        raise OvaError(f"{source} {href!r}, which is not a file inside the archive")
    return posixpath.normpath(posixpath.join(base, href))


# ----------------------------------------------------------------------------------------------
# The OVF descriptor


def _parse_ovf(raw: bytes) -> tuple[str, ElementTree.Element]:
    """Decode and parse the descriptor, refusing DTDs and entities (no entity expansion)."""
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise OvaError("the OVF contains a DTD or entity declarations, which are refused")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        if raw[:2] not in (b"\xff\xfe", b"\xfe\xff"):
            raise OvaError("the OVF is not UTF-8 text") from None
        text = raw.decode("utf-16")
    _reject_dtd(raw)
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as exc:
        raise OvaError(f"the OVF is not valid XML ({exc})") from exc
    if root.tag != _ovf("Envelope"):
        raise OvaError("the descriptor is not an OVF 1.x Envelope")
    return text, root


def _reject_dtd(raw: bytes) -> None:
    """Parse once with handlers that stop at any DTD, whatever the document's encoding."""

    def refuse(*_args: object) -> None:
        raise OvaError("the OVF contains a DTD or entity declarations, which are refused")

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(raw, True)
    except expat.ExpatError as exc:
        raise OvaError(f"the OVF is not valid XML ({exc})") from exc


def _ovf(tag: str) -> str:
    return f"{{{OVF_NS}}}{tag}"


def _rasd(tag: str) -> str:
    return f"{{{RASD_NS}}}{tag}"


def _attr(element: ElementTree.Element, name: str) -> str | None:
    """An ``ovf:`` attribute, accepting the unqualified spelling some exporters write."""
    value = element.get(_ovf(name))
    return value if value is not None else element.get(name)


def _references(root: ElementTree.Element) -> dict[str, tuple[str, int | None]]:
    """File id -> (href, declared size) for every References/File."""
    files: dict[str, tuple[str, int | None]] = {}
    for file in root.findall(f"{_ovf('References')}/{_ovf('File')}"):
        file_id, href = _attr(file, "id"), _attr(file, "href")
        if not file_id or not href:
            raise OvaError("the OVF has a File reference without an id or href")
        if _attr(file, "compression"):
            raise OvaError(f"the OVF file {href!r} is compressed, which is not supported")
        if _attr(file, "chunkSize"):
            raise OvaError(f"the OVF file {href!r} is split into chunks, which is not "
                           f"supported")
        size = _attr(file, "size")
        try:
            files[file_id] = href, int(size) if size else None
        except ValueError:
            raise OvaError(f"the OVF size of {href!r} is not a number: {size!r}") from None
    return files


def _describe(root: ElementTree.Element,
              files: dict[str, str]) -> tuple[str, int | None, int | None, list[_DiskSpec]]:
    """Name, vCPUs, memory (MiB) and hardware disks of the single VirtualSystem."""
    systems = list(root.iter(_ovf("VirtualSystem")))
    if len(systems) != 1:
        raise OvaError(f"the OVF describes {len(systems)} virtual systems; exactly one is "
                       f"supported")
    system = systems[0]
    name_element = system.find(_ovf("Name"))
    name = _attr(system, "id") or ""
    if not name and name_element is not None:
        name = (name_element.text or "").strip()
    if not name:
        raise OvaError("the OVF VirtualSystem has no id or Name")
    hardware = system.find(_ovf("VirtualHardwareSection"))
    if hardware is None:
        raise OvaError("the OVF VirtualSystem has no VirtualHardwareSection")
    configuration = _default_configuration(root)
    declared = _declared_disks(root)
    vcpus: int | None = None
    memory_mb: int | None = None
    specs: list[_DiskSpec] = []
    for item in hardware.findall(_ovf("Item")):
        if not _item_applies(item, configuration):
            continue
        kind = _rasd_text(item, "ResourceType")
        if kind == RESOURCE_CPU and vcpus is None:
            vcpus = _positive_int(_rasd_text(item, "VirtualQuantity"), "the vCPU count")
        elif kind == RESOURCE_MEMORY and memory_mb is None:
            quantity = _positive_int(_rasd_text(item, "VirtualQuantity"), "the memory size")
            units = _rasd_text(item, "AllocationUnits") or "byte * 2^20"
            memory_bytes = quantity * _unit_multiplier(units, "the memory size")
            memory_mb = -(-memory_bytes // 2**20)
        elif kind == RESOURCE_DISK:
            spec = _disk_spec(item, len(specs), declared, files)
            if spec is not None:
                if any(s.ovf_disk_id == spec.ovf_disk_id for s in specs):
                    raise OvaError(f"the OVF attaches disk {spec.ovf_disk_id!r} twice")
                specs.append(spec)
    return name, vcpus, memory_mb, specs


def _default_configuration(root: ElementTree.Element) -> str | None:
    """The deployment option to use when the OVF offers several (its default, else the first)."""
    options = root.findall(f"{_ovf('DeploymentOptionSection')}/{_ovf('Configuration')}")
    for option in options:
        if (_attr(option, "default") or "").lower() == "true":
            return _attr(option, "id")
    return _attr(options[0], "id") if options else None


def _item_applies(item: ElementTree.Element, configuration: str | None) -> bool:
    wanted = _attr(item, "configuration")
    return not wanted or (configuration is not None and configuration in wanted.split())


def _rasd_text(item: ElementTree.Element, tag: str) -> str | None:
    element = item.find(_rasd(tag))
    return element.text.strip() if element is not None and element.text else None


def _declared_disks(root: ElementTree.Element) -> dict[str, ElementTree.Element]:
    disks: dict[str, ElementTree.Element] = {}
    for section in root.iter(_ovf("DiskSection")):
        for disk in section.findall(_ovf("Disk")):
            disk_id = _attr(disk, "diskId")
            if not disk_id:
                raise OvaError("the OVF has a Disk without a diskId")
            disks[disk_id] = disk
    return disks


def _disk_spec(item: ElementTree.Element, index: int, declared: dict[str, ElementTree.Element],
               files: dict[str, str]) -> _DiskSpec | None:
    """The disk a hardware Item attaches, or None for an empty drive."""
    resource = _rasd_text(item, "HostResource")
    if not resource:
        return None
    match = _DISK_RESOURCE.fullmatch(resource)
    if match is None:
        raise OvaError(f"the OVF attaches {resource!r}; only ovf:/disk/<id> disks are supported")
    ovf_disk_id = match.group(1)
    disk = declared.get(ovf_disk_id)
    if disk is None:
        raise OvaError(f"the OVF attaches disk {ovf_disk_id!r}, which its DiskSection lacks")
    disk_id = _disk_name(index)
    capacity = _positive_int(_attr(disk, "capacity"), f"disk {disk_id}: the capacity")
    units = _attr(disk, "capacityAllocationUnits") or "byte"
    capacity *= _unit_multiplier(units, f"disk {disk_id}: the capacity")
    file_ref = _attr(disk, "fileRef")
    href = None
    if file_ref:
        href = files.get(file_ref)
        if href is None:
            raise OvaError(f"disk {disk_id}: the OVF disk refers to file {file_ref!r}, which "
                           f"its References do not list")
    hint = f"{_attr(disk, 'format') or ''} {href or ''}".lower()
    claimed = "vmdk" if "vmdk" in hint else "qcow2" if "qcow2" in hint else None
    return _DiskSpec(disk_id, ovf_disk_id, capacity, href, claimed)


def _disk_name(index: int) -> str:
    """sda, sdb, ... sdz, sdaa, sdab, ..."""
    letters = ""
    while True:
        letters = chr(ord("a") + index % 26) + letters
        index = index // 26 - 1
        if index < 0:
            return "sd" + letters


def _positive_int(text: str | None, what: str) -> int:
    try:
        value = int(text or "")
    except ValueError:
        raise OvaError(f"{what} in the OVF is not a whole number: {text!r}") from None
    if value <= 0:
        raise OvaError(f"{what} in the OVF must be positive, not {value}")
    return value


def _unit_multiplier(units: str, what: str) -> int:
    """Bytes per unit for DMTF programmatic units ("byte * 2^30") and the common words."""
    compact = units.replace(" ", "").lower()
    if compact in _UNIT_WORDS:
        return _UNIT_WORDS[compact]
    match = re.fullmatch(r"bytes?\*(\d+)(?:\^(\d+))?", compact)
    if match:
        base, exponent = int(match.group(1)), int(match.group(2) or 1)
        if (base in (2, 10) and exponent <= 60) or (match.group(2) is None and base <= 2**40):
            return base**exponent
    raise OvaError(f"{what} uses units the importer does not understand: {units!r}")


# ----------------------------------------------------------------------------------------------
# Manifest


def _verify_manifest(archive: _Archive, base: str) -> None:
    """Check every digest the .mf manifest lists (none: nothing to check)."""
    manifests = [m for name, m in archive.members.items() if name.lower().endswith(".mf")]
    if not manifests:
        return
    if len(manifests) > 1:
        raise OvaError("the archive has more than one .mf manifest")
    raw = archive.read(manifests[0], MAX_MANIFEST_BYTES, "the manifest")
    expected: dict[str, dict[str, str]] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        match = _MANIFEST_LINE.fullmatch(line.strip())
        if match is None:
            raise OvaError(f"the manifest has a line it cannot read: {line.strip()[:80]!r}")
        algorithm, name, digest = match.groups()
        expected.setdefault(name, {})[algorithm] = digest.lower()
    for name, digests in expected.items():
        member = archive.member(_member_name(base, name, "the manifest lists"),
                                "the manifest lists")
        hashers = {alg: hashlib.new(alg.lower()) for alg in digests}
        for chunk in archive.chunks(member):
            for hasher in hashers.values():
                hasher.update(chunk)
        for algorithm, digest in digests.items():
            if hashers[algorithm].hexdigest() != digest:
                raise OvaError(f"manifest check failed: the {algorithm} digest of {name!r} "
                               f"does not match")


# ----------------------------------------------------------------------------------------------
# Disk images through qemu-img


def _sniff(archive: _Archive, member: tarfile.TarInfo) -> str:
    """The qemu format driver for a member, from its magic bytes (raw when none matches)."""
    with open(archive.path, "rb") as fh:
        fh.seek(member.offset_data)
        head = fh.read(min(member.size, _SECTOR))
    if head[:4] in (b"KDMV", b"COWD"):
        return "vmdk"
    if head.lstrip().startswith(b"# Disk DescriptorFile"):
        raise OvaError(f"{member.name!r} is a VMDK descriptor with separate extent files, "
                       f"which is not supported (export the disk as streamOptimized)")
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:8] == b"conectix":
        return "vpc"
    if head[0x40:0x44] == b"\x7f\x10\xda\xbe":
        return "vdi"
    return "raw"


def _slice(archive_path: str, member: tarfile.TarInfo) -> dict:
    """A read-only raw node covering the member's bytes (size rounded up to whole sectors,
    which the tar's zero padding provides)."""
    return {"driver": "raw", "offset": member.offset_data, "size": _sectors(member.size),
            "file": {"driver": "file", "filename": archive_path}}


def _source_spec(archive_path: str, member: tarfile.TarInfo, fmt: str) -> str:
    """A qemu ``json:`` filename opening the member with an explicit format driver."""
    node: dict = {"driver": fmt}
    if fmt in ("vmdk", "qcow2"):
        node["backing"] = None
    node["file"] = _slice(archive_path, member)
    return "json:" + json.dumps(node, separators=(",", ":"))


def _probe(archive: _Archive, member: tarfile.TarInfo, disk_id: str,
           claimed_format: str | None) -> tuple[str, int]:
    """The member's format and virtual size, refusing unreadable or file-referencing images."""
    try:
        fmt = _sniff(archive, member)
    except OvaError as exc:
        raise OvaError(f"disk {disk_id}: {exc}") from None
    if member.size == 0:
        raise OvaError(f"disk {disk_id}: {member.name!r} is empty")
    if claimed_format and fmt != claimed_format:
        raise OvaError(f"disk {disk_id}: {member.name!r} is not a {claimed_format.upper()} "
                       f"image (its header says {fmt})")
    command = [QEMU_IMG, "info", "--output=json", _source_spec(archive.path, member, fmt)]
    prlimit = shutil.which("prlimit")
    if prlimit:
        command = [prlimit, *INFO_LIMITS, "--", *command]
    try:
        proc = subprocess.run(command, capture_output=True, text=True,
                              timeout=INFO_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise OvaError(f"disk {disk_id}: qemu-img took too long to read {member.name!r}") \
            from None
    except FileNotFoundError as exc:
        raise RuntimeError(f"{QEMU_IMG} is not installed") from exc
    if proc.returncode != 0:
        raise OvaError(f"disk {disk_id}: qemu-img cannot read {member.name!r} as {fmt}: "
                       f"{_last_error(proc.stderr)}")
    try:
        info = json.loads(proc.stdout)
        virtual_size = int(info["virtual-size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"unexpected qemu-img info output: {exc}") from exc
    _refuse_outside_files(info, archive.path, member, disk_id)
    return str(info.get("format", fmt)), virtual_size


def _refuse_outside_files(info: dict, archive_path: str, member: tarfile.TarInfo,
                          disk_id: str) -> None:
    """Images must be self-contained: no backing file, data file or foreign VMDK extent."""
    where = f"disk {disk_id}: {member.name!r}"
    if info.get("backing-filename"):
        raise OvaError(f"{where} has a backing file, which is not allowed")
    if info.get("encrypted"):
        raise OvaError(f"{where} is encrypted, which is not supported")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise OvaError(f"{where} uses an external data file, which is not allowed")
    own = _slice(archive_path, member)
    for extent in data.get("extents") or []:
        filename = str(extent.get("filename", ""))
        try:
            node = json.loads(filename[5:]) if filename.startswith("json:") else {}
            inside = (int(node.get("offset", -1)) == own["offset"]
                      and node.get("file", {}).get("filename") == archive_path)
        except (ValueError, AttributeError, TypeError):
            inside = False
        if not inside:
            raise OvaError(f"{where} refers to extent files outside the image, which is not "
                           f"allowed")


def _run_convert(command: list[str], disk_id: str,
                 progress: Callable[[float], None] | None) -> None:
    """Run qemu-img convert, reporting its ``-p`` progress; OvaError on failure."""
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    except FileNotFoundError as exc:
        raise RuntimeError(f"{QEMU_IMG} is not installed") from exc
    reported = 0.0
    messages: deque[str] = deque(maxlen=5)
    pending = b""
    try:
        assert proc.stdout is not None
        while True:
            data = proc.stdout.read1(65536)
            if not data:
                break
            pending = (pending + data)[-65536:]
            *segments, pending = re.split(rb"[\r\n]", pending)
            for segment in segments:
                match = _PROGRESS.search(segment)
                if match:
                    fraction = min(float(match.group(1)) / 100.0, 1.0)
                    if progress is not None and fraction > reported:
                        reported = fraction
                        progress(fraction)
                elif segment.strip():
                    messages.append(segment.decode("utf-8", "replace").strip())
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if pending.strip() and not _PROGRESS.search(pending):
        messages.append(pending.decode("utf-8", "replace").strip())
    if returncode != 0:
        raise OvaError(f"disk {disk_id}: qemu-img convert failed: "
                       f"{_last_error(chr(10).join(messages))}")
    if progress is not None and reported < 1.0:
        progress(1.0)


def _last_error(output: str) -> str:
    """qemu-img's last message line, without the long json: filename it quotes."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    line = lines[-1].removeprefix("qemu-img: ")
    if line.startswith("Could not open '") and "': " in line:
        line = line.rsplit("': ", 1)[1]
    return line


def _size_pair(first: int, second: int) -> tuple[str, str]:
    """Two sizes for a message, with exact byte counts when the short forms look equal."""
    short = _human_size(first), _human_size(second)
    if short[0] == short[1]:
        return f"{short[0]} ({first} bytes)", f"{short[1]} ({second} bytes)"
    return short


def _human_size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{num_bytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num_bytes} bytes"
