"""Hot reload: new snapshots served within a second (pub/sub, polling fallback), atomic swaps, pin/unpin."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import redis

from digitstream.learner import DeltaRuleLearner
from digitstream.protocol import N_PIXELS, Keys
from digitstream.snapshot import encode_snapshot, snapshot_of
from tests.service_support import LiveServer, live, make_app, train, trained, write  # noqa: F401


def test_a_new_snapshot_is_served_on_its_notification_without_waiting_for_a_poll(
    make_app: Callable[..., LiveServer], write: Callable[..., int], mnist_train: tuple[np.ndarray, np.ndarray]
) -> None:
    """The freshness numbers (median well under 1 s) are measured by benchmarks/service.py."""
    server = make_app(poll_interval=60.0)  # no polling during the test: only pub/sub can bring the news
    first = train(*mnist_train, 500)
    write(first)
    server.wait_for_version(1, timeout=10.0)
    second = DeltaRuleLearner.from_state(first.state())
    second.learn_many(mnist_train[0][500:1000], mnist_train[1][500:1000])
    write(second)
    server.wait_for_version(2, timeout=10.0)
    assert server.get("/model").json()["samples_learned"] == 1000


def test_polling_finds_a_snapshot_whose_notification_was_lost(
    make_app: Callable[..., LiveServer], redis_client: redis.Redis, trained: DeltaRuleLearner
) -> None:
    server = make_app(poll_interval=0.2)
    # Written by hand without PUBLISH, as if the subscriber had been reconnecting at that moment.
    snapshot = snapshot_of(trained, model="digitstream", samples_learned=trained.n_samples, last_id="5-0")
    fields = encode_snapshot(snapshot)
    fields[b"version"] = b"7"
    redis_client.hset("{digitstream}:snapshot:7", mapping=fields)  # type: ignore[arg-type]
    redis_client.zadd("{digitstream}:snapshot:versions", {"7": 7})
    redis_client.set("{digitstream}:snapshot:latest", 7)
    server.wait_for_version(7, timeout=10.0)  # no notification: only the poll can find it


def test_the_swap_is_atomic_under_concurrent_requests(
    make_app: Callable[..., LiveServer], write: Callable[..., int], mnist_train: tuple[np.ndarray, np.ndarray],
    mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    """Every answer's probabilities are exactly those of the version (and sample count) it names."""
    images, labels = mnist_train
    probe = mnist_test[0][:1]
    learner = train(images, labels, 100)
    expected = {}
    expected[write(learner)] = (learner.n_samples, learner.predict_proba_many(probe)[0])
    server = make_app()
    server.wait_for_version(1)
    answers: list[dict[str, object]] = []
    stop = threading.Event()

    def hammer() -> None:
        with server.http.__class__(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                answers.append(http.post("/predict", json={"pixels": probe[0].tolist()}).json())

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for step in range(30):
        learner.learn_many(images[100 + step * 50 : 150 + step * 50], labels[100 + step * 50 : 150 + step * 50])
        expected[write(learner)] = (learner.n_samples, learner.predict_proba_many(probe)[0])
        time.sleep(0.03)
    server.wait_for_version(31)
    time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join()
    assert len(answers) > 100
    seen = set()
    for answer in answers:
        samples, proba = expected[answer["model_version"]]  # type: ignore[index]
        assert answer["samples_learned"] == samples
        np.testing.assert_allclose(answer["probabilities"], proba, rtol=1e-12)  # type: ignore[arg-type]
        seen.add(answer["model_version"])
    assert len(seen) >= 5, f"too few versions observed during the swaps: {sorted(seen)}"


def test_pin_serves_a_kept_version_until_unpinned(
    live: LiveServer, write: Callable[..., int], trained: DeltaRuleLearner, mnist_train: tuple[np.ndarray, np.ndarray]
) -> None:
    newer = DeltaRuleLearner.from_state(trained.state())
    newer.learn_many(mnist_train[0][3000:4000], mnist_train[1][3000:4000])
    write(newer)
    live.wait_for_version(2)
    pinned = live.post("/model/pin", json={"version": 1})
    assert pinned.status_code == 200
    assert (pinned.json()["version"], pinned.json()["pinned"]) == (1, True)
    write(newer)  # version 3 arrives while pinned
    time.sleep(1.0)
    answer = live.predict(np.zeros(N_PIXELS, dtype=np.uint8))
    assert (answer["model_version"], answer["samples_learned"]) == (1, trained.n_samples)
    versions = live.get("/model/versions").json()
    assert [v["version"] for v in versions["versions"]] == [1, 2, 3]
    assert (versions["latest"], versions["served"], versions["pinned"]) == (3, 1, 1)
    assert live.get("/metrics").text.count("digitstream_model_pinned 1.0") == 1
    unpinned = live.post("/model/unpin")
    assert unpinned.status_code == 200
    assert (unpinned.json()["version"], unpinned.json()["pinned"]) == (3, False)
    assert live.get("/model/versions").json()["pinned"] is None


def test_a_pin_reaches_every_replica(
    live: LiveServer, make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    replica = make_app()
    write(trained)
    live.wait_for_version(2)
    replica.wait_for_version(2)
    assert live.post("/model/pin", json={"version": 1}).status_code == 200
    replica.wait_for_version(1, timeout=2.0)  # at its next poll (poll_interval 0.5 s)
    assert replica.get("/model").json()["pinned"] is True
    assert replica.post("/model/unpin").status_code == 200
    live.wait_for_version(2, timeout=2.0)


def test_an_unreadable_snapshot_is_skipped_and_the_previous_one_kept(
    live: LiveServer, redis_client: redis.Redis, write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    redis_client.hset("{digitstream}:snapshot:2", mapping={"meta": b"{not json", "version": b"2"})
    redis_client.zadd("{digitstream}:snapshot:versions", {"2": 2})
    redis_client.set("{digitstream}:snapshot:latest", 2)
    redis_client.publish("{digitstream}:snapshot:events", '{"version":2}')
    time.sleep(1.0)
    assert live.get("/model").json()["version"] == 1
    assert live.predict(np.zeros(N_PIXELS, dtype=np.uint8))["model_version"] == 1
    write(trained)  # the next good snapshot (version 3) is served again
    live.wait_for_version(3)


@pytest.mark.parametrize(
    "breach",
    [{"samples_learned": "lots"}, {"created_at": "yesterday"}, {"metrics": {"confusion_matrix": [["x"]]}},
     {"faults": [{"kind": "redis"}]}, {"metrics": []}],
    ids=["samples", "created_at", "confusion", "fault", "metrics"],
)  # fmt: skip
def test_a_snapshot_whose_metadata_breaks_the_contract_is_not_served_nor_listed(
    live: LiveServer, write: Callable[..., int], trained: DeltaRuleLearner, breach: dict[str, object],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.ERROR, logger="digitstream.service")
    write(trained, **breach)  # version 2: good arrays, bad metadata
    time.sleep(1.0)
    assert live.get("/model").json()["version"] == 1, "the previous version is kept"
    for _ in range(3):
        assert [v["version"] for v in live.get("/model/versions").json()["versions"]] == [1]
    assert any("snapshot 2" in r.getMessage() for r in caplog.records), "and it says why"
    assert sum("unreadable metadata" in r.getMessage() for r in caplog.records) == 1, "once, not per request"
    write(trained)
    live.wait_for_version(3)


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"worker_id": "w", "throughput": NaN}', b"[1, 2]", b'{"state": "dancing"}',
     json.dumps({"worker_id": "w", "state": "active", "model": "m", "samples_learned": -1.5, "last_id": "1-0",
                 "updated_at": 1.0}).encode()],
    ids=["not-json", "nan", "array", "foreign", "wrong-type"],
)  # fmt: skip
def test_a_garbled_worker_status_counts_as_absent_and_is_logged_once(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    redis_client: redis.Redis, raw: bytes, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="digitstream.service")
    write(trained)
    redis_client.set(Keys.for_model().worker_status, raw)
    server = make_app(poll_interval=0.1)
    server.wait_for_version(1)
    time.sleep(0.5)  # several polls
    body = server.get("/model").json()
    assert body["worker"] is None and body["lag"] == 0, "the snapshot's lag stands in"
    assert "digitstream_worker_up 0.0" in server.get("/metrics").text
    mine = server.thread.name  # this server's event loop runs in its uvicorn thread: not another test's server
    logged = [r for r in caplog.records if "ignoring the worker status" in r.getMessage() and r.threadName == mine]
    assert len(logged) == 1, "once, not at every poll"
