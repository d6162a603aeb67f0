"""Typed contracts of the JSON that crosses processes: the snapshot metadata and the worker status.

The worker builds these types and writes their ``to_json()``; the service (and anyone reading
Redis) reads them back with ``from_json()``. Standard library only, so every role and the
clients can import it without numba, river or fastapi.

* ``to_json()`` gives a JSON-able dict whose numbers are all finite (``json.dumps(...,
  allow_nan=False)`` never fails on it), so readers can parse it as strict JSON.
* ``from_json()`` accepts what older workers wrote (a missing optional field takes its default)
  and raises ``ContractError``, naming the field, for anything else: wrong types, non-finite
  numbers, unknown states. A reader treats such a value as absent, it never crashes on it.

Snapshot metadata (``SnapshotMeta``, the ``meta`` field of a snapshot hash, see ``digitstream.store``)::

    schema, model, version (assigned by the store), samples_learned, last_id, created_at (unix s),
    entries_consumed (learned + skipped + dead-lettered + duplicate entries), deadletter_count, samples_skipped,
    duplicates_skipped (samples whose producer had already sent their seq),
    offset (samples of the packed entry after last_id included too; 0 when absent),
    learner {format, params, n_samples},
    metrics {samples, prequential_accuracy, rolling_accuracy, rolling_window, confusion_matrix (10x10),
             per_class_recall (10), drift_events [{samples, detector, direction, error_rate}],
             learning_curve [[samples, prequential_accuracy, rolling_accuracy], ...],
             throughput (samples/s), lag, lag_at_least, drift_events_total},
    faults [{kind, message, at, samples_learned, skipped?, seconds?}], worker_id, stream,
    settings {batch_size, snapshot_every, snapshot_interval, keep_versions, retention_max_len, retention_max_age},
    deadletter_reasons {class: count} (cumulative, classes: ``observability.DEADLETTER_CLASSES``),
    fault_counts {kind: count} (cumulative)

Worker status (``WorkerStatus``, the ``{model}:worker:status`` key)::

    worker_id, state (starting | standby | active | stopped), model, samples_learned, last_id,
    version, lag, lag_at_least, throughput, deadletter_count, duplicates_skipped, faults [...], updated_at (unix s),
    deadletter_reasons {class: count}, fault_counts {kind: count}, drift_events_total, health (the worker's own view)

Examples
--------
>>> status = WorkerStatus("host:41:9f3a", "active", "digitstream", 5000, "1700000000000-0", 1.7e9, lag=12)
>>> WorkerStatus.from_json(status.to_json()) == status
True
>>> WorkerStatus.from_json({**status.to_json(), "lag": "a dozen"})
Traceback (most recent call last):
...
digitstream.jsonfields.ContractError: status.lag: expected a 64-bit integer, got 'a dozen'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Self, cast, get_args

from .jsonfields import ContractError, array, boolean, get, integer, json_object, number, optional, show, string
from .observability import counts
from .protocol import SCHEMA_VERSION

WorkerState = Literal["starting", "standby", "active", "stopped"]
WORKER_STATES: tuple[str, ...] = get_args(WorkerState)
CurvePoint = tuple[int, float | None, float | None]  # samples, prequential accuracy, rolling accuracy


def _state(value: Any, where: str) -> WorkerState:
    if value not in WORKER_STATES:
        raise ContractError(f"{where}: expected one of {', '.join(WORKER_STATES)}, got {show(value)}")
    return cast(WorkerState, value)


def _curve_point(value: Any, where: str) -> CurvePoint:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ContractError(f"{where}: expected [samples, prequential, rolling], got {show(value)}")
    accuracy = optional(number)
    return integer(value[0], f"{where}[0]"), accuracy(value[1], f"{where}[1]"), accuracy(value[2], f"{where}[2]")


def _without_none(data: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not (k in names and v is None)}


# -- the pieces ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """Something that went wrong and was survived: ``redis`` (an outage), ``divergence`` (samples that made the
    weights non-finite, dead-lettered), ``internal`` (entries that made decoding or learning raise,
    dead-lettered), ``restart`` (workers restarting at one position)."""

    kind: str
    message: str
    at: float  # unix seconds
    samples_learned: int
    skipped: int | None = None  # divergence, internal: samples dead-lettered; restart: the starts
    seconds: float | None = None  # redis: how long it was unreachable

    def to_json(self) -> dict[str, Any]:
        body = {"kind": self.kind, "message": self.message, "at": self.at, "samples_learned": self.samples_learned}
        return _without_none({**body, "skipped": self.skipped, "seconds": self.seconds}, "skipped", "seconds")

    @classmethod
    def from_json(cls, data: Any, where: str = "fault") -> Self:
        d = json_object(data, where)
        return cls(
            get(d, "kind", string, where), get(d, "message", string, where, ""), get(d, "at", number, where),
            get(d, "samples_learned", integer, where, 0), get(d, "skipped", optional(integer), where, None),
            get(d, "seconds", optional(number), where, None),
        )  # fmt: skip


@dataclass(frozen=True)
class DriftEvent:
    """A change in the prequential error flagged by a detector at sample ``samples``."""

    samples: int
    detector: str
    direction: str | None = None  # "worse" (the error rose) or "better"; None in old snapshots
    error_rate: float | None = None  # the detector's estimate after the change

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "detector": self.detector, "direction": self.direction,
                "error_rate": self.error_rate}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any, where: str = "drift_event") -> Self:
        d = json_object(data, where)
        return cls(
            get(d, "samples", integer, where), get(d, "detector", string, where),
            get(d, "direction", optional(string), where, None), get(d, "error_rate", optional(number), where, None),
        )  # fmt: skip


@dataclass(frozen=True)
class MetricsReport:
    """Online (prequential) metrics at a snapshot; throughput and lag are the worker's own measures."""

    samples: int = 0
    prequential_accuracy: float | None = None
    rolling_accuracy: float | None = None
    rolling_window: int = 0
    confusion_matrix: tuple[tuple[int, ...], ...] = ()  # rows: true digit, columns: predicted
    per_class_recall: tuple[float | None, ...] = ()
    drift_events: tuple[DriftEvent, ...] = ()
    learning_curve: tuple[CurvePoint, ...] = ()
    throughput: float | None = None  # samples/s since the previous snapshot
    lag: int | None = None  # stream entries not yet learned
    lag_at_least: bool = False  # lag is a lower bound (Redis < 7 counts at most worker.status.LAG_CAP)
    drift_events_total: int = 0  # every drift event flagged over the model's life (drift_events keeps the newest)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "prequential_accuracy": self.prequential_accuracy,
            "rolling_accuracy": self.rolling_accuracy,
            "rolling_window": self.rolling_window,
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "per_class_recall": list(self.per_class_recall),
            "drift_events": [event.to_json() for event in self.drift_events],
            "learning_curve": [list(point) for point in self.learning_curve],
            "throughput": self.throughput,
            "lag": self.lag,
            "lag_at_least": self.lag_at_least,
            "drift_events_total": self.drift_events_total,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "metrics") -> Self:
        d, f = json_object(data, where), optional(number)
        drift = get(d, "drift_events", array(DriftEvent.from_json), where, ())
        return cls(
            samples=get(d, "samples", integer, where, 0),
            prequential_accuracy=get(d, "prequential_accuracy", f, where, None),
            rolling_accuracy=get(d, "rolling_accuracy", f, where, None),
            rolling_window=get(d, "rolling_window", integer, where, 0),
            confusion_matrix=get(d, "confusion_matrix", array(array(integer)), where, ()),
            per_class_recall=get(d, "per_class_recall", array(f), where, ()),
            drift_events=drift,
            learning_curve=get(d, "learning_curve", array(_curve_point), where, ()),
            throughput=get(d, "throughput", f, where, None),
            lag=get(d, "lag", optional(integer), where, None),
            lag_at_least=get(d, "lag_at_least", boolean, where, False),
            drift_events_total=get(d, "drift_events_total", integer, where, len(drift)),
        )


@dataclass(frozen=True)
class LearnerDescriptor:
    """What learner a snapshot's arrays belong to (``LearnerState.meta()``); params are checked by HyperParameters."""

    format: int
    params: dict[str, Any]
    n_samples: int

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "params": dict(self.params), "n_samples": self.n_samples}

    @classmethod
    def from_json(cls, data: Any, where: str = "learner") -> Self:
        d = json_object(data, where)
        params = get(d, "params", json_object, where)
        return cls(get(d, "format", integer, where, 1), params, get(d, "n_samples", integer, where))


@dataclass(frozen=True)
class WorkerSettings:
    """The settings a snapshot was written with, for operators."""

    batch_size: int
    snapshot_every: int
    snapshot_interval: float
    keep_versions: int
    retention_max_len: int
    retention_max_age: float | None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: Any, where: str = "settings") -> Self:
        d = json_object(data, where)
        return cls(
            get(d, "batch_size", integer, where), get(d, "snapshot_every", integer, where),
            get(d, "snapshot_interval", number, where), get(d, "keep_versions", integer, where),
            get(d, "retention_max_len", integer, where), get(d, "retention_max_age", optional(number), where, None),
        )  # fmt: skip


# -- the contracts ------------------------------------------------------------------------------
def samples_in_entries(entries: int, entries_consumed: int, samples_passed: int, offset: int = 0) -> int:
    """The samples in ``entries`` stream entries after a position, less the ``offset`` samples of the first
    already consumed: each entry holds the mean of the entries consumed so far (1 for classic entries;
    a packed entry holds many, ``digitstream.packed``).

    >>> samples_in_entries(3, entries_consumed=4, samples_passed=4)
    3
    >>> samples_in_entries(3, entries_consumed=2, samples_passed=2048 + 100, offset=100)
    2972
    """
    if entries <= 0:
        return 0
    return max(0, round(entries * samples_per_entry(entries_consumed, samples_passed, offset)) - offset)


def samples_per_entry(entries_consumed: int, samples_passed: int, offset: int = 0) -> float:
    """The mean number of samples in the entries consumed up to a position (1 for classic entries, and
    for a model that learned none of its stream, e.g. an imported one).

    >>> samples_per_entry(0, 300), samples_per_entry(3, 3000)
    (1.0, 1000.0)
    """
    in_entries = samples_passed - offset  # the samples of the entries up to the position's last id
    return in_entries / entries_consumed if in_entries > entries_consumed > 0 else 1.0


@dataclass(frozen=True)
class SnapshotMeta:
    """The JSON metadata of one snapshot; the learner's arrays travel next to it (``digitstream.snapshot``)."""

    samples_learned: int
    last_id: str  # the last stream entry the snapshot includes (learned, skipped or dead-lettered)
    learner: LearnerDescriptor
    entries_consumed: int  # entries passed up to last_id: learned + skipped + dead-lettered + duplicates
    model: str | None = None
    created_at: float | None = None  # unix seconds
    deadletter_count: int = 0
    samples_skipped: int = 0  # by the divergence guard
    duplicates_skipped: int = 0  # samples sent again by their producer (worker.dedupe)
    offset: int = 0  # samples of the entry after last_id included too (a packed entry; 0 in older snapshots)
    metrics: MetricsReport = field(default_factory=MetricsReport)
    faults: tuple[Fault, ...] = ()  # the newest few
    worker_id: str | None = None
    stream: str | None = None
    settings: WorkerSettings | None = None
    deadletter_reasons: dict[str, int] = field(default_factory=dict)  # dead letters by reason class, cumulative
    fault_counts: dict[str, int] = field(default_factory=dict)  # faults by kind, cumulative (faults keeps the newest)
    version: int | None = None  # assigned by the store when written (not part of the written JSON)
    schema: int = SCHEMA_VERSION

    @property
    def samples_passed(self) -> int:
        """Samples consumed up to the position: learned, dead-lettered, skipped or duplicates."""
        return self.samples_learned + self.deadletter_count + self.samples_skipped + self.duplicates_skipped

    def samples_behind(self, entries: int) -> int:
        """The samples in ``entries`` stream entries after this snapshot's position (``samples_in_entries``)."""
        return samples_in_entries(entries, self.entries_consumed, self.samples_passed, self.offset)

    def to_json(self) -> dict[str, Any]:
        body = {
            "schema": self.schema,
            "model": self.model,
            "version": self.version,
            "samples_learned": self.samples_learned,
            "last_id": self.last_id,
            "created_at": self.created_at,
            "entries_consumed": self.entries_consumed,
            "deadletter_count": self.deadletter_count,
            "samples_skipped": self.samples_skipped,
            "duplicates_skipped": self.duplicates_skipped,
            "offset": self.offset,
            "learner": self.learner.to_json(),
            "metrics": self.metrics.to_json(),
            "faults": [fault.to_json() for fault in self.faults],
            "worker_id": self.worker_id,
            "stream": self.stream,
            "settings": self.settings.to_json() if self.settings else None,
            "deadletter_reasons": dict(self.deadletter_reasons),
            "fault_counts": dict(self.fault_counts),
        }
        return _without_none(body, "version")

    @classmethod
    def from_json(cls, data: Any, where: str = "meta") -> Self:
        d, s = json_object(data, where), optional(string)
        samples = get(d, "samples_learned", integer, where)
        return cls(
            samples_learned=samples,
            last_id=get(d, "last_id", string, where),
            learner=get(d, "learner", LearnerDescriptor.from_json, where),
            entries_consumed=get(d, "entries_consumed", integer, where, samples),
            model=get(d, "model", s, where, None),
            created_at=get(d, "created_at", optional(number), where, None),
            deadletter_count=get(d, "deadletter_count", integer, where, 0),
            samples_skipped=get(d, "samples_skipped", integer, where, 0),
            duplicates_skipped=get(d, "duplicates_skipped", integer, where, 0),
            offset=get(d, "offset", integer, where, 0),
            metrics=get(d, "metrics", MetricsReport.from_json, where, MetricsReport()),
            faults=get(d, "faults", array(Fault.from_json), where, ()),
            worker_id=get(d, "worker_id", s, where, None),
            stream=get(d, "stream", s, where, None),
            settings=get(d, "settings", optional(WorkerSettings.from_json), where, None),
            deadletter_reasons=get(d, "deadletter_reasons", counts, where, {}),
            fault_counts=get(d, "fault_counts", counts, where, {}),
            version=get(d, "version", optional(integer), where, None),
            schema=get(d, "schema", integer, where, SCHEMA_VERSION),
        )


@dataclass(frozen=True)
class WorkerStatus:
    """The health of a model's worker, written at every heartbeat with an expiry (``Keys.worker_status``)."""

    worker_id: str
    state: WorkerState
    model: str
    samples_learned: int  # committed: learned up to last_id
    last_id: str
    updated_at: float  # unix seconds
    version: int | None = None  # the snapshot the worker's state equals or descends from
    lag: int | None = None
    lag_at_least: bool = False
    throughput: float = 0.0
    deadletter_count: int = 0
    faults: tuple[Fault, ...] = ()
    duplicates_skipped: int = 0
    deadletter_reasons: dict[str, int] = field(default_factory=dict)  # by reason class, cumulative
    fault_counts: dict[str, int] = field(default_factory=dict)  # by kind, cumulative
    drift_events_total: int = 0
    health: str = "ok"  # the worker's own view (observability.HEALTH_STATES), e.g. "crash-looping"
    restarts: int = 0  # consecutive unclean starts at the position the worker continued from (worker.restarts)

    def to_json(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "state": self.state,
            "model": self.model,
            "samples_learned": self.samples_learned,
            "last_id": self.last_id,
            "version": self.version,
            "lag": self.lag,
            "lag_at_least": self.lag_at_least,
            "throughput": self.throughput,
            "deadletter_count": self.deadletter_count,
            "duplicates_skipped": self.duplicates_skipped,
            "faults": [fault.to_json() for fault in self.faults],
            "updated_at": self.updated_at,
            "deadletter_reasons": dict(self.deadletter_reasons),
            "fault_counts": dict(self.fault_counts),
            "drift_events_total": self.drift_events_total,
            "health": self.health,
            "restarts": self.restarts,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "status") -> Self:
        d = json_object(data, where)
        return cls(
            worker_id=get(d, "worker_id", string, where),
            state=get(d, "state", _state, where),
            model=get(d, "model", string, where),
            samples_learned=get(d, "samples_learned", integer, where),
            last_id=get(d, "last_id", string, where),
            updated_at=get(d, "updated_at", number, where),
            version=get(d, "version", optional(integer), where, None),
            lag=get(d, "lag", optional(integer), where, None),
            lag_at_least=get(d, "lag_at_least", boolean, where, False),
            throughput=get(d, "throughput", number, where, 0.0),
            deadletter_count=get(d, "deadletter_count", integer, where, 0),
            faults=get(d, "faults", array(Fault.from_json), where, ()),
            duplicates_skipped=get(d, "duplicates_skipped", integer, where, 0),
            deadletter_reasons=get(d, "deadletter_reasons", counts, where, {}),
            fault_counts=get(d, "fault_counts", counts, where, {}),
            drift_events_total=get(d, "drift_events_total", integer, where, 0),
            health=get(d, "health", string, where, "ok"),
            restarts=get(d, "restarts", integer, where, 0),
        )


__all__ = [
    "WORKER_STATES",
    "ContractError",
    "CurvePoint",
    "DriftEvent",
    "Fault",
    "LearnerDescriptor",
    "MetricsReport",
    "SnapshotMeta",
    "WorkerSettings",
    "WorkerState",
    "WorkerStatus",
    "samples_in_entries",
    "samples_per_entry",
]
