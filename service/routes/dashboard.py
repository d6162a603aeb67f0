"""GET /: the dashboard page (static HTML/CSS/JS in service/static, no build step, no CDN: works offline).

The page itself calls the public API (``/predict/image``, ``/feedback``, ``/model``, ``/model/versions``,
``/model/weights``, ``/model/pin``, ``/model/unpin``), so it shows exactly what any client would get.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
INDEX = STATIC_DIR / "index.html"
# The page loads only its own script and style sheet and talks only to this service; nobody may frame it.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer"}  # fmt: skip


def router() -> APIRouter:
    """The router serving the page; the app mounts ``/static`` for its CSS and JS."""
    api = APIRouter(tags=["dashboard"])
    page = INDEX.read_text(encoding="utf-8")  # a few kB, read once: no file I/O on the event loop

    @api.get("/", response_class=HTMLResponse, summary="Dashboard")
    async def index() -> HTMLResponse:
        """Draw a digit, see the prediction, correct it, and watch the model learn (HTML page)."""
        return HTMLResponse(page, headers=HEADERS)

    return api
