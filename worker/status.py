"""What others see of a worker: the status key (its heartbeat), lag, throughput, faults and progress lines.

* **Status.** ``{model}:worker:status`` holds a ``WorkerStatus`` (``digitstream.contracts``) as
  strict JSON, written at every heartbeat (at least 3 times per lease period) and after every
  snapshot, with an expiry of twice the lease, so a dead worker's status disappears. A standby
  writes it only when no active worker reports.
* **Lag**, in samples. ``XINFO STREAM``'s ``entries-added`` (Redis >= 7) minus the entries this model
  has consumed (``entries_consumed`` in the snapshot); on Redis 6.2 a server-side count of the entries
  after the position, capped at ``LAG_CAP`` (reported as at least that, ``lag_at_least``). Entries
  become samples at the mean number of samples per entry consumed so far (exact for classic entries,
  and for packed entries of one size), less the ``offset`` already consumed inside a packed entry.
  Measured once per snapshot, as is the throughput (samples learned per second since the last one).
  The Redis 6.2 count reads the entries whole (~1 µs each in Redis, as much as reading them): after
  a count of more than a read's worth (``batch_size`` entries), the worker counts again only once
  it has consumed as many entries as that count read, and reports meanwhile the lower bound
  ``count - consumed since`` (``lag_at_least``; entries after the position are never trimmed), so
  counting never costs Redis more than reading. A worker far behind with many models per process
  (a snapshot every few reads) would otherwise spend most of Redis on counting.
* **Faults** survived (a Redis outage, diverging samples, entries that raised, a crash loop) are
  kept, the newest ``MAX_FAULTS``, in the status and in every snapshot.
* **Learning health** (``ok``, ``crash-looping``) and ``restarts``: see ``worker.restarts``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

from digitstream.connections import RedisClient
from digitstream.contracts import Fault, MetricsReport, WorkerState, WorkerStatus
from digitstream.learner import HyperParameters
from digitstream.observability import add_count, fault_kind
from digitstream.settings import Settings

from .position import Position
from .restarts import CRASH_LOOP_STARTS
from .retry import RedisRetry

log = logging.getLogger("digitstream.worker")

LAG_CAP = 10_000
MAX_FAULTS = 20
LOG_EVERY = 5.0  # seconds between INFO progress lines (every snapshot is logged at DEBUG)

# KEYS: stream ; ARGV: exclusive start "(ms-seq", cap. Counts server-side: no entry crosses the network.
_COUNT_AFTER = """
return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
"""
# XINFO STREAM's entries-added (Redis >= 7), -1 before Redis 7, -2 without a stream; read in Redis:
# the reply also holds the first and last entries, up to a MB each when packed.
_ENTRIES_ADDED = """
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
if info['err'] then return -2 end
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then return info[i + 1] end
end
return -1
"""


def heartbeat_period(settings: Settings) -> float:
    """Seconds between heartbeats: at least 3 per lease period, and at most 1 s."""
    return min(1.0, settings.lease_ttl / 3)


class Health:
    """A worker's measures and faults since it loaded its snapshot, and the status key that reports them."""

    def __init__(
        self, settings: Settings, client: RedisClient, retry: RedisRetry, faults: tuple[Fault, ...] = (),
        samples_learned: int = 0, fault_counts: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.keys = settings.keys
        self.client = client
        self.retry = retry
        self.heartbeat = heartbeat_period(settings)
        self.status_ttl_ms = round(max(3.0, 2 * settings.lease_ttl) * 1000)
        self.faults = faults[-MAX_FAULTS:]
        self.faults_seen = 0  # recorded since loading: a snapshot has news when this moves
        self.fault_counts: dict[str, int] = dict(fault_counts or {})  # by kind, over the model's life
        self.lag: int | None = None
        self.lag_at_least = False
        self.throughput = 0.0
        self._measured = (time.monotonic(), samples_learned)
        self._next_beat = 0.0
        self._next_log = 0.0
        self._count_after = client.register_script(_COUNT_AFTER)
        self.restarts = 0  # unclean starts at start_position (worker.restarts)
        self.start_position: str | None = None
        self._entries_added = client.register_script(_ENTRIES_ADDED)
        self._added_known = True  # until Redis says it has no entries-added
        self._recount_from = settings.batch_size  # Redis 6.2: counts beyond this many entries are amortized
        self._counted: tuple[int, int] | None = None  # Redis 6.2: (entries consumed, entries counted) at a count

    # -- heartbeat ------------------------------------------------------------------------------
    def beat_due(self) -> bool:
        """True once per ``heartbeat`` seconds (then the caller renews the lease and publishes)."""
        now = time.monotonic()
        if now < self._next_beat:
            return False
        self._next_beat = now + self.heartbeat
        return True

    def beat_soon(self) -> None:
        """Make the next ``beat_due`` true (after an outage the lease may have expired)."""
        self._next_beat = 0.0

    def started(self, restarts: int, position: str, samples_learned: int) -> None:
        """The worker became active at ``position``, the ``restarts``-th unclean start there (a crash loop from
        ``CRASH_LOOP_STARTS``: a ``restart`` fault and an ERROR)."""
        self.restarts, self.start_position = restarts, position
        if restarts >= CRASH_LOOP_STARTS:
            message = (
                f"started {restarts} times in a row at stream id {position} without getting past it or stopping "
                f"cleanly: what follows it may crash the worker (see its logs)"
            )
            self.fault("restart", message, samples_learned, skipped=restarts)
            log.error("crash loop: %s", message)

    def left_out(
        self, diverged: int, failed: list[str], batch_size: int, params: HyperParameters, samples_learned: int
    ) -> None:
        """Faults for the samples of a batch that were dead-lettered instead of learned (``worker.isolate``)."""
        if diverged:
            message = (
                f"{diverged} of {batch_size} samples made the weights non-finite after {samples_learned:,} samples "
                f"(rule {params.rule}, learning rate {params.learning_rate:g}: probably too large); dead-lettered "
                f"them as 'diverged', learned the others, and continuing"
            )
            self.fault("divergence", message, samples_learned, skipped=diverged)
            log.error("divergence: %s", message)
        if failed:
            message = f"learning raised for {len(failed)} samples, dead-lettered ({failed[0]}); continuing"
            self.fault("internal", message, samples_learned, skipped=len(failed))
            log.error("internal error: %s", message)

    def learning_health(self, position: Position) -> str:
        """``crash-looping`` from ``CRASH_LOOP_STARTS`` starts at one position until it moves, else ``ok``."""
        looping = self.restarts >= CRASH_LOOP_STARTS and position.last_id == self.start_position
        return "crash-looping" if looping else "ok"

    def status(
        self, worker_id: str, state: WorkerState, position: Position, version: int | None,
        deadletter_reasons: dict[str, int] | None = None, drift_events_total: int = 0,
    ) -> WorkerStatus:  # fmt: skip
        return WorkerStatus(
            worker_id=worker_id, state=state, model=self.keys.model, samples_learned=position.samples_learned,
            last_id=position.last_id, updated_at=time.time(), version=version, lag=self.lag,
            lag_at_least=self.lag_at_least, throughput=round(self.throughput, 1),
            deadletter_count=position.deadletter_count, faults=self.faults,
            duplicates_skipped=position.duplicates_skipped, deadletter_reasons=dict(deadletter_reasons or {}),
            fault_counts=dict(self.fault_counts), drift_events_total=drift_events_total,
            health=self.learning_health(position),
            restarts=self.restarts if position.last_id == self.start_position else 0,
        )  # fmt: skip

    def publish(self, status: WorkerStatus, *, only_if_absent: bool = False) -> None:
        """Write the status key (retried through outages); ``only_if_absent`` for a standby."""
        body = json.dumps(status.to_json(), allow_nan=False, separators=(",", ":"))
        key, ttl = self.keys.worker_status, self.status_ttl_ms
        self.retry(lambda: self.client.set(key, body, px=ttl, nx=only_if_absent))

    # -- faults ---------------------------------------------------------------------------------
    def fault(self, kind: str, message: str, samples_learned: int, *, skipped: int | None = None,
              seconds: float | None = None) -> None:  # fmt: skip
        fault = Fault(kind, message, time.time(), samples_learned, skipped=skipped, seconds=seconds)
        self.faults = (*self.faults, fault)[-MAX_FAULTS:]
        self.faults_seen += 1
        self.fault_counts = add_count(self.fault_counts, fault_kind(kind))

    def outage_ended(self, seconds: float, samples_learned: int, continuing_after: str | None) -> None:
        """Redis is reachable again: log it, record a ``redis`` fault, and beat at once (the lease may have expired)."""
        self.beat_soon()
        where = f"; continuing after stream id {continuing_after}" if continuing_after else ""
        log.warning("Redis reachable again after %.1fs%s", seconds, where)
        self.fault("redis", f"Redis was unreachable for {seconds:.1f}s", samples_learned, seconds=round(seconds, 3))

    # -- measures -------------------------------------------------------------------------------
    def measure(self, samples_learned: int, position: Position) -> None:
        """Throughput since the previous measure, and the lag behind the stream's end."""
        now = time.monotonic()
        then, samples_then = self._measured
        rate = (samples_learned - samples_then) / (now - then) if now > then else 0.0
        self.throughput = rate if math.isfinite(rate) else 0.0
        self._measured = (now, samples_learned)
        self._measure_lag(position)

    def _measure_lag(self, position: Position) -> None:
        key = self.keys.samples
        added = int(self.retry(lambda: self._entries_added(keys=[key]))) if self._added_known else -1
        self._added_known = added != -1  # Redis 6.2 has no entries-added: not asked again
        if added == -2:  # no such stream (yet)
            self.lag, self.lag_at_least = 0, False
            return
        if added >= 0:
            self.lag, self.lag_at_least = position.samples_behind(added - position.entries_consumed), False
            return
        if self._counted is not None:  # Redis 6.2, after a large count: recount once as many entries were read
            consumed_then, counted = self._counted
            since = position.entries_consumed - consumed_then
            if 0 <= since < counted:
                self.lag, self.lag_at_least = position.samples_behind(counted - since), True
                return
        # Counted in Redis, at most LAG_CAP samples' worth of entries (the script reads them whole).
        cap = max(1, int(LAG_CAP / position.samples_per_entry))
        start = f"({position.last_id}"
        count = int(self.retry(lambda: self._count_after(keys=[key], args=[start, cap + 1])))
        self.lag, self.lag_at_least = position.samples_behind(min(count, cap)), count > cap
        self._counted = (position.entries_consumed, min(count, cap)) if count > self._recount_from else None

    def with_measures(self, report: MetricsReport) -> MetricsReport:
        """The metrics report with this worker's throughput and lag, as a snapshot stores it."""
        return dataclasses.replace(
            report, throughput=round(self.throughput, 1), lag=self.lag, lag_at_least=self.lag_at_least
        )

    def log_progress(
        self, version: int | None, accuracy: tuple[float | None, float | None], position: Position, final: bool
    ) -> None:
        """One INFO line every ``LOG_EVERY`` seconds (and at the end), DEBUG otherwise."""
        now = time.monotonic()
        level = logging.INFO if final or now >= self._next_log else logging.DEBUG
        if level == logging.INFO:
            self._next_log = now + LOG_EVERY
        log.log(
            level,
            "snapshot %d: %s samples learned (prequential %s, rolling %s), %s/s, lag %s%s, %d dead letters%s%s",
            version, f"{position.samples_learned:,}", _percent(accuracy[0]), _percent(accuracy[1]),
            f"{self.throughput:,.0f}", "≥" if self.lag_at_least else "", self.lag, position.deadletter_count,
            f", {position.duplicates_skipped:,} duplicates skipped" if position.duplicates_skipped else "",
            " (final)" if final else "",
        )  # fmt: skip


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"
