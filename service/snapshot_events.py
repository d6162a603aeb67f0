"""Snapshot notifications for the service's follower: pub/sub on one Redis, sharded pub/sub on a cluster.

- **One Redis** (6.2 or later): ``SUBSCRIBE`` to ``Keys.snapshot_events``; the snapshot script
  ``PUBLISH``\\es it.
- **Redis Cluster**: ``SSUBSCRIBE`` to the same channel, on the node serving its hash slot (Redis 7
  sharded pub/sub; redis-py >= 8 routes it and moves it after a failover). The channel shares the
  model's hash tag, so the snapshot script can ``SPUBLISH`` it atomically with the snapshot: a
  sharded message stays within the model's shard, where a classic ``PUBLISH`` on a cluster is
  broadcast to every node over the cluster bus (a cost that grows with nodes and models).
- **Polling only** where neither is possible (a cluster of Redis < 7, which has no ``SSUBSCRIBE``;
  redis-py < 8, which has no asyncio cluster pub/sub): said once in the log. The follower polls
  every ``poll_interval`` in any case, so a lost or missing notification delays a reload by at
  most that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import RedisError, ResponseError

from digitstream.connections import AsyncRedisClient

log = logging.getLogger(__name__)

_QUICK = 0.005  # seconds: an empty answer sooner than this did not wait for anything
_PAUSE = 0.05  # seconds to wait before asking again after such an answer


class SnapshotEvents:
    """A subscription: :meth:`next` waits for one notification, or for ``timeout`` seconds."""

    def __init__(self, receive: Callable[[float], Awaitable[dict[str, Any] | None]] | None, kind: str) -> None:
        self._receive = receive
        self.kind = kind  # "pubsub", "sharded pubsub" or "polling"

    async def next(self, timeout: float) -> bytes | None:
        """The data of the next notification, or None once ``timeout`` seconds have passed without one."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if self._receive is None:
                await asyncio.sleep(remaining)
                return None
            started = time.monotonic()
            message = await self._receive(remaining)  # None also for a (skipped) subscribe confirmation
            if message is not None:
                data = message.get("data")
                return data if isinstance(data, bytes) else str(data).encode()
            if time.monotonic() - started < _QUICK:
                # Answered at once without a message, e.g. with no node left to listen to while a
                # cluster fails over: wait a little rather than spin.
                await asyncio.sleep(min(_PAUSE, max(0.0, deadline - time.monotonic())))
        return None


@contextlib.asynccontextmanager
async def snapshot_events(client: AsyncRedisClient, channel: str) -> AsyncIterator[SnapshotEvents]:
    """Subscribe to ``channel`` for the duration (see the module docstring for which kind)."""
    if not isinstance(client, AsyncRedisCluster):
        async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(channel)
            yield SnapshotEvents(lambda t: pubsub.get_message(ignore_subscribe_messages=True, timeout=t), "pubsub")
        return
    if not hasattr(client, "pubsub"):  # redis-py < 8: no asyncio cluster pub/sub
        _polling_only("this redis-py has no asyncio cluster pub/sub (redis-py >= 8 has)")
        yield SnapshotEvents(None, "polling")
        return
    await client.initialize()  # routing a shard channel needs the map of the slots
    pubsub = client.pubsub()
    try:
        try:
            await pubsub.ssubscribe(channel)
        except ResponseError as exc:  # "unknown command 'SSUBSCRIBE'": Redis < 7
            if "unknown command" not in str(exc).lower():
                raise
            _polling_only("the cluster's Redis has no sharded pub/sub (Redis >= 7 has)")
            yield SnapshotEvents(None, "polling")
            return
        yield SnapshotEvents(
            lambda t: pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=t), "sharded pubsub"
        )
    finally:
        with contextlib.suppress(RedisError, OSError):  # closing a subscription to a node that died
            await pubsub.aclose()


_warned: set[str] = set()


def _polling_only(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("snapshot notifications off: %s; following the snapshots by polling only", reason)


__all__ = ["SnapshotEvents", "snapshot_events"]
