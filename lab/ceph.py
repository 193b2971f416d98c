"""Ceph for the lab: monitor, manager and file-backed bluestore OSDs in network namespaces.

Debian's Ceph 16 daemons run in the foreground inside a node's namespace and bind its address
(mon: v2 3300 + v1 6789). cephx is on, as in production: the monitors are made with a
``mon.`` key and the ``client.admin`` key (generated once per cluster), every node gets the
admin keyring beside its ceph.conf (``[client] keyring``), the manager and each OSD have their
own key in their data directory. Each node has its own ``<node dir>/ceph/ceph.conf`` (its
``public_addr`` and CRUSH host) and data directories beside it; an OSD keeps its data on a
sparse file ``osd.img`` (bluestore through a ``block`` symlink). Pools default to
``size``/``min_size`` = copies/mincopies (3/2 in the lab) with the CRUSH failure domain
``host`` (``osd`` when every OSD shares one host). Caches, threads and manager modules are cut
down so a node's Ceph costs tens of MB at idle.

Two users:

* ``CephCluster``: a standalone cluster (one namespace, one mon, one mgr, N OSDs) for the
  integration tests and benches, torn down by PID.
* ``CephMon``/``CephMgr``/``CephOsd``: ``pvc_lab.services.Service`` subclasses for the lab
  (mon and mgr on the first coordinator, one OSD per node), see ``ceph_services()``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pvc_lab import netns, procs
from pvc_lab.services import BASE_PATH, Service
from pvc_lab.spec import LabSpec, NodeSpec
from pvc_plugins.storage_ceph import bluestore

if TYPE_CHECKING:
    from pvc_lab.lab import Lab

MON_V2, MON_V1 = 3300, 6789
OSD_DEVICE_BYTES = 4 * 2**30          # sparse: only what is written takes disk space
OSD_WEIGHT = 0.004                     # equal CRUSH weights (4 GiB in TiB)
# The manager's always-on modules (a missing one is a health error); the rest stay unloaded,
# which saves ~200 MB of Python sub-interpreters.
MGR_KEEP = {"balancer", "crash", "devicehealth", "orchestrator", "pg_autoscaler", "progress",
            "rbd_support", "status", "telemetry", "volumes"}
MGR_MODULES_DIR = "/usr/share/ceph/mgr"
BINARIES = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "monmaptool", "ceph-authtool")
ADMIN_KEYRING = "ceph.client.admin.keyring"
MON_KEYRING = "ceph.mon.keyring"
ADMIN_CAPS = ("--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mds", "allow *",
              "--cap", "mgr", "allow *")


class CephLabError(Exception):
    """A Ceph command or daemon failed; one line for the administrator."""


def available() -> str | None:
    """None if the Ceph daemons can run here, else what is missing."""
    missing = [b for b in BINARIES if shutil.which(b, path=BASE_PATH) is None]
    if missing:
        return (f"{', '.join(missing)} missing (apt-get install ceph-mon ceph-mgr ceph-osd "
                "ceph-common; see scripts/bootstrap.sh)")
    return None


def disabled_mgr_modules() -> list[str]:
    try:
        found = sorted(e.name for e in os.scandir(MGR_MODULES_DIR) if e.is_dir())
    except OSError:
        found = []
    return [m for m in found if m not in MGR_KEEP and not m.startswith("_")]


def mon_addrv(address: str) -> str:
    return f"[v2:{address}:{MON_V2},v1:{address}:{MON_V1}]"


def conf_text(fsid: str, mons: list[tuple[str, str]], address: str, network: str, base: str,
              crush_host: str, failure_domain: str = "host", size: int = 3, min_size: int = 2,
              fast_fail: bool = False, cephx: bool = True, mon_failover: bool = False) -> str:
    """One node's ceph.conf. ``mons`` = [(mon id, address)]; paths live under ``base``; the
    admin keyring is ``base/ceph.client.admin.keyring`` (``[client] keyring``).

    ``mon_failover``: monitors re-elect within ~6 s of losing one (lease 2 s, lease-ack timeout
    4 s, election timeout 2 s; Ceph's defaults take ~15 s), every Ceph client (OSDs, librbd
    in QEMU, pvcnoded) leaves a dead monitor for another within ~3 s instead of 30 s, and a
    client's operation stuck on a dead OSD fetches the new OSD map after 2 s instead of 10 s,
    so a fence's storage cut and the VM starts after it do not wait (docs/fencing.md, issue
    10)."""
    if failure_domain not in ("host", "osd"):
        raise ValueError(f"failure domain must be host or osd, not {failure_domain!r}")
    lines = [
        "[global]",
        f"fsid = {fsid}",
        f"mon_initial_members = {', '.join(m for m, _ in mons)}",
        f"mon_host = {','.join(mon_addrv(a) for _, a in mons)}",
        f"public_network = {network}",
        f"public_addr = {address}",
        f"cluster_addr = {address}",
        f"auth_cluster_required = {'cephx' if cephx else 'none'}",
        f"auth_service_required = {'cephx' if cephx else 'none'}",
        f"auth_client_required = {'cephx' if cephx else 'none'}",
        f"osd_pool_default_size = {size}",
        f"osd_pool_default_min_size = {min_size}",
        "osd_pool_default_pg_num = 8",
        "osd_pool_default_pgp_num = 8",
        "osd_pool_default_pg_autoscale_mode = off",
        f"osd_crush_chooseleaf_type = {1 if failure_domain == 'host' else 0}",
        "mon_allow_pool_delete = true",
        "paxos_propose_interval = 0.2",       # map changes commit in ~0.2 s instead of ~1 s
        "mon_warn_on_pool_no_redundancy = false",
        "mon_data_avail_warn = 2",
        "mon_data_avail_crit = 1",
        "mon_warn_on_insecure_global_id_reclaim_allowed = false",
        f"mgr_disabled_modules = {' '.join(disabled_mgr_modules())}",
        f"run_dir = {base}/run",
        f"pid_file = {base}/run/$cluster-$name.pid",
        f"log_file = {base}/log/$cluster-$name.log",
        f"mon_data = {base}/mon/$cluster-$id",
        f"mgr_data = {base}/mgr/$cluster-$id",
        f"osd_data = {base}/osd/$cluster-$id",
        "osd_objectstore = bluestore",
        "bluestore_block_create = false",
        "bluestore_cache_autotune = false",
        "bluestore_cache_size = 67108864",
        "osd_memory_target = 939524096",
        "osd_op_num_shards = 2",
        "osd_op_num_threads_per_shard = 1",
        "ms_async_op_threads = 2",
        "osd_crush_update_on_start = true",
        f"crush_location = root=default host={crush_host}",
    ]
    if mon_failover:
        lines += ["mon_lease = 2", "mon_election_timeout = 2", "mon_client_hunt_interval = 1",
                  "mon_client_ping_interval = 1", "mon_client_ping_timeout = 3",
                  "objecter_tick_interval = 1", "objecter_timeout = 2"]
    if fast_fail:
        lines += ["osd_heartbeat_interval = 1", "osd_heartbeat_grace = 5",
                  "osd_client_watch_timeout = 5"]
    lines += ["", "[client]", f"keyring = {base}/$cluster.$name.keyring",
              f"admin_socket = {base}/run/$cluster-$name.$pid.$cctid.asok",
              f"log_file = {base}/log/client.log", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class CephSite:
    """One node's Ceph: its files under ``dir`` and the namespace its commands run in."""

    name: str                  # node name: mon/mgr id and CRUSH host
    dir: str
    address: str
    netns: str | None = None

    @property
    def conf(self) -> str:
        return os.path.join(self.dir, "ceph.conf")

    @property
    def fsid_file(self) -> str:
        return os.path.join(self.dir, "fsid")

    @property
    def admin_keyring(self) -> str:
        return os.path.join(self.dir, ADMIN_KEYRING)

    def osd_device(self) -> str:
        return os.path.join(self.dir, "osd.img")

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def env(self) -> dict[str, str]:
        return {"PATH": BASE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "CEPH_CONF": self.conf}

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command in the node's namespace (output captured)."""
        try:
            return subprocess.run(self.prefix() + argv, capture_output=True, text=True,
                                  timeout=timeout, env=self.env(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout} s")

    def ceph(self, *args: str, timeout: float = 30) -> Any:
        """``ceph ARGS -f json`` parsed; raises CephLabError."""
        proc = self.run(["ceph", "-c", self.conf, "--connect-timeout", str(int(timeout)),
                         *args, "-f", "json"], timeout + 5)
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise CephLabError(f"ceph {' '.join(args)}: {err[-1] if err else proc.returncode}")
        text = proc.stdout.strip()
        return json.JSONDecoder().raw_decode(text)[0] if text else None

    def write_conf(self, fsid: str, mons: list[tuple[str, str]], network: str, **kw: Any) -> None:
        for sub in ("run", "log", "mon", "mgr", "osd"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        text = conf_text(fsid, mons, self.address, network, self.dir, self.name, **kw)
        with open(self.conf + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(self.conf + ".tmp", self.conf)


# -- bring-up steps (shared by the standalone cluster and the lab services) ----------------

def make_keyrings(directory: str) -> None:
    """The cluster's ``mon.`` and ``client.admin`` keys, generated once into ``directory``
    (``ceph.mon.keyring`` holds both, for the monitors' mkfs; root-only files)."""
    mon = os.path.join(directory, MON_KEYRING)
    admin = os.path.join(directory, ADMIN_KEYRING)
    if os.path.exists(mon) and os.path.exists(admin):
        return
    os.makedirs(directory, exist_ok=True)
    old = os.umask(0o077)
    try:
        for path in (mon + ".tmp", admin + ".tmp"):
            if os.path.exists(path):
                os.unlink(path)
        _must(_local(["ceph-authtool", "--create-keyring", admin + ".tmp", "--gen-key",
                      "-n", "client.admin", *ADMIN_CAPS]), "ceph-authtool (client.admin)")
        _must(_local(["ceph-authtool", "--create-keyring", mon + ".tmp", "--gen-key",
                      "-n", "mon.", "--cap", "mon", "allow *"]), "ceph-authtool (mon.)")
        _must(_local(["ceph-authtool", mon + ".tmp", "--import-keyring", admin + ".tmp"]),
              "ceph-authtool --import-keyring")
    finally:
        os.umask(old)
    os.replace(admin + ".tmp", admin)
    os.replace(mon + ".tmp", mon)


def install_admin_keyring(site: CephSite, keys_dir: str) -> None:
    """Copy the cluster's admin keyring beside the node's ceph.conf (root-only)."""
    src = os.path.join(keys_dir, ADMIN_KEYRING)
    if os.path.abspath(src) == os.path.abspath(site.admin_keyring):
        return
    os.makedirs(site.dir, exist_ok=True)
    shutil.copyfile(src, site.admin_keyring + ".tmp")
    os.chmod(site.admin_keyring + ".tmp", 0o600)
    os.replace(site.admin_keyring + ".tmp", site.admin_keyring)


def mgr_keyring(site: CephSite) -> None:
    """The manager's key in its data directory (made through the monitor once)."""
    data = os.path.join(site.dir, "mgr", f"ceph-{site.name}")
    os.makedirs(data, exist_ok=True)
    path = os.path.join(data, "keyring")
    if os.path.exists(path):
        return
    _must(site.run(["ceph", "-c", site.conf, "--connect-timeout", "30", "auth", "get-or-create",
                    f"mgr.{site.name}", "mon", "allow profile mgr", "osd", "allow *",
                    "mds", "allow *", "-o", path + ".tmp"], 45), "ceph auth get-or-create mgr")
    os.replace(path + ".tmp", path)


def _local(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": BASE_PATH, "LANG": "C.UTF-8"}, stdin=subprocess.DEVNULL)


def mon_mkfs(site: CephSite, fsid: str, mons: list[tuple[str, str]], keys_dir: str) -> None:
    """Create the monitor store of mon ``site.name`` with the cluster's keys (once; no
    network needed)."""
    if os.path.exists(os.path.join(site.dir, "mon", f"ceph-{site.name}", "store.db")):
        return
    monmap = os.path.join(site.dir, "monmap")
    argv = ["monmaptool", "--create", "--clobber", "--fsid", fsid, "--enable-all-features",
            "--set-min-mon-release", "pacific"]
    for mon_id, addr in mons:
        argv += ["--addv", mon_id, mon_addrv(addr)]
    _must(site.run(argv + [monmap]), "monmaptool")
    _must(site.run(["ceph-mon", "-c", site.conf, "--mkfs", "-i", site.name, "--monmap", monmap,
                    "--keyring", os.path.join(keys_dir, MON_KEYRING)], 120), "ceph-mon --mkfs")


def mon_argv(site: CephSite) -> list[str]:
    return ["ceph-mon", "-f", "-c", site.conf, "-i", site.name]


def mgr_argv(site: CephSite) -> list[str]:
    os.makedirs(os.path.join(site.dir, "mgr", f"ceph-{site.name}"), exist_ok=True)
    return ["ceph-mgr", "-f", "-c", site.conf, "-i", site.name]


def create_osd(site: CephSite, device: str, size_bytes: int = OSD_DEVICE_BYTES,
               weight: float = OSD_WEIGHT) -> int:
    """A new OSD on a sparse file ``device`` (needs a monitor); returns its id."""
    bluestore.create_file_device(device, size_bytes)
    osd_id, _ = bluestore.prepare(site.run, site.conf, device, site.name, weight)
    return osd_id


def mon_in_quorum(site: CephSite) -> bool:
    return bool(site.ceph("quorum_status", timeout=5).get("quorum_names"))


def mgr_available(site: CephSite) -> bool:
    return bool(site.ceph("mgr", "stat", timeout=5).get("available"))


def osds_up(site: CephSite) -> tuple[int, int]:
    st = site.ceph("osd", "stat", timeout=5)
    return st["num_up_osds"], st["num_osds"]


def health_ok(site: CephSite) -> bool:
    """HEALTH_OK, every OSD up and in, and every PG of every pool active+clean.

    (Right after a manager restart the PG map is empty and health says OK, so the PG count is
    compared with the pools' pg_num.)
    """
    st = site.ceph("status", timeout=10)
    pools = site.ceph("osd", "pool", "ls", "detail", timeout=10) or []
    want = sum(p["pg_num"] for p in pools)
    pg = st["pgmap"]
    clean = sum(x["count"] for x in pg.get("pgs_by_state", [])
                if x["state_name"] == "active+clean")
    osd = st["osdmap"]
    return (st["health"]["status"] == "HEALTH_OK" and pg.get("num_pgs", 0) == want == clean
            and osd["num_up_osds"] == osd["num_in_osds"] == osd["num_osds"] > 0)


def wait_healthy(site: CephSite, timeout: float = 120.0, stable: float = 2.0) -> None:
    """Wait until ``health_ok`` holds for ``stable`` seconds in a row (right after a change
    the PG map may still show the state before it)."""
    since: list[float] = []

    def check() -> bool:
        if not health_ok(site):
            since.clear()
            return False
        if not since:
            since.append(time.monotonic())
        return time.monotonic() - since[0] >= stable

    wait_for(check, timeout, "HEALTH_OK with all PGs active+clean")


def wait_for(check: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            value = check()
        except (CephLabError, KeyError, ValueError) as exc:
            value, last = None, str(exc)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise CephLabError(f"timed out after {timeout:g} s waiting for {what}"
                               + (f" ({last})" if last else ""))
        time.sleep(interval)


def _must(proc: subprocess.CompletedProcess, what: str) -> str:
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise CephLabError(f"{what} failed: {err[-1] if err else proc.returncode}")
    return proc.stdout


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- standalone cluster (integration tests, benches) --------------------------------------

class CephCluster:
    """One namespace with one mon, one mgr and ``osds`` OSDs on one CRUSH host.

    Pools default to size ``min(osds, 3)`` (min_size 1 below 3 OSDs) with failure domain
    ``osd``. ``up`` creates the namespace (address on its loopback), ``down`` ends every
    process in it by PID and deletes it; ``base`` keeps the logs until ``cleanup``.
    """

    def __init__(self, base: str, ns: str, address: str = "10.253.0.1", osds: int = 2,
                 name: str = "ceph1", fast_fail: bool = True) -> None:
        self.base = base
        self.ns = ns
        self.osds = osds
        self.site = CephSite(name, os.path.join(base, name), address, ns)
        self.size = min(osds, 3)
        self.min_size = 2 if osds >= 3 else 1
        self.fast_fail = fast_fail
        self.timings: dict[str, float] = {}
        self.osd_ids: list[int] = []

    @property
    def conf(self) -> str:
        return self.site.conf

    def _pid_file(self, daemon: str) -> str:
        return os.path.join(self.site.dir, "run", f"{daemon}.lab.pid")

    def _spawn(self, daemon: str, argv: list[str]) -> procs.ProcRecord:
        log = os.path.join(self.site.dir, "log", f"{daemon}.stdout")
        rec = procs.spawn(self.site.prefix() + argv, log, self.site.env(), cwd=self.site.dir)
        procs.write_record(self._pid_file(daemon), rec)
        return rec

    def records(self) -> dict[str, procs.ProcRecord]:
        """Running daemons started by this object: {daemon name: record}."""
        found = {}
        run = os.path.join(self.site.dir, "run")
        for f in sorted(os.listdir(run)) if os.path.isdir(run) else []:
            if f.endswith(".lab.pid"):
                rec = procs.read_record(os.path.join(run, f))
                if rec and procs.alive(rec.pid, rec.start):
                    found[f[:-8]] = rec
        return found

    def up(self, timeout: float = 240.0) -> dict[str, float]:
        """From nothing to HEALTH_OK; returns the timings of the steps (seconds)."""
        t0 = time.monotonic()
        deadline = t0 + timeout

        def mark(step: str) -> None:
            self.timings[step] = round(time.monotonic() - t0, 2)

        if not netns.exists(self.ns):
            netns.add(self.ns)
            netns.ip("-n", self.ns, "addr", "add", f"{self.site.address}/24", "dev", "lo")
        fsid = str(uuid.uuid4())
        mons = [(self.site.name, self.site.address)]
        network = self.site.address.rsplit(".", 1)[0] + ".0/24"
        self.site.write_conf(fsid, mons, network, failure_domain="osd", size=self.size,
                             min_size=self.min_size, fast_fail=self.fast_fail)
        make_keyrings(self.site.dir)
        mon_mkfs(self.site, fsid, mons, self.site.dir)
        self._spawn("mon", mon_argv(self.site))
        wait_for(lambda: mon_in_quorum(self.site), deadline - time.monotonic(), "mon quorum")
        mark("mon")
        mgr_keyring(self.site)
        self._spawn("mgr", mgr_argv(self.site))
        for i in range(self.osds):
            self.add_osd(os.path.join(self.site.dir, f"osd{i}.img"))
        mark("osd_mkfs")
        wait_for(lambda: osds_up(self.site) == (self.osds, self.osds),
                 deadline - time.monotonic(), f"{self.osds} OSDs up")
        mark("osds_up")
        wait_for(lambda: mgr_available(self.site), deadline - time.monotonic(), "mgr")
        mark("mgr")
        self.wait_healthy(deadline - time.monotonic())
        mark("health_ok")
        return dict(self.timings)

    def add_osd(self, device: str) -> int:
        osd_id = create_osd(self.site, device)
        self.osd_ids.append(osd_id)
        self.start_osd(osd_id)
        return osd_id

    def start_osd(self, osd_id: int) -> procs.ProcRecord:
        return self._spawn(f"osd.{osd_id}", bluestore.osd_argv(self.conf, osd_id))

    def kill_osd(self, osd_id: int) -> None:
        rec = self.records().get(f"osd.{osd_id}")
        if rec:
            procs.terminate({rec.pid: rec.start}, 0)

    def wait_healthy(self, timeout: float = 120.0) -> None:
        wait_healthy(self.site, timeout)

    def memory(self) -> dict[str, int]:
        """RSS in KiB of every running daemon."""
        return {name: rss_kb(rec.pid) for name, rec in self.records().items()}

    def down(self, grace: float = 5.0) -> None:
        """SIGTERM (then SIGKILL) every daemon by PID: OSDs, mgr, mon, then any other process
        left in the namespace (OSDs started by the plugin); delete the namespace."""
        recs = self.records()
        for tier in ("osd.", "mgr", "mon"):
            pids = {r.pid: r.start for n, r in recs.items() if n.startswith(tier)}
            if pids:
                procs.terminate(pids, grace)
        if netns.exists(self.ns):
            for _ in range(3):
                stray = {p: procs.start_time(p) for p in netns.pids(self.ns)}
                if not stray:
                    break
                procs.terminate(stray, 2.0)
            netns.delete(self.ns)

    def cleanup(self) -> None:
        self.down()
        shutil.rmtree(self.base, ignore_errors=True)


# -- lab services -------------------------------------------------------------------------

def storage_enabled(spec: LabSpec) -> bool:
    return bool(spec.extra.get("storage"))


def lab_site(spec: LabSpec, node: NodeSpec) -> CephSite:
    return CephSite(node.name, os.path.join(spec.node_dir(node.name), "ceph"), node.address,
                    node.netns)


def lab_mons(spec: LabSpec) -> list[NodeSpec]:
    """The monitor nodes: the first coordinator, or every coordinator with
    ``extra["ceph_mons"] == "all"``."""
    coords = spec.coordinators or spec.nodes[:1]
    return coords if spec.extra.get("ceph_mons") == "all" else coords[:1]


def lab_fsid(spec: LabSpec) -> str:
    """The lab cluster's fsid, made once and kept in the state directory."""
    path = os.path.join(spec.state_dir, "ceph.fsid")
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        fsid = str(uuid.uuid4())
        with open(path, "w") as fh:
            fh.write(fsid + "\n")
        return fsid


def lab_keys_dir(spec: LabSpec) -> str:
    """Where the lab cluster's mon. and client.admin keyrings are made (once)."""
    return os.path.join(spec.state_dir, "ceph-keys")


def write_lab_conf(spec: LabSpec, node: NodeSpec) -> CephSite:
    """The node's ceph.conf and admin keyring (the cluster's keys are made on first use)."""
    site = lab_site(spec, node)
    make_keyrings(lab_keys_dir(spec))
    install_admin_keyring(site, lab_keys_dir(spec))
    mons = [(n.name, n.address) for n in lab_mons(spec)]
    hosts = len(spec.nodes)
    site.write_conf(lab_fsid(spec), mons, spec.subnet,
                    failure_domain="host" if hosts > 1 else "osd",
                    size=min(3, hosts), min_size=2 if hosts >= 3 else 1,
                    mon_failover=spec.extra.get("liveness") != "defaults")
    return site


def plugin_section(spec: LabSpec, node: NodeSpec) -> dict[str, Any]:
    """``plugins.storage_ceph`` of the node's pvcnoded.yaml ({} without storage)."""
    if not storage_enabled(spec):
        return {}
    return {"storage_ceph": {"ceph_conf": lab_site(spec, node).conf, "osd_launcher": "spawn",
                             "failure_domain": "host" if len(spec.nodes) > 1 else "osd",
                             "stats_interval": 5,
                             "benchmark": {"volume_size": "512M", "runtime": 4}}}


def lab_health_ok(lab: Lab) -> bool:
    return health_ok(lab_site(lab.spec, lab_mons(lab.spec)[0]))


class _CephService(Service):
    stop_grace = 10.0
    start_timeout = 120.0

    def placed(self, spec: LabSpec, node: NodeSpec) -> bool:
        return storage_enabled(spec) and self.runs_on(node)

    def env(self, spec: LabSpec, node: NodeSpec) -> dict[str, str]:
        env = super().env(spec, node)
        env["CEPH_CONF"] = lab_site(spec, node).conf
        return env


class CephMon(_CephService):
    """A monitor on the first coordinator (on every coordinator with ``ceph_mons: all``)."""

    name = "ceph-mon"

    def runs_on(self, node: NodeSpec) -> bool:
        return node.coordinator

    def placed(self, spec: LabSpec, node: NodeSpec) -> bool:
        return storage_enabled(spec) and node.name in {n.name for n in lab_mons(spec)}

    def prepare(self, spec: LabSpec, node: NodeSpec) -> None:
        site = write_lab_conf(spec, node)
        mon_mkfs(site, lab_fsid(spec), [(n.name, n.address) for n in lab_mons(spec)],
                 lab_keys_dir(spec))

    def argv(self, spec: LabSpec, node: NodeSpec) -> list[str]:
        return mon_argv(lab_site(spec, node))

    def ready(self, lab: Lab, node: NodeSpec, rec: procs.ProcRecord) -> bool:
        return mon_in_quorum(lab_site(lab.spec, node))


class CephMgr(_CephService):
    """The manager, beside the first monitor."""

    name = "ceph-mgr"

    def placed(self, spec: LabSpec, node: NodeSpec) -> bool:
        return storage_enabled(spec) and node.name == lab_mons(spec)[0].name

    def prepare(self, spec: LabSpec, node: NodeSpec) -> None:
        mgr_keyring(write_lab_conf(spec, node))

    def argv(self, spec: LabSpec, node: NodeSpec) -> list[str]:
        site = lab_site(spec, node)
        return ["ceph-mgr", "-f", "-c", site.conf, "-i", site.name]

    def ready(self, lab: Lab, node: NodeSpec, rec: procs.ProcRecord) -> bool:
        return mgr_available(lab_site(lab.spec, node))


class CephOsd(_CephService):
    """The node's OSD, made on its first start (``osd.img`` + ``osd-id`` in its ceph dir).

    ``settle`` waits for HEALTH_OK with every PG active+clean.
    """

    name = "ceph-osd"

    def osd_id(self, spec: LabSpec, node: NodeSpec) -> int | None:
        try:
            with open(os.path.join(lab_site(spec, node).dir, "osd-id")) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return None

    def prepare(self, spec: LabSpec, node: NodeSpec) -> None:
        site = write_lab_conf(spec, node)
        if self.osd_id(spec, node) is None:
            osd_id = create_osd(site, site.osd_device())
            with open(os.path.join(site.dir, "osd-id"), "w") as fh:
                fh.write(f"{osd_id}\n")

    def argv(self, spec: LabSpec, node: NodeSpec) -> list[str]:
        osd_id = self.osd_id(spec, node)
        return bluestore.osd_argv(lab_site(spec, node).conf, osd_id if osd_id is not None else 0)

    def ready(self, lab: Lab, node: NodeSpec, rec: procs.ProcRecord) -> bool:
        osd_id = self.osd_id(lab.spec, node)
        dump = lab_site(lab.spec, node).ceph("osd", "dump", timeout=5)
        return any(o["osd"] == osd_id and o["up"] for o in dump.get("osds", []))

    def explain(self, lab: Lab, node: NodeSpec) -> str:
        return f"osd.{self.osd_id(lab.spec, node)} is not up in the OSD map"

    def settle(self, lab: Lab, timeout: float) -> None:
        if not storage_enabled(lab.spec):
            return
        lab.progress("waiting for Ceph HEALTH_OK")
        try:
            wait_healthy(lab_site(lab.spec, lab_mons(lab.spec)[0]), timeout)
        except CephLabError as exc:
            from pvc_lab.errors import LabError

            raise LabError(str(exc)) from None

    def describe(self, lab: Lab, node: NodeSpec) -> dict[str, Any]:
        return {"osd": self.osd_id(lab.spec, node)}


def ceph_services() -> list[Service]:
    """The lab's Ceph services in start order (they run only in labs with ``storage``)."""
    return [CephMon(), CephMgr(), CephOsd()]
