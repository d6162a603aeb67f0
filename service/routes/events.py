"""GET /model/events and /models/{name}/events: live snapshot, pin, drift, fault and health events (SSE).

``/model/events`` follows the default model; ``/models/{name}/events`` any registered one (loaded into
the served-models LRU like its other routes; an evicted model's open streams only get heartbeats
until they reconnect).

``text/event-stream``: each event has ``id:``, ``event:`` (snapshot, pin, drift, fault, health)
and one ``data:`` line of JSON; the stream opens with ``event: hello`` (the state now) and sends a
comment line every 15 s when idle. Reconnecting with ``Last-Event-ID`` replays what was missed
(see ``service.live_events``). Not in the OpenAPI document: an endless stream is neither
describable there nor testable by a schema fuzzer with request timeouts.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from digitstream.settings import Settings

from ..errors import RETRY_AFTER_SECONDS, error
from ..live_events import TooManyClients, hello_event
from ..model_holder import ModelHolder
from .models import ModelName, holder_of

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering (nginx)


def router(settings: Settings) -> APIRouter:
    api = APIRouter(tags=["model"])

    async def events(request: Request, holder: ModelHolder) -> Response:
        hub = request.app.state.events.of(holder)
        try:
            queue = hub.subscribe(request.headers.get("last-event-id"))
        except TooManyClients as exc:
            return error(503, f"{exc}; try again later", {"Retry-After": str(RETRY_AFTER_SECONDS * 5)})
        body = hub.stream(queue, hello_event(holder))
        return StreamingResponse(body, media_type="text/event-stream", headers=HEADERS)

    @api.get("/model/events", include_in_schema=False)
    async def model_events(request: Request) -> Response:
        """The default model's live events (Server-Sent Events)."""
        return await events(request, request.app.state.holder)

    @api.get("/models/{name}/events", include_in_schema=False)
    async def named_events(name: ModelName, request: Request) -> Response:
        """The live events of registered model ``name`` (404 if it is not registered)."""
        return await events(request, await holder_of(request, name))

    return api
