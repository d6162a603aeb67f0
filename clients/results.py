"""Typed results of the prediction clients, parsed from the service's JSON answers.

Field names follow the HTTP schemas (a contract test compares them field by field). Batch answers
are numpy arrays, ready for a notebook; a field holding an array names the JSON shape it comes from
in its metadata (``json``), which is what the contract test compares. Reprs are short: a
``ModelStatus`` holds a whole learning curve, which nobody wants printed in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, repr=False)
class Prediction:
    """``POST /predict`` (and ``/predict/image``)."""

    digit: int
    probabilities: list[float]
    model_version: int
    samples_learned: int
    prediction_id: str

    def __repr__(self) -> str:
        p = self.probabilities[self.digit] if 0 <= self.digit < len(self.probabilities) else float("nan")
        return (
            f"Prediction(digit={self.digit}, p={p:.3f}, model_version={self.model_version}, "
            f"prediction_id={self.prediction_id[:8]}…)"
        )


@dataclass(frozen=True, repr=False, eq=False)
class BatchPrediction:
    """``POST /predict/batch``: ``digits`` (n,) int64 and ``probabilities`` (n, 10) float64 arrays."""

    digits: np.ndarray = field(metadata={"json": list[int]})
    probabilities: np.ndarray = field(metadata={"json": list[list[float]]})
    model_version: int
    samples_learned: int

    def __len__(self) -> int:
        return len(self.digits)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BatchPrediction):
            return NotImplemented
        return (
            (self.model_version, self.samples_learned) == (other.model_version, other.samples_learned)
            and np.array_equal(self.digits, other.digits)
            and np.array_equal(self.probabilities, other.probabilities)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(str(d) for d in self.digits[:10].tolist()) + (", …" if len(self) > 10 else "")
        return f"BatchPrediction({len(self)} images: digits [{head}], model_version={self.model_version})"


@dataclass(frozen=True)
class FeedbackReceipt:
    """``POST /feedback``: the true label was appended to the stream as ``stream_id``."""

    stream_id: str
    prediction_id: str
    label: int


@dataclass(frozen=True, repr=False)
class SamplesReceipt:
    """``POST /samples``."""

    stream_ids: list[str]
    count: int

    def __repr__(self) -> str:
        last = f", last {self.stream_ids[-1]}" if self.stream_ids else ""
        return f"SamplesReceipt(count={self.count}{last})"


@dataclass(frozen=True, repr=False)
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
    # health (ok | stalled | no-worker | crash-looping | unknown), backlog counted in the stream, ...
    learning: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def health(self) -> str | None:
        """The learning health: "ok" while a worker learns; "no-worker", "stalled", ... otherwise."""
        value = self.learning.get("health")
        return str(value) if value is not None else None

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

    @property
    def learning_curve(self) -> np.ndarray:
        """(k, 3) array of [samples learned, prequential accuracy, rolling accuracy] (NaN where unknown)."""
        rows = self.metrics.get("learning_curve") or []
        return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64).reshape(-1, 3)

    def __repr__(self) -> str:
        accuracy = self.rolling_accuracy
        shown = "n/a" if accuracy is None else f"{accuracy:.2%}"
        return (
            f"ModelStatus(model={self.model!r}, rule={self.rule!r}, version={self.version}, "
            f"samples_learned={self.samples_learned:,}, rolling_accuracy={shown}, lag={self.lag}, "
            f"pinned={self.pinned})"
        )


@dataclass(frozen=True)
class VersionInfo:
    version: int
    samples_learned: int
    created_at: float | None
    prequential_accuracy: float | None


@dataclass(frozen=True, repr=False)
class Versions:
    """``GET /model/versions``: kept versions, oldest first."""

    versions: list[VersionInfo]
    latest: int | None
    served: int | None
    pinned: int | None

    def __repr__(self) -> str:
        kept = [v.version for v in self.versions]
        return f"Versions(kept={kept}, latest={self.latest}, served={self.served}, pinned={self.pinned})"


# -- parsing (KeyError/TypeError/ValueError on a body that breaks the contract) -------------------


def prediction(body: Any) -> Prediction:
    return Prediction(
        digit=int(body["digit"]),
        probabilities=[float(p) for p in body["probabilities"]],
        model_version=int(body["model_version"]),
        samples_learned=int(body["samples_learned"]),
        prediction_id=str(body["prediction_id"]),
    )


def batch_prediction(body: Any) -> BatchPrediction:
    digits = np.asarray(body["digits"], dtype=np.int64).reshape(-1)
    probabilities = np.asarray(body["probabilities"], dtype=np.float64).reshape(len(digits), -1)
    return BatchPrediction(digits, probabilities, int(body["model_version"]), int(body["samples_learned"]))


def feedback_receipt(body: Any) -> FeedbackReceipt:
    return FeedbackReceipt(str(body["stream_id"]), str(body["prediction_id"]), int(body["label"]))


def samples_receipt(body: Any) -> SamplesReceipt:
    return SamplesReceipt([str(i) for i in body["stream_ids"]], int(body["count"]))


def model_status(body: Any) -> ModelStatus:
    return ModelStatus(
        model=str(body["model"]),
        version=int(body["version"]),
        samples_learned=int(body["samples_learned"]),
        created_at=optional_float(body.get("created_at")),
        age_seconds=optional_float(body.get("age_seconds")),
        last_id=str(body["last_id"]),
        rule=str(body["rule"]),
        params=dict(body.get("params") or {}),
        metrics=dict(body.get("metrics") or {}),
        lag=optional_int(body.get("lag")),
        pinned=bool(body.get("pinned")),
        worker=body.get("worker"),
        deadletter_count=int(body.get("deadletter_count") or 0),
        learning=dict(body.get("learning") or {}),
        raw=dict(body),
    )


def versions_list(body: Any) -> Versions:
    return Versions(
        versions=[
            VersionInfo(
                version=int(v["version"]),
                samples_learned=int(v["samples_learned"]),
                created_at=optional_float(v.get("created_at")),
                prequential_accuracy=optional_float(v.get("prequential_accuracy")),
            )
            for v in body["versions"]
        ],
        latest=optional_int(body.get("latest")),
        served=optional_int(body.get("served")),
        pinned=optional_int(body.get("pinned")),
    )


def weights(body: Any) -> np.ndarray:
    """``GET /model/weights``: the served templates as a float array (10, 784)."""
    array = np.asarray(body["weights"], dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 784:
        raise ValueError(f"weights: expected rows of 784 values, got shape {array.shape}")
    return array


def as_dict(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise TypeError(f"expected a JSON object, got {type(body).__name__}")
    return body


def optional_float(value: Any) -> float | None:
    return float(value) if value is not None else None


def optional_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    return int(value)


__all__ = [
    "BatchPrediction",
    "FeedbackReceipt",
    "ModelStatus",
    "Prediction",
    "SamplesReceipt",
    "VersionInfo",
    "Versions",
]
