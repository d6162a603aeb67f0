"""Faults the worker survives: Redis restarting, a snapshot write cut off, and diverging weights."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from digitstream.clients.embedded_redis import RedisServer
from digitstream.protocol import N_PIXELS
from digitstream.settings import load_settings
from digitstream.store import list_versions, read_snapshot
from digitstream.worker.loop import Worker
from tests.worker_support import latest, publish, publish_raw, reference, running, wait_for


@pytest.fixture(scope="module")
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:4000], labels[:4000].astype(np.int64)


def worker_client(url: str) -> redis.Redis:
    """A client like the CLI's: it never retries by itself (the worker does)."""
    return redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0, retry=Retry(NoBackoff(), 0))


# -- Redis restarts -------------------------------------------------------------------------------


def test_a_redis_restart_loses_and_duplicates_nothing(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    images, labels = digits
    caplog.set_level(logging.INFO, logger="digitstream.worker")
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        settings = load_settings(redis_url=server.url, lease_ttl=1.0, snapshot_interval=0.2, block_ms=100)
        publisher = redis.Redis.from_url(server.url)
        worker = Worker(settings, worker_client(server.url))
        with running(worker):
            publish(publisher, settings.keys.samples, images[:3000], labels[:3000])
            wait_for(lambda: worker.samples_learned >= 1000, timeout=10, what="learning to start")
            server.stop()  # mid-stream: some of what the worker learned is not in a snapshot yet
            time.sleep(2.5)  # longer than the lease: it expires while Redis is down
            server.start()
            publish(publisher, settings.keys.samples, images[3000:4000], labels[3000:4000])
            wait_for(
                lambda: (s := read_snapshot(publisher, settings.keys)) and s.samples_learned == 4000,
                timeout=30,
                what="everything learned after the restart",
            )
        final = latest(publisher, settings.keys)
        publisher.close()
    finally:
        server.stop()
    expected, _ = reference(settings, images, labels)
    assert final.samples_learned == 4000 and np.array_equal(final.learner().weights, expected.weights)
    assert any(f["kind"] == "redis" for f in final.meta["faults"]), "the outage is recorded"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unreachable" in m for m in messages) >= 1 and any("reachable again" in m for m in messages)


class CuttingProxy:
    """A TCP proxy to Redis that cuts the connection around the next snapshot write.

    ``arm("request")`` drops the write before Redis sees all of it; ``arm("reply")`` lets Redis
    execute it and drops only the reply: the worker cannot tell the two apart from the error.
    """

    MARKER = b"LEASE lease lost"  # a line of digitstream.store's snapshot script

    def __init__(self, port: int) -> None:
        self.upstream_port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode: str | None = None
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str) -> None:
        self.mode = mode

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"drop_reply": False}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, state), daemon=True).start()

    def _cut(self, *sockets: socket.socket) -> None:
        self.cuts += 1
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other pump and tells the peer at once
            sock.close()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]) -> None:
        tail = b""
        try:
            while data := client.recv(1 << 16):
                if self.mode and self.MARKER in tail + data:
                    mode, self.mode = self.mode, None
                    if mode == "request":
                        return self._cut(client, upstream)
                    state["drop_reply"] = True
                tail = data[-len(self.MARKER) :]
                upstream.sendall(data)
        except OSError:
            pass

    def _down(self, upstream: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := upstream.recv(1 << 16):
                if state["drop_reply"]:
                    return self._cut(client, upstream)
                client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(redis_server: RedisServer, redis_url: str) -> Iterator[CuttingProxy]:
    cutting = CuttingProxy(redis_server.port)
    yield cutting
    cutting.close()


@pytest.mark.parametrize("cut", ["request", "reply"])
def test_a_snapshot_write_cut_off_is_read_back_and_never_applied_twice(
    cut: str, proxy: CuttingProxy, redis_client: redis.Redis, digits, caplog: pytest.LogCaptureFixture
) -> None:
    images, labels = digits
    caplog.set_level(logging.INFO, logger="digitstream.worker")
    settings = load_settings(redis_url=f"redis://127.0.0.1:{proxy.port}/0", batch_size=100, snapshot_every=100)
    publish(redis_client, settings.keys.samples, images[:100], labels[:100])
    bad_ids = publish_raw(redis_client, settings.keys.samples, [{b"label": b"1"}, {b"pixels": b"x", b"label": b"2"}])
    publish(redis_client, settings.keys.samples, images[100:300], labels[100:300])
    client = worker_client(settings.redis_url.get_secret_value())

    proxy.arm(cut)
    Worker(settings, client).run(burst=True)
    client.close()

    assert proxy.cuts == 1
    # 302 entries read 100 at a time: a snapshot after 100, 200, 300 and at the end.
    assert list_versions(redis_client, settings.keys) == [1, 2, 3, 4], "each snapshot written once"
    dead = redis_client.xrange(settings.keys.deadletter)
    assert [fields[b"original_id"] for _, fields in dead] == bad_ids, "each dead letter written once"
    final = latest(redis_client, settings.keys)
    expected, _ = reference(settings, images[:300], labels[:300])
    assert final.samples_learned == 300 and np.array_equal(final.learner().weights, expected.weights)
    landed = any("had landed" in r.getMessage() for r in caplog.records)
    assert landed == (cut == "reply"), "a write whose reply was lost is found by reading back"


def test_a_worker_started_while_redis_is_down_waits_for_it(tmp_path: Path, digits, caplog) -> None:
    images, labels = digits
    server = RedisServer(tmp_path / "redis", appendonly=True)  # not started yet
    settings = load_settings(redis_url=server.url, snapshot_interval=0.2, block_ms=100)
    worker = Worker(settings, worker_client(server.url))
    try:
        with running(worker):
            time.sleep(1.0)
            assert worker.state == "starting"
            server.start()
            publisher = redis.Redis.from_url(server.url)
            publish(publisher, settings.keys.samples, images[:500], labels[:500])
            wait_for(lambda: (s := read_snapshot(publisher, settings.keys)) and s.samples_learned == 500, timeout=20)
            publisher.close()
    finally:
        server.stop()
    assert any("Redis unreachable" in r.getMessage() for r in caplog.records)
