"""`pvc storage pool|volume|volume snapshot` commands (added to the `storage` group)."""

from __future__ import annotations

import os
from typing import Any

import click

from pvc_cli.sdk import (
    F,
    Painter,
    PvcError,
    emit_json,
    format_option,
    get_settings,
    render_table,
    show_list,
)
from pvc_plugins.storage_ceph.cli import YES, S, client, echo_message, get_list

UPLOAD_TIMEOUT = 3600.0
FORCE = click.option("-f", "--force", is_flag=True, help="Allow more than the pool's free space.")


def _human(n: Any) -> str:
    try:
        value = float(n)
    except (TypeError, ValueError):
        return str(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


# --- pools ----------------------------------------------------------------------------------

@click.group()
def pool() -> None:
    """Manage RBD pools.

    \b
    Examples:
      pvc storage pool add vms 64 --replcfg copies=3,mincopies=2
      pvc storage pool list
    """


@pool.command("add")
@click.argument("name")
@click.argument("pgs", type=int)
@click.option("-r", "--replcfg", default="copies=3,mincopies=2", show_default=True,
              help="Replication: copies=N,mincopies=M.")
@click.option("-t", "--tier", type=click.Choice(["default", "hdd", "ssd", "nvme"]),
              default="default", show_default=True, help="Device class tier.")
def pool_add(name: str, pgs: int, replcfg: str, tier: str) -> None:
    """Create pool NAME with PGS placement groups (a power of 2). POST /storage/ceph/pool.

    \b
    Examples:
      pvc storage pool add vms 64
      pvc storage pool add fast 32 --tier ssd --replcfg copies=2,mincopies=1
    """
    echo_message(client().post(f"{S}/pool", {"pool": name, "pgs": pgs, "replcfg": replcfg,
                                             "tier": tier}).data)


@pool.command("remove")
@click.argument("name")
@YES
def pool_remove(name: str, yes: bool) -> None:
    """Remove pool NAME and EVERY volume in it. DELETE /storage/ceph/pool/NAME.

    \b
    Example:
      pvc storage pool remove scratch
    """
    if not yes:
        click.confirm(f"Remove pool {name} and all its volumes?", abort=True)
    echo_message(client().request("DELETE", f"{S}/pool/{name}",
                                  {"yes-i-really-mean-it": "yes"}).data)


@pool.command("set-pgs")
@click.argument("name")
@click.argument("pgs", type=int)
def pool_set_pgs(name: str, pgs: int) -> None:
    """Change the PG count of pool NAME. PUT /storage/ceph/pool/NAME.

    \b
    Example:
      pvc storage pool set-pgs vms 128
    """
    echo_message(client().request("PUT", f"{S}/pool/{name}", {"pgs": pgs}).data)


@pool.command("list")
@click.argument("limit", required=False)
@format_option
def pool_list(limit: str | None, fmt: str) -> None:
    """List pools with their usage. Reads GET /storage/ceph/pool.

    \b
    Examples:
      pvc storage pool list
      pvc storage pool list vms -f json
    """
    found = get_list(f"{S}/pool", {"limit": limit})
    show_list(get_settings().painter, found, fmt, "No pools found.", _pool_table)


def _pool_table(p: Painter, found: list[dict[str, Any]]) -> str:
    rows = [[x.get("name", ""), x.get("tier", ""), str(x.get("pgs", "")),
             f"{x.get('copies', '?')}/{x.get('mincopies', '?')}",
             str(x.get("volume_count", 0)), _human(x["stats"].get("used_bytes")),
             _human(x["stats"].get("free_bytes")),
             f"{float(x['stats'].get('used_percent', 0)) * 100:.1f}%",
             str(x["stats"].get("num_objects", 0))] for x in found]
    return render_table(p, ["NAME", "TIER", "PGS", "COPIES", "VOLUMES", "USED", "FREE",
                            "USED%", "OBJECTS"], rows, right=range(2, 9))


# --- volumes --------------------------------------------------------------------------------

@click.group()
def volume() -> None:
    """Manage RBD volumes and their snapshots.

    \b
    Examples:
      pvc storage volume add vms disk0 20G
      pvc storage volume list -p vms
    """


@volume.command("add")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("size")
@FORCE
def volume_add(pool_name: str, name: str, size: str, force: bool) -> None:
    """Create volume NAME of SIZE (e.g. 20G) in POOL. POST /storage/ceph/volume.

    \b
    Example:
      pvc storage volume add vms disk0 20G
    """
    echo_message(client().post(f"{S}/volume", {"pool": pool_name, "volume": name, "size": size,
                                               "force": force}).data)


@volume.command("upload")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("-i", "--image-format", default="raw", show_default=True,
              type=click.Choice(["raw", "vmdk", "qcow2", "qed", "vdi", "vpc"]),
              help="Format of IMAGE (non-raw is converted with qemu-img).")
def volume_upload(pool_name: str, name: str, image: str, image_format: str) -> None:
    """Write the disk IMAGE into existing volume NAME. POST .../volume/POOL/NAME/upload.

    \b
    Examples:
      pvc storage volume upload vms disk0 debian.qcow2 -i qcow2
      pvc storage volume upload vms disk0 disk.raw
    """
    api = client()
    session = api._get_session()
    url = f"{api.current.base_url}{S}/volume/{pool_name}/{name}/upload"
    size = os.path.getsize(image)
    import requests

    try:
        with open(image, "rb") as fh:
            resp = session.post(url, params={"image_format": image_format, "file_size": size},
                                data=fh, timeout=(5, UPLOAD_TIMEOUT), verify=session.verify,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(size)})
    except requests.RequestException as exc:
        raise PvcError(f"upload to {api.current.base_url} failed: {exc}") from None
    try:
        data = resp.json()
    except ValueError:
        data = {"message": resp.text[:200]}
    if resp.status_code != 200:
        raise PvcError(data.get("message") or f"HTTP {resp.status_code}")
    echo_message(data)


@volume.command("remove")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@YES
def volume_remove(pool_name: str, name: str, yes: bool) -> None:
    """Remove volume NAME from POOL. DELETE /storage/ceph/volume/POOL/NAME.

    \b
    Example:
      pvc storage volume remove vms disk0
    """
    if not yes:
        click.confirm(f"Remove volume {pool_name}/{name}?", abort=True)
    echo_message(client().request("DELETE", f"{S}/volume/{pool_name}/{name}").data)


@volume.command("resize")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("size")
@FORCE
def volume_resize(pool_name: str, name: str, size: str, force: bool) -> None:
    """Grow volume NAME to SIZE. PUT /storage/ceph/volume/POOL/NAME.

    \b
    Example:
      pvc storage volume resize vms disk0 40G
    """
    echo_message(client().request("PUT", f"{S}/volume/{pool_name}/{name}",
                                  {"new_size": size, "force": force}).data)


@volume.command("rename")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("new_name")
def volume_rename(pool_name: str, name: str, new_name: str) -> None:
    """Rename volume NAME to NEW_NAME. PUT /storage/ceph/volume/POOL/NAME.

    \b
    Example:
      pvc storage volume rename vms disk0 web1-disk0
    """
    echo_message(client().request("PUT", f"{S}/volume/{pool_name}/{name}",
                                  {"new_name": new_name}).data)


@volume.command("clone")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("new_name")
@FORCE
@click.option("-s", "--snapshot", help="Clone this snapshot copy-on-write (fast) instead.")
def volume_clone(pool_name: str, name: str, new_name: str, force: bool,
                 snapshot: str | None) -> None:
    """Copy volume NAME to NEW_NAME in the same pool. POST .../volume/POOL/NAME/clone.

    \b
    Examples:
      pvc storage volume clone vms disk0 disk0-copy
      pvc storage volume clone vms template web2-disk0 --snapshot gold
    """
    echo_message(client().post(f"{S}/volume/{pool_name}/{name}/clone",
                               {"new_volume": new_name, "force": force,
                                "snapshot": snapshot}).data)


@volume.command("list")
@click.argument("limit", required=False)
@click.option("-p", "--pool", "pool_name", help="Only volumes of this pool.")
@format_option
def volume_list(limit: str | None, pool_name: str | None, fmt: str) -> None:
    """List volumes. Reads GET /storage/ceph/volume.

    \b
    Examples:
      pvc storage volume list
      pvc storage volume list '^web' -p vms
    """
    found = get_list(f"{S}/volume", {"limit": limit, "pool": pool_name})
    show_list(get_settings().painter, found, fmt, "No volumes found.", _volume_table)


def _volume_table(p: Painter, found: list[dict[str, Any]]) -> str:
    rows = [[v.get("name", ""), v.get("pool", ""), str(v["stats"].get("size", "")),
             str(v["stats"].get("objects", "")), str(v["stats"].get("snapshot_count", "")),
             ",".join(v["stats"].get("features") or [])] for v in found]
    return render_table(p, ["NAME", "POOL", "SIZE", "OBJECTS", "SNAPSHOTS", "FEATURES"],
                        rows, right=(2, 3, 4))


@volume.command("info")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@format_option
def volume_info(pool_name: str, name: str, fmt: str) -> None:
    """Show volume NAME. Reads GET /storage/ceph/volume/POOL/NAME.

    \b
    Example:
      pvc storage volume info vms disk0
    """
    data = client().get(f"{S}/volume/{pool_name}/{name}").data
    item = data[0] if isinstance(data, list) and data else {}
    if fmt != "pretty":
        emit_json(item, fmt)
        return
    for key, value in (item.get("stats") or {}).items():
        click.echo(f"{key + ':':22} {', '.join(value) if isinstance(value, list) else value}")


# --- snapshots ------------------------------------------------------------------------------

@volume.group()
def snapshot() -> None:
    """Manage volume snapshots.

    \b
    Examples:
      pvc storage volume snapshot add vms disk0 before-upgrade
      pvc storage volume snapshot list -o disk0
    """


def snapshot_args(func: F) -> F:
    """The POOL VOLUME NAME arguments that name one snapshot."""
    func = click.argument("name")(func)
    func = click.argument("vol", metavar="VOLUME")(func)
    return click.argument("pool_name", metavar="POOL")(func)


def _snap_path(p: str, v: str, s: str) -> str:
    return f"{S}/snapshot/{p}/{v}/{s}"


@snapshot.command("add")
@snapshot_args
def snapshot_add(pool_name: str, vol: str, name: str) -> None:
    """Snapshot VOLUME as NAME. POST /storage/ceph/snapshot.

    \b
    Example:
      pvc storage volume snapshot add vms disk0 before-upgrade
    """
    echo_message(client().post(f"{S}/snapshot", {"pool": pool_name, "volume": vol,
                                                 "snapshot": name}).data)


@snapshot.command("rename")
@snapshot_args
@click.argument("new_name")
def snapshot_rename(pool_name: str, vol: str, name: str, new_name: str) -> None:
    """Rename snapshot NAME to NEW_NAME.

    \b
    Example:
      pvc storage volume snapshot rename vms disk0 before-upgrade good
    """
    echo_message(client().request("PUT", _snap_path(pool_name, vol, name),
                                  {"new_name": new_name}).data)


@snapshot.command("remove")
@snapshot_args
@YES
def snapshot_remove(pool_name: str, vol: str, name: str, yes: bool) -> None:
    """Remove snapshot NAME of VOLUME.

    \b
    Example:
      pvc storage volume snapshot remove vms disk0 good
    """
    if not yes:
        click.confirm(f"Remove snapshot {pool_name}/{vol}@{name}?", abort=True)
    echo_message(client().request("DELETE", _snap_path(pool_name, vol, name)).data)


@snapshot.command("rollback")
@snapshot_args
@YES
def snapshot_rollback(pool_name: str, vol: str, name: str, yes: bool) -> None:
    """Roll VOLUME back to snapshot NAME (its VM must be stopped).

    \b
    Example:
      pvc storage volume snapshot rollback vms disk0 good
    """
    if not yes:
        click.confirm(f"Roll {pool_name}/{vol} back to {name}, losing later writes?",
                      abort=True)
    echo_message(client().post(_snap_path(pool_name, vol, name) + "/rollback").data)


@snapshot.command("list")
@click.argument("limit", required=False)
@click.option("-p", "--pool", "pool_name", help="Only snapshots in this pool.")
@click.option("-o", "--volume", "vol", help="Only snapshots of this volume.")
@format_option
def snapshot_list(limit: str | None, pool_name: str | None, vol: str | None, fmt: str) -> None:
    """List snapshots. Reads GET /storage/ceph/snapshot.

    \b
    Examples:
      pvc storage volume snapshot list
      pvc storage volume snapshot list -p vms -o disk0
    """
    found = get_list(f"{S}/snapshot", {"limit": limit, "pool": pool_name, "volume": vol})
    show_list(get_settings().painter, found, fmt, "No snapshots found.", _snapshot_table)


def _snapshot_table(p: Painter, found: list[dict[str, Any]]) -> str:
    rows = [[s.get("snapshot", ""), s.get("volume", ""), s.get("pool", ""),
             _human((s.get("stats") or {}).get("size") if isinstance(s.get("stats"), dict)
                    else "")] for s in found]
    return render_table(p, ["NAME", "VOLUME", "POOL", "SIZE"], rows, right=(3,))
