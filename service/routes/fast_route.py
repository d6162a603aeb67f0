"""Hot endpoints served by a plain Starlette route, documented by the FastAPI route behind it.

FastAPI's per-request machinery (dependency solving, its exit stack) costs ~25 µs even for an
endpoint with no dependency: an eighth of a /predict request's time. :func:`fast_post` registers
the endpoint twice with one call: a plain Starlette route first (routes match in order, so it
answers every request, with the same exception handlers and middleware) and the FastAPI route
behind it, which only documents it in OpenAPI. The endpoint must therefore read what it needs from
``request`` itself (``request.app.state``) rather than through dependencies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.routing import Match, Route
from starlette.types import Scope

Endpoint = Callable[[Request], Awaitable[Response]]


def fast_post(api: FastAPI, path: str, endpoint: Endpoint, **documentation: Any) -> None:
    """Serve POST ``path`` with ``endpoint`` on the fast route; ``documentation`` goes to ``api.post``."""
    api.post(path, **documentation)(endpoint)
    api.router.routes.insert(0, PlainRoute(path, endpoint, methods=["POST"], include_in_schema=False))


class PlainRoute(Route):
    """A Starlette route that also names itself in the scope, as FastAPI's do (the metrics label by it)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope
