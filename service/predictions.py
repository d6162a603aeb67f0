"""Prediction inputs kept for feedback, each usable once: pending in this process, then Redis keys with a TTL.

/predict must not wait for Redis, so ``keep`` only adds to an in-process buffer; a background
task writes the buffer every ``FLUSH_INTERVAL`` with one Lua call (``SET key pixels PX ttl`` per
prediction), which costs far less event-loop time than one pipelined command per prediction.
While Redis is down predictions still succeed; the buffer is kept (bounded) and written when
Redis returns.

Feedback *takes* an input: from the buffer if it was never written (then no other replica can
have seen it), else from Redis with one script that reads and deletes the key and leaves a
"used" marker, atomically, so that one prediction id is learned once however many replicas are
asked. A replay answers :class:`AlreadyUsed`.

Bounded in time and size: each key lives ``prediction_ttl`` seconds, shortened when the
prediction rate would keep more than ``max_kept`` inputs alive at once (``ttl = max_kept / rate``),
so a flood of predictions cannot fill Redis' memory (~0.9 KB per kept input).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from digitstream.connections import AsyncRedisClient
from digitstream.protocol import Keys

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05
MAX_KEPT = 100_000  # inputs alive in Redis per replica at most (~90 MB)
MIN_TTL = 10.0  # seconds: even under a flood, feedback right after a prediction works
MAX_PENDING = 50_000  # buffered while Redis is down; the oldest are dropped beyond this
CHUNK = 2_000  # predictions per Lua call

_SET_MANY = """
local px = ARGV[1]
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'PX', px) end
return #KEYS
"""

# KEYS: the input, its "used" marker. ARGV: the marker's lifetime (ms). The input, 1 if used, or nil.
# Only GETDEL, SET and GET: the commands the API's Redis user has on prediction keys (redis_config.py).
_TAKE = """
local value = redis.call('GETDEL', KEYS[1])
if value then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return value
end
if redis.call('GET', KEYS[2]) then return 1 end
return false
"""


class AlreadyUsed(LookupError):
    """Feedback was already given for this prediction (here or on another replica)."""


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
    """``keep`` (synchronous, cheap) and ``take`` (once: the buffer, else Redis)."""

    def __init__(self, client: AsyncRedisClient, keys: Keys, ttl: float, *, max_kept: int = MAX_KEPT) -> None:
        self._client = client
        self._keys = keys
        self._ttl = ttl
        self._max_kept = max_kept
        self._pending: dict[str, bytes] = {}
        self._flushing: dict[str, bytes] = {}  # being written by the flusher right now
        self._flushed = asyncio.Event()
        self._script = client.register_script(_SET_MANY)
        self._take = client.register_script(_TAKE)
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
        self._pending[prediction_id] = pixels
        return prediction_id

    async def take(self, prediction_id: str) -> bytes | None:
        """The kept pixels, at most once; None if unknown or expired; AlreadyUsed; RedisError if Redis must tell."""
        key, used = self._keys.prediction(prediction_id), self._used_key(prediction_id)
        while True:
            pixels = self._pending.pop(prediction_id, None)
            if pixels is not None:  # never written: only this process knows it; the marker tells a replay
                try:
                    await self._client.set(used, b"1", px=self._ttl_ms())
                except BaseException:
                    self.give_back(prediction_id, pixels)
                    raise
                return pixels
            if prediction_id not in self._flushing:
                break
            await self._flushed.wait()  # being written: take it once it is in Redis (or back in the buffer)
        value = await self._take(keys=[key, used], args=[self._ttl_ms()])
        if value is None:
            return None
        if isinstance(value, int):
            raise AlreadyUsed(prediction_id)
        return value.encode() if isinstance(value, str) else bytes(value)

    def give_back(self, prediction_id: str, pixels: bytes) -> None:
        """Undo a ``take`` whose feedback could not be published: kept again (written at the next flush)."""
        self._pending[prediction_id] = pixels

    def _used_key(self, prediction_id: str) -> str:
        return self._keys.prediction(prediction_id) + ":used"

    def _ttl_ms(self) -> int:
        return max(1, int(self._ttl * 1000))

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
        batch, self._pending = self._pending, {}
        elapsed = max(now - self._last_flush, 1e-3)
        self._last_flush = now
        self._rate = 0.8 * self._rate + 0.2 * (len(batch) / elapsed)
        if not batch:
            return 0
        ttl_ms = max(1, int(self.effective_ttl() * 1000))
        items = list(batch.items())
        self._flushing = batch
        self._flushed.clear()
        done = 0
        try:
            while done < len(items):
                chunk = items[done : done + CHUNK]
                keys = [self._keys.prediction(pid) for pid, _ in chunk]
                await self._script(keys=keys, args=[ttl_ms, *(pixels for _, pixels in chunk)])
                done += len(chunk)
        except BaseException:
            self._requeue(items[done:])
            raise
        finally:
            self._flushing = {}
            self._flushed.set()
        return len(items)

    def _requeue(self, items: list[tuple[str, bytes]]) -> None:
        pending = dict(items)
        pending.update(self._pending)
        if len(pending) > MAX_PENDING:
            excess = len(pending) - MAX_PENDING
            self.dropped += excess
            for key in list(itertools.islice(pending, excess)):  # the oldest
                del pending[key]
        self._pending = pending
