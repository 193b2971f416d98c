"""`pvc storage`: Ceph status, benchmark and OSDs (entry point ``storage`` in ``pvc.cli``).

Pools, volumes and snapshots are in ``cli_volumes``. Only click and pvc_cli helpers are
imported at the top, so `pvc --help` stays fast.
"""

from __future__ import annotations

from typing import Any

import click

from pvc_cli.sdk import (
    Painter,
    emit_json,
    format_option,
    get_settings,
    human_kib,
    render_table,
    report_task,
    show_list,
    wait_task,
)

S = "/storage/ceph"
WAIT = click.option("--wait", is_flag=True, help="Wait for the task and show progress.")
YES = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")


def client() -> Any:
    return get_settings().client()


def echo_message(data: Any) -> None:
    msg = data.get("message") if isinstance(data, dict) else None
    click.echo(msg if msg else data)


def task_result(data: dict[str, Any], wait: bool) -> None:
    """Print the task reply, or follow the task to its end with ``--wait``."""
    task_id = str(data.get("task_id", ""))
    if not wait:
        click.echo(f"Task ID: {task_id} assigned to node {data.get('run_on', '?')}")
        return
    report_task(task_id, wait_task(client(), task_id))


def get_list(path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    resp = client().get(path, params or {}, accept=(404,))
    return resp.data if resp.status == 200 and isinstance(resp.data, list) else []


@click.group()
def storage() -> None:
    """Manage Ceph storage: status, OSDs, pools, volumes, snapshots, benchmarks.

    \b
    Examples:
      pvc storage status
      pvc storage pool add vms 64 --replcfg copies=3,mincopies=2
      pvc storage volume add vms disk0 20G
      pvc storage volume upload vms disk0 image.qcow2 -i qcow2
      pvc storage volume snapshot add vms disk0 before-upgrade
      pvc storage osd out 2
    """


def _cephtext(kind: str, fmt: str) -> None:
    data = client().get(f"{S}/{kind}").data
    if fmt != "pretty":
        emit_json(data, fmt)
        return
    click.echo(f"Primary node: {data.get('primary_node', '-')}\n")
    click.echo(data.get("ceph_data") or "(no report yet)")


@storage.command()
@format_option
def status(fmt: str) -> None:
    """Show `ceph status` as last reported by the primary. Reads GET /storage/ceph/status.

    \b
    Examples:
      pvc storage status
      pvc storage status -f json
    """
    _cephtext("status", fmt)


@storage.command()
@format_option
def util(fmt: str) -> None:
    """Show `ceph df` as last reported by the primary. Reads GET /storage/ceph/utilization.

    \b
    Example:
      pvc storage util
    """
    _cephtext("utilization", fmt)


# --- benchmark ------------------------------------------------------------------------------

@storage.group()
def benchmark() -> None:
    """Run and show storage benchmarks (fio through librbd on a temporary volume).

    \b
    Examples:
      pvc storage benchmark run vms --wait
      pvc storage benchmark list
    """


@benchmark.command("run")
@click.argument("pool")
@click.option("-n", "--name", help="Job name (default: <time>_<primary>).")
@WAIT
def benchmark_run(pool: str, name: str | None, wait: bool) -> None:
    """Benchmark POOL (eight tests; takes minutes). POST /storage/ceph/benchmark.

    \b
    Examples:
      pvc storage benchmark run vms --wait
      pvc storage benchmark run vms --name before-upgrade
    """
    data = client().post(f"{S}/benchmark", {"pool": pool, "name": name}).data
    task_result(data, wait)


def _bench_rows(result: Any) -> list[list[str]]:
    rows = []
    for test, doc in (result or {}).items():
        job = ((doc or {}).get("jobs") or [{}])[0]
        side = job.get("write" if "write" in test else "read") or {}
        rows.append([test, f"{side.get('bw_bytes', 0) / 2**20:.1f} MiB/s",
                     f"{side.get('iops', 0):.0f}"])
    return rows


@benchmark.command("list")
@click.argument("job", required=False)
@format_option
def benchmark_list(job: str | None, fmt: str) -> None:
    """List benchmarks, newest first. Reads GET /storage/ceph/benchmark.

    \b
    Examples:
      pvc storage benchmark list
      pvc storage benchmark list before-upgrade -f json
    """
    found = get_list(f"{S}/benchmark", {"job": job})
    show_list(get_settings().painter, found, fmt, "No benchmark found.", _bench_table)


def _bench_table(p: Painter, found: list[dict[str, Any]]) -> str:
    rows = []
    for b in found:
        res = b.get("benchmark_result")
        first = _bench_rows(res)[:2] if isinstance(res, dict) else []
        rows.append([str(b.get("id")), b.get("job", ""),
                     res if isinstance(res, str) else "done",
                     " ".join(f"{r[0]}={r[1]}" for r in first)])
    return render_table(p, ["ID", "JOB", "RESULT", "SEQUENTIAL"], rows)


@benchmark.command("info")
@click.argument("job")
@format_option
def benchmark_info(job: str, fmt: str) -> None:
    """Show the figures of one benchmark. Reads GET /storage/ceph/benchmark?job=JOB.

    \b
    Example:
      pvc storage benchmark info before-upgrade
    """
    found = get_list(f"{S}/benchmark", {"job": job})
    if fmt != "pretty":
        emit_json(found[0] if found else {}, fmt)
        return
    if not found:
        click.echo("No benchmark found.")
        return
    res = found[0].get("benchmark_result")
    if not isinstance(res, dict):
        click.echo(f"{job}: {res}")
        return
    p = get_settings().painter
    p.echo(render_table(p, ["TEST", "BANDWIDTH", "IOPS"], _bench_rows(res), right=(1, 2)))


# --- OSDs -----------------------------------------------------------------------------------

@storage.group()
def osd() -> None:
    """Manage OSDs: add on a node's device, replace, refresh, remove, in/out, flags, list.

    \b
    Examples:
      pvc storage osd list
      pvc storage osd add hv1 /dev/sdb --wait
      pvc storage osd replace 3 /dev/sdd --wait
      pvc storage osd out 2
    """


DB_RATIO = click.option("-r", "--ext-db-ratio", type=float, default=None,
                        help="Put the DB on an osd-db LV of this fraction of the device's size.")
DB_SIZE = click.option("-s", "--ext-db-size", default=None,
                       help="Put the DB on an osd-db LV of this size, e.g. 20G.")


@osd.command("create-db-vg")
@click.argument("node")
@click.argument("device")
@WAIT
def osd_create_db_vg(node: str, device: str, wait: bool) -> None:
    """Create the OSD DB volume group osd-db on DEVICE of NODE. POST /storage/ceph/osddb.

    OSDs added or replaced later with --ext-db-ratio or --ext-db-size keep their bluestore
    DB on a logical volume of this group (put it on a fast device).

    \b
    Example:
      pvc storage osd create-db-vg hv1 /dev/nvme0n1 --wait
    """
    data = client().post(f"{S}/osddb", {"node": node, "device": device}).data
    task_result(data, wait)


@osd.command("add")
@click.argument("node")
@click.argument("device")
@click.option("-w", "--weight", type=float, default=1.0, show_default=True,
              help="CRUSH weight.")
@DB_RATIO
@DB_SIZE
@WAIT
def osd_add(node: str, device: str, weight: float, ext_db_ratio: float | None,
            ext_db_size: str | None, wait: bool) -> None:
    """Create an OSD on DEVICE of NODE (a task on NODE). POST /storage/ceph/osd.

    \b
    Examples:
      pvc storage osd add hv1 /dev/sdb --wait
      pvc storage osd add hv2 /dev/nvme0n1 -w 1.8
      pvc storage osd add hv1 /dev/sdc -s 20G
    """
    data = client().post(f"{S}/osd", {"node": node, "device": device, "weight": weight,
                                      "ext_db_ratio": ext_db_ratio,
                                      "ext_db_size": ext_db_size}).data
    task_result(data, wait)


@osd.command("replace")
@click.argument("osd_id")
@click.argument("new_device")
@click.option("-o", "--old-device", default=None,
              help="The old device to wipe (default: the one recorded for the OSD).")
@click.option("-w", "--weight", type=float, default=None,
              help="New CRUSH weight (default: keep the current one).")
@DB_RATIO
@DB_SIZE
@click.option("-f", "--force", is_flag=True, help="Do not wait until it is safe to destroy.")
@YES
@WAIT
def osd_replace(osd_id: str, new_device: str, old_device: str | None, weight: float | None,
                ext_db_ratio: float | None, ext_db_size: str | None, force: bool, yes: bool,
                wait: bool) -> None:
    """Replace OSD_ID's device with NEW_DEVICE. POST /storage/ceph/osd/ID.

    The OSD keeps its id and CRUSH position: it is marked out, destroyed once safe, its old
    device wiped and a new bluestore made on NEW_DEVICE; Ceph then refills it.

    \b
    Examples:
      pvc storage osd replace 3 /dev/sdd --wait
      pvc storage osd replace 3 /dev/sdd -o /dev/sdb -w 1.8 --yes
    """
    if not yes:
        click.confirm(f"Replace OSD {osd_id} with device {new_device}? Its data on the old "
                      "device is destroyed", abort=True)
    params = {"new_device": new_device, "old_device": old_device, "weight": weight,
              "ext_db_ratio": ext_db_ratio, "ext_db_size": ext_db_size,
              "yes-i-really-mean-it": "yes"}
    if force:
        params["force"] = True
    task_result(client().post(f"{S}/osd/{osd_id}", params).data, wait)


@osd.command("refresh")
@click.argument("osd_id")
@click.argument("device")
@WAIT
def osd_refresh(osd_id: str, device: str, wait: bool) -> None:
    """Re-import OSD_ID from DEVICE after a reinstall. PUT /storage/ceph/osd/ID.

    The device's bluestore label must name this OSD and cluster; the OSD's data directory
    is rebuilt from it and the daemon started.

    \b
    Example:
      pvc storage osd refresh 3 /dev/sdb --wait
    """
    task_result(client().request("PUT", f"{S}/osd/{osd_id}", {"device": device}).data, wait)


@osd.command("remove")
@click.argument("osd_id")
@click.option("-f", "--force", is_flag=True, help="Do not wait until it is safe to destroy.")
@YES
@WAIT
def osd_remove(osd_id: str, force: bool, yes: bool, wait: bool) -> None:
    """Remove OSD OSD_ID: out, wait until safe, stop, purge. DELETE /storage/ceph/osd/ID.

    \b
    Examples:
      pvc storage osd remove 3 --wait
      pvc storage osd remove 3 --force --yes
    """
    if not yes:
        click.confirm(f"Remove OSD {osd_id}?", abort=True)
    data = client().request("DELETE", f"{S}/osd/{osd_id}",
                            {"force": force, "yes-i-really-mean-it": "yes"}).data
    task_result(data, wait)


def _state(osd_id: str, state: str) -> None:
    echo_message(client().post(f"{S}/osd/{osd_id}/state", {"state": state}).data)


@osd.command("in")
@click.argument("osd_id")
def osd_in(osd_id: str) -> None:
    """Mark OSD_ID in (it takes data again).

    \b
    Example:
      pvc storage osd in 2
    """
    _state(osd_id, "in")


@osd.command("out")
@click.argument("osd_id")
def osd_out(osd_id: str) -> None:
    """Mark OSD_ID out (its data moves to the other OSDs).

    \b
    Example:
      pvc storage osd out 2
    """
    _state(osd_id, "out")


def _flag(option: str, action: str) -> None:
    echo_message(client().post(f"{S}/option", {"option": option, "action": action}).data)


@osd.command("set")
@click.argument("option")
def osd_set(option: str) -> None:
    """Set a cluster flag such as noout. POST /storage/ceph/option.

    \b
    Example:
      pvc storage osd set noout
    """
    _flag(option, "set")


@osd.command("unset")
@click.argument("option")
def osd_unset(option: str) -> None:
    """Unset a cluster flag such as noout.

    \b
    Example:
      pvc storage osd unset noout
    """
    _flag(option, "unset")


@osd.command("list")
@click.argument("limit", required=False)
@format_option
def osd_list(limit: str | None, fmt: str) -> None:
    """List OSDs with their node, device, state and usage. Reads GET /storage/ceph/osd.

    \b
    Examples:
      pvc storage osd list
      pvc storage osd list '^1$' -f json
    """
    found = get_list(f"{S}/osd", {"limit": limit})
    show_list(get_settings().painter, found, fmt, "No OSDs found.", _osd_table)


def _osd_table(p: Painter, found: list[dict[str, Any]]) -> str:
    rows = []
    for o in found:
        st = o.get("stats") or {}
        rows.append([str(o.get("id")), o.get("node", ""), o.get("device", ""),
                     ("up", {"fg": "green"}) if st.get("up") else ("down", {"fg": "red"}),
                     ("in", {"fg": "green"}) if st.get("in") else ("out", {"fg": "yellow"}),
                     f"{st.get('weight', 0):.3f}", str(st.get("pgs", 0)),
                     human_kib(st.get("kb")), str(st.get("used", "")),
                     f"{float(st.get('utilization', 0)):.1f}%",
                     f"{st.get('wr_ops', 0)}/{st.get('wr_data', 0)}",
                     f"{st.get('rd_ops', 0)}/{st.get('rd_data', 0)}"])
    return render_table(p, ["ID", "NODE", "DEVICE", "UP", "IN", "WEIGHT", "PGS", "SIZE",
                            "USED", "UTIL", "WR OPS/DATA", "RD OPS/DATA"], rows,
                        right=range(5, 10))


def _register() -> None:
    from pvc_plugins.storage_ceph import cli_volumes

    storage.add_command(cli_volumes.pool)
    storage.add_command(cli_volumes.volume)


_register()
