"""``pvc-lab``: a real multi-node PVC cluster on this machine, in network namespaces."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from typing import Any

import click

from pvc_lab import netns, procs
from pvc_lab import spec as specmod
from pvc_lab.lab import Lab, LabError, require_root
from pvc_lab.pvcnoded import KEEPALIVE_INTERVAL

ERRORS = (LabError, netns.NetnsError, procs.ProcError, specmod.SpecError)

EPILOG = """\b
Examples:
  pvc-lab up                      3 coordinators hv1..hv3
  pvc-lab up --nodes 4            3 coordinators + 1 client (hv4)
  pvc-lab up --storage            ... with Ceph (mon+mgr on hv1, an OSD per node)
  pvc-lab up --no-bmc             ... without the simulated BMCs (no fencing by power off)
  pvc-lab status                  nodes, processes, ZooKeeper modes, daemon states
  pvc-lab kill hv1                pull hv1's plug (SIGKILL all its processes)
  pvc-lab start hv1               start hv1's services again
  pvc-lab partition hv2           cut hv2 off the network; pvc-lab heal hv2
  pvc-lab daemon-kill hv1 --signal TERM
  pvc-lab admin pvc node list     run the pvc CLI from the admin namespace
  eval "$(pvc-lab env)"           PVC_API_HOSTS/PVC_API_KEY for the lab
  pvc-lab --name other up         a second lab beside the first
  pvc-lab down                    stop and remove everything (also after a crash)
"""


class _Group(click.Group):
    """Turns lab errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ERRORS as exc:
            click.echo(f"pvc-lab: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("pvc-lab: interrupted", err=True)
            ctx.exit(130)


def _progress(msg: str) -> None:
    click.echo(msg)


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--name", "-n", envvar=specmod.NAME_ENV, default=specmod.DEFAULT_NAME,
              show_default=True, help=f"Lab name (env {specmod.NAME_ENV}); namespaces are "
              "NAME-sw and NAME-hv1..")
@click.pass_context
def main(ctx: click.Context, name: str) -> None:
    """Bring up a real PVC cluster on this machine: every node is a network namespace on a
    private bridge, running ZooKeeper (coordinators) and pvcnoded. Needs root."""
    ctx.obj = Lab(name=name, progress=_progress)
    ctx.call_on_close(ctx.obj.close)


node_arg = click.argument("node")


@main.command()
@click.option("--nodes", default=3, show_default=True, help="Number of nodes hv1..hvN.")
@click.option("--coordinators", type=int, default=None,
              help="Coordinators among them (the first C nodes) [default: min(N,3)].")
@click.option("--subnet", default=specmod.DEFAULT_SUBNET, show_default=True,
              help="Lab subnet (exists only inside the lab's namespaces).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for readiness.")
@click.option("--storage", is_flag=True,
              help="Also run Ceph: a monitor and manager on hv1, one OSD per node (file-backed "
              "bluestore), until HEALTH_OK.")
@click.option("--bmc/--no-bmc", default=True, show_default=True,
              help="A simulated BMC per node (IPMI over LAN at <subnet>.(100+I)): power off "
              "kills the node, power on starts it; the fencing plugin uses them.")
@click.option("--ceph-mons", type=click.Choice(["first", "all"]), default="first",
              show_default=True, help="With --storage: a monitor on the first or on every "
              "coordinator.")
@click.pass_obj
def up(lab: Lab, nodes: int, coordinators: int | None, subnet: str, timeout: float,
       storage: bool, bmc: bool, ceph_mons: str) -> None:
    """Create the lab and wait until every node runs and a primary is elected."""
    t0 = time.monotonic()
    options = {"storage": True, "ceph_mons": ceph_mons} if storage else {}
    options["bmc"] = bmc
    st = lab.up(nodes=nodes, coordinators=coordinators, subnet=subnet,
                timeout=timeout + (120 if storage else 0), options=options)
    click.echo(f"lab {lab.name} up in {time.monotonic() - t0:.1f} s")
    _print_status(st)


@main.command()
@click.option("--fast", is_flag=True, help="SIGKILL at once instead of SIGTERM first.")
@click.option("--purge", is_flag=True, help="Also remove the state directory (logs).")
@click.pass_obj
def down(lab: Lab, fast: bool, purge: bool) -> None:
    """Stop every process and remove every namespace of the lab. Idempotent."""
    if lab.down(grace=0 if fast else 5.0, purge=purge):
        click.echo(f"lab {lab.name} is down")
    else:
        click.echo(f"lab {lab.name}: nothing to clean up")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(lab: Lab, as_json: bool) -> None:
    """Nodes, addresses, processes, ZooKeeper modes, daemon and coordinator states."""
    st = lab.status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        _print_status(st)


@main.command("list")
def list_labs() -> None:
    """Labs with a state directory on this machine."""
    root = specmod.state_root()
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            lab = Lab(name=name)
        except LabError:
            continue
        click.echo(f"{name}\t{'up' if lab.is_up() else 'down'}\t{lab.state_dir}")


@main.command()
@node_arg
@click.pass_obj
def kill(lab: Lab, node: str) -> None:
    """SIGKILL every process in NODE's namespace (like pulling the plug)."""
    pids = lab.kill(node)
    click.echo(f"{node}: killed {len(pids)} processes {' '.join(map(str, pids))}".rstrip())


@main.command()
@node_arg
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until ready.")
@click.pass_obj
def start(lab: Lab, node: str, wait: bool) -> None:
    """Start NODE's services that are not running (ZooKeeper on coordinators, pvcnoded)."""
    lab.start(node, wait=wait)
    click.echo(f"{node}: started")


@main.command()
@node_arg
@click.pass_obj
def partition(lab: Lab, node: str) -> None:
    """Cut NODE off the network (its bridge port goes down); its processes keep running."""
    lab.partition(node)
    click.echo(f"{node}: partitioned")


@main.command()
@node_arg
@click.pass_obj
def heal(lab: Lab, node: str) -> None:
    """Reconnect a partitioned NODE."""
    lab.heal(node)
    click.echo(f"{node}: healed")


_PASS = {"ignore_unknown_options": True, "allow_interspersed_args": False}


@main.command("exec", context_settings=_PASS)
@node_arg
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_(lab: Lab, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside NODE's namespace, e.g. ``pvc-lab exec hv1 ip addr``."""
    sys.exit(lab.exec(node, list(command)).returncode)


@main.command(context_settings=_PASS)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def admin(lab: Lab, command: tuple[str, ...]) -> None:
    """Run COMMAND in the admin namespace with the lab's env, e.g. ``pvc-lab admin pvc ...``."""
    sys.exit(lab.admin_exec(list(command)).returncode)


@main.command()
@click.pass_obj
def shell(lab: Lab) -> None:
    """An interactive shell in the admin namespace, with the lab's env set."""
    require_root()
    if not lab.is_up():
        raise LabError(f"no lab named {lab.name} is up")
    env = dict(os.environ, **lab.env_vars(), PS1=f"(lab {lab.name}) \\w\\$ ")
    sh = os.environ.get("SHELL") or "/bin/bash"
    os.execvpe("ip", ["ip", "netns", "exec", lab.admin_netns, sh], env)


@main.command()
@click.pass_obj
def env(lab: Lab) -> None:
    """Shell lines for `eval`: how an administrator's `pvc` reaches the lab."""
    require_root()
    if not lab.is_up():
        raise LabError(f"no lab named {lab.name} is up")
    click.echo(f"# lab {lab.name}: the API listens only inside the lab; run pvc from the admin "
               f"namespace: pvc-lab admin pvc ... | pvc-lab shell | ip netns exec "
               f"{lab.admin_netns} pvc ...")
    for k, v in lab.env_vars().items():
        click.echo(f"export {k}={shlex.quote(v)}")


@main.command("vm-xml")
@click.argument("vm_name")
@click.option("--memory", default=128, show_default=True, help="Guest memory in MiB.")
@click.option("--disk", help="A raw disk image (on the lab's shared storage) to attach.")
@click.option("--nic", "nics", multiple=True, metavar="BRIDGE",
              help="A virtio NIC on this bridge (a network's vmbr<vni>); repeat for more.")
@click.option("--dhcp", is_flag=True, help="The guest asks for its address by DHCP (eth0).")
@click.option("--ip", "address", metavar="A.B.C.D/NN", help="A static address for eth0.")
@click.option("--ping", metavar="A.B.C.D",
              help="The guest pings this address every 0.2 s (replies on its console).")
@click.pass_obj
def vm_xml(lab: Lab, vm_name: str, memory: int, disk: str | None, nics: tuple[str, ...],
           dhcp: bool, address: str | None, ping: str | None) -> None:
    """Print a libvirt domain for the lab's tiny guest (its serial console goes to the lab's
    shared directory), e.g. ``pvc-lab vm-xml demo1 > demo1.xml; pvc-lab admin pvc vm define
    demo1.xml``, or with a NIC on network 100 taking its address by DHCP:
    ``pvc-lab vm-xml demo1 --nic vmbr100 --dhcp``."""
    import random
    import uuid

    from pvc_lab.guest import GuestError, build, domain_xml
    from pvc_lab.libvirt import console_dir

    if not lab.is_up():
        raise LabError(f"no lab named {lab.name} is up")
    try:
        image = build()
    except GuestError as exc:
        raise LabError(str(exc)) from None
    log = os.path.join(console_dir(lab.spec), f"{vm_name}.log")
    words = (["dhcp=1"] if dhcp else []) + ([f"guestip={address}"] if address else []) + \
        ([f"pingtarget={ping}"] if ping else [])
    macs = [(bridge, "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3)))
            for bridge in nics]
    click.echo(domain_xml(vm_name, image, log, memory_mib=memory, uuid=str(uuid.uuid4()),
                          disk=disk, cmdline=" ".join(words), nics=tuple(macs)), nl=False)


@main.command("zk-leader")
@click.pass_obj
def zk_leader(lab: Lab) -> None:
    """Print the node whose ZooKeeper server leads the ensemble."""
    require_root()
    if not lab.is_up():
        raise LabError(f"no lab named {lab.name} is up")
    leader = lab.zk_leader()
    if leader is None:
        raise LabError("no ZooKeeper leader (no quorum?)")
    click.echo(f"{leader} {lab.addresses[leader]}")


@main.command("zk-kill")
@node_arg
@click.option("--signal", "sig", default="KILL", show_default=True,
              type=click.Choice(["TERM", "KILL"], case_sensitive=False))
@click.pass_obj
def zk_kill(lab: Lab, node: str, sig: str) -> None:
    """Stop only NODE's ZooKeeper server."""
    pid = lab.zk_kill(node, sig)
    click.echo(f"{node}: zookeeper {f'pid {pid} stopped' if pid else 'was not running'}")


@main.command("zk-start")
@node_arg
@click.pass_obj
def zk_start(lab: Lab, node: str) -> None:
    """Start only NODE's ZooKeeper server and wait until it serves."""
    lab.zk_start(node)
    click.echo(f"{node}: zookeeper {lab.zk_mode(node)}")


@main.command("daemon-kill")
@node_arg
@click.option("--signal", "sig", default="KILL", show_default=True,
              type=click.Choice(["TERM", "KILL"], case_sensitive=False))
@click.pass_obj
def daemon_kill(lab: Lab, node: str, sig: str) -> None:
    """Stop only NODE's pvcnoded (SIGKILL = crash, SIGTERM = graceful stop)."""
    pid = lab.daemon_kill(node, sig)
    click.echo(f"{node}: pvcnoded {f'pid {pid} stopped' if pid else 'was not running'}")


@main.command("daemon-start")
@node_arg
@click.pass_obj
def daemon_start(lab: Lab, node: str) -> None:
    """Start only NODE's pvcnoded and wait until it reports daemon_state run."""
    lab.daemon_start(node)
    click.echo(f"{node}: pvcnoded {lab.node_state(node).get('daemon_state')}")


@main.command("service-restart")
@node_arg
@click.argument("service")
@click.pass_obj
def service_restart(lab: Lab, node: str, service: str) -> None:
    """Restart one SERVICE of NODE (e.g. libvirtd), hung or not: SIGKILL, then start it and
    wait until it is ready. What pvcnoded's libvirtd_restart_command runs in the lab."""
    pid = lab.restart_service(node, service)
    click.echo(f"{node}: {service} {f'pid {pid} killed and ' if pid else ''}started again")


def _proc(info: dict[str, Any] | None, extra: str = "") -> str:
    if info is None:
        return "-"
    if not info["running"]:
        return "stopped"
    return f"{extra + ' ' if extra else ''}pid {info['pid']}"


def _age(age: float | None) -> str:
    if age is None:
        return "-"
    return f"{age:.1f}s ago" + (" (stale)" if age > 3 * KEEPALIVE_INTERVAL else "")


def _print_status(st: dict[str, Any]) -> None:
    click.echo(f"lab {st['name']}: admin namespace {st['admin_netns']} "
               f"({st['admin_address']}), state {st['state_dir']}")
    zk = st["zookeeper"]
    click.echo(f"primary: {st['primary'] or '-'}   zookeeper leader: {zk['leader'] or '-'}"
               + (f"   ({zk['error']})" if zk.get("error") else ""))
    rows = [("NODE", "ADDRESS", "ROLE", "LINK", "ZOOKEEPER", "PVCNODED", "DAEMON",
             "COORDINATOR", "KEEPALIVE")]
    for n in st["nodes"]:
        svc = n["services"]
        zk_info = svc.get("zookeeper")
        age = n["keepalive_age"]
        rows.append((n["name"], n["address"], "coordinator" if n["coordinator"] else "client",
                     n["link"], _proc(zk_info, (zk_info or {}).get("mode") or "not-serving"),
                     _proc(svc.get("pvcnoded")), n["daemon_state"] or "-",
                     n["coordinator_state"] or "-", _age(age)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
