"""GET /model, /model/versions, /model/weights(.png), /model/features(.png); POST /model/pin, /model/unpin."""

from __future__ import annotations

import functools
from enum import Enum
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import FastAPI, Query, Request, Response

from digitstream.settings import Settings

from ..access import redact_worker
from ..deps import HolderDep, ModelDep, api_key_dependencies
from ..errors import error
from ..features import MAX_UNITS, features_json, features_png
from ..model_holder import ModelHolder, ServedModel
from ..schemas import HiddenFeatures, ModelInfo, PinRequest, Versions, WeightTemplates
from ..weights_image import weights_png
from .responses import errors


def register(api: FastAPI, settings: Settings) -> None:
    guarded = api_key_dependencies(settings)
    tags: list[str | Enum] = ["model"]

    @api.get("/model", tags=tags, response_model=ModelInfo, responses=errors(503))
    async def model_info(request: Request, model: ModelDep, holder: HolderDep) -> dict[str, Any]:
        """The served snapshot's metadata, online metrics, the worker's lag and status.

        The worker's ``hostname:pid`` shows only to a caller that may write (with the key).
        """
        return model_body(request, model, holder, settings)

    @api.get("/model/versions", tags=tags, response_model=Versions, responses=errors(503))
    async def versions(holder: HolderDep) -> dict[str, Any]:
        """Kept versions (the worker keeps ``keep_versions``), the latest, the served and the pinned one."""
        return await versions_body(holder)

    @api.post(
        "/model/pin", tags=tags, response_model=ModelInfo, dependencies=guarded,
        responses=errors(401, 403, 404, 415, 422, 429, 503),
    )  # fmt: skip
    async def pin(body: PinRequest, holder: HolderDep) -> dict[str, Any]:
        """Serve a kept version on every replica until unpinned (rollback)."""
        return describe(await holder.pin(body.version), holder, settings)

    @api.post(
        "/model/unpin",
        tags=tags,
        response_model=ModelInfo,
        dependencies=guarded,
        responses=errors(401, 403, 415, 429, 503),
    )
    async def unpin(holder: HolderDep) -> dict[str, Any]:
        """Follow the newest snapshot again."""
        return describe(await holder.unpin(), holder, settings)

    @api.get("/model/weights", tags=tags, response_model=WeightTemplates, responses=errors(503))
    async def weight_arrays(model: ModelDep) -> Response:
        """The served weight templates as numbers: digit-major (10, 784) and the 10 biases."""
        return json_response(weights_json(model))

    @api.get(
        "/model/weights.png",
        tags=tags,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "10 tiles, digits 0..9"}, **errors(422, 503)},
    )
    async def weights(model: ModelDep, scale: Annotated[int, Query(ge=1, le=16)] = 4) -> Response:
        """The 10 weight templates as 28x28 tiles (blue: ink votes for the digit, red: against), ``scale`` x."""
        return Response(weights_png(model, scale), media_type="image/png", headers={"Cache-Control": "no-cache"})

    @api.get("/model/features", tags=tags, response_model=HiddenFeatures, responses=errors(422, 503))
    async def features(model: ModelDep, count: Annotated[int, Query(ge=1, le=MAX_UNITS)] = 36) -> Response:
        """The ``count`` most important hidden units (mlp rule): what each learned to detect, whom it votes for."""
        return json_response(features_json(model, count))

    @api.get(
        "/model/features.png",
        tags=tags,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "12 tiles a row"}, **errors(404, 422, 503)},
    )
    async def features_picture(
        model: ModelDep,
        count: Annotated[int, Query(ge=1, le=MAX_UNITS)] = 36,
        scale: Annotated[int, Query(ge=1, le=16)] = 4,
    ) -> Response:
        """The ``count`` most important hidden units' learned input weights as 28x28 tiles (mlp rule)."""
        if model.scorer.features() is None:
            return error(404, f"the served model ({model.rule} rule) has no hidden layer")
        body = features_png(model, count, scale)
        return Response(body, media_type="image/png", headers={"Cache-Control": "no-cache"})


@functools.lru_cache(maxsize=4)
def weights_json(model: ServedModel) -> bytes:
    """The GET /model/weights body, encoded once per served model (float32: ~80 kB, plenty for a picture)."""
    weights, bias = model.scorer.templates()
    return orjson.dumps(
        {"version": model.version, "samples_learned": model.samples_learned, "rule": model.rule,
         "weights": np.ascontiguousarray(weights.T, dtype=np.float32), "bias": bias.astype(np.float32)},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )  # fmt: skip


def json_response(body: bytes) -> Response:
    """A JSON body that changes with the served model: never cached."""
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})


def model_body(
    request: Request, model: ServedModel, holder: ModelHolder, settings: Settings, name: str | None = None
) -> dict[str, Any]:
    """The GET /model body (of registered model ``name``: GET /models/{name}).

    The worker's ``hostname:pid`` shows only to a caller that may write (with the key).
    """
    body = describe(model, holder, settings)
    if name is not None:
        body["model"] = name
    return body if request.app.state.access.trusted(request.scope) else redact_worker(body)


async def versions_body(holder: ModelHolder) -> dict[str, Any]:
    """The GET /model/versions body."""
    kept = await holder.versions()
    pinned = await holder.pinned_version()
    served = holder.current.version if holder.current else None
    return {"versions": kept, "latest": holder.latest_version, "served": served, "pinned": pinned}


def describe(model: ServedModel, holder: ModelHolder, settings: Settings) -> dict[str, Any]:
    """The GET /model body (also answered by pin/unpin)."""
    meta = model.meta
    worker, learning = holder.worker_status, holder.learning
    lag = worker.lag if worker is not None and worker.lag is not None else meta.metrics.lag
    if learning.health != "ok" and learning.backlog is not None:
        lag = learning.backlog  # no one is learning: the stream itself says how far behind the model is
    return {
        "model": meta.model or settings.model_name,
        "version": model.version,
        "samples_learned": model.samples_learned,
        "created_at": meta.created_at,
        "age_seconds": model.age(),
        "last_id": meta.last_id,
        "rule": model.rule,
        "params": model.scorer.params.to_json(),
        "metrics": meta.metrics.to_json(),
        "lag": lag,
        "learning": learning.to_json(),
        "pinned": model.pinned,
        "worker": worker.to_json() if worker is not None else None,
        "deadletter_count": meta.deadletter_count,
    }
