"""The Redis clients of each role, built in one place from ``Settings`` (connections are made only at entry points).

- :func:`worker_client`: no automatic retries. The worker retries by itself, because it must know
  whether a snapshot write was sent (a retried write whose reply was lost would be applied twice).
  Its read timeout outlasts its blocking stream reads.
- :func:`service_client`: asyncio, short timeouts. A slow or absent Redis must not hold requests:
  the API keeps serving the model it has in memory.
- :func:`client_client`: the publisher and the command line; generous timeouts for large pipelines.

Each takes the URL of one node (``redis://``, ``rediss://``, ``unix://``) and returns redis-py's
``Redis``, or the URL of a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``, any node or
several, see :func:`digitstream.settings.parse_cluster_url`) and returns its ``RedisCluster``
(``redis.asyncio.cluster.RedisCluster`` for the service), with the same timeouts.

A cluster client differs in one more way, made to look like the single-node client to the roles:
when no node answers (or the nodes do not serve every slot yet, e.g. before ``--cluster create``),
redis-py raises ``RedisClusterException``, which is not a ``RedisError``; these clients raise
:class:`ClusterUnreachable` instead, which is both, and a ``redis.ConnectionError``: every role
already treats that as an outage (the worker waits, the service serves from memory, the command
line exits 1 naming the URL). ``CLUSTERDOWN`` (``ClusterDownError``, a ``ResponseError``), which a
node answers between a master's failure and its replica's promotion, is listed in
:data:`OUTAGE_ERRORS` for the same reason.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException
from redis.retry import Retry

from .settings import Settings, is_cluster_url, parse_cluster_url, redact, redis_url

log = logging.getLogger(__name__)

#: What a role may be handed: one node's client or a cluster's.
RedisClient: TypeAlias = redis.Redis | RedisCluster
AsyncRedisClient: TypeAlias = aioredis.Redis | AsyncRedisCluster

T = TypeVar("T")


class ClusterUnreachable(RedisClusterException, redis.ConnectionError):
    """No node of the Redis Cluster answers, or its nodes do not serve every slot: an outage."""


class NotACluster(RedisClusterException, ValueError):
    """A ``redis+cluster://`` URL names a node that is not in cluster mode (a configuration error)."""


#: Errors meaning "Redis is not available right now, nothing was done": wait and try again.
#: CLUSTERDOWN is a node refusing a command (not running it) while its cluster fails over.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, ClusterDownError)

WAIT_BACKOFF_MAX = 5.0  # seconds between the worker's attempts to reach a cluster at start
#: Connections a worker client may open (per node): one per model thread of a pool, never the limit.
WORKER_MAX_CONNECTIONS = 100_000


def worker_client(settings: Settings) -> RedisClient:
    """The worker's client: no automatic retry of a command that may have run.

    On one node, ``Retry(NoBackoff(), 0)``: a connection error reaches the worker, which reads back
    whether its snapshot landed before writing it again.

    On a cluster, redis-py re-sends a command in two cases, and only the second is switched off:

    * **Redirections** (``MOVED``, ``ASK``, ``TRYAGAIN``): the node refused the command without
      running it (its slot lives, or is moving, elsewhere); the client follows the redirection
      (at most 16 times). Safe for the snapshot script too: it did not run. Always on.
    * **Connection errors and timeouts** (and ``CLUSTERDOWN``, a slot not covered): the client
      refreshes its map of the slots and, with retries, sends the command again. After a
      connection error nobody knows whether the node ran the script, so the retry count is 0
      (``retry=Retry(NoBackoff(), 0)``; redis-py's per-node connections never retry either): the
      error reaches the worker, which resolves it as on one node. The refreshed map sends the
      worker's next command to the promoted replica.

    A cluster client discovers the cluster when it is built; this one waits for a node to answer
    (logging once, backing off to 5 s), as a worker waits for a single Redis that is not up yet.

    Connections: a worker pool's model threads share this client, each holding a connection through
    its blocking stream read, so a pool of N models uses N + 1 at once. redis-py 8 caps a client at
    100 (per node) and raises ``MaxConnectionsError`` beyond, a ``ConnectionError`` the worker takes
    for an outage (backing off up to 5 s, its lease expiring): a pool of 100 models learned at a
    fraction of its rate. The cap is :data:`WORKER_MAX_CONNECTIONS`; the threads are the real bound.
    """
    url = redis_url(settings)
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.block_ms / 1000 + settings.redis_timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "max_connections": WORKER_MAX_CONNECTIONS,
    }
    if is_cluster_url(url):
        return _waiting(lambda: _cluster(url, options), url)
    return redis.Redis.from_url(url, **options)


def service_client(settings: Settings) -> AsyncRedisClient:
    """The service's asyncio client (a cluster client connects at its first command).

    A cluster client does not re-send a command that timed out or lost its connection (redis-py's
    default is 3 more tries, each waiting the timeout again): as on one node, a request waits for
    Redis at most ``service_redis_timeout``. Redirections are still followed.
    """
    url = redis_url(settings)
    timeout = settings.service_redis_timeout
    options: dict[str, Any] = {
        "socket_connect_timeout": min(timeout, settings.redis_connect_timeout),
        "socket_timeout": timeout,
        "health_check_interval": 10,
    }
    if is_cluster_url(url):
        found = parse_cluster_url(url)
        extra = [AsyncClusterNode(host, port) for host, port in found.nodes[1:]]
        return _AsyncCluster.from_url(found.node_url, startup_nodes=extra, retry=AsyncRetry(NoBackoff(), 0), **options)
    return aioredis.Redis.from_url(url, **options)


def client_client(settings: Settings) -> RedisClient:
    """The publisher's and the command line's client (a cluster client connects when built)."""
    url = redis_url(settings)
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.redis_timeout,
    }
    if is_cluster_url(url):
        return _cluster(url, options)
    return redis.Redis.from_url(url, **options)


def is_cluster(client: RedisClient | AsyncRedisClient) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster | AsyncRedisCluster)


def wait_for_replicas(client: RedisClient, key: str, replicas: int, timeout: float) -> int:
    """``WAIT replicas timeout`` after a write of ``key``: how many replicas acknowledged it.

    Sent to the master of ``key`` on a cluster (``WAIT`` elsewhere answers for writes that were not
    made there: docs/cluster.md). Call it from the thread that wrote, right after the write: the
    clients' pools hand a sequential caller the connection it used last, which is the one ``WAIT``
    measures.
    """
    timeout_ms = max(1, int(timeout * 1000))
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
        answer = client.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)  # type: ignore[no-untyped-call]
    else:
        answer = client.execute_command("WAIT", replicas, timeout_ms)  # type: ignore[no-untyped-call]
    return int(answer)


# -- internals ----------------------------------------------------------------------------------
def _cluster(url: str, options: dict[str, Any]) -> RedisCluster:
    found = parse_cluster_url(url)
    extra = [ClusterNode(host, port) for host, port in found.nodes[1:]]  # type: ignore[no-untyped-call]
    client = _discovering(lambda: RedisCluster.from_url(found.node_url, startup_nodes=extra, **options))()
    _guard_discovery(client)
    return client


def _translated(exc: RedisClusterException) -> RedisClusterException:
    """The discovery failure ``exc`` as ClusterUnreachable (an outage) or NotACluster (a mistake)."""
    if isinstance(exc, ClusterUnreachable | NotACluster):
        return exc
    if "not enabled" in str(exc):  # "Cluster mode is not enabled on this node"
        return NotACluster(f"{exc}: use redis:// for a single Redis")
    # "cannot be connected", "All slots are not covered", "could not agree on a valid slots cache"
    return ClusterUnreachable(str(exc))


def _discovering(call: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(call)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return call(*args, **kwargs)
        except RedisClusterException as exc:
            translated = _translated(exc)
            if translated is exc:
                raise
            raise translated from exc

    return run


def _guard_discovery(client: RedisCluster) -> None:
    """Make the client's later re-discoveries (after a failover...) raise the translated errors.

    The synchronous client re-discovers through its nodes manager from many places, so its
    ``initialize`` is wrapped on the instance.
    """
    manager = client.nodes_manager
    manager.initialize = _discovering(manager.initialize)  # type: ignore[method-assign]


class _AsyncCluster(AsyncRedisCluster):
    """The asyncio cluster client, whose discovery failures are translated (it always discovers here)."""

    async def initialize(self, *args: Any, **kwargs: Any) -> _AsyncCluster:
        try:
            await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            translated = _translated(exc)
            if translated is exc:
                raise
            raise translated from exc
        return self


def _waiting(connect: Callable[[], T], url: str) -> T:
    """``connect()``, retried with capped backoff while the cluster is unreachable."""
    delay, warned = 0.1, False
    while True:
        try:
            return connect()
        except ClusterUnreachable as exc:
            if not warned:
                log.warning("Redis Cluster at %s unreachable (%s); waiting for it", redact(url), exc)
                warned = True
            time.sleep(delay)
            delay = min(WAIT_BACKOFF_MAX, delay * 2)


__all__ = [
    "OUTAGE_ERRORS",
    "WORKER_MAX_CONNECTIONS",
    "AsyncRedisClient",
    "ClusterUnreachable",
    "NotACluster",
    "RedisClient",
    "client_client",
    "is_cluster",
    "service_client",
    "wait_for_replicas",
    "worker_client",
]
