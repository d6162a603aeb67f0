"""Exactly once: a `digitstream worker` SIGKILLed at random moments ends with the uninterrupted model.

The stream (20,000 MNIST samples with malformed entries sprinkled in; every other thousand samples
in packed entries of up to 137, some holding a bad sample, cut by the worker's pieces of 200) is published at a steady
pace while real worker processes are started and killed with SIGKILL at random moments (often
between snapshots, sometimes during one); its last entries wait until the kills are over, so each
kill lands before the stream is complete, however slow the machine (every other worker is killed only
after it wrote a snapshot of its own). A last worker learns the rest and is stopped with
SIGTERM. Its final model must equal an uninterrupted in-process run's: same samples learned, same
state arrays, and every malformed entry dead-lettered exactly once. Once per learning rule with a
different state: the linear softmax rule and the mlp (its state is ~1.6 MB in 9 arrays).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from digitstream.packed import encode_packed
from digitstream.protocol import N_PIXELS, encode_sample
from digitstream.settings import load_settings
from digitstream.store import read_snapshot
from digitstream.worker.loop import Worker
from tests.worker_support import WorkerProcess, latest, publish_raw, reference, state_difference, wait_for

N_SAMPLES = 20_000
KILLS = 6
RATE = 700  # samples/s published (a packed entry as its samples): the stream keeps growing while workers are killed
MALFORMED = [
    {b"pixels": b"\x00" * 10, b"label": b"1"},
    {b"label": b"2"},
    {b"pixels": b"[" + b"0," * 782 + b"0]", b"label": b"3"},
    {b"pixels": b"\x00" * N_PIXELS, b"label": b"x"},
    {b"pixels": b"\x00" * (2 * N_PIXELS + 1), b"labels": b"12"},  # a malformed packed entry
    {b"pixels": b"\x00" * N_PIXELS, b"labels": b"x"},  # a packed entry of one bad sample
]
PACKED = 137  # samples per packed entry: pieces of 200 samples end inside entries


def with_bad_sample(fields: dict[bytes, bytes], index: int) -> dict[bytes, bytes]:
    """A packed entry with a sample of label "x" (all-zero pixels) inserted at ``index``."""
    pixels, labels, at = fields[b"pixels"], fields[b"labels"], index * N_PIXELS
    return {b"pixels": pixels[:at] + bytes(N_PIXELS) + pixels[at:], b"labels": labels[:index] + b"x" + labels[index:]}


def stream_entries(images: np.ndarray, labels: np.ndarray) -> list[dict[bytes, bytes]]:
    """The samples in order, every other thousand packed, with one malformed entry after every 97th.

    The packed entry starting at every fifth hundred holds an extra bad sample (label "x") in its middle.
    """
    entries: list[dict[bytes, bytes]] = []
    i = 0
    while i < len(labels):
        if (i // 1000) % 2:
            stop = min(i + PACKED, (i // 1000 + 1) * 1000)
            fields = encode_packed(images[i:stop], labels[i:stop])
            if (i // 100) % 5 == 0:
                fields = with_bad_sample(fields, (stop - i) // 2)
            entries.append({**fields, b"source": b"p%d" % i})
        else:
            stop = i + 1
            entries.append(encode_sample(images[i], int(labels[i])))
        for j in range(i, stop):  # (packed entries are tagged "p<first sample>", malformed ones "<sample>")
            if j % 97 == 96:
                entries.append({**MALFORMED[(j // 97) % len(MALFORMED)], b"source": b"%d" % j})
        i = stop
    return entries


def paced_publisher(
    url: str, stream: str, entries: list[dict[bytes, bytes]], rate: float, hold_back: int, release: threading.Event
) -> threading.Thread:
    """Publishes at ``rate`` samples/s; the last ``hold_back`` entries wait for ``release``, so every kill lands
    mid-stream. A packed entry takes as long as its samples would one by one."""
    sizes = np.cumsum([len(fields.get(b"labels", b"x")) for fields in entries])

    def publish() -> None:
        client = redis.Redis.from_url(url)
        start = time.monotonic()
        for begin in range(0, len(entries), 150):
            if begin >= len(entries) - hold_back:
                release.wait(120)
            chunk = entries[begin : begin + 150]
            publish_raw(client, stream, chunk)
            time.sleep(max(0.0, start + int(sizes[begin + len(chunk) - 1]) / rate - time.monotonic()))
        client.close()

    thread = threading.Thread(target=publish, name="paced-publisher", daemon=True)
    thread.start()
    return thread


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """The worker processes a test starts; those still running when it ends (it failed) are killed."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.alive():
            worker.kill()


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["softmax", "mlp"])
def test_a_worker_killed_at_random_moments_learns_every_sample_exactly_once(
    rule: str, redis_url: str, redis_client: redis.Redis, mnist_train: tuple[np.ndarray, np.ndarray], tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:  # fmt: skip
    images, labels = mnist_train
    images = images.reshape(len(labels), N_PIXELS)[:N_SAMPLES]
    labels = labels[:N_SAMPLES].astype(np.int64)
    entries = stream_entries(images, labels)
    settings = load_settings(redis_url=redis_url, model_name="killed", rule=rule)
    keys = settings.keys
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    args = (
        "--model", "killed", "--batch-size", "200", "--snapshot-every", "1000", "--snapshot-interval", "0.3",
        "--lease-ttl", "0.5", "--retention-max-len", "2000", "--log-level", "DEBUG",
    )  # fmt: skip
    env = {"DIGITSTREAM_REDIS_URL": redis_url, "DIGITSTREAM_RULE": rule}

    kills_done = threading.Event()
    publisher = paced_publisher(redis_url, keys.samples, entries, RATE, hold_back=1500, release=kills_done)
    progress_at_kills: list[int] = []
    for attempt in range(KILLS):
        worker = WorkerProcess(tmp_path / f"worker-{attempt}.log", *args, env=env)
        workers.append(worker)
        wait_for(
            lambda worker=worker: (holder := redis_client.get(keys.lease)) and f":{worker.pid}:".encode() in holder,
            timeout=30,
            what=f"worker {attempt} to take the lease\n{worker.log()}",
        )
        if attempt % 2:
            # Every other worker first writes a snapshot of its own (the mlp's first one may take a
            # second on a busy machine), so that the kills spread over the stream whatever the speed;
            # unless it has caught up with the entries published so far (then it has nothing to write).
            before, deadline = progress_at_kills[-1], time.monotonic() + 15
            while time.monotonic() < deadline:
                snapshot = read_snapshot(redis_client, keys)
                if snapshot is not None and snapshot.meta["entries_consumed"] > before:
                    break
                time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 0.8))
        assert worker.alive(), worker.log()
        worker.kill()
        snapshot = read_snapshot(redis_client, keys)
        progress_at_kills.append(0 if snapshot is None else snapshot.meta["entries_consumed"])
    kills_done.set()
    assert max(progress_at_kills) < len(entries), "every kill lands before the stream is complete"
    assert len(set(progress_at_kills)) >= 4, f"kills spread over the stream: {progress_at_kills} (seed {seed})"
    publisher.join(60)

    last = WorkerProcess(tmp_path / "worker-last.log", *args, env=env)
    workers.append(last)
    wait_for(
        lambda: (s := read_snapshot(redis_client, keys)) and s.meta["entries_consumed"] == len(entries),
        timeout=60,
        what=f"the last worker to learn everything\n{last.log()}",
    )
    assert last.terminate() == 0, last.log()

    # The uninterrupted run: the same entries, learned in-process from a stream of their own.
    uninterrupted = Worker(load_settings(redis_url=redis_url, model_name="uninterrupted", rule=rule), redis_client)
    publish_raw(redis_client, uninterrupted.keys.samples, entries)
    uninterrupted.run(burst=True)
    expected = latest(redis_client, uninterrupted.keys)

    final = latest(redis_client, keys)
    assert final.samples_learned == expected.samples_learned == N_SAMPLES, f"seed {seed}"
    assert final.learner().params.rule == rule
    assert state_difference(final.learner(), expected.learner()) <= 1e-9, f"seed {seed}"
    plain, _ = reference(settings, images, labels)
    assert state_difference(final.learner(), plain) <= 1e-9
    bad_samples = sum(
        fields[b"labels"].count(b"x") for fields in entries if fields.get(b"source", b"").startswith(b"p")
    )
    malformed = len(range(96, N_SAMPLES, 97))
    assert bad_samples > 5 and final.meta["deadletter_count"] == expected.meta["deadletter_count"]
    assert final.meta["deadletter_count"] == malformed + bad_samples
    dead = [{k: v for k, v in f.items() if k != b"original_id"} for _, f in redis_client.xrange(keys.deadletter)]
    dead_expected = [
        {k: v for k, v in f.items() if k != b"original_id"}
        for _, f in redis_client.xrange(uninterrupted.keys.deadletter)
    ]
    assert dead == dead_expected, "each dead letter once, in order"
    assert [f[b"source"] for f in dead if b"index" not in f or f[b"source"].isdigit()] == [
        b"%d" % i for i in range(96, N_SAMPLES, 97)
    ]
    assert final.meta["metrics"]["prequential_accuracy"] == expected.meta["metrics"]["prequential_accuracy"]
