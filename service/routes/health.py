"""GET /healthz (process alive), /readyz (model loaded; degraded without Redis), /metrics."""

from __future__ import annotations

from enum import Enum

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import HolderDep, MetricsDep
from ..errors import RETRY_AFTER_SECONDS, json_response
from ..schemas import Health, Readiness

_OK = b'{"status":"ok"}'


def register(api: FastAPI) -> None:
    tags: list[str | Enum] = ["health"]

    @api.get("/healthz", tags=tags, response_model=Health)
    async def healthz() -> Response:
        """The process is alive (a constant answer: also the benchmark's trivial endpoint)."""
        return Response(_OK, media_type="application/json")

    @api.get(
        "/readyz", tags=tags, response_model=Readiness,
        responses={503: {"model": Readiness, "description": "no model yet"}},
    )  # fmt: skip
    async def readyz(holder: HolderDep) -> Response:
        """Ready when a model is loaded; "degraded" while Redis is unreachable (the model keeps serving)."""
        model = holder.current
        redis = "ok" if holder.redis_ok else "unreachable"
        version = model.version if model else None
        if model is None:
            detail = "no model snapshot loaded yet" + ("" if holder.redis_ok else " (Redis unreachable)")
            body = {"status": "unavailable", "model_version": None, "redis": redis, "detail": detail}
            return json_response(body, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
        if not holder.redis_ok:
            detail = f"Redis unreachable: serving version {version} from memory; feedback and samples are refused"
            return json_response({"status": "degraded", "model_version": version, "redis": redis, "detail": detail})
        return json_response({"status": "ready", "model_version": version, "redis": redis, "detail": None})

    @api.get(
        "/metrics",
        tags=tags,
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text format"}},
    )
    async def metrics(metrics: MetricsDep) -> Response:
        """Prometheus metrics: requests, latency, served version, snapshot age, worker lag, Redis up."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
