"""The service under a real uvicorn for tests: a live server in a thread, and snapshot writing helpers.

Test modules import the fixtures they use (``from tests.service_support import make_app, ...``).
Snapshots are written with the core's ``store.write_snapshot`` from learners trained in-process,
holding the worker lease as the worker would; the service never knows who wrote them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import uvicorn

from digitstream.clients.embedded_redis import free_port
from digitstream.learner import DeltaRuleLearner, HyperParameters, Learner, MLPLearner, new_learner
from digitstream.service.app import create_app
from digitstream.settings import Settings
from digitstream.snapshot import snapshot_of
from digitstream.store import write_snapshot

LEASE_TOKEN = "test-writer"


class LiveServer:
    """``create_app(settings)`` served by uvicorn (uvloop + httptools, as ``digitstream serve``) in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, loop="uvloop", http="httptools",
            log_level="warning", access_log=False, lifespan="on",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.http.close()
        self.server.handle_exit(signal.SIGTERM, None)  # as the signal would: open event streams end too
        self.thread.join(15)

    # -- shortcuts ------------------------------------------------------------------------------
    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def predict(self, image: np.ndarray) -> dict[str, Any]:
        response = self.post("/predict", json={"pixels": image.tolist()})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_for_version(self, version: int, timeout: float = 5.0) -> float:
        """Seconds until GET /model reports ``version``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            response = self.get("/model")
            if response.status_code == 200 and response.json()["version"] == version:
                return time.monotonic() - started
            time.sleep(0.01)
        raise AssertionError(f"version {version} not served within {timeout}s (last: {response.text[:200]})")


def snapshot_writer(client: redis.Redis, settings: Settings) -> Callable[..., int]:
    """``write(learner, **meta) -> version``: a snapshot as the worker writes it (lease held)."""

    def write(learner: Learner, **meta: Any) -> int:
        keys = settings.keys
        client.set(keys.lease, LEASE_TOKEN)
        fields = {
            "model": settings.model_name,
            "samples_learned": learner.n_samples,
            "last_id": f"{1_700_000_000_000 + learner.n_samples}-0",
            "created_at": time.time(),
            "entries_consumed": learner.n_samples,
            "deadletter_count": 0,
            "metrics": {"prequential_accuracy": 0.85, "rolling_accuracy": 0.9, "rolling_window": 1000, "lag": 0,
                        "drift_events": []},
        }  # fmt: skip
        fields.update(meta)
        snapshot = snapshot_of(learner, **fields)
        return write_snapshot(client, keys, snapshot, lease_token=LEASE_TOKEN, keep=settings.keep_versions)

    return write


def train(images: np.ndarray, labels: np.ndarray, n: int, rule: str = "softmax") -> DeltaRuleLearner:
    learner = DeltaRuleLearner(HyperParameters.for_rule(rule))  # type: ignore[arg-type]
    learner.learn_many(images[:n], labels[:n])
    return learner


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveServer]]:
    """``make_app(**settings_overrides)``: a started live server on the test Redis, stopped after the test."""
    servers: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        server = LiveServer(make_settings(**overrides)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def write(redis_client: redis.Redis, make_settings: Callable[..., Settings]) -> Callable[..., int]:
    """Write a snapshot of a learner to the test Redis (default settings' keys)."""
    return snapshot_writer(redis_client, make_settings())


@pytest.fixture(scope="session")
def trained(mnist_train: tuple[np.ndarray, np.ndarray]) -> DeltaRuleLearner:
    """A softmax learner after 3,000 MNIST training images (~88 % test accuracy)."""
    return train(*mnist_train, 3000)


@pytest.fixture(scope="session")
def trained_mlp(mnist_train: tuple[np.ndarray, np.ndarray]) -> MLPLearner:
    """An mlp learner (the default 256 hidden units) after 3,000 MNIST training images (~92 % test accuracy)."""
    images, labels = mnist_train
    learner = new_learner(HyperParameters.for_rule("mlp"))
    learner.learn_many(images[:3000], labels[:3000])
    assert isinstance(learner, MLPLearner)
    return learner


@pytest.fixture
def live(make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner) -> LiveServer:
    """A live server already serving the ``trained`` learner as version 1."""
    version = write(trained)
    server = make_app()
    server.wait_for_version(version)
    return server
