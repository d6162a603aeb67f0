"""Large JSON batches are read in pieces straight into numpy, with the answers of a whole parse.

A body over ``WHOLE_LIMIT`` is cut between the items of its array and each piece parsed alone;
these properties check, on bodies of every layout (spacing, newlines, ``7.0``, other fields
before and after, bad values, broken JSON), that it gives what parsing the whole body gives:
the same images, or the same status and message. The pieces are made tiny here (``piece_size``)
so that small bodies are cut in many places.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitstream.protocol import N_PIXELS
from digitstream.service import validation
from digitstream.service.json_arrays import read_images, read_samples
from digitstream.service.validation import InvalidInput

MAX_BATCH = 12
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def whole(body: bytes, reader: str) -> Any:
    """What the whole-body parse answers: the arrays, or (status, message)."""
    try:
        data = validation.parse_json(body)
        if reader == "images":
            return validation.images(validation.get_field(data, "images"), MAX_BATCH)
        return validation.samples(validation.get_field(data, "samples"), MAX_BATCH)
    except InvalidInput as exc:
        return exc.status_code, exc.detail


def in_pieces(body: bytes, reader: str, piece_size: int) -> Any:
    try:
        if reader == "images":
            return read_images(body, MAX_BATCH, whole_limit=0, piece_size=piece_size)
        return read_samples(body, MAX_BATCH, whole_limit=0, piece_size=piece_size)
    except InvalidInput as exc:
        return exc.status_code, exc.detail


def same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(a[0], np.ndarray):
        return isinstance(b, tuple) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b) and b.dtype == np.uint8
    return bool(a == b)


spacing = st.sampled_from([(",", ":"), (", ", ": "), (" ,\n ", " :\t")])


@st.composite
def image_batches(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = draw(st.sampled_from([1, 10, 100, 256]))  # short numbers, long ones, every length
    value: Any = rng.integers(0, top, (n, N_PIXELS)).tolist()
    damage = draw(st.sampled_from(["none", "float", "range", "short", "string", "nested"]))
    i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, N_PIXELS - 1))
    if damage == "float":
        value[i][j] = float(value[i][j])  # 7.0 is an integer to JSON Schema
    elif damage == "range":
        value[i][j] = draw(st.sampled_from([256, -1, 1000, 99999]))
    elif damage == "short":
        value[i] = value[i][:-1]
    elif damage == "string":
        value[i][j] = "7"
    elif damage == "nested":
        value[i] = [value[i]]
    document: dict[str, Any] = {"images": value}
    if draw(st.booleans()):
        document = {"before": {"a": [1, 2, "]],[["]}, **document}
    if draw(st.booleans()):
        document["after"] = "x],[y"
    item, key = draw(spacing)
    text = json.dumps(document, separators=(item, key), indent=draw(st.sampled_from([None, 1])))
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(1, len(text) - 1))]  # broken JSON
    return text.encode()


@SETTINGS
@given(body=image_batches(), piece_size=st.integers(1, 9000))
def test_images_read_in_pieces_are_those_of_a_whole_parse(body: bytes, piece_size: int) -> None:
    expected, got = whole(body, "images"), in_pieces(body, "images", piece_size)
    if isinstance(expected, np.ndarray) or expected[0] == 413:
        assert same(expected, got), (expected if not isinstance(expected, np.ndarray) else "arrays", got)
    else:  # refused by both, with the same status, naming the same field (and the same value when it is wrong)
        assert isinstance(got, tuple) and got[0] == expected[0], (expected, got)
        if "outside 0..255" in expected[1] or "got 783 values" in expected[1]:
            assert got == expected
        elif expected[1].startswith("images"):
            assert got[1].startswith("images"), (expected, got)


@SETTINGS
@given(n=st.integers(1, 5), piece_size=st.integers(1, 9000), seed=st.integers(0, 2**32 - 1), rows=st.booleans(),
       bad_label=st.booleans())  # fmt: skip
def test_samples_read_in_pieces_are_those_of_a_whole_parse(
    n: int, piece_size: int, seed: int, rows: bool, bad_label: bool
) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, N_PIXELS))
    samples = [{"label": int(rng.integers(0, 10)), "pixels": (img.reshape(28, 28) if rows else img).tolist()}
               for img in images]  # fmt: skip
    if bad_label:
        samples[int(rng.integers(0, n))]["label"] = 10
    body = orjson.dumps({"samples": samples})
    expected, got = whole(body, "samples"), in_pieces(body, "samples", piece_size)
    assert same(expected, got) if isinstance(expected[0], np.ndarray) else got == expected


@pytest.mark.parametrize("count", [MAX_BATCH, MAX_BATCH + 1])
def test_the_maximum_batch_holds_in_pieces(count: int) -> None:
    body = orjson.dumps({"images": [[1] * N_PIXELS] * count})
    got = in_pieces(body, "images", 4000)
    if count <= MAX_BATCH:
        assert isinstance(got, np.ndarray) and got.shape == (count, N_PIXELS)
    else:
        assert got == (413, f"images: more than {MAX_BATCH} items exceed the maximum batch of {MAX_BATCH}")


def test_a_large_body_is_only_its_array_and_a_little_json_around_it() -> None:
    padding = "x" * 100_000
    body = orjson.dumps({"note": padding, "images": [[0] * N_PIXELS]})
    assert in_pieces(body, "images", 4000) == (413, "body: besides 'images', at most 65,536 bytes of JSON are accepted")
    assert in_pieces(b'{"pictures": [[0]]}', "images", 10)[0] == 422
