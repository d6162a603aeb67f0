"""GET /: a placeholder page until the dashboard (service/routes/dashboard.py) exists."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>digitstream</title></head>
<body><h1>digitstream</h1>
<p>Handwritten digits recognised by a model that keeps learning from a Redis stream.</p>
<p><a href="/docs">API documentation</a> &middot; <a href="/model">served model</a> &middot;
<a href="/model/weights.png">weight templates</a></p></body></html>
"""


def router() -> APIRouter:
    api = APIRouter(tags=["dashboard"])

    @api.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        """The dashboard's place; links to the API documentation for now."""
        return HTMLResponse(PAGE)

    return api
