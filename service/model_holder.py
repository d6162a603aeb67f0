"""The served model: an immutable snapshot view swapped by one reference assignment, following Redis.

A request reads ``holder.current`` once and uses only that object, so a swap (a single
assignment) can never show it half a model. The follower task keeps ``current`` on the newest
snapshot: it wakes on the snapshot events channel (pub/sub on one Redis, sharded pub/sub on a
cluster: ``snapshot_events``) and at least every ``settings.poll_interval`` (in case a
notification was lost, e.g. while reconnecting), reads the "latest" and pin pointers and the
worker status in one MGET, and loads a new version only when the target changed. Redis errors
never drop the model in memory; the follower reconnects with a capped backoff.

Pinning is stored in Redis (``Keys.pinned``), so every replica serves the same version: the
replica that receives the request switches at once, the others at their next poll.

The snapshot metadata and the worker status are read as their contracts (``SnapshotMeta``,
``WorkerStatus``). A snapshot whose metadata breaks the contract is not served (like any
undecodable snapshot); a garbled or foreign status counts as absent. Both are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import orjson
from redis.exceptions import RedisClusterException, RedisError

from digitstream.connections import AsyncRedisClient
from digitstream.contracts import SnapshotMeta, WorkerStatus
from digitstream.learner import Scorer, scorer_for, scores_to_proba
from digitstream.protocol import Keys
from digitstream.snapshot import META_FIELD, SnapshotError, decode_snapshot
from digitstream.store import parse_event

from .learning import UNKNOWN, Learning, LearningWatch
from .snapshot_events import snapshot_events

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0  # seconds between reconnection attempts: an outage ends, service resumes soon after


class NoModelYet(RuntimeError):
    """No snapshot has been loaded yet (none written, or Redis unreachable since start)."""


class VersionNotFound(LookupError):
    """The requested version is not kept in Redis."""


@dataclasses.dataclass(frozen=True, eq=False)
class ServedModel:
    """One loaded snapshot; never mutated after construction (``pinned`` changes make a copy)."""

    version: int
    samples_learned: int
    meta: SnapshotMeta
    scorer: Scorer
    pinned: bool = False
    loaded_at: float = dataclasses.field(default_factory=time.time)

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes], pinned: bool = False) -> ServedModel:
        """Decode a snapshot hash (no pickle: JSON + raw arrays) and build its numpy scorer."""
        snapshot = decode_snapshot(fields)
        meta = snapshot.typed_meta()
        try:
            scorer = scorer_for(snapshot.learner_state())
        except ValueError as exc:
            raise SnapshotError(f"snapshot {snapshot.version} cannot be served: {exc}") from None
        return cls(snapshot.version, meta.samples_learned, meta, scorer, pinned)

    @property
    def rule(self) -> str:
        return self.scorer.params.rule

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(digits (n,), probabilities (n, 10)); the digit is the first maximum score, as in the learner."""
        scores = self.scorer.scores(images)
        return np.argmax(scores, axis=1), scores_to_proba(scores, self.rule)

    @property
    def created_at(self) -> float | None:
        return self.meta.created_at

    def age(self, now: float | None = None) -> float | None:
        created = self.created_at
        return None if created is None else max(0.0, (now or time.time()) - created)


class ModelHolder:
    """Owns ``current`` and the task that keeps it up to date."""

    def __init__(self, client: AsyncRedisClient, keys: Keys, poll_interval: float) -> None:
        self._client = client
        self._keys = keys
        self._pin_key = keys.pinned
        self._poll_interval = poll_interval
        self._lock = asyncio.Lock()
        self._bad_versions: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self.current: ServedModel | None = None
        self.latest_version: int | None = None
        self.redis_ok = False
        self.worker_status: WorkerStatus | None = None
        self.swaps = 0
        self.pinned: int | None = None  # the pin pointer as last read
        self.lease_holder: bytes | None = None  # the model's lease as last read (None: no worker)
        self.learning: Learning = UNKNOWN  # backlog counted in the stream, learning health (service.learning)
        self._watch = LearningWatch(client, keys)
        self.listeners: list[Callable[[ModelHolder], None]] = []  # called after every sync and outage
        self._status_problem: str | None = None  # the last one logged: a bad status is logged once, not per poll
        self._metas: dict[int, tuple[bytes, SnapshotMeta | None]] = {}  # kept versions' metadata, as last read

    # -- reading --------------------------------------------------------------------------------
    @property
    def keys(self) -> Keys:
        """The Redis keys of the model this holder follows."""
        return self._keys

    def require(self) -> ServedModel:
        model = self.current
        if model is None:
            raise NoModelYet("no model snapshot has been loaded yet: the worker writes the first one after learning")
        return model

    # -- following ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self, first_sync_timeout: float = 2.0) -> AsyncIterator[ModelHolder]:
        """Run the follower for the duration; wait (briefly) for the first snapshot at start."""
        self._task = asyncio.create_task(self._follow(), name="snapshot-follower")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), first_sync_timeout)
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        backoff = 0.05
        while True:
            try:
                # Read before subscribing too: on a cluster this discovers the nodes (and, after a
                # failover, the promoted ones), which routing the subscription needs.
                await self.sync()
                async with snapshot_events(self._client, self._keys.snapshot_events) as events:
                    await self.sync()  # after subscribing: nothing written in between is missed
                    backoff = 0.05
                    while True:
                        data = await events.next(self._poll_interval)
                        if data is not None:
                            with contextlib.suppress(SnapshotError):
                                log.debug("snapshot event: version %d", parse_event(data))
                        await self.sync()
            except asyncio.CancelledError:
                raise
            except (RedisError, RedisClusterException, OSError) as exc:  # the latter: e.g. keys in several slots
                if self.redis_ok:
                    log.warning("Redis unreachable (%s); serving version %s from memory", exc, self._served())
                self.redis_ok = False
                self.learning = UNKNOWN
                self._notify()
                self._synced.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def sync(self) -> None:
        """Read the pointers, the lease and the worker status; load the target version if it changed."""
        async with self._lock:
            latest, pinned, status, lease = await self._client.mget(  # bytes or None each
                self._keys.snapshot_latest, self._pin_key, self._keys.worker_status, self._keys.lease
            )
            if not self.redis_ok:
                log.info("Redis reachable")
            self.redis_ok = True
            self.latest_version = _as_int(latest)
            self.worker_status = self._read_status(status)
            self.lease_holder = lease if isinstance(lease, bytes) or lease is None else str(lease).encode()
            self.pinned = _as_int(pinned)
            await self._follow_pointers(self.pinned)
            current = self.current
            meta, served = (current.meta, current.version) if current is not None else (None, None)
            self.learning = await self._watch.update(
                self.worker_status, self.lease_holder, self.latest_version, meta, served
            )
        self._synced.set()
        self._notify()

    async def _follow_pointers(self, pinned_version: int | None) -> None:
        if pinned_version is not None and await self._switch(pinned_version, pinned=True):
            return
        if pinned_version is not None:
            log.warning("pinned version %d is not kept any more; following the latest", pinned_version)
        if self.latest_version is not None:
            await self._switch(self.latest_version, pinned=False)
        elif self.current is not None and self.current.pinned:
            self._swap(dataclasses.replace(self.current, pinned=False))

    def _notify(self) -> None:
        for listener in self.listeners:
            try:
                listener(self)
            except Exception:  # a listener's bug must not stop the follower
                log.exception("snapshot follower listener failed")

    async def _switch(self, version: int, *, pinned: bool) -> bool:
        """Serve ``version``; False if it cannot be loaded. Call with the lock held."""
        current = self.current
        if current is not None and current.version == version:
            if current.pinned != pinned:
                self._swap(dataclasses.replace(current, pinned=pinned))
            return True
        if version in self._bad_versions:
            return False
        model = await self._load(version, pinned)
        if model is None:
            return False
        self._swap(model)
        return True

    async def _load(self, version: int, pinned: bool) -> ServedModel | None:
        fields: dict[bytes, bytes] = await self._client.hgetall(self._keys.snapshot(version))  # type: ignore[assignment]
        if not fields:
            return None
        try:
            return await asyncio.to_thread(ServedModel.from_fields, fields, pinned)
        except (SnapshotError, ValueError, KeyError, TypeError) as exc:
            log.error("snapshot %d cannot be served (%s); keeping version %s", version, exc, self._served())
            self._bad_versions.add(version)
            return None

    def _swap(self, model: ServedModel) -> None:
        self.current = model  # the atomic swap: requests hold their own reference
        self.swaps += 1
        log.info("serving version %d (%d samples learned%s)", model.version, model.samples_learned,
                 ", pinned" if model.pinned else "")  # fmt: skip

    def _read_status(self, raw: bytes | str | None) -> WorkerStatus | None:
        """The worker status as its contract; a garbled or foreign one counts as absent."""
        try:
            status = None if raw is None else WorkerStatus.from_json(orjson.loads(raw))
        except ValueError as exc:  # not strict JSON, or not the contract
            if str(exc) != self._status_problem:
                log.warning("ignoring the worker status in %s: %s", self._keys.worker_status, exc)
                self._status_problem = str(exc)
            return None
        self._status_problem = None
        return status

    def _served(self) -> int | None:
        return self.current.version if self.current else None

    # -- pinning --------------------------------------------------------------------------------
    async def pin(self, version: int) -> ServedModel:
        """Serve ``version`` on every replica until unpinned; VersionNotFound if it is not kept."""
        async with self._lock:
            if await self._client.zscore(self._keys.snapshot_versions, version) is None:
                raise VersionNotFound(version)
            self._bad_versions.discard(version)
            if not await self._switch(version, pinned=True):
                raise VersionNotFound(version)
            await self._client.set(self._pin_key, version)
            # The worker's snapshot script reads the pin atomically and never collects it: once the pin is
            # set, the version is safe if it is still there; if the collection got in first, undo the pin.
            if await self._client.zscore(self._keys.snapshot_versions, version) is None:
                await self._client.delete(self._pin_key)
                raise VersionNotFound(version)
        await self.sync()
        return self.require()

    async def unpin(self) -> ServedModel:
        """Follow the latest snapshot again."""
        await self._client.delete(self._pin_key)
        await self.sync()
        return self.require()

    async def versions(self) -> list[dict[str, Any]]:
        """Kept versions, oldest first, with a few metadata fields each."""
        members: list[bytes] = await self._client.zrange(self._keys.snapshot_versions, 0, -1)  # type: ignore[assignment]
        versions = [int(v) for v in members]
        async with self._client.pipeline(transaction=False) as pipe:
            for version in versions:
                pipe.hget(self._keys.snapshot(version), META_FIELD)
            metas = await pipe.execute()
        out = []
        known, self._metas = self._metas, {}
        for version, raw in zip(versions, metas, strict=True):
            if raw is None:
                continue  # trimmed between the two reads
            self._metas[version] = entry = self._read_meta(version, raw, known.get(version))
            meta = entry[1]
            if meta is None:
                continue
            out.append({
                "version": version,
                "samples_learned": meta.samples_learned,
                "created_at": meta.created_at,
                "prequential_accuracy": meta.metrics.prequential_accuracy,
            })  # fmt: skip
        return out

    @staticmethod
    def _read_meta(
        version: int, raw: bytes, known: tuple[bytes, SnapshotMeta | None] | None
    ) -> tuple[bytes, SnapshotMeta | None]:
        """(raw, its SnapshotMeta or None if it breaks the contract), parsed only if ``raw`` is new.

        A meta with a full learning curve takes milliseconds to check, and this runs on the event
        loop for anyone who asks: each kept version is checked (and a bad one logged) once.
        """
        if known is not None and known[0] == raw:
            return known
        try:
            return raw, SnapshotMeta.from_json(orjson.loads(raw))
        except ValueError as exc:
            log.error("snapshot %d has unreadable metadata (%s); not listed", version, exc)
            return raw, None

    async def pinned_version(self) -> int | None:
        return _as_int(await self._client.get(self._pin_key))


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
