"""What an anonymous request costs the API: crafted uploads, maximum JSON batches, /predict under an upload flood.

Everything is real: an embedded redis-server holding a snapshot, the API under ``digitstream serve``
in its own process (measured from outside through /proc), the requests from this process.

* **uploads**: each file of :mod:`hostile_images` (every PNG/JPEG mode, small files of huge images,
  refused formats) is posted once to ``/predict/image``; the API's peak RSS (``VmHWM``, reset
  before each request through ``/proc/<pid>/clear_refs``) above its resident size after a
  warm-up, and its CPU time (user + system) for that request. Goal: <= 64 MB and <= 100 ms each.
* **JSON batches**: 16 concurrent maximum-size JSON ``/predict/batch`` bodies (10,000 images of
  "255, ", ~39 MB each); the peak RSS above the warm-up and the answers. Goal: <= 400 MB, every
  answer a 200 or a 503/429 with Retry-After.
* **/predict under an upload flood**: /predict's latency at 16 connections (a separate load process)
  while 16 clients post the costliest accepted uploads back to back, side by side with /predict
  alone. Goal: p99 <= 15 ms.

    python benchmarks/uploads.py [--pixels N] [--duration 5] [--skip-flood] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis

from digitstream.benchmarks.hostile_images import Upload, hostile_uploads
from digitstream.benchmarks.service import cli_command, load, process, ready, wait_until
from digitstream.clients.embedded_redis import RedisServer, free_port
from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import Keys
from digitstream.snapshot import snapshot_of
from digitstream.store import write_snapshot

KEYS = Keys.for_model("digitstream")
GOAL_UPLOAD_MB = 64.0
GOAL_UPLOAD_CPU_MS = 100.0
GOAL_BATCH_MB = 400.0
GOAL_P99_MS = 15.0
BATCHES_IN_FLIGHT = 16
UPLOADERS = 16
MAX_BATCH = 10_000
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


class ProcessMeter:
    """Peak and current resident memory and CPU time of another process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status(self, field: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
        raise RuntimeError(f"{field} not in /proc/{self.pid}/status")

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def peak_mb(self) -> float:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        """Start a new peak from the current resident size (Linux: ``echo 5 > /proc/PID/clear_refs``)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime, all threads


def write_model(url: str) -> int:
    """A small softmax snapshot (random data: the costs measured here do not depend on the weights)."""
    rng = np.random.default_rng(7)
    learner = DeltaRuleLearner(HyperParameters.for_rule("softmax"))
    learner.learn_many(rng.integers(0, 256, (200, 784), dtype=np.uint8), rng.integers(0, 10, 200))
    client = redis.Redis.from_url(url)
    try:
        client.set(KEYS.lease, "bench")
        snapshot = snapshot_of(learner, model="digitstream", samples_learned=learner.n_samples, last_id="1-0",
                               created_at=time.time(), entries_consumed=learner.n_samples, metrics={})  # fmt: skip
        return write_snapshot(client, KEYS, snapshot, lease_token="bench", keep=3)
    finally:
        client.close()


@contextmanager
def served(workdir: Path, *options: str, server: RedisServer | None = None) -> Iterator[tuple[str, ProcessMeter]]:
    """``digitstream serve`` on a Redis holding a snapshot; yields its URL and a meter on its process."""
    with ExitStack() as stack:
        server = server or stack.enter_context(RedisServer(workdir / "redis", appendonly=False))
        redis.Redis.from_url(server.url).flushall()
        write_model(server.url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = cli_command("serve", "--redis-url", server.url, "--port", str(port), "--log-level", "warning", *options)
        proc = stack.enter_context(process(args, workdir / "serve.log"))
        wait_until(lambda: ready(url), 60, "the service to be ready")
        yield url, ProcessMeter(proc.pid)


def warm_up(http: httpx.Client, uploads: list[Upload]) -> None:
    """Every code path once (imports, plugin registration, the thread pool), so the baseline includes them."""
    small = next(u for u in hostile_uploads(100_000, refused_formats=False) if u.name == "PNG RGBA")
    for _ in range(3):
        post_upload(http, small)
    http.post("/predict/batch", content=orjson.dumps({"images": [[0] * 784] * 2000}),
              headers={"Content-Type": "application/json"})  # fmt: skip


def post_upload(http: httpx.Client, upload: Upload) -> httpx.Response:
    return http.post("/predict/image", files={"file": ("upload", upload.data, upload.content_type)})


def upload_costs(url: str, meter: ProcessMeter, uploads: list[Upload], repeats: int = 3) -> dict[str, Any]:
    """Each upload ``repeats`` times: the highest peak RSS over the warm-up baseline, the median CPU time."""
    rows = []
    with httpx.Client(base_url=url, timeout=300) as http:
        warm_up(http, uploads)
        time.sleep(0.5)
        baseline = meter.rss_mb()
        for upload in uploads:
            peaks, cpus, walls = [], [], []
            for _ in range(repeats):
                meter.reset_peak()
                cpu = meter.cpu_seconds()
                started = time.perf_counter()
                response = post_upload(http, upload)
                walls.append(time.perf_counter() - started)
                cpus.append(meter.cpu_seconds() - cpu)
                peaks.append(meter.peak_mb())
            detail = response.json().get("detail", "") if response.status_code != 200 else ""
            rows.append({
                "name": upload.name, "size": f"{upload.width}x{upload.height}", "bytes": len(upload.data),
                "status": response.status_code, "detail": detail, "extra_peak_mb": max(peaks) - baseline,
                "cpu_ms": statistics.median(cpus) * 1000, "wall_ms": statistics.median(walls) * 1000,
            })  # fmt: skip
    worst_mb = max(r["extra_peak_mb"] for r in rows)
    worst_cpu = max(r["cpu_ms"] for r in rows)
    return {"baseline_rss_mb": baseline, "rows": rows, "worst_extra_peak_mb": worst_mb, "worst_cpu_ms": worst_cpu,
            "repeats": repeats}  # fmt: skip


def max_json_batch() -> bytes:
    """The largest JSON batch a client may send: 10,000 images of 784 values "255" (json.dumps spacing)."""
    return json.dumps({"images": [[255] * 784] * MAX_BATCH}).encode()


def json_batches(url: str, meter: ProcessMeter, in_flight: int = BATCHES_IN_FLIGHT) -> dict[str, Any]:
    body = max_json_batch()
    statuses: Counter[str] = Counter()
    missing_retry_after = 0
    lock = threading.Lock()
    with httpx.Client(base_url=url, timeout=300) as http:
        warm_up(http, [])
    time.sleep(0.5)
    baseline = meter.rss_mb()
    meter.reset_peak()
    barrier = threading.Barrier(in_flight)

    def send() -> None:
        nonlocal missing_retry_after
        with httpx.Client(base_url=url, timeout=300) as http:
            barrier.wait()
            response = http.post("/predict/batch", content=body, headers={"Content-Type": "application/json"})
        with lock:
            statuses[str(response.status_code)] += 1
            if response.status_code != 200 and "retry-after" not in response.headers:
                missing_retry_after += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=send) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "body_mb": len(body) / 1e6, "in_flight": in_flight, "baseline_rss_mb": baseline,
        "extra_peak_mb": meter.peak_mb() - baseline, "statuses": dict(statuses),
        "non_200_without_retry_after": missing_retry_after, "seconds": time.perf_counter() - started,
    }  # fmt: skip


def predict_under_uploads(url: str, upload: Upload, duration: float, workdir: Path) -> dict[str, Any]:
    """/predict's latency alone, then while ``UPLOADERS`` connections post ``upload`` back to back.

    Both loads come from their own processes (``http_load``: pre-encoded requests on keep-alive
    connections), so that the client's own work takes as little of the machine as possible.
    """
    image = np.zeros(784, dtype=np.uint8)
    image[300:500] = 255
    body = orjson.dumps({"pixels": image.tolist()})
    alone = load(f"{url}/predict", body, duration, 16, workdir, use_wrk=False)
    files = {"file": ("upload", upload.data, upload.content_type)}
    request = httpx.Request("POST", f"{url}/predict/image", files=files)
    form = workdir / "upload.form"
    form.write_bytes(request.read())
    flood_args = [sys.executable, "-m", "digitstream.benchmarks.http_load", f"{url}/predict/image",
                  "--duration", str(duration + 2), "--connections", str(UPLOADERS), "--body", str(form),
                  "--content-type", request.headers["content-type"]]  # fmt: skip
    flood = subprocess.Popen(flood_args, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the flood is going
        flooded = load(f"{url}/predict", body, duration, 16, workdir, use_wrk=False)
    finally:
        output, _ = flood.communicate(timeout=duration + 120)
    summary = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    return {"upload": upload.name, "alone": alone, "under_uploads": flooded, "upload_requests": summary["requests"],
            "upload_refused": summary["non2xx"], "upload_errors": summary["errors"]}  # fmt: skip


def costliest(rows: list[dict[str, Any]], uploads: list[Upload]) -> Upload:
    """The accepted upload that cost the most CPU."""
    by_name = {u.name: u for u in uploads}
    accepted = [r for r in rows if r["status"] == 200] or rows
    return by_name[max(accepted, key=lambda r: r["cpu_ms"])["name"]]


def run(pixels: int = 4_000_000, duration: float = 5.0, flood: bool = True, batches: bool = True,
        server: RedisServer | None = None, repeats: int = 3) -> dict[str, Any]:  # fmt: skip
    """Everything; ``server``: an already running redis-server to use (it is emptied)."""
    uploads = list(hostile_uploads(pixels))
    report: dict[str, Any] = {"pixels": pixels}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with served(workdir, server=server) as (url, meter):
            report["uploads"] = upload_costs(url, meter, uploads, repeats)
        if batches:
            with served(workdir, server=server) as (url, meter):
                report["batches"] = json_batches(url, meter)
        if flood:
            with served(workdir, server=server) as (url, meter):
                report["flood"] = predict_under_uploads(url, costliest(report["uploads"]["rows"], uploads),
                                                        duration, workdir)  # fmt: skip
    return report


def report_text(report: dict[str, Any]) -> str:
    up = report["uploads"]
    lines = [
        f"uploads to POST /predict/image, about {report['pixels']:,} pixels each; API process baseline "
        f"{up['baseline_rss_mb']:.0f} MB RSS after a warm-up; each upload {up['repeats']} times: the highest "
        "peak, the median CPU",
        "",
        "| upload | size | bytes | status | extra peak RSS MB | CPU ms | wall ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in up["rows"]:
        lines.append(f"| {r['name']} | {r['size']} | {r['bytes']:,} | {r['status']} | {r['extra_peak_mb']:.0f} "
                     f"| {r['cpu_ms']:.0f} | {r['wall_ms']:.0f} |")  # fmt: skip
    lines.append(f"\nworst: {up['worst_extra_peak_mb']:.0f} MB extra peak RSS (goal <= {GOAL_UPLOAD_MB:g}), "
                 f"{up['worst_cpu_ms']:.0f} ms CPU (goal <= {GOAL_UPLOAD_CPU_MS:g})")  # fmt: skip
    if "batches" in report:
        b = report["batches"]
        lines.append(f"\n{b['in_flight']} concurrent maximum JSON /predict/batch ({b['body_mb']:.1f} MB each): "
                     f"extra peak RSS {b['extra_peak_mb']:.0f} MB (goal <= {GOAL_BATCH_MB:g}), "
                     f"answers {b['statuses']}, {b['non_200_without_retry_after']} refusals without Retry-After, "
                     f"{b['seconds']:.1f} s")  # fmt: skip
    if "flood" in report:
        f = report["flood"]
        a, u = f["alone"], f["under_uploads"]
        lines += [
            "",
            "| POST /predict, 16 connections | requests/s | p50 ms | p90 ms | p99 ms | max ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            f"| alone | {a['rps']:,.0f} | {a['p50_ms']:.2f} | {a['p90_ms']:.2f} | {a['p99_ms']:.2f} "
            f"| {a['max_ms']:.1f} |",
            f"| {UPLOADERS} connections posting the costliest upload | {u['rps']:,.0f} | {u['p50_ms']:.2f} "
            f"| {u['p90_ms']:.2f} | {u['p99_ms']:.2f} | {u['max_ms']:.1f} |",
            f"\nthe flood: {f['upload']}, {f['upload_requests']:,} uploads sent, {f['upload_refused']:,} answered "
            f"non-2xx (503: all decode slots taken), {f['upload_errors']} connection errors; "
            f"p99 goal <= {GOAL_P99_MS:g} ms",
        ]
    return "\n".join(lines)


def goals_met(report: dict[str, Any]) -> dict[str, bool]:
    met = {
        "upload_memory": report["uploads"]["worst_extra_peak_mb"] <= GOAL_UPLOAD_MB,
        "upload_cpu": report["uploads"]["worst_cpu_ms"] <= GOAL_UPLOAD_CPU_MS,
    }
    if "batches" in report:
        b = report["batches"]
        met["batch_memory"] = b["extra_peak_mb"] <= GOAL_BATCH_MB and not b["non_200_without_retry_after"]
    if "flood" in report:
        met["p99_under_uploads"] = report["flood"]["under_uploads"]["p99_ms"] <= GOAL_P99_MS
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=4_000_000, help="pixels of each crafted upload")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of /predict load per run")
    parser.add_argument("--skip-flood", action="store_true")
    parser.add_argument("--skip-batches", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON too")
    args = parser.parse_args(argv)
    report = run(args.pixels, args.duration, not args.skip_flood, not args.skip_batches)
    print(report_text(report))
    print("goals met:", goals_met(report))
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
