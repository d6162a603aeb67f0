"""Redis calls that outlast outages: retried with capped backoff, the outage logged once and its end once.

Only connection errors are retried (and timeouts, and a cluster's CLUSTERDOWN while it fails
over: ``digitstream.connections.OUTAGE_ERRORS``); wrong credentials (``AuthenticationError``, a ConnectionError
to redis-py) do not heal by waiting and are raised. The Redis client itself must not retry (see
``worker.commit``: a retried snapshot write whose reply was lost would be applied twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from digitstream.connections import OUTAGE_ERRORS

T = TypeVar("T")

log = logging.getLogger("digitstream.worker")

CONNECTION_ERRORS = OUTAGE_ERRORS
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
SHUTDOWN_PATIENCE = 5.0  # seconds a stopping worker keeps retrying Redis to write its final snapshot


class WorkerStopped(Exception):
    """Raised by a retried call when a stop was requested while Redis was unreachable."""


class RedisRetry:
    """``retry(call)``: ``call()`` until it works, sleeping 0.1 s doubling to 5 s between connection errors.

    ``stopping()`` tells when a stop was requested: sleeps end early, and after ``SHUTDOWN_PATIENCE``
    seconds of outage the call raises WorkerStopped. ``on_recovered(seconds)`` is told the length of
    each outage when the first call after it succeeds.
    """

    def __init__(self, stopping: Callable[[], bool], on_recovered: Callable[[float], None]) -> None:
        self._stopping = stopping
        self._on_recovered = on_recovered
        self._outage_since: float | None = None
        self._give_up_at: float | None = None

    def __call__(self, call: Callable[[], T]) -> T:
        delay = BACKOFF_START
        while True:
            try:
                result = call()
            except redis.AuthenticationError:
                raise  # wrong credentials do not heal by waiting
            except CONNECTION_ERRORS as exc:
                self.outage(exc)
                if self._stopping():
                    if self._give_up_at is None:
                        self._give_up_at = time.monotonic() + SHUTDOWN_PATIENCE
                    if time.monotonic() >= self._give_up_at:
                        raise WorkerStopped from exc
                    time.sleep(min(delay, 0.5))
                else:
                    self.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            self.recovered()
            return result

    def outage(self, exc: Exception) -> None:
        """Note a connection error (logged at the first one of an outage)."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("Redis unreachable (%s: %s); retrying, backoff up to %gs", type(exc).__name__, exc, BACKOFF_MAX)

    def recovered(self) -> None:
        """Note a call that worked: the end of an outage, if one was going on."""
        if self._outage_since is None:
            return
        seconds = time.monotonic() - self._outage_since
        self._outage_since = None
        self._on_recovered(seconds)

    def sleep(self, seconds: float) -> None:
        """Sleep in short steps so that a stop request (e.g. from a signal handler) is seen quickly."""
        deadline = time.monotonic() + seconds
        while not self._stopping():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(0.05, remaining))
