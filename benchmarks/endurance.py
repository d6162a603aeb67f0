"""Endurance: steady publishing, learning and serving under load, with the worker SIGKILLed every minute
and Redis SIGKILLed twice (and restarted once with SIGTERM). Exits 1 when a goal fails.

    python -m digitstream.benchmarks.endurance --minutes 10      # the long run (docs/benchmarks.md)
    python -m digitstream.benchmarks.endurance --minutes 0.5     # the short run (tests/test_endurance.py, in CI)

Everything is a real process on this machine: an embedded redis-server (append-only file), one
``digitstream worker``, two ``digitstream serve`` replicas on free ports, a publisher thread sending
MNIST training samples (cycled) at a steady rate with one bad entry (a label that is not a digit)
every ``--bad-every`` samples, and a load generator in its own process
(``benchmarks/endurance_load.py``) keeping 64 connections busy with ``POST /predict`` on both
replicas. During the run the worker is SIGKILLed and restarted every ``--kill-every`` seconds
(60 s; a third of the run when that is shorter), and Redis is stopped three times, spread over the
run, each half a kill period away from any worker kill: SIGKILL, SIGTERM, SIGKILL
(``endurance_report.redis_schedule``). Each time it stays down ``--redis-down`` seconds (2 s) and
restarts on the same files.

**Persistence.** Redis runs with ``appendonly yes`` and ``appendfsync always`` (``--appendfsync``),
the documented no-loss setting: it fsyncs the append-only file before it acknowledges a write, so
a SIGKILL loses nothing acknowledged. The publisher (``clients.Publisher``: producer id and
sequence numbers, a fenced append) rides out each outage, resends what was not acknowledged, and
would resend what Redis lost of what it had acknowledged: that count (``producer.resent`` +
``producer.lost``) is the "acknowledged samples lost" figure, 0 with ``always`` (with ``everysec``
it is reported, not judged). Bad entries are plain XADDs carrying a unique marker; one whose answer
was lost is looked for (stream and dead letters) before it is sent again.

Goals (each printed with its measured value; bounds derived in ``endurance_report``):

* zero failed prediction requests, except 503s inside a Redis-outage window (from the stop to
  ``RESTART_GRACE`` seconds after Redis answers again): the documented answer of endpoints that
  need Redis. ``POST /predict`` answers from memory, so none are expected there either;
* samples learned (the final snapshot) == samples published, after the publisher stops and the
  worker drains; 0 duplicates; 0 acknowledged samples lost; every bad entry dead-lettered exactly
  once; both replicas serve that final model;
* the stream and the dead-letter stream stay within their bounds;
* resident memory flat (long runs only, >= ``MEMORY_MIN_MINUTES`` minutes): each API replica's RSS at
  the end within ``RSS_GROWTH`` of its RSS after the warm-up (plus ``RSS_SLACK_MB``); the worker's
  RSS before each kill is reported per incarnation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from digitstream.clients.embedded_redis import RedisServer, free_port
from digitstream.clients.processes import child_options, stop_process
from digitstream.clients.publisher import Publisher
from digitstream.datasets import find_mnist, load_mnist
from digitstream.protocol import Keys
from digitstream.settings import Settings, load_settings, without_settings
from digitstream.store import read_snapshot
from digitstream.worker.commit import MAX_PENDING_DEADLETTERS
from digitstream.worker.retry import BACKOFF_MAX

from .endurance_report import goals, redis_schedule, report_text

REPO = Path(__file__).resolve().parent.parent
KEYS = Keys.for_model("digitstream")
CONNECTIONS = 64
REPLICAS = 2
REDIS_EVENTS = ("SIGKILL", "SIGTERM", "SIGKILL")
BAD_EVERY = 500  # one bad entry per this many samples (dead-lettered, never learned)
DEADLETTER_MAX_LEN = 50  # the worker's dead-letter retention in this run, when the setting exists
PREDICTION_TTL = 30.0  # seconds a prediction input is kept for feedback (bounds Redis memory under the load)
INITIAL_SAMPLES = 2000  # published before the worker starts, so the replicas have a model to serve


@dataclass
class Timeline:
    """What happened when (unix times), for the report and to classify failures."""

    load_start: float = 0.0
    load_end: float = 0.0
    kills: list[float] = field(default_factory=list)
    redis: list[dict[str, Any]] = field(default_factory=list)  # {"kind", "stop", "back"} per Redis outage


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without DIGITSTREAM_* settings, plus ``settings`` (as DIGITSTREAM_<NAME>)."""
    env = without_settings(os.environ)
    env.update({f"DIGITSTREAM_{name.upper()}": value for name, value in settings.items()})
    return env


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (from /proc; psutil elsewhere), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    with contextlib.suppress(Exception):
        import psutil

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    return None


class Child:
    """One ``digitstream`` sub-command in its own process group, logging to a file."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "digitstream", *args]
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.args, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, **child_options()
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no final snapshot, no lease release (what a crash looks like)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int | None:
        return stop_process(self.process, timeout=15.0) if self.process is not None else None


class SteadyPublisher(threading.Thread):
    """Publishes cycled training samples at ``rate``/s, and a bad entry every ``bad_every``; counts what landed."""

    def __init__(self, url: str, images: np.ndarray, labels: np.ndarray, rate: float, bad_every: int) -> None:
        super().__init__(name="publisher", daemon=True)
        # No automatic retries by redis-py: the Publisher resends itself, fenced, and bad entries are checked.
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        self.publisher = Publisher(self.client, KEYS, rate=rate, retry_for=120.0)
        self.images, self.labels = images, labels
        self.bad_every = bad_every
        self.published = 0  # valid samples acknowledged
        self.bad_published = 0  # bad entries known to be in the stream
        self.position = 0  # index of the next training sample (cycled)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def publish_now(self, count: int) -> None:
        """Publish ``count`` samples at once (before the run: the worker's first model)."""
        ids = Publisher(self.client, KEYS).publish(self.images[:count], self.labels[:count])
        self.published += len(ids)
        self.position = count

    def run(self) -> None:
        size = self.publisher.batch_size
        n = len(self.labels)
        next_bad = self.published + self.bad_every
        try:
            while not self.stopping.is_set():
                index = np.arange(self.position, self.position + size) % n
                self.position += size
                self.published += len(self.publisher.publish(self.images[index], self.labels[index]))
                if self.published >= next_bad:
                    next_bad += self.bad_every
                    self._publish_bad()
        except BaseException as exc:  # reported by the run, never silently lost
            self.error = exc

    def _publish_bad(self) -> None:
        """XADD one entry with a label that is not a digit; after a lost answer, look before sending it again."""
        marker = f"{self.publisher.producer.producer_id}:{self.bad_published}".encode()
        fields = {b"pixels": bytes(784), b"label": b"x", b"marker": marker}
        while not self.stopping.is_set():
            try:
                self.client.xadd(KEYS.samples, fields)  # type: ignore[arg-type]
            except (redis.ConnectionError, redis.TimeoutError):
                if not self._landed(marker):
                    continue
            self.bad_published += 1
            return

    def _landed(self, marker: bytes) -> bool:
        """Whether the entry with ``marker`` is in the stream (or already dead-lettered), once Redis answers."""
        while True:
            try:
                recent = self.client.xrevrange(KEYS.samples, count=10 * self.bad_every)
                dead = self.client.xrevrange(KEYS.deadletter, count=100)
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.1)
                continue
            return any(fields.get(b"marker") == marker for _, fields in [*recent, *dead])  # type: ignore[misc]

    def finish(self) -> None:
        self.stopping.set()
        if self.ident is not None:  # started
            self.join(60)
        self.client.close()


class Monitor:
    """Samples RSS and Redis memory once a second."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        self.rss: dict[str, list[tuple[float, float]]] = {}
        self.stream: list[tuple[float, int, int | None, int]] = []  # (time, XLEN, MEMORY USAGE bytes, dead letters)
        self.redis_memory: list[tuple[float, int]] = []

    def sample(self, processes: dict[str, int]) -> None:
        now = time.time()
        for name, pid in processes.items():
            value = rss_mb(pid)
            if value is not None:
                self.rss.setdefault(name, []).append((now, value))
        with contextlib.suppress(redis.RedisError):
            length = int(self.client.xlen(KEYS.samples))
            usage = self.client.memory_usage(KEYS.samples, samples=0) if length else 0
            self.stream.append((now, length, usage, int(self.client.xlen(KEYS.deadletter))))
            self.redis_memory.append((now, int(self.client.info("memory")["used_memory"])))


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def served_samples(url: str) -> int | None:
    try:
        response = httpx.get(f"{url}/model", timeout=5)
    except httpx.HTTPError:
        return None
    return int(response.json()["samples_learned"]) if response.status_code == 200 else None


def latest_samples(client: redis.Redis) -> int:
    snapshot = read_snapshot(client, KEYS)
    return snapshot.samples_learned if snapshot is not None else 0


# -- the run ----------------------------------------------------------------------------------------


def run(
    minutes: float,
    *,
    rate: float = 1000.0,
    kill_every: float | None = None,
    retention: int | None = None,
    redis_down: float = 2.0,
    appendfsync: str = "always",
    bad_every: int = BAD_EVERY,
    data_dir: Path | None = None,
    workdir: Path,
    echo: Any = print,
) -> dict[str, Any]:
    """Run the endurance scenario; returns the report (see ``endurance_report.goals``)."""
    duration = minutes * 60
    kill_every = kill_every or min(60.0, duration / 3)
    # A third of what one worker consumes between kills (20,000 in the long run): every incarnation
    # lives long enough to trim, so the bound is tested, not just never reached.
    retention = retention if retention is not None else int(rate * kill_every / 3)
    directory = find_mnist(data_dir or Path(os.environ.get("DIGITSTREAM_TEST_DATA", REPO.parent / "shared/data/mnist")))
    train, test = load_mnist(directory, "train"), load_mnist(directory, "test")
    body = workdir / "body.json"
    body.write_bytes(orjson.dumps({"pixels": test.images[0].tolist()}))
    timeline = Timeline()
    kill_marks = [kill_every * k for k in range(1, math.ceil(duration / kill_every)) if kill_every * k < duration - 1]
    redis_events = redis_schedule(duration, kill_every, REDIS_EVENTS)
    worker_rss: list[float] = []  # each incarnation's RSS just before its SIGKILL

    server = RedisServer(
        workdir / "redis", appendonly=True, popen_options=child_options(), extra_args=("--appendfsync", appendfsync)
    ).start()
    ports = [free_port() for _ in range(REPLICAS)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    worker_settings = {"redis_url": server.url, "retention_max_len": str(retention)}
    if "deadletter_max_len" in Settings.model_fields:  # the dead-letter retention (issue 13, section 2)
        worker_settings["deadletter_max_len"] = str(DEADLETTER_MAX_LEN)
    worker_env = clean_env(**worker_settings)
    effective = load_settings(**{k: v for k, v in worker_settings.items() if k != "redis_url"})
    api_env = clean_env(redis_url=server.url, prediction_ttl=str(PREDICTION_TTL))
    worker = Child("worker", ["worker", "--log-level", "WARNING"], workdir / "worker.log", worker_env)
    apis = [
        Child(
            f"api{i + 1}",
            ["serve", "--port", str(port), "--log-level", "warning"],
            workdir / f"api{i + 1}.log",
            api_env,
        )
        for i, port in enumerate(ports)
    ]
    publisher = SteadyPublisher(server.url, train.images, train.labels, rate, bad_every)
    monitor = Monitor(server.url)
    load: subprocess.Popen[bytes] | None = None
    client = redis.Redis.from_url(server.url)
    try:
        publisher.publish_now(INITIAL_SAMPLES)
        spawned = time.monotonic()
        worker.start()
        wait_until(lambda: latest_samples(client) >= INITIAL_SAMPLES, 120, "the worker's first snapshot")
        startup_s = time.monotonic() - spawned
        for api in apis:
            api.start()
        for url in urls:
            wait_until(lambda url=url: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 120, f"{url} ready")
        echo(
            f"redis {server.url} (appendfsync {appendfsync}), worker pid {worker.pid}, replicas {', '.join(urls)}; "
            f"{duration:g} s of load, worker SIGKILL every {kill_every:g} s, Redis "
            + ", ".join(f"{kind} at {at:g} s" for at, kind in redis_events)
        )
        publisher.start()
        load_out = workdir / "load.json"
        load_args = [
            sys.executable, "-m", "digitstream.benchmarks.endurance_load", "--connections", str(CONNECTIONS),
            "--duration", str(duration), "--body", str(body), "--out", str(load_out),
        ]  # fmt: skip
        for url in urls:
            load_args += ["--url", url]
        timeline.load_start = time.time()
        start = time.monotonic()
        with open(workdir / "load.log", "wb") as out:
            load = subprocess.Popen(load_args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, **child_options())
        while load.poll() is None:
            elapsed = time.monotonic() - start
            if kill_marks and elapsed >= kill_marks[0]:
                kill_marks.pop(0)
                worker_rss.append(rss_mb(worker.pid) or 0.0)
                worker.kill()
                timeline.kills.append(time.time())
                worker.start()
                echo(f"{elapsed:6.1f} s  worker SIGKILLed and restarted (pid {worker.pid})")
            if redis_events and elapsed >= redis_events[0][0]:
                _, kind = redis_events.pop(0)
                stopped = time.time()
                server.kill() if kind == "SIGKILL" else server.stop()
                time.sleep(redis_down)
                server.start(timeout=120)  # replays the append-only file
                timeline.redis.append({"kind": kind, "stop": stopped, "back": time.time()})
                echo(f"{elapsed:6.1f} s  Redis {kind}ed and restarted (down {time.time() - stopped:.1f} s)")
            processes = {"worker": worker.pid, **{api.name: api.pid for api in apis}}
            monitor.sample(processes)
            for child in [worker, *apis]:
                if not child.alive():
                    raise RuntimeError(f"{child.name} exited with {child.process and child.process.returncode}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start - elapsed)))
        timeline.load_end = time.time()
        worker_rss.append(rss_mb(worker.pid) or 0.0)
        publisher.finish()
        if publisher.error is not None:
            raise RuntimeError(f"the publisher failed: {publisher.error!r}")
        echo(f"load done; published {publisher.published:,} (+ {publisher.bad_published} bad); waiting for the drain")
        drain_started = time.monotonic()
        with contextlib.suppress(RuntimeError):
            wait_until(lambda: latest_samples(client) >= publisher.published, 120, "the worker to drain")
        drain_s = time.monotonic() - drain_started
        with contextlib.suppress(RuntimeError):
            wait_until(lambda: all(served_samples(u) == latest_samples(client) for u in urls), 20, "the replicas")
        monitor.sample({"worker": worker.pid, **{api.name: api.pid for api in apis}})
        snapshot = read_snapshot(client, KEYS)
        meta = snapshot.typed_meta() if snapshot else None
        final = {
            "published": publisher.published,
            "bad_published": publisher.bad_published,
            "learned": meta.samples_learned if meta else 0,
            "deadletter_count": meta.deadletter_count if meta else 0,
            "duplicates_skipped": meta.duplicates_skipped if meta else 0,
            "acknowledged_lost": {
                "resent": publisher.publisher.producer.resent,
                "lost": publisher.publisher.producer.lost,
            },
            "deadletters": int(client.xlen(KEYS.deadletter)),
            "served": {url: served_samples(url) for url in urls},
            "drain_s": drain_s,
            "stream_length": int(client.xlen(KEYS.samples)),
            "version": snapshot.version if snapshot else None,
        }
    finally:
        if load is not None and load.poll() is None:
            stop_process(load, timeout=5)
        publisher.finish()
        for child in [worker, *apis]:
            child.stop()
        client.close()
        monitor.client.close()
        server.stop()
    try:
        load_report = json.loads((workdir / "load.json").read_text())
    except (OSError, ValueError) as exc:
        tail = (workdir / "load.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the load generator left no result ({exc}): {tail}") from None
    return {
        "minutes": minutes,
        "rate": rate,
        "bad_every": bad_every,
        "kill_every": kill_every,
        "retention_max_len": retention,
        "redis_down": redis_down,
        "appendfsync": appendfsync,
        "connections": CONNECTIONS,
        "bounds": {
            "lease_ttl": effective.lease_ttl,
            "snapshot_interval": effective.snapshot_interval,
            "worker_startup_s": startup_s,
            "backoff_max": BACKOFF_MAX,
            "deadletter_max_len": getattr(effective, "deadletter_max_len", None),
            "max_pending_deadletters": MAX_PENDING_DEADLETTERS,
        },
        "timeline": timeline.__dict__,
        "load": load_report,
        "final": final,
        "rss": monitor.rss,
        "worker_rss_before_kill": worker_rss,
        "stream": monitor.stream,
        "redis_memory": monitor.redis_memory,
        "logs": {child.name: str(child.log) for child in [worker, *apis]},
        "log_problems": log_problems([worker.log, *(api.log for api in apis)]),
    }


def log_problems(logs: list[Path]) -> dict[str, list[str]]:
    """ERROR lines and tracebacks in the children's logs (the first few of each)."""
    found = {}
    for log in logs:
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        bad = [line for line in lines if "ERROR" in line or "Traceback" in line or "CRITICAL" in line]
        if bad:
            found[log.name] = bad[:10]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of load (0.5 for the short run)")
    parser.add_argument("--rate", type=float, default=1000.0, help="samples published per second")
    parser.add_argument("--kill-every", type=float, default=None, help="seconds between worker SIGKILLs [60]")
    parser.add_argument(
        "--retention", type=int, default=None, help="the worker's retention_max_len [rate x kill period / 3: 20,000]"
    )
    parser.add_argument("--redis-down", type=float, default=2.0, help="seconds Redis stays down each time")
    parser.add_argument(
        "--appendfsync", choices=["always", "everysec"], default="always", help="Redis's fsync policy [always: no loss]"
    )
    parser.add_argument("--bad-every", type=int, default=BAD_EVERY, help="samples per bad entry published [500]")
    parser.add_argument("--data", type=Path, default=None, help="MNIST IDX directory")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and Redis files here (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the full report as JSON")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="endurance-")))
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(
            args.minutes,
            rate=args.rate,
            kill_every=args.kill_every,
            retention=args.retention,
            redis_down=args.redis_down,
            appendfsync=args.appendfsync,
            bad_every=args.bad_every,
            data_dir=args.data,
            workdir=workdir,
            echo=lambda s: print(s, flush=True),
        )
        items = goals(report)
        report["goals"] = [g.__dict__ for g in items]
        print(report_text(report, items), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    failed = [g.what for g in items if g.met is False]
    if failed:
        print(f"FAILED: {'; '.join(failed)}", flush=True)
        return 1
    print("all goals met", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
