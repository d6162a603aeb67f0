"""Exactly once from the publisher to the model, against a real redis-server that is killed, paused and rolled back.

The publisher numbers its entries and appends each batch with a fenced script (``clients.producer``):
a batch whose reply was lost is not appended twice, entries Redis acknowledged and then lost are
sent again, an outage is ridden out, and ``digitstream publish`` exits 0 through a Redis SIGKILL
with every sample learned exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
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
from digitstream.clients.producer import Producer, ProducerConflict
from digitstream.clients.publisher import Publisher
from digitstream.protocol import Keys, decode_entries
from digitstream.settings import load_settings
from digitstream.store import read_snapshot
from digitstream.worker.loop import Worker
from tests.cli_support import REPO, cli_env
from tests.worker_support import latest, reference, wait_for

KEYS = Keys.for_model("once")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (AOF, appendfsync everysec), to kill and restart on the same files."""
    with RedisServer(tmp_path / "redis") as started:
        yield started


def connect(server: RedisServer, timeout: float = 5.0) -> redis.Redis:
    """A client that does not retry by itself: every fault reaches the producer."""
    no_retries = Retry(NoBackoff(), 0)
    return redis.Redis.from_url(server.url, socket_timeout=timeout, socket_connect_timeout=1, retry=no_retries)


def stream_origins(client: redis.Redis, keys: Keys = KEYS) -> list[tuple[bytes, int]]:
    decoded = decode_entries(client.xrange(keys.samples))
    assert decoded.rejects == []
    return [(o.producer, o.seq) for o in decoded.origins if o is not None]


def batch(n: int, offset: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), [(offset + i) % 10 for i in range(n)]


@pytest.mark.parametrize("pack", [1, 3], ids=["classic", "packed"])
def test_a_batch_whose_reply_was_lost_is_not_appended_twice(server: RedisServer, pack: int) -> None:
    """Redis paused past the client's timeout: the batch is sent again, the fence tells it had landed."""
    client = connect(server, timeout=0.3)
    producer = Producer(client, KEYS, "paused", retry_for=30, pack=pack)
    producer.append(*batch(5))
    resume = threading.Timer(1.0, os.kill, (server.process.pid, signal.SIGCONT))  # type: ignore[union-attr]
    os.kill(server.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
    resume.start()
    try:
        ids = producer.append(*batch(5, offset=5))  # small: the whole request fits in the socket buffers
    finally:
        resume.join()
    assert producer.outages == 1
    assert stream_origins(client) == [(b"paused", seq) for seq in range(10)]
    entry_ids = [entry_id for entry_id, _ in client.xrange(KEYS.samples)]
    assert len(entry_ids) == (10 if pack == 1 else 4)  # packed: entries of 3 + 2 samples per batch
    assert ids == (entry_ids[5:] if pack == 1 else [entry_ids[2]] * 3 + [entry_ids[3]] * 2)


def save_aof(server: RedisServer, saved: Path) -> None:
    """A copy of the append-only file(s) as they are now (one file before Redis 7, a directory from 7)."""
    saved.mkdir()
    for path in server.directory.glob("appendonly*"):
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, saved / path.name)


def rolled_back(server: RedisServer, saved: Path) -> None:
    """Kill Redis and restart it on an older copy of its append-only files: acknowledged writes are gone."""
    server.kill()
    for path in server.directory.glob("appendonly*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in saved.iterdir():
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, server.directory / path.name)
    server.start()


@pytest.mark.parametrize("pack", [1, 3], ids=["classic", "packed"])
def test_entries_redis_acknowledged_then_lost_are_sent_again_in_order(
    server: RedisServer, tmp_path: Path, pack: int
) -> None:
    client = connect(server)
    producer = Producer(client, KEYS, "rolled", retry_for=30, pack=pack)
    producer.append(*batch(4))
    save_aof(server, tmp_path / "saved")  # the disk holds batch 1 only
    producer.append(*batch(3, offset=4))
    producer.append(*batch(2, offset=7))
    rolled_back(server, tmp_path / "saved")

    producer.append(*batch(1, offset=9))

    assert stream_origins(client) == [(b"rolled", seq) for seq in range(10)]
    decoded = decode_entries(client.xrange(KEYS.samples))
    assert decoded.labels.tolist() == [i % 10 for i in range(10)]
    # redis-py reconnected by itself without an error: only the fence could tell that Redis had lost entries.
    assert (producer.resent, producer.lost, producer.outages) == (5, 0, 0)


def test_entries_lost_beyond_the_resend_window_are_counted_not_hidden(server: RedisServer, tmp_path: Path) -> None:
    client = connect(server)
    producer = Producer(client, KEYS, "window", retry_for=30, resend_window=0)  # keeps only the newest batch
    producer.append(*batch(4))
    save_aof(server, tmp_path / "saved")
    producer.append(*batch(3, offset=4))
    producer.append(*batch(2, offset=7))
    rolled_back(server, tmp_path / "saved")

    producer.append(*batch(1, offset=9))

    assert stream_origins(client) == [(b"window", seq) for seq in [0, 1, 2, 3, 7, 8, 9]]
    assert (producer.resent, producer.lost) == (2, 3)


def test_an_outage_longer_than_retry_for_raises_the_redis_error(server: RedisServer) -> None:
    producer = Producer(connect(server), KEYS, "gives-up", retry_for=0.5)
    producer.append(*batch(2))
    server.kill()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        producer.append(*batch(2, offset=2))
    assert time.monotonic() - started < 10


def test_two_publishers_sharing_a_producer_id_are_refused(server: RedisServer) -> None:
    first = Producer(connect(server), KEYS, "shared")
    second = Producer(connect(server), KEYS, "shared")
    first.append(*batch(2))
    second.append(*batch(2, offset=2))  # continues the numbering it found: 2, 3
    with pytest.raises(ProducerConflict, match="another publisher is using the same producer id"):
        first.append(*batch(2, offset=4))
    assert stream_origins(connect(server)) == [(b"shared", seq) for seq in range(4)]


def test_a_new_publisher_has_its_own_producer_id(server: RedisServer) -> None:
    client = connect(server)
    a, b = Publisher(client, KEYS), Publisher(client, KEYS)
    a.publish(*batch(2))
    b.publish(*batch(2))
    assert a.producer.producer_id != b.producer.producer_id
    origins = stream_origins(client)
    assert [seq for _, seq in origins] == [0, 1, 0, 1] and len({p for p, _ in origins}) == 2


@pytest.mark.parametrize("producer_id", ["", "has space", "x" * 65, "é"])
def test_an_invalid_producer_id_is_refused_before_anything_is_sent(server: RedisServer, producer_id: str) -> None:
    with pytest.raises(ValueError, match="producer: must be 1-64 characters"):
        Publisher(connect(server), KEYS, producer_id=producer_id)


# -- the command line through a Redis SIGKILL --------------------------------------------------
N_SAMPLES = 12_000


@pytest.mark.slow
@pytest.mark.parametrize("worker_during_the_kill", [False, True], ids=["worker-after", "worker-during"])
def test_publish_rides_out_a_redis_sigkill_and_every_sample_is_learned_exactly_once(
    server: RedisServer, mnist_dir: Path, mnist_train: tuple[np.ndarray, np.ndarray], tmp_path: Path,
    worker_during_the_kill: bool,
) -> None:  # fmt: skip
    """SIGKILL Redis (AOF, appendfsync everysec) mid-publish, restart it on the same files: learned == published."""
    client = redis.Redis.from_url(server.url)
    settings = load_settings(redis_url=server.url, model_name="killed", lease_ttl=1.0, batch_size=500)
    worker = Worker(settings, redis.Redis.from_url(server.url, socket_timeout=5, retry=Retry(NoBackoff(), 0)))
    learning = threading.Thread(target=worker.run, name="worker", daemon=True)
    if worker_during_the_kill:
        learning.start()
    command = [sys.executable, "-m", "digitstream", "publish", str(mnist_dir), "--limit", str(N_SAMPLES),
               "--rate", "6000/s", "--batch-size", "200", "--model", "killed", "--redis-url", server.url,
               "--retry-for", "60", "--json", "--quiet"]  # fmt: skip
    publishing = subprocess.Popen(command, env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _length(client, settings.keys.samples) >= 2_000, timeout=60, what="the publish to start")
        server.kill()  # mid-publish: thousands of samples still to go at 6,000/s
        time.sleep(1.0)
        server.start()
        out, err = publishing.communicate(timeout=120)
    finally:
        if publishing.poll() is None:
            publishing.kill()
    assert publishing.returncode == 0, err.decode()
    summary = json.loads(out)
    assert (summary["sent"], summary["lost"], summary["outages"]) == (N_SAMPLES, 0, 1), summary

    client = redis.Redis.from_url(server.url)
    origins = stream_origins(client, settings.keys)
    assert [seq for _, seq in origins] == list(range(N_SAMPLES)), "each sample once, in order, in the stream"
    if worker_during_the_kill:
        wait_for(lambda: (s := read_snapshot(client, settings.keys)) and s.samples_learned >= N_SAMPLES,
                 timeout=120, what="the worker to learn everything")  # fmt: skip
        worker.stop()
        learning.join(30)
    else:
        worker.run(burst=True)
    meta = latest(client, settings.keys).typed_meta()
    assert (meta.samples_learned, meta.duplicates_skipped, meta.deadletter_count) == (N_SAMPLES, 0, 0)
    expected, _ = reference(settings, mnist_train[0][:N_SAMPLES].reshape(-1, 784), mnist_train[1][:N_SAMPLES])
    assert np.array_equal(latest(client, settings.keys).learner().weights, expected.weights)


def _length(client: redis.Redis, key: str) -> int:
    try:
        return int(client.xlen(key))
    except redis.ConnectionError:
        return 0
