"""GET /models/{name}/export and POST /models/{name}/import: the model file over HTTP, with the API key.

The same operations as ``digitstream models export | import`` (``digitstream.transfer``), for the
registered models (an unknown name is a 404; `digitstream models import` registers a new one).
Both need the key (``X-API-Key``), or, without a key, a client on the machine of a loopback
service: an export is the whole learned state, an import replaces the model. The import body is
the file itself, ``application/octet-stream`` (a cross-site form cannot send that type without a
CORS preflight), at most ``MAX_FILE_BYTES``; it is checked whole (``digitstream.model_file``)
before anything is written.

The service's own Redis client is asynchronous and, in a deployment with Redis ACLs, its user may
not write snapshots: these routes use a short-lived synchronous client in a thread, and an
import refused by the ACLs answers 403 saying to import with ``digitstream models import``.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import redis
from anyio import to_thread
from fastapi import FastAPI, Query, Request, Response
from starlette.exceptions import HTTPException

from digitstream.connections import client_client
from digitstream.model_file import MAX_FILE_BYTES, ModelFileError, model_file_bytes, read_model_file
from digitstream.settings import Settings
from digitstream.store import LeaseLost
from digitstream.transfer import TransferError, export_model, import_model, import_summary

from .. import validation
from ..deps import API_KEY_HEADER
from ..errors import error, json_response
from .models import ModelName, holder_of
from .responses import errors


def register(api: FastAPI, settings: Settings) -> None:
    tags: list[str | Enum] = ["model"]

    @api.get(
        "/models/{name}/export",
        tags=tags,
        response_class=Response,
        responses={
            200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                  "description": "the model file: a numpy .npz with JSON metadata (docs: digitstream.model_file)"},
            **errors(401, 403, 404, 422, 503),
        },
    )  # fmt: skip
    async def export(
        request: Request, name: ModelName, version: Annotated[int | None, Query(ge=1, le=2**62)] = None
    ) -> Response:
        """The model ``name`` (its latest or a kept ``version``) as a file for `digitstream models import`."""
        _require_trusted(request)
        keys = (await holder_of(request, name)).keys

        def run() -> tuple[bytes, Any]:
            with client_client(settings) as client:
                model = export_model(client, keys, version)
            return model_file_bytes(model), model.meta

        try:
            body, meta = await to_thread.run_sync(run)
        except TransferError as exc:
            return error(404, f"version: {exc}")
        filename = f"{name}-v{meta['version']}.npz".replace(":", "_")
        headers = {"Content-Disposition": f'attachment; filename="{filename}"', "X-Model-SHA256": meta["sha256"]}
        return Response(body, media_type="application/octet-stream", headers=headers)

    @api.post(
        "/models/{name}/import",
        tags=tags,
        openapi_extra={"requestBody": {"required": True, "description": (
            f"a model file from GET /models/{{name}}/export or `digitstream models export` (at most "
            f"{MAX_FILE_BYTES:,} bytes); its checksum and arrays are checked before anything is written"),
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
        responses={200: {"description": "the new version"}, **errors(401, 403, 404, 413, 415, 422, 503)},
    )  # fmt: skip
    async def import_(request: Request, name: ModelName) -> Response:
        """Load a model file as the next version of ``name``; a running worker continues from it."""
        _require_trusted(request)
        keys = (await holder_of(request, name)).keys
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/octet-stream":
            return error(415, f"Content-Type: a model file is application/octet-stream, not {media or 'none'}")
        body = bytes(await validation.read_body(request))

        def run() -> dict[str, Any]:
            model = read_model_file(body)
            with client_client(settings) as client:
                version = import_model(client, keys, model, keep=settings.keep_versions)
            return import_summary(name, version, model)

        try:
            return json_response(await to_thread.run_sync(run))
        except ModelFileError as exc:
            return error(422, f"body: {exc}")
        except TransferError as exc:
            return error(422, str(exc))
        except redis.exceptions.NoPermissionError:
            return error(403, "this service's Redis user may not write snapshots: import with "
                              "`digitstream models import` and the admin's Redis URL")  # fmt: skip
        except LeaseLost:
            return error(503, "another import took the model's lease meanwhile; retry", {"Retry-After": "1"})


def _require_trusted(request: Request) -> None:
    """401 without the key, 403 with a wrong one or (no key) beyond loopback."""
    access = request.app.state.access
    if access.trusted(request.scope):
        return
    given = request.headers.get(API_KEY_HEADER)
    if access.key is not None and not given:
        raise HTTPException(401, f"{API_KEY_HEADER}: header required for this endpoint",
                            headers={"WWW-Authenticate": "ApiKey"})  # fmt: skip
    if access.key is not None:
        raise HTTPException(403, f"{API_KEY_HEADER}: invalid API key")
    raise HTTPException(403, "model export and import need DIGITSTREAM_API_KEY on a service reachable beyond loopback")
