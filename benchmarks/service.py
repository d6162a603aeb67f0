"""The service's speed, side by side in one run: /predict against a trivial endpoint, batches, freshness.

Everything is real: an embedded redis-server, a ``digitstream worker`` subprocess that learns the
first 10,000 shared MNIST training images (its snapshot is what the service serves), the app
under ``digitstream serve`` (uvicorn, uvloop + httptools, no access log) in its own process, and
the load generated from a separate process: ``wrk`` when installed (Debian package ``wrk``), else
``benchmarks/http_load.py`` (asyncio, keep-alive).

* **/predict vs trivial**: closed-loop load at 16 connections, alternating in each repetition
  between ``GET /healthz`` (a constant answer of the same app: the trivial endpoint) and
  ``POST /predict`` with a real MNIST test image, so that a noisy neighbour slows both alike.
  Goals: /predict >= 70 % of the trivial endpoint's requests/s, p99 <= 15 ms.
* **/predict/batch**: 10,000 test images per request, as a binary body (N x 784 bytes) and as
  JSON, sent one after the other by a client in this process. Goal: >= 200,000 images/s.
* **freshness**: XADD one labelled sample to the stream, then poll ``GET /model`` until the
  served model's ``last_id`` includes it (the worker learned it, wrote a snapshot, the service
  loaded it); with default settings. Split into "XADD -> snapshot event" (the worker) and
  "snapshot event -> served" (the service's hot reload). Goal: median <= 1 s.

    python benchmarks/service.py [--data DIR] [--duration 5] [--repeats 3] [--freshness 20] [--no-wrk]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis

from digitstream.clients.embedded_redis import RedisServer, free_port
from digitstream.datasets import find_mnist, load_mnist
from digitstream.protocol import Keys, encode_sample, parse_id
from digitstream.settings import without_settings
from digitstream.store import parse_event, read_snapshot

REPO = Path(__file__).resolve().parent.parent
KEYS = Keys.for_model("digitstream")
TRAINING_SAMPLES = 10_000
BATCH = 10_000
GOAL_RATIO = 0.70
GOAL_P99_MS = 15.0
GOAL_BATCH_RATE = 200_000
GOAL_FRESHNESS_S = 1.0

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "digitstream", *args]


def clean_env() -> dict[str, str]:
    """This environment without DIGITSTREAM_* settings: the processes get theirs from options."""
    return without_settings(os.environ)


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess stopped with SIGTERM (then SIGKILL) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# -- load -------------------------------------------------------------------------------------------


def load(
    url: str, body: bytes | None, duration: float, connections: int, workdir: Path, use_wrk: bool
) -> dict[str, float]:
    """Closed-loop load from a separate process; requests/s and latency percentiles (ms)."""
    wrk = shutil.which("wrk") if use_wrk else None
    if wrk:
        script = workdir / ("post.lua" if body is not None else "get.lua")
        if not script.exists():
            text = WRK_DONE
            if body is not None:
                text = (
                    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = [==[{body.decode()}]==]\n" + WRK_DONE
                )
            script.write_text(text)
        args = [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    else:
        args = [sys.executable, "-m", "digitstream.benchmarks.http_load", url, "--duration", str(duration),
                "--connections", str(connections)]  # fmt: skip
        if body is not None:
            path = workdir / "body.json"
            path.write_bytes(body)
            args += ["--body", str(path)]
    output = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    summary = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    if summary["errors"] or summary["non2xx"]:
        raise RuntimeError(f"load on {url}: {summary['errors']} errors, {summary['non2xx']} non-2xx answers")
    return {
        "rps": summary["requests"] / (summary["duration_us"] / 1e6),
        "p50_ms": summary["p50_us"] / 1000,
        "p90_ms": summary["p90_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "max_ms": summary["max_us"] / 1000,
    }


def compare_predict(url: str, image: np.ndarray, duration: float, repeats: int, connections: int, workdir: Path,
                    use_wrk: bool) -> dict[str, Any]:  # fmt: skip
    body = orjson.dumps({"pixels": image.tolist()})
    cases = {"GET /healthz (trivial)": (f"{url}/healthz", None), "POST /predict": (f"{url}/predict", body)}
    for target, payload in cases.values():  # warm-up: connections, caches, the CPU's clock
        load(target, payload, min(duration, 2.0), connections, workdir, use_wrk)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (target, payload) in cases.items():
            runs[name].append(load(target, payload, duration, connections, workdir, use_wrk))
    medians = {
        name: {key: statistics.median(run[key] for run in values) for key in values[0]} for name, values in runs.items()
    }
    trivial, predict = medians["GET /healthz (trivial)"], medians["POST /predict"]
    return {"runs": runs, "medians": medians, "ratio": predict["rps"] / trivial["rps"], "p99_ms": predict["p99_ms"]}


# -- batches ----------------------------------------------------------------------------------------


def batches(url: str, images: np.ndarray, labels: np.ndarray, repeats: int) -> dict[str, Any]:
    binary = images[:BATCH].tobytes()
    as_json = orjson.dumps({"images": images[:BATCH].tolist()})
    bodies = {
        "binary (N x 784 bytes)": (binary, "application/octet-stream"),
        "JSON": (as_json, "application/json"),
    }
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        for name, (body, content_type) in bodies.items():
            seconds = []
            for attempt in range(repeats + 1):  # the first is a warm-up
                started = time.perf_counter()
                response = http.post("/predict/batch", content=body, headers={"Content-Type": content_type})
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                if attempt == 0:
                    digits = np.array(response.json()["digits"])
                    accuracy = float(np.mean(digits == labels[:BATCH]))
                else:
                    seconds.append(elapsed)
            out[name] = {
                "body_mb": len(body) / 1e6,
                "seconds": seconds,
                "images_per_s": BATCH / statistics.median(seconds),
                "accuracy": accuracy,
            }
    return out


# -- freshness --------------------------------------------------------------------------------------


class EventClock:
    """When each snapshot event arrived (a subscriber in this process)."""

    def __init__(self, url: str) -> None:
        self.times: dict[int, float] = {}
        self._client = redis.Redis.from_url(url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(KEYS.snapshot_events)
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._stop = False
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop:
            message = self._pubsub.get_message(timeout=0.1)
            if message is not None:
                self.times[parse_event(message["data"])] = time.perf_counter()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._pubsub.close()
        self._client.close()


def freshness(url: str, redis_url: str, images: np.ndarray, labels: np.ndarray, repeats: int) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    clock = EventClock(redis_url)
    rng = random.Random(7)
    total, to_event, to_served = [], [], []
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            for i in range(repeats):
                time.sleep(rng.uniform(0.1, 0.7))  # land anywhere in the worker's snapshot cadence
                started = time.perf_counter()
                entry_id = parse_id(client.xadd(KEYS.samples, encode_sample(images[i], int(labels[i]))))  # type: ignore[arg-type]
                while True:
                    body = http.get("/model").json()
                    if parse_id(body["last_id"]) >= entry_id:
                        served = time.perf_counter()
                        break
                    time.sleep(0.002)
                total.append(served - started)
                event = clock.times.get(body["version"])
                if event is not None:
                    to_event.append(event - started)
                    to_served.append(served - event)
    finally:
        clock.close()
        client.close()
    return {
        "seconds": total,
        "median_s": statistics.median(total),
        "p90_s": float(np.percentile(total, 90)),
        "max_s": max(total),
        "xadd_to_event_median_s": statistics.median(to_event) if to_event else None,
        "event_to_served_median_s": statistics.median(to_served) if to_served else None,
        "event_to_served_max_s": max(to_served) if to_served else None,
    }


# -- the run ----------------------------------------------------------------------------------------


def run(
    data_dir: Path | None = None,
    duration: float = 5.0,
    repeats: int = 3,
    connections: int = 16,
    batch_repeats: int = 5,
    freshness_repeats: int = 20,
    use_wrk: bool = True,
    server: RedisServer | None = None,
) -> dict[str, Any]:
    """Run everything; returns the numbers, the goals and whether they were met.

    ``server``: an already running (and empty) redis-server to use instead of starting one.
    """
    directory = find_mnist(data_dir or Path(os.environ.get("DIGITSTREAM_TEST_DATA", REPO.parent / "shared/data/mnist")))
    train, test = load_mnist(directory, "train"), load_mnist(directory, "test")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = server or stack.enter_context(RedisServer(Path(tmp) / "redis", appendonly=False))
        workdir = Path(tmp)
        client = redis.Redis.from_url(server.url)
        pipe = client.pipeline(transaction=False)
        for image, label in zip(train.images[:TRAINING_SAMPLES], train.labels[:TRAINING_SAMPLES], strict=True):
            pipe.xadd(KEYS.samples, encode_sample(image, int(label)))  # type: ignore[arg-type]
        pipe.execute()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        worker_args = cli_command("worker", "--redis-url", server.url, "--log-level", "warning")
        serve_args = cli_command("serve", "--redis-url", server.url, "--port", str(port), "--log-level", "warning")
        with process(worker_args, workdir / "worker.log"), process(serve_args, workdir / "serve.log"):

            def learned_all() -> bool:
                snapshot = read_snapshot(client, KEYS)
                return snapshot is not None and snapshot.samples_learned >= TRAINING_SAMPLES

            wait_until(learned_all, 120, "the worker to learn the training samples")
            wait_until(lambda: ready(url), 60, "the service to be ready")
            # The served model's own learning curve (what the dashboard draws) for the suite's plot.
            served = httpx.get(f"{url}/model", timeout=10).json()
            predict = compare_predict(url, test.images[0], duration, repeats, connections, workdir, use_wrk)
            batch = batches(url, test.images, test.labels, batch_repeats)
            fresh = freshness(url, server.url, test.images, test.labels, freshness_repeats)
        client.close()
    binary_rate = batch["binary (N x 784 bytes)"]["images_per_s"]
    return {
        "load_generator": "wrk" if use_wrk and shutil.which("wrk") else "benchmarks/http_load.py",
        "connections": connections,
        "duration": duration,
        "repeats": repeats,
        "predict": predict,
        "batch": batch,
        "freshness": fresh,
        "served_model": {"samples_learned": served["samples_learned"], "metrics": served["metrics"]},
        "goals_met": {
            "predict_ratio": predict["ratio"] >= GOAL_RATIO,
            "predict_p99": predict["p99_ms"] <= GOAL_P99_MS,
            "batch_rate": binary_rate >= GOAL_BATCH_RATE,
            "freshness": fresh["median_s"] <= GOAL_FRESHNESS_S,
        },
    }


def report_text(report: dict[str, Any]) -> str:
    p = report["predict"]
    trivial = p["medians"]["GET /healthz (trivial)"]["rps"]
    lines = [
        f"load: {report['load_generator']}, {report['connections']} connections, "
        f"{report['repeats']} x {report['duration']:g} s per case (alternating), medians; {os.cpu_count()} cores",
        "",
        "| endpoint | requests/s | vs trivial | p50 ms | p90 ms | p99 ms | runs (req/s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, m in p["medians"].items():
        runs = ", ".join(f"{r['rps']:,.0f}" for r in p["runs"][name])
        lines.append(
            f"| {name} | {m['rps']:,.0f} | {m['rps'] / trivial:.0%} | {m['p50_ms']:.2f} | {m['p90_ms']:.2f} "
            f"| {m['p99_ms']:.2f} | {runs} |"
        )
    lines += ["", f"| /predict/batch, {BATCH:,} images | images/s | ms per request | body MB | accuracy |",
              "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, b in report["batch"].items():
        ms = statistics.median(b["seconds"]) * 1000
        lines.append(f"| {name} | {b['images_per_s']:,.0f} | {ms:.0f} | {b['body_mb']:.1f} | {b['accuracy']:.2%} |")
    f = report["freshness"]
    lines += [
        "",
        f"freshness (XADD -> served model has learned it), {len(f['seconds'])} samples: median {f['median_s']:.3f} s, "
        f"p90 {f['p90_s']:.3f} s, max {f['max_s']:.3f} s",
    ]
    if f["event_to_served_median_s"] is not None:
        lines.append(
            f"  of which XADD -> snapshot written (worker): median {f['xadd_to_event_median_s']:.3f} s; "
            f"snapshot event -> served (hot reload): median {f['event_to_served_median_s'] * 1000:.1f} ms, "
            f"max {f['event_to_served_max_s'] * 1000:.1f} ms"
        )
    g = report["goals_met"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines += [
        "",
        f"goals: /predict >= {GOAL_RATIO:.0%} of trivial: {p['ratio']:.0%} ({verdict(g['predict_ratio'])}); "
        f"p99 <= {GOAL_P99_MS:g} ms: {p['p99_ms']:.2f} ms ({verdict(g['predict_p99'])}); "
        f"batch >= {GOAL_BATCH_RATE:,} images/s: {report['batch']['binary (N x 784 bytes)']['images_per_s']:,.0f} "
        f"({verdict(g['batch_rate'])}); freshness median <= {GOAL_FRESHNESS_S:g} s: {f['median_s']:.3f} s "
        f"({verdict(g['freshness'])})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MNIST IDX directory")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per endpoint (alternating)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch-repeats", type=int, default=5)
    parser.add_argument("--freshness", type=int, default=20, help="samples timed from XADD to served")
    parser.add_argument("--no-wrk", action="store_true", help="use benchmarks/http_load.py even if wrk is installed")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON too")
    args = parser.parse_args(argv)
    report = run(
        args.data, args.duration, args.repeats, args.connections, args.batch_repeats, args.freshness, not args.no_wrk
    )
    print(report_text(report))
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
