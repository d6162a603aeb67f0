"""The worker loop: read the stream in batches, learn in order, commit snapshots exactly once.

Design (see also docs/worker.md):

* **Exactly once.** The stream position (``last_id``) and the learner state are committed only
  together, in one snapshot written by ``digitstream.store.write_snapshot`` (one Lua script). On
  start the worker loads the latest snapshot and reads after its ``last_id``; whatever it learned
  after that snapshot and lost in a crash is read and learned again, so every entry counts once.
* **Dead letters ride with the snapshot.** Malformed entries found since the last snapshot are
  buffered and written by the snapshot script itself, atomically with the position that passes
  them, so a crash can neither lose nor duplicate one. A burst of them forces an early snapshot.
* **One writer per model.** The worker learns only while it holds the lease (``worker.lease``);
  a second worker waits as a hot standby and claims the lease when it expires. The snapshot
  script checks the lease token, so a paused or partitioned worker can never overwrite its
  successor: its write fails with ``LeaseLost`` and it goes back to standby, dropping its state.
  A worker that finds its lease expired but free claims it again and keeps its in-memory state
  only if no other worker wrote a snapshot meanwhile.
* **Ambiguous writes.** If a snapshot write fails with a connection error, the worker waits for
  Redis and reads the latest snapshot's metadata back to learn whether the write landed before
  deciding anything. The Redis client must therefore not retry commands by itself (the CLI's
  client does not): a retried write whose reply was lost would be applied twice.
* **Retention.** The snapshot script trims the stream with ``XTRIM MINID`` below the snapshotted
  position only (``worker.retention``).
* **Throughput.** Reading and decoding (redis-py + hiredis, the main thread, holding the GIL)
  overlap with learning (a learner thread running the numba kernel, which releases the GIL):
  the next batch is read while the previous one is learned. Metrics, the divergence check and
  snapshots happen between batches, when the learner is idle, so every snapshot is consistent.
* **Divergence guard.** The learner state is copied at the start of each batch; if the batch
  leaves non-finite weights, that copy is restored, the batch is skipped (the position moves past
  it, so the worker does not loop on it), a ``divergence`` fault is recorded and logged as an
  ERROR, and learning goes on. A non-finite state is never written.
* **Redis outages.** Every Redis call retries connection errors with capped exponential backoff
  (0.1 s doubling to 5 s); the outage is logged once, the recovery once, and recorded as a
  ``redis`` fault. The learner stays in memory and continues after its position.
* **Lag.** ``XINFO STREAM``'s ``entries-added`` (Redis >= 7) minus the entries this model has
  consumed (``entries_consumed`` in the snapshot); on Redis 6.2 a server-side count of the entries
  after the position, capped at ``LAG_CAP`` (reported as at least that, ``lag_at_least``).
  Measured once per snapshot.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from digitstream.learner import DeltaRuleLearner, LearnerState
from digitstream.protocol import FIELD_REASON, DecodedBatch, deadletter_fields, decode_entries
from digitstream.settings import Settings
from digitstream.snapshot import Snapshot, SnapshotError, snapshot_of
from digitstream.store import LeaseLost, latest_version, list_versions, read_snapshot, write_snapshot

from .lease import Claim, Lease
from .metrics import ROLLING_ARRAY, OnlineMetrics
from .retention import ConsumedIds, trim_minid

T = TypeVar("T")

log = logging.getLogger("digitstream.worker")

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
SHUTDOWN_PATIENCE = 5.0  # seconds a stopping worker keeps retrying Redis to write its final snapshot
LAG_CAP = 10_000
MAX_FAULTS = 20
MAX_PENDING_DEADLETTERS = 1000  # a burst of bad entries forces an early snapshot (bounded script arguments)
MAX_PENDING_DEADLETTER_BYTES = 8 * 1024 * 1024
MAX_DEADLETTER_FIELDS = 1000  # Lua's unpack() in the snapshot script takes at most a few thousand values
LOG_EVERY = 5.0  # seconds between INFO progress lines (every snapshot is logged at DEBUG)

# KEYS: stream ; ARGV: exclusive start "(ms-seq", cap. Counts server-side: no entry crosses the network.
_COUNT_AFTER = """
return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
"""


class WorkerStopped(Exception):
    """Raised inside the loop when a stop was requested while Redis was unreachable."""


@dataclass
class _InFlight:
    """A batch being learned in the learner thread; its result is the undo state if it diverged."""

    batch: DecodedBatch
    entry_ids: list[bytes]
    future: Future[LearnerState | None]


class Worker:
    """Learns from the model's stream while it holds the model's lease; see the module docstring.

    ``run()`` until ``stop()``; ``run(burst=True)`` returns once the stream is drained (tests,
    benchmarks). ``stop()`` is safe from a signal handler: the current batch is finished and a
    final snapshot written.
    """

    def __init__(self, settings: Settings, client: redis.Redis, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.client = client
        self.keys = settings.keys
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = Lease(client, self.keys.lease, self.worker_id, settings.lease_ttl)
        self._count_after = client.register_script(_COUNT_AFTER)
        # Reads through the same connections, but XREAD answers stay Redis's flat lists: redis-py would
        # build a dict per entry, and decode_entries takes either.
        self._reader = redis.Redis(connection_pool=client.connection_pool)
        self._reader.set_response_callback("XREAD", _raw_reply)
        self._stopping = False
        # A heartbeat (lease renewal + status) at least 3 times per lease period; reads never block longer.
        self.heartbeat = min(1.0, settings.lease_ttl / 3)
        self.status_ttl_ms = round(max(3.0, 2 * settings.lease_ttl) * 1000)
        self.block_ms = max(1, min(settings.block_ms, int(self.heartbeat * 1000)))
        self.state = "starting"
        self._outage_since: float | None = None
        self._give_up_at: float | None = None
        self._reset_state()

    # -- state --------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        s = self.settings
        self.learner: DeltaRuleLearner | None = None
        self.version: int | None = None  # the snapshot our state equals or descends from
        self.last_id = "0-0"  # last entry consumed (learned, skipped or dead-lettered)
        self.read_id = "0-0"  # last entry read; ahead of last_id by the batch being learned
        self.entries_consumed = 0
        self.committed_samples = 0  # samples learned up to last_id (the status reports this pair)
        self.deadletter_count = 0
        self.samples_skipped = 0
        self.faults: list[dict[str, Any]] = []  # the newest MAX_FAULTS
        self._faults_seen = 0  # faults recorded since loading, to know whether a snapshot has news
        self.metrics = OnlineMetrics(s.rolling_window)
        self.consumed_ids = ConsumedIds(s.retention_max_len)
        self.pending_deadletters: list[dict[bytes, bytes]] = []
        self._pending_bytes = 0
        self.lag: int | None = None
        self.lag_at_least = False
        self.throughput = 0.0
        self._snap_consumed = 0
        self._snap_samples = 0
        self._snap_time = time.monotonic()
        self._snap_faults = 0
        self._next_heartbeat = 0.0
        self._next_log = 0.0

    @property
    def samples_learned(self) -> int:
        return self.learner.n_samples if self.learner is not None else 0

    def stop(self) -> None:
        """Ask the loop to finish its batch, write a final snapshot and return (signal-safe)."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- main loop ------------------------------------------------------------------------------
    def run(self, burst: bool = False) -> None:
        """Learn until stopped (or, with ``burst``, until the stream is drained)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digitstream-learner")
        DeltaRuleLearner(self.settings.hyper_parameters())  # a hot standby: kernels compiled (or loaded) now
        try:
            while not self._stopping:
                if not self._become_active():
                    break
                try:
                    self._learn(executor, burst)
                    break
                except LeaseLost as exc:
                    log.warning("lost the lease of model %r (%s); back to standby", self.keys.model, exc)
                    self._reset_state()
        except WorkerStopped:
            log.warning("stopped while Redis was unreachable; the next worker continues from the last snapshot")
        finally:
            executor.shutdown(wait=True)
            self._release()
        self.state = "stopped"

    def _learn(self, executor: ThreadPoolExecutor, burst: bool) -> None:
        in_flight: _InFlight | None = None
        try:
            while not self._stopping:
                self._heartbeat()
                entries = self._read(block=not burst)
                # Decoded while the previous batch is still being learned.
                batch = decode_entries(entries) if entries else None
                if in_flight is not None:
                    self._finish(in_flight)
                    in_flight = None
                if self._snapshot_due():
                    self._snapshot()
                if batch is None:
                    if burst:
                        break
                    continue
                if self._stopping:
                    break  # the read-ahead is not committed: the next run reads it again
                in_flight = self._start(executor, batch, [entry_id for entry_id, _ in entries])
            if in_flight is not None:
                self._finish(in_flight)
                in_flight = None
            if self._has_news():
                self._snapshot(final=True)
        finally:
            if in_flight is not None:  # an exception left a batch in the learner thread: let it end first
                in_flight.future.exception()

    def _read(self, block: bool) -> list[list[Any]]:
        def read() -> list[list[Any]]:
            count, block_ms = self.settings.batch_size, self.block_ms if block else None
            response: Any = self._reader.xread({self.keys.samples: self.read_id}, count=count, block=block_ms)
            if not response:
                return []
            # RESP3 answers a map {stream: entries}, RESP2 a list [[stream, entries]]; one stream either way.
            return next(iter(response.values())) if isinstance(response, dict) else response[0][1]

        try:
            return self._retrying(read)
        except WorkerStopped:
            return []

    def _start(self, executor: ThreadPoolExecutor, batch: DecodedBatch, entry_ids: list[bytes]) -> _InFlight | None:
        """Hand a decoded read to the learner thread (None if it has nothing to learn)."""
        assert self.learner is not None
        self.read_id = batch.last_id.decode() if batch.last_id else self.read_id
        if not batch.ids:
            self._commit_batch(batch, entry_ids)
            return None
        future = executor.submit(self._learn_batch, self.learner, batch)
        return _InFlight(batch, entry_ids, future)

    def _learn_batch(self, learner: DeltaRuleLearner, batch: DecodedBatch) -> LearnerState | None:
        """In the learner thread: learn and score a batch; returns the state before it if it diverged.

        Only this thread touches the learner and the metrics while a batch is in flight; the main
        thread reads the next batch meanwhile and waits for this one before anything else.
        """
        checkpoint = learner.state()  # ~0.1 MB copied per batch: the divergence guard's undo
        predictions = learner.learn_many(batch.images, batch.labels)
        if not learner.is_finite():
            return checkpoint
        for event in self.metrics.update(predictions, batch.labels):
            worse = event["direction"] == "worse"
            log.log(
                logging.WARNING if worse else logging.INFO,
                "drift flagged by %s at sample %s: the prequential error %s (now ~%.1f%%)",
                event["detector"], f"{event['samples']:,}", "rose" if worse else "fell", 100 * event["error_rate"],
            )  # fmt: skip
        return None

    def _finish(self, job: _InFlight) -> None:
        """Wait for a batch's learning, undo it if it diverged, move the position past it."""
        checkpoint = job.future.result()
        if checkpoint is not None:
            self._revert(job, checkpoint)
        self._commit_batch(job.batch, job.entry_ids)

    def _revert(self, job: _InFlight, checkpoint: LearnerState) -> None:
        """Divergence guard: restore the state from before the batch and skip the batch."""
        skipped = len(job.batch.ids)
        self.learner = DeltaRuleLearner.from_state(checkpoint)
        self.samples_skipped += skipped
        lr = self.learner.params.learning_rate
        message = (
            f"weights became non-finite while learning {skipped} samples after {self.learner.n_samples:,} "
            f"(rule {self.learner.params.rule}, learning rate {lr:g}: probably too large); reverted to the "
            f"state before the batch, skipped it, and continuing"
        )
        self._fault("divergence", message, skipped=skipped)
        log.error("divergence: %s", message)

    def _commit_batch(self, batch: DecodedBatch, entry_ids: list[bytes]) -> None:
        for entry_id, fields, reason in batch.rejects:
            self._dead_letter(entry_id, fields, reason)
        self.entries_consumed += len(entry_ids)
        self.consumed_ids.extend(entry_ids)
        if batch.last_id:
            self.last_id = batch.last_id.decode()
        self.committed_samples = self.samples_learned  # no batch is in flight here

    def _dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        if len(fields) > MAX_DEADLETTER_FIELDS:
            kept = dict(list(fields.items())[:MAX_DEADLETTER_FIELDS])
            reason = f"{reason} (only the first {MAX_DEADLETTER_FIELDS} of {len(fields)} fields kept)"
            fields = kept
        entry = deadletter_fields(entry_id, fields, reason)
        self.pending_deadletters.append(entry)
        self._pending_bytes += sum(len(k) + len(v) for k, v in entry.items())
        self.deadletter_count += 1
        log.debug("dead letter %s: %s", entry_id.decode(), entry[FIELD_REASON].decode())

    # -- the lease ------------------------------------------------------------------------------
    def _become_active(self) -> bool:
        """Wait as a standby until the lease is ours, then load the latest snapshot; False if stopped."""
        announced = False
        while not self._stopping:
            try:
                claim = self._retrying(self.lease.claim)
            except WorkerStopped:
                return False
            if claim != Claim.HELD_BY_OTHER:
                self._retrying(self._load)
                self.state = "active"
                log.info(
                    "active for model %r as %s: %s samples learned, continuing after stream id %s",
                    self.keys.model, self.worker_id, f"{self.samples_learned:,}", self.last_id,
                )  # fmt: skip
                self._next_heartbeat = 0.0
                return True
            self.state = "standby"
            if not announced:
                holder = self._retrying(self.lease.holder)
                log.info("standby for model %r: the lease is held by %s", self.keys.model, holder)
                announced = True
            self._retrying(lambda: self._write_status(only_if_absent=True))
            self._sleep(min(0.5, self.settings.lease_ttl / 4))
        return False

    def _heartbeat(self) -> None:
        """Renew the lease and publish the status, every ``heartbeat`` seconds."""
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.heartbeat
        self._keep_lease()
        self._retrying(self._write_status)

    def _keep_lease(self) -> None:
        """Renew the lease; raise LeaseLost if it is gone and our state may be stale."""
        claim = self._retrying(self.lease.claim)
        if claim == Claim.HELD_BY_OTHER:
            raise LeaseLost(f"{self.keys.lease} is held by {self._retrying(self.lease.holder)}")
        if claim == Claim.ACQUIRED:
            # It expired (e.g. Redis was down for longer than the TTL): keep our state only if
            # nobody wrote a snapshot in between.
            latest = self._retrying(lambda: self.client.get(self.keys.snapshot_latest))
            current = int(latest) if latest is not None else None
            if current != self.version:
                raise LeaseLost(f"the lease expired and snapshot {current} was written by another worker")
            log.warning("the lease had expired; claimed it again (no other worker wrote in between)")

    def _release(self) -> None:
        """Give the lease up if we hold it (a compare-and-delete), and our status with it."""
        try:
            if self.lease.release() and self.state == "active":
                self.client.delete(self.keys.worker_status)
        except CONNECTION_ERRORS:
            pass  # both expire by themselves

    # -- loading and snapshots ------------------------------------------------------------------
    def _load(self) -> None:
        """State from the latest readable snapshot (or a fresh learner when there is none)."""
        self._reset_state()
        snapshot = self._latest_readable()
        params = self.settings.hyper_parameters()
        if snapshot is None:
            self.learner = DeltaRuleLearner(params)
            return
        meta = snapshot.meta
        self.learner = snapshot.learner()
        if self.learner.params != params:
            log.warning(
                "model %r keeps the hyper-parameters it was created with (%s), not the configured ones (%s); "
                "use a new model name to learn with other parameters",
                self.keys.model, self.learner.params.to_json(), params.to_json(),
            )  # fmt: skip
        self.version = snapshot.version
        self.last_id = self.read_id = snapshot.last_id
        self.entries_consumed = int(meta.get("entries_consumed", snapshot.samples_learned))
        self.deadletter_count = int(meta.get("deadletter_count", 0))
        self.samples_skipped = int(meta.get("samples_skipped", 0))
        self.faults = list(meta.get("faults", []))[-MAX_FAULTS:]
        self.metrics = OnlineMetrics.restore(
            meta.get("metrics"), snapshot.arrays.get(ROLLING_ARRAY), self.settings.rolling_window
        )
        self._snap_consumed = self.entries_consumed
        self._snap_samples = self.committed_samples = self.samples_learned
        self._snap_time = time.monotonic()

    def _latest_readable(self) -> Snapshot | None:
        """The latest snapshot, else the newest readable older one; None only for a new model."""
        latest = latest_version(self.client, self.keys)
        if latest is None:
            return None
        older = [v for v in reversed(list_versions(self.client, self.keys)) if v < latest]
        for version in [latest, *older]:
            try:
                snapshot = read_snapshot(self.client, self.keys, version)
            except SnapshotError as exc:
                log.error("snapshot %d of model %r is unreadable: %s", version, self.keys.model, exc)
                continue
            if snapshot is None:
                log.error("snapshot %d of model %r is missing", version, self.keys.model)
                continue
            if version != latest:
                log.warning("continuing from the older snapshot %d", version)
            return snapshot
        raise RuntimeError(f"no readable snapshot of model {self.keys.model!r}; refusing to start over silently")

    def _has_news(self) -> bool:
        return self.entries_consumed > self._snap_consumed or self._faults_seen > self._snap_faults

    def _snapshot_due(self) -> bool:
        s = self.settings
        if self.entries_consumed - self._snap_consumed >= s.snapshot_every:
            return True
        if len(self.pending_deadletters) >= MAX_PENDING_DEADLETTERS:
            return True
        if self._pending_bytes >= MAX_PENDING_DEADLETTER_BYTES:
            return True
        return self._has_news() and time.monotonic() - self._snap_time >= s.snapshot_interval

    def _snapshot(self, final: bool = False) -> None:
        """Commit state, position, dead letters and trim together, as the next version."""
        assert self.learner is not None
        if not self.learner.is_finite():  # unreachable through the guard; never write such a state
            raise RuntimeError("refusing to snapshot non-finite weights")
        now_mono = time.monotonic()
        elapsed = now_mono - self._snap_time
        self.throughput = (self.samples_learned - self._snap_samples) / elapsed if elapsed > 0 else 0.0
        self._measure_lag()
        created_at = time.time()
        snapshot = snapshot_of(self.learner, **self._meta(created_at))
        snapshot.arrays[ROLLING_ARRAY] = self.metrics.rolling_outcomes()
        s = self.settings
        minid = trim_minid(self.last_id, self.consumed_ids, s.retention_max_len, s.retention_max_age, created_at)
        # The script's own length trim is only needed until this worker knows max_len consumed ids:
        # from then on the MINID above already keeps the stream to that length.
        knows_max_len = self.consumed_ids.nth_newest(s.retention_max_len) is not None
        maxlen = 0 if knows_max_len else s.retention_max_len
        self._keep_lease()  # after an outage longer than the TTL: claim it again rather than lose the state
        version = self._write(snapshot, minid, maxlen)
        self.version = version
        self.pending_deadletters = []
        self._pending_bytes = 0
        self._snap_consumed = self.entries_consumed
        self._snap_samples = self.samples_learned
        self._snap_time = now_mono
        self._snap_faults = self._faults_seen
        self._retrying(self._write_status)
        self._log_progress(final)

    def _meta(self, created_at: float) -> dict[str, Any]:
        s = self.settings
        metrics = self.metrics.report()
        metrics.update(throughput=round(self.throughput, 1), lag=self.lag, lag_at_least=self.lag_at_least)
        return {
            "model": self.keys.model,
            "samples_learned": self.samples_learned,
            "last_id": self.last_id,
            "created_at": created_at,
            "entries_consumed": self.entries_consumed,
            "deadletter_count": self.deadletter_count,
            "samples_skipped": self.samples_skipped,
            "metrics": metrics,
            "faults": list(self.faults),
            "worker_id": self.worker_id,
            "stream": self.keys.samples,
            "settings": {
                "batch_size": s.batch_size,
                "snapshot_every": s.snapshot_every,
                "snapshot_interval": s.snapshot_interval,
                "keep_versions": s.keep_versions,
                "retention_max_len": s.retention_max_len,
                "retention_max_age": s.retention_max_age,
            },
        }

    def _write(self, snapshot: Snapshot, minid: str | None, maxlen: int) -> int:
        """write_snapshot, resolving a connection error by reading back whether the write landed."""
        while True:
            try:
                version = write_snapshot(
                    self.client, self.keys, snapshot,
                    lease_token=self.worker_id, keep=self.settings.keep_versions,
                    deadletters=self.pending_deadletters, trim_minid=minid,
                    trim_maxlen=maxlen,
                )  # fmt: skip
                self._recovered()
                return version
            except redis.AuthenticationError:
                raise
            except CONNECTION_ERRORS as exc:
                self._outage(exc)
            landed = self._retrying(lambda: self._landed(snapshot.meta))
            if landed is not None:
                log.info("snapshot %d had landed before the connection broke", landed)
                return landed
            self._keep_lease()  # it did not land: write it again if the lease is still ours

    def _landed(self, meta: dict[str, Any]) -> int | None:
        """The version of our snapshot ``meta`` if it is the latest one in Redis, else None."""
        latest = self.client.get(self.keys.snapshot_latest)
        if latest is None:
            return None
        version = int(latest)
        raw = self.client.hget(self.keys.snapshot(version), "meta")
        if raw is None:
            return None
        stored = json.loads(raw)
        same = all(stored.get(k) == meta[k] for k in ("worker_id", "created_at", "last_id", "entries_consumed"))
        return version if same else None

    def _measure_lag(self) -> None:
        key = self.keys.samples
        try:
            info = self._retrying(lambda: self.client.xinfo_stream(key))
        except redis.ResponseError:  # no such stream (yet)
            self.lag, self.lag_at_least = 0, False
            return
        added = info.get("entries-added")
        if added is not None:
            self.lag, self.lag_at_least = max(0, int(added) - self.entries_consumed), False
            return
        start = f"({self.last_id}"
        count = int(self._retrying(lambda: self._count_after(keys=[key], args=[start, LAG_CAP + 1])))
        self.lag, self.lag_at_least = min(count, LAG_CAP), count > LAG_CAP

    def _log_progress(self, final: bool) -> None:
        now = time.monotonic()
        level = logging.INFO if final or now >= self._next_log else logging.DEBUG
        if level == logging.INFO:
            self._next_log = now + LOG_EVERY
        m = self.metrics
        log.log(
            level,
            "snapshot %d: %s samples learned (prequential %s, rolling %s), %s/s, lag %s%s, %d dead letters%s",
            self.version, f"{self.samples_learned:,}", _percent(m.prequential_accuracy), _percent(m.rolling_accuracy),
            f"{self.throughput:,.0f}", "≥" if self.lag_at_least else "", self.lag, self.deadletter_count,
            " (final)" if final else "",
        )  # fmt: skip

    # -- status and faults ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The JSON written to ``<model>:worker:status`` (contract in docs/ARCHITECTURE.md)."""
        return {
            "worker_id": self.worker_id,
            "state": self.state,
            "model": self.keys.model,
            "samples_learned": self.committed_samples,
            "last_id": self.last_id,
            "version": self.version,
            "lag": self.lag,
            "throughput": round(self.throughput, 1),
            "deadletter_count": self.deadletter_count,
            "faults": list(self.faults),
            "updated_at": time.time(),
        }

    def _write_status(self, only_if_absent: bool = False) -> None:
        """Active workers overwrite the status; a standby only fills it when no active worker reports."""
        body = json.dumps(self.status(), separators=(",", ":"))
        self.client.set(self.keys.worker_status, body, px=self.status_ttl_ms, nx=only_if_absent)

    def _fault(self, kind: str, message: str, **extra: Any) -> None:
        fault = {"kind": kind, "message": message, "at": time.time(), "samples_learned": self.samples_learned, **extra}
        self.faults = [*self.faults, fault][-MAX_FAULTS:]
        self._faults_seen += 1

    # -- Redis outages --------------------------------------------------------------------------
    def _retrying(self, call: Callable[[], T]) -> T:
        """``call()``, retried on connection errors with capped exponential backoff until it works.

        Wrong credentials (``AuthenticationError``, a ConnectionError to redis-py) are not retried.

        Once a stop is requested it keeps trying for ``SHUTDOWN_PATIENCE`` seconds, then raises
        WorkerStopped.
        """
        delay = BACKOFF_START
        while True:
            try:
                result = call()
            except redis.AuthenticationError:
                raise  # wrong credentials do not heal by waiting
            except CONNECTION_ERRORS as exc:
                self._outage(exc)
                if self._stopping:
                    if self._give_up_at is None:
                        self._give_up_at = time.monotonic() + SHUTDOWN_PATIENCE
                    if time.monotonic() >= self._give_up_at:
                        raise WorkerStopped from exc
                    time.sleep(min(delay, 0.5))
                else:
                    self._sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            self._recovered()
            return result

    def _outage(self, exc: Exception) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("Redis unreachable (%s: %s); retrying, backoff up to %gs", type(exc).__name__, exc, BACKOFF_MAX)

    def _recovered(self) -> None:
        if self._outage_since is None:
            return
        seconds = time.monotonic() - self._outage_since
        self._outage_since = None
        self._next_heartbeat = 0.0  # renew the lease (it may have expired) before anything else
        if self.learner is None:  # a standby (or a worker still starting): no position to continue from yet
            log.warning("Redis reachable again after %.1fs", seconds)
        else:
            log.warning("Redis reachable again after %.1fs; continuing after stream id %s", seconds, self.last_id)
        self._fault("redis", f"Redis was unreachable for {seconds:.1f}s", seconds=round(seconds, 3))

    def _sleep(self, seconds: float) -> None:
        """Sleep in short steps so that a stop request (e.g. from a signal handler) is seen quickly."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(0.05, remaining))


def _raw_reply(response: Any, **options: Any) -> Any:
    """A response callback that keeps Redis's reply as it came."""
    return response


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


__all__ = ["Worker", "WorkerStopped"]
