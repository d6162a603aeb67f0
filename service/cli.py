"""``digitstream serve``: the FastAPI app under uvicorn (uvloop + httptools when installed, no access log)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import click
import uvicorn

from digitstream.logs import LOG_FORMATS, uvicorn_log_config
from digitstream.settings import Settings, SettingsError, load_settings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
GRACEFUL_SHUTDOWN_SECONDS = 5


@click.command("serve")
@click.option("--host", help="interface to listen on  [default: 127.0.0.1]")
@click.option("--port", type=int, help="TCP port  [default: 8000]")
@click.option("--redis-url", help="redis:// URL (prefer DIGITSTREAM_REDIS_URL for one with a password)")
@click.option("--model", "model_name", help="model name: the prefix of its Redis keys  [default: digitstream]")
@click.option("--api-key", help="required in X-API-Key for feedback, samples, pin, unpin (prefer DIGITSTREAM_API_KEY)")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="uvicorn worker processes (or run more replicas: they share one Redis)")  # fmt: skip
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="log every request (slower)")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), help="text, or json (one object per line) [text]")
def serve_command(workers: int, log_level: str, access_log: bool, **options: Any) -> None:
    """Serve predictions from the newest model snapshot in Redis (hot-reloaded), never learning.

    Settings also come from the DIGITSTREAM_* environment variables shared with the worker; the
    options above override them. Any number of replicas can serve one Redis.
    """
    try:
        settings = load_settings(**options)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    run(settings, workers=workers, log_level=log_level, access_log=access_log)


def run(settings: Settings, *, workers: int = 1, log_level: str = "info", access_log: bool = False) -> None:
    """Run the service in the foreground until SIGINT/SIGTERM."""
    config: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "access_log": access_log,
        "log_config": uvicorn_log_config(log_level, settings.log_format),
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "lifespan": "on",
        "server_header": False,
        # Open responses get this long to end after SIGTERM. Event streams end at once (service.live_events
        # hooks uvicorn's signal handler); in worker processes, which load the app after that hook point,
        # they are cut here.
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    if workers == 1:
        from .app import create_app

        uvicorn.run(create_app(settings), **config)
        return
    # Worker processes build their own app from the environment, so the settings travel there.
    os.environ.update(settings.to_environment())
    uvicorn.run("digitstream.service.app:create_app_from_env", factory=True, workers=workers, **config)
