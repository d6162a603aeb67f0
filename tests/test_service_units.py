"""The service's pure parts: body validation agrees with the protocol, batching keeps each request's model."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitstream.learner import DeltaRuleLearner
from digitstream.protocol import InvalidSample, validate_pixels
from digitstream.service import validation
from digitstream.service.batching import MicroBatcher
from digitstream.service.model_holder import ServedModel
from digitstream.service.predictions import PredictionIds
from digitstream.snapshot import encode_snapshot, snapshot_of

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-300, 300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda children: st.lists(children, max_size=4),
    max_leaves=20,
)


def near_images() -> st.SearchStrategy[object]:
    """Mostly-valid pixel arrays: 784 values (or 28 rows) with a few odd ones in."""
    good = st.lists(st.integers(0, 255), min_size=784, max_size=784)
    odd = st.integers(-2, 2**65) | st.floats(-1e300, 1e300, allow_nan=False) | st.booleans() | st.text(max_size=2)

    def spoil(values: list[int], data: list[tuple[int, object]]) -> list[object]:
        out: list[object] = list(values)
        for index, value in data:
            out[index % len(out)] = value
        return out

    flat = st.builds(spoil, good, st.lists(st.tuples(st.integers(0, 783), odd), max_size=2))
    rows = good.map(lambda v: [v[i * 28 : (i + 1) * 28] for i in range(28)])
    wrong_length = st.lists(st.integers(0, 255), min_size=0, max_size=800).filter(lambda v: len(v) != 784)
    return flat | rows | wrong_length | JSON_VALUES


@settings(max_examples=300, deadline=None)
@given(value=near_images())
def test_pixel_validation_accepts_exactly_the_images_the_protocol_accepts(value: object) -> None:
    """Same verdict and same pixels as the worker's own rule (JSON booleans excepted: both read them as 0/1)."""
    try:
        expected = validate_pixels(value)
    except (InvalidSample, ValueError, TypeError, OverflowError):
        expected = None
    try:
        got = validation.pixels(value)
        raw = validation.pixel_bytes(value)
    except validation.InvalidInput as exc:
        assert exc.detail.startswith("pixels")
        assert exc.status_code == 422
        got = None
    if got is None:
        assert expected is None or _has_bool_or_big(value)
    else:
        assert expected is not None
        np.testing.assert_array_equal(got, expected)
        assert raw == expected.tobytes()


def _has_bool_or_big(value: object) -> bool:
    text = json.dumps(value)
    return "true" in text or "false" in text or "e+" in text.lower()


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=64) | JSON_VALUES.map(lambda v: json.dumps({"pixels": v}).encode()))
def test_any_body_is_either_an_image_or_an_error_naming_the_field(body: bytes) -> None:
    try:
        image = validation.pixels(validation.get_field(validation.parse_json(body), "pixels"))
    except validation.InvalidInput as exc:
        assert exc.detail.split(":", 1)[0].split("[", 1)[0] in ("body", "pixels")
    else:
        assert image.shape == (784,) and image.dtype == np.uint8


def served(learner: DeltaRuleLearner, version: int) -> ServedModel:
    snapshot = snapshot_of(learner, samples_learned=learner.n_samples, last_id="0-0")
    fields = encode_snapshot(snapshot)
    fields[b"version"] = str(version).encode()
    return ServedModel.from_fields(fields)


def test_batched_predictions_equal_single_ones_and_keep_each_requests_model(
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = mnist_train
    first = DeltaRuleLearner()
    first.learn_many(images[:300], labels[:300])
    second = DeltaRuleLearner.from_state(first.state())
    second.learn_many(images[300:2000], labels[300:2000])
    models = [served(first, 1), served(second, 2)]
    batcher = MicroBatcher()

    async def many() -> list[tuple[int, np.ndarray]]:
        # 40 requests in the same event-loop turn, alternating between two models (a swap mid-batch)
        return await asyncio.gather(*(batcher.predict(models[i % 2], images[i].tobytes()) for i in range(40)))

    results = asyncio.run(many())
    assert batcher.batches == 2 and batcher.images == 40  # one batch per model
    for i, (digit, proba) in enumerate(results):
        learner = (first, second)[i % 2]
        assert digit == learner.predict_one(images[i])
        np.testing.assert_allclose(proba, learner.predict_proba_many(images[i : i + 1])[0], rtol=1e-12)


def test_a_failing_batch_fails_each_of_its_requests() -> None:
    class Broken:
        def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            raise RuntimeError("boom")

    batcher = MicroBatcher()

    async def two() -> list[object]:
        broken = Broken()
        return await asyncio.gather(
            batcher.predict(broken, bytes(784)), batcher.predict(broken, bytes(784)), return_exceptions=True  # type: ignore[arg-type]
        )

    assert [str(r) for r in asyncio.run(two())] == ["boom", "boom"]


def test_prediction_ids_are_unique_128_bit_hex() -> None:
    new_id = PredictionIds(batch=8)
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1e300] + [0] * 783, "pixels[0]: 1e+300 is outside 0..255"),
        ([0] * 783 + [-5], "pixels[783]: -5 is outside 0..255"),
        ([0] * 783 + [0.5], "pixels: values must be integers 0..255, got numbers with fractions"),
        ([[0] * 28] * 27 + [[0] * 27 + ["x"]], "pixels: values must be integers 0..255"),
    ],
)
def test_pixel_errors_point_at_the_first_bad_value(value: object, message: str) -> None:
    with pytest.raises(validation.InvalidInput) as caught:
        validation.pixels(value)
    assert caught.value.detail.startswith(message)
