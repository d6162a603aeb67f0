"""The errors the prediction clients raise, and how an HTTP answer maps to them.

Every non-2xx answer becomes a subclass of :class:`ApiError` carrying the server's own ``detail``
message; a service that cannot be reached raises :class:`ServiceUnreachable`.
"""

from __future__ import annotations

import json

import httpx


class ClientError(Exception):
    """Base of every error the prediction clients raise."""


class ServiceUnreachable(ClientError):
    """No HTTP answer at all: connection refused, DNS failure, timeout."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the digitstream service at {url}: {reason}")


class UnexpectedResponse(ClientError):
    """A 2xx answer whose body is not what the API contract says (wrong service on that port?)."""


class ApiError(ClientError):
    """The service answered with an error status; ``detail`` is its own message."""

    def __init__(self, status_code: int, detail: str, *, method: str = "", url: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url
        super().__init__(f"HTTP {status_code}: {detail}")


class InvalidRequest(ApiError):
    """4xx: the request was refused as invalid (422 bad field, 413 too large, ...)."""


class Unauthorized(ApiError):
    """401/403: a missing or wrong API key (``api_key=`` / ``X-API-Key``), or a write refused."""


class NotFound(ApiError):
    """404: unknown prediction id, model version or path."""


class RetryLater(ApiError):
    """The service asked to come back later; ``retry_after`` seconds is its hint (or None)."""

    def __init__(self, status_code: int, detail: str, *, retry_after: float | None = None, **kwargs: str) -> None:
        super().__init__(status_code, detail, **kwargs)
        self.retry_after = retry_after


class ServiceUnavailable(RetryLater):
    """503: no model yet, Redis down, or the service is at capacity."""


class RateLimited(RetryLater, InvalidRequest):
    """429: too many requests from this client."""


class ServerError(ApiError):
    """5xx other than 503: a fault inside the service."""


def error_for(response: httpx.Response, method: str) -> ApiError:
    """The typed error of a non-2xx answer."""
    detail = _detail(response)
    status = response.status_code
    where = {"method": method, "url": str(response.url)}
    if status == 503:
        return ServiceUnavailable(status, detail, retry_after=retry_after(response), **where)
    if status == 429:
        return RateLimited(status, detail, retry_after=retry_after(response), **where)
    if status in (401, 403):
        return Unauthorized(status, detail, **where)
    if status == 404:
        return NotFound(status, detail, **where)
    if 400 <= status < 500:
        return InvalidRequest(status, detail, **where)
    if status >= 500:
        return ServerError(status, detail, **where)
    return ApiError(status, detail, **where)  # an unexpected 1xx/3xx


def _detail(response: httpx.Response) -> str:
    """The server's message: ``{"detail": "..."}``, FastAPI's list of field errors, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else response.reason_phrase or "no message"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return json.dumps(detail)


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (None if absent, an HTTP date, or nonsense)."""
    value = response.headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare, and not worth parsing here
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({exc.__class__.__name__})"
    text = str(exc) or exc.__class__.__name__
    return text.split("] ", 1)[-1]  # "[Errno 111] Connection refused" -> "Connection refused"


__all__ = [
    "ApiError",
    "ClientError",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "RetryLater",
    "ServerError",
    "ServiceUnavailable",
    "ServiceUnreachable",
    "Unauthorized",
    "UnexpectedResponse",
    "error_for",
    "retry_after",
    "transport_reason",
]
