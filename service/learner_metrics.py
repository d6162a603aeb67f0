"""The series an online learner is judged by, read at scrape time from the model holder.

One series per model this process serves (the default one, and the registered ones held in its
served-models LRU), labelled ``model``. Gauges: ``digitstream_prequential_accuracy_ratio``,
``digitstream_rolling_accuracy_ratio`` (of the served snapshot), ``digitstream_learning_samples_per_second``
(the worker's throughput; 0 without a healthy worker), ``digitstream_backlog_entries`` (counted in
the stream by the service, ``service.learning``) and ``digitstream_backlog_samples`` (the samples in
them: packed entries hold many) with ``digitstream_backlog_at_least`` (1 when that count is a lower
bound), ``digitstream_heartbeat_age_seconds`` and ``digitstream_worker_health``
(one series per state of ``observability.HEALTH_STATES``, 1 for the current one).

Counters: ``digitstream_deadletters_total`` by ``reason`` (``observability.DEADLETTER_CLASSES``),
``digitstream_drift_events_total``, ``digitstream_worker_faults_total`` by ``kind``
(``observability.FAULT_KINDS``): the model's cumulative counts, from the worker's status (fresh
each heartbeat) or else the served snapshot; and ``digitstream_model_swaps_total``, the snapshots
this process loaded. A count read lower than before (a pinned older snapshot, a deleted model) is
not exported: each counter only grows, as Prometheus expects. Every label value comes from a
fixed list, so no input can grow the number of series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from digitstream.observability import DEADLETTER_CLASSES, FAULT_KINDS, HEALTH_STATES

if TYPE_CHECKING:
    from .live_events import EventHubs
    from .model_holder import ModelHolder

NAN = float("nan")  # Prometheus's "no value"


Models = Callable[[], list[tuple[str, "ModelHolder"]]]


class LearnerCollector(Collector):
    """The series of every model this process serves: the default one and the registered ones it holds."""

    def __init__(self, holder: ModelHolder, models: Models, events: EventHubs | None = None) -> None:
        self.holder = holder  # the default model's: its swaps are the process's
        self.models = models
        self.events = events
        self._high: dict[tuple[str, str, str], float] = {}  # counters' high-water marks

    def _counter(self, name: str, model: str, label: str, value: float) -> float:
        key = (name, model, label)
        high = max(self._high.get(key, 0.0), value)
        self._high[key] = high
        return high

    def collect(self) -> Iterator[Metric]:
        gauges = {
            name: GaugeMetricFamily(name, doc, labels=["model"]) for name, doc in (
                ("digitstream_prequential_accuracy_ratio", "Prequential (test-then-train) accuracy, all samples"),
                ("digitstream_rolling_accuracy_ratio", "Prequential accuracy over the last rolling_window samples"),
                ("digitstream_learning_samples_per_second", "Samples the worker learns per second"),
                ("digitstream_backlog_entries", "Stream entries after the latest snapshot's position"),
                ("digitstream_backlog_samples", "Samples in the stream entries after the latest snapshot's position"),
                ("digitstream_backlog_at_least", "1 when the backlog is a lower bound (Redis < 7, capped count)"),
                ("digitstream_heartbeat_age_seconds", "Seconds since the worker's status last changed"),
            )
        }  # fmt: skip
        health = GaugeMetricFamily("digitstream_worker_health", "Learning health: 1 for the current state",
                                   labels=["model", "state"])  # fmt: skip
        dead = CounterMetricFamily("digitstream_deadletters", "Stream entries dead-lettered, by reason class",
                                   labels=["model", "reason"])  # fmt: skip
        faults = CounterMetricFamily("digitstream_worker_faults", "Faults the worker survived, by kind",
                                     labels=["model", "kind"])  # fmt: skip
        drift = CounterMetricFamily("digitstream_drift_events", "Drift events flagged (ADWIN)", labels=["model"])
        for name, holder in self.models():
            model, status, learning = holder.current, holder.worker_status, holder.learning
            meta = model.meta if model is not None else None
            metrics = meta.metrics if meta is not None else None
            values = {
                "digitstream_prequential_accuracy_ratio": metrics.prequential_accuracy if metrics else None,
                "digitstream_rolling_accuracy_ratio": metrics.rolling_accuracy if metrics else None,
                "digitstream_learning_samples_per_second": learning.throughput if holder.redis_ok else None,
                "digitstream_backlog_entries": learning.backlog_entries,
                "digitstream_backlog_samples": learning.backlog,
                "digitstream_backlog_at_least": float(learning.backlog_at_least),
                "digitstream_heartbeat_age_seconds": learning.heartbeat_age,
            }
            for series, value in values.items():
                gauges[series].add_metric([name], NAN if value is None else float(value))
            for state in HEALTH_STATES:
                health.add_metric([name, state], float(state == learning.health))
            reasons: Mapping[str, int] = (
                status.deadletter_reasons if status else meta.deadletter_reasons if meta else {}
            )
            kinds: Mapping[str, int] = status.fault_counts if status else meta.fault_counts if meta else {}
            self._labelled(dead, name, DEADLETTER_CLASSES, reasons)
            self._labelled(faults, name, FAULT_KINDS, kinds)
            drifts = max(status.drift_events_total if status else 0, metrics.drift_events_total if metrics else 0)
            drift.add_metric([name], self._counter("drift", name, "", drifts))
        yield from gauges.values()
        yield from (health, dead, faults, drift)
        swaps = CounterMetricFamily("digitstream_model_swaps", "Snapshots of the default model loaded since start")
        swaps.add_metric([], float(self.holder.swaps))
        yield swaps
        if self.events is not None:
            doc = "Open event streams (GET /model/events, /models/{name}/events)"
            yield GaugeMetricFamily("digitstream_event_streams", doc, value=float(self.events.clients))

    def _labelled(
        self, family: CounterMetricFamily, model: str, values: tuple[str, ...], counts: Mapping[str, int]
    ) -> None:
        other = sum(n for key, n in counts.items() if key not in values)
        for value in values:
            count = counts.get(value, 0) + (other if value == "other" else 0)
            family.add_metric([model, value], self._counter(family.name, model, value, float(count)))


__all__ = ["LearnerCollector"]
