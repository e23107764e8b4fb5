"""Local Redis deployments for the benchmarks and the tests: one ``redis-server``, or a Redis
Cluster of three primaries with one replica each, every process on a free loopback port, with
no persistence, in a folder of its own, stopped by ``stop()``.

The cluster is assembled by hand, as the cluster specification describes it
(https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/): each primary gets
a distinct config epoch (``CLUSTER SET-CONFIG-EPOCH``) and a third of the 16384 hash slots
(``CLUSTER ADDSLOTS``); ``CLUSTER MEET`` introduces the nodes; each replica then follows its
primary (``CLUSTER REPLICATE``). ``redis-cli --cluster create`` does the same, but sleeps a
second per step. ``cluster-node-timeout`` is short (1 s by default, against Redis's 15 s) so a
killed primary is replaced within a few seconds: failure detection takes the node timeout,
and the replica's election waits 500 ms plus up to 500 ms more (the spec's "Replica election
and promotion").
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import redis

#: The number of hash slots of a Redis Cluster (cluster spec: "Key distribution model").
SLOTS = 16384


def redis_server_missing() -> str | None:
    """Why local Redis deployments cannot run here, or ``None``."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (scripts/ensure-services installs it)"
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A port free on 127.0.0.1 whose cluster bus port (10000 higher, the cluster spec's
    fixed offset unless ``cluster-port`` says otherwise) is free too. Both are taken below
    the kernel's ephemeral range when it leaves room, so no outgoing connection can grab the
    bus port between this check and the server's bind."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first, last = (10000, low - 10001) if low > 20001 else (20000, 55535)
    for _ in range(200):
        port = random.randint(first, last)
        try:
            with socket.socket() as server, socket.socket() as bus:
                server.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports for a cluster node")


def _wait(
    condition: Callable[[], object], what: str, timeout: float, folder: Path | None = None
) -> None:
    """Poll ``condition()`` until it is true; RuntimeError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            logs = ""
            if folder is not None:
                for log in sorted(folder.glob("*.log")):
                    logs += f"\n--- {log.name}:\n" + log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"timed out waiting for {what}{logs}")
        time.sleep(0.02)


@dataclass(frozen=True)
class NodeEntry:
    """One line of ``CLUSTER NODES``."""

    id: str
    port: int
    #: ``myself``, ``master``, ``slave``, ``fail?``, ``fail``, ...
    flags: frozenset[str]
    #: The primary's id for a replica, ``-`` for a primary.
    primary_id: str
    connected: bool
    #: Slot ranges (``0-5460``), for a primary.
    slots: tuple[str, ...]


class RedisProcess:
    """One ``redis-server`` on 127.0.0.1, restartable on the same port (with the same
    cluster configuration file, so a restarted cluster node rejoins as it was)."""

    def __init__(self, folder: Path, *extra: str, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisProcess:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        command += [*self.extra]
        with open(self.folder / f"redis-{self.port}.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited")
            with self.client() as client:
                return bool(client.ping())

        _wait(answers, f"redis-server on port {self.port}", 10, self.folder)
        return self

    def client(self, **options: object) -> redis.Redis:
        """A plain client to this server (not cluster-aware)."""
        options.setdefault("socket_timeout", 2)
        options.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)  # type: ignore[arg-type]

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as on a crash or a lost machine."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 10 s."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    """Three primaries and three replicas (one each) on loopback.

    ``url`` is one node's address (a client discovers the others); ``primary_for(key)`` is the
    node that owns a key's slot now; ``kill(node)`` and ``heal()`` take a node down and bring
    it back (a killed primary comes back as a replica of the one promoted in its place).
    """

    def __init__(self, folder: Path, *, node_timeout_ms: int = 1000) -> None:
        self.folder = folder
        options = (
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            str(node_timeout_ms),
            # The replica starts syncing at once (the default waits 5 s for more replicas).
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        )
        self.nodes: list[RedisProcess] = []
        for _ in range(6):
            port = free_cluster_port()
            conf = ("--cluster-config-file", str(folder / f"nodes-{port}.conf"))
            self.nodes.append(RedisProcess(folder, *options, *conf, port=port))

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start the six servers and assemble the cluster; returns once it serves every slot
        and every replica is in sync."""
        try:
            for index in range(len(self.nodes)):
                self._start_node(index)
            primaries, replicas = self.nodes[:3], self.nodes[3:]
            ids = [self._myid(node) for node in self.nodes]
            share = SLOTS // len(primaries)
            for index, node in enumerate(primaries):
                first = index * share
                last = SLOTS - 1 if index == len(primaries) - 1 else first + share - 1
                with node.client() as client:
                    client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                    client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            with self.nodes[0].client() as client:
                for node in self.nodes[1:]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            for primary_id, replica in zip(ids[:3], replicas, strict=True):

                def follows(replica: RedisProcess = replica, primary_id: str = primary_id) -> bool:
                    with replica.client() as client:
                        # Refused until the replica has heard of its primary through gossip.
                        return bool(client.execute_command("CLUSTER", "REPLICATE", primary_id))

                _wait(follows, f"node {replica.port} to replicate", 20, self.folder)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, index: int) -> None:
        """Start a new node, on other ports if another listener took them meanwhile."""
        for attempt in range(3):
            try:
                self.nodes[index].start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise
            node = self.nodes[index]
            node.stop()
            port = free_cluster_port()
            conf = ("--cluster-config-file", str(self.folder / f"nodes-{port}.conf"))
            self.nodes[index] = RedisProcess(self.folder, *node.extra[:-2], *conf, port=port)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- views ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one live node (``RedisTokenCache`` discovers the
        rest)."""
        node = next(n for n in self.nodes if n.running)
        return f"redis+cluster://127.0.0.1:{node.port}"

    def _myid(self, node: RedisProcess) -> str:
        with node.client() as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def _view(self, node: RedisProcess) -> list[NodeEntry]:
        """``CLUSTER NODES`` as seen by ``node``: one entry per node it knows."""
        with node.client() as client:
            text = client.execute_command("CLUSTER", "NODES")
        if isinstance(text, bytes):
            text = text.decode()
        view = []
        for line in str(text).splitlines():
            fields = line.split()
            view.append(
                NodeEntry(
                    id=fields[0],
                    port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                    flags=frozenset(fields[2].split(",")),
                    primary_id=fields[3],
                    connected=fields[7] == "connected",
                    slots=tuple(fields[8:]),
                )
            )
        return view

    def primaries(self) -> list[RedisProcess]:
        """The running nodes that are primaries now (each by its own account)."""
        found = []
        for node in self.nodes:
            if node.running:
                with node.client() as client:
                    if client.info("replication").get("role") == "master":
                        found.append(node)
        return found

    def slot_of(self, key: str | bytes) -> int:
        """``CLUSTER KEYSLOT key``, as a live node computes it."""
        node = next(n for n in self.nodes if n.running)
        with node.client() as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))

    def primary_for(self, key: str | bytes) -> RedisProcess:
        """The primary serving ``key``'s slot now (by its own account)."""
        slot = self.slot_of(key)
        for node in self.primaries():
            mine = next(e for e in self._view(node) if "myself" in e.flags)
            if _owns(mine.slots, slot):
                return node
        raise RuntimeError(f"no primary serves slot {slot}")

    def replica_of(self, primary: RedisProcess) -> RedisProcess:
        """The running replica following ``primary``."""
        primary_id = self._myid(primary)
        for node in self.nodes:
            if node.running and node is not primary:
                for entry in self._view(node):
                    if "myself" in entry.flags and entry.primary_id == primary_id:
                        return node
        raise RuntimeError(f"node {primary.port} has no replica")

    def keys(self, pattern: str = "*") -> list[bytes]:
        """Every key matching ``pattern`` on the primaries."""
        found: list[bytes] = []
        for node in self.primaries():
            with node.client() as client:
                found += client.keys(pattern)
        return sorted(found)

    def commandstats(self) -> dict[str, int]:
        """Commands executed so far, by name, summed over the running primaries (``INFO
        commandstats``: what clients sent; replicas apply the replication stream, which is
        not counted here)."""
        return sum_commandstats(n for n in self.primaries())

    # -- failures ---------------------------------------------------------------------------

    def kill_primary_for(self, key: str | bytes) -> tuple[RedisProcess, RedisProcess]:
        """SIGKILL the primary serving ``key`` (it stays down until :meth:`heal`); the killed
        node and the replica that should take its place."""
        primary = self.primary_for(key)
        replica = self.replica_of(primary)
        primary.kill()
        return primary, replica

    def wait_promoted(self, replica: RedisProcess, timeout: float = 20) -> None:
        """Wait until ``replica`` is a primary and every live node serves every slot again."""

        def promoted() -> bool:
            with replica.client() as client:
                if client.info("replication").get("role") != "master":
                    return False
            return self._all_ok()

        _wait(promoted, f"node {replica.port} to be promoted", timeout, self.folder)

    def heal(self, timeout: float = 30) -> None:
        """Restart every node that is down and wait until the cluster is whole: each comes back
        with its configuration file (a failed-over primary as a replica of its successor)."""
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30) -> None:
        """Every node up, every slot served, three primaries each followed by an in-sync
        replica, and every node agreeing on that."""

        def healthy() -> bool:
            if not self._all_ok():
                return False
            primaries = self.primaries()
            if len(primaries) != 3:
                return False
            for node in self.nodes:
                with node.client() as client:
                    info = client.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
                view = self._view(node)
                if len(view) != 6 or not all(e.connected or "myself" in e.flags for e in view):
                    return False
                if sum("slave" in e.flags for e in view) != 3:
                    return False
                if any("fail" in e.flags or "fail?" in e.flags for e in view):
                    return False
            return True

        _wait(healthy, "a healthy cluster", timeout, self.folder)

    def _all_ok(self) -> bool:
        for node in self.nodes:
            if node.running:
                with node.client() as client:
                    if client.cluster("info").get("cluster_state") != "ok":
                        return False
        return True


def _owns(slots: Iterable[str], slot: int) -> bool:
    for part in slots:
        if part.startswith("["):  # a slot being migrated: [slot->-id]
            continue
        first, _, last = part.partition("-")
        if int(first) <= slot <= int(last or first):
            return True
    return False


def sum_commandstats(nodes: Iterable[RedisProcess]) -> dict[str, int]:
    """``INFO commandstats`` calls by command name, summed over ``nodes``; the INFO commands
    themselves are left out (the measurement's own)."""
    total: dict[str, int] = {}
    for node in nodes:
        with node.client() as client:
            stats = client.info("commandstats")
        for name, values in stats.items():
            command = name.removeprefix("cmdstat_")
            if command == "info":
                continue
            total[command] = total.get(command, 0) + int(values["calls"])
    return total
