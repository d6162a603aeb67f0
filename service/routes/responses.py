"""OpenAPI descriptions of the error answers, shared by the routes."""

from __future__ import annotations

from typing import Any

from ..schemas import Error

_DESCRIPTIONS = {
    401: "API key required (X-API-Key)",
    403: "wrong API key, writes off (no key on a service reachable beyond loopback), or turned off",
    404: "unknown prediction id or version",
    409: "feedback already given for this prediction",
    413: "body, batch or image too large",
    415: "write bodies must be application/json",
    422: "invalid input: the message names the field and the problem",
    429: "too many writes from this client (see Retry-After)",
    503: "no model loaded yet, Redis unreachable, or busy with other large requests (see Retry-After)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Error, "description": _DESCRIPTIONS[code]} for code in codes}
