"""Committing a worker's progress: one snapshot holds the learner, its position, the dead letters and the trim.

* **Exactly once.** The stream position and the learner state are committed only together, in one
  snapshot written by ``digitstream.store.write_snapshot`` (one Lua script). On start the worker
  loads the latest snapshot and reads after its ``last_id``; whatever it learned after that
  snapshot and lost in a crash is read and learned again, so every entry counts once.
* **Dead letters ride with the snapshot.** Malformed entries found since the last snapshot are
  buffered here and written by the snapshot script itself, atomically with the position that
  passes them, so a crash can neither lose nor duplicate one. A burst of them makes a snapshot due.
* **Ambiguous writes.** If a snapshot write fails with a connection error, the worker waits for
  Redis and reads the latest snapshot's metadata back to learn whether the write landed before
  deciding anything. The Redis client must therefore not retry commands by itself (the CLI's
  client does not): a retried write whose reply was lost would be applied twice.
* **Fenced by the parent version.** Each write names the version the worker's state descends
  from; the script refuses it (``StaleParent``, handled like a lost lease: reload the latest) if
  ``latest`` is anything else, and checks everything before its first write (all or nothing).
* **Retention.** The same script trims learned entries from the stream (a stream outside the model's
  slot, ``Keys.stream_apart``: a second script right after it, in the stream's slot): below a MINID that keeps
  the newest ``retention_max_len`` entries this worker consumed and none older than
  ``retention_max_age``; and, until this worker has consumed ``retention_max_len`` entries itself,
  to that length while little is left to learn (``worker.retention``, ``store.TRIM_PROBE``).
  The length counts samples (a packed entry as many as it holds); once packed entries were seen
  only the MINID trims.
  Entries after the lowest position of every model reading the stream (``Keys.readers``, recorded
  by each snapshot and when a worker loads) are never trimmed.
* **Versions.** The newest ``keep_versions``, the pinned one, and one per minute for
  ``keep_minutely`` minutes and one per hour for ``keep_hourly`` hours (``digitstream.commit_script``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from digitstream.connections import RedisClient, wait_for_replicas
from digitstream.contracts import LearnerDescriptor, MetricsReport, SnapshotMeta, WorkerSettings
from digitstream.learner import LearnerState
from digitstream.observability import add_count, deadletter_class
from digitstream.protocol import FIELD_REASON, Keys, deadletter_fields
from digitstream.settings import Settings
from digitstream.snapshot import META_FIELD, Snapshot, SnapshotError
from digitstream.store import latest_version, list_versions, read_snapshot, register_reader, write_snapshot

from .dedupe import Producers
from .metrics import ROLLING_ARRAY, OnlineMetrics
from .position import Position
from .retention import ConsumedIds, trim_minid
from .retry import CONNECTION_ERRORS, RedisRetry
from .status import Health

if TYPE_CHECKING:
    from digitstream.learner import Learner

log = logging.getLogger("digitstream.worker")

MAX_PENDING_DEADLETTERS = 1000  # a burst of bad entries forces an early snapshot (bounded script arguments)
MAX_PENDING_DEADLETTER_BYTES = 8 * 1024 * 1024


class Commits:
    """What the next snapshot commits besides the learner (dead letters, trim), when it is due, and its write.

    ``version`` is the snapshot the worker's state equals or descends from (None for a new model);
    ``parent`` the ``latest`` it builds on (``version``, unless that was unreadable and an older one
    was loaded): the next write is refused unless ``latest`` still is that.
    """

    def __init__(
        self, settings: Settings, client: RedisClient, worker_id: str, retry: RedisRetry,
        version: int | None = None, samples_passed: int = 0, parent: int | None = None,
        deadletter_reasons: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.client = client
        self.keys: Keys = settings.keys
        self.worker_id = worker_id
        self.retry = retry
        self.version = version
        self.parent = parent if parent is not None else version
        self.consumed_ids = ConsumedIds(settings.retention_max_len)
        self.deadletters: list[dict[bytes, bytes]] = []
        self._deadletter_bytes = 0
        # By reason class over the model's life; committed with the dead letters themselves.
        self.deadletter_reasons: dict[str, int] = dict(deadletter_reasons or {})
        self._passed = samples_passed  # at the last snapshot: what the next one has news beyond
        self._faults = 0
        self._time = time.monotonic()
        self._packed = False  # packed entries seen: the script's length trim (in entries) is not used

    # -- between snapshots ----------------------------------------------------------------------
    def dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        """Buffer a malformed entry for the next snapshot, bounded (``protocol.deadletter_fields``)."""
        self.deadletter_reasons = add_count(self.deadletter_reasons, deadletter_class(reason))
        entry = deadletter_fields(entry_id, fields, reason)
        self.deadletters.append(entry)
        self._deadletter_bytes += sum(len(k) + len(v) for k, v in entry.items())
        log.debug("dead letter %s: %s", entry_id.decode(), entry[FIELD_REASON].decode())

    def consumed(self, entry_ids: list[bytes], sizes: dict[bytes, int] | None = None) -> None:
        """Entries passed by the position (their ids and sizes decide the retention trim)."""
        self.consumed_ids.extend(entry_ids, sizes)
        self._packed = self._packed or bool(sizes)

    def has_news(self, position: Position, faults_seen: int) -> bool:
        return position.samples_passed > self._passed or faults_seen > self._faults

    def due(self, position: Position, faults_seen: int) -> bool:
        """Every ``snapshot_every`` samples, on a burst of dead letters, or ``snapshot_interval`` after news."""
        s = self.settings
        if self.due_by_count(position.samples_passed) or self._deadletter_bytes >= MAX_PENDING_DEADLETTER_BYTES:
            return True
        return self.has_news(position, faults_seen) and time.monotonic() - self._time >= s.snapshot_interval

    def due_by_count(self, samples_passed: int, more_deadletters: int = 0) -> bool:
        """Whether ``samples_passed`` samples passed, or ``more_deadletters`` beside those buffered, make a
        snapshot due (every ``snapshot_every`` samples, every ``MAX_PENDING_DEADLETTERS`` dead letters)."""
        if len(self.deadletters) + more_deadletters >= MAX_PENDING_DEADLETTERS:
            return True
        return samples_passed - self._passed >= self.settings.snapshot_every

    def due_in_ms(self, position: Position, faults_seen: int) -> int | None:
        """Milliseconds until ``snapshot_interval`` makes a snapshot due (None without news to commit)."""
        if not self.has_news(position, faults_seen):
            return None
        return int(max(0.0, self.settings.snapshot_interval - (time.monotonic() - self._time)) * 1000)

    # -- the snapshot ---------------------------------------------------------------------------
    def commit(
        self, learner: Learner, position: Position, metrics: OnlineMetrics, health: Health,
        keep_lease: Callable[[], None], producers: Producers | None = None,
    ) -> int:  # fmt: skip
        """Write learner, position, metrics, faults, dead letters, producers' marks and trim as the next version.

        ``keep_lease()`` renews the lease (raising ``LeaseLost`` if it is gone) before each attempt.
        """
        started, created_at = time.monotonic(), time.time()
        state = learner.state()
        meta = self.meta(state, position, health.with_measures(metrics.report()), health, created_at)
        arrays = {**state.arrays, ROLLING_ARRAY: metrics.rolling_outcomes()}
        arrays.update(producers.arrays() if producers else {})
        snapshot = Snapshot(meta.to_json(), arrays)
        minid, maxlen = self.trim(position.last_id, created_at)
        keep_lease()  # after an outage longer than the TTL: claim it again rather than lose the state
        self.version = self.parent = self._write(snapshot, meta, minid, maxlen, keep_lease)
        if self.deadletters:
            self._trim_deadletters()
        self.deadletters, self._deadletter_bytes = [], 0
        self._passed, self._faults, self._time = position.samples_passed, health.faults_seen, started
        return self.version

    def meta(
        self, state: LearnerState, position: Position, metrics: MetricsReport, health: Health, created_at: float
    ) -> SnapshotMeta:
        s = self.settings
        return SnapshotMeta(
            samples_learned=state.n_samples, last_id=position.last_id,
            learner=LearnerDescriptor.from_json(state.meta()), entries_consumed=position.entries_consumed,
            model=self.keys.model, created_at=created_at, deadletter_count=position.deadletter_count,
            samples_skipped=position.samples_skipped, duplicates_skipped=position.duplicates_skipped,
            offset=position.offset,
            metrics=metrics, faults=health.faults, deadletter_reasons=dict(self.deadletter_reasons),
            fault_counts=dict(health.fault_counts), worker_id=self.worker_id, stream=self.keys.samples,
            settings=WorkerSettings(
                batch_size=s.batch_size, snapshot_every=s.snapshot_every, snapshot_interval=s.snapshot_interval,
                keep_versions=s.keep_versions, retention_max_len=s.retention_max_len,
                retention_max_age=s.retention_max_age,
            ),
        )  # fmt: skip

    def trim(self, last_id: str, now: float) -> tuple[str | None, int]:
        """(MINID, length limit) for the snapshot script's trim; None and 0 trim nothing."""
        s = self.settings
        minid = trim_minid(last_id, self.consumed_ids, s.retention_max_len, s.retention_max_age, now)
        # The script's own length trim is only needed until this worker knows max_len consumed ids:
        # from then on the MINID above already keeps the stream to that length.
        # Nor with packed entries: its length counts entries, and its probe reads the entries to learn whole.
        knows_max_len = self.consumed_ids.nth_newest(s.retention_max_len) is not None
        return minid, 0 if knows_max_len or self._packed else s.retention_max_len

    def _trim_deadletters(self) -> None:
        """Keep the dead-letter stream to about ``deadletter_max_len`` entries (``MAXLEN ~``: whole nodes).

        After the snapshot that added them, not inside its script: a lost trim (a crash, an outage)
        only defers it to the next snapshot with dead letters, and it never touches the samples.
        """
        key, limit = self.keys.deadletter, self.settings.deadletter_max_len
        self.retry(lambda: self.client.xtrim(key, maxlen=limit, approximate=True))

    def _write(
        self, snapshot: Snapshot, meta: SnapshotMeta, minid: str | None, maxlen: int, keep_lease: Callable[[], None]
    ) -> int:
        """write_snapshot, resolving a connection error by reading back whether the write landed."""
        s = self.settings
        while True:
            try:
                version = write_snapshot(
                    self.client, self.keys, snapshot, lease_token=self.worker_id, keep=s.keep_versions,
                    parent=self.parent, deadletters=self.deadletters, trim_minid=minid, trim_maxlen=maxlen,
                    reader=self.keys.model, keep_minutely=s.keep_minutely, keep_hourly=s.keep_hourly,
                )  # fmt: skip
                self.retry.recovered()
                self._replicate(version)
                return version
            except redis.AuthenticationError:
                raise
            except CONNECTION_ERRORS as exc:
                self.retry.outage(exc)
            landed = self.retry(lambda: self._landed(meta))
            if landed is not None:
                log.info("snapshot %d had landed before the connection broke", landed)
                return landed
            keep_lease()  # it did not land: write it again if the lease is still ours

    def _replicate(self, version: int) -> None:
        """Durable mode: WAIT until ``durable_replicas`` replicas hold the snapshot (a warning if they do not)."""
        wanted = self.settings.durable_replicas
        if not wanted:
            return
        try:
            acked = wait_for_replicas(self.client, self.keys.snapshot_latest, wanted, self.settings.durable_timeout)
        except CONNECTION_ERRORS as exc:  # the next write meets the outage; the state is still in memory
            log.warning("snapshot %d: could not wait for its replication (%s)", version, exc)
            return
        if acked < wanted:
            log.warning("snapshot %d: %d of %d replicas acknowledged it within %gs", version, acked, wanted,
                        self.settings.durable_timeout)  # fmt: skip

    def _landed(self, meta: SnapshotMeta) -> int | None:
        """The version of our snapshot ``meta`` if it is the latest one in Redis, else None."""
        version = latest_version(self.client, self.keys)
        raw = None if version is None else self.client.hget(self.keys.snapshot(version), META_FIELD)
        if raw is None:
            return None
        try:
            stored = SnapshotMeta.from_json(json.loads(raw))
        except ValueError:  # not ours: ours is valid JSON that follows the contract
            return None
        same = all(
            getattr(stored, k) == getattr(meta, k)
            for k in ("worker_id", "created_at", "last_id", "entries_consumed", "offset")
        )
        return version if same else None


def latest_readable(client: RedisClient, keys: Keys) -> tuple[Snapshot, SnapshotMeta] | None:
    """The latest snapshot, else the newest readable older one; None only for a new model."""
    found = load_latest(client, keys)
    return None if found is None else found[:2]


def load_latest(client: RedisClient, keys: Keys) -> tuple[Snapshot, SnapshotMeta, int] | None:
    """``latest_readable`` and the ``latest`` version it builds on; registers the model as a reader there.

    The model's position in the stream's readers (``Keys.readers``) becomes the loaded snapshot's
    ``last_id`` (``0-0`` for a new model) before it reads anything, so no other model trims what it
    is about to learn.
    """
    latest = latest_version(client, keys)
    if latest is None:
        register_reader(client, keys, "0-0")
        return None
    older = [v for v in reversed(list_versions(client, keys)) if v < latest]
    for version in [latest, *older]:
        try:
            snapshot = read_snapshot(client, keys, version)
            meta = None if snapshot is None else snapshot.typed_meta()
        except SnapshotError as exc:
            log.error("snapshot %d of model %r is unreadable: %s", version, keys.model, exc)
            continue
        if snapshot is None or meta is None:
            log.error("snapshot %d of model %r is missing", version, keys.model)
            continue
        if version != latest:
            log.warning("continuing from the older snapshot %d", version)
        register_reader(client, keys, meta.last_id or "0-0")
        return snapshot, meta, latest
    raise RuntimeError(f"no readable snapshot of model {keys.model!r}; refusing to start over silently")
