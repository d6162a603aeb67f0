"""Prometheus metrics of one app, in its own CollectorRegistry (two apps in a process never mix).

Request series are recorded by a pure ASGI middleware (cheaper than ``BaseHTTPMiddleware``) and
labelled with the route template, never the raw path, so unknown URLs cannot explode the
label set. Model and worker gauges are read at scrape time from the model holder; the learner's own series
(accuracy, throughput, backlog, health, dead letters, drift, faults, swaps) are ``learner_metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .learner_metrics import LearnerCollector

if TYPE_CHECKING:
    from .live_events import EventHubs
    from .model_holder import ModelHolder
    from .predictions import PredictionStore

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The app's series; ``bind`` connects the scrape-time gauges to the running holder."""

    def __init__(self, model: str = "digitstream") -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "digitstream_http_requests", "HTTP requests served", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "digitstream_http_request_duration_seconds", "HTTP request latency (until the response is sent)",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.images = Counter("digitstream_images_predicted", "Images predicted (single, batch, uploads)", registry=r)
        self.feedback = Counter("digitstream_feedback", "Feedback samples published to the stream", registry=r)
        self.samples = Counter("digitstream_samples_published", "Samples published through POST /samples", registry=r)
        self.version = Gauge("digitstream_served_model_version", "Version of the served snapshot", registry=r)
        self.samples_learned = Gauge(
            "digitstream_served_samples_learned", "Samples learned by the served model", registry=r
        )
        self.snapshot_age = Gauge("digitstream_snapshot_age_seconds", "Age of the served snapshot", registry=r)
        self.pinned = Gauge("digitstream_model_pinned", "1 when a pinned version is served", registry=r)
        self.worker_lag = Gauge("digitstream_worker_lag", "Stream entries the worker has not learned yet", registry=r)
        self.worker_up = Gauge("digitstream_worker_up", "1 when a worker status is present in Redis", registry=r)
        self.worker_restarts = Gauge(
            "digitstream_worker_restarts",
            "Unclean worker starts in a row at the position the worker continued from (3+: a crash loop)",
            registry=r,
        )
        self.redis_up = Gauge("digitstream_redis_up", "1 when the last Redis round trip succeeded", registry=r)
        self.pending = Gauge("digitstream_predictions_pending", "Predictions not yet written to Redis", registry=r)
        self._learner: LearnerCollector | None = None
        self._children: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}

    def bind(
        self, holder: ModelHolder, predictions: PredictionStore, events: EventHubs | None = None,
        models: Callable[[], list[tuple[str, ModelHolder]]] | None = None,
    ) -> None:  # fmt: skip
        def model_value(read: Callable[[], float | None]) -> Callable[[], float]:
            def value() -> float:
                got = read() if holder.current is not None else None
                return float("nan") if got is None else float(got)

            return value

        self.version.set_function(model_value(lambda: holder.current.version))  # type: ignore[union-attr]
        self.samples_learned.set_function(model_value(lambda: holder.current.samples_learned))  # type: ignore[union-attr]
        self.snapshot_age.set_function(model_value(lambda: holder.current.age()))  # type: ignore[union-attr]
        self.pinned.set_function(lambda: float(bool(holder.current and holder.current.pinned)))
        self.worker_lag.set_function(lambda: _lag(holder))
        self.worker_up.set_function(lambda: float(holder.worker_status is not None))
        self.worker_restarts.set_function(
            lambda: float("nan") if holder.worker_status is None else float(holder.worker_status.restarts)
        )
        self.redis_up.set_function(lambda: float(holder.redis_ok))
        self.pending.set_function(lambda: float(predictions.pending_count))
        if self._learner is not None:
            self.registry.unregister(self._learner)
        self._learner = LearnerCollector(holder, models or (lambda: [(self.model, holder)]), events)
        self.registry.register(self._learner)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)).inc,
                self.latency.labels(route).observe,
            )
            self._children[key] = children
        children[0]()
        children[1](seconds)


def _lag(holder: ModelHolder) -> float:
    status, model = holder.worker_status, holder.current
    value = status.lag if status is not None else None
    if value is None and model is not None:
        value = model.meta.metrics.lag
    return float("nan") if value is None else float(value)  # NaN: Prometheus's "no value"


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - started)
