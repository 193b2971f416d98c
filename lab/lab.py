"""``Lab``: bring a lab up and down, inspect it, and break it on purpose.

Tests use this class directly; ``pvc-lab`` is a thin click front-end over it. Every
method that changes the machine needs root and raises ``LabError`` with one clear line.
"""

from __future__ import annotations

import os
import shutil
import signal as signals
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pvc_lab import netns, procs
from pvc_lab import spec as specmod
from pvc_lab.errors import LabError, require_root
from pvc_lab.observe import Observer
from pvc_lab.services import Service, default_services, log_tail
from pvc_lab.spec import LabSpec, NodeSpec, SpecError
from pvc_lab.zookeeper import available as zk_available


class Lab(Observer):
    """One lab, by name; its spec is read from ``<state root>/<name>/lab.json``."""

    def __init__(self, name: str | None = None, state_root: str | None = None,
                 services: list[Service] | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        try:
            self.name = specmod.check_name(name or specmod.default_name())
        except SpecError as exc:
            raise LabError(str(exc)) from None
        self.state_dir = os.path.join(state_root or specmod.state_root(), self.name)
        self.services = services if services is not None else default_services()
        self.progress = progress or (lambda _msg: None)
        self._spec: LabSpec | None = None
        self._store = None
        self._store_lock = threading.Lock()

    # -- spec and names ---------------------------------------------------------------
    @property
    def spec_file(self) -> str:
        return os.path.join(self.state_dir, "lab.json")

    @property
    def spec(self) -> LabSpec:
        if self._spec is None:
            try:
                with open(self.spec_file) as fh:
                    self._spec = LabSpec.from_json(fh.read(), self.state_dir)
            except FileNotFoundError:
                raise LabError(f"no lab named {self.name} is up") from None
            except SpecError as exc:
                raise LabError(f"{self.spec_file}: {exc}") from None
        return self._spec

    def is_up(self) -> bool:
        return os.path.exists(self.spec_file) and netns.exists(specmod.switch_netns(self.name))

    def _require_up(self) -> LabSpec:
        require_root()
        if not self.is_up():
            if any(specmod.owns_netns(self.name, ns) for ns in netns.names()):
                raise LabError(f"lab {self.name} is broken (namespaces left without a state "
                               f"file); clean up with: pvc-lab --name {self.name} down")
            raise LabError(f"no lab named {self.name} is up")
        return self.spec

    def node(self, name: str) -> NodeSpec:
        try:
            return self.spec.node(name)
        except SpecError as exc:
            raise LabError(str(exc)) from None

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.spec.nodes]

    @property
    def coordinators(self) -> list[str]:
        return [n.name for n in self.spec.coordinators]

    @property
    def addresses(self) -> dict[str, str]:
        return {n.name: n.address for n in self.spec.nodes}

    @property
    def admin_netns(self) -> str:
        return self.spec.admin_netns

    @property
    def admin_address(self) -> str:
        return self.spec.admin_address

    @property
    def api_key(self) -> str:
        return self.spec.api_key

    @property
    def api_hosts(self) -> list[str]:
        return self.spec.api_hosts

    @property
    def zk_hosts(self) -> list[str]:
        return self.spec.zk_hosts

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise LabError(f"this lab has no service {name!r}")

    def env_vars(self) -> dict[str, str]:
        """What a ``pvc`` CLI in the admin namespace needs to talk to this lab."""
        s = self.spec
        return {"PVC_API_HOSTS": ",".join(s.api_hosts), "PVC_API_KEY": s.api_key,
                "PVC_LAB_NAME": s.name, "PVC_LAB_NETNS": s.admin_netns,
                "PVC_LAB_ZOOKEEPER": ",".join(s.zk_hosts)}

    # -- up / down ---------------------------------------------------------------------
    def up(self, nodes: int = 3, coordinators: int | None = None,
           subnet: str = specmod.DEFAULT_SUBNET, timeout: float = 120.0,
           options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create namespaces and network, start every service, wait until all are ready and
        a primary exists; returns ``status()``.

        ``options`` are kept in the spec's ``extra`` and switch optional services on, e.g.
        ``{"storage": True}`` for Ceph (``{"ceph_mons": "all"}``: a monitor per coordinator).
        """
        require_root()
        problem = zk_available()
        if problem:
            raise LabError(problem)
        if self.is_up():
            raise LabError(f"lab {self.name} is already up (run: pvc-lab --name {self.name} down)")
        try:
            new = specmod.build(self.name, nodes, coordinators, subnet, self.state_dir)
        except SpecError as exc:
            raise LabError(str(exc)) from None
        new.extra.update(options or {})
        for svc in self.services:
            placed = [n for n in new.nodes if svc.placed(new, n)]
            if not placed:
                continue
            missing = [a for a in svc.argv(new, placed[0])[:1]
                       if not shutil.which(a, path=svc.env(new, new.nodes[0])["PATH"])]
            if missing:
                raise LabError(f"{svc.name}: {missing[0]} not found (run scripts/bootstrap.sh)")
        self.down(quiet=True)   # leftovers of a crashed lab of the same name
        shutil.rmtree(self.state_dir, ignore_errors=True)
        os.makedirs(self.state_dir, mode=0o711)    # traversable: FRR runs as user frr
        os.chmod(self.state_dir, 0o711)             # (the secrets in it are 0600 files)
        new.created = time.time()
        fd = os.open(self.spec_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new.to_json())
        self._spec = None
        self.progress(f"lab {self.name}: {len(new.nodes)} nodes ({len(new.coordinators)} "
                      f"coordinators), state in {self.state_dir}")
        try:
            self._make_network(new)
        except netns.NetnsError as exc:
            self.down(quiet=True)
            raise LabError(f"network setup failed: {exc}") from None
        deadline = time.monotonic() + timeout
        for svc in self.services:
            targets = [n for n in new.nodes if svc.placed(new, n)]
            if not targets:
                continue
            self.progress(f"starting {svc.name} on {', '.join(n.name for n in targets)}")
            self._start_and_wait(svc, targets, deadline)
        if new.coordinators and any(s.name == "pvcnoded" for s in self.services):
            self.wait_for(lambda: self.primary() is not None, deadline - time.monotonic(),
                          "a primary coordinator to be elected")
        for svc in self.services:
            svc.settle(self, max(1.0, deadline - time.monotonic()))
        return self.status()

    def _make_network(self, s: LabSpec) -> None:
        self.progress(f"creating namespace {s.switch_netns} (bridge {specmod.BRIDGE}, "
                      f"admin address {s.admin_address})")
        netns.add(s.switch_netns)
        netns.add_bridge(s.switch_netns, specmod.BRIDGE, s.admin_address, s.prefixlen)
        for n in s.nodes:
            netns.add(n.netns)
            netns.add_port(s.switch_netns, specmod.BRIDGE, n.port, n.netns, n.address,
                           s.prefixlen, specmod.NODE_IFNAME)
        for vlan in specmod.VLANS:
            netns.add_bridge(s.switch_netns, f"vlan{vlan}", None)
            for n in s.nodes:
                netns.add_port(s.switch_netns, f"vlan{vlan}", f"{n.name}v{vlan}", n.netns,
                               None, ifname=f"{specmod.NODE_IFNAME}.{vlan}")
        self.progress("created " + ", ".join(f"{n.netns} ({n.address})" for n in s.nodes)
                      + f"; VLAN stand-ins {', '.join(map(str, specmod.VLANS))}")

    def down(self, grace: float = 5.0, purge: bool = False, quiet: bool = False) -> bool:
        """Stop every process and remove every namespace of this lab (also after a crash).

        Services stop in reverse order (SIGTERM, then SIGKILL after ``grace`` seconds),
        then anything else left in the lab's namespaces. Logs stay in the state directory
        unless ``purge``. Returns False if there was nothing to clean up.
        """
        require_root()
        self.close()
        owned = [ns for ns in netns.names() if specmod.owns_netns(self.name, ns)]
        records = self._pid_files()
        if not owned and not records and not os.path.exists(self.spec_file):
            if purge:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            return False
        order = [s.name for s in reversed(self.services)]
        tiers: dict[str, dict[int, int]] = {}
        for path, rec in records:
            svc_name = os.path.basename(path)[:-4]
            tier = svc_name if svc_name in order else "other"
            if procs.alive(rec.pid, rec.start):
                tiers.setdefault(tier, {})[rec.pid] = rec.start
        for tier in order + ["other"]:
            pids = tiers.get(tier)
            if pids:
                if not quiet:
                    self.progress(f"stopping {tier} ({len(pids)} processes)")
                procs.terminate(pids, grace)
        for _ in range(3):     # anything else in the namespaces (children, shells, strays)
            stray = {p: procs.start_time(p) for ns in owned for p in netns.pids(ns)}
            if not stray:
                break
            if not quiet:
                self.progress(f"stopping {len(stray)} other processes in the namespaces")
            procs.terminate(stray, min(grace, 2.0))
        for ns in sorted(owned, key=lambda n: n.endswith("-sw")):
            netns.delete(ns)
        if owned and not quiet:
            self.progress(f"removed namespaces {', '.join(sorted(owned))}")
        for path, _ in records:
            _unlink(path)
        _unlink(self.spec_file)
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self._spec = None
        return True

    def _pid_files(self) -> list[tuple[str, procs.ProcRecord]]:
        found = []
        if os.path.isdir(self.state_dir):
            for node in sorted(os.listdir(self.state_dir)):
                d = os.path.join(self.state_dir, node)
                if not os.path.isdir(d):
                    continue
                for f in sorted(os.listdir(d)):
                    if f.endswith(".pid"):
                        rec = procs.read_record(os.path.join(d, f))
                        if rec:
                            found.append((os.path.join(d, f), rec))
        return found

    # -- services ----------------------------------------------------------------------
    def _start_and_wait(self, svc: Service, targets: list[NodeSpec], deadline: float,
                        healthy: bool = False) -> None:
        """Start ``svc`` where it is not running; wait until ready (or ``healthy``) on all."""
        t0 = time.monotonic()
        pending = {}
        for n in targets:
            try:
                rec, _new = svc.start(self.spec, n)
            except procs.ProcError as exc:
                raise LabError(f"{n.name}: {exc}") from None
            pending[n.name] = (n, rec)
        deadline = min(deadline, t0 + svc.start_timeout)
        check = svc.healthy if healthy else svc.ready
        while pending:
            for name, (n, rec) in list(pending.items()):
                if not procs.alive(rec.pid, rec.start):
                    now = svc.record(self.spec, n)   # restarted meanwhile by someone else?
                    if now is not None and now.pid != rec.pid and procs.alive(now.pid,
                                                                              now.start):
                        pending[name] = (n, now)     # (pvcnoded's libvirtd restart, say)
                        continue
                    log = svc.log_file(self.spec, n)
                    tail = log_tail(log) or "no output"
                    raise LabError(f"{name}: {svc.name} exited; see {log} ({tail})")
                try:
                    ok = check(self, n, rec)
                except Exception:   # not reachable yet
                    ok = False
                if ok:
                    del pending[name]
                    if not healthy:
                        self.progress(f"  {name}: {svc.name} ready (pid {rec.pid})")
            if pending and time.monotonic() >= deadline:
                n, _ = next(iter(pending.values()))
                try:
                    why = svc.explain(self, n)
                except Exception as exc:
                    why = str(exc)
                raise LabError(f"{n.name}: {svc.name} not {'healthy' if healthy else 'ready'} "
                               f"after {time.monotonic() - t0:.0f} s ({why}); "
                               f"see {svc.log_file(self.spec, n)}")
            if pending:
                time.sleep(0.2)

    def _node_services(self, node: NodeSpec, only: str | None = None) -> list[Service]:
        return [s for s in self.services
                if s.placed(self.spec, node) and (only is None or s.name == only)]

    def start(self, node: str, wait: bool = True, timeout: float = 90.0,
              only: str | None = None) -> None:
        """Start the node's services that are not running (only ``only`` if given)."""
        s = self._require_up()
        n = self.node(node)
        svcs = self._node_services(n, only)
        if only and not svcs:
            raise LabError(f"{node} does not run {only}")
        deadline = time.monotonic() + timeout
        for svc in svcs:
            if wait:
                self._start_and_wait(svc, [n], deadline)
            else:
                try:
                    svc.start(s, n)
                except procs.ProcError as exc:
                    raise LabError(f"{node}: {exc}") from None

    def stop_service(self, node: str, service: str, sig: int | str = signals.SIGKILL,
                     wait: float = 10.0) -> int | None:
        """Signal one service on a node and wait for it to end; returns its PID (None if it
        was not running)."""
        s = self._require_up()
        n = self.node(node)
        svcs = self._node_services(n, service)
        if not svcs:
            raise LabError(f"{node} does not run {service}")
        sig = _signal(sig)
        try:
            rec = svcs[0].signal(s, n, sig, wait)
        except procs.ProcError as exc:
            raise LabError(str(exc)) from None
        return rec.pid if rec else None

    def restart_service(self, node: str, service: str, timeout: float = 90.0) -> int | None:
        """SIGKILL one service of a node (a stopped process is continued first, so a hung one
        dies too), then start it and wait until it is ready; returns the PID killed."""
        pid = None
        rec = self.service(service).record(self._require_up(), self.node(node))
        if rec is not None:
            procs.send(rec.pid, signals.SIGCONT)
            pid = self.stop_service(node, service, signals.SIGKILL)
        self.start(node, only=service, timeout=timeout)
        return pid

    def kill(self, node: str) -> list[int]:
        """SIGKILL every process in the node's namespace (like pulling the plug)."""
        s = self._require_up()
        n = self.node(node)
        targets = {p: procs.start_time(p) for p in netns.pids(n.netns)}
        for svc in self._node_services(n):
            rec = svc.record(s, n)
            if rec:
                targets[rec.pid] = rec.start
        for pid in targets:
            procs.send(pid, signals.SIGKILL)
        left = procs.wait_gone(targets, 10)
        if left:
            raise LabError(f"{node}: processes {left} survive SIGKILL")
        return sorted(targets)

    def zk_kill(self, node: str, sig: int | str = signals.SIGKILL) -> int | None:
        return self.stop_service(node, "zookeeper", sig)

    def zk_start(self, node: str, wait: bool = True, timeout: float = 90.0) -> None:
        self.start(node, wait=wait, timeout=timeout, only="zookeeper")

    def daemon_kill(self, node: str, sig: int | str = signals.SIGKILL) -> int | None:
        return self.stop_service(node, "pvcnoded", sig)

    def daemon_start(self, node: str, wait: bool = True, timeout: float = 60.0) -> None:
        self.start(node, wait=wait, timeout=timeout, only="pvcnoded")

    # -- network -----------------------------------------------------------------------
    def partition(self, node: str) -> None:
        """Cut the node off the bridge (its switch port goes down); processes keep running."""
        s = self._require_up()
        netns.set_link(s.switch_netns, self.node(node).port, False)

    def heal(self, node: str) -> None:
        s = self._require_up()
        netns.set_link(s.switch_netns, self.node(node).port, True)

    def partitioned(self, node: str) -> bool:
        return netns.link_is_up(self.spec.switch_netns, self.node(node).port) is False

    # -- commands in namespaces -------------------------------------------------------
    def exec(self, node: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run a command in the node's namespace (``subprocess.run`` keyword arguments)."""
        self._require_up()
        return subprocess.run(["ip", "netns", "exec", self.node(node).netns, *argv], **kwargs)

    def admin_exec(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run a command in the admin namespace with ``env_vars()`` set."""
        s = self._require_up()
        env = dict(kwargs.pop("env", None) or os.environ)
        env.update(self.env_vars())
        # the project's tools (pvc, pvc-lab) first, whether or not the venv is activated
        env["PATH"] = os.path.dirname(sys.executable) + ":" + env.get("PATH", "/usr/bin:/bin")
        return subprocess.run(["ip", "netns", "exec", s.admin_netns, *argv], env=env, **kwargs)

    def restore(self, timeout: float = 90.0) -> None:
        """Heal every node and start every stopped service; wait until all are ready."""
        s = self._require_up()
        for n in s.nodes:
            if self.partitioned(n.name):
                self.heal(n.name)
        deadline = time.monotonic() + timeout
        for svc in self.services:
            targets = [n for n in s.nodes if svc.placed(s, n)]
            if targets:
                self._start_and_wait(svc, targets, deadline, healthy=True)
        if s.coordinators and any(v.name == "pvcnoded" for v in self.services):
            self.wait_for(lambda: self.primary() is not None, deadline - time.monotonic(),
                          "a primary coordinator")
        for svc in self.services:
            svc.settle(self, max(1.0, deadline - time.monotonic()))

def _signal(sig: int | str) -> int:
    if isinstance(sig, int):
        return sig
    name = sig.upper()
    try:
        return int(getattr(signals, name if name.startswith("SIG") else "SIG" + name))
    except AttributeError:
        raise LabError(f"unknown signal {sig!r}") from None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
