"""OpenAPI descriptions of the error answers, shared by the routes."""

from __future__ import annotations

from typing import Any

from ..schemas import Error

_DESCRIPTIONS = {
    401: "API key required (X-API-Key)",
    403: "wrong API key",
    404: "unknown prediction id or version",
    413: "body, batch or image too large",
    422: "invalid input: the message names the field and the problem",
    503: "no model loaded yet, or Redis unreachable (see Retry-After)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Error, "description": _DESCRIPTIONS[code]} for code in codes}
