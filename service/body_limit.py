"""Request bodies with a bounded cost: a size limit per path and a per-process budget for the large ones.

A declared ``Content-Length`` over the path's limit is refused (413) before the body is read; a
streamed (chunked) body is counted as it arrives and refused when it crosses the limit. Some
paths (the batch endpoints, uploads) get a larger limit so that a full batch fits.

Large bodies (over ``LARGE_BODY`` bytes) also take their size from a per-process budget
(``max_inflight_body_bytes``) until their answer is sent: past it, a request is answered 503
with ``Retry-After`` before its body is read, so that concurrent large requests cannot hold more
memory than the budget, however many arrive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LARGE_BODY = 1024 * 1024
RETRY_AFTER = "1"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body crosses the limit (the app's handler answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


class BodyBudgetExhausted(HTTPException):
    """Raised from ``receive`` when a streamed body finds the large-body budget spent (503)."""

    def __init__(self) -> None:
        super().__init__(503, busy_message(), headers={"Retry-After": RETRY_AFTER})


def too_large_message(limit: int, size: int | None = None) -> str:
    got = f"{size:,} bytes" if size is not None else "more"
    return f"body: request body too large ({got}; the limit for this endpoint is {limit:,} bytes)"


def busy_message() -> str:
    return "body: the service is busy with other large requests; retry later (see Retry-After)"


class BodyBudget:
    """Bytes of large bodies held at once by this process (the event loop is its only user: no lock)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.refused = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.capacity:
            self.refused += 1
            return False
        self.used += size
        return True

    def give_back(self, size: int) -> None:
        self.used -= size


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, default_limit: int, limits: Mapping[str, int] | None = None,
        budget: BodyBudget | None = None, prefixes: Mapping[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits or {})
        self.prefixes = tuple((prefixes or {}).items())  # paths with parameters: (prefix, limit)
        self.budget = budget

    def _limit(self, path: str) -> int:
        """The path's own limit; ``/models/{name}/X`` has the limit of ``/X``; else its prefix's (``prefixes``)."""
        limit = self.limits.get(path)
        if limit is None and path.startswith("/models/"):
            slash = path.find("/", len("/models/"))
            limit = self.limits.get(path[slash:]) if slash > 0 else None
        if limit is None:
            limit = next((lim for prefix, lim in self.prefixes if path.startswith(prefix)), None)
        return self.default_limit if limit is None else limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await reject(send, too_large_message(limit, declared), 413)
            return
        budget = self.budget
        held = 0
        if budget is not None and declared is not None and declared > LARGE_BODY:
            if not budget.take(declared):
                await reject(send, busy_message(), 503, [(b"retry-after", RETRY_AFTER.encode())])
                return
            held = declared
        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received, held
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                if budget is not None and received > max(held, LARGE_BODY):  # a streamed body: take as it comes
                    if not budget.take(received - held):
                        raise BodyBudgetExhausted()
                    held = received
            return message

        try:
            await self.app(scope, receive_with_limit, send)
        finally:
            if budget is not None and held:
                budget.give_back(held)


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, if it sent a valid one."""
    return _content_length(scope)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def reject(send: Send, detail: str, status: int = 413, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``{"detail": ...}`` without reading the body, and close the connection (its body is unread)."""
    body = orjson.dumps({"detail": detail})
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), *headers]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
