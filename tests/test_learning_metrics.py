"""What an online learner is judged by, against a real worker process, redis-server and uvicorn.

/metrics is scraped with prometheus_client's own parser; a SIGKILLed worker shows as "not learning"
with the backlog counted in the stream itself, while /readyz keeps saying the model can serve.
"""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from digitstream.clients.publisher import Publisher
from digitstream.learner import HyperParameters
from digitstream.observability import DEADLETTER_CLASSES, FAULT_KINDS, HEALTH_STATES
from digitstream.protocol import encode_sample
from digitstream.registry import ModelConfig, Registry
from digitstream.settings import Settings
from tests.service_support import LiveServer, make_app, snapshot_writer, train  # noqa: F401
from tests.test_live_events import SSEClient
from tests.worker_support import WorkerProcess, publish, publish_raw, wait_for


@pytest.fixture
def start_worker(tmp_path: Path, redis_url: str) -> Iterator[Callable[[], WorkerProcess]]:
    """``start_worker()``: a real ``digitstream worker`` process on the test Redis (killed after the test)."""
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(tmp_path / f"worker{len(workers)}.log", env={"DIGITSTREAM_REDIS_URL": redis_url})
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.alive():
            worker.kill()


def scrape(live: LiveServer) -> dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]:
    """{family name: (type, {sorted labels: value})} of GET /metrics, read by prometheus_client's parser."""
    families: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {}
    for family in text_string_to_metric_families(live.get("/metrics").text):
        samples = {tuple(sorted(s.labels.items())): s.value for s in family.samples if not s.name.endswith("_created")}
        families[family.name] = (family.type, samples)
    return families


def one(families: dict[str, Any], name: str, type_: str, **labels: str) -> float:
    found_kind, samples = families[name]
    assert found_kind == type_, f"{name} is a {found_kind}, not a {type_}"
    return float(samples[tuple(sorted({"model": "digitstream", **labels}.items()))])


def test_metrics_report_accuracy_throughput_backlog_health_dead_letters_and_drift(
    make_app: Callable[..., LiveServer], start_worker: Callable[[], WorkerProcess], redis_client: redis.Redis,
    make_settings: Callable[..., Settings], mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    stream = make_settings().keys.samples
    images, labels = mnist_train
    publish(redis_client, stream, images[:3000], labels[:3000])
    good = encode_sample(images[0], 1)
    publish_raw(redis_client, stream, [
        {**good, b"label": b"eleven"},  # label
        {**good, b"pixels": b"[1, 2, 3]"},  # pixels
        {b"label": b"3"},  # fields: no pixels
    ])  # fmt: skip
    publish(redis_client, stream, images[3000:5000], (labels[3000:5000] + 1) % 10)  # the digits' names change: drift
    worker = start_worker()
    live = make_app(poll_interval=0.2)
    wait_for(lambda: (r := live.get("/model")).status_code == 200 and r.json()["samples_learned"] == 5000
             and r.json()["learning"]["backlog"] == 0 and r.json()["learning"]["health"] == "ok",
             timeout=60, what=f"5,000 samples learned\n{worker.log()}")  # fmt: skip
    model = live.get("/model").json()
    families = scrape(live)

    metrics = model["metrics"]
    assert one(families, "digitstream_prequential_accuracy_ratio", "gauge") == metrics["prequential_accuracy"]
    assert one(families, "digitstream_rolling_accuracy_ratio", "gauge") == metrics["rolling_accuracy"]
    assert 0.3 < metrics["prequential_accuracy"] < 1
    assert one(families, "digitstream_learning_samples_per_second", "gauge") >= 0
    assert one(families, "digitstream_backlog_entries", "gauge") == 0
    assert one(families, "digitstream_backlog_at_least", "gauge") == 0
    assert 0 <= one(families, "digitstream_heartbeat_age_seconds", "gauge") < 5
    health = {state: one(families, "digitstream_worker_health", "gauge", state=state) for state in HEALTH_STATES}
    assert health == {state: float(state == "ok") for state in HEALTH_STATES}

    # Counters: names end in _total, label values come from fixed lists.
    dead = {r: one(families, "digitstream_deadletters", "counter", reason=r) for r in DEADLETTER_CLASSES}
    assert dead == {r: float(r in ("label", "pixels", "fields")) for r in DEADLETTER_CLASSES}
    faults = {k: one(families, "digitstream_worker_faults", "counter", kind=k) for k in FAULT_KINDS}
    assert faults == dict.fromkeys(FAULT_KINDS, 0.0)
    drift = one(families, "digitstream_drift_events", "counter")
    assert drift >= 1 and drift == metrics["drift_events_total"] == model["worker"]["drift_events_total"]
    assert families["digitstream_model_swaps"][0] == "counter"
    assert families["digitstream_model_swaps"][1][()] >= 1
    text = live.get("/metrics").text
    for name in ("deadletters_total{", "drift_events_total{", "worker_faults_total{", "model_swaps_total "):
        assert f"digitstream_{name}" in text
    assert model["worker"]["deadletter_reasons"] == {"label": 1, "pixels": 1, "fields": 1}


def test_every_served_model_has_its_own_series(
    make_app: Callable[..., LiveServer], redis_client: redis.Redis, make_settings: Callable[..., Settings],
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    images, labels = mnist_train
    config = ModelConfig.new("small", HyperParameters.for_rule("softmax"), created_at=time.time())
    assert Registry(redis_client).create(config)
    learner = train(images, labels, 300)
    snapshot_writer(redis_client, make_settings(model_name="small"))(  # learned elsewhere: nothing of its stream
        learner, metrics={"rolling_accuracy": 0.5}, entries_consumed=0, last_id="0-0"
    )
    publish(redis_client, config.keys.samples, images[300:340], labels[300:340])  # 40 entries nobody learns
    live = make_app(poll_interval=0.2)
    assert live.get("/models/small").status_code == 200  # held from now on
    wait_for(lambda: live.get("/models/small").json()["learning"]["backlog"] == 40, timeout=5, what="backlog 40")
    families = scrape(live)
    rolling = families["digitstream_rolling_accuracy_ratio"][1]
    assert rolling[(("model", "small"),)] == 0.5
    assert np.isnan(rolling[(("model", "digitstream"),)]), "the default model has no snapshot: no value"
    assert families["digitstream_backlog_entries"][1][(("model", "small"),)] == 40
    assert families["digitstream_worker_health"][1][(("model", "small"), ("state", "stalled"))] == 1


def test_the_backlog_of_packed_entries_is_counted_in_samples(
    make_app: Callable[..., LiveServer], redis_client: redis.Redis, make_settings: Callable[..., Settings],
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    """Three packed entries of 100 learned, 40 samples of the fourth too: two entries and 160 samples to go."""
    images, labels = mnist_train
    settings = make_settings()
    publisher = Publisher(redis_client, settings.keys, pack=100)
    ids = publisher.publish(images[:300], labels[:300])
    learner = train(images, labels, 340)
    snapshot_writer(redis_client, settings)(learner, entries_consumed=3, last_id=ids[-1].decode(), offset=40)
    publisher.publish(images[300:500], labels[300:500])  # nobody learns these
    live = make_app(poll_interval=0.2)
    learning = wait_for(
        lambda: (body := live.get("/model").json())["learning"]["backlog"] is not None and body["learning"],
        timeout=5, what="a measured backlog",
    )  # fmt: skip
    assert (learning["backlog_entries"], learning["backlog"]) == (2, 160)
    families = scrape(live)
    assert families["digitstream_backlog_entries"][1][(("model", "digitstream"),)] == 2
    assert families["digitstream_backlog_samples"][1][(("model", "digitstream"),)] == 160


def test_a_killed_worker_shows_as_not_learning_with_the_true_backlog_within_10_seconds(
    make_app: Callable[..., LiveServer], start_worker: Callable[[], WorkerProcess], redis_client: redis.Redis,
    make_settings: Callable[..., Settings], mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    stream = make_settings().keys.samples
    images, labels = mnist_train
    publish(redis_client, stream, images[:1000], labels[:1000])
    worker = start_worker()
    live = make_app(poll_interval=0.2)
    wait_for(lambda: (r := live.get("/model")).status_code == 200 and r.json()["samples_learned"] == 1000
             and r.json()["learning"]["health"] == "ok",
             timeout=60, what=f"1,000 samples learned\n{worker.log()}")  # fmt: skip
    events = SSEClient(f"{live.url}/model/events")
    assert events.next("hello")["data"]["health"] == "ok"
    worker.kill()  # SIGKILL: no last snapshot, its status and lease linger until they expire
    killed = time.monotonic()

    def publisher() -> None:  # 700 more samples over ~1.4 s, while nobody learns
        for start in range(1000, 1700, 100):
            publish(redis_client, stream, images[start : start + 100], labels[start : start + 100])
            time.sleep(0.2)

    thread = threading.Thread(target=publisher)
    thread.start()
    thread.join()

    def not_learning() -> dict[str, Any] | None:
        body: dict[str, Any] = live.get("/model").json()
        learning = body["learning"]
        return body if learning["health"] != "ok" and learning["backlog"] == 700 else None

    body = wait_for(not_learning, timeout=10, what="health != ok and a backlog of 700")
    seconds = time.monotonic() - killed
    assert seconds < 10
    assert body["learning"]["health"] in ("stalled", "no-worker") and body["learning"]["detail"]
    assert body["lag"] == 700 and body["learning"]["backlog_at_least"] is False, "the stream's count, not the stale lag"
    assert body["samples_learned"] == 1000
    # Once the lease has expired (3 s), nobody holds it.
    wait_for(lambda: live.get("/model").json()["learning"]["health"] == "no-worker", timeout=10, what="no-worker")
    families = scrape(live)
    assert one(families, "digitstream_backlog_entries", "gauge") == 700
    assert one(families, "digitstream_worker_health", "gauge", state="no-worker") == 1
    assert one(families, "digitstream_worker_health", "gauge", state="ok") == 0
    assert one(families, "digitstream_learning_samples_per_second", "gauge") == 0
    health_event = events.next("health", timeout=5)  # pushed to event-stream clients as it changed
    assert health_event["data"]["health"] in ("stalled", "no-worker")
    ready = live.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", "it can still serve predictions"
    print(f"\nkilled worker seen as {body['learning']['health']} with a backlog of 700 after {seconds:.2f}s")
