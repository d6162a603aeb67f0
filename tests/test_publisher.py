"""The Publisher: what reaches the stream, what is refused and why, batching, pacing and progress."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from digitstream.clients.embedded_redis import free_port
from digitstream.clients.publisher import InvalidSamples, Publisher, PublishProgress, Rejection, validate_batch
from digitstream.protocol import InvalidSample, Keys, decode_entries, encode_origin, encode_sample

KEYS = Keys.for_model("pubtest")


def read_stream(client: redis.Redis, keys: Keys = KEYS) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return client.xrange(keys.samples)


def test_published_samples_reach_the_stream_in_order_in_the_canonical_form(
    redis_client: redis.Redis, mnist_train: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_train[0][:2500], mnist_train[1][:2500]
    publisher = Publisher(redis_client, KEYS, batch_size=1000)
    ids = publisher.publish(images, labels)
    entries = read_stream(redis_client)
    assert ids == [entry_id for entry_id, _ in entries]
    assert len(ids) == 2500
    producer = publisher.producer.producer_id
    for index in (0, 999, 1000, 2499):
        assert entries[index][1] == {**encode_sample(images[index], labels[index]), **encode_origin(producer, index)}
    decoded = decode_entries(entries)
    assert decoded.rejects == []
    np.testing.assert_array_equal(decoded.images, images)
    np.testing.assert_array_equal(decoded.labels, labels)


def test_every_form_the_protocol_accepts_is_published_identically(redis_client: redis.Redis) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, 784, dtype=np.uint8)
    forms: list[tuple[Any, Any]] = [
        (image, 3),
        (image.reshape(28, 28), np.int64(3)),
        (image.tolist(), "3"),
        (image.tobytes(), b"3"),
        (image.astype(np.float64), 3),
        (image.reshape(28, 28).tolist(), 3),
    ]
    publisher = Publisher(redis_client, KEYS)
    for pixels, label in forms:
        publisher.publish([pixels], [label])
    fields = [f for _, f in read_stream(redis_client)]
    producer = publisher.producer.producer_id
    assert fields == [{**encode_sample(image, 3), **encode_origin(producer, seq)} for seq in range(len(forms))]


def test_a_batch_with_an_invalid_sample_raises_with_every_reason_and_sends_nothing(redis_client: redis.Redis) -> None:
    images = np.zeros((5, 784), dtype=np.int64)
    images[1, 10] = 256
    labels = np.array([0, 1, 2, 10, 4])
    with pytest.raises(InvalidSamples) as caught:
        Publisher(redis_client, KEYS).publish(images, labels)
    assert caught.value.rejections == [
        Rejection(1, "pixels: values must be in 0..255"),
        Rejection(3, "label: must be one digit 0-9, got 10"),
    ]
    assert "sample 1: pixels: values must be in 0..255 (and 1 more)" in str(caught.value)
    assert isinstance(caught.value, InvalidSample)  # callers can catch the protocol's error
    assert redis_client.xlen(KEYS.samples) == 0


def test_skipping_invalid_samples_sends_the_others_and_returns_the_reasons(redis_client: redis.Redis) -> None:
    images = np.full((4, 784), 7, dtype=np.float64)
    images[2, 0] = np.nan
    publisher = Publisher(redis_client, KEYS)
    ids, rejections = publisher.publish_checked(images, [1, 2, 3, "x"], skip_invalid=True)
    assert rejections == [
        Rejection(2, "pixels: must be integers 0..255"),
        Rejection(3, "label: must be one digit 0-9, got 'x'"),
    ]
    assert len(ids) == 2
    assert [f[b"label"] for _, f in read_stream(redis_client)] == [b"1", b"2"]
    assert (publisher.sent, publisher.rejected) == (2, 2)


def test_publish_many_batches_an_iterable_and_counts_rejection_indices_from_its_start(
    redis_client: redis.Redis,
) -> None:
    def samples() -> Any:
        for i in range(25):
            yield (np.full(784, i, dtype=np.uint8), i % 10 if i != 17 else 11)

    publisher = Publisher(redis_client, KEYS, batch_size=10)
    ids, rejections = publisher.publish_many(samples())
    assert len(ids) == 24
    assert rejections == [Rejection(17, "label: must be one digit 0-9, got 11")]
    pixels = [f[b"pixels"][0] for _, f in read_stream(redis_client)]
    assert pixels == [i for i in range(25) if i != 17]


def test_publish_many_can_stop_at_the_first_invalid_batch(redis_client: redis.Redis) -> None:
    pairs = [(np.zeros(784, dtype=np.uint8), 1)] * 15 + [(np.zeros(783, dtype=np.uint8), 1)]
    with pytest.raises(InvalidSamples) as caught:
        Publisher(redis_client, KEYS, batch_size=10).publish_many(pairs, skip_invalid=False)
    assert caught.value.rejections == [Rejection(15, "pixels: expected 784 values (or 28x28), got shape [783]")]
    assert redis_client.xlen(KEYS.samples) == 10  # the first, valid batch was sent


def test_images_and_labels_of_different_lengths_are_a_programming_error(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        Publisher(redis_client, KEYS).publish(np.zeros((3, 784), dtype=np.uint8), [1, 2])
    assert redis_client.xlen(KEYS.samples) == 0


def test_progress_is_reported_after_every_batch(redis_client: redis.Redis) -> None:
    seen: list[PublishProgress] = []
    publisher = Publisher(redis_client, KEYS, batch_size=40, progress=seen.append)
    images = np.zeros((100, 784), dtype=np.int64)
    images[50, 0] = -1
    publisher.publish(images, np.zeros(100, dtype=np.int64), skip_invalid=True)
    assert [(p.sent, p.rejected) for p in seen] == [(40, 1), (80, 1), (99, 1)]
    assert all(p.elapsed >= 0 for p in seen)


def test_a_rate_limit_spreads_small_batches_evenly_and_carries_over_between_calls(redis_client: redis.Redis) -> None:
    seen: list[float] = []
    publisher = Publisher(redis_client, KEYS, batch_size=1000, rate=400, progress=lambda p: seen.append(p.elapsed))
    assert publisher.batch_size == 20  # 400/s in 20 batches a second
    images, labels = np.zeros((100, 784), dtype=np.uint8), np.zeros(100, dtype=np.int64)
    started = time.perf_counter()
    publisher.publish(images, labels)
    publisher.publish(images, labels)
    elapsed = time.perf_counter() - started
    # 200 samples at 400/s: the first batch goes at once, the other 180 cannot go faster than 0.45 s.
    assert elapsed >= 180 / 400
    assert len(seen) == 10
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))
    assert redis_client.xlen(KEYS.samples) == 200


def test_settings_that_make_no_sense_are_refused(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Publisher(redis_client, KEYS, batch_size=0)
    with pytest.raises(ValueError, match="rate"):
        Publisher(redis_client, KEYS, rate=0)


def test_an_unreachable_redis_raises_the_redis_error() -> None:
    dead = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        Publisher(dead, KEYS).publish(np.zeros((1, 784), dtype=np.uint8), [0])


# --- the vectorised checks agree with the protocol, sample by sample --------------------------



def edited_row(dtype: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[np.ndarray]:
    """A row of 784 valid pixels with a few values, perhaps invalid ones, written at random places."""

    def build(edits: list[tuple[int, Any]]) -> np.ndarray:
        row = np.full(784, 128, dtype=dtype)
        for position, value in edits:
            row[position] = value
        return row

    return st.lists(st.tuples(st.integers(0, 783), values), max_size=3).map(build)


pixel_rows = st.one_of(
    edited_row("int64", st.integers(-3, 258)),
    edited_row("float64", st.sampled_from([0.0, 1.0, 255.0, 0.5, float("nan"), float("inf"), 256.0, -1.0])),
    edited_row("uint8", st.integers(0, 255)),
)
label_values = st.one_of(
    st.integers(-2, 12), st.sampled_from(["0", "9", "10", "", "a", b"5", b"x", True, 3.0, None, np.int8(4)])
)


def protocol_verdict(pixels: Any, label: Any) -> str | None:
    try:
        encode_sample(pixels, label)
    except InvalidSample as exc:
        return str(exc)
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(pixel_rows, min_size=1, max_size=6), data=st.data())
def test_batch_validation_rejects_exactly_what_the_protocol_rejects_with_its_reasons(
    rows: list[np.ndarray], data: st.DataObject
) -> None:
    labels = data.draw(st.lists(label_values, min_size=len(rows), max_size=len(rows)))
    same_dtype = len({r.dtype for r in rows}) == 1
    images: Any = np.stack(rows) if same_dtype else rows
    batch = validate_batch(images, labels)
    expected = [(i, protocol_verdict(rows[i], labels[i])) for i in range(len(rows))]
    assert [(r.index, r.reason) for r in batch.rejections] == [(i, v) for i, v in expected if v is not None]
    valid = [i for i, v in expected if v is None]
    assert batch.indices.tolist() == valid
    for position, i in enumerate(valid):
        assert batch.images[position].tobytes() == encode_sample(rows[i], labels[i])[b"pixels"]
        assert batch.labels[position] == int(encode_sample(rows[i], labels[i])[b"label"])


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(-5, 15), min_size=1, max_size=50), dtype=st.sampled_from(["int8", "int64", "uint8"]))
def test_integer_label_arrays_are_judged_like_single_labels(labels: list[int], dtype: str) -> None:
    array = np.array([label % 256 if dtype == "uint8" else label for label in labels]).astype(dtype)
    images = np.zeros((len(labels), 784), dtype=np.uint8)
    batch = validate_batch(images, array)
    expected = [i for i, label in enumerate(array.tolist()) if protocol_verdict(images[i], label) is not None]
    assert [r.index for r in batch.rejections] == expected
