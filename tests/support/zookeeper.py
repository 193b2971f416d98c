"""A real ZooKeeper server (Debian's package) on a free loopback port, for tests and benches."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

JAR_PATH = ("/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:"
            "/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar")


def available() -> bool:
    return os.path.exists("/usr/share/java/zookeeper.jar") and shutil.which("java") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter(port: int, word: str, timeout: float = 2.0) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word.encode())
            chunks = []
            while data := s.recv(4096):
                chunks.append(data)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


class ZooKeeperServer:
    """Standalone server; ``stop()`` ends it by PID, ``start()`` again keeps its data."""

    def __init__(self, tick_ms: int = 500, port: int | None = None,
                 quorum: list[str] | None = None, myid: int = 0) -> None:
        self.dir = tempfile.mkdtemp(prefix="pvc-zk-")
        self.port = port or _free_port()
        self.proc: subprocess.Popen | None = None
        with open(os.path.join(self.dir, "zoo.cfg"), "w") as fh:
            fh.write(f"tickTime={tick_ms}\ndataDir={self.dir}/data\nclientPort={self.port}\n"
                     "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
                     "4lw.commands.whitelist=*\nminSessionTimeout=1000\n")
            if quorum:      # a member of an ensemble (see ``ensemble``)
                fh.write("initLimit=10\nsyncLimit=5\n" + "".join(
                    f"server.{i}={peer}\n" for i, peer in enumerate(quorum, 1)))
        if quorum:
            os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
            with open(os.path.join(self.dir, "data", "myid"), "w") as fh:
                fh.write(str(myid))

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        """leader | follower | standalone ("" while it does not serve)."""
        for line in four_letter(self.port, "srvr").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return ""

    def start(self, timeout: float = 60.0, wait: bool = True) -> None:
        log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            ["java", "-Xmx128m", "-Xms16m", "-XX:+UseSerialGC", "-cp", JAR_PATH,
             f"-Dzookeeper.log.dir={self.dir}", "-Dzookeeper.root.logger=INFO,CONSOLE",
             "org.apache.zookeeper.server.quorum.QuorumPeerMain",
             os.path.join(self.dir, "zoo.cfg")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Mode:" in four_letter(self.port, "srvr"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"ZooKeeper did not start; see {self.dir}/server.log")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def ensemble(size: int = 3, tick_ms: int = 500) -> list[ZooKeeperServer]:
    """``size`` servers forming one ensemble on loopback, started and serving (a quorum
    formed); ``hosts`` of the result joins their client addresses."""
    ports = [(_free_port(), _free_port(), _free_port()) for _ in range(size)]
    quorum = [f"127.0.0.1:{peer}:{election}" for _client, peer, election in ports]
    servers = [ZooKeeperServer(tick_ms, port=client, quorum=quorum, myid=i)
               for i, (client, _peer, _election) in enumerate(ports, 1)]
    for server in servers:
        server.start(wait=False)
    deadline = time.monotonic() + 90
    while not all(server.mode for server in servers):
        if time.monotonic() > deadline:
            for server in servers:
                server.cleanup()
            raise RuntimeError(f"the ensemble did not form; see {servers[0].dir}/server.log")
        time.sleep(0.2)
    return servers
