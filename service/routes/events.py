"""GET /model/events and /models/{name}/events: live snapshot, pin, drift, fault and health events (SSE).

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
from ..live_events import EventHub, TooManyClients, hello_event

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering (nginx)


def router(settings: Settings) -> APIRouter:
    api = APIRouter(tags=["model"])

    async def events(request: Request) -> Response:
        hub: EventHub = request.app.state.events
        try:
            queue = hub.subscribe(request.headers.get("last-event-id"))
        except TooManyClients as exc:
            return error(503, f"{exc}; try again later", {"Retry-After": str(RETRY_AFTER_SECONDS * 5)})
        body = hub.stream(queue, hello_event(request.app.state.holder))
        return StreamingResponse(body, media_type="text/event-stream", headers=HEADERS)

    @api.get("/model/events", include_in_schema=False)
    async def model_events(request: Request) -> Response:
        """The served model's live events (Server-Sent Events)."""
        return await events(request)

    @api.get("/models/{name}/events", include_in_schema=False)
    async def named_events(name: str, request: Request) -> Response:
        """The live events of model ``name`` (this service serves one: ``settings.model_name``)."""
        if name != settings.model_name:
            return error(404, f"name: unknown model {name!r} (this service serves {settings.model_name!r})")
        return await events(request)

    return api
