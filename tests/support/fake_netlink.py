"""A fake pyroute2 ``IPRoute`` for the network plugins' device functions: links, addresses
and fdb entries in memory, every request recorded (``requests``; ``changes`` leaves out
reads), and link kinds this kernel lacks refused like the real one (errno 95)."""

from __future__ import annotations

from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

READS = {"get", "dump", "show"}


class Msg(dict):
    """A netlink message as the device functions read it."""

    def get_nested(self, *path: str) -> Any:
        if path == ("IFLA_LINKINFO", "IFLA_INFO_KIND"):
            return self.get("kind")
        if path == ("IFLA_LINKINFO", "IFLA_INFO_DATA"):
            return Msg(self["data"]) if self.get("data") is not None else None
        raise KeyError(path)


class FakeIPRoute:
    def __init__(self, unsupported: tuple[str, ...] = ("vlan",)) -> None:
        self.links: dict[int, dict[str, Any]] = {}
        self.addrs: list[tuple[int, str]] = []
        self.fdbs: list[tuple[int, str, str]] = []
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.unsupported = unsupported
        self.next_index = 2
        self.add_link("lo", kind=None, mtu=65536, up=True)

    # -- setting the scene ---------------------------------------------------------------
    def add_link(self, name: str, kind: str | None = "veth", mtu: int = 1500,
                 up: bool = False, alias: str | None = None, master: int | None = None,
                 data: dict[str, Any] | None = None) -> int:
        index = self.next_index
        self.next_index += 1
        self.links[index] = {"index": index, "ifname": name, "kind": kind, "mtu": mtu,
                             "flags": 1 if up else 0, "ifalias": alias, "master": master,
                             "data": data}
        return index

    def by_name(self, name: str) -> dict[str, Any] | None:
        return next((v for v in self.links.values() if v["ifname"] == name), None)

    @property
    def changes(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [r for r in self.requests if r[1] not in READS]

    def clear(self) -> None:
        self.requests.clear()

    # -- the IPRoute calls used ----------------------------------------------------------
    def _find(self, kw: dict[str, Any]) -> dict[str, Any]:
        link = self.links.get(kw["index"]) if "index" in kw else self.by_name(kw["ifname"])
        if link is None:
            raise NetlinkError(19, "No such device")
        return link

    def link(self, command: str, **kw: Any) -> Any:
        self.requests.append(("link", command, dict(kw)))
        if command == "get":
            return (Msg(self._find(kw)),)
        if command == "add":
            if kw.get("kind") in self.unsupported:
                raise NetlinkError(95, "Operation not supported")
            if self.by_name(kw["ifname"]) is not None:
                raise NetlinkError(17, "File exists")
            data = None
            if kw.get("kind") == "vxlan":
                data = {"IFLA_VXLAN_ID": kw["vxlan_id"], "IFLA_VXLAN_PORT": kw["vxlan_port"],
                        "IFLA_VXLAN_LOCAL": kw.get("vxlan_local"),
                        "IFLA_VXLAN_LINK": kw.get("vxlan_link"),
                        "IFLA_VXLAN_LEARNING": kw.get("vxlan_learning", 1)}
            self.add_link(kw["ifname"], kind=kw.get("kind"), mtu=kw.get("mtu", 1500),
                          data=data)
            return ()
        link = self._find(kw)
        if command == "set":
            if "mtu" in kw:
                link["mtu"] = kw["mtu"]
            if "state" in kw:
                link["flags"] = 1 if kw["state"] == "up" else 0
            if "master" in kw:
                link["master"] = kw["master"] or None
            if "ifalias" in kw:
                link["ifalias"] = kw["ifalias"]
        elif command == "del":
            del self.links[link["index"]]
            self.fdbs = [f for f in self.fdbs if f[0] != link["index"]]
        return ()

    def get_links(self, *indexes: int) -> list[Msg]:
        self.requests.append(("link", "dump", {}))
        return [Msg(v) for k, v in self.links.items() if not indexes or k in indexes]

    def get_addr(self, family: int = 0, index: int | None = None) -> list[Msg]:
        self.requests.append(("addr", "dump", {"index": index}))
        return [Msg({"index": i, "IFA_LOCAL": a}) for i, a in self.addrs
                if index is None or i == index]

    def fdb(self, command: str, **kw: Any) -> Any:
        self.requests.append(("fdb", command, dict(kw)))
        if command == "dump":
            return [Msg({"ifindex": i, "NDA_LLADDR": mac, "NDA_DST": dst})
                    for i, mac, dst in self.fdbs
                    if "ifindex" not in kw or i == kw["ifindex"]]
        entry = (kw["ifindex"], kw["lladdr"], kw["dst"])
        if command == "append":
            if entry in self.fdbs:
                raise NetlinkError(17, "File exists")
            self.fdbs.append(entry)
        elif command == "del":
            if entry not in self.fdbs:
                raise NetlinkError(2, "No such file or directory")
            self.fdbs.remove(entry)
        return ()

    def close(self) -> None:
        pass
