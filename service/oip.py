"""The Open Inference Protocol (KServe V2) wire format: requests read, answers written, JSON or binary.

One input, ``images``: UINT8, shape ``[N, 784]`` or ``[N, 28, 28]`` (``1 <= N <= max_batch``),
its values in ``data`` (flat or nested, row-major) or, with the binary-tensor extension, as
``parameters.binary_data_size`` raw bytes after the JSON header (whose length the
``Inference-Header-Content-Length`` header gives). Two outputs: ``probabilities`` (FP32,
``[N, 10]``) and ``digits`` (INT64, ``[N]``), in JSON or, when asked (``binary_data_output`` for
all, an output's ``binary_data`` for one), as raw little-endian bytes after the JSON header.

Everything a client could get wrong raises :class:`OipError` (400 unless said otherwise), whose
message the routes answer as the protocol's error body ``{"error": "..."}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from digitstream.protocol import IMAGE_SHAPE, N_PIXELS

HEADER_LENGTH = "inference-header-content-length"
INPUT_NAME = "images"
INPUT_SHAPES = ([-1, N_PIXELS], [-1, *IMAGE_SHAPE])
OUTPUTS = {"probabilities": ("FP32", 10), "digits": ("INT64", None)}  # name -> (datatype, columns)
MAX_ID_LENGTH = 256


class OipError(ValueError):
    """A request the client must fix: ``{"error": message}`` with ``status_code``."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class InferRequest:
    """What an inference request asks: the images, which outputs, in which encoding."""

    images: np.ndarray  # (n, 784) uint8
    request_id: str | None
    outputs: dict[str, bool]  # requested output -> binary


def read_request(body: bytes | bytearray, header_length: str | None, max_batch: int) -> InferRequest:
    """The request in ``body`` (JSON, or JSON + binary tensors when ``header_length`` is given)."""
    tail: bytes | memoryview
    if header_length is None:
        head, tail = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise OipError(f"Inference-Header-Content-Length: not an integer ({header_length[:20]!r})") from None
        if not 0 < size <= len(body):
            raise OipError(f"Inference-Header-Content-Length: {size} is not within the body's {len(body)} bytes")
        head, tail = body[:size], memoryview(body)[size:]
    request = _json_object(head)
    request_id = request.get("id")
    if request_id is not None and (type(request_id) is not str or len(request_id) > MAX_ID_LENGTH):
        raise OipError(f"id: must be a string of at most {MAX_ID_LENGTH} characters")
    parameters = _parameters(request.get("parameters"), "parameters")
    inputs = request.get("inputs")
    if type(inputs) is not list or len(inputs) != 1:
        raise OipError(f"inputs: expected exactly one input, {INPUT_NAME!r} (UINT8, [-1, 784] or [-1, 28, 28])")
    images = _read_input(inputs[0], tail, max_batch)
    return InferRequest(images, request_id, _requested_outputs(request.get("outputs"), parameters))


def _json_object(head: bytes | bytearray | memoryview) -> dict[str, Any]:
    if not head:
        raise OipError("body: empty, expected an inference request (JSON)")
    try:
        data = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise OipError(f"body: not valid JSON ({exc})") from None
    if type(data) is not dict:
        raise OipError("body: expected a JSON object with 'inputs'")
    return data


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise OipError(f"{where}: expected an object")
    return value


def _read_input(tensor: Any, tail: bytes | memoryview, max_batch: int) -> np.ndarray:
    where = "inputs[0]"
    if type(tensor) is not dict:
        raise OipError(f"{where}: expected an object with name, shape, datatype and data")
    if tensor.get("name") != INPUT_NAME:
        raise OipError(f"{where}.name: expected {INPUT_NAME!r}, got {_show(tensor.get('name'))}")
    if tensor.get("datatype") != "UINT8":
        raise OipError(f"{where}.datatype: expected 'UINT8' (grey levels 0..255), got {_show(tensor.get('datatype'))}")
    shape = _shape(tensor.get("shape"), f"{where}.shape", max_batch)
    count = math.prod(shape)
    binary_size = _parameters(tensor.get("parameters"), f"{where}.parameters").get("binary_data_size")
    if binary_size is not None:
        if "data" in tensor:
            raise OipError(f"{where}: has both data and parameters.binary_data_size")
        if type(binary_size) is not int or binary_size != count:
            raise OipError(f"{where}.parameters.binary_data_size: a UINT8 tensor of shape {shape} is {count} bytes, "
                           f"got {_show(binary_size)}")  # fmt: skip
        if len(tail) != count:
            raise OipError(f"{where}: {count} bytes of binary data expected after the JSON header, got {len(tail)}")
        return np.frombuffer(tail, dtype=np.uint8).reshape(shape[0], N_PIXELS)
    if len(tail):
        raise OipError(f"body: {len(tail)} bytes after the JSON header that no input claims (binary_data_size)")
    if "data" not in tensor:
        raise OipError(f"{where}.data: field required (or binary data: parameters.binary_data_size)")
    return _json_data(tensor["data"], shape, count, f"{where}.data").reshape(shape[0], N_PIXELS)


def _shape(value: Any, where: str, max_batch: int) -> list[int]:
    if type(value) is not list or not all(type(d) is int for d in value):
        raise OipError(f"{where}: expected [N, 784] or [N, 28, 28], got {_show(value)}")
    if len(value) not in (2, 3) or value[1:] != INPUT_SHAPES[len(value) - 2][1:]:
        raise OipError(f"{where}: expected [N, 784] or [N, 28, 28], got {value}")
    if not 1 <= value[0] <= max_batch:
        raise OipError(f"{where}: {value[0]} images; 1..{max_batch} per request")
    return value


def _json_data(data: Any, shape: list[int], count: int, where: str) -> np.ndarray:
    if type(data) is not list:
        raise OipError(f"{where}: expected an array of {count} integers 0..255, got {_show(data)}")
    try:
        arr = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise OipError(f"{where}: expected integers 0..255 (got mixed or ragged arrays)") from None
    if arr.size != count or arr.shape not in ((count,), tuple(shape)):
        raise OipError(f"{where}: shape {shape} needs {count} values (flat or nested as the shape), "
                       f"got {arr.size} as {list(arr.shape)}")  # fmt: skip
    if arr.dtype.kind not in "iu":
        kind = {"f": "numbers with fractions", "b": "booleans", "U": "strings"}.get(arr.dtype.kind, "mixed values")
        raise OipError(f"{where}: expected integers 0..255, got {kind}")
    bad = (arr < 0) | (arr > 255)
    if bad.any():
        index = int(np.argmax(bad.ravel()))
        raise OipError(f"{where}[{index}]: {arr.ravel()[index]} is outside 0..255")
    return arr.astype(np.uint8)


def _requested_outputs(value: Any, parameters: dict[str, Any]) -> dict[str, bool]:
    default_binary = parameters.get("binary_data_output", False)
    if type(default_binary) is not bool:
        raise OipError("parameters.binary_data_output: expected true or false")
    if value is None:
        return dict.fromkeys(OUTPUTS, default_binary)
    if type(value) is not list or not value:
        raise OipError(f"outputs: expected a non-empty array of {{name}} objects ({', '.join(OUTPUTS)})")
    requested: dict[str, bool] = {}
    for i, output in enumerate(value):
        name = output.get("name") if type(output) is dict else None
        if name not in OUTPUTS:
            raise OipError(f"outputs[{i}].name: expected one of {', '.join(OUTPUTS)}, got {_show(name)}")
        binary = _parameters(output.get("parameters"), f"outputs[{i}].parameters").get("binary_data", default_binary)
        if type(binary) is not bool:
            raise OipError(f"outputs[{i}].parameters.binary_data: expected true or false")
        requested[name] = binary
    return requested


def answer(
    request: InferRequest, model_name: str, version: int, digits: np.ndarray, proba: np.ndarray,
    parameters: dict[str, Any],
) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """(body, headers) of the inference response: JSON, or a JSON header and binary outputs."""
    tensors = {
        "probabilities": np.ascontiguousarray(proba, dtype="<f4"),
        "digits": np.ascontiguousarray(digits, dtype="<i8"),
    }
    outputs, binary = [], []
    for name, as_binary in request.outputs.items():
        datatype, columns = OUTPUTS[name]
        tensor = tensors[name]
        shape = [len(tensor)] if columns is None else [len(tensor), columns]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if as_binary:
            raw = tensor.tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            output["data"] = tensor.ravel()
        outputs.append(output)
    body: dict[str, Any] = {"model_name": model_name, "model_version": str(version)}
    if request.request_id is not None:
        body["id"] = request.request_id
    body["parameters"] = parameters
    body["outputs"] = outputs
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return b"".join([head, *binary]), headers


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode() if isinstance(value, str | int | float | bool | None) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
