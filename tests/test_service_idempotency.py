"""``Idempotency-Key`` on POST /samples and /feedback: a retry gets the first answer and nothing is appended twice.

Against a real uvicorn and a real redis-server, which the last tests pause (SIGSTOP) so that the
client's first request times out after its samples were appended: the client's retry, with the
same key, is answered with the first stream ids, and the worker learns the samples once.
"""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from digitstream.clients.embedded_redis import RedisServer
from digitstream.clients.prediction import PredictionClient, ServiceUnreachable
from digitstream.connections import client_client
from digitstream.protocol import Keys, decode_entries
from digitstream.settings import load_settings
from digitstream.worker.loop import Worker
from tests.cluster_support import cluster, cluster_session, cluster_url  # noqa: F401
from tests.service_support import LiveServer, live, make_app, trained, write  # noqa: F401
from tests.worker_support import latest

KEYS = Keys.for_model()
RNG = np.random.default_rng(3)


def samples_body(n: int, seed: int = 0) -> dict[str, list[dict[str, object]]]:
    rng = np.random.default_rng(seed)
    return {"samples": [{"pixels": rng.integers(0, 256, 784).tolist(), "label": int(i % 10)} for i in range(n)]}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def stream_ids(client: redis.Redis) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(KEYS.samples)]


def test_a_repeated_key_gets_the_first_answer_and_appends_nothing(live: LiveServer, redis_client: redis.Redis) -> None:
    first = live.post("/samples", json=samples_body(3), headers=keyed("retry-me"))
    again = live.post("/samples", json=samples_body(3), headers=keyed("retry-me"))
    other = live.post("/samples", json=samples_body(3), headers=keyed("another"))
    assert first.status_code == again.status_code == other.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert stream_ids(redis_client) == first.json()["stream_ids"] + other.json()["stream_ids"]


def test_a_key_reused_for_another_request_is_refused(live: LiveServer, redis_client: redis.Redis) -> None:
    assert live.post("/samples", json=samples_body(2), headers=keyed("k-1")).status_code == 200
    refused = live.post("/samples", json=samples_body(2, seed=1), headers=keyed("k-1"))
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("Idempotency-Key (header): 'k-1' was already used for a different")
    assert redis_client.xlen(KEYS.samples) == 2


@pytest.mark.parametrize("key", ["", "a" * 129, "has space", "é", "semi;colon"])
def test_a_malformed_key_is_a_422_naming_the_header(live: LiveServer, redis_client: redis.Redis, key: str) -> None:
    response = live.post("/samples", json=samples_body(1), headers={"Idempotency-Key": key.encode("utf-8")})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("Idempotency-Key (header):")
    assert redis_client.xlen(KEYS.samples) == 0


def test_feedback_with_a_repeated_key_publishes_once(live: LiveServer, redis_client: redis.Redis) -> None:
    prediction = live.post("/predict", json={"pixels": RNG.integers(0, 256, 784).tolist()}).json()
    body = {"prediction_id": prediction["prediction_id"], "label": 4}
    first = live.post("/feedback", json=body, headers=keyed("fb-1"))
    again = live.post("/feedback", json=body, headers=keyed("fb-1"))
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert stream_ids(redis_client) == [first.json()["stream_id"]]
    changed = live.post("/feedback", json={**body, "label": 5}, headers=keyed("fb-1"))
    assert changed.status_code == 422 and redis_client.xlen(KEYS.samples) == 1


def test_answers_are_bounded_in_bytes_and_expire(
    make_app: Callable[..., LiveServer], redis_client: redis.Redis
) -> None:
    week = 7 * 86400  # one period for the whole test (a new period would bring fresh room)
    server = make_app(idempotency_max_bytes=64 * 1024, idempotency_ttl=week)
    body = {"samples": [{"pixels": [0] * 784, "label": 1}] * 100}  # an answer holds ~1.6 KB of stream ids
    codes = [server.post("/samples", json=body, headers=keyed(f"k{i}")).status_code for i in range(60)]
    assert 200 in codes and 503 in codes and codes[codes.index(503) :] == [503] * (60 - codes.index(503)), codes
    full = server.post("/samples", json=body, headers=keyed("one-more"))
    assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1
    assert "idempotency_max_bytes" in full.json()["detail"]
    assert server.post("/samples", json=samples_body(1)).status_code == 200, "unkeyed writes go on"
    periods = redis_client.keys(KEYS.idempotency(0).removesuffix("0") + "*")
    assert 1 <= len(periods) <= 2, periods  # two if a period ended during the test
    for period in periods:
        assert int(redis_client.hget(period, "#bytes")) <= 64 * 1024  # type: ignore[arg-type]
        assert 0 < redis_client.pttl(period) <= 3 * week * 1000
    accepted = codes.count(200)
    assert redis_client.xlen(KEYS.samples) == 100 * accepted + 1


def test_the_client_sends_a_key_per_call_and_the_same_one_on_its_retries(live: LiveServer) -> None:
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        sent.append(request.headers.get("Idempotency-Key", ""))

    with PredictionClient(live.url) as client:
        client._http.event_hooks["request"] = [record]
        client.add_samples([(np.zeros(784, np.uint8), 1)])
        client.add_samples([(np.zeros(784, np.uint8), 1)], idempotency_key="mine")
    assert len(sent) == 2 and sent[0] != "mine" and len(sent[0]) == 32 and sent[1] == "mine"


# -- Redis paused while the first answer is on its way ------------------------------------------
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server
        os.kill(server.process.pid, signal.SIGCONT)  # type: ignore[union-attr]  # never leave it stopped


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting the requests it sends (first tries and retries)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


def paused(server: RedisServer, seconds: float) -> threading.Timer:
    """SIGSTOP Redis now, SIGCONT it in ``seconds``."""
    pid = server.process.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    resume.start()
    return resume


@pytest.mark.slow
def test_a_request_whose_answer_timed_out_is_retried_and_learned_once(own_redis: RedisServer) -> None:
    settings = load_settings(redis_url=own_redis.url, service_redis_timeout=10)
    server = LiveServer(settings).start()
    client = redis.Redis.from_url(own_redis.url)
    body = [(np.random.default_rng(9).integers(0, 256, 784), i % 10) for i in range(20)]
    transport = CountingTransport()
    try:
        with PredictionClient(server.url, timeout=0.5, retries=5, transport=transport) as api:
            resume = paused(own_redis, 1.5)  # longer than the client's timeout, shorter than the service's
            receipt = api.add_samples(body)
            resume.join()
    finally:
        server.stop()
    assert transport.requests >= 2, "the first answer timed out and the client retried"
    assert [i.decode() for i, _ in client.xrange(settings.keys.samples)] == receipt.stream_ids
    assert receipt.count == 20
    Worker(settings, client).run(burst=True)
    assert latest(client, settings.keys).samples_learned == 20


@pytest.mark.slow
def test_without_a_key_the_same_retry_appends_twice(own_redis: RedisServer) -> None:
    """Why the header exists: the plain retry of a timed-out request duplicates its samples."""
    settings = load_settings(redis_url=own_redis.url, service_redis_timeout=10)
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=0.5) as http:
            resume = paused(own_redis, 1.5)
            with pytest.raises(httpx.TimeoutException):
                http.post("/samples", json=samples_body(5))
            resume.join()
            assert http.post("/samples", json=samples_body(5)).status_code == 200
    finally:
        server.stop()
    assert redis.Redis.from_url(own_redis.url).xlen(settings.keys.samples) == 10


def test_the_clients_feedback_with_one_key_publishes_once(live: LiveServer, redis_client: redis.Redis) -> None:
    with PredictionClient(live.url) as api:
        prediction = api.predict(RNG.integers(0, 256, 784))
        key = uuid.uuid4().hex
        first = api.feedback(prediction.prediction_id, 3, idempotency_key=key)
        again = api.feedback(prediction.prediction_id, 3, idempotency_key=key)
    assert first == again and redis_client.xlen(KEYS.samples) == 1
    decoded = decode_entries(redis_client.xrange(KEYS.samples))
    assert decoded.labels.tolist() == [3]


def test_an_unreachable_service_is_still_reported_after_the_retries() -> None:
    with PredictionClient("http://127.0.0.1:9", timeout=0.2, retries=1) as api, pytest.raises(ServiceUnreachable):
        api.add_samples([(np.zeros(784, np.uint8), 1)])



@pytest.mark.cluster
def test_keyed_writes_work_on_a_redis_cluster(cluster_url: str) -> None:
    """The script's keys (the stream and three periods) share the stream's slot, whatever the layout."""
    settings = load_settings(redis_url=cluster_url, model_name=f"idem-{uuid.uuid4().hex[:8]}")
    server = LiveServer(settings).start()
    try:
        first = server.post("/samples", json=samples_body(2), headers=keyed("on-a-cluster"))
        again = server.post("/samples", json=samples_body(2), headers=keyed("on-a-cluster"))
    finally:
        server.stop()
    assert first.status_code == again.status_code == 200, first.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    client = client_client(settings)
    try:
        assert client.xlen(settings.keys.samples) == 2
    finally:
        client.close()
