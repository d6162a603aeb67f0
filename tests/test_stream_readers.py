"""Two models on one stream: retention never trims what another model has still to learn.

Every model reading a stream records its position in ``{stream}:readers`` (``Keys.readers``): when
its worker loads (before reading anything) and with each snapshot. Trims stop at the lowest
position. A model that stops for good holds the stream until its field is deleted.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis

from digitstream.protocol import N_PIXELS
from digitstream.worker.loop import Worker
from tests.worker_support import latest, publish

STREAM = "shared:samples"


@pytest.fixture(scope="module")
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:3000], labels[:3000].astype(np.int64)


def model(make_worker, name: str) -> Worker:  # type: ignore[no-untyped-def]
    """A worker of model ``name`` on the shared stream, keeping no learned entry (retention 0)."""
    return make_worker(  # type: ignore[no-any-return]
        model_name=name, stream_key=STREAM, batch_size=100, snapshot_every=100, retention_max_len=0
    )


def test_the_fast_model_never_trims_what_the_stopped_one_has_not_learned(
    make_worker, redis_client: redis.Redis, digits
) -> None:
    images, labels = digits
    for name in ("fast", "slow"):
        model(make_worker, name).run(burst=True)  # both start on an empty stream
    publish(redis_client, STREAM, images[:300], labels[:300])
    model(make_worker, "fast").run(burst=True)
    slow = model(make_worker, "slow")
    slow.run(burst=True)  # learns 300, then stops
    unlearned = publish(redis_client, STREAM, images[300:3000], labels[300:3000])

    fast = model(make_worker, "fast")
    fast.run(burst=True)

    assert latest(redis_client, fast.keys).samples_learned == 3000
    kept = [entry_id for entry_id, _ in redis_client.xrange(STREAM)]
    assert kept == unlearned, "exactly what the slow model has still to learn is left"
    slow = model(make_worker, "slow")
    slow.run(burst=True)
    assert latest(redis_client, slow.keys).samples_learned == 3000, "the slow model learns every sample"
    assert redis_client.xlen(STREAM) == 0, "now both have learned everything: all trimmed"


def test_a_model_that_has_only_started_holds_the_whole_stream(make_worker, redis_client: redis.Redis, digits) -> None:
    """A new model registers at 0-0 when its worker loads, before its first read or snapshot."""
    images, labels = digits
    publish(redis_client, STREAM, images[:500], labels[:500])
    late = model(make_worker, "late")
    late._load()  # what the worker does once it holds the lease, before reading
    assert redis_client.hget(late.keys.readers, "late") == b"0-0"

    model(make_worker, "early").run(burst=True)

    assert redis_client.xlen(STREAM) == 500
    late.run(burst=True)
    assert latest(redis_client, late.keys).samples_learned == 500


def test_deleting_a_stopped_model_s_position_lets_the_others_trim(
    make_worker, redis_client: redis.Redis, digits
) -> None:
    images, labels = digits
    publish(redis_client, STREAM, images[:200], labels[:200])
    model(make_worker, "gone").run(burst=True)
    publish(redis_client, STREAM, images[200:400], labels[200:400])
    fast = model(make_worker, "fast")
    fast.run(burst=True)
    assert redis_client.xlen(STREAM) == 200

    redis_client.hdel(fast.keys.readers, "gone")  # the documented way to forget a model that stopped for good
    publish(redis_client, STREAM, images[400:500], labels[400:500])
    fast = model(make_worker, "fast")
    fast.run(burst=True)

    assert redis_client.xlen(STREAM) == 0
    assert redis_client.hgetall(fast.keys.readers).keys() == {b"fast"}
