"""The provisioner's script runner, with real child processes: scripts written for the
original PVC run unchanged, fail with their own message, clean up, and cannot touch the
test process's mounts; ``daemon_lib`` exists only inside the child."""

from __future__ import annotations

import importlib.util
import json
import os
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pvc_plugins.provisioner.scripting import libvirt_schema, runner
from pvc_plugins.provisioner.scripting.runner import ScriptFailed, check_script
from pvc_plugins.provisioner.scripting.vmbuilder import parse_size, trailing_number

pytestmark = pytest.mark.timeout(120)

NOOP = Path(__file__).resolve().parents[2] / "plugins" / "provisioner" / "examples" / "noop.py"
SECRET = "6a2f0b3c-1d4e-4f5a-8b6c-7d8e9f0a1b2c"


def vm_data(script: str, **arguments: str) -> dict[str, Any]:
    """vm_data as the provisioner hands it over: two disks, two NICs, three monitors."""
    return {
        "ceph_monitor_list": ["hv1.example", "hv2.example", "hv3.example"],
        "ceph_monitor_port": "6789",
        "ceph_monitor_secret": SECRET,
        "mac_template": None,
        "networks": [
            {"eth_bridge": "vmbr100", "id": 1, "network_template": 1, "vni": "100"},
            {"eth_bridge": "vmbr200", "id": 2, "network_template": 1, "vni": "200"},
        ],
        "script": script,
        "script_arguments": dict(arguments),
        "system_architecture": "x86_64",
        "system_details": {
            "id": 1, "name": "small", "vcpu_count": 2, "vram_mb": 2048, "serial": True,
            "vnc": True, "vnc_bind": "127.0.0.1", "node_limit": None, "node_selector": None,
            "node_autostart": False, "migration_method": None, "ova": None},
        "volumes": [
            {"disk_id": "sda", "disk_size_gb": 8, "filesystem": "ext4",
             "filesystem_args": "", "mountpoint": "/", "pool": "vms", "source_volume": None,
             "id": 1, "storage_template": 1},
            {"disk_id": "sdb", "disk_size_gb": 4, "filesystem": None, "filesystem_args": "",
             "mountpoint": None, "pool": "fast", "source_volume": None, "id": 2,
             "storage_template": 1},
        ],
    }


class FakeVolumes:
    """A VolumeBackend that records the calls; ``broken`` ops raise."""

    def __init__(self, broken: set[str] | None = None) -> None:
        self.calls: list[tuple] = []
        self.broken = broken or set()

    def _record(self, op: str, *args: Any) -> None:
        self.calls.append((op, *args))
        if op in self.broken:
            raise RuntimeError(f"{op} refused: no such pool")

    def add(self, pool: str, name: str, size_bytes: int) -> None:
        self._record("add", pool, name, size_bytes)

    def clone(self, pool: str, source: str, name: str) -> None:
        self._record("clone", pool, source, name)

    def map(self, pool: str, name: str) -> str:
        self._record("map", pool, name)
        return f"/dev/fake/{pool}/{name}"

    def unmap(self, pool: str, name: str) -> None:
        self._record("unmap", pool, name)


class Recorder:
    """What the callbacks saw."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.logs: list[tuple[str, str]] = []
        self.xml: list[str] = []

    def texts(self, level: str | None = None) -> list[str]:
        return [text for lvl, text in self.logs if level is None or lvl == level]

    def tagged(self, tag: str) -> Any:
        """The JSON a script logged as ``TAG:{...}``."""
        for text in self.texts("info"):
            if text.startswith(tag + ":"):
                return json.loads(text[len(tag) + 1:])
        raise AssertionError(f"no {tag} line in {self.logs}")


def run(script: str, name: str = "web12", *, volumes: FakeVolumes | None = None,
        on_xml: Any = None, on_stage: Any = None, data: dict | None = None,
        **kwargs: Any) -> Recorder:
    seen = Recorder()

    def stage(which: str) -> None:
        seen.stages.append(which)
        if on_stage:
            on_stage(which)

    def xml(text: str) -> None:
        seen.xml.append(text)
        if on_xml:
            on_xml(text)

    kwargs.setdefault("timeout", 60)
    try:
        runner.run_script(script, name, "profile1", data or vm_data(script),
                          volumes=volumes or FakeVolumes(), on_stage=stage,
                          on_log=lambda level, text: seen.logs.append((level, text)),
                          on_xml=xml, config={"cluster": "test"}, **kwargs)
    except BaseException as exc:
        exc.seen = seen  # type: ignore[attr-defined]
        raise
    return seen


def script(body: str) -> str:
    """A script: the imports scripts use, then ``body`` (a VMBuilderScript)."""
    head = textwrap.dedent("""\
        import json
        import os
        import daemon_lib.ceph as pvc_ceph
        import daemon_lib.common as pvc_common
        import daemon_lib.libvirt_schema as libvirt_schema
        from daemon_lib.vmbuilder import ProvisioningError, VMBuilder, chroot, open_zk
        from pvcworkerd.Daemon import config
        """)
    return head + textwrap.dedent(body)


ALL_STAGES = ["setup", "create", "prepare", "install", "cleanup"]


# -- the example and the XML templates ------------------------------------------------------

def check_domain(text: str, vm_name: str, data: dict[str, Any]) -> ET.Element:
    """The domain XML has what the provisioner's VM needs."""
    root = ET.fromstring(text)
    assert root.tag == "domain" and root.get("type") == "kvm"
    assert root.findtext("name") == vm_name
    assert root.find("memory").get("unit") == "MiB"
    assert root.findtext("memory") == str(data["system_details"]["vram_mb"])
    assert root.findtext("vcpu") == str(data["system_details"]["vcpu_count"])
    assert root.find("os/type").get("arch") == "x86_64"
    disks = root.findall("devices/disk[@type='network']")
    assert len(disks) == len(data["volumes"])
    for disk, volume in zip(disks, data["volumes"], strict=True):
        source = disk.find("source")
        assert source.get("protocol") == "rbd"
        assert source.get("name") == f"{volume['pool']}/{vm_name}_{volume['disk_id']}"
        assert [(h.get("name"), h.get("port")) for h in source.findall("host")] == [
            (m, data["ceph_monitor_port"]) for m in data["ceph_monitor_list"]]
        assert disk.find("auth") is None       # the storage plugin adds its user and secret
        assert disk.find("target").get("dev") == volume["disk_id"]
        assert disk.find("target").get("bus") == "scsi"
    assert root.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    nics = root.findall("devices/interface")
    assert [n.get("type") for n in nics] == ["bridge"] * len(data["networks"])
    assert [n.find("source").get("bridge") for n in nics] == [
        n["eth_bridge"] for n in data["networks"]]
    assert all(n.find("model").get("type") == "virtio" for n in nics)
    return root


def test_noop_example_runs_unchanged() -> None:
    assert importlib.util.find_spec("daemon_lib") is None
    text = NOOP.read_text()
    data = vm_data(text)
    given = str(uuid.uuid4())
    volumes = FakeVolumes()
    seen = run(text, volumes=volumes, data=data, vm_uuid=given)
    assert seen.stages == ALL_STAGES
    assert len(seen.xml) == 1
    root = check_domain(seen.xml[0], "web12", data)
    assert root.findtext("uuid") == given
    assert root.find("devices/serial/log").get("file").endswith("web12.log")
    assert root.find("devices/graphics").get("listen") == "127.0.0.1"
    macs = [n.find("mac").get("address") for n in root.findall("devices/interface")]
    assert len(set(macs)) == 2
    assert any("web12 (id 12)" in t for t in seen.texts("info"))
    assert seen.texts("info")[-1] == "cleanup: nothing to undo"
    assert volumes.calls == []
    assert importlib.util.find_spec("daemon_lib") is None
    assert importlib.util.find_spec("pvcworkerd") is None


def test_schema_pieces_make_a_domain() -> None:
    data = vm_data("")
    s = libvirt_schema
    xml = s.libvirt_header.format(vm_name="db3", vm_uuid=uuid.uuid4(), vm_description="d",
                                  vm_memory=2048, vm_vcpus=2, vm_architecture="x86_64")
    xml += s.devices_default + s.devices_serial.format(vm_name="db3")
    xml += s.devices_vnc.format(vm_vnc_port=-1, vm_vnc_bind="0.0.0.0")
    xml += s.devices_scsi_controller
    for volume in data["volumes"]:
        xml += s.devices_disk_header.format(ceph_storage_secret=SECRET, disk_pool=volume["pool"],
                                            vm_name="db3", disk_id=volume["disk_id"])
        for monitor in data["ceph_monitor_list"]:
            xml += s.devices_disk_coordinator.format(coordinator_name=monitor,
                                                     coordinator_ceph_mon_port="6789")
        xml += s.devices_disk_footer
    xml += s.devices_vhostmd
    for index, network in enumerate(data["networks"]):
        xml += s.devices_net_interface.format(eth_macaddr=f"52:54:00:00:00:{index:02x}",
                                              eth_bridge=network["eth_bridge"])
    xml += s.libvirt_footer
    root = check_domain(xml, "db3", data)
    assert root.find("devices/disk[@type='file']/readonly") is not None


# -- failures and cleanup -------------------------------------------------------------------

def test_exception_in_install_fails_there_after_cleanup() -> None:
    text = script("""
        class VMBuilderScript(VMBuilder):
            def create(self):
                return "<domain type='kvm'/>"

            def install(self):
                raise RuntimeError("the mirror is unreachable")

            def cleanup(self):
                self.log_info("CLEANUP-MARKER")
        """)
    with pytest.raises(ScriptFailed) as caught:
        run(text)
    assert (caught.value.stage, caught.value.message) == ("install",
                                                          "the mirror is unreachable")
    seen = caught.value.seen
    assert seen.stages == ALL_STAGES
    assert seen.texts("info")[-1] == "CLEANUP-MARKER"
    errors = seen.texts("error")
    assert errors[0].startswith("Traceback")
    assert any("<script profile1>" in e and "install" in e for e in errors)
    assert errors[-1] == "RuntimeError: the mirror is unreachable"


def test_fail_gives_its_message() -> None:
    text = script("""
        class VMBuilderScript(VMBuilder):
            def setup(self):
                self.log_info("setting up")

            def create(self):
                return "<domain type='kvm'/>"

            def prepare(self):
                self.fail("volume sdb is missing", exception=ProvisioningError)

            def install(self):
                self.log_info("INSTALL RAN")

            def cleanup(self):
                self.log_info("CLEANUP-MARKER")
        """)
    with pytest.raises(ScriptFailed) as caught:
        run(text)
    assert (caught.value.stage, caught.value.message) == ("prepare", "volume sdb is missing")
    seen = caught.value.seen
    assert seen.stages == ["setup", "create", "prepare", "cleanup"]
    assert seen.texts("error") == ["volume sdb is missing"]
    assert "INSTALL RAN" not in seen.texts()
    assert seen.texts("info")[-1] == "CLEANUP-MARKER"


def test_on_xml_raising_still_cleans_up() -> None:
    text = script("""
        class VMBuilderScript(VMBuilder):
            def create(self):
                return "<domain type='kvm'><name>x</name></domain>"

            def prepare(self):
                self.log_info("PREPARE RAN")

            def cleanup(self):
                self.log_info("CLEANUP-MARKER")
        """)

    def refuse(xml: str) -> None:
        raise ValueError("libvirt refused the XML")

    with pytest.raises(ValueError, match="libvirt refused") as caught:
        run(text, on_xml=refuse)
    seen = caught.value.seen
    assert seen.xml == ["<domain type='kvm'><name>x</name></domain>"]
    assert "PREPARE RAN" not in seen.texts()
    assert seen.texts("info")[-1] == "CLEANUP-MARKER"


def test_on_stage_raising_stops_and_cleans_up() -> None:
    text = script("""
        class VMBuilderScript(VMBuilder):
            def create(self):
                return "<domain type='kvm'/>"

            def prepare(self):
                self.log_info("PREPARE RAN")

            def cleanup(self):
                self.log_info("CLEANUP-MARKER")
        """)

    class Cancelled(Exception):
        pass

    def stage(which: str) -> None:
        if which == "prepare":
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled) as caught:
        run(text, on_stage=stage)
    assert "PREPARE RAN" not in caught.value.seen.texts()
    assert caught.value.seen.texts("info")[-1] == "CLEANUP-MARKER"


def test_create_must_return_xml() -> None:
    text = script("""
        class VMBuilderScript(VMBuilder):
            def create(self):
                self.log_info("forgot the return")

            def cleanup(self):
                self.log_info("CLEANUP-MARKER")
        """)
    with pytest.raises(ScriptFailed) as caught:
        run(text)
    assert caught.value.stage == "create"
    assert "not NoneType" in caught.value.message
    assert caught.value.seen.xml == []
    assert caught.value.seen.texts("info")[-1] == "CLEANUP-MARKER"


def test_cleanup_failure_after_success_fails_the_run() -> None:
    text = script("""
        class VMBuilderScript(VMBuilder):
            def create(self):
                return "<domain type='kvm'/>"

            def cleanup(self):
                raise OSError("umount: target is busy")
        """)
    with pytest.raises(ScriptFailed) as caught:
        run(text)
    assert (caught.value.stage, caught.value.message) == ("cleanup", "umount: target is busy")


def test_cleanup_failure_after_a_failure_keeps_the_first() -> None:
    text = script("""
        class VMBuilderScript(VMBuilder):
            def setup(self):
                self.fail("no kernel given")

            def cleanup(self):
                raise OSError("nothing to clean")
        """)
    with pytest.raises(ScriptFailed) as caught:
        run(text)
    assert (caught.value.stage, caught.value.message) == ("setup", "no kernel given")
    assert caught.value.seen.texts("error")[-1] == "OSError: nothing to clean"


@pytest.mark.parametrize("text, expected", [
    ("class VMBuilderScript(:\n", "line 1"),
    ("import os\n", "does not define a class VMBuilderScript"),
    ("raise SystemExit(3)\nclass VMBuilderScript: pass\n", "sys.exit(3)"),
])
def test_scripts_that_cannot_start_fail_in_setup(text: str, expected: str) -> None:
    with pytest.raises(ScriptFailed) as caught:
        run(text)
    assert caught.value.stage == "setup"
    assert expected in caught.value.message
    assert caught.value.seen.stages == ["setup"]


def test_output_and_log_levels() -> None:
    text = script("""
        import sys

        class VMBuilderScript(VMBuilder):
            def create(self):
                print("printed line")
                print("to stderr", file=sys.stderr)
                pvc_common.run_os_command("sh -c 'echo from a child; echo oops >&2'")
                rc, out, err = pvc_common.run_os_command(["sh", "-c", "echo out; exit 3"])
                self.log_info(f"RC:{json.dumps([rc, out, err])}")
                rc, out, err = pvc_common.run_os_command("no-such-command-pvc --x")
                self.log_info(f"MISSING:{json.dumps(rc)}")
                rc, out, err = pvc_common.run_os_command(
                    ["sh", "-c", "echo $ONLY"], environment={"ONLY": "given"})
                self.log_info(f"ENV:{json.dumps(out)}")
                self.log_warn("careful")
                self.log_err("bad")
                self.log_info(f"CONFIG:{json.dumps(config)}")
                return "<domain type='kvm'/>"
        """)
    seen = run(text)
    assert ("stdout", "printed line") in seen.logs
    assert ("stderr", "to stderr") in seen.logs
    assert ("warning", "careful") in seen.logs and ("error", "bad") in seen.logs
    assert seen.tagged("RC") == [3, "out\n", ""]
    assert seen.tagged("MISSING") == 127
    assert seen.tagged("ENV") == "given\n"
    assert seen.tagged("CONFIG") == {"cluster": "test"}


def test_large_script_and_xml_pass_whole() -> None:
    padding = "# " + "p" * 2_000_000 + "\n"
    text = script("""
        class VMBuilderScript(VMBuilder):
            def create(self):
                print("o" * 200_000)
                return "<domain>" + "x" * 3_000_000 + "</domain>"
        """) + padding
    seen = run(text)
    assert len(seen.xml[0]) == 3_000_017
    assert "".join(t for lvl, t in seen.logs if lvl == "stdout") == "o" * 200_000


# -- the VM's identity -----------------------------------------------------------------------

IDENTITY = script("""
    import uuid

    class VMBuilderScript(VMBuilder):
        def setup(self):
            assert isinstance(self.vm_uuid, uuid.UUID)
            self.log_info("ID:" + json.dumps({
                "name": self.vm_name, "id": self.vm_id, "uuid": str(self.vm_uuid),
                "profile": self.vm_profile, "args": self.vm_data["script_arguments"]}))

        def create(self):
            return "<domain type='kvm'/>"
    """)


@pytest.mark.parametrize("name, vm_id", [("web12", 12), ("db", 0), ("a1b022", 22),
                                         ("7", 7)])
def test_vm_id_is_the_trailing_digits(name: str, vm_id: int) -> None:
    seen = run(IDENTITY, name, data=vm_data(IDENTITY, release="bookworm"))
    identity = seen.tagged("ID")
    assert (identity["name"], identity["id"]) == (name, vm_id)
    assert identity["profile"] == "profile1"
    assert identity["args"] == {"release": "bookworm"}
    assert trailing_number(name) == vm_id


def test_vm_uuid_given_or_fresh() -> None:
    given = str(uuid.uuid4())
    assert run(IDENTITY, vm_uuid=given).tagged("ID")["uuid"] == given
    first, second = (run(IDENTITY).tagged("ID")["uuid"] for _ in range(2))
    assert first != second and uuid.UUID(first) and uuid.UUID(second)


# -- volumes ---------------------------------------------------------------------------------

VOLUME_SCRIPT = script("""
    class VMBuilderScript(VMBuilder):
        def create(self):
            return "<domain type='kvm'/>"

        def prepare(self):
            with open_zk(config) as zk:
                results = [
                    pvc_ceph.add_volume(zk, "vms", "extra", "4G"),
                    pvc_ceph.add_volume(zk, "vms", "small", "512M", force_flag=True),
                    pvc_ceph.add_volume(zk, "vms", "bytes", 1048576),
                    pvc_ceph.add_volume(zk, "vms", "bad", "four gigs"),
                    pvc_ceph.clone_volume(zk, "vms", "template", "web12_sdc"),
                    pvc_ceph.map_volume(zk, "vms", "web12_sda"),
                    pvc_ceph.unmap_volume(zk, "vms", "web12_sda"),
                ]
            self.log_info("RESULTS:" + json.dumps(results))
    """)


def test_ceph_helpers_go_to_the_backend() -> None:
    volumes = FakeVolumes()
    results = run(VOLUME_SCRIPT, volumes=volumes).tagged("RESULTS")
    assert volumes.calls == [
        ("add", "vms", "extra", 4 * 2**30),
        ("add", "vms", "small", 512 * 2**20),
        ("add", "vms", "bytes", 1048576),
        ("clone", "vms", "template", "web12_sdc"),
        ("map", "vms", "web12_sda"),
        ("unmap", "vms", "web12_sda"),
    ]
    assert [ok for ok, _ in results] == [True, True, True, False, True, True, True]
    assert "four gigs" in results[3][1]
    assert results[5] == [True, "/dev/fake/vms/web12_sda"]


def test_backend_errors_become_the_helpers_message() -> None:
    volumes = FakeVolumes(broken={"add", "map"})
    results = run(VOLUME_SCRIPT, volumes=volumes).tagged("RESULTS")
    assert results[0] == [False, "add refused: no such pool"]
    assert results[5] == [False, "map refused: no such pool"]
    assert results[6][0] is True


@pytest.mark.parametrize("given, size", [
    ("4G", 4 * 2**30), ("512M", 512 * 2**20), ("10GB", 10 * 2**30), ("2GiB", 2 * 2**30),
    ("1048576", 1048576), (4096, 4096), ("1.5G", 3 * 2**29), ("8k", 8192), ("1T", 2**40),
    ("100B", 100),
])
def test_parse_size(given: str | int, size: int) -> None:
    assert parse_size(given) == size


@pytest.mark.parametrize("given", ["", "G", "4X", "-1G", "4 gigs", -5, "5iB"])
def test_parse_size_refuses(given: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size(given)


# -- isolation -------------------------------------------------------------------------------

def mount_table() -> list[str]:
    """The test process's mounts, minus network namespace handles that other processes on
    a shared machine add and remove under /run/netns at any time."""
    lines = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if not fields[4].startswith("/run/netns/"):
                lines.append(" ".join(fields[2:]))
    return sorted(lines)


ISOLATION = script("""
    import tempfile

    class VMBuilderScript(VMBuilder):
        def create(self):
            return "<domain type='kvm'/>"

        def prepare(self):
            self.target = tempfile.mkdtemp(prefix="pvc-target-")
            rc, _, err = pvc_common.run_os_command(f"mount -t tmpfs pvc-scratch {self.target}")
            if rc != 0:
                self.fail(f"mount: {err}")
            with open(os.path.join(self.target, "inside"), "w") as fh:
                fh.write("x")
            with chroot(self.target):
                seen = sorted(os.listdir("/"))
            self.log_info("PREPARE:" + json.dumps({
                "target": self.target, "chrooted": seen,
                "back": os.path.exists("/proc/self/mountinfo")}))

        def install(self):
            results = {}
            probe = self.vm_data["script_arguments"]["probe"]
            try:
                with open(probe, "w"):
                    pass
                os.unlink(probe)
                results["root"] = "writable"
            except OSError as exc:
                results["root"] = exc.strerror
            for where in (self.target, "/tmp", "/dev/shm", "/run"):
                fd, path = tempfile.mkstemp(dir=where)
                os.close(fd)
                os.unlink(path)
                results[where] = "writable"
            with open("/proc/self/mountinfo") as fh:
                results["proc"] = bool(fh.read())
            self.log_info("INSTALL:" + json.dumps(results))

        def cleanup(self):
            pvc_common.run_os_command(["umount", self.target])
            os.chroot("/tmp")  # and never back: only this process is affected
            self.log_info("CLEANUP-MARKER")
    """)


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_mounts_and_chroot_stay_in_the_child() -> None:
    probe = f"/var/tmp/pvc-ro-probe-{uuid.uuid4().hex}"
    before = mount_table()
    try:
        seen = run(ISOLATION, data=vm_data(ISOLATION, probe=probe))
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    assert mount_table() == before
    assert not any(w for w in seen.texts("warning")), seen.texts("warning")
    prepared = seen.tagged("PREPARE")
    assert prepared["chrooted"] == ["inside"] and prepared["back"] is True
    assert not os.path.exists(prepared["target"])  # the child's /tmp was its own
    assert seen.tagged("INSTALL") == {"root": "Read-only file system",
                                      prepared["target"]: "writable", "/tmp": "writable",
                                      "/dev/shm": "writable", "/run": "writable",
                                      "proc": True}
    assert seen.texts("info")[-1] == "CLEANUP-MARKER"
    assert os.statvfs("/").f_flag & os.ST_RDONLY == 0


def test_daemon_lib_is_only_in_the_child() -> None:
    for name in ("daemon_lib", "pvcworkerd"):
        assert importlib.util.find_spec(name) is None
    text = script("""
        import sys

        class VMBuilderScript(VMBuilder):
            def create(self):
                names = sorted(n for n in sys.modules
                               if n.split(".")[0] in ("daemon_lib", "pvcworkerd"))
                self.log_info("MODULES:" + json.dumps(names))
                return "<domain type='kvm'/>"
        """)
    assert run(text).tagged("MODULES") == [
        "daemon_lib", "daemon_lib.ceph", "daemon_lib.common", "daemon_lib.libvirt_schema",
        "daemon_lib.vmbuilder", "pvcworkerd", "pvcworkerd.Daemon"]
    for name in ("daemon_lib", "daemon_lib.vmbuilder", "pvcworkerd"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)


# -- a child that dies or hangs --------------------------------------------------------------

@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_killed_child_fails_without_hanging(pidfd: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if not pidfd:  # kernels before 5.3: the runner polls for the child's end instead
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    text = script("""
        class VMBuilderScript(VMBuilder):
            def create(self):
                return "<domain type='kvm'/>"

            def install(self):
                os.kill(os.getpid(), 9)
        """)
    started = time.monotonic()
    with pytest.raises(ScriptFailed) as caught:
        run(text)
    assert caught.value.stage == "install"
    assert "SIGKILL" in caught.value.message
    assert time.monotonic() - started < 30


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (missing, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_for(condition: Any, seconds: float = 10.0) -> bool:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_timeout_kills_the_whole_group() -> None:
    text = script("""
        import subprocess
        import time

        class VMBuilderScript(VMBuilder):
            def create(self):
                return "<domain type='kvm'/>"

            def prepare(self):
                helper = subprocess.Popen(["sleep", "300"])
                self.log_info("HELPER:" + json.dumps(helper.pid))
                time.sleep(300)
        """)
    started = time.monotonic()
    with pytest.raises(ScriptFailed) as caught:
        run(text, timeout=2)
    elapsed = time.monotonic() - started
    assert caught.value.stage == "prepare"
    assert "within 2 s" in caught.value.message
    assert elapsed < 15
    helper = caught.value.seen.tagged("HELPER")
    assert wait_for(lambda: gone(helper))


# -- the static check ------------------------------------------------------------------------

def test_check_script() -> None:
    assert check_script(NOOP.read_text()) is None
    assert check_script("class VMBuilderScript:\n    pass\n") is None
    assert check_script("import os\n") == "it does not define a class VMBuilderScript"
    assert check_script("def f():\n    class VMBuilderScript: pass\n") == \
        "it does not define a class VMBuilderScript"
    problem = check_script("class VMBuilderScript(VMBuilder)\n    pass\n")
    assert problem is not None and problem.startswith("line 1: ")
    assert check_script("x = 1\nreturn x\nclass VMBuilderScript: pass\n").startswith("line 2")


def test_check_script_never_runs_the_script(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"open({str(marker)!r}, 'w').close()\nclass VMBuilderScript: pass\n"
    assert check_script(text) is None
    assert not marker.exists()


def test_debootstrap_example_checks_builds_its_xml_and_cleans_up(monkeypatch) -> None:
    """The shipped debootstrap example (no mirror here: it stops at prepare(), where the
    volume cannot be mapped): its tool checks pass with the tools on PATH, its XML is a
    domain of the template's disks and NICs, and cleanup() unmaps what it mapped."""
    import shutil
    import tempfile

    tools = tempfile.mkdtemp(prefix="pvc-stub-tools-", dir="/var/tmp")   # not under the
    try:                                                                 # child's own /tmp
        for tool in ("debootstrap", "sfdisk", "partx", "blkid"):
            stub = Path(tools) / tool
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
        text = (NOOP.parent / "debootstrap.py").read_text()
        assert runner.check_script(text) is None
        data = vm_data(text, deb_release="trixie")
        volumes = FakeVolumes(broken={"map"})
        with pytest.raises(runner.ScriptFailed) as failed:
            run(text, volumes=volumes, data=data)
    finally:
        shutil.rmtree(tools)
    assert failed.value.stage == "prepare", failed.value.message
    assert "cannot map vms/web12_sda" in failed.value.message
    seen = failed.value.seen  # type: ignore[attr-defined]
    assert seen.stages == ["setup", "create", "prepare", "cleanup"]
    check_domain(seen.xml[0], "web12", data)
    assert volumes.calls == [("map", "vms", "web12_sda")]     # nothing mapped: nothing unmapped
