"""The service with the real worker: feedback flows into the stream and is learned; new samples reach /predict."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis

from digitstream.connections import worker_client
from digitstream.learner import DeltaRuleLearner
from digitstream.protocol import encode_sample
from digitstream.settings import Settings
from digitstream.worker.loop import Worker
from tests.service_support import LiveServer, make_app  # noqa: F401


@pytest.fixture
def run_worker(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., None]]:
    """``run_worker(burst=True)`` learns until the stream is drained; ``burst=False`` starts it in a thread."""
    started: list[tuple[Worker, threading.Thread, redis.Redis]] = []

    def run(burst: bool = True) -> None:
        settings = make_settings()
        client = worker_client(settings)
        worker = Worker(settings, client)
        if burst:
            worker.run(burst=True)
            client.close()
            return
        thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
        thread.start()
        started.append((worker, thread, client))

    yield run
    for worker, thread, client in started:
        worker.stop()
        thread.join(30)
        client.close()


def publish(client: redis.Redis, images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for image, label in zip(images, labels, strict=True):
        pipe.xadd("{digitstream}:samples", encode_sample(image, int(label)))  # type: ignore[arg-type]
    return list(pipe.execute())


def test_feedback_is_learned_by_the_worker_and_served(
    make_app: Callable[..., LiveServer], run_worker: Callable[..., None], redis_client: redis.Redis,
    make_settings: Callable[..., Settings], mnist_train: tuple[np.ndarray, np.ndarray],
    mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    images, labels = mnist_train
    publish(redis_client, images[:2000], labels[:2000])
    run_worker(burst=True)
    server = make_app()
    server.wait_for_version(1)
    assert server.get("/model").json()["samples_learned"] == 2000

    probe, true_label = mnist_test[0][0], int(mnist_test[1][0])
    answer = server.predict(probe)
    receipt = server.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": true_label})
    assert receipt.status_code == 200
    run_worker(burst=True)
    server.wait_for_version(2)

    # The served model is exactly the one learned from the 2,000 samples, then the feedback sample.
    reference = DeltaRuleLearner(make_settings().hyper_parameters())
    reference.learn_many(images[:2000], labels[:2000])
    reference.learn_many(probe[None], [true_label])
    after = server.predict(probe)
    assert after["samples_learned"] == 2001 and after["model_version"] == 2
    np.testing.assert_allclose(after["probabilities"], reference.predict_proba_many(probe[None])[0], rtol=1e-12)
    model = server.get("/model").json()
    assert model["last_id"] == receipt.json()["stream_id"]
    assert model["metrics"]["prequential_accuracy"] is not None


def test_samples_posted_to_the_service_reach_predictions_through_a_running_worker(
    make_app: Callable[..., LiveServer], run_worker: Callable[..., None], mnist_train: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_train
    server = make_app()
    run_worker(burst=False)
    samples = [{"pixels": images[i].tolist(), "label": int(labels[i])} for i in range(500)]
    receipt = server.post("/samples", json={"samples": samples})
    assert receipt.status_code == 200
    last_id = receipt.json()["stream_ids"][-1]
    deadline = time.monotonic() + 10
    while True:  # XADD -> learned -> snapshot -> served: the freshness the benchmark measures
        response = server.get("/model")
        if response.status_code == 200 and response.json()["last_id"] == last_id:
            break
        assert time.monotonic() < deadline, f"the samples never reached the served model: {response.text[:300]}"
        time.sleep(0.02)
    body = response.json()
    assert body["samples_learned"] == 500
    assert body["worker"] is not None and body["worker"]["state"] == "active"
    assert body["lag"] == 0
    assert body["worker"]["health"] == "ok", "a first start, not a crash loop"
    metrics = server.get("/metrics").text
    assert "digitstream_worker_up 1.0" in metrics
    # its own start while at its starting position, none once it has moved on
    assert "digitstream_worker_restarts 1.0" in metrics or "digitstream_worker_restarts 0.0" in metrics
