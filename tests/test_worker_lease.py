"""One active learner per model: the lease, the hot standby's takeover, and a zombie that cannot write."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from digitstream.protocol import N_PIXELS
from digitstream.settings import load_settings
from digitstream.store import list_versions, read_snapshot
from digitstream.worker.lease import Claim, Lease
from tests.worker_support import (
    WorkerProcess,
    latest,
    publish,
    reference,
    relative_difference,
    running,
    wait_for,
)


@pytest.fixture(scope="module")
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:4000], labels[:4000].astype(np.int64)


def test_the_lease_is_exclusive_renewable_releasable_and_expires(redis_client: redis.Redis) -> None:
    first = Lease(redis_client, "m:worker:lease", "first", ttl=0.3)
    second = Lease(redis_client, "m:worker:lease", "second", ttl=0.3)

    assert first.claim() == Claim.ACQUIRED
    assert second.claim() == Claim.HELD_BY_OTHER
    assert first.claim() == Claim.RENEWED and 0 < redis_client.pttl("m:worker:lease") <= 300
    assert not second.release(), "only the holder can release"
    assert first.holder() == "first"
    assert first.release() and first.holder() is None
    assert second.claim() == Claim.ACQUIRED
    time.sleep(0.4)  # the holder stops renewing: its lease expires
    assert first.claim() == Claim.ACQUIRED and first.holder() == "first"


def test_a_second_worker_waits_as_standby_and_takes_over_within_seconds_when_the_first_dies(
    redis_url: str, redis_client: redis.Redis, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, labels = digits
    settings = load_settings(redis_url=redis_url, model_name="ha")
    keys = settings.keys
    args = ("--model", "ha", "--lease-ttl", "1.5", "--snapshot-interval", "0.2", "--batch-size", "100")
    env = {"DIGITSTREAM_REDIS_URL": redis_url}
    active = WorkerProcess(tmp_path / "active.log", *args, env=env)
    wait_for(lambda: redis_client.get(keys.lease), timeout=30, what=f"the first worker's lease\n{active.log()}")
    standby = WorkerProcess(tmp_path / "standby.log", *args, env=env)
    wait_for(lambda: "standby" in standby.log(), timeout=30, what=f"the standby\n{standby.log()}")
    assert f":{active.pid}:".encode() in redis_client.get(keys.lease)  # type: ignore[operator]

    publish(redis_client, keys.samples, images[:2000], labels[:2000])
    wait_for(
        lambda: (s := read_snapshot(redis_client, keys)) and s.samples_learned == 2000,
        timeout=30,
        what=f"the active worker to learn\n{active.log()}",
    )
    status = json.loads(redis_client.get(keys.worker_status))  # type: ignore[arg-type]
    assert status["state"] == "active" and f":{active.pid}:" in status["worker_id"]

    active.kill()
    killed_at = time.monotonic()
    publish(redis_client, keys.samples, images[2000:4000], labels[2000:4000])  # while nobody learns
    wait_for(
        lambda: (holder := redis_client.get(keys.lease)) and f":{standby.pid}:".encode() in holder,
        timeout=10,
        what=f"the standby to take the lease\n{standby.log()}",
    )
    takeover = time.monotonic() - killed_at
    wait_for(
        lambda: (s := read_snapshot(redis_client, keys)) and s.samples_learned == 4000,
        timeout=30,
        what=f"the standby to learn the rest\n{standby.log()}",
    )
    assert standby.terminate() == 0, standby.log()

    assert takeover < 1.5 + 2.0, f"took over after {takeover:.1f}s (lease TTL 1.5s)"
    final = latest(redis_client, keys)
    expected, _ = reference(settings, images, labels)
    assert final.samples_learned == 4000 and relative_difference(final.learner().weights, expected.weights) == 0
    assert redis_client.get(keys.lease) is None, "a stopped worker releases its lease"


def test_a_worker_that_lost_its_lease_never_writes_and_resumes_from_the_latest_snapshot(
    make_worker, redis_client, digits
) -> None:
    images, labels = digits
    worker = make_worker(lease_ttl=0.6, snapshot_interval=0.1, block_ms=50)
    keys = worker.keys
    publish(redis_client, keys.samples, images[:1000], labels[:1000])
    with running(worker):
        wait_for(lambda: (s := read_snapshot(redis_client, keys)) and s.samples_learned == 1000, timeout=10)
        versions = list_versions(redis_client, keys)
        # Another worker takes the lease (as if this one had been paused past its expiry).
        redis_client.set(keys.lease, "someone-else", px=60_000)
        wait_for(lambda: worker.state == "standby", timeout=5, what="the worker to step down")
        publish(redis_client, keys.samples, images[1000:2000], labels[1000:2000])
        time.sleep(0.5)
        assert list_versions(redis_client, keys) == versions, "no write without the lease"
        # The other worker disappears: this one takes over again from the latest snapshot.
        redis_client.delete(keys.lease)
        wait_for(lambda: (s := read_snapshot(redis_client, keys)) and s.samples_learned == 2000, timeout=10)
    final = latest(redis_client, keys)
    expected, _ = reference(worker.settings, images[:2000], labels[:2000])
    assert np.array_equal(final.learner().weights, expected.weights)
