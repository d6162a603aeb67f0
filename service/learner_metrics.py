"""The series an online learner is judged by, read at scrape time from the model holder.

Gauges (labelled ``model``): ``digitstream_prequential_accuracy_ratio``,
``digitstream_rolling_accuracy_ratio`` (of the served snapshot), ``digitstream_learning_samples_per_second``
(the worker's throughput; 0 without a healthy worker), ``digitstream_backlog_entries`` (counted in
the stream by the service, ``service.learning``) with ``digitstream_backlog_at_least`` (1 when that
count is a lower bound), ``digitstream_heartbeat_age_seconds`` and ``digitstream_worker_health``
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

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from digitstream.observability import DEADLETTER_CLASSES, FAULT_KINDS, HEALTH_STATES

if TYPE_CHECKING:
    from .live_events import EventHubs
    from .model_holder import ModelHolder

NAN = float("nan")  # Prometheus's "no value"


class LearnerCollector(Collector):
    def __init__(self, holder: ModelHolder, model: str, events: EventHubs | None = None) -> None:
        self.holder = holder
        self.model = model
        self.events = events
        self._high: dict[tuple[str, str], float] = {}  # counters' high-water marks

    def _counter(self, name: str, label: str, value: float) -> float:
        key = (name, label)
        high = max(self._high.get(key, 0.0), value)
        self._high[key] = high
        return high

    def collect(self) -> Iterator[Metric]:
        holder, m = self.holder, [self.model]
        model, status, learning = holder.current, holder.worker_status, holder.learning
        metrics = model.meta.metrics if model is not None else None

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["model"])
            family.add_metric(m, NAN if value is None else float(value))
            return family

        yield gauge("digitstream_prequential_accuracy_ratio", "Prequential (test-then-train) accuracy, all samples",
                    metrics.prequential_accuracy if metrics else None)  # fmt: skip
        yield gauge("digitstream_rolling_accuracy_ratio", "Prequential accuracy over the last rolling_window samples",
                    metrics.rolling_accuracy if metrics else None)  # fmt: skip
        yield gauge("digitstream_learning_samples_per_second", "Samples the worker learns per second",
                    learning.throughput if holder.redis_ok else None)  # fmt: skip
        yield gauge("digitstream_backlog_entries", "Stream entries after the latest snapshot's position",
                    learning.backlog)  # fmt: skip
        yield gauge("digitstream_backlog_at_least", "1 when the backlog is a lower bound (Redis < 7, capped count)",
                    float(learning.backlog_at_least))  # fmt: skip
        yield gauge("digitstream_heartbeat_age_seconds", "Seconds since the worker's status last changed",
                    learning.heartbeat_age)  # fmt: skip
        health = GaugeMetricFamily("digitstream_worker_health", "Learning health: 1 for the current state",
                                   labels=["model", "state"])  # fmt: skip
        for state in HEALTH_STATES:
            health.add_metric([self.model, state], float(state == learning.health))
        yield health

        meta = model.meta if model is not None else None
        reasons: Mapping[str, int] = status.deadletter_reasons if status else meta.deadletter_reasons if meta else {}
        faults: Mapping[str, int] = status.fault_counts if status else meta.fault_counts if meta else {}
        drift = max(status.drift_events_total if status else 0, metrics.drift_events_total if metrics else 0)
        yield self._labelled("digitstream_deadletters", "Stream entries dead-lettered, by reason class",
                             "reason", DEADLETTER_CLASSES, reasons)  # fmt: skip
        yield self._labelled("digitstream_worker_faults", "Faults the worker survived, by kind",
                             "kind", FAULT_KINDS, faults)  # fmt: skip
        family = CounterMetricFamily("digitstream_drift_events", "Drift events flagged (ADWIN)", labels=["model"])
        family.add_metric(m, self._counter("drift", "", drift))
        yield family
        swaps = CounterMetricFamily("digitstream_model_swaps", "Snapshots loaded by this process since start")
        swaps.add_metric([], float(holder.swaps))
        yield swaps
        if self.events is not None:
            doc = "Open event streams (GET /model/events, /models/{name}/events)"
            yield GaugeMetricFamily("digitstream_event_streams", doc, value=float(self.events.clients))

    def _labelled(
        self, name: str, doc: str, label: str, values: tuple[str, ...], counts: Mapping[str, int]
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=["model", label])
        other = sum(n for key, n in counts.items() if key not in values)
        for value in values:
            count = counts.get(value, 0) + (other if value == "other" else 0)
            family.add_metric([self.model, value], self._counter(name, value, float(count)))
        return family


__all__ = ["LearnerCollector"]
