"""The requests of the prediction clients, built and read apart from any I/O (shared by sync and async).

A :class:`Call` says what to send and how to read the answer; :class:`Retries` says when a failed
call may be tried again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import numpy as np

from . import results
from .api_errors import (
    ClientError,
    RateLimited,
    RetryLater,
    ServiceUnavailable,
    ServiceUnreachable,
    UnexpectedResponse,
    error_for,
)
from .results import BatchPrediction, FeedbackReceipt, ModelStatus, Prediction, SamplesReceipt, Versions

API_KEY_HEADER = "X-API-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"

T = TypeVar("T")


@dataclass(frozen=True)
class Retries:
    """When and how long to wait before trying a call again.

    ``count`` more attempts at most; a 503/429's ``Retry-After`` is honoured up to ``max_wait``
    seconds; without one (or for a connection error) the waits double from ``backoff`` up to
    ``max_wait``.
    """

    count: int = 0
    backoff: float = 0.5
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        if self.count < 0 or self.backoff <= 0 or self.max_wait <= 0:
            raise ValueError("retries: count >= 0, backoff > 0 and max_wait > 0")

    def wait(self, attempt: int, error: ClientError) -> float:
        """Seconds before attempt number ``attempt + 1`` (``attempt`` counts from 0)."""
        hinted = error.retry_after if isinstance(error, RetryLater) else None
        delay = hinted if hinted is not None else self.backoff * 2**attempt
        return min(delay, self.max_wait)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send, how to read the answer, and whether a resend could apply it twice."""

    method: str
    path: str
    parse: Callable[[Any], T]
    options: dict[str, Any] = field(default_factory=dict)
    resend_safe: bool = True  # False: a resend after a lost answer could apply it twice

    def retryable(self, error: ClientError) -> bool:
        if isinstance(error, RateLimited):
            return True  # refused before anything was done
        # A 503 may come from a Redis write that landed but whose answer was lost, as may a timeout.
        return isinstance(error, ServiceUnavailable | ServiceUnreachable) and self.resend_safe


def model_path(path: str, model: str | None) -> str:
    """``path`` of the default model's API for the named ``model`` (the service's ``/models/{name}/...``).

    >>> model_path("/predict/batch", "tenant-1"), model_path("/model/pin", "a"), model_path("/feedback", "a")
    ('/models/tenant-1/predict/batch', '/models/a/pin', '/feedback')
    """
    if model is None:
        return path
    name = quote(model, safe="")
    if path.startswith("/predict"):
        return f"/models/{name}{path}"
    if path == "/model" or path.startswith("/model/"):
        return f"/models/{name}{path[len('/model'):]}"
    return path


def as_retries(retries: int | Retries) -> Retries:
    return retries if isinstance(retries, Retries) else Retries(count=retries)


# -- requests (shared by both clients) ----------------------------------------------------------


def predict(pixels: Any) -> Call[Prediction]:
    return Call("POST", "/predict", results.prediction, {"json": {"pixels": _pixel_list(pixels)}})


def predict_batch(images: Any) -> Call[BatchPrediction]:
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (2, 3):
        body = np.ascontiguousarray(images).tobytes()
        headers = {"Content-Type": "application/octet-stream"}
        return Call("POST", "/predict/batch", results.batch_prediction, {"content": body, "headers": headers})
    json_body = {"images": [_pixel_list(i) for i in images]}
    return Call("POST", "/predict/batch", results.batch_prediction, {"json": json_body})


def predict_image(image: str | Path | bytes | IO[bytes], filename: str | None) -> Call[Prediction]:
    if isinstance(image, str | Path):
        data = Path(image).read_bytes()
        filename = filename or Path(image).name
    elif isinstance(image, bytes | bytearray):
        data = bytes(image)
    else:
        data = image.read()
    name = filename or "image.png"
    content_type = "image/jpeg" if name.lower().endswith((".jpg", ".jpeg")) else "image/png"
    return Call("POST", "/predict/image", results.prediction, {"files": {"file": (name, data, content_type)}})


def feedback(prediction_id: str, label: int, key: str | None = None) -> Call[FeedbackReceipt]:
    body = {"prediction_id": prediction_id, "label": _plain(label)}
    return Call("POST", "/feedback", results.feedback_receipt, {"json": body, "headers": _once(key)})


def add_samples(samples: Sequence[tuple[Any, int]], key: str | None = None) -> Call[SamplesReceipt]:
    body = {"samples": [{"pixels": _pixel_list(pixels), "label": _plain(label)} for pixels, label in samples]}
    return Call("POST", "/samples", results.samples_receipt, {"json": body, "headers": _once(key)})


def _once(key: str | None) -> dict[str, str]:
    """The Idempotency-Key of a write: the caller's, else a new one for this call, sent again on its retries.

    The service answers a resend of a keyed write with the first answer and publishes nothing,
    which is what makes these writes safe to retry after a lost answer (``resend_safe``).
    """
    return {IDEMPOTENCY_HEADER: key if key is not None else uuid.uuid4().hex}


def model() -> Call[ModelStatus]:
    return Call("GET", "/model", results.model_status)


def weights() -> Call[np.ndarray]:
    return Call("GET", "/model/weights", results.weights)


def versions() -> Call[Versions]:
    return Call("GET", "/model/versions", results.versions_list)


def pin(version: int) -> Call[ModelStatus]:
    return Call("POST", "/model/pin", results.model_status, {"json": {"version": _plain(version)}})


def unpin() -> Call[ModelStatus]:
    return Call("POST", "/model/unpin", results.model_status)


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", results.as_dict)


def readyz() -> Call[dict[str, Any]]:
    return Call("GET", "/readyz", results.as_dict)


# -- responses ----------------------------------------------------------------------------------


def read(response: httpx.Response, call: Call[T]) -> T:
    if response.is_success:
        try:
            return call.parse(response.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise UnexpectedResponse(
                f"{call.method} {response.url}: unexpected answer ({exc.__class__.__name__}: {exc}); "
                "is this a digitstream service?"
            ) from None
    raise error_for(response, call.method)


def headers(api_key: str | None) -> dict[str, str]:
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
