"""OpenAPI descriptions of the Open Inference Protocol routes: response models and the request body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from digitstream.protocol import N_PIXELS

from .oip import HEADER_LENGTH, INPUT_NAME, MAX_ID_LENGTH, OUTPUTS


class OipErrorBody(BaseModel):
    """The protocol's error body."""

    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any number of images")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="the kept versions, oldest first")
    platform: str = Field(description="digitstream and the learning rule of the served snapshot")
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Readiness(BaseModel):
    ready: bool


class Liveness(BaseModel):
    live: bool


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = Field(None, description="absent when the output is sent as binary data")
    parameters: dict[str, int] | None = Field(None, description="binary_data_size of a binary output")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, str | int] = Field(
        description="prediction_ids (comma-separated, in image order; prediction_id when one image) for "
        "POST /feedback, and samples_learned"
    )
    outputs: list[OutputTensor]


def infer_body(max_batch: int) -> dict[str, Any]:
    """``openapi_extra`` of the infer routes: the JSON request, and the binary-tensor form."""
    pixel = {"type": "integer", "minimum": 0, "maximum": 255}
    flat = {"type": "array", "items": pixel, "minItems": N_PIXELS, "maxItems": N_PIXELS * max_batch}
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "enum": [INPUT_NAME]},
            "shape": {
                "description": f"[N, {N_PIXELS}] or [N, 28, 28], 1 <= N <= {max_batch}; data: N x {N_PIXELS} values",
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 2,
                "maxItems": 3,
            },
            "datatype": {"type": "string", "enum": ["UINT8"]},
            "data": flat,
        },
    }
    output = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "enum": list(OUTPUTS)},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
    }}  # fmt: skip
    schema = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "maxLength": MAX_ID_LENGTH},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1},
            "outputs": {"type": "array", "items": output, "minItems": 1, "maxItems": len(OUTPUTS)},
        },
    }
    example = {"inputs": [{"name": INPUT_NAME, "shape": [1, N_PIXELS], "datatype": "UINT8", "data": [0] * N_PIXELS}]}
    binary = (
        f"The binary-tensor extension: the JSON request (the input with parameters.binary_data_size instead "
        f"of data) followed by the raw bytes, with the header {HEADER_LENGTH}: <length of the JSON>. "
        "Outputs asked with binary_data come back the same way."
    )
    return {
        "requestBody": {
            "required": True,
            "description": f"One UINT8 input {INPUT_NAME!r} of 1..{max_batch} images. {binary}",
            "content": {
                "application/json": {"schema": schema, "example": example},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    }  # fmt: skip


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of the OIP routes (413 comes from the body limit, in the native form)."""
    descriptions = {
        400: "invalid request: the message names the field and the problem",
        404: "unknown model or version",
        413: "body too large",
        503: "no model loaded yet (see Retry-After)",
    }
    from .schemas import Error

    return {
        code: {"model": Error if code == 413 else OipErrorBody, "description": descriptions[code]} for code in codes
    }
