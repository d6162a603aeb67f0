"""Exception handlers: every failure becomes ``{"detail": "<field>: <problem>"}``.

Bad input is a 4xx whose message names the field first (``pixels[3]: 300 is outside 0..255``), as
the HTTP contract in docs/ARCHITECTURE.md requires; Redis trouble and "no model yet" are 503 with
``Retry-After``. A bug is the only 500: logged with its traceback, answered without details.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .imaging import ImageError
from .model_holder import NoModelYet, VersionNotFound
from .validation import InvalidInput

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A pre-serialised JSON response (orjson; numpy arrays allowed)."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def error(status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"detail": detail}, status_code, headers)


def unavailable(detail: str) -> Response:
    return error(503, detail, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def describe_validation_error(exc: RequestValidationError) -> str:
    """'field: problem' for each error, without FastAPI's 'body'/'query' location prefixes."""
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        where = loc[0] if loc else "body"
        path = loc[1:] if where in ("body", "query", "path", "header", "cookie") else loc
        name = ".".join(path) if path and err.get("type") != "json_invalid" else "body"
        if where in ("query", "header", "path", "cookie") and path:
            name = f"{name} ({where})"
        message = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            message = f"not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})"
        problems.append(f"{name}: {message}")
    return "; ".join(problems) or "body: invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400:  # the framework's "Invalid multipart data" and the like: invalid input
            return error(422, f"body: {exc.detail}")
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error(422, describe_validation_error(exc))

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput) -> Response:
        return error(exc.status_code, exc.detail)

    @app.exception_handler(ImageError)
    async def invalid_image(request: Request, exc: ImageError) -> Response:
        return error(exc.status_code, exc.detail)

    @app.exception_handler(NoModelYet)
    async def no_model(request: Request, exc: NoModelYet) -> Response:
        return unavailable(str(exc))

    @app.exception_handler(VersionNotFound)
    async def unknown_version(request: Request, exc: VersionNotFound) -> Response:
        return error(404, f"version: snapshot {exc.args[0]} is not kept (see GET /model/versions)")

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> Response:
        log.warning("%s %s: Redis error %s", request.method, request.url.path, exc)
        return unavailable(f"Redis is unreachable ({exc.__class__.__name__}); this request needs it: retry later")

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect) -> Response:
        return error(400, "body: the client disconnected before sending the whole body")  # nobody reads it

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal error (logged by the service)")
