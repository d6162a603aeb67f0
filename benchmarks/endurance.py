"""Endurance: steady publishing, learning and serving under load, with the worker killed every minute
and Redis restarted once. Exits 1 when a goal fails.

    python -m digitstream.benchmarks.endurance --minutes 10      # the long run (docs/benchmarks.md)
    python -m digitstream.benchmarks.endurance --minutes 0.75    # the short run (tests/test_endurance.py, in CI)

Everything is a real process on this machine: an embedded redis-server (append-only file), one
``digitstream worker``, two ``digitstream serve`` replicas on free ports, a publisher thread sending
MNIST training samples (cycled) at a steady rate, and a load generator in its own process
(``benchmarks/endurance_load.py``) keeping 64 connections busy with ``POST /predict`` on both
replicas. During the run the worker is SIGKILLed and restarted every ``--kill-every`` seconds
(60 s; a third of the run when that is shorter) and Redis is restarted once, half a kill period
after the middle of the run (so never at the same moment as a kill).

**Redis restart and persistence.** Redis runs with ``appendonly yes`` and ``appendfsync everysec``
and is restarted with SIGTERM, on which it writes and fsyncs its append-only file before exiting,
so no acknowledged write is lost and ``appendfsync always`` is not needed (it would only matter
for a crash of Redis itself, which this run does not simulate). It stays down ``--redis-down``
seconds (2 s). The publisher does not retry a batch whose answer was lost (that could duplicate
samples): once Redis answers again it counts the entries after its last acknowledged id, which
are exactly the ones of that batch that landed (it is the stream's only writer).

Goals (each printed with its measured value):

* zero failed prediction requests, except 503s inside the Redis-restart window (from the stop to
  ``RESTART_GRACE`` seconds after Redis answers again): the documented answer of endpoints that
  need Redis. ``POST /predict`` answers from memory, so none are expected there either;
* samples learned (the final snapshot) == samples published, after the publisher stops and the
  worker drains; no dead letters; both replicas serve that final model;
* the stream stays within the retention bound: a worker trims learned entries beyond the newest
  ``retention_max_len`` it has consumed *since it started* (``worker/retention.py``), so after each
  restart up to ``retention_max_len`` old entries remain until the new worker has consumed as many;
  the bound is ``2 x retention_max_len + rate x BACKLOG_SECONDS``;
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
from digitstream.protocol import Keys, parse_id
from digitstream.settings import without_settings
from digitstream.store import read_snapshot

REPO = Path(__file__).resolve().parent.parent
KEYS = Keys.for_model("digitstream")
CONNECTIONS = 64
REPLICAS = 2
RESTART_GRACE = 5.0  # seconds after Redis answers again still inside the restart window
BACKLOG_SECONDS = 15.0  # stream entries not yet learned: lease takeover (3 s), start-up, outage backoff (<= 5 s)
MEMORY_MIN_MINUTES = 5.0
RSS_GROWTH = 0.20
RSS_SLACK_MB = 20.0
PREDICTION_TTL = 30.0  # seconds a prediction input is kept for feedback (bounds Redis memory under the load)
INITIAL_SAMPLES = 2000  # published before the worker starts, so the replicas have a model to serve


@dataclass
class Goal:
    what: str
    measured: str
    met: bool | None  # None: not judged in this run (reported only)


@dataclass
class Timeline:
    """What happened when (unix times), for the report and to classify failures."""

    load_start: float = 0.0
    load_end: float = 0.0
    kills: list[float] = field(default_factory=list)
    redis_stop: float | None = None
    redis_back: float | None = None


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
    """Publishes cycled training samples at ``rate``/s; counts exactly what reached the stream."""

    def __init__(self, url: str, images: np.ndarray, labels: np.ndarray, rate: float) -> None:
        super().__init__(name="publisher", daemon=True)
        # No automatic retries: a re-sent pipeline whose answer was lost would duplicate samples.
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        self.publisher = Publisher(self.client, KEYS, rate=rate)
        self.images, self.labels = images, labels
        self.published = 0
        self.in_doubt_landed = 0  # samples of failed batches that reached the stream anyway
        self.failed_batches = 0
        self.last_id: bytes | str | None = None  # the newest entry known to be in the stream
        self.position = 0  # index of the next training sample (cycled)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def publish_now(self, count: int) -> None:
        """Publish ``count`` samples at once (before the run: the worker's first model)."""
        ids = Publisher(self.client, KEYS).publish(self.images[:count], self.labels[:count])
        self.published += len(ids)
        self.last_id = ids[-1]
        self.position = count

    def run(self) -> None:
        size = self.publisher.batch_size  # one pipeline per call: a failure leaves one batch in doubt
        n = len(self.labels)
        try:
            while not self.stopping.is_set():
                index = np.arange(self.position, self.position + size) % n
                self.position += size
                try:
                    ids = self.publisher.publish(self.images[index], self.labels[index])
                except (redis.ConnectionError, redis.TimeoutError):
                    self.failed_batches += 1
                    self._count_landed()
                    continue
                self.published += len(ids)
                self.last_id = ids[-1]
        except BaseException as exc:  # reported by the run, never silently lost
            self.error = exc

    def _count_landed(self) -> None:
        """After a lost answer: wait for Redis, then count the entries after the last acknowledged id."""
        while True:  # Redis comes back: the run restarts it
            try:
                after = "({}-{}".format(*parse_id(self.last_id)) if self.last_id else "-"
                landed = self.client.xrange(KEYS.samples, min=after, max="+")
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.1)
                continue
            if landed:
                self.published += len(landed)
                self.in_doubt_landed += len(landed)
                self.last_id = landed[-1][0]
            return

    def finish(self) -> None:
        self.stopping.set()
        if self.ident is not None:  # started
            self.join(30)
        self.client.close()


class Monitor:
    """Samples RSS and Redis memory once a second."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        self.rss: dict[str, list[tuple[float, float]]] = {}
        self.stream: list[tuple[float, int, int | None]] = []  # (time, XLEN, MEMORY USAGE bytes)
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
            self.stream.append((now, length, usage))
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
    data_dir: Path | None = None,
    workdir: Path,
    echo: Any = print,
) -> dict[str, Any]:
    """Run the endurance scenario; returns the report (see ``goals``)."""
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
    restart_at = (math.floor(duration / 2 / kill_every) + 0.5) * kill_every
    worker_rss: list[float] = []  # each incarnation's RSS just before its SIGKILL

    server = RedisServer(workdir / "redis", appendonly=True, popen_options=child_options()).start()
    ports = [free_port() for _ in range(REPLICAS)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    worker_env = clean_env(redis_url=server.url, retention_max_len=str(retention))
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
    publisher = SteadyPublisher(server.url, train.images, train.labels, rate)
    monitor = Monitor(server.url)
    load: subprocess.Popen[bytes] | None = None
    client = redis.Redis.from_url(server.url)
    try:
        publisher.publish_now(INITIAL_SAMPLES)
        worker.start()
        wait_until(lambda: latest_samples(client) >= INITIAL_SAMPLES, 120, "the worker's first snapshot")
        for api in apis:
            api.start()
        for url in urls:
            wait_until(lambda url=url: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 120, f"{url} ready")
        echo(
            f"redis {server.url}, worker pid {worker.pid}, replicas {', '.join(urls)}; "
            f"{duration:g} s of load, worker SIGKILL every {kill_every:g} s, Redis restart at {restart_at:g} s"
        )
        publisher.start()
        load_out = workdir / "load.json"
        load_args = [
            sys.executable,
            "-m",
            "digitstream.benchmarks.endurance_load",
            "--connections",
            str(CONNECTIONS),
            "--duration",
            str(duration),
            "--body",
            str(body),
            "--out",
            str(load_out),
        ]
        for url in urls:
            load_args += ["--url", url]
        timeline.load_start = time.time()
        start = time.monotonic()
        with open(workdir / "load.log", "wb") as out:
            load = subprocess.Popen(load_args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, **child_options())
        restarted = False
        while load.poll() is None:
            elapsed = time.monotonic() - start
            if kill_marks and elapsed >= kill_marks[0]:
                kill_marks.pop(0)
                worker_rss.append(rss_mb(worker.pid) or 0.0)
                worker.kill()
                timeline.kills.append(time.time())
                worker.start()
                echo(f"{elapsed:6.1f} s  worker SIGKILLed and restarted (pid {worker.pid})")
            if not restarted and elapsed >= restart_at:
                restarted = True
                timeline.redis_stop = time.time()
                server.stop()
                time.sleep(redis_down)
                server.start()
                timeline.redis_back = time.time()
                echo(f"{elapsed:6.1f} s  Redis restarted (down {timeline.redis_back - timeline.redis_stop:.1f} s)")
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
        echo(f"load done; published {publisher.published:,}; waiting for the worker to drain")
        drain_started = time.monotonic()
        with contextlib.suppress(RuntimeError):
            wait_until(lambda: latest_samples(client) >= publisher.published, 120, "the worker to drain")
        drain_s = time.monotonic() - drain_started
        with contextlib.suppress(RuntimeError):
            wait_until(lambda: all(served_samples(u) == latest_samples(client) for u in urls), 20, "the replicas")
        monitor.sample({"worker": worker.pid, **{api.name: api.pid for api in apis}})
        snapshot = read_snapshot(client, KEYS)
        final = {
            "published": publisher.published,
            "failed_publish_batches": publisher.failed_batches,
            "in_doubt_landed": publisher.in_doubt_landed,
            "learned": snapshot.samples_learned if snapshot else 0,
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
        "kill_every": kill_every,
        "retention_max_len": retention,
        "redis_down": redis_down,
        "connections": CONNECTIONS,
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


# -- the verdict ------------------------------------------------------------------------------------


def classify(report: dict[str, Any]) -> dict[str, int]:
    """Answers by kind: ok, 503 inside the Redis-restart window, and failures (everything else)."""
    timeline = report["timeline"]
    window = (
        (timeline["redis_stop"] - 1, timeline["redis_back"] + RESTART_GRACE)
        if timeline["redis_stop"] is not None
        else (math.inf, -math.inf)
    )
    out = {"ok": 0, "503 in restart window": 0, "failed": 0, "failed in restart window": 0}
    for second, counts in report["load"]["seconds"].items():
        inside = window[0] <= int(second) <= window[1]
        for kind, count in counts.items():
            if kind == "ok":
                out["ok"] += count
            elif kind == "503" and inside:
                out["503 in restart window"] += count
            else:
                out["failed"] += count
                out["failed in restart window"] += count if inside else 0
    return out


def rss_start_end(samples: list[tuple[float, float]], load_start: float, warmup: float) -> tuple[float, float, float]:
    """(RSS after the warm-up, at the end, the maximum), in MB."""
    after = [value for t, value in samples if t >= load_start + warmup] or [value for _, value in samples]
    return after[0], after[-1], max(after)


def goals(report: dict[str, Any]) -> list[Goal]:
    answers = classify(report)
    final = report["final"]
    timeline = report["timeline"]
    duration = report["minutes"] * 60
    warmup = min(60.0, duration / 4)
    items = [
        Goal("prediction requests answered ok", f"{answers['ok']:,}", answers["ok"] > 0),
        Goal(
            "failed prediction requests (outside the documented 503s of the Redis restart)",
            f"{answers['failed']:,} (of which {answers['failed in restart window']:,} during the restart)",
            answers["failed"] == 0,
        ),
        Goal(
            "503 answers during the Redis restart (documented, allowed)", f"{answers['503 in restart window']:,}", None
        ),
        Goal(
            "samples learned == samples published (after the drain)",
            f"{final['learned']:,} learned, {final['published']:,} published "
            f"({final['in_doubt_landed']} from {final['failed_publish_batches']} batches whose answer was lost)",
            final["learned"] == final["published"],
        ),
        Goal("dead letters", f"{final['deadletters']}", final["deadletters"] == 0),
        Goal(
            "both replicas serve the final model",
            ", ".join(f"{v}" for v in final["served"].values()),
            all(v == final["learned"] for v in final["served"].values()),
        ),
        Goal(
            "worker SIGKILLs / Redis restarts",
            f"{len(timeline['kills'])} / {int(timeline['redis_stop'] is not None)}",
            len(timeline["kills"]) >= 1 and timeline["redis_stop"] is not None,
        ),
    ]
    lengths = [length for _, length, _ in report["stream"]]
    bound = 2 * report["retention_max_len"] + report["rate"] * BACKLOG_SECONDS
    peak_usage = max((usage or 0 for _, _, usage in report["stream"]), default=0)
    items.append(
        Goal(
            f"stream length within the retention bound (2 x {report['retention_max_len']:,} + "
            f"{BACKLOG_SECONDS:g} s x {report['rate']:g}/s = {bound:,.0f})",
            f"peak {max(lengths, default=0):,} entries ({peak_usage / 2**20:.1f} MB), end {final['stream_length']:,}",
            max(lengths, default=0) <= bound,
        )
    )
    memory = [used for _, used in report["redis_memory"]]
    if memory:
        items.append(
            Goal(
                "Redis used memory (start / peak / end)",
                f"{memory[0] / 2**20:.0f} / {max(memory) / 2**20:.0f} / {memory[-1] / 2**20:.0f} MB",
                None,
            )
        )
    judged = report["minutes"] >= MEMORY_MIN_MINUTES
    for name, samples in sorted(report["rss"].items()):
        if name == "worker":
            continue
        start, end, peak = rss_start_end(samples, timeline["load_start"], warmup)
        flat = end <= start * (1 + RSS_GROWTH) + RSS_SLACK_MB
        items.append(
            Goal(
                f"{name} RSS after {warmup:g} s warm-up / end / max (MB)",
                f"{start:.0f} / {end:.0f} / {peak:.0f}",
                flat if judged else None,
            )
        )
    incarnations = report["worker_rss_before_kill"]
    if incarnations:
        items.append(
            Goal("worker RSS at the end of each incarnation (MB)", " / ".join(f"{v:.0f}" for v in incarnations), None)
        )
    if report["log_problems"]:
        items.append(Goal("ERROR lines in the logs", json.dumps(report["log_problems"])[:2000], None))
    return items


def report_text(report: dict[str, Any], items: list[Goal]) -> str:
    load = report["load"]
    lines = [
        f"endurance: {report['minutes']:g} min, publisher {report['rate']:g} samples/s, {report['connections']} "
        f"connections on {len(load['urls'])} replicas, worker SIGKILL every {report['kill_every']:g} s, "
        f"Redis restarted once ({report['redis_down']:g} s down), retention {report['retention_max_len']:,}",
        f"requests: {json.dumps(load['totals'])}; latency ok answers p50 {load['latency_ms']['p50']:.1f} ms, "
        f"p99 {load['latency_ms']['p99']:.1f} ms, max {load['latency_ms']['max']:.0f} ms; "
        f"per replica: {json.dumps(load['per_url'])}",
        "",
        "| check | measured | verdict |",
        "| --- | --- | --- |",
    ]
    for g in items:
        verdict = "reported" if g.met is None else ("met" if g.met else "**NOT met**")
        lines.append(f"| {g.what} | {g.measured} | {verdict} |")
    if load["examples"]:
        lines += ["", "first failures:", *(json.dumps(e) for e in load["examples"][:10])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of load (0.75 for the short run)")
    parser.add_argument("--rate", type=float, default=1000.0, help="samples published per second")
    parser.add_argument("--kill-every", type=float, default=None, help="seconds between worker SIGKILLs [60]")
    parser.add_argument(
        "--retention", type=int, default=None, help="the worker's retention_max_len [rate x kill period / 3: 20,000]"
    )
    parser.add_argument("--redis-down", type=float, default=2.0, help="seconds Redis stays down in its restart")
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
