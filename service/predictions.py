"""Prediction inputs kept for feedback: a local LRU plus Redis keys with a TTL, shared by all replicas.

/predict must not wait for Redis, so ``keep`` only appends to an in-process buffer (and to a
bounded LRU that answers feedback given to this replica at once); a background task writes the
buffer every ``FLUSH_INTERVAL`` with one Lua call (``SET key pixels PX ttl`` per prediction), which
costs far less event-loop time than one pipelined command per prediction. While Redis is down
predictions still succeed; the buffer is kept (bounded) and written when Redis returns.

Bounded in time and size: each key lives ``prediction_ttl`` seconds, shortened when the
prediction rate would keep more than ``max_kept`` inputs alive at once (``ttl = max_kept / rate``),
so a flood of predictions cannot fill Redis' memory (~0.9 KB per kept input).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from digitstream.connections import AsyncRedisClient
from digitstream.protocol import Keys

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05
MAX_KEPT = 100_000  # inputs alive in Redis per replica at most (~90 MB)
MIN_TTL = 10.0  # seconds: even under a flood, feedback right after a prediction works
LOCAL_SIZE = 10_000
MAX_PENDING = 50_000  # buffered while Redis is down; the oldest are dropped beyond this
CHUNK = 2_000  # predictions per Lua call

_SET_MANY = """
local px = ARGV[1]
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'PX', px) end
return #KEYS
"""


class PredictionIds:
    """Unguessable 128-bit ids, hex; the entropy is read from the OS in bulk (one syscall per 4,096 ids)."""

    def __init__(self, batch: int = 4096) -> None:
        self._batch = batch
        self._pool = b""
        self._next = 0

    def __call__(self) -> str:
        start = self._next
        if start + 16 > len(self._pool):
            self._pool, start = os.urandom(16 * self._batch), 0
        self._next = start + 16
        return self._pool[start : start + 16].hex()


class PredictionStore:
    """``keep`` (synchronous, cheap) and ``get`` (local first, then Redis)."""

    def __init__(
        self,
        client: AsyncRedisClient,
        keys: Keys,
        ttl: float,
        *,
        max_kept: int = MAX_KEPT,
        local_size: int = LOCAL_SIZE,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl = ttl
        self._max_kept = max_kept
        self._local_size = local_size
        self._local: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._pending: list[tuple[str, bytes]] = []
        self._script = client.register_script(_SET_MANY)
        self._rate = 0.0  # predictions/s, smoothed over flushes
        self._last_flush = time.monotonic()
        self.dropped = 0
        self._new_id = PredictionIds()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def keep(self, pixels: bytes) -> str:
        """Remember a prediction's 784 pixels; returns its new prediction id."""
        prediction_id = self._new_id()
        local = self._local
        local[prediction_id] = (pixels, time.monotonic() + self._ttl)
        if len(local) > self._local_size:
            local.popitem(last=False)
        self._pending.append((prediction_id, pixels))
        return prediction_id

    async def get(self, prediction_id: str) -> bytes | None:
        """The kept pixels, or None if unknown or expired; RedisError if only Redis could tell."""
        entry = self._local.get(prediction_id)
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        value = await self._client.get(self._keys.prediction(prediction_id))
        return value.encode() if isinstance(value, str) else value

    def effective_ttl(self) -> float:
        """``prediction_ttl``, shortened so that at most ``max_kept`` inputs are alive at the current rate."""
        if self._rate <= 0:
            return self._ttl
        return max(min(self._ttl, self._max_kept / self._rate), min(self._ttl, MIN_TTL))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PredictionStore]:
        task = asyncio.create_task(self._flush_loop(), name="prediction-flusher")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(RedisError, OSError):
                await asyncio.wait_for(self.flush(), 1.0)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                log.debug("predictions not written yet (%s); %d buffered", exc, len(self._pending))
                await asyncio.sleep(0.5)  # the follower reports the outage; retry calmly

    async def flush(self) -> int:
        """Write the buffered predictions; returns how many were written."""
        now = time.monotonic()
        batch, self._pending = self._pending, []
        elapsed = max(now - self._last_flush, 1e-3)
        self._last_flush = now
        self._rate = 0.8 * self._rate + 0.2 * (len(batch) / elapsed)
        if not batch:
            return 0
        ttl_ms = max(1, int(self.effective_ttl() * 1000))
        done = 0
        try:
            while done < len(batch):
                chunk = batch[done : done + CHUNK]
                keys = [self._keys.prediction(pid) for pid, _ in chunk]
                await self._script(keys=keys, args=[ttl_ms, *(pixels for _, pixels in chunk)])
                done += len(chunk)
        except BaseException:
            self._requeue(batch[done:])
            raise
        return len(batch)

    def _requeue(self, batch: list[tuple[str, bytes]]) -> None:
        pending = batch + self._pending
        if len(pending) > MAX_PENDING:
            self.dropped += len(pending) - MAX_PENDING
            pending = pending[-MAX_PENDING:]
        self._pending = pending
