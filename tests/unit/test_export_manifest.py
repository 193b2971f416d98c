"""The export manifest (vm_protect) and the diff header reader (storage_ceph)."""

from __future__ import annotations

import json
import struct

import pytest

from pvc_plugins.storage_ceph.errors import StorageError
from pvc_plugins.storage_ceph.exports import diff_size
from pvc_plugins.vm_protect import exports


@pytest.fixture
def export_dir(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "vms.disk0.rbdimg").write_bytes(b"x" * 1000)
    (tmp_path / "snapshot.json").write_text(json.dumps({"name": "s1"}))
    manifest = exports.write_manifest(str(tmp_path))
    assert set(manifest["files"]) == {"images/vms.disk0.rbdimg", "snapshot.json"}
    assert not (tmp_path / "manifest.json.tmp").exists()
    return tmp_path


def test_a_whole_export_verifies(export_dir):
    assert exports.verify(str(export_dir)) == []


@pytest.mark.parametrize("damage, expected", [
    (lambda p: p.write_bytes(b"x" * 999), "999 bytes, the manifest says 1000"),
    (lambda p: p.write_bytes(b"x" * 999 + b"y"), "checksum does not match"),
    (lambda p: p.unlink(), "missing"),
])
def test_each_kind_of_damage_names_the_file(export_dir, damage, expected):
    image = export_dir / "images" / "vms.disk0.rbdimg"
    damage(image)
    (problem,) = exports.verify(str(export_dir))
    assert problem.startswith(str(image)) and expected in problem


def test_no_manifest_or_a_foreign_one_is_not_an_export(export_dir):
    manifest = export_dir / "manifest.json"
    manifest.write_text(json.dumps({"format": "other", "files": {}}))
    assert "not a pvc-vm-export-1 manifest" in exports.verify(str(export_dir))[0]
    manifest.write_text("{not json")
    assert "unreadable" in exports.verify(str(export_dir))[0]
    manifest.unlink()
    assert "no manifest.json" in exports.verify(str(export_dir))[0]


def test_image_file_names():
    assert exports.image_file("vms/web1_disk0", False) == "images/vms.web1_disk0.rbdimg"
    assert exports.image_file("vms/web1_disk0", True) == "images/vms.web1_disk0.rbddiff"


def _name(tag: bytes, name: bytes, v2: bool) -> bytes:
    head = struct.pack("<Q", 4 + len(name)) if v2 else b""
    return tag + head + struct.pack("<I", len(name)) + name


@pytest.mark.parametrize("v2", [False, True])
def test_diff_size_reads_the_header(tmp_path, v2):
    path = tmp_path / "d"
    size = struct.pack("<Q", 8) if v2 else b""
    path.write_bytes((b"rbd diff v2\n" if v2 else b"rbd diff v1\n")
                     + _name(b"f", b"s1", v2) + _name(b"t", b"s2", v2)
                     + b"s" + size + struct.pack("<Q", 8 * 2**20) + b"e")
    assert diff_size(str(path)) == 8 * 2**20


def test_diff_size_refuses_other_files(tmp_path):
    path = tmp_path / "d"
    path.write_bytes(b"not a diff\n")
    with pytest.raises(StorageError, match="not an rbd export-diff file"):
        diff_size(str(path))
    path.write_bytes(b"rbd diff v1\ne")
    with pytest.raises(StorageError, match="no size record"):
        diff_size(str(path))
