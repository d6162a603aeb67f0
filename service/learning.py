"""The truth about learning, seen from the service: the backlog counted in the stream itself, and health.

The worker reports its lag in its status, but a dead worker reports nothing, and the last
snapshot's lag is frozen at the moment it was written. So the service measures for itself, at
each follower sync (at most every ``MIN_INTERVAL`` seconds):

* **Backlog**: samples after the latest snapshot's position. Redis counts the stream entries in one
  script that returns two numbers (no entry crosses the network, however large): on Redis >= 7
  ``XINFO STREAM``'s ``entries-added`` minus the snapshot's ``entries_consumed`` (O(1)); on
  Redis 6.2 the entries after the snapshot's ``last_id``, counted by ``XRANGE`` up to
  ``BACKLOG_CAP`` and reported as "at least" that beyond it (bounded cost). Entries become samples
  as the worker's lag does: each holds the mean of the entries consumed so far (1 for classic
  entries, up to ``pack_max`` for packed ones), less the samples of a packed entry the snapshot
  ends inside. Entries the worker learned since its last snapshot still count: they are not
  committed yet.
* **Health** (``digitstream.observability.HEALTH_STATES``): ``no-worker`` when nobody holds the
  model's lease (a killed worker's lease expires after ``lease_ttl``, 3 s by default);
  ``stalled`` when the lease is held but the worker's heartbeat (its status's ``updated_at``)
  has not moved for ``STALE_AFTER`` seconds of the service's own clock (no clock skew involved),
  or it does not report as active; whatever the worker itself reports otherwise (``ok``, or e.g.
  ``crash-looping``); ``unknown`` while Redis is unreachable.

``/readyz`` does not look at any of this: it means "can serve predictions", which a loaded model
does with or without a worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import ResponseError

from digitstream.connections import AsyncRedisClient
from digitstream.contracts import SnapshotMeta, WorkerStatus
from digitstream.jsonfields import ContractError
from digitstream.observability import HEALTH_STATES, Health
from digitstream.protocol import Keys
from digitstream.snapshot import META_FIELD

BACKLOG_CAP = 10_000  # Redis 6.2: entries counted at most per measure
STALE_AFTER = 5.0  # seconds without a heartbeat (at least 1/s) before a lease holder counts as stalled
MIN_INTERVAL = 0.25  # seconds between two measures

# KEYS: stream; ARGV: entries consumed, exclusive start "(ms-seq", cap. Returns {backlog, at_least(0/1)}.
BACKLOG_SCRIPT = """
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if not ok then return {0, 0} end
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then
    local n = tonumber(info[i + 1]) - tonumber(ARGV[1])
    if n < 0 then n = 0 end
    return {n, 0}
  end
end
local n = #redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', tonumber(ARGV[3]) + 1)
if n > tonumber(ARGV[3]) then return {tonumber(ARGV[3]), 1} end
return {n, 0}
"""


@dataclass(frozen=True)
class Learning:
    """What the service knows of the model's learning at one sync."""

    health: Health
    backlog: int | None  # samples after the latest snapshot's position (None: not measured)
    backlog_at_least: bool = False  # Redis < 7: the backlog is at least this (counted up to BACKLOG_CAP)
    backlog_entries: int | None = None  # the stream entries those samples are in
    heartbeat_age: float | None = None  # seconds since the worker's status last changed, service clock
    throughput: float = 0.0  # samples/s (the worker's, 0 without a healthy worker)
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "health": self.health, "backlog": self.backlog, "backlog_at_least": self.backlog_at_least,
            "backlog_entries": self.backlog_entries,
            "heartbeat_age": None if self.heartbeat_age is None else round(self.heartbeat_age, 3),
            "throughput": self.throughput, "detail": self.detail,
        }  # fmt: skip


UNKNOWN = Learning("unknown", None, detail="Redis is unreachable")


class LearningWatch:
    """Measures ``Learning`` at each sync; keeps what it needs between them (last heartbeat, latest position)."""

    def __init__(self, client: AsyncRedisClient, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._script = client.register_script(BACKLOG_SCRIPT)
        self._heartbeat: tuple[float, float] | None = None  # (status updated_at, service monotonic when it changed)
        self._latest_meta: dict[int, SnapshotMeta | None] = {}  # latest version -> its meta (None: unreadable)
        self._measured_at = -1e9
        self.current: Learning = Learning("unknown", None)

    async def update(
        self, status: WorkerStatus | None, lease_holder: bytes | None, latest: int | None, served: SnapshotMeta | None,
        served_version: int | None,
    ) -> Learning:  # fmt: skip
        """Measure again (unless measured less than ``MIN_INTERVAL`` ago)."""
        now = time.monotonic()
        heartbeat_age = self._heartbeat_age(status, now)
        if now - self._measured_at < MIN_INTERVAL and self.current.health != "unknown":
            return self.current
        self._measured_at = now
        position = await self._position(latest, served, served_version)
        entries, at_least = await self._backlog(position)
        backlog = None if entries is None else position.samples_behind(entries) if position else entries
        health, detail = _health(status, lease_holder, heartbeat_age)
        throughput = status.throughput if status is not None and health == "ok" else 0.0
        self.current = Learning(health, backlog, at_least, entries, heartbeat_age, throughput, detail)
        return self.current

    def _heartbeat_age(self, status: WorkerStatus | None, now: float) -> float | None:
        if status is None:
            self._heartbeat = None
            return None
        if self._heartbeat is None or self._heartbeat[0] != status.updated_at:
            self._heartbeat = (status.updated_at, now)
        return now - self._heartbeat[1]

    async def _position(
        self, latest: int | None, served: SnapshotMeta | None, served_version: int | None
    ) -> SnapshotMeta | None:
        """The latest snapshot's meta (its position); None for a model without one, or an unreadable one."""
        if latest is None:
            return None
        if served is not None and served_version == latest:
            return served
        if latest not in self._latest_meta:  # pinned to an older version: read the latest one's (once per version)
            raw = await self._client.hget(self._keys.snapshot(latest), META_FIELD)
            self._latest_meta = {latest: _meta_of(raw)}
        return self._latest_meta[latest]

    async def _backlog(self, position: SnapshotMeta | None) -> tuple[int | None, bool]:
        """Stream entries after the position (Redis counts them), and whether that is a lower bound."""
        consumed, last_id = (position.entries_consumed, position.last_id) if position else (0, "0-0")
        try:
            n, at_least = await self._script(keys=[self._keys.samples], args=[consumed, f"({last_id}", BACKLOG_CAP])
        except ResponseError:  # e.g. the key holds something else than a stream
            return None, False
        return int(n), bool(int(at_least))


def _meta_of(raw: bytes | str | None) -> SnapshotMeta | None:
    try:
        return SnapshotMeta.from_json(orjson.loads(raw)) if raw is not None else None
    except (orjson.JSONDecodeError, ContractError):
        return None


def _health(
    status: WorkerStatus | None, lease_holder: bytes | None, heartbeat_age: float | None
) -> tuple[Health, str | None]:
    if lease_holder is None:
        return "no-worker", "no worker holds the model's lease: nothing is being learned"
    if status is None or heartbeat_age is None or heartbeat_age > STALE_AFTER:
        age = "no status" if heartbeat_age is None else f"no heartbeat for {heartbeat_age:.0f}s"
        return "stalled", f"a worker holds the lease but is not learning ({age})"
    if status.state != "active":
        return "stalled", f"the lease holder reports {status.state!r}, not active"
    if status.health != "ok" and status.health in HEALTH_STATES:
        return status.health, f"the worker reports {status.health}"  # type: ignore[return-value]
    return "ok", None


__all__ = ["BACKLOG_CAP", "BACKLOG_SCRIPT", "STALE_AFTER", "UNKNOWN", "Learning", "LearningWatch"]
