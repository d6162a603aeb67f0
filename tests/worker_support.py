"""Helpers shared by the worker tests: publishing samples, reference models, worker subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis

from digitstream.learner import Learner, learner_from_state, new_learner
from digitstream.protocol import Keys, encode_sample
from digitstream.settings import Settings
from digitstream.snapshot import Snapshot
from digitstream.store import read_snapshot


def publish(client: redis.Redis, stream: str, images: np.ndarray, labels: np.ndarray, chunk: int = 1000) -> list[bytes]:
    """XADD the samples in canonical form, in order; returns their ids."""
    ids: list[bytes] = []
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(labels), chunk):
        for i in range(start, min(start + chunk, len(labels))):
            pipe.xadd(stream, encode_sample(images[i], int(labels[i])))
        ids.extend(pipe.execute())
    return ids


def publish_raw(client: redis.Redis, stream: str, entries: list[dict[bytes, bytes]]) -> list[bytes]:
    """XADD arbitrary field maps (e.g. malformed entries), in order; returns their ids."""
    pipe = client.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
    return list(pipe.execute())


def reference(settings: Settings, images: np.ndarray, labels: np.ndarray) -> tuple[Learner, np.ndarray]:
    """A learner trained in-process on the samples, with its prequential predictions."""
    learner = new_learner(settings.hyper_parameters())
    predictions = learner.learn_many(images, labels) if len(labels) else np.zeros(0, dtype=np.int8)
    return learner, predictions


def reference_without_offenders(
    settings: Settings, images: np.ndarray, labels: np.ndarray
) -> tuple[Learner, list[int]]:
    """A learner trained one sample at a time, leaving out (undoing) each sample that makes its weights
    non-finite: the divergence guard's specification. Returns it and the positions left out."""
    learner = new_learner(settings.hyper_parameters())
    offenders: list[int] = []
    for i in range(len(labels)):
        before = learner.state()
        learner.learn_many(images[i : i + 1], labels[i : i + 1])
        if not learner.is_finite():
            learner = learner_from_state(before)
            offenders.append(i)
    return learner, offenders


def state_difference(a: Learner, b: Learner) -> float:
    """The largest relative difference between two learners' state arrays (inf if they hold different arrays)."""
    mine, theirs = a.state().arrays, b.state().arrays
    if mine.keys() != theirs.keys():
        return float("inf")
    return max(relative_difference(mine[name].astype(np.float64), theirs[name].astype(np.float64)) for name in mine)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(b)), 1e-300)
    return float(np.linalg.norm(a - b)) / scale


def latest(client: redis.Redis, keys: Keys) -> Snapshot:
    snapshot = read_snapshot(client, keys)
    assert snapshot is not None, "no snapshot was written"
    return snapshot


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 0.02, what: str | Callable[[], str] = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds, saying ``what``
    (a callable is asked at the failure, so it can show the state then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


@contextmanager
def running(worker: Any, burst: bool = False) -> Iterator[threading.Thread]:
    """Run ``worker`` in a thread; on exit stop it and wait for its final snapshot."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run(burst=burst)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive(), "the worker did not stop"
    if errors:
        raise errors[0]


def worker_command(*args: str) -> list[str]:
    """The real ``digitstream worker`` command line."""
    script = Path(sys.executable).with_name("digitstream")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "digitstream"]
    return [*base, "worker", *args]


class WorkerProcess:
    """A ``digitstream worker`` subprocess with its log in a file."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.process = subprocess.Popen(
            worker_command(*args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def wait(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout)
        self._log.close()
        return code


@contextmanager
def pool_running(pool: Any) -> Iterator[Any]:
    """Run a ``WorkerPool`` in a thread; on exit stop it (each model's final snapshot) and wait for it."""
    thread = threading.Thread(target=pool.run, name=f"test-pool-{pool.pool_id}", daemon=True)
    thread.start()
    try:
        yield pool
    finally:
        pool.stop()
        thread.join(30)
    assert not thread.is_alive(), "the pool did not stop"
