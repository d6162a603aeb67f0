"""The Open Inference Protocol (KServe V2) beside the native API: health, metadata, readiness, infer.

``/v2/health/live`` and ``/v2/health/ready``; ``/v2/models/{name}`` (metadata) and ``.../ready``;
``POST /v2/models/{name}/infer`` (the served snapshot, latest or pinned) and
``/v2/models/{name}/versions/{v}/infer`` (any kept version). JSON and the binary-tensor extension
(``service.oip``). Every error is the protocol's ``{"error": "..."}``; not ready is 400, as the
protocol's "4xx means false". The native ``/predict`` stays the fast path: this one costs a
little more per request (a generic tensor format to check), and nothing on the native routes.

Each image's ``prediction_id`` goes in the answer's ``parameters`` (``prediction_ids``,
comma-separated in image order, and ``prediction_id`` for a single image): POST /feedback takes it
(and, as for ``/models/{name}/predict``, publishes to the default model's stream). Every registered
model is served by its name (``service.oip_models``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
from anyio import to_thread
from fastapi import FastAPI, Request, Response
from starlette.datastructures import State

from digitstream import __version__
from digitstream.protocol import N_PIXELS
from digitstream.settings import Settings

from .. import oip, validation
from ..errors import RETRY_AFTER_SECONDS, json_response
from ..model_holder import ServedModel
from ..oip_models import ModelCatalog
from ..oip_schemas import (
    InferResponse,
    Liveness,
    ModelMetadata,
    OipErrorBody,
    Readiness,
    ServerMetadata,
    errors,
    infer_body,
)

INLINE_BYTES = 64 * 1024  # smaller requests are read and scored on the event loop: a thread hop costs more
EXTENSIONS = ["binary_tensor_data"]


def oip_error(exc: oip.OipError) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status_code == 503 else None
    return json_response({"error": exc.message}, exc.status_code, headers)


def register(api: FastAPI, settings: Settings) -> None:
    tags: list[str | Enum] = ["open inference protocol"]
    max_batch = settings.max_batch

    @api.get("/v2", tags=tags, response_model=ServerMetadata)
    async def server_metadata() -> dict[str, Any]:
        """The server's name, version and protocol extensions."""
        return {"name": "digitstream", "version": __version__, "extensions": EXTENSIONS}

    @api.get("/v2/health/live", tags=tags, response_model=Liveness)
    async def live() -> dict[str, Any]:
        """The process is alive."""
        return {"live": True}

    @api.get("/v2/health/ready", tags=tags, response_model=Readiness, responses={400: {"model": Readiness}})
    async def ready(request: Request) -> Response:
        """Ready when the served model is loaded (400, "false", before the first snapshot)."""
        ok = request.app.state.holder.current is not None
        return json_response({"ready": ok}, 200 if ok else 400)

    @api.get("/v2/models/{name}", tags=tags, response_model=ModelMetadata, responses=errors(404))
    async def model_metadata(request: Request, name: str) -> Response:
        """Inputs, outputs and kept versions of the model ``name``."""
        return await _metadata(request.app.state, name)

    @api.get("/v2/models/{name}/versions/{version}", tags=tags, response_model=ModelMetadata, responses=errors(404))
    async def version_metadata(request: Request, name: str, version: str) -> Response:
        """The metadata of the model ``name``, for one of its kept versions."""
        return await _metadata(request.app.state, name, version)

    @api.get("/v2/models/{name}/ready", tags=tags, response_model=Readiness, responses=errors(404))
    async def model_ready(request: Request, name: str) -> Response:
        """Whether ``name`` can answer (400, "false", before its first snapshot)."""
        catalog = catalog_of(request.app.state)
        try:
            ok = (await catalog.holder(name)).current is not None
        except oip.OipError as exc:
            return oip_error(exc)
        return json_response({"ready": ok}, 200 if ok else 400)

    @api.get("/v2/models/{name}/versions/{version}/ready", tags=tags, response_model=Readiness,
             responses=errors(404))  # fmt: skip
    async def version_ready(request: Request, name: str, version: str) -> Response:
        """Whether version ``version`` of ``name`` is kept and can answer."""
        try:
            await catalog_of(request.app.state).version(name, version)
        except oip.OipError as exc:
            return oip_error(exc)
        return json_response({"ready": True})

    documentation: dict[str, Any] = {
        "tags": tags, "response_model": InferResponse, "openapi_extra": infer_body(max_batch),
        "responses": {
            200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                  "description": "JSON, or (binary outputs asked) a JSON header and the raw outputs"},
            **errors(400, 404, 413, 503),
        },
    }  # fmt: skip

    @api.post("/v2/models/{name}/infer", summary="Infer (served version)", **documentation)
    async def infer(request: Request, name: str) -> Response:
        """The digits and probabilities of 1..max_batch images, from the served snapshot (latest or pinned)."""
        state = request.app.state
        try:
            return await _infer(request, state, name, await catalog_of(state).served(name), max_batch)
        except oip.OipError as exc:
            return oip_error(exc)

    @api.post("/v2/models/{name}/versions/{version}/infer", summary="Infer (a kept version)", **documentation)
    async def infer_version(request: Request, name: str, version: str) -> Response:
        """As /v2/models/{name}/infer, from the kept version ``version``."""
        state = request.app.state
        try:
            return await _infer(request, state, name, await catalog_of(state).version(name, version), max_batch)
        except oip.OipError as exc:
            return oip_error(exc)


def catalog_of(state: State) -> ModelCatalog:
    """The app's model catalog, made at its first use (from the lifespan's holder and Redis client)."""
    catalog: ModelCatalog | None = getattr(state, "catalog", None)
    if catalog is None:
        catalog = state.catalog = ModelCatalog(state.holders, state.redis)
    return catalog


async def _metadata(state: State, name: str, version: str | None = None) -> Response:
    catalog = catalog_of(state)
    try:
        model = await catalog.version(name, version) if version is not None else (await catalog.holder(name)).current
        versions = await catalog.versions(name)
    except oip.OipError as exc:
        return oip_error(exc)
    tensor = {"name": oip.INPUT_NAME, "datatype": "UINT8", "shape": [-1, N_PIXELS]}
    outputs = [
        {"name": name_, "datatype": datatype, "shape": [-1] if columns is None else [-1, columns]}
        for name_, (datatype, columns) in oip.OUTPUTS.items()
    ]
    platform = f"digitstream-{model.rule}" if model is not None else "digitstream"
    shown = [str(v) for v in versions] if version is None or model is None else [str(model.version)]
    body = {"name": name, "versions": shown, "platform": platform, "inputs": [tensor], "outputs": outputs}
    return json_response(body)


async def _infer(request: Request, state: State, name: str, model: ServedModel, max_batch: int) -> Response:
    body = await validation.read_body(request)
    header_length = request.headers.get(oip.HEADER_LENGTH)

    def score() -> tuple[oip.InferRequest, np.ndarray, np.ndarray]:
        parsed = oip.read_request(body, header_length, max_batch)
        digits, proba = model.predict(parsed.images)
        return parsed, digits, proba

    large = len(body) > INLINE_BYTES
    parsed, digits, proba = await to_thread.run_sync(score) if large else score()
    state.metrics.images.inc(len(digits))
    keep = state.predictions.keep
    ids = [keep(row.tobytes()) for row in parsed.images]
    parameters: dict[str, Any] = {"prediction_ids": ",".join(ids), "samples_learned": model.samples_learned}
    if len(ids) == 1:
        parameters["prediction_id"] = ids[0]

    def encode() -> tuple[bytes, dict[str, str]]:
        return oip.answer(parsed, name, model.version, digits, proba, parameters)

    payload, headers = await to_thread.run_sync(encode) if large else encode()
    return Response(payload, headers=headers)


__all__ = ["OipErrorBody", "register"]
