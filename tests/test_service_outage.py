"""Redis outages: predictions keep being served from memory, writes answer 503, everything recovers by itself."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from digitstream.clients.embedded_redis import RedisServer
from digitstream.learner import DeltaRuleLearner
from digitstream.protocol import N_PIXELS
from digitstream.settings import load_settings
from tests.service_support import LiveServer, snapshot_writer, trained  # noqa: F401


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this test may stop and restart (same port, same files)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def server_on(own_redis: RedisServer) -> Iterator[LiveServer]:
    server = LiveServer(load_settings(redis_url=own_redis.url, poll_interval=0.2)).start()
    yield server
    server.stop()


def wait_for(condition: object, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


def test_predictions_survive_a_redis_outage_and_writes_recover_with_it(
    own_redis: RedisServer, server_on: LiveServer, trained: DeltaRuleLearner
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    write = snapshot_writer(client, server_on.settings)
    write(trained)
    server_on.wait_for_version(1)
    image = np.zeros(N_PIXELS, dtype=np.uint8)
    before = server_on.predict(image)
    client.close()

    own_redis.stop()
    wait_for(lambda: server_on.get("/readyz").json()["status"] == "degraded")
    ready = server_on.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["redis"] == "unreachable" and ready.json()["model_version"] == 1
    during = server_on.predict(image)  # served from memory
    assert during["probabilities"] == before["probabilities"] and during["model_version"] == 1
    unused = server_on.predict(image)  # no feedback will take this one: it must reach Redis later
    batch = server_on.post("/predict/batch", json={"images": [image.tolist()]})
    assert batch.status_code == 200
    assert server_on.get("/model").status_code == 200
    for path, payload in [
        ("/feedback", {"prediction_id": during["prediction_id"], "label": 3}),
        ("/samples", {"samples": [{"pixels": image.tolist(), "label": 3}]}),
        ("/model/pin", {"version": 1}),
    ]:
        refused = server_on.post(path, json=payload)
        assert refused.status_code == 503, path
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["detail"].startswith("Redis is unreachable")
    assert "digitstream_redis_up 0.0" in server_on.get("/metrics").text

    own_redis.start()
    wait_for(lambda: server_on.get("/readyz").json()["status"] == "ready")  # by itself, no restart
    # The predictions made during the outage were kept: feedback works again, and the others are written.
    # A pooled connection from before the restart may fail the first write after it: 503 with Retry-After,
    # which a client retries (nothing was taken: the prediction is given back), as here.
    for _ in range(3):
        receipt = server_on.post("/feedback", json={"prediction_id": during["prediction_id"], "label": 3})
        if receipt.status_code != 503:
            break
        time.sleep(float(receipt.headers["retry-after"]))
    assert receipt.status_code == 200, receipt.text
    client = redis.Redis.from_url(own_redis.url)
    try:
        wait_for(lambda: client.exists(f"{{digitstream}}:prediction:{unused['prediction_id']}"))
        assert client.exists(f"{{digitstream}}:prediction:{during['prediction_id']}:used")  # taken: one label each
        assert client.xlen("{digitstream}:samples") == 1
        snapshot_writer(client, server_on.settings)(trained)  # and new snapshots are followed again
        server_on.wait_for_version(2)
    finally:
        client.close()


def test_the_service_starts_without_redis_and_becomes_ready_when_it_appears(
    own_redis: RedisServer, trained: DeltaRuleLearner
) -> None:
    own_redis.stop()
    server = LiveServer(load_settings(redis_url=own_redis.url, poll_interval=0.2)).start()
    try:
        unavailable = server.get("/readyz")
        assert unavailable.status_code == 503
        assert unavailable.json()["status"] == "unavailable" and unavailable.json()["redis"] == "unreachable"
        assert server.post("/predict", json={"pixels": [0] * N_PIXELS}).status_code == 503
        own_redis.start()
        client = redis.Redis.from_url(own_redis.url)
        snapshot_writer(client, server.settings)(trained)
        client.close()
        wait_for(lambda: server.get("/readyz").status_code == 200)
        assert server.get("/readyz").json()["status"] == "ready"
    finally:
        server.stop()


def test_a_redis_that_stops_answering_does_not_slow_predictions(
    own_redis: RedisServer, server_on: LiveServer, trained: DeltaRuleLearner
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    snapshot_writer(client, server_on.settings)(trained)
    client.close()
    server_on.wait_for_version(1)
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)  # hung, not refused: only timeouts can tell
    try:
        image = np.zeros(N_PIXELS, dtype=np.uint8)
        prediction_id = server_on.predict(image)["prediction_id"]
        for _ in range(20):
            started = time.monotonic()
            assert server_on.predict(image)["model_version"] == 1
            assert time.monotonic() - started < 1.0  # a Redis round trip would wait out the 2 s socket timeout
        started = time.monotonic()
        other_id = "f" * 32  # not in this replica's memory: only Redis could tell
        refused = server_on.post("/feedback", json={"prediction_id": other_id, "label": 1})
        assert refused.status_code == 503
        assert time.monotonic() - started < 15
        wait_for(lambda: server_on.get("/readyz").json()["status"] == "degraded", timeout=15)
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    wait_for(lambda: server_on.get("/readyz").json()["status"] == "ready")
    assert server_on.post("/feedback", json={"prediction_id": prediction_id, "label": 1}).status_code == 200
