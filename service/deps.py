"""Request dependencies as ``Annotated`` aliases: the lifespan's objects, the served model, the API key.

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which would cost
the hot endpoints a thread hop per request.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from digitstream.connections import AsyncRedisClient
from digitstream.settings import Settings

from .metrics import ServiceMetrics
from .model_holder import ModelHolder, ServedModel
from .predictions import PredictionStore

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="required on mutating endpoints when the service has a key"
)


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder  # type: ignore[no-any-return]


async def get_model(request: Request) -> ServedModel:
    """The served model, read once for the whole request (503 before the first snapshot)."""
    return request.app.state.holder.require()  # type: ignore[no-any-return]


async def get_predictions(request: Request) -> PredictionStore:
    return request.app.state.predictions  # type: ignore[no-any-return]


async def get_redis(request: Request) -> AsyncRedisClient:
    return request.app.state.redis  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


async def require_api_key(request: Request, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """401 without the key, 403 with a wrong one; nothing to check when the service has no key."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if not key:
        raise HTTPException(401, f"{API_KEY_HEADER}: header required for this endpoint",
                            headers={"WWW-Authenticate": "ApiKey"})  # fmt: skip
    if not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(403, f"{API_KEY_HEADER}: invalid API key")


HolderDep = Annotated[ModelHolder, Depends(get_holder)]
ModelDep = Annotated[ServedModel, Depends(get_model)]
PredictionsDep = Annotated[PredictionStore, Depends(get_predictions)]
RedisDep = Annotated[AsyncRedisClient, Depends(get_redis)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
ApiKey = Depends(require_api_key)


def api_key_dependencies(settings: Settings) -> list[Any]:
    """The API-key check for mutating routes, only when a key is set (so OpenAPI documents it only then)."""
    return [ApiKey] if settings.api_key is not None else []
