"""The app factory: ``create_app(settings)`` builds the FastAPI app; its lifespan owns Redis and the follower.

Nothing happens at import time. The lifespan creates the ``redis.asyncio`` client (the only
connection of the process), starts the snapshot follower and the prediction flusher, and closes
them all on shutdown. Scoring is numpy alone: the API process never loads numba.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from digitstream.connections import service_client
from digitstream.model_file import MAX_FILE_BYTES
from digitstream.redis_checks import check_eviction_async
from digitstream.settings import Settings, load_settings

from .access import Access, AccessMiddleware
from .batching import MicroBatcher
from .body_limit import BodyBudget, BodyLimitMiddleware
from .deps import API_KEY_HEADER
from .errors import install_error_handlers
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import REPLAYED_HEADER
from .live_events import EventHubs, install_exit_hook
from .metrics import RequestMetricsMiddleware, ServiceMetrics
from .model_holder import ModelHolder
from .model_holders import ModelHolders
from .predictions import PredictionStore
from .routes import compare, dashboard, events, feedback, health, model, models, oip, predict, transfer
from .uploads import DecodeSlots

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
BATCH_BYTES_PER_IMAGE = 4096  # a JSON image of 784 values "255, " is 3,920 bytes: a full batch fits
DESCRIPTION = """Predictions from the newest model snapshot a worker learned from the Redis stream,
hot-reloaded within a second of being written. Errors are `{"detail": "<field>: <problem>"}`.
Writes (feedback, samples, pin, unpin) take `application/json` and need the `X-API-Key` header when
the service has a key; without a key they are open only on a service listening on loopback, to
clients on the same machine. See the threat model in the README."""


def create_app(settings: Settings) -> FastAPI:
    """The service for ``settings``; run it under uvicorn (``digitstream serve``)."""
    metrics = ServiceMetrics(settings.model_name)
    app = FastAPI(
        title="digitstream",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        # Our own Prometheus series cover requests; FastAPI's OpenTelemetry hooks cost every request an
        # environment lookup even when no provider is configured.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        openapi_tags=[
            {"name": "predict", "description": "the served model's answers"},
            {"name": "learn", "description": "labelled samples for the worker"},
            {"name": "model", "description": "the served snapshot, versions, rollback"},
            {"name": "models", "description": "the registered models, each served under /models/{name}"},
            {"name": "health", "description": "liveness, readiness, Prometheus metrics"},
            {"name": "open inference protocol", "description": "KServe V2 / Triton clients: /v2/..."},
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.access = Access(settings)
    app.state.body_budget = BodyBudget(settings.max_inflight_body_bytes)
    app.state.decoders = DecodeSlots(settings.image_decoders)
    app.state.events = EventHubs(settings.sse_max_clients)
    install_exit_hook()  # event streams end when uvicorn is told to stop
    install_error_handlers(app)
    # Matched in order (each route tried costs a request ~2 us): the hot path, then the trivial ones.
    predict.register_single(app)
    health.register(app)
    predict.register(app, settings)
    feedback.register(app, settings)
    model.register(app, settings)
    models.register(app, settings)
    compare.register(app, settings)
    oip.register(app, settings)
    transfer.register(app, settings)
    app.include_router(dashboard.router())
    app.include_router(events.router(settings))
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    batch_limit = max(settings.max_body_bytes, settings.max_batch * BATCH_BYTES_PER_IMAGE)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", API_KEY_HEADER, IDEMPOTENCY_HEADER],
            expose_headers=[REPLAYED_HEADER],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_body_bytes,
        limits={
            "/predict/batch": batch_limit,
            "/samples": batch_limit,
            "/predict/image": settings.max_upload_bytes,
            "/import": MAX_FILE_BYTES,  # /models/{name}/import
        },
        budget=app.state.body_budget,
        prefixes={"/v2/models/": batch_limit},
    )
    app.add_middleware(AccessMiddleware, access=app.state.access)  # before any body is read or budgeted
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: times everything
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several worker processes): settings from DIGITSTREAM_* vars."""
    return create_app(load_settings())


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    client = service_client(settings)
    holder = ModelHolder(client, settings.keys, settings.poll_interval)
    holders = ModelHolders(
        client, settings.model_name, holder, capacity=settings.served_models_max, poll_interval=settings.poll_interval
    )
    predictions = PredictionStore(client, settings.keys, settings.prediction_ttl)
    app.state.redis = client
    app.state.holder = holder
    app.state.holders = holders
    app.state.predictions = predictions
    app.state.batcher = MicroBatcher()
    app.state.metrics.bind(holder, predictions, app.state.events, holders.items)
    app.state.events.of(holder)  # the default model's events are followed from the start
    try:
        async with holder.running(), predictions.running():
            await check_eviction_async(client, log)
            log.info("serving model %r (version %s)", settings.model_name, holder.current and holder.current.version)
            # The start-up heap (modules, routes, schemas) never dies: out of the collector's sight, the
            # periodic full collections stop scanning it, which trims latency spikes under load.
            gc.collect()
            gc.freeze()
            yield
    finally:
        app.state.events.close()
        await holders.close()
        app.state.decoders.close()
        await client.aclose()
