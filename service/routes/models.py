"""GET /models; per-model serving under /models/{name}: predict, batch, image, info, weights, versions, pin, unpin.

The paths without ``/models/{name}`` serve the default model (``settings.model_name``); these serve
any registered model, loaded on first use into a bounded LRU (``ModelHolders``). The bodies are
those of the default model's paths.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Response
from pydantic import BaseModel

from digitstream.registry import MODEL_NAME_PATTERN, MODELS_KEY, parse_models
from digitstream.settings import Settings

from .. import validation
from ..deps import MetricsDep, RedisDep, api_key_dependencies
from ..errors import error
from ..features import MAX_UNITS, features_json
from ..model_holder import ModelHolder
from ..model_holders import UnknownModel
from ..schemas import (
    BatchPrediction,
    HiddenFeatures,
    ModelInfo,
    PinRequest,
    Prediction,
    Versions,
    WeightTemplates,
    batch_body,
    predict_body,
    upload_body,
)
from .model import describe, json_response, model_body, versions_body, weights_json
from .predict import batch_answer, image_answer, single_answer
from .responses import errors

ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="a registered model (GET /models)")]
MAX_PAGE = 1000


class RegisteredModel(BaseModel):
    name: str
    rule: str
    params: dict[str, Any]
    stream: str
    created_at: float
    loaded: bool  # held in this process's served-models LRU (or the default model)


class ModelList(BaseModel):
    models: list[RegisteredModel]
    default: str
    cursor: int  # pass it back for the next page; 0 when the listing is complete


async def holder_of(request: Request, name: str) -> ModelHolder:
    holder: ModelHolder = await request.app.state.holders.get(name)
    return holder


def register(api: FastAPI, settings: Settings) -> None:
    guarded = api_key_dependencies(settings)
    tags: list[str | Enum] = ["models"]
    max_batch, max_pixels = settings.max_batch, settings.max_image_pixels

    @api.exception_handler(UnknownModel)
    async def unknown_model(request: Request, exc: UnknownModel) -> Response:
        return error(404, f"name: no model {exc.args[0]!r} is registered (see GET /models)")

    @api.get("/models", tags=tags, response_model=ModelList, responses=errors(422, 503))
    async def list_models(
        request: Request,
        client: RedisDep,
        cursor: Annotated[int, Query(ge=0, description="from the previous page")] = 0,
        count: Annotated[int, Query(ge=1, le=MAX_PAGE, description="models per page (about)")] = 100,
    ) -> dict[str, Any]:
        """The registered models, a page at a time (the registry may hold very many)."""
        next_cursor, raw = await client.hscan(MODELS_KEY, cursor, count=count)
        page = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=False))
        holders = request.app.state.holders
        loaded = {*holders.loaded, holders.default_name}
        models = [
            {
                "name": config.name,
                "rule": config.params.rule,
                "params": config.params.to_json(),
                "stream": config.keys.samples,
                "created_at": config.created_at,
                "loaded": config.name in loaded,
            }
            for config in sorted(parse_models(page).values(), key=lambda c: c.name)
        ]
        return {"models": models, "default": holders.default_name, "cursor": int(next_cursor)}

    @api.get("/models/{name}", tags=tags, response_model=ModelInfo, responses=errors(404, 422, 503))
    async def model_info(request: Request, name: ModelName) -> dict[str, Any]:
        """As GET /model, for the named model."""
        holder = await holder_of(request, name)
        return model_body(request, holder.require(), holder, settings, name)

    @api.get("/models/{name}/versions", tags=tags, response_model=Versions, responses=errors(404, 422, 503))
    async def versions(request: Request, name: ModelName) -> dict[str, Any]:
        """As GET /model/versions, for the named model."""
        return await versions_body(await holder_of(request, name))

    @api.get("/models/{name}/weights", tags=tags, response_model=WeightTemplates, responses=errors(404, 422, 503))
    async def weights(request: Request, name: ModelName) -> Response:
        """As GET /model/weights, for the named model."""
        model = (await holder_of(request, name)).require()
        return json_response(weights_json(model))

    @api.get("/models/{name}/features", tags=tags, response_model=HiddenFeatures, responses=errors(404, 422, 503))
    async def features(
        request: Request, name: ModelName, count: Annotated[int, Query(ge=1, le=MAX_UNITS)] = 36
    ) -> Response:
        """As GET /model/features, for the named model."""
        model = (await holder_of(request, name)).require()
        return json_response(features_json(model, count))

    @api.post(
        "/models/{name}/pin", tags=tags, response_model=ModelInfo, dependencies=guarded,
        responses=errors(401, 403, 404, 415, 422, 429, 503),
    )  # fmt: skip
    async def pin(request: Request, name: ModelName, body: PinRequest) -> dict[str, Any]:
        """As POST /model/pin, for the named model."""
        holder = await holder_of(request, name)
        return {**describe(await holder.pin(body.version), holder, settings), "model": name}

    @api.post(
        "/models/{name}/unpin", tags=tags, response_model=ModelInfo, dependencies=guarded,
        responses=errors(401, 403, 404, 415, 422, 429, 503),
    )  # fmt: skip
    async def unpin(request: Request, name: ModelName) -> dict[str, Any]:
        """As POST /model/unpin, for the named model."""
        holder = await holder_of(request, name)
        return {**describe(await holder.unpin(), holder, settings), "model": name}

    @api.post(
        "/models/{name}/predict", tags=tags, response_model=Prediction, openapi_extra=predict_body(),
        responses=errors(404, 413, 422, 503),
    )  # fmt: skip
    async def predict(request: Request, name: ModelName) -> Response:
        """As POST /predict, with the named model. Its ``prediction_id`` takes POST /feedback, which
        publishes to the default model's stream."""
        model = (await holder_of(request, name)).require()
        data = validation.parse_json(await validation.read_body(request))
        pixels = validation.pixel_bytes(validation.get_field(data, "pixels"))
        return await single_answer(request.app.state, model, pixels)

    @api.post(
        "/models/{name}/predict/batch", tags=tags, response_model=BatchPrediction,
        openapi_extra=batch_body(max_batch), responses=errors(404, 413, 422, 503),
    )  # fmt: skip
    async def predict_batch(request: Request, name: ModelName, metrics: MetricsDep) -> Response:
        """As POST /predict/batch, with the named model."""
        model = (await holder_of(request, name)).require()
        return await batch_answer(request, model, metrics, max_batch)

    @api.post(
        "/models/{name}/predict/image", tags=tags, response_model=Prediction,
        openapi_extra=upload_body(max_pixels), responses=errors(404, 413, 415, 422, 503),
    )  # fmt: skip
    async def predict_image(request: Request, name: ModelName) -> Response:
        """As POST /predict/image, with the named model."""
        model = (await holder_of(request, name)).require()
        return await image_answer(request, model, max_pixels)
