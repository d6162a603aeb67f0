"""The Open Inference Protocol request reader, fuzzed: any body gives the images or an OipError, nothing else."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitstream.service.oip import OipError, answer, read_request

MAX_BATCH = 4

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-300, 300), st.floats(allow_nan=False), st.text(max_size=5))
_DATA = st.one_of(
    _SCALARS,
    st.lists(st.integers(-2, 257), max_size=3 * 784),
    st.lists(st.lists(st.integers(0, 255), max_size=30), max_size=30),
    st.lists(_SCALARS, max_size=5),
)
_SHAPE = st.one_of(
    st.sampled_from([[1, 784], [2, 784], [1, 28, 28], [3, 28, 28], [5, 784], [0, 784], [-1, 784], [1, 783]]),
    st.lists(st.one_of(st.integers(-2, 2**40), st.booleans(), st.text(max_size=2)), max_size=4),
    _SCALARS,
)


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    tensor: dict[str, Any] = {}
    for field, values in (
        ("name", st.sampled_from(["images", "x", 3])),
        ("datatype", st.sampled_from(["UINT8", "FP32", "INT8", None])),
        ("shape", _SHAPE),
        ("data", _DATA),
        ("parameters", st.one_of(_SCALARS, st.fixed_dictionaries({}, optional={
            "binary_data_size": st.one_of(st.integers(-1, 3000), st.sampled_from([784, 1568]), _SCALARS)}))),
    ):  # fmt: skip
        if draw(st.integers(0, 9)) > 0:
            tensor[field] = draw(values)
    return tensor


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    request: dict[str, Any] = {"inputs": draw(st.one_of(st.lists(tensors(), max_size=2), _SCALARS))}
    if draw(st.booleans()):
        parameters = st.fixed_dictionaries({}, optional={"binary_data": _SCALARS})
        output = st.fixed_dictionaries(
            {"name": st.sampled_from(["digits", "probabilities", "other"])}, optional={"parameters": parameters}
        )
        request["outputs"] = draw(st.one_of(_SCALARS, st.lists(output, max_size=3)))
    if draw(st.booleans()):
        request["parameters"] = {"binary_data_output": draw(_SCALARS)}
    if draw(st.booleans()):
        request["id"] = draw(_SCALARS)
    head = orjson.dumps(request)
    if draw(st.booleans()):
        return head, None
    tail = draw(st.one_of(st.binary(max_size=20), st.just(bytes(784)), st.just(bytes(1568))))
    length = draw(st.one_of(st.just(str(len(head))), st.integers(-5, len(head) + 30).map(str), st.text(max_size=4)))
    return head + tail, length


@settings(max_examples=250, deadline=None)
@given(case=bodies())
def test_fuzz_any_request_gives_valid_images_or_an_oip_error(case: tuple[bytes, str | None]) -> None:
    body, length = case
    try:
        request = read_request(body, length, MAX_BATCH)
    except OipError as exc:
        assert exc.status_code == 400 and exc.message
        return
    assert request.images.dtype == np.uint8 and request.images.shape[1] == 784
    assert 1 <= len(request.images) <= MAX_BATCH
    assert set(request.outputs) <= {"digits", "probabilities"} and request.outputs


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=2000), length=st.one_of(st.none(), st.text(max_size=6)))
def test_fuzz_arbitrary_bytes_give_an_oip_error(raw: bytes, length: str | None) -> None:
    with pytest.raises(OipError):
        read_request(raw, length, MAX_BATCH)


def test_nested_28x28_json_data_reads_as_the_flat_image() -> None:
    image = np.arange(784, dtype=np.int64).reshape(1, 28, 28) % 256
    nested = {"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8", "data": image.tolist()}]}
    flat = {"inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8", "data": image.ravel().tolist()}]}
    assert np.array_equal(read_request(orjson.dumps(nested), None, 1).images, image.reshape(1, 784))
    assert np.array_equal(read_request(orjson.dumps(flat), None, 1).images, image.reshape(1, 784))


def test_the_binary_answer_is_the_json_header_then_the_raw_outputs_in_order() -> None:
    request = read_request(orjson.dumps({
        "inputs": [{"name": "images", "shape": [2, 784], "datatype": "UINT8", "data": [0] * 1568}],
        "outputs": [{"name": "digits", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
    }), None, 2)  # fmt: skip
    proba = np.full((2, 10), 0.1)
    body, headers = answer(request, "m", 3, np.array([4, 2]), proba, {"prediction_ids": "a,b"})
    size = int(headers["inference-header-content-length"])
    head = orjson.loads(body[:size])
    assert [o["name"] for o in head["outputs"]] == ["digits", "probabilities"]
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 16} and "data" not in head["outputs"][0]
    assert head["outputs"][1]["data"] == pytest.approx([0.1] * 20)
    assert np.frombuffer(body[size:], dtype="<i8").tolist() == [4, 2]
