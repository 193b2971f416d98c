"""Write an uploaded disk image into an existing volume.

The upload is spooled to a temporary file first, so a too-large or unreadable image is refused
before the volume is touched. Non-raw images (qcow2, vmdk, qed, vdi, vpc) are converted to raw
with ``qemu-img convert`` (sparse). The raw data goes into the image through librbd; all-zero
chunks are written as zeroes (cheap, and correct on a volume that held data before).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import IO, Any

from pvc_plugins.storage_ceph import pools, units
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.errors import StorageError
from pvc_plugins.storage_ceph.volumes import in_use, open_image

FORMATS = ("raw", "vmdk", "qcow2", "qed", "vdi", "vpc")
CHUNK = 4 * 2**20


def spool(stream: IO[bytes], path: str, limit: int | None = None) -> int:
    """Copy ``stream`` into ``path``; returns the byte count (StorageError past ``limit``)."""
    written = 0
    with open(path, "wb") as out:
        while True:
            data = stream.read(CHUNK)
            if not data:
                return written
            written += len(data)
            if limit is not None and written > limit:
                raise StorageError(f"The uploaded image is larger than the volume "
                                   f"({units.format_size(limit)})")
            out.write(data)


def virtual_size(path: str, fmt: str) -> int:
    proc = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, path],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise StorageError(f"The uploaded file is not a valid {fmt} image: "
                           f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return int(json.loads(proc.stdout)["virtual-size"])


def convert(path: str, fmt: str, out: str) -> None:
    proc = subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", path, out],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise StorageError(f"qemu-img convert failed: {proc.stderr.strip()}")


def write_raw(image: Any, path: str) -> int:
    """Copy a raw file into an open image; returns the bytes covered."""
    size = os.path.getsize(path)
    zero = bytes(CHUNK)
    with open(path, "rb") as fh:
        offset = 0
        while offset < size:
            data = fh.read(CHUNK)
            if not data:
                break
            if data == zero[:len(data)]:
                image.write_zeroes(offset, len(data))
            else:
                image.write(data, offset)
            offset += len(data)
    image.flush()
    return size


def upload(client: CephClient, pool: str, volume: str, stream: IO[bytes], image_format: str,
           file_size: int | None = None, tmpdir: str | None = None) -> str:
    if image_format not in FORMATS:
        raise StorageError(f"Invalid image format {image_format!r}: must be one of "
                           f"{', '.join(FORMATS)}")
    pools.require_pool(client, pool)
    with client.ioctx(pool) as ioctx:
        if in_use(ioctx, volume):
            raise StorageError(f'Volume "{pool}/{volume}" is in use; stop its VM first')
        with open_image(client, ioctx, pool, volume) as image:
            return _upload(image, pool, volume, stream, image_format, file_size, tmpdir)


def _upload(image: Any, pool: str, volume: str, stream: IO[bytes], image_format: str,
            file_size: int | None, tmpdir: str | None) -> str:
    size = image.size()
    if image_format == "raw" and file_size is not None and file_size > size:
        raise StorageError(f"The image ({units.format_size(file_size)}) is larger than "
                           f'volume "{pool}/{volume}" ({units.format_size(size)})')
    work = tempfile.mkdtemp(prefix="pvc-upload-", dir=tmpdir)
    try:
        src = os.path.join(work, "upload")
        spool(stream, src, size if image_format == "raw" else None)
        raw = src
        if image_format != "raw":
            vsize = virtual_size(src, image_format)
            if vsize > size:
                raise StorageError(f"The image's virtual size ({units.format_size(vsize)}) "
                                   f'is larger than volume "{pool}/{volume}" '
                                   f"({units.format_size(size)})")
            raw = os.path.join(work, "upload.raw")
            convert(src, image_format, raw)
        written = write_raw(image, raw)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    verb = "Wrote" if image_format == "raw" else f"Converted ({image_format}) and wrote"
    return (f'{verb} uploaded file to volume "{pool}/{volume}" '
            f"({units.format_size(written)}).")
