"""Who may do what: the Host and Origin checks of every request and the rules of the write endpoints.

Writes are ``POST /feedback``, ``/samples``, ``/model/pin`` and ``/model/unpin``. With an API key
they need it (``X-API-Key``). Without one they are open only on a service listening on loopback,
and then only to clients on this machine: a service on ``0.0.0.0`` without a key answers 403
saying how to enable them, and predictions keep working. A page of another site cannot write
through the user's browser: a foreign ``Origin`` is refused on every request, a write body must be
``application/json`` (a cross-site form or ``text/plain`` post, which needs no CORS preflight, gets
415), and the ``Host`` header must name this service (``allowed_hosts``; health probes and metrics
excepted), which defeats DNS rebinding. Writes are rate-limited per client address (a token
bucket; clients on this machine are exempt unless ``rate_limit_loopback``). Every answer carries
``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digitstream.settings import Settings

from .body_limit import reject

WRITE_PATHS = frozenset({"/feedback", "/samples", "/model/pin", "/model/unpin"})
# Probes and scrapers name the service by its address (Kubernetes, Prometheus); what they read is harmless.
PROBES = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
JSON_TYPES = frozenset({"application/json"})
NOSNIFF = (b"x-content-type-options", b"nosniff")
MAX_CLIENTS = 10_000  # rate-limit buckets kept (least recently used dropped): a flood of addresses stays bounded


def is_loopback(host: str | None) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``...: an address or name that never leaves this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "[::1]", "localhost", "0.0.0.0", "10.0.0.5", None)]
    [True, True, True, False, False, False]
    """
    if not host:
        return False
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class RateLimiter:
    """Token buckets per client: ``rate`` per second, ``burst`` at once; ``take`` says how long to wait."""

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)

    def take(self, client: str, now: float | None = None) -> float:
        """0 when the client may go on (a token is spent), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class Access:
    """The access policy of one service, from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None
        self.listen = settings.host
        self.loopback_service = is_loopback(settings.host)
        hosts = {host_name(h) for h in settings.allowed_hosts}
        if not _is_unspecified(settings.host):
            hosts.add(host_name(settings.host))  # the address or name it listens on is the operator's own
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts)
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.cors_origins)
        self.allow_feedback = settings.allow_feedback
        self.allow_samples = settings.allow_samples
        self.limiter = RateLimiter(settings.write_rate, settings.write_burst) if settings.write_rate > 0 else None
        self.limit_loopback = settings.rate_limit_loopback

    def key_matches(self, given: bytes | None) -> bool:
        return self.key is not None and given is not None and secrets.compare_digest(given, self.key)

    def trusted(self, scope: Scope) -> bool:
        """Whether this request may write (the key, or no key on loopback from loopback): it may also see more."""
        if self.key is not None:
            return self.key_matches(_header(scope, b"x-api-key"))
        return self.loopback_service and _client_is_local(scope)

    def refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """(status, detail, headers) when the request is refused before it reaches the app, else None."""
        host = _header(scope, b"host")
        if host is not None and not self.any_host and scope["path"] not in PROBES:
            name = host_name(host.decode("latin-1"))
            if name not in self.hosts:
                return 400, (
                    f"Host: '{name}' is not a name of this service (DNS rebinding protection); "
                    "add it to DIGITSTREAM_ALLOWED_HOSTS to serve it"
                ), {}  # fmt: skip
        origin = _header(scope, b"origin")
        if origin is not None and not self._origin_allowed(origin.decode("latin-1"), host):
            return 403, (
                f"Origin: requests from pages of {origin.decode('latin-1')!r} are refused "
                "(not this service's own pages, nor in DIGITSTREAM_CORS_ORIGINS)"
            ), {}  # fmt: skip
        if scope["method"] == "POST" and scope["path"] in WRITE_PATHS:
            return self._write_refusal(scope)
        return None

    def _origin_allowed(self, origin: str, host: bytes | None) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        # The dashboard's own requests: browsers send Origin on POST even to the same origin.
        return host is not None and origin != "null" and urlsplit(origin).netloc == host.decode("latin-1").lower()

    def _write_refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        path = scope["path"]
        if path == "/feedback" and not self.allow_feedback:
            return 403, "feedback is turned off on this service (DIGITSTREAM_ALLOW_FEEDBACK=false)", {}
        if path == "/samples" and not self.allow_samples:
            return 403, "samples are turned off on this service (DIGITSTREAM_ALLOW_SAMPLES=false)", {}
        client = scope.get("client")
        address = client[0] if client else ""
        if self.limiter is not None and (self.limit_loopback or not is_loopback(address)):
            wait = self.limiter.take(address)
            if wait > 0:
                return 429, f"too many writes from {address}: retry in {wait:.1f} s", {
                    "Retry-After": str(max(1, math.ceil(wait)))
                }  # fmt: skip
        if self.key is not None:
            given = _header(scope, b"x-api-key")
            if not given:
                return 401, "X-API-Key: header required for this endpoint", {"WWW-Authenticate": "ApiKey"}
            if not self.key_matches(given):
                return 403, "X-API-Key: invalid API key", {}
        elif not (self.loopback_service and _client_is_local(scope)):
            where = f"listens on {self.listen}" if not self.loopback_service else f"was reached from {address}"
            return 403, (
                f"writes are off: this service {where} and has no API key, so feedback, samples, pin and unpin "
                "are refused (predictions still work); set DIGITSTREAM_API_KEY (or serve --api-key) and send it "
                "in the X-API-Key header to turn them on"
            ), {}  # fmt: skip
        content_type = _header(scope, b"content-type")
        if content_type is not None:
            media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
            if media not in JSON_TYPES:
                return 415, f"Content-Type: write requests take application/json, not {media or 'an empty type'}", {}
        elif _has_body(scope):
            return 415, "Content-Type: write requests with a body must say application/json", {}
        return None


class AccessMiddleware:
    """Refuses what :class:`Access` refuses (a JSON 4xx) and adds ``nosniff`` to every answer."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.access.refusal(scope)
        if refused is not None:
            status, detail, headers = refused
            extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            await reject(send, detail, status, [NOSNIFF, *extra])
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), NOSNIFF]
            await send(message)

        await self.app(scope, receive, send_nosniff)


def redact_worker(body: dict[str, Any]) -> dict[str, Any]:
    """A GET /model body without the worker's ``hostname:pid`` (its id keeps only its random part).

    >>> redact_worker({"worker": {"worker_id": "db-7:4242:9f3a1c2e", "lag": 0}})["worker"]
    {'worker_id': 'hidden:9f3a1c2e', 'lag': 0}
    """
    worker = body.get("worker")
    if isinstance(worker, dict) and isinstance(worker.get("worker_id"), str):
        worker_id: str = worker["worker_id"]
        tail = worker_id.rsplit(":", 1)[-1] if ":" in worker_id else hashlib.sha256(worker_id.encode()).hexdigest()[:8]
        body = {**body, "worker": {**worker, "worker_id": f"hidden:{tail}"}}
    return body


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _client_is_local(scope: Scope) -> bool:
    client = scope.get("client")
    return client is None or is_loopback(client[0])  # no address: a Unix socket on this machine


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in (b"", b"0")
    return _header(scope, b"transfer-encoding") is not None


def _is_unspecified(host: str) -> bool:
    """``0.0.0.0``, ``::`` or empty: every interface, which names nothing."""
    try:
        return not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
