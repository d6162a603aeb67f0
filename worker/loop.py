"""The worker loop: read ahead, learn each batch in order, finish it (or revert it), commit now and then.

The rooms around it (see also docs/worker.md):

* ``worker.reader``: reading the stream in batches (never blocking past a heartbeat).
* ``worker.position``: where the worker stands in the stream (read, consumed, committed).
* ``worker.commit``: snapshots (exactly once), dead letters, the ambiguous-write read-back, the trim.
* ``worker.lease``: one writer per model, and hot standbys. A worker that loses the lease goes
  back to standby and drops its state (``LeaseLost``).
* ``worker.status``: the status key (heartbeat), lag, throughput, faults, progress lines.
* ``worker.retry``: Redis outages, retried with capped backoff; the learner stays in memory.
* ``worker.dedupe``: each producer's highest sequence number; entries sent twice are skipped.
* ``worker.pieces``: a read with packed entries learned in batches of ``batch_size`` samples,
  cut inside an entry if need be (the position then records the offset in it).

* ``worker.inflight``: the batches handed to the learner thread, queued in stream order.
* ``worker.isolate``: the divergence guard (a batch leaving non-finite weights, or raising, is
  bisected from its checkpoint: the offending samples are dead-lettered, the others learned).
* ``worker.restarts``: starts counted per position; a crash loop is reported.

**Throughput.** Reading and decoding (redis-py + hiredis, the main thread, holding the GIL)
overlap with learning (the learner thread, in the numba kernel, which releases the GIL): the
next batch is read while the one before is learned, and queued behind it, so the learner goes from
batch to batch while the main thread finishes each (dead letters, position, metrics) in stream
order. A snapshot waits until no batch is in flight, so every snapshot is consistent.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import deque
from typing import Any

from digitstream.connections import RedisClient
from digitstream.contracts import WorkerState, WorkerStatus
from digitstream.learner import Learner, new_learner
from digitstream.migration import refuse_legacy
from digitstream.protocol import DecodedBatch
from digitstream.settings import Settings
from digitstream.store import LeaseLost, latest_version

from .commit import Commits, load_latest
from .dedupe import Producers
from .inflight import InFlight, LearnerQueue
from .isolate import DIVERGED, Learned, as_fields, decode_isolating, offender_fields
from .learner_thread import LearnerThread
from .lease import Claim, Lease
from .metrics import ROLLING_ARRAY, OnlineMetrics
from .pieces import pieces, skip_consumed
from .position import Position
from .reader import StreamReader
from .restarts import clear, record_start
from .retry import CONNECTION_ERRORS, RedisRetry, WorkerStopped
from .status import Health

log = logging.getLogger("digitstream.worker")


_Piece = tuple[DecodedBatch, list[bytes], list[list[Any]]]  # a piece, the entries it finishes, and its read


class Worker:
    """Learns from the model's stream while it holds the model's lease; see the module docstring.

    ``run()`` until ``stop()``; ``run(burst=True)`` returns once the stream is drained (tests,
    benchmarks). ``stop()`` is safe from a signal handler: the current batch is finished and a
    final snapshot written.
    """

    def __init__(self, settings: Settings, client: RedisClient, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.client = client
        self.keys = settings.keys
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = Lease(client, self.keys.lease, self.worker_id, settings.lease_ttl)
        self.retry = RedisRetry(lambda: self._stopping, self._recovered)
        self.reader = StreamReader(settings, client)
        self._stopping = False
        self.state: WorkerState = "starting"
        self._reset_state()

    def _reset_state(self, learner: Learner | None = None) -> None:
        """A fresh learner (or none yet), at the stream's start: what a new model (or a standby) has."""
        self.learner = learner
        self._samples_learned = learner.n_samples if learner is not None else 0
        self.position = Position()
        self.metrics = OnlineMetrics(self.settings.rolling_window)
        self.health = Health(self.settings, self.client, self.retry)
        self.commits = Commits(self.settings, self.client, self.worker_id, self.retry)
        self.producers = Producers(self.settings.producers_max, self.settings.producer_ttl)

    @property
    def samples_learned(self) -> int:
        """Samples learned by the batches finished so far (a batch in flight changes the learner, not this)."""
        return self._samples_learned

    @property
    def version(self) -> int | None:
        """The snapshot the worker's state equals or descends from."""
        return self.commits.version

    def stop(self) -> None:
        """Ask the loop to finish its batch, write a final snapshot and return (signal-safe)."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def status(self) -> dict[str, Any]:
        """The JSON written to ``{model}:worker:status`` (``digitstream.contracts.WorkerStatus``)."""
        return self._status().to_json()

    def _status(self) -> WorkerStatus:
        reasons, drift = self.commits.deadletter_reasons, self.metrics.drift_events_total
        return self.health.status(self.worker_id, self.state, self.position, self.version, reasons, drift)

    # -- main loop ------------------------------------------------------------------------------
    def run(self, burst: bool = False) -> None:
        """Learn until stopped (or, with ``burst``, until the stream is drained)."""
        executor = LearnerThread(f"digitstream-learner-{self.keys.model}")
        new_learner(self.settings.hyper_parameters())  # a hot standby: kernels compiled (or loaded) now
        try:
            while not self._stopping:
                if not self._become_active():
                    break
                try:
                    self._learn(executor, burst)
                    self.retry(lambda: clear(self.client, self.keys.worker_restarts))  # a clean stop
                    break
                except LeaseLost as exc:
                    log.warning("lost the lease of model %r (%s); back to standby", self.keys.model, exc)
                    self._reset_state()
        except WorkerStopped:
            log.warning("stopped while Redis was unreachable; the next worker continues from the last snapshot")
        finally:
            executor.shutdown()
            self._release()
        self.state = "stopped"

    def _learn(self, executor: LearnerThread, burst: bool) -> None:
        in_flight = LearnerQueue(executor)  # handed to the learner thread, not finished yet (at most 2)
        pending: deque[_Piece] = deque()  # pieces of the last read not yet handed to the learner
        cut = False  # whether the last read was cut in pieces
        try:
            while not self._stopping:
                self._heartbeat()
                if not pending:  # read and decoded while the batches before are still being learned
                    pending.extend(self._decoded(self._read(block=not burst)))
                    cut = len(pending) > 1
                batch, entry_ids, entries = pending.popleft() if pending else (None, [], [])
                if cut and not pending and in_flight and not self._stopping:
                    # The last piece of a read cut in pieces: read the next one while the piece before is learned.
                    pending.extend(self._decoded(self._read(block=False)))
                    cut = len(pending) > 1
                # Finish the oldest batch; the one queued behind it is learned meanwhile. With nothing to
                # queue next, stopping, or a snapshot due by count once they are finished (so that it falls
                # every snapshot_every samples and MAX_PENDING_DEADLETTERS dead letters), finish them all.
                while len(in_flight) > 1 or (in_flight and (batch is None or self._stopping or self._due(in_flight))):
                    self._finish(in_flight.oldest())
                if self.commits.due(self.position, self.health.faults_seen):
                    while in_flight:  # a snapshot holds the learner at rest
                        self._finish(in_flight.oldest())
                    self._snapshot()
                if batch is None:
                    if burst:
                        break
                    continue
                if self._stopping:
                    break  # the read-ahead is not committed: the next run reads it again
                self._start(in_flight, batch, entry_ids, entries)
                self.metrics.flush()  # the batches finished before, while this one is learned
            while in_flight:
                self._finish(in_flight.oldest())
            if self.commits.has_news(self.position, self.health.faults_seen):
                self._snapshot(final=True)
        finally:
            in_flight.settle()  # an exception left batches in the learner thread: let them end first

    def _due(self, in_flight: LearnerQueue) -> bool:
        """Whether finishing the batches in flight makes a snapshot due by count (samples, or dead letters)."""
        return self.commits.due_by_count(self.position.samples_passed + in_flight.samples(), in_flight.rejects())

    def _read(self, block: bool) -> list[list[Any]]:
        try:
            limit = self.commits.due_in_ms(self.position, self.health.faults_seen)  # dead letters wait no longer
            return self.retry(lambda: self.reader.read(self.keys.samples, self.position.read_id, block, limit))
        except WorkerStopped:
            return []

    def _decoded(self, entries: list[list[Any]]) -> list[_Piece]:
        """A read decoded, without what the snapshot already holds of its first entry, in learnable pieces
        (each with the ids of the entries it finishes, and the read for its dead letters)."""
        if not entries:
            return []
        batch = decode_isolating(entries, self.settings.pack_max)
        first_id = entries[0][0]
        if self.position.offset and self.position.read_id == self.position.last_id:  # resuming inside an entry
            batch = skip_consumed(batch, first_id, self.position.offset)
        self.position.read(batch.last_id)
        self.reader.measured(len(entries), len(batch.ids) + len(batch.rejects))
        cut = pieces(batch, [entry[0] for entry in entries], self.settings.batch_size)
        return [(piece, finished, entries) for piece, finished in cut]

    def _start(
        self, in_flight: LearnerQueue, batch: DecodedBatch, entry_ids: list[bytes], entries: list[list[Any]]
    ) -> None:
        """Queue a decoded piece of a read for the learner thread, behind the batches in flight."""
        batch, duplicates = self.producers.filter(batch)  # not at the read: a stopping worker's read-ahead
        assert self.learner is not None
        in_flight.submit(InFlight(batch, entries, None, duplicates, entry_ids), self.learner)

    def _finish(self, job: InFlight) -> None:
        """Wait for a batch's learning, dead-letter the samples it left out, move the position past it."""
        if job.future is None:
            self._consume(job.batch, job.entry_ids, duplicates=job.duplicates)
            return
        learned = job.future.result()
        self.learner = learned.learner
        self._samples_learned = learned.n_samples
        self.metrics.defer(learned.predictions, job.batch.labels[learned.keep])
        if learned.offenders:
            self._left_out(job, learned)
        self._consume(job.batch, job.entry_ids, duplicates=job.duplicates, dead=len(learned.offenders))

    def _left_out(self, job: InFlight, learned: Learned) -> None:
        """Dead letters (with the entries' original fields) and faults for the samples a batch left out."""
        fields = {entry[0]: entry[1] for entry in job.entries}
        for index, reason in learned.offenders:
            entry_id = job.batch.ids[index]
            own = offender_fields(job.batch, index, as_fields(fields.get(entry_id)))
            self.commits.dead_letter(entry_id, own, reason)
        reasons = [reason for _, reason in learned.offenders]
        failed = [reason for reason in reasons if reason != DIVERGED]
        params = learned.learner.params
        self.health.left_out(len(reasons) - len(failed), failed, len(job.batch.ids), params, self.samples_learned)

    def _consume(self, batch: DecodedBatch, entry_ids: list[bytes], duplicates: int = 0, dead: int = 0) -> None:
        """Move the position past a finished read: its rejects become dead letters."""
        for entry_id, fields, reason in batch.rejects:
            self.commits.dead_letter(entry_id, fields, reason)
        self.commits.consumed(entry_ids, batch.sizes)
        dead += len(batch.rejects)
        self.position.consume(batch.last_id, len(entry_ids), self.samples_learned, dead, 0, duplicates, batch.partial)

    def _snapshot(self, final: bool = False) -> None:
        """Commit state, position, dead letters and trim together, as the next version; then report it."""
        assert self.learner is not None
        self.metrics.flush()  # the metrics reach as far as the position
        if not self.learner.is_finite():  # unreachable through the guard; never write such a state
            raise RuntimeError("refusing to snapshot non-finite weights")
        self.health.measure(self.samples_learned, self.position)
        self.commits.commit(self.learner, self.position, self.metrics, self.health, self._keep_lease, self.producers)
        self.health.publish(self._status())
        accuracy = self.metrics.prequential_accuracy, self.metrics.rolling_accuracy
        self.health.log_progress(self.version, accuracy, self.position, final)

    # -- the lease ------------------------------------------------------------------------------
    def _become_active(self) -> bool:
        """Wait as a standby until the lease is ours, then load the latest snapshot; False if stopped."""
        announced = False
        while not self._stopping:
            try:
                claim = self.retry(self.lease.claim)
            except WorkerStopped:
                return False
            if claim != Claim.HELD_BY_OTHER:
                self.retry(self._load)
                self._count_start()
                self.state = "active"
                log.info(
                    "active for model %r as %s: %s samples learned, continuing after stream id %s",
                    self.keys.model, self.worker_id, f"{self.samples_learned:,}", self.position.last_id,
                )  # fmt: skip
                self.health.beat_soon()
                return True
            self.state = "standby"
            if not announced:
                holder = self.retry(self.lease.holder)
                log.info("standby for model %r: the lease is held by %s", self.keys.model, holder)
                announced = True
            self.health.publish(self._status(), only_if_absent=True)
            self.retry.sleep(min(0.5, self.settings.lease_ttl / 4))
        return False

    def _count_start(self) -> None:
        """Count this start at the loaded position; report a crash loop (``worker.restarts``)."""
        position = self.position.last_id
        starts = self.retry(lambda: record_start(self.client, self.keys.worker_restarts, position))
        self.health.started(starts, position, self.samples_learned)

    def _heartbeat(self) -> None:
        """Renew the lease and publish the status, every heartbeat period."""
        if self.health.beat_due():
            self._keep_lease()
            self.health.publish(self._status())

    def _keep_lease(self) -> None:
        """Renew the lease; raise LeaseLost if it is gone and our state may be stale."""
        self.lease.keep(self.retry, self.version, lambda: latest_version(self.client, self.keys))

    def _release(self) -> None:
        """Give the lease up if we hold it (a compare-and-delete), and our status with it."""
        try:
            if self.lease.release() and self.state == "active":
                self.client.delete(self.keys.worker_status)
        except CONNECTION_ERRORS:
            pass  # both expire by themselves

    def _load(self) -> None:
        """State from the latest readable snapshot (or a fresh learner when there is none)."""
        found = load_latest(self.client, self.keys)
        params = self.settings.hyper_parameters()
        if found is None:
            refuse_legacy(self.client, self.keys)  # snapshots in the layout before 0.3: migrate them first
            self._reset_state(new_learner(params))
            return
        snapshot, meta, latest = found
        learner = snapshot.learner()
        if learner.params != params:
            log.warning(
                "model %r keeps the hyper-parameters it was created with (%s), not the configured ones (%s); "
                "use a new model name to learn with other parameters",
                self.keys.model, learner.params.to_json(), params.to_json(),
            )  # fmt: skip
        s, retry = self.settings, self.retry
        self.learner = learner
        self._samples_learned = learner.n_samples
        self.position = Position.of_snapshot(meta)
        self.metrics = OnlineMetrics.restore(meta.metrics, snapshot.arrays.get(ROLLING_ARRAY), s.rolling_window)
        self.health = Health(s, self.client, retry, meta.faults, learner.n_samples, meta.fault_counts)
        self.commits = Commits(
            s, self.client, self.worker_id, retry, snapshot.version, self.position.samples_passed,
            parent=latest, deadletter_reasons=meta.deadletter_reasons,
        )  # fmt: skip
        self.producers = Producers.restore(snapshot.arrays, s.producers_max, s.producer_ttl)

    def _recovered(self, seconds: float) -> None:
        """After a Redis outage: renew the lease first (it may have expired), record the fault."""
        self.health.outage_ended(seconds, self.samples_learned, self.position.last_id if self.learner else None)


__all__ = ["Worker", "WorkerStopped"]
