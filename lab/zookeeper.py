"""A real ZooKeeper server (Debian's ``zookeeper`` 3.8) on every coordinator node.

Each server listens on its node's address only (client 2181, quorum 2888, election
3888), with tickTime 1000 ms so sessions may be as short as 2 s, the Jetty admin server
off and every four-letter word allowed (``srvr``, ``mntr``, ``stat`` answer ``status``).
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import TYPE_CHECKING

from pvc_lab.services import Service
from pvc_lab.spec import ZK_CLIENT_PORT, ZK_ELECTION_PORT, ZK_QUORUM_PORT, LabSpec, NodeSpec

if TYPE_CHECKING:
    from pvc_lab.lab import Lab
    from pvc_lab.procs import ProcRecord

# Debian's zookeeper.jar carries its class path in its manifest but no slf4j binding.
CLASSPATH = ":".join(["/etc/zookeeper/conf", "/usr/share/java/zookeeper.jar",
                      "/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar"])
JAR = "/usr/share/java/zookeeper.jar"
TICK_MS = 1000
HEAP = "128m"


def available() -> str | None:
    """None if a server can run here, else what is missing."""
    if not os.path.exists(JAR):
        return f"{JAR} is missing (apt-get install zookeeper; see scripts/bootstrap.sh)"
    if shutil.which("java") is None:
        return "java is missing (apt-get install default-jre-headless)"
    return None


def zoo_cfg(spec: LabSpec, node: NodeSpec, data_dir: str) -> str:
    """The server's zoo.cfg: one ``server.N`` line per coordinator (none if there is one)."""
    lines = [
        f"tickTime={TICK_MS}",
        "initLimit=10",
        "syncLimit=5",
        f"dataDir={data_dir}",
        f"clientPort={ZK_CLIENT_PORT}",
        f"clientPortAddress={node.address}",
        "admin.enableServer=false",
        "4lw.commands.whitelist=*",
        "minSessionTimeout=2000",
        "maxSessionTimeout=30000",
        "autopurge.purgeInterval=1",
        "autopurge.snapRetainCount=3",
    ]
    coordinators = spec.coordinators
    if len(coordinators) > 1:
        lines += [f"server.{c.index}={c.address}:{ZK_QUORUM_PORT}:{ZK_ELECTION_PORT}"
                  for c in coordinators]
    return "\n".join(lines) + "\n"


def four_letter(address: str, word: str, port: int = ZK_CLIENT_PORT,
                timeout: float = 2.0) -> str:
    """Send a four-letter word; the reply, or "" if the server does not answer.

    Must run in a namespace that reaches ``address`` (see ``Lab.in_admin``).
    """
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(word.encode())
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def parse_mode(srvr: str) -> str | None:
    """'leader' | 'follower' | 'standalone' from a ``srvr`` reply; None if not serving."""
    for line in srvr.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


def parse_mntr(text: str) -> dict[str, str]:
    """``mntr`` lines ``zk_key<TAB>value`` as a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("\t")
        if sep:
            out[key.strip()] = value.strip()
    return out


class ZooKeeper(Service):
    name = "zookeeper"
    stop_grace = 5.0
    start_timeout = 90.0

    def runs_on(self, node: NodeSpec) -> bool:
        return node.coordinator

    def data_dir(self, spec: LabSpec, node: NodeSpec) -> str:
        return os.path.join(self.dir(spec, node), "zookeeper")

    def prepare(self, spec: LabSpec, node: NodeSpec) -> None:
        data = self.data_dir(spec, node)
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(data, "myid"), "w") as fh:
            fh.write(f"{node.index}\n")
        with open(os.path.join(self.dir(spec, node), "zoo.cfg"), "w") as fh:
            fh.write(zoo_cfg(spec, node, data))

    def argv(self, spec: LabSpec, node: NodeSpec) -> list[str]:
        d = self.dir(spec, node)
        return ["java", f"-Xmx{HEAP}", "-Xms16m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", "-Djava.net.preferIPv4Stack=true",
                "-Dzookeeper.cnxTimeout=2000",       # election connects to a cut-off peer
                "-cp", CLASSPATH, f"-Dzookeeper.log.dir={d}",
                "-Dzookeeper.root.logger=INFO,CONSOLE",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain", os.path.join(d, "zoo.cfg")]

    def ready(self, lab: Lab, node: NodeSpec, rec: ProcRecord) -> bool:
        return lab.zk_mode(node.name) is not None

    def explain(self, lab: Lab, node: NodeSpec) -> str:
        return "not serving requests: no quorum yet?"
