"""A real Redis Cluster for the tests and the benchmark (tests/conftest.py, loadtest/bench.py):
`redis-server --cluster-enabled yes` processes on free ports in a temp dir, joined by
`redis-cli --cluster create`; `stop()` kills only the processes it started.

Failover is fast on purpose (`cluster-node-timeout` 1 s): a killed primary is replaced by its replica in
about 2-3 s. `cluster-require-full-coverage no`, as docs/operations.md recommends: the other shards keep
serving while one fails over.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# LEADERBOARD_TEST_REDIS_SERVER / _CLI: other binaries (a path that does not exist shows how the suite skips)
REDIS_SERVER = (
    os.environ.get("LEADERBOARD_TEST_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
)
REDIS_CLI = os.environ.get("LEADERBOARD_TEST_REDIS_CLI") or shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    for exe in (REDIS_SERVER, REDIS_CLI):
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            return f"{exe} not found (apt-get install redis-server)"
    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, check=False).stdout
    version = out.split("v=")[1].split()[0] if "v=" in out else "0"
    if int(version.split(".")[0]) < 7:
        return f"redis-server {version} has no sharded pub/sub (7.0 or later needed)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    res = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout
    )
    return res.stdout.strip()


@dataclass
class Node:
    port: int
    bus: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        return _cli(self.port, *args)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def info(self, section: str) -> dict[str, str]:
        out = self.cli("INFO", section)
        return dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith("#"))


@dataclass
class Cluster:
    primaries: int = 3
    replicas: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lbrc-")))
    nodes: list[Node] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # more redis-server options, e.g. ["--io-threads", "2"]

    @property
    def url(self) -> str:
        """A URL of one node (the client discovers the others)."""
        return f"redis://{self.nodes[0].address}/0"

    def start(self) -> Cluster:
        count = self.primaries * (1 + self.replicas)
        self.nodes = [Node(_free_port(), _free_port(), self.root / f"n{i}") for i in range(count)]
        try:
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                self._wait_ping(node)
            res = subprocess.run(
                [REDIS_CLI, "--cluster", "create", *(n.address for n in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if res.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {res.stdout}\n{res.stderr}")
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, node: Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER, "--port", str(node.port), "--bind", "127.0.0.1", "--protected-mode", "no",
            "--cluster-enabled", "yes", "--cluster-port", str(node.bus),
            "--cluster-config-file", str(node.dir / "nodes.conf"), "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage", "no", "--dir", str(node.dir), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", str(node.dir / "redis.log"), *self.extra,
        ]  # fmt: skip
        node.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_ping(self, node: Node, within: float = 15) -> None:
        deadline = time.monotonic() + within
        while node.cli("PING") != "PONG":
            if not node.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {node.port} did not start; see {node.dir / 'redis.log'}")
            time.sleep(0.05)

    def wait_ok(self, within: float = 30) -> None:
        """Every live node sees the cluster as ok, with every slot served by a live primary."""
        deadline = time.monotonic() + within
        while not self._ok():
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {within}s")
            time.sleep(0.1)

    def _ok(self) -> bool:
        live = [n for n in self.nodes if n.alive()]
        ports = {n.port for n in live}
        for n in live:
            if "cluster_state:ok" not in n.cli("CLUSTER", "INFO"):
                return False
            for line in n.cli("CLUSTER", "NODES").splitlines():
                parts = line.split()
                if "master" in parts[2] and len(parts) > 8:  # a primary that owns slots
                    port = int(parts[1].split(":")[1].split("@")[0])
                    if "fail" in parts[2] or port not in ports:
                        return False
        return True

    def primary_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.alive() and n.info("replication").get("role") == "master"]

    def owner(self, key: str) -> Node:
        """The live primary that serves `key`'s slot."""
        slot = self.slot(key)
        for n in self.primary_nodes():
            if self._serves(n, slot):
                return n
        raise RuntimeError(f"no live primary serves {key}")

    def slot(self, key: str) -> int:
        return int(next(n for n in self.nodes if n.alive()).cli("CLUSTER", "KEYSLOT", key))

    def node_id(self, node: Node) -> str:
        return node.cli("CLUSTER", "MYID")

    def replica_of(self, primary: Node) -> Node:
        """A live replica of `primary`."""
        for n in self.nodes:
            if n.alive() and n is not primary and n.info("replication").get("master_port") == str(primary.port):
                return n
        raise RuntimeError(f"{primary.address} has no live replica")

    def move_slot(self, slot: int, to: Node, pause: float = 0.0) -> None:
        """Migrate one slot to the primary `to`, key by key (`pause` s between keys, to stretch the window in
        which clients get ASK redirections), then give it to `to` on every node (MOVED from then on)."""
        src = next(n for n in self.primary_nodes() if self._serves(n, slot))
        src_id, dst_id = self.node_id(src), self.node_id(to)
        to.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
        src.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
        while keys := src.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "1").split():
            src.cli("MIGRATE", "127.0.0.1", str(to.port), "", "0", "5000", "KEYS", *keys)
            time.sleep(pause)
        for n in self.primary_nodes():
            n.cli("CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)

    def _serves(self, node: Node, slot: int) -> bool:
        for line in node.cli("CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "myself" in parts[2]:
                for r in parts[8:]:
                    lo, _, hi = r.partition("-")
                    if not lo.startswith("[") and int(lo) <= slot <= int(hi or lo):
                        return True
        return False

    def kill(self, node: Node) -> None:
        """SIGKILL one node (a crashed primary)."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)

    def restart(self, node: Node) -> None:
        """Start a killed node again (it rejoins from its nodes.conf, as a replica if it was failed over)."""
        self._spawn(node)
        self._wait_ping(node)

    def flushall(self) -> None:
        for n in self.primary_nodes():
            n.cli("FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
