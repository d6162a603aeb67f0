"""HTTP clients of the digitstream service (sync and async, on httpx), with typed results and errors.

Both clients build the same requests and parse the same responses (the functions at the bottom of
this module); only the sending differs. Every non-2xx answer raises a subclass of :class:`ApiError`
carrying the server's own ``detail`` message, and a service that cannot be reached raises
:class:`ServiceUnreachable`, so callers never have to look at raw HTTP.

Examples
--------
>>> with PredictionClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
...     result = client.predict(image)          # 784 ints, 28x28 ints, or 784 bytes
...     print(result.digit, result.probabilities[result.digit])
...     client.feedback(result.prediction_id, 7)  # the true label: the model learns from it
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Generic, TypeVar

import httpx
import numpy as np

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
API_KEY_HEADER = "X-API-Key"

T = TypeVar("T")

# -- errors -------------------------------------------------------------------------------------


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
    """401/403: a missing or wrong API key (``api_key=`` / ``X-API-Key``)."""


class NotFound(ApiError):
    """404: unknown prediction id, model version or path."""


class ServiceUnavailable(ApiError):
    """503: no model yet, or Redis is down; ``retry_after`` seconds is the server's hint (or None)."""

    def __init__(self, status_code: int, detail: str, *, retry_after: float | None = None, **kwargs: str) -> None:
        super().__init__(status_code, detail, **kwargs)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx other than 503: a fault inside the service."""


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """``POST /predict`` (and ``/predict/image``)."""

    digit: int
    probabilities: list[float]
    model_version: int
    samples_learned: int
    prediction_id: str  # give it to ``feedback()`` with the true label


@dataclass(frozen=True)
class BatchPrediction:
    """``POST /predict/batch``."""

    digits: list[int]
    probabilities: list[list[float]]
    model_version: int
    samples_learned: int


@dataclass(frozen=True)
class FeedbackReceipt:
    """``POST /feedback``: the true label was appended to the stream as ``stream_id``."""

    stream_id: str
    prediction_id: str
    label: int


@dataclass(frozen=True)
class SamplesReceipt:
    """``POST /samples``."""

    stream_ids: list[str]
    count: int


@dataclass(frozen=True)
class ModelStatus:
    """``GET /model`` (also the answer to pin/unpin); ``raw`` keeps every field the server sent."""

    model: str
    version: int
    samples_learned: int
    created_at: float | None
    age_seconds: float | None
    last_id: str  # the last stream entry the snapshot includes
    rule: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    lag: int | None
    pinned: bool  # serving a pinned version rather than the latest
    worker: dict[str, Any] | None  # the worker's status (digitstream.contracts.WorkerStatus), None when none reports
    deadletter_count: int  # malformed stream entries moved to the dead-letter stream by this snapshot
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def prequential_accuracy(self) -> float | None:
        """Accuracy of each prediction made before learning its sample, over the whole stream."""
        value = self.metrics.get("prequential_accuracy")
        return float(value) if value is not None else None

    @property
    def rolling_accuracy(self) -> float | None:
        """The same over the last ``metrics["rolling_window"]`` samples."""
        value = self.metrics.get("rolling_accuracy")
        return float(value) if value is not None else None


@dataclass(frozen=True)
class VersionInfo:
    version: int
    samples_learned: int
    created_at: float | None
    prequential_accuracy: float | None


@dataclass(frozen=True)
class Versions:
    """``GET /model/versions``: kept versions, oldest first."""

    versions: list[VersionInfo]
    latest: int | None
    served: int | None
    pinned: int | None


# -- the clients --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call: what to send and how to read the answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    options: dict[str, Any] = field(default_factory=dict)


class PredictionClient:
    """Synchronous client; use as a context manager or call :meth:`close`.

    ``transport`` is passed to httpx (e.g. ``httpx.MockTransport`` or an ``ASGITransport``).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def predict(self, pixels: Any) -> Prediction:
        """The digit for one image: 784 ints 0..255, 28x28 ints, a numpy array, or 784 raw bytes."""
        return self._run(_predict(pixels))

    def predict_batch(self, images: Any) -> BatchPrediction:
        """Digits for many images; a uint8 numpy array is sent as raw bytes (the fastest way)."""
        return self._run(_predict_batch(images))

    def predict_image(self, image: str | Path | bytes | IO[bytes], *, filename: str | None = None) -> Prediction:
        """The digit in a PNG/JPEG file (path, bytes or open binary file), decoded by the server."""
        return self._run(_predict_image(image, filename))

    def feedback(self, prediction_id: str, label: int) -> FeedbackReceipt:
        """Tell the model the true label of a prediction; it is learned like any stream sample."""
        return self._run(_feedback(prediction_id, label))

    def add_samples(self, samples: Sequence[tuple[Any, int]]) -> SamplesReceipt:
        """Append labelled ``(pixels, label)`` samples to the stream through the service."""
        return self._run(_add_samples(samples))

    def model(self) -> ModelStatus:
        """The served model: version, samples learned, metrics, worker status, lag."""
        return self._run(_model())

    def versions(self) -> Versions:
        return self._run(_versions())

    def pin(self, version: int) -> ModelStatus:
        """Serve ``version`` until :meth:`unpin` (a rollback); learning goes on meanwhile."""
        return self._run(_pin(version))

    def unpin(self) -> ModelStatus:
        """Serve the latest version again."""
        return self._run(_unpin())

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: the process is up (it may still have no model)."""
        return self._run(_health())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, **call.options)
        except httpx.TransportError as exc:
            raise ServiceUnreachable(self.base_url, _transport_reason(exc)) from None
        return _read(response, call)


class AsyncPredictionClient:
    """The asyncio twin of :class:`PredictionClient` (same methods, awaited)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def predict(self, pixels: Any) -> Prediction:
        return await self._run(_predict(pixels))

    async def predict_batch(self, images: Any) -> BatchPrediction:
        return await self._run(_predict_batch(images))

    async def predict_image(self, image: str | Path | bytes | IO[bytes], *, filename: str | None = None) -> Prediction:
        return await self._run(_predict_image(image, filename))

    async def feedback(self, prediction_id: str, label: int) -> FeedbackReceipt:
        return await self._run(_feedback(prediction_id, label))

    async def add_samples(self, samples: Sequence[tuple[Any, int]]) -> SamplesReceipt:
        return await self._run(_add_samples(samples))

    async def model(self) -> ModelStatus:
        return await self._run(_model())

    async def versions(self) -> Versions:
        return await self._run(_versions())

    async def pin(self, version: int) -> ModelStatus:
        return await self._run(_pin(version))

    async def unpin(self) -> ModelStatus:
        return await self._run(_unpin())

    async def health(self) -> dict[str, Any]:
        return await self._run(_health())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPredictionClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **call.options)
        except httpx.TransportError as exc:
            raise ServiceUnreachable(self.base_url, _transport_reason(exc)) from None
        return _read(response, call)


# -- requests (shared by both clients) ----------------------------------------------------------


def _predict(pixels: Any) -> _Call[Prediction]:
    return _Call("POST", "/predict", _prediction, {"json": {"pixels": _pixel_list(pixels)}})


def _predict_batch(images: Any) -> _Call[BatchPrediction]:
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (2, 3):
        body = np.ascontiguousarray(images).tobytes()
        headers = {"Content-Type": "application/octet-stream"}
        return _Call("POST", "/predict/batch", _batch_prediction, {"content": body, "headers": headers})
    return _Call("POST", "/predict/batch", _batch_prediction, {"json": {"images": [_pixel_list(i) for i in images]}})


def _predict_image(image: str | Path | bytes | IO[bytes], filename: str | None) -> _Call[Prediction]:
    if isinstance(image, str | Path):
        data = Path(image).read_bytes()
        filename = filename or Path(image).name
    elif isinstance(image, bytes | bytearray):
        data = bytes(image)
    else:
        data = image.read()
    name = filename or "image.png"
    content_type = "image/jpeg" if name.lower().endswith((".jpg", ".jpeg")) else "image/png"
    return _Call("POST", "/predict/image", _prediction, {"files": {"file": (name, data, content_type)}})


def _feedback(prediction_id: str, label: int) -> _Call[FeedbackReceipt]:
    return _Call("POST", "/feedback", _feedback_receipt, {"json": {"prediction_id": prediction_id, "label": label}})


def _add_samples(samples: Sequence[tuple[Any, int]]) -> _Call[SamplesReceipt]:
    body = {"samples": [{"pixels": _pixel_list(pixels), "label": _plain(label)} for pixels, label in samples]}
    return _Call("POST", "/samples", _samples_receipt, {"json": body})


def _model() -> _Call[ModelStatus]:
    return _Call("GET", "/model", _model_status)


def _versions() -> _Call[Versions]:
    return _Call("GET", "/model/versions", _versions_list)


def _pin(version: int) -> _Call[ModelStatus]:
    return _Call("POST", "/model/pin", _model_status, {"json": {"version": _plain(version)}})


def _unpin() -> _Call[ModelStatus]:
    return _Call("POST", "/model/unpin", _model_status)


def _health() -> _Call[dict[str, Any]]:
    return _Call("GET", "/healthz", _as_dict)


# -- responses ----------------------------------------------------------------------------------


def _read(response: httpx.Response, call: _Call[T]) -> T:
    if response.is_success:
        try:
            return call.parse(response.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise UnexpectedResponse(
                f"{call.method} {response.url}: unexpected answer ({exc.__class__.__name__}: {exc}); "
                "is this a digitstream service?"
            ) from None
    raise _error(response, call.method)


def _error(response: httpx.Response, method: str) -> ApiError:
    detail = _detail(response)
    status = response.status_code
    where = {"method": method, "url": str(response.url)}
    if status == 503:
        return ServiceUnavailable(status, detail, retry_after=_retry_after(response), **where)
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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare, and not worth parsing here


def _transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({exc.__class__.__name__})"
    text = str(exc) or exc.__class__.__name__
    return text.split("] ", 1)[-1]  # "[Errno 111] Connection refused" -> "Connection refused"


def _prediction(body: Any) -> Prediction:
    return Prediction(
        digit=int(body["digit"]),
        probabilities=[float(p) for p in body["probabilities"]],
        model_version=int(body["model_version"]),
        samples_learned=int(body["samples_learned"]),
        prediction_id=str(body["prediction_id"]),
    )


def _batch_prediction(body: Any) -> BatchPrediction:
    return BatchPrediction(
        digits=[int(d) for d in body["digits"]],
        probabilities=[[float(p) for p in row] for row in body["probabilities"]],
        model_version=int(body["model_version"]),
        samples_learned=int(body["samples_learned"]),
    )


def _feedback_receipt(body: Any) -> FeedbackReceipt:
    return FeedbackReceipt(str(body["stream_id"]), str(body["prediction_id"]), int(body["label"]))


def _samples_receipt(body: Any) -> SamplesReceipt:
    return SamplesReceipt([str(i) for i in body["stream_ids"]], int(body["count"]))


def _model_status(body: Any) -> ModelStatus:
    return ModelStatus(
        model=str(body["model"]),
        version=int(body["version"]),
        samples_learned=int(body["samples_learned"]),
        created_at=_optional_float(body.get("created_at")),
        age_seconds=_optional_float(body.get("age_seconds")),
        last_id=str(body["last_id"]),
        rule=str(body["rule"]),
        params=dict(body.get("params") or {}),
        metrics=dict(body.get("metrics") or {}),
        lag=_optional_int(body.get("lag")),
        pinned=bool(body.get("pinned")),
        worker=body.get("worker"),
        deadletter_count=int(body.get("deadletter_count") or 0),
        raw=dict(body),
    )


def _versions_list(body: Any) -> Versions:
    return Versions(
        versions=[
            VersionInfo(
                version=int(v["version"]),
                samples_learned=int(v["samples_learned"]),
                created_at=_optional_float(v.get("created_at")),
                prequential_accuracy=_optional_float(v.get("prequential_accuracy")),
            )
            for v in body["versions"]
        ],
        latest=_optional_int(body.get("latest")),
        served=_optional_int(body.get("served")),
        pinned=_optional_int(body.get("pinned")),
    )


def _as_dict(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise TypeError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _headers(api_key: str | None) -> dict[str, str]:
    return {API_KEY_HEADER: api_key} if api_key else {}


def _pixel_list(pixels: Any) -> Any:
    """JSON-able pixels; numpy arrays and raw bytes become lists (values are checked by the server)."""
    if isinstance(pixels, bytes | bytearray | memoryview):
        return list(bytes(pixels))
    if isinstance(pixels, np.ndarray):
        return pixels.tolist()
    return pixels


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _optional_float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _optional_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    return int(value)
