"""GET /model/events: snapshot, pin, drift, fault and health events as Server-Sent Events, over real uvicorn."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.registry import ModelConfig, Registry
from digitstream.settings import Settings
from tests.service_support import LiveServer, live, make_app, snapshot_writer, trained, write  # noqa: F401


class SSEClient:
    """A text/event-stream reader in a thread: ``next(kind)`` waits for the next event of that kind."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.comments: list[str] = []
        self.response: httpx.Response | None = None
        self.ended = threading.Event()
        self._opened = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=60))
        self._thread = threading.Thread(target=self._run, args=(url, headers or {}), daemon=True)
        self._thread.start()
        assert self._opened.wait(10), "the stream did not open"

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self.response = response
                self._opened.set()
                event: dict[str, Any] = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif not line:
                        if "event" in event:
                            self.events.put(event)
                        event = {}
                    else:
                        name, _, value = line.partition(":")
                        event[name] = json.loads(value.strip()) if name == "data" else value.strip()
        except httpx.HTTPError:
            pass
        finally:
            self._client.close()
            self._opened.set()
            self.ended.set()

    def next(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                break
            if event["event"] == kind:
                return event
        raise AssertionError(f"no {kind!r} event within {timeout}s")

    def close(self) -> None:
        """A blocked read cannot be interrupted from here: the stream ends when its server stops (daemon thread)."""
        self._thread.join(0.1)


@pytest.fixture
def sse() -> Iterator[Callable[..., SSEClient]]:
    clients: list[SSEClient] = []

    def open_(url: str, **headers: str) -> SSEClient:
        client = SSEClient(url, headers)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        client.close()


def test_snapshots_pins_drift_and_faults_arrive_as_server_sent_events(
    live: LiveServer, write: Callable[..., int], trained: DeltaRuleLearner, sse: Callable[..., SSEClient]
) -> None:
    stream = sse(f"{live.url}/model/events")
    assert stream.response is not None and stream.response.status_code == 200
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    hello = stream.next("hello")
    assert hello["data"]["latest"] == 1 and hello["data"]["served"] == 1 and "id" not in hello

    write(trained)
    snapshot = stream.next("snapshot")
    assert snapshot["data"]["latest"] == 2 and snapshot["data"]["samples_learned"] == trained.n_samples
    assert snapshot["data"]["health"] in ("ok", "stalled", "no-worker")

    assert live.post("/model/pin", json={"version": 1}).status_code == 200
    pin = stream.next("pin")
    assert pin["data"] == {"pinned": 1, "served": 1, "latest": 2}
    assert live.post("/model/unpin").status_code == 200
    assert stream.next("pin")["data"]["pinned"] is None

    drift = {"samples": 2900, "detector": "ADWIN", "direction": "worse", "error_rate": 0.4}
    fault = {"kind": "redis", "message": "Redis was unreachable for 2.0s", "at": time.time(), "samples_learned": 2800}
    write(trained, metrics={"prequential_accuracy": 0.8, "rolling_accuracy": 0.6, "rolling_window": 1000,
                            "drift_events": [drift], "drift_events_total": 1},
          faults=[fault], fault_counts={"redis": 1})  # fmt: skip
    got_drift, got_fault = stream.next("drift"), stream.next("fault")
    assert got_drift["data"]["drift_events_total"] == 1 and got_drift["data"]["events"] == [drift]
    assert got_fault["data"]["fault_counts"] == {"redis": 1} and got_fault["data"]["faults"][0]["kind"] == "redis"
    ids = [int(e["id"]) for e in (snapshot, pin, got_drift, got_fault)]
    assert ids == sorted(ids) and len(set(ids)) == 4

    # A client reconnecting with Last-Event-ID gets what it missed, in order.
    again = sse(f"{live.url}/model/events", **{"Last-Event-ID": snapshot["id"]})
    again.next("hello")
    replayed = [again.next(kind)["event"] for kind in ("pin", "pin", "snapshot", "drift", "fault")]
    assert replayed == ["pin", "pin", "snapshot", "drift", "fault"]


def test_each_registered_model_has_its_own_event_stream(
    live: LiveServer, redis_client: redis.Redis, make_settings: Callable[..., Settings], trained: DeltaRuleLearner,
    sse: Callable[..., SSEClient],
) -> None:  # fmt: skip
    assert live.get("/models/nobody/events").status_code == 404
    assert sse(f"{live.url}/models/digitstream/events").next("hello")["data"]["served"] == 1  # the default model
    config = ModelConfig.new("small", HyperParameters.for_rule("softmax"), created_at=time.time())
    assert Registry(redis_client).create(config)
    small = sse(f"{live.url}/models/small/events")
    assert small.next("hello")["data"]["latest"] is None  # registered, nothing learned yet
    default = sse(f"{live.url}/model/events")
    default.next("hello")
    snapshot_writer(redis_client, make_settings(model_name="small"))(trained)
    assert small.next("snapshot")["data"]["latest"] == 1
    with pytest.raises(AssertionError, match="no 'snapshot' event"):
        default.next("snapshot", timeout=1.0)  # another model's snapshot is not news here


def test_idle_streams_get_heartbeats_and_clients_beyond_the_cap_get_503(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    sse: Callable[..., SSEClient],
) -> None:  # fmt: skip
    write(trained)
    server = make_app(sse_max_clients=2)
    server.app.state.events.heartbeat = 0.2  # instead of 15 s
    first, _second = sse(f"{server.url}/model/events"), sse(f"{server.url}/model/events")
    first.next("hello")
    refused = server.get("/model/events")
    assert refused.status_code == 503 and "Retry-After" in refused.headers
    assert "2 event streams are open" in refused.json()["detail"]
    time.sleep(0.7)
    assert first.comments and first.comments[0] == ": heartbeat"
    assert "digitstream_event_streams 2.0" in server.get("/metrics").text


def test_stopping_the_server_ends_open_streams(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    sse: Callable[..., SSEClient],
) -> None:  # fmt: skip
    write(trained)
    server = make_app()
    stream = sse(f"{server.url}/model/events")
    stream.next("hello")
    started = time.monotonic()
    server.stop()  # what SIGTERM does: uvicorn's handle_exit
    assert not server.thread.is_alive() and stream.ended.wait(5)
    assert time.monotonic() - started < 5, "uvicorn did not wait for the endless stream"
