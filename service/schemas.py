"""The HTTP contract: pydantic response/request models and the JSON schemas of the fast-path bodies.

Field names follow docs/ARCHITECTURE.md ("HTTP API"), shared with the Python client and the
dashboard. The hot endpoints (/predict, /predict/batch, /samples) parse their bodies with orjson
and check them with numpy (``service.validation``); their request schemas are written out here
so that the OpenAPI document still describes exactly what they accept.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from digitstream.protocol import N_PIXELS

PREDICTION_ID_PATTERN = r"^[0-9a-f]{32}$"


def _json_integer(value: Any) -> int:
    """A JSON Schema "integer": an int or an integral float (``7.0``), never a string or a boolean."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise PydanticCustomError("int_type", "Input should be an integer")


JsonInt = Annotated[int, BeforeValidator(_json_integer)]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Probabilities = Annotated[list[Probability], Field(min_length=10, max_length=10)]
Digit = Annotated[int, Field(ge=0, le=9)]

_PIXEL = {"type": "integer", "minimum": 0, "maximum": 255}
_ROW = {"type": "array", "items": _PIXEL, "minItems": 28, "maxItems": 28}
FLAT_PIXELS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": _PIXEL,
    "minItems": N_PIXELS,
    "maxItems": N_PIXELS,
    "description": f"{N_PIXELS} grey levels 0..255, row-major 28x28, 0 = background (white ink on black)",
}
PIXELS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        FLAT_PIXELS_SCHEMA,
        {"type": "array", "items": _ROW, "minItems": 28, "maxItems": 28, "description": "28 rows of 28 grey levels"},
    ]
}


def json_body(schema: dict[str, Any], example: Any, description: str) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body read by hand."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


def predict_body() -> dict[str, Any]:
    schema = {"type": "object", "required": ["pixels"], "properties": {"pixels": PIXELS_SCHEMA}}
    return json_body(schema, {"pixels": [0] * N_PIXELS}, "One 28x28 image, as 784 integers or 28 rows of 28.")


def batch_body(max_batch: int) -> dict[str, Any]:
    images = {"type": "array", "items": FLAT_PIXELS_SCHEMA, "minItems": 1, "maxItems": max_batch}
    return {
        "requestBody": {
            "required": True,
            "description": (
                f"1..{max_batch} images: JSON, or a binary body of N x {N_PIXELS} bytes "
                "(application/octet-stream, row-major, one byte per pixel) which is much faster to send and parse."
            ),
            "content": {
                "application/json": {
                    "schema": {"type": "object", "required": ["images"], "properties": {"images": images}},
                    "example": {"images": [[0] * N_PIXELS]},
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


def upload_body(max_pixels: int) -> dict[str, Any]:
    """``openapi_extra`` of POST /predict/image: a multipart form with the picture as ``file``."""
    picture = {
        "type": "string",
        "format": "binary",
        "description": f"a PNG or JPEG of one digit, at most {max_pixels:,} pixels, any polarity",
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": {"file": picture}}
                }
            },
        }
    }


def samples_body(max_batch: int) -> dict[str, Any]:
    sample = {
        "type": "object",
        "required": ["pixels", "label"],
        "properties": {"pixels": PIXELS_SCHEMA, "label": {"type": "integer", "minimum": 0, "maximum": 9}},
    }
    schema = {
        "type": "object",
        "required": ["samples"],
        "properties": {"samples": {"type": "array", "items": sample, "minItems": 1, "maxItems": max_batch}},
    }
    example = {"samples": [{"pixels": [0] * N_PIXELS, "label": 7}]}
    return json_body(schema, example, f"1..{max_batch} labelled samples to publish to the stream.")


class Error(BaseModel):
    """Every error: a human-readable message naming the field and the problem."""

    detail: str


class Prediction(BaseModel):
    digit: Digit
    probabilities: Probabilities
    model_version: int
    samples_learned: int
    prediction_id: str = Field(pattern=PREDICTION_ID_PATTERN, description="give it to POST /feedback")


class BatchPrediction(BaseModel):
    digits: list[Digit]
    probabilities: list[Probabilities]
    model_version: int
    samples_learned: int


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"prediction_id": "0" * 32, "label": 7}})

    prediction_id: str = Field(pattern=PREDICTION_ID_PATTERN, description="from a /predict or /predict/image answer")
    label: Annotated[JsonInt, Field(ge=0, le=9, description="the true digit")]


class FeedbackReceipt(BaseModel):
    stream_id: str
    prediction_id: str
    label: Digit


class SamplesReceipt(BaseModel):
    stream_ids: list[str]
    count: int


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"version": 3}})

    version: Annotated[JsonInt, Field(ge=1, description="a kept version (GET /model/versions)")]


class ModelInfo(BaseModel):
    model: str
    version: int
    samples_learned: int
    created_at: float | None = Field(description="unix seconds when the worker wrote the snapshot")
    age_seconds: float | None
    last_id: str = Field(description="id of the last stream entry the snapshot includes")
    rule: str
    params: dict[str, Any]
    metrics: dict[str, Any] = Field(description="online metrics from the snapshot (prequential/rolling accuracy, ...)")
    lag: int | None = Field(
        description="samples not yet learned: the worker's own count while it is healthy, else the backlog"
    )
    learning: dict[str, Any] = Field(
        description="health (ok: a worker is learning; stalled: the lease holder's heartbeat stopped; no-worker: "
        "nobody holds the lease; crash-looping: the worker restarts at the same position; unknown: Redis "
        "unreachable), backlog (samples after the latest snapshot: the stream entries counted by Redis, "
        "backlog_entries, times the samples per entry so far), backlog_at_least, "
        "heartbeat_age (s), throughput (samples/s), detail"
    )
    pinned: bool
    worker: dict[str, Any] | None = Field(
        description="the active worker's status (fields in docs/ARCHITECTURE.md), null when none reports"
    )
    deadletter_count: int = Field(
        description="malformed stream entries the worker had moved to the dead-letter stream by this snapshot"
    )


class ComparedModel(BaseModel):
    name: str
    rule: str
    learning_rate: float
    stream: str = Field(description="the stream the model learns from (several models may share one)")
    version: int | None = Field(description="the latest snapshot, null before the first")
    samples_learned: int
    created_at: float | None = Field(description="unix seconds when the worker wrote the latest snapshot")
    prequential_accuracy: float | None
    rolling_accuracy: float | None
    rolling_window: int
    learning_curve: list[tuple[int, float | None, float | None]] = Field(
        description="[samples learned, prequential accuracy, rolling accuracy] points, oldest first"
    )


class Comparison(BaseModel):
    models: list[ComparedModel] = Field(description="in the order asked for")


class VersionInfo(BaseModel):
    version: int
    samples_learned: int
    created_at: float | None
    prequential_accuracy: float | None


class Versions(BaseModel):
    versions: list[VersionInfo] = Field(description="kept versions, oldest first")
    latest: int | None
    served: int | None
    pinned: int | None = Field(description="the pinned version, null when following the latest")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    model_version: int | None
    redis: Literal["ok", "unreachable"]
    detail: str | None = None


class WeightTemplates(BaseModel):
    """The served weights as arrays, for clients that draw the templates themselves (the dashboard)."""

    version: int
    samples_learned: int
    rule: str = Field(
        description="linear rules: their weights; mlp: the output layer mapped back through the hidden one "
        "(what the first layer learned since its seeded start, times the output weights)"
    )
    weights: list[Annotated[list[float], Field(min_length=784, max_length=784)]] = Field(
        min_length=10, max_length=10, description="10 templates (digits 0..9) of 784 weights, row-major 28x28"
    )
    bias: list[float] = Field(min_length=10, max_length=10)


class HiddenUnit(BaseModel):
    unit: int = Field(description="index of the unit in the hidden layer")
    importance: float = Field(description="|learned input weights| x |output weights|: how much it sways the scores")
    votes_for: Digit = Field(description="the digit its output weights favour most")
    votes_against: Digit = Field(description="the digit its output weights disfavour most")
    output: list[float] = Field(min_length=10, max_length=10, description="its weight in each digit's score")
    peak: float = Field(description="the largest |learned input weight|: input = round(127 * weight / peak)")
    input: list[Annotated[int, Field(ge=-127, le=127)]] = Field(
        min_length=784, max_length=784,
        description="what it learned to detect: its input weights minus their seeded start, row-major 28x28, "
        "scaled to -127..127 of peak",
    )  # fmt: skip


class HiddenFeatures(BaseModel):
    """The most important hidden units of the served model (mlp rule; none for the linear rules)."""

    version: int
    samples_learned: int
    rule: str
    hidden: int = Field(description="units in the hidden layer (0: a linear rule)")
    units: list[HiddenUnit] = Field(description="the most important units, most important first")
