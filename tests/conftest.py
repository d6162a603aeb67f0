"""Shared fixtures: a real redis-server, settings for it, and the shared MNIST files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from digitstream.clients.embedded_redis import RedisServer
from digitstream.settings import Settings, load_settings
from digitstream.worker.loop import Worker

REPO = Path(__file__).resolve().parent.parent
DATA_ENV_VAR = "DIGITSTREAM_TEST_DATA"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (tests that restart Redis start their own)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis, emptied before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    """Settings pointing at the test Redis, with overrides."""

    def make(**overrides: Any) -> Settings:
        return load_settings(redis_url=redis_url, **overrides)

    return make


@pytest.fixture
def make_worker(make_settings: Callable[..., Settings], redis_client: redis.Redis) -> Callable[..., Worker]:
    """``make_worker(**settings) -> Worker``: an in-process worker on the test Redis (``run(burst=True)``)."""

    def make(**overrides: Any) -> Worker:
        return Worker(make_settings(**overrides), redis_client)

    return make


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The shared MNIST IDX files (``DIGITSTREAM_TEST_DATA`` or ``../shared/data/mnist``)."""
    path = Path(os.environ.get(DATA_ENV_VAR, REPO.parent / "shared" / "data" / "mnist"))
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test data not found in {path}; set {DATA_ENV_VAR}")
    return path


@pytest.fixture(scope="session")
def mnist_train(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from digitstream.datasets import load_mnist

    data = load_mnist(mnist_dir, "train")
    return data.images, data.labels


@pytest.fixture(scope="session")
def mnist_test(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from digitstream.datasets import load_mnist

    data = load_mnist(mnist_dir, "test")
    return data.images, data.labels
