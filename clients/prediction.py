"""HTTP clients of the digitstream service (sync and async, on httpx), with typed results and errors.

Both clients build the same requests and parse the same responses; only the sending differs. Every
non-2xx answer raises a subclass of :class:`ApiError` carrying the server's own ``detail`` message,
and a service that cannot be reached raises :class:`ServiceUnreachable`, so callers never have to
look at raw HTTP. With ``retries=N`` a call is tried again up to N times when the service asks to
come back later (503, 429: after its ``Retry-After``) or cannot be reached (capped exponential
backoff). Writes (feedback, samples) carry an ``Idempotency-Key`` (a new one per call unless given,
the same on its retries), so a resend after a lost answer gets the first answer and publishes
nothing twice.

Examples
--------
>>> with PredictionClient("http://127.0.0.1:8000", retries=3) as client:  # doctest: +SKIP
...     client.wait_until_ready(timeout=30)
...     result = client.predict(image)          # 784 ints, 28x28 ints, or 784 bytes
...     print(result.digit, result.probabilities[result.digit])
...     client.feedback(result.prediction_id, 7)  # the true label: the model learns from it
...     batch = client.predict_batch(images)    # numpy arrays: batch.digits, batch.probabilities
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx
import numpy as np

from . import api_calls as calls
from .api_calls import Call, Retries
from .api_errors import (
    ApiError,
    ClientError,
    InvalidRequest,
    NotFound,
    RateLimited,
    RetryLater,
    ServerError,
    ServiceUnavailable,
    ServiceUnreachable,
    Unauthorized,
    UnexpectedResponse,
    transport_reason,
)
from .results import (
    BatchPrediction,
    FeedbackReceipt,
    ModelStatus,
    Prediction,
    SamplesReceipt,
    VersionInfo,
    Versions,
)

__all__ = [
    "ApiError",
    "AsyncPredictionClient",
    "BatchPrediction",
    "ClientError",
    "FeedbackReceipt",
    "InvalidRequest",
    "ModelStatus",
    "NotFound",
    "Prediction",
    "PredictionClient",
    "RateLimited",
    "Retries",
    "RetryLater",
    "SamplesReceipt",
    "ServerError",
    "ServiceUnavailable",
    "ServiceUnreachable",
    "Unauthorized",
    "UnexpectedResponse",
    "VersionInfo",
    "Versions",
]

DEFAULT_TIMEOUT = 10.0
READY_POLL = 0.25  # seconds between /readyz polls in wait_until_ready

T = TypeVar("T")


# -- the clients --------------------------------------------------------------------------------


class PredictionClient:
    """Synchronous client; use as a context manager or call :meth:`close`.

    ``retries`` (a count or a :class:`Retries`) tries calls again when the service asks for it or
    cannot be reached (see the module docstring). ``model`` names a registered model to use instead
    of the service's default one (its ``/models/{name}/...`` paths; feedback and samples still go to
    the default model's stream). ``transport`` is passed to httpx (e.g. an
    ``httpx.ASGITransport``).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | Retries = 0,
        model: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = calls.as_retries(retries)
        self.model_name = model
        self._http = httpx.Client(
            base_url=self.base_url, headers=calls.headers(api_key), timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"PredictionClient({self.base_url!r}, retries={self.retries.count})"

    def predict(self, pixels: Any) -> Prediction:
        """The digit for one image: 784 ints 0..255, 28x28 ints, a numpy array, or 784 raw bytes."""
        return self._run(calls.predict(pixels))

    def predict_batch(self, images: Any) -> BatchPrediction:
        """Digits (n,) and probabilities (n, 10) as numpy arrays; a uint8 array is sent as raw bytes."""
        return self._run(calls.predict_batch(images))

    def predict_image(self, image: str | Path | bytes | IO[bytes], *, filename: str | None = None) -> Prediction:
        """The digit in a PNG/JPEG file (path, bytes or open binary file), decoded by the server."""
        return self._run(calls.predict_image(image, filename))

    def feedback(self, prediction_id: str, label: int, *, idempotency_key: str | None = None) -> FeedbackReceipt:
        """Tell the model the true label of a prediction; it is learned like any stream sample, once."""
        return self._run(calls.feedback(prediction_id, label, idempotency_key))

    def add_samples(self, samples: Sequence[tuple[Any, int]], *, idempotency_key: str | None = None) -> SamplesReceipt:
        """Append labelled ``(pixels, label)`` samples to the stream through the service, once."""
        return self._run(calls.add_samples(samples, idempotency_key))

    def model(self) -> ModelStatus:
        """The served model: version, samples learned, metrics, worker status, lag."""
        return self._run(calls.model())

    def weights(self) -> np.ndarray:
        """The served model's 10 templates over the 784 pixels, a float array (10, 784)."""
        return self._run(calls.weights())

    def versions(self) -> Versions:
        return self._run(calls.versions())

    def pin(self, version: int) -> ModelStatus:
        """Serve ``version`` until :meth:`unpin` (a rollback); learning goes on meanwhile."""
        return self._run(calls.pin(version))

    def unpin(self) -> ModelStatus:
        """Serve the latest version again."""
        return self._run(calls.unpin())

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: the process is up (it may still have no model)."""
        return self._run(calls.health())

    def wait_until_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the service serves a model (``GET /readyz`` answers 200); its readiness body.

        Raises TimeoutError after ``timeout`` seconds, naming the last answer.
        """
        deadline = time.monotonic() + timeout
        while True:
            last = _readiness(self._attempt, calls.readyz())
            if isinstance(last, dict):
                return last
            if time.monotonic() + READY_POLL > deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout:g} s: {last}")
            time.sleep(READY_POLL)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _attempt(self, call: Call[T]) -> T:
        try:
            path = calls.model_path(call.path, self.model_name)
            response = self._http.request(call.method, path, **call.options)
        except httpx.TransportError as exc:
            raise ServiceUnreachable(self.base_url, transport_reason(exc)) from None
        return calls.read(response, call)

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                return self._attempt(call)
            except ClientError as error:
                if attempt >= self.retries.count or not call.retryable(error):
                    raise
                time.sleep(self.retries.wait(attempt, error))
                attempt += 1


class AsyncPredictionClient:
    """The asyncio twin of :class:`PredictionClient` (same methods, awaited)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | Retries = 0,
        model: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = calls.as_retries(retries)
        self.model_name = model
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=calls.headers(api_key), timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"AsyncPredictionClient({self.base_url!r}, retries={self.retries.count})"

    async def predict(self, pixels: Any) -> Prediction:
        return await self._run(calls.predict(pixels))

    async def predict_batch(self, images: Any) -> BatchPrediction:
        return await self._run(calls.predict_batch(images))

    async def predict_image(self, image: str | Path | bytes | IO[bytes], *, filename: str | None = None) -> Prediction:
        return await self._run(calls.predict_image(image, filename))

    async def feedback(self, prediction_id: str, label: int, *, idempotency_key: str | None = None) -> FeedbackReceipt:
        return await self._run(calls.feedback(prediction_id, label, idempotency_key))

    async def add_samples(
        self, samples: Sequence[tuple[Any, int]], *, idempotency_key: str | None = None
    ) -> SamplesReceipt:
        return await self._run(calls.add_samples(samples, idempotency_key))

    async def model(self) -> ModelStatus:
        return await self._run(calls.model())

    async def weights(self) -> np.ndarray:
        return await self._run(calls.weights())

    async def versions(self) -> Versions:
        return await self._run(calls.versions())

    async def pin(self, version: int) -> ModelStatus:
        return await self._run(calls.pin(version))

    async def unpin(self) -> ModelStatus:
        return await self._run(calls.unpin())

    async def health(self) -> dict[str, Any]:
        return await self._run(calls.health())

    async def wait_until_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self._attempt(calls.readyz())
            except (ServiceUnavailable, ServiceUnreachable) as exc:
                last = str(exc)
            if time.monotonic() + READY_POLL > deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout:g} s: {last}")
            await asyncio.sleep(READY_POLL)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPredictionClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _attempt(self, call: Call[T]) -> T:
        try:
            path = calls.model_path(call.path, self.model_name)
            response = await self._http.request(call.method, path, **call.options)
        except httpx.TransportError as exc:
            raise ServiceUnreachable(self.base_url, transport_reason(exc)) from None
        return calls.read(response, call)

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                return await self._attempt(call)
            except ClientError as error:
                if attempt >= self.retries.count or not call.retryable(error):
                    raise
                await asyncio.sleep(self.retries.wait(attempt, error))
                attempt += 1


def _readiness(attempt: Callable[[Call[dict[str, Any]]], dict[str, Any]], call: Call[dict[str, Any]]) -> Any:
    """The readiness body, or the reason it is not ready yet (a string)."""
    try:
        return attempt(call)
    except (ServiceUnavailable, ServiceUnreachable) as exc:
        return str(exc)
