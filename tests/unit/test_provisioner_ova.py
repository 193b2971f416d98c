"""OVA import: real qemu-img on real tar archives built from small images."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pvc_plugins.provisioner import ova
from pvc_plugins.provisioner.ova import OvaDisk, OvaError, OvaFacts

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

MiB = 2**20
VMDK_STREAM = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
VMDK_SPARSE = "http://www.vmware.com/interfaces/specifications/vmdk.html#sparse"


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def patterned_raw(path: Path, size: int, seed: bytes) -> Path:
    """A sparse raw image with recognisable data at several offsets, including the end."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset in (0, 4096, 65536 + 7, size // 2 + 512, size - 1024):
            fh.seek(offset)
            fh.write((seed + offset.to_bytes(8, "big")) * 40)
        fh.truncate(size)
    return path


@dataclass
class Images:
    root: Path
    raw_a: Path       # 4 MiB
    raw_b: Path       # 2 MiB
    stream_a: Path    # raw_a as VMDK streamOptimized
    sparse_b: Path    # raw_b as VMDK monolithicSparse
    qcow2_b: Path     # raw_b as qcow2
    flat_b: Path      # raw_b as a VMDK descriptor with a separate extent
    backed: Path      # qcow2 with raw_b as its backing file


@pytest.fixture(scope="module")
def images() -> Iterator[Images]:
    with tempfile.TemporaryDirectory(prefix="pvc-ova-img-") as tmp:
        root = Path(tmp)
        raw_a = patterned_raw(root / "a.raw", 4 * MiB, b"disk-A")
        raw_b = patterned_raw(root / "b.raw", 2 * MiB, b"disk-B")
        stream_a, sparse_b = root / "a-stream.vmdk", root / "b-sparse.vmdk"
        qcow2_b, flat_b, backed = root / "b.qcow2", root / "b-flat.vmdk", root / "backed.qcow2"
        qemu_img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw_a),
                 str(stream_a))
        qemu_img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", str(raw_b),
                 str(sparse_b))
        qemu_img("convert", "-O", "qcow2", str(raw_b), str(qcow2_b))
        qemu_img("convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", str(raw_b),
                 str(flat_b))
        qemu_img("create", "-f", "qcow2", "-b", str(raw_b), "-F", "raw", str(backed))
        yield Images(root, raw_a, raw_b, stream_a, sparse_b, qcow2_b, flat_b, backed)


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pvc-ova-") as tmp:
        yield Path(tmp)


@dataclass
class DiskDecl:
    ovf_id: str
    href: str | None
    capacity: int
    units: str | None = None
    fmt: str = VMDK_STREAM


def ovf_text(disks: list[DiskDecl], *, name: str = "appliance", vcpus: int | None = 2,
             memory: int | None = 2048, memory_units: str = "byte * 2^20",
             hardware_order: list[str] | None = None, sizes: dict[str, int] | None = None,
             prolog: str = "", extra_items: str = "", extra_sections: str = "") -> str:
    """An OVF 1.x descriptor with one VirtualSystem; disks attach in ``hardware_order``."""
    files, disk_lines = [], []
    for number, disk in enumerate(disks):
        file_ref = ""
        if disk.href is not None:
            size = f' ovf:size="{sizes[disk.href]}"' if sizes and disk.href in sizes else ""
            files.append(f'<File ovf:id="file{number}" ovf:href="{disk.href}"{size}/>')
            file_ref = f' ovf:fileRef="file{number}"'
        units = f' ovf:capacityAllocationUnits="{disk.units}"' if disk.units else ""
        disk_lines.append(f'<Disk ovf:diskId="{disk.ovf_id}" ovf:capacity="{disk.capacity}"'
                          f'{units}{file_ref} ovf:format="{disk.fmt}"/>')
    items = []
    if vcpus is not None:
        items.append(f"<Item><rasd:ElementName>{vcpus} vCPU</rasd:ElementName>"
                     f"<rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3"
                     f"</rasd:ResourceType><rasd:VirtualQuantity>{vcpus}"
                     f"</rasd:VirtualQuantity></Item>")
    if memory is not None:
        items.append(f"<Item><rasd:AllocationUnits>{memory_units}</rasd:AllocationUnits>"
                     f"<rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4"
                     f"</rasd:ResourceType><rasd:VirtualQuantity>{memory}"
                     f"</rasd:VirtualQuantity></Item>")
    items.append("<Item><rasd:InstanceID>3</rasd:InstanceID>"
                 "<rasd:ResourceType>15</rasd:ResourceType></Item>")
    order = hardware_order if hardware_order is not None else [d.ovf_id for d in disks]
    for position, ovf_id in enumerate(order):
        items.append(f"<Item><rasd:AddressOnParent>{position}</rasd:AddressOnParent>"
                     f"<rasd:HostResource>ovf:/disk/{ovf_id}</rasd:HostResource>"
                     f"<rasd:InstanceID>{10 + position}</rasd:InstanceID>"
                     f"<rasd:ResourceType>17</rasd:ResourceType></Item>")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
{prolog}<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="{ova.RASD_NS}">
  <References>{''.join(files)}</References>
  <DiskSection><Info>Virtual disks</Info>{''.join(disk_lines)}</DiskSection>
  {extra_sections}
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}-display</Name>
    <VirtualHardwareSection><Info>Virtual hardware</Info>
      {''.join(items)}{extra_items}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def sha256_manifest(files: dict[str, bytes | Path]) -> bytes:
    lines = []
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        lines.append(f"SHA256({name})= {hashlib.sha256(data).hexdigest()}\n")
    return "".join(lines).encode()


def build_ova(path: Path, members: list[tuple[str, bytes | Path]]) -> Path:
    """A tar with the members in order (the OVF first, as OVA requires)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members:
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def two_disk_ova(images: Images, workdir: Path, *, manifest: bool = False) -> Path:
    """appliance: sda = streamOptimized 4 MiB (declared in bytes), sdb = monolithicSparse
    2 MiB (declared as 3 x 2^20). The DiskSection lists them in the other order."""
    disks = [DiskDecl("vmdisk2", "disk2.vmdk", 3, "byte * 2^20", VMDK_SPARSE),
             DiskDecl("vmdisk1", "disk1.vmdk", 4 * MiB)]
    text = ovf_text(disks, hardware_order=["vmdisk1", "vmdisk2"],
                    sizes={"disk1.vmdk": images.stream_a.stat().st_size,
                           "disk2.vmdk": images.sparse_b.stat().st_size}).encode()
    files: dict[str, bytes | Path] = {"appliance.ovf": text, "disk1.vmdk": images.stream_a,
                                      "disk2.vmdk": images.sparse_b}
    members = list(files.items())
    if manifest:
        members.insert(1, ("appliance.mf", sha256_manifest(files)))
    return build_ova(workdir / "appliance.ova", members)


def single_disk_ova(workdir: Path, image: Path, *, capacity: int, fmt: str = VMDK_STREAM,
                    href: str = "disk1.vmdk", units: str | None = None) -> Path:
    text = ovf_text([DiskDecl("d1", href, capacity, units, fmt)]).encode()
    return build_ova(workdir / "one.ova", [("one.ovf", text), (href, image)])


# ----------------------------------------------------------------------------------------------
# Facts


def test_inspect_reads_the_ovf_facts(images: Images, workdir: Path) -> None:
    path = two_disk_ova(images, workdir)

    facts = ova.inspect(str(path))

    assert facts.name == "appliance"
    assert (facts.vcpus, facts.memory_mb) == (2, 2048)
    assert facts.disks == [
        OvaDisk("sda", "disk1.vmdk", 4 * MiB, "vmdk", images.stream_a.stat().st_size),
        OvaDisk("sdb", "disk2.vmdk", 3 * MiB, "vmdk", images.sparse_b.stat().st_size),
    ]
    assert facts.ovf.startswith('<?xml version="1.0"') and "vmdisk2" in facts.ovf


def test_inspect_verifies_a_good_manifest(images: Images, workdir: Path) -> None:
    facts = ova.inspect(str(two_disk_ova(images, workdir, manifest=True)))
    assert [d.disk_id for d in facts.disks] == ["sda", "sdb"]


def test_inspect_accepts_sha1_manifest_lines(images: Images, workdir: Path) -> None:
    text = ovf_text([DiskDecl("d1", "disk1.vmdk", 4 * MiB)]).encode()
    manifest = (f"SHA1(one.ovf)= {hashlib.sha1(text).hexdigest()}\n"
                f"SHA1(disk1.vmdk)= {hashlib.sha1(images.stream_a.read_bytes()).hexdigest()}\n")
    path = build_ova(workdir / "one.ova", [("one.ovf", text), ("one.mf", manifest.encode()),
                                           ("disk1.vmdk", images.stream_a)])
    assert ova.inspect(str(path)).disks[0].disk_id == "sda"


@pytest.mark.parametrize(("units", "quantity", "expected_mb"), [
    ("byte * 2^20", 2048, 2048),
    ("MegaBytes", 512, 512),
    ("byte * 2^30", 4, 4096),
    ("byte*2^10", 1048576, 1024),
])
def test_memory_allocation_units(workdir: Path, units: str, quantity: int,
                                 expected_mb: int) -> None:
    text = ovf_text([], memory=quantity, memory_units=units).encode()
    facts = ova.inspect(str(build_ova(workdir / "m.ova", [("m.ovf", text)])))
    assert facts.memory_mb == expected_mb and facts.disks == []


def test_default_deployment_configuration_is_used(workdir: Path) -> None:
    options = ('<DeploymentOptionSection><Info>Sizes</Info>'
               '<Configuration ovf:id="small"><Label>Small</Label></Configuration>'
               '<Configuration ovf:id="large" ovf:default="true"><Label>Large</Label>'
               '</Configuration></DeploymentOptionSection>')
    cpu_items = "".join(
        f'<Item ovf:configuration="{config}"><rasd:InstanceID>{n}</rasd:InstanceID>'
        f'<rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>{count}'
        f'</rasd:VirtualQuantity></Item>'
        for n, (config, count) in enumerate([("small", 1), ("large", 8)], start=20))
    text = ovf_text([], vcpus=None, extra_items=cpu_items, extra_sections=options).encode()
    facts = ova.inspect(str(build_ova(workdir / "c.ova", [("c.ovf", text)])))
    assert facts.vcpus == 8


def test_system_template_facts() -> None:
    bare = OvaFacts(name="x", vcpus=None, memory_mb=None, disks=[], ovf="")
    assert ova.system_template_facts(bare) == {"vcpu_count": 1, "vram_mb": 1024}
    sized = OvaFacts(name="x", vcpus=4, memory_mb=8192, disks=[], ovf="")
    assert ova.system_template_facts(sized) == {"vcpu_count": 4, "vram_mb": 8192}


def test_blank_disk_has_no_file(workdir: Path) -> None:
    text = ovf_text([DiskDecl("blank", None, 1, "byte * 2^30")]).encode()
    facts = ova.inspect(str(build_ova(workdir / "b.ova", [("b.ovf", text)])))
    assert facts.disks == [OvaDisk("sda", "", 2**30, "", 0)]
    with pytest.raises(OvaError, match="blank"):
        ova.convert_disk(str(workdir / "b.ova"), facts.disks[0], str(workdir / "out.raw"))


# ----------------------------------------------------------------------------------------------
# Conversion


@pytest.mark.parametrize("kind", ["stream", "sparse", "qcow2", "raw"])
def test_convert_reproduces_the_original_bytes(images: Images, workdir: Path,
                                               kind: str) -> None:
    image, original, fmt, href = {
        "stream": (images.stream_a, images.raw_a, "vmdk", "disk.vmdk"),
        "sparse": (images.sparse_b, images.raw_b, "vmdk", "disk.vmdk"),
        "qcow2": (images.qcow2_b, images.raw_b, "qcow2", "disk.qcow2"),
        "raw": (images.raw_b, images.raw_b, "raw", "disk.img"),
    }[kind]
    path = single_disk_ova(workdir, image, capacity=4 * MiB, href=href,
                           fmt="http://example.org/disk")
    disk = ova.inspect(str(path)).disks[0]
    assert disk.format == fmt

    out = workdir / "out.raw"
    ova.convert_disk(str(path), disk, str(out))

    assert out.read_bytes() == original.read_bytes()


def test_convert_reports_increasing_progress(images: Images, workdir: Path) -> None:
    path = two_disk_ova(images, workdir)
    disk = ova.inspect(str(path)).disks[0]
    seen: list[float] = []

    ova.convert_disk(str(path), disk, str(workdir / "out.raw"), progress=seen.append)

    assert len(seen) >= 2
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)


def test_convert_into_an_existing_larger_volume(images: Images, workdir: Path) -> None:
    path = two_disk_ova(images, workdir)
    disk = ova.inspect(str(path)).disks[1]          # 2 MiB image, 3 MiB declared
    volume = workdir / "volume.raw"
    with open(volume, "wb") as fh:
        fh.truncate(disk.capacity_bytes)

    ova.convert_disk(str(path), disk,
                     ["-n", "--target-image-opts", f"driver=file,filename={volume}"])

    data = volume.read_bytes()
    assert len(data) == 3 * MiB
    assert data[:2 * MiB] == images.raw_b.read_bytes() and data[2 * MiB:] == bytes(MiB)


def test_convert_with_n_and_a_filename(images: Images, workdir: Path) -> None:
    path = two_disk_ova(images, workdir)
    disk = ova.inspect(str(path)).disks[0]
    volume = workdir / "volume.raw"
    with open(volume, "wb") as fh:
        fh.truncate(disk.capacity_bytes)

    ova.convert_disk(str(path), disk, ["-n", str(volume)])

    assert volume.read_bytes() == images.raw_a.read_bytes()


def test_convert_failure_reports_qemu_img_error(images: Images, workdir: Path) -> None:
    path = two_disk_ova(images, workdir)
    disk = ova.inspect(str(path)).disks[0]
    small = workdir / "small.raw"
    with open(small, "wb") as fh:
        fh.truncate(MiB)

    with pytest.raises(OvaError, match=r"disk sda: qemu-img convert failed: .*smaller"):
        ova.convert_disk(str(path), disk, ["-n", str(small)])
    with pytest.raises(OvaError, match="disk sda: qemu-img convert failed"):
        ova.convert_disk(str(path), disk, str(workdir / "missing" / "out.raw"))


def test_rbd_target_escapes_commas() -> None:
    assert ova.rbd_target("vms", "ova,x_sda") == [
        "-n", "--target-image-opts",
        "driver=rbd,pool=vms,image=ova,,x_sda,user=admin,conf=/etc/ceph/ceph.conf"]


# ----------------------------------------------------------------------------------------------
# Refusals


def test_refuses_a_file_that_is_not_a_tar(workdir: Path) -> None:
    path = workdir / "x.ova"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(OvaError, match="not a tar archive"):
        ova.inspect(str(path))
    path.write_bytes(b"short")
    with pytest.raises(OvaError, match="not a tar archive"):
        ova.inspect(str(path))


def test_refuses_a_compressed_archive(images: Images, workdir: Path) -> None:
    plain = two_disk_ova(images, workdir)
    packed = workdir / "packed.ova"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(plain, arcname="inner")
    with pytest.raises(OvaError, match="compressed"):
        ova.inspect(str(packed))


@pytest.mark.parametrize("where", ["in the ovf", "mid-archive", "in the last member"])
def test_refuses_a_truncated_archive(images: Images, workdir: Path, where: str) -> None:
    path = two_disk_ova(images, workdir)
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    data = path.read_bytes()
    keep = {"in the ovf": 700, "mid-archive": len(data) // 2,
            "in the last member": last.offset_data + last.size - 100}[where]
    cut = workdir / "cut.ova"
    cut.write_bytes(data[:keep])
    with pytest.raises(OvaError, match="truncated"):
        ova.inspect(str(cut))


def test_refuses_an_archive_without_ovf(images: Images, workdir: Path) -> None:
    path = build_ova(workdir / "x.ova", [("disk1.vmdk", images.stream_a)])
    with pytest.raises(OvaError, match=r"no \.ovf descriptor"):
        ova.inspect(str(path))


def test_refuses_an_ovf_that_is_not_xml(workdir: Path) -> None:
    path = build_ova(workdir / "x.ova", [("x.ovf", b"<Envelope><unclosed></Envelope>")])
    with pytest.raises(OvaError, match="not valid XML"):
        ova.inspect(str(path))


def test_refuses_an_xml_file_that_is_not_an_ovf(workdir: Path) -> None:
    path = build_ova(workdir / "x.ova", [("x.ovf", b"<html/>")])
    with pytest.raises(OvaError, match="not an OVF 1.x Envelope"):
        ova.inspect(str(path))


@pytest.mark.parametrize("prolog", [
    '<!DOCTYPE Envelope [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>\n',
    '<!DOCTYPE Envelope SYSTEM "http://example.org/evil.dtd">\n',
])
def test_refuses_dtds_and_entities(workdir: Path, prolog: str) -> None:
    text = ovf_text([], prolog=prolog).encode()
    path = build_ova(workdir / "x.ova", [("x.ovf", text)])
    with pytest.raises(OvaError, match="DTD or entity"):
        ova.inspect(str(path))


def test_refuses_a_dtd_hidden_in_utf16(workdir: Path) -> None:
    text = ovf_text([], prolog='<!DOCTYPE x [<!ENTITY a "b">]>\n')
    raw = text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    path = build_ova(workdir / "x.ova", [("x.ovf", raw)])
    with pytest.raises(OvaError, match="DTD or entity"):
        ova.inspect(str(path))


def test_refuses_an_oversized_ovf(workdir: Path) -> None:
    text = ovf_text([]).replace("<Info>A virtual machine</Info>",
                                "<Info>" + "x" * ova.MAX_OVF_BYTES + "</Info>")
    path = build_ova(workdir / "x.ova", [("x.ovf", text.encode())])
    with pytest.raises(OvaError, match="too large"):
        ova.inspect(str(path))


def test_refuses_a_reference_missing_from_the_archive(images: Images, workdir: Path) -> None:
    text = ovf_text([DiskDecl("d1", "disk1.vmdk", 4 * MiB),
                     DiskDecl("d2", "disk2.vmdk", 4 * MiB)]).encode()
    path = build_ova(workdir / "x.ova", [("x.ovf", text), ("disk1.vmdk", images.stream_a)])
    with pytest.raises(OvaError, match="references 'disk2.vmdk' but the archive has no such"):
        ova.inspect(str(path))


def test_refuses_a_declared_file_size_that_differs(images: Images, workdir: Path) -> None:
    text = ovf_text([DiskDecl("d1", "disk1.vmdk", 4 * MiB)],
                    sizes={"disk1.vmdk": 12345}).encode()
    path = build_ova(workdir / "x.ova", [("x.ovf", text), ("disk1.vmdk", images.stream_a)])
    with pytest.raises(OvaError, match="but the OVF says 12345"):
        ova.inspect(str(path))


def test_refuses_a_capacity_smaller_than_the_image(images: Images, workdir: Path) -> None:
    path = single_disk_ova(workdir, images.stream_a, capacity=1, units="byte * 2^20")
    with pytest.raises(OvaError,
                       match="disk sda: the image is 4.0 MiB but the OVF declares 1.0 MiB"):
        ova.inspect(str(path))


def test_size_message_shows_bytes_when_sizes_look_equal(images: Images,
                                                         workdir: Path) -> None:
    path = single_disk_ova(workdir, images.stream_a, capacity=4 * MiB - 512)
    with pytest.raises(OvaError, match=r"4194304 bytes.*4193792 bytes"):
        ova.inspect(str(path))


def test_refuses_random_bytes_named_vmdk(workdir: Path) -> None:
    junk = workdir / "junk"
    junk.write_bytes(os.urandom(64 * 1024))
    path = single_disk_ova(workdir, junk, capacity=4 * MiB)
    with pytest.raises(OvaError, match="disk sda: 'disk1.vmdk' is not a VMDK image"):
        ova.inspect(str(path))


def test_refuses_a_corrupt_vmdk(images: Images, workdir: Path) -> None:
    corrupt = workdir / "corrupt.vmdk"
    corrupt.write_bytes(b"KDMV" + os.urandom(256 * 1024))
    path = single_disk_ova(workdir, corrupt, capacity=4 * MiB)
    with pytest.raises(OvaError, match="disk sda: qemu-img cannot read 'disk1.vmdk' as vmdk: "):
        ova.inspect(str(path))


def test_refuses_a_truncated_vmdk_member(images: Images, workdir: Path) -> None:
    half = workdir / "half.vmdk"
    half.write_bytes(images.sparse_b.read_bytes()[:4096])
    path = single_disk_ova(workdir, half, capacity=4 * MiB, fmt=VMDK_SPARSE)
    with pytest.raises(OvaError, match="qemu-img cannot read"):
        ova.inspect(str(path))


def test_refuses_a_vmdk_descriptor_with_separate_extents(images: Images,
                                                         workdir: Path) -> None:
    path = single_disk_ova(workdir, images.flat_b, capacity=4 * MiB)
    with pytest.raises(OvaError, match="VMDK descriptor with separate extent files"):
        ova.inspect(str(path))


def vmdk_pointing_elsewhere(sparse: Path, extent: Path, out: Path) -> Path:
    """A sparse VMDK whose header capacity is 0, so qemu reads the embedded descriptor, which
    names a flat extent at an absolute path outside the image."""
    data = bytearray(sparse.read_bytes())
    desc_offset, desc_sectors = struct.unpack_from("<QQ", data, 28)
    descriptor = ('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
                  'createType="monolithicFlat"\n\n'
                  f'RW {extent.stat().st_size // 512} FLAT "{extent}" 0\n').encode()
    start = desc_offset * 512
    data[start:start + desc_sectors * 512] = descriptor.ljust(desc_sectors * 512, b"\0")
    struct.pack_into("<Q", data, 12, 0)
    out.write_bytes(bytes(data))
    return out


def test_refuses_a_vmdk_whose_extents_lie_outside_the_member(images: Images,
                                                             workdir: Path) -> None:
    extent = images.root / "b-flat-flat.vmdk"
    assert extent.exists()
    evil = vmdk_pointing_elsewhere(images.sparse_b, extent, workdir / "evil.vmdk")
    path = single_disk_ova(workdir, evil, capacity=4 * MiB, fmt=VMDK_SPARSE)
    with pytest.raises(OvaError, match="refers to extent files outside the image"):
        ova.inspect(str(path))


def test_refuses_a_qcow2_with_a_backing_file(images: Images, workdir: Path) -> None:
    path = single_disk_ova(workdir, images.backed, capacity=4 * MiB, href="disk.qcow2",
                           fmt="http://example.org/qcow2")
    with pytest.raises(OvaError, match="has a backing file"):
        ova.inspect(str(path))


def test_refuses_a_bad_manifest_digest(images: Images, workdir: Path) -> None:
    text = ovf_text([DiskDecl("d1", "disk1.vmdk", 4 * MiB)]).encode()
    manifest = sha256_manifest({"one.ovf": text, "disk1.vmdk": images.sparse_b})
    path = build_ova(workdir / "x.ova", [("one.ovf", text), ("one.mf", manifest),
                                         ("disk1.vmdk", images.stream_a)])
    with pytest.raises(OvaError, match="SHA256 digest of 'disk1.vmdk' does not match"):
        ova.inspect(str(path))


def test_refuses_a_manifest_listing_a_missing_file(workdir: Path) -> None:
    text = ovf_text([]).encode()
    manifest = sha256_manifest({"one.ovf": text, "ghost.vmdk": b""})
    path = build_ova(workdir / "x.ova", [("one.ovf", text), ("one.mf", manifest)])
    with pytest.raises(OvaError, match="manifest lists 'ghost.vmdk' but the archive"):
        ova.inspect(str(path))


def test_refuses_an_unreadable_manifest(workdir: Path) -> None:
    text = ovf_text([]).encode()
    path = build_ova(workdir / "x.ova", [("one.ovf", text), ("one.mf", b"MD5(x)= 00\n")])
    with pytest.raises(OvaError, match="manifest has a line it cannot read"):
        ova.inspect(str(path))


@pytest.mark.parametrize("name", ["../evil", "/abs", "sub/../../evil"])
def test_refuses_unsafe_member_names(images: Images, workdir: Path, name: str) -> None:
    text = ovf_text([DiskDecl("d1", "disk1.vmdk", 4 * MiB)]).encode()
    path = build_ova(workdir / "x.ova", [("one.ovf", text), ("disk1.vmdk", images.stream_a),
                                         (name, b"payload")])
    with pytest.raises(OvaError, match="unsafe name"):
        ova.inspect(str(path))


@pytest.mark.parametrize("href", ["../disk1.vmdk", "/etc/passwd", "http://x/disk1.vmdk"])
def test_refuses_references_outside_the_archive(images: Images, workdir: Path,
                                                href: str) -> None:
    text = ovf_text([DiskDecl("d1", href, 4 * MiB)]).encode()
    path = build_ova(workdir / "x.ova", [("one.ovf", text), ("disk1.vmdk", images.stream_a)])
    with pytest.raises(OvaError, match="not a file inside the archive"):
        ova.inspect(str(path))


def test_refuses_several_virtual_systems(workdir: Path) -> None:
    text = ovf_text([]).replace("</VirtualSystem>",
                                '</VirtualSystem><VirtualSystem ovf:id="b"><Info>b</Info>'
                                "</VirtualSystem>")
    path = build_ova(workdir / "x.ova", [("x.ovf", text.encode())])
    with pytest.raises(OvaError, match="2 virtual systems"):
        ova.inspect(str(path))


def test_refuses_unknown_units(workdir: Path) -> None:
    text = ovf_text([], memory_units="furlongs").encode()
    path = build_ova(workdir / "x.ova", [("x.ovf", text)])
    with pytest.raises(OvaError, match="units the importer does not understand: 'furlongs'"):
        ova.inspect(str(path))
