"""Versions as rollback points that last: the pin is never collected, and history is kept spaced in time.

The snapshot script keeps the newest ``keep_versions``, the pinned version, and the oldest version of
each minute of the last ``keep_minutely`` minutes and of each hour of the last ``keep_hourly`` hours
(by Redis's clock when each was written, ``Keys.snapshot_times``): at most
``keep_versions + keep_minutely + keep_hourly + 3`` versions, whatever the snapshot rate.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import N_PIXELS, Keys
from digitstream.snapshot import snapshot_of
from digitstream.store import list_versions, write_snapshot
from tests.service_support import make_app  # noqa: F401 - fixture
from tests.worker_support import publish

KEYS = Keys.for_model("digitstream")
MINUTE, HOUR = 60_000, 3_600_000


@pytest.fixture(scope="module")
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:2000], labels[:2000].astype(np.int64)


def write(client: redis.Redis, *, keep: int, minutes: int = 0, hours: int = 0) -> int:
    client.set(KEYS.lease, "w")
    learner = DeltaRuleLearner(HyperParameters.for_rule("softmax"))
    snapshot = snapshot_of(learner, model="digitstream", samples_learned=0, last_id="0-0")
    return write_snapshot(
        client, KEYS, snapshot, lease_token="w", keep=keep, keep_minutely=minutes, keep_hourly=hours
    )  # fmt: skip


def test_a_pinned_version_outlives_any_number_of_newer_ones(redis_client: redis.Redis) -> None:
    for _ in range(3):
        write(redis_client, keep=2)
    redis_client.set(KEYS.pinned, 2)

    for _ in range(50):
        write(redis_client, keep=2)

    assert list_versions(redis_client, KEYS) == [2, 52, 53]
    assert redis_client.exists(KEYS.snapshot(2)) and not redis_client.exists(KEYS.snapshot(1))
    redis_client.delete(KEYS.pinned)  # unpinned: an ordinary old version again
    write(redis_client, keep=2)
    assert list_versions(redis_client, KEYS) == [53, 54]


def test_history_is_kept_one_version_per_minute_for_an_hour_and_one_per_hour_for_a_day(
    redis_client: redis.Redis,
) -> None:
    """Three days of snapshots every 20 s (rewritten back in time), then one more write collects them."""
    count = 3 * 24 * 180
    pipe = redis_client.pipeline(transaction=False)
    for version in range(1, count + 1):
        pipe.hset(KEYS.snapshot(version), "version", version)
        pipe.zadd(KEYS.snapshot_versions, {str(version): version})
    pipe.set(KEYS.snapshot_latest, count)
    pipe.execute()
    seconds, micros = redis_client.time()  # type: ignore[misc]
    now = seconds * 1000 + micros // 1000
    written = {version: now - (count - version + 1) * 20_000 for version in range(1, count + 1)}
    redis_client.zadd(KEYS.snapshot_times, {str(v): t for v, t in written.items()})

    newest = write(redis_client, keep=5, minutes=60, hours=24)

    kept = list_versions(redis_client, KEYS)
    older = [v for v in kept if v <= newest - 5]
    assert kept[-5:] == list(range(newest - 4, newest + 1)), "the newest five"
    assert len(kept) <= 5 + 60 + 24 + 3
    assert all(now - written[v] < 24 * HOUR + MINUTE for v in older), "nothing older than a day"
    for span, horizon in ((MINUTE, 60 * MINUTE), (HOUR, 24 * HOUR)):
        # Every minute (hour) of the horizon that had a version keeps its oldest one in the horizon.
        inside = {v: t for v, t in written.items() if now - t < horizon and v <= newest - 5}
        for bucket in {t // span for t in inside.values()}:
            members = [v for v, t in inside.items() if t // span == bucket]
            assert min(members) in kept, f"the oldest version of {span // MINUTE} minute(s) #{bucket}"
    assert redis_client.zcard(KEYS.snapshot_times) == len(kept)
    assert redis_client.exists(*(KEYS.snapshot(v) for v in range(1, count + 1) if v not in kept)) == 0


def test_a_replica_started_after_a_pin_and_many_snapshots_serves_the_pin(
    make_worker,
    make_app,  # noqa: F811 - fixture
    redis_client: redis.Redis,
    digits,
) -> None:
    images, labels = digits
    settings = {"batch_size": 100, "snapshot_every": 100, "keep_versions": 3, "keep_minutely": 0, "keep_hourly": 0}
    publish(redis_client, KEYS.samples, images[:300], labels[:300])
    make_worker(**settings).run(burst=True)
    first = make_app()
    assert first.post("/model/pin", json={"version": 2}).status_code == 200

    publish(redis_client, KEYS.samples, images[300:2000], labels[300:2000])
    make_worker(**settings).run(burst=True)  # 17 more snapshots, far beyond keep_versions
    assert 2 in list_versions(redis_client, KEYS) and len(list_versions(redis_client, KEYS)) == 4

    late = make_app()
    served = late.get("/model").json()
    assert (served["version"], served["pinned"], served["samples_learned"]) == (2, True, 200)
    assert first.get("/model").json()["version"] == 2
    first.post("/model/unpin")
    deadline = time.monotonic() + 5
    while late.get("/model").json()["version"] == 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert late.get("/model").json()["pinned"] is False
