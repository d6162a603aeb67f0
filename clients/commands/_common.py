"""What the sub-commands share: settings, connections, service URL, and errors mapped to exit codes.

Exit codes: 0 success; 1 runtime failure (Redis or the service unreachable, an HTTP error);
2 usage or input error (bad path, unreadable file, invalid setting). Errors print one line.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import redis

from digitstream.clients.prediction import (
    ApiError,
    ClientError,
    PredictionClient,
    ServiceUnavailable,
    ServiceUnreachable,
)
from digitstream.connections import RedisClient, client_client
from digitstream.settings import Settings, SettingsError, load_settings, redact, redis_url

F = TypeVar("F", bound=Callable[..., Any])

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class InputError(click.ClickException):
    """Bad input (a file that cannot be read, an invalid setting): exit code 2, one line."""

    exit_code = EXIT_USAGE


class RuntimeFailure(click.ClickException):
    """Something outside the command failed (Redis, the service): exit code 1, one line."""

    exit_code = EXIT_RUNTIME


def settings_for(**overrides: Any) -> Settings:
    """Settings from ``DIGITSTREAM_*`` env vars and the given options; invalid ones exit 2."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise InputError(str(exc)) from None


def connect_redis(settings: Settings) -> RedisClient:
    """A checked connection (PING) to the settings' Redis; unreachable exits 1 naming the URL."""
    url = redis_url(settings)
    try:
        client = client_client(settings)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise RuntimeFailure(
            f"cannot connect to Redis at {redact(url)}: {str(exc).rstrip('.')}. Start Redis, or pass --redis-url "
            "(or set DIGITSTREAM_REDIS_URL)"
        ) from None
    return client


def redis_url_option(command: F) -> F:
    """``--redis-url`` (the parameter ``redis_url_option``), defaulting to the settings (env vars)."""
    return click.option(
        "--redis-url",
        "redis_url_option",
        metavar="URL",
        help="Redis to use [default: $DIGITSTREAM_REDIS_URL or redis://localhost:6379/0]",
    )(command)


def redis_options(command: F) -> F:
    """``--redis-url`` and ``--model``, defaulting to the settings (env vars)."""
    command = click.option(
        "--model", "model_name", metavar="NAME", help="model name, the prefix of its Redis keys [default: digitstream]"
    )(command)
    return redis_url_option(command)


def service_options(command: F) -> F:
    """``--url`` of the service, ``--api-key`` and ``--model``, defaulting to the settings."""
    command = click.option(
        "--model",
        "model_name",
        metavar="NAME",
        help="a registered model (digitstream models list) [default: the service's own]",
    )(command)
    command = click.option("--api-key", metavar="KEY", help="sent as X-API-Key [default: $DIGITSTREAM_API_KEY]")(
        command
    )
    command = click.option(
        "--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="seconds per request"
    )(command)
    return click.option(
        "--url", metavar="URL", help="the digitstream service [default: $DIGITSTREAM_URL, else http://127.0.0.1:8000]"
    )(command)


def service_client(url: str | None, api_key: str | None, timeout: float, model: str | None = None) -> PredictionClient:
    """A client for ``--url`` (or the settings' host and port), for the registered ``model`` if given."""
    settings = settings_for()
    url = url or settings.url
    if url is None:
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        url = f"http://{host}:{settings.port}"
    elif "://" not in url:
        url = f"http://{url}"
    if urlsplit(url).scheme not in ("http", "https"):
        raise InputError(f"--url {url}: must be an http:// or https:// URL")
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    return PredictionClient(url, api_key=key, timeout=timeout, model=model)


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """Turn client errors into one-line messages and exit code 1."""
    try:
        yield
    except ServiceUnreachable as exc:
        raise RuntimeFailure(f"{exc}. Is `digitstream serve` running? Pass --url to use another address") from None
    except ServiceUnavailable as exc:
        hint = f" (retry in {exc.retry_after:g} s)" if exc.retry_after else ""
        raise RuntimeFailure(f"service unavailable: {exc.detail}{hint}") from None
    except ApiError as exc:
        raise RuntimeFailure(f"the service refused {exc.method} {exc.url} ({exc.status_code}): {exc.detail}") from None
    except ClientError as exc:
        raise RuntimeFailure(str(exc)) from None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))
