"""The Redis clients of each role, built in one place from ``Settings`` (connections are made only at entry points).

- :func:`worker_client`: no automatic retries. The worker retries by itself, because it must know
  whether a snapshot write was sent (a retried write whose reply was lost would be applied twice).
  Its read timeout outlasts its blocking stream reads.
- :func:`service_client`: asyncio, short timeouts. A slow or absent Redis must not hold requests:
  the API keeps serving the model it has in memory.
- :func:`client_client`: the publisher and the command line; generous timeouts for large pipelines.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .settings import Settings, redis_url


def worker_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        redis_url(settings),
        socket_connect_timeout=settings.redis_connect_timeout,
        socket_timeout=settings.block_ms / 1000 + settings.redis_timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
    )


def service_client(settings: Settings) -> aioredis.Redis:
    timeout = settings.service_redis_timeout
    return aioredis.Redis.from_url(
        redis_url(settings),
        socket_connect_timeout=min(timeout, settings.redis_connect_timeout),
        socket_timeout=timeout,
        health_check_interval=10,
    )


def client_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        redis_url(settings),
        socket_connect_timeout=settings.redis_connect_timeout,
        socket_timeout=settings.redis_timeout,
    )


__all__ = ["client_client", "service_client", "worker_client"]
