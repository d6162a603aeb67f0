"""Packed entries against classic ones (issue 18), side by side in one run.

A real redis-server is started (or the suite's is used) and the 22,699 shared MNIST training
samples loaded. Alternating in each repetition, so a noisy neighbour slows all alike:

* **end to end, classic / packed**: a ``digitstream worker`` process (started before the clock,
  active and waiting on an empty stream) and a :class:`Publisher` in this process sending
  ``passes`` (20) passes over the samples, classic (``pack=1``) or packed (``pack=1000``, what
  ``digitstream publish`` uses for archives). The clock runs from the first publish call until the
  latest snapshot in Redis (what the service serves) has learned every sample. Both workers take
  ``snapshot_interval`` 0.1 s, so the last snapshot does not wait the default half second.
* **worker ingest, packed entries**: ``Worker.run(burst=True)`` (in-process, as in
  ``worker_ingest.py``) over a stream of ``ingest_passes`` (4) passes over the samples in packed
  entries, against the **learner alone** (softmax, in memory, the same passes) and the same worker
  over classic entries. Several passes, so that the rate is the worker's sustained one, not its
  start and final snapshot (fixed costs of ~10 ms against ~30 ms of learning for one pass).
* **publisher, classic / packed**: ``Publisher.publish`` of ``publish_passes`` passes into an
  empty stream, with classic and with packed entries.

Goals: end to end packed >= 3x classic and >= 400,000 samples/s; worker ingest of packed entries
>= 80 % of the learner alone; publisher with packed entries >= 1,000,000 samples/s.

    python benchmarks/packed.py [--data DIR] [--repeats 3] [--passes 20] [--ingest-passes 4]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import redis

from digitstream.clients.embedded_redis import RedisServer
from digitstream.clients.publisher import BULK_PACK, Publisher
from digitstream.contracts import SnapshotMeta
from digitstream.datasets import find_mnist, load_mnist
from digitstream.learner import new_learner
from digitstream.protocol import N_PIXELS, Keys
from digitstream.settings import load_settings
from digitstream.snapshot import META_FIELD
from digitstream.worker.loop import Worker

PACK = BULK_PACK  # what digitstream publish uses for archives
GOAL_E2E_SPEEDUP = 3.0
GOAL_E2E_RATE = 400_000
GOAL_INGEST_RATIO = 0.80
GOAL_PUBLISHER_RATE = 1_000_000
E2E_CLASSIC, E2E_PACKED = "end to end, classic entries", f"end to end, packed entries ({PACK})"
WORKER_PACKED, WORKER_CLASSIC = f"worker ingest, packed entries ({PACK})", "worker ingest, classic entries"
LEARNER = "learner alone, softmax (reference)"
PUB_CLASSIC, PUB_PACKED = "publisher, classic entries", f"publisher, packed entries ({PACK})"


def end_to_end(url: str, model: str, images: np.ndarray, labels: np.ndarray, passes: int, pack: int) -> float:
    """Seconds from the first publish call until the latest snapshot has learned all ``passes`` passes."""
    client = redis.Redis.from_url(url)
    keys = Keys.for_model(model)
    env = {**os.environ, "DIGITSTREAM_REDIS_URL": url}
    args = ["--model", model, "--snapshot-interval", "0.1", "--log-level", "WARNING"]
    worker = subprocess.Popen([sys.executable, "-m", "digitstream.worker", *args], env=env)
    try:
        deadline = time.monotonic() + 60
        while not client.exists(keys.worker_status) or b'"active"' not in (client.get(keys.worker_status) or b""):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the benchmark's worker did not become active")
            time.sleep(0.02)
        publisher = Publisher(client, keys, pack=pack)
        total = passes * len(labels)
        start = time.perf_counter()
        for _ in range(passes):
            publisher.publish(images, labels)
        learned, seen = 0, None
        while learned < total:  # a cheap poll (the latest version), the metadata only when it changes
            version = client.get(keys.snapshot_latest)
            if version != seen and version is not None:
                seen, meta = version, client.hget(keys.snapshot(int(version)), META_FIELD)
                learned = SnapshotMeta.from_json(json.loads(meta or b"{}")).samples_learned
            if time.perf_counter() - start > 600:
                raise RuntimeError("the worker did not learn everything within 10 minutes")
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        assert learned == total, f"{learned} of {total}"
        return seconds
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        for key in client.scan_iter(f"{model}:*", count=1000):
            client.delete(key)
        client.close()


def fill(client: redis.Redis, stream: str, images: np.ndarray, labels: np.ndarray, pack: int) -> None:
    Publisher(client, Keys.for_model("fill", samples=stream), pack=pack, producer_id=f"fill-{pack}").publish(
        images, labels
    )


def ingest(client: redis.Redis, url: str, stream: str, model: str) -> Callable[[], int]:
    """A worker for a fresh model on a filled stream, built before the timing starts."""
    worker = Worker(load_settings(redis_url=url, model_name=model, stream_key=stream), client)

    def learn_everything() -> int:
        worker.run(burst=True)
        return worker.samples_learned

    return learn_everything


def learn_only(images: np.ndarray, labels: np.ndarray) -> int:
    learner = new_learner(load_settings().hyper_parameters())
    learner.learn_many(images, labels)
    return learner.n_samples


def publish(client: redis.Redis, images: np.ndarray, labels: np.ndarray, passes: int, pack: int) -> int:
    keys = Keys.for_model("benchpub")
    client.delete(keys.samples)
    publisher = Publisher(client, keys, pack=pack)
    for _ in range(passes):
        publisher.publish(images, labels)
    return publisher.sent


def run(
    data_dir: Path | None = None, repeats: int = 3, passes: int = 20, publish_passes: int = 4,
    server: RedisServer | None = None, ingest_passes: int = 4,
) -> dict[str, Any]:  # fmt: skip
    """Run the comparison; returns the rates (median samples/s), the ratios and the raw timings."""
    train = load_mnist(find_mnist(data_dir, download=False), "train")
    images, labels = train.images.reshape(len(train.labels), N_PIXELS), train.labels.astype(np.int64)
    n = len(labels)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = server or stack.enter_context(RedisServer(Path(tmp), appendonly=False))
        client = redis.Redis.from_url(server.url)
        many_images, many_labels = np.tile(images, (ingest_passes, 1)), np.tile(labels, ingest_passes)
        fill(client, "benchpacked:classic", many_images, many_labels, 1)
        fill(client, "benchpacked:packed", many_images, many_labels, PACK)
        ingested = n * ingest_passes
        counts = {E2E_CLASSIC: n * passes, E2E_PACKED: n * passes, PUB_CLASSIC: n * publish_passes,
                  PUB_PACKED: n * publish_passes, WORKER_PACKED: ingested, WORKER_CLASSIC: ingested,
                  LEARNER: ingested}  # fmt: skip
        # Each case prepares (untimed) what is timed, for repetition r; the end-to-end cases time themselves.
        cases: dict[str, Callable[[int], Callable[[], int | float]]] = {
            E2E_CLASSIC: lambda r: lambda: end_to_end(server.url, f"benche2ec{r}", images, labels, passes, 1),
            E2E_PACKED: lambda r: lambda: end_to_end(server.url, f"benche2ep{r}", images, labels, passes, PACK),
            WORKER_PACKED: lambda r: ingest(client, server.url, "benchpacked:packed", f"benchip{r}"),
            LEARNER: lambda r: lambda: learn_only(many_images, many_labels),
            WORKER_CLASSIC: lambda r: ingest(client, server.url, "benchpacked:classic", f"benchic{r}"),
            PUB_CLASSIC: lambda r: lambda: publish(client, images, labels, publish_passes, 1),
            PUB_PACKED: lambda r: lambda: publish(client, images, labels, publish_passes, PACK),
        }
        for name in (WORKER_PACKED, LEARNER, WORKER_CLASSIC, PUB_PACKED):  # warm up: numba's cache, Redis's memory
            cases[name](-1)()
        load_before = os.getloadavg()[0]
        seconds: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(repeats):
            for name, prepare in cases.items() if r % 2 == 0 else reversed(cases.items()):
                timed = prepare(r)
                start = time.perf_counter()
                result = timed()
                elapsed = time.perf_counter() - start
                if isinstance(result, float):  # an end-to-end case: its own clock
                    elapsed = result
                else:
                    assert result == counts[name], f"{name}: {result} of {counts[name]} samples"
                seconds[name].append(elapsed)
        client.delete("benchpacked:classic", "benchpacked:packed", "benchpub:samples")
        client.close()
    rates = {name: counts[name] / statistics.median(values) for name, values in seconds.items()}
    speedup = rates[E2E_PACKED] / rates[E2E_CLASSIC]
    ingest_ratio = rates[WORKER_PACKED] / rates[LEARNER]
    return {
        "samples": n,
        "passes": passes,
        "publish_passes": publish_passes,
        "ingest_passes": ingest_passes,
        "pack": PACK,
        "repeats": repeats,
        "rates": rates,
        "seconds": seconds,
        "e2e_speedup": speedup,
        "ingest_ratio": ingest_ratio,
        "goals_met": {
            "e2e speedup": speedup >= GOAL_E2E_SPEEDUP,
            "e2e rate": rates[E2E_PACKED] >= GOAL_E2E_RATE,
            "ingest ratio": ingest_ratio >= GOAL_INGEST_RATIO,
            "publisher rate": rates[PUB_PACKED] >= GOAL_PUBLISHER_RATE,
        },
        "load_average": (load_before, os.getloadavg()[0]),
    }


def table(report: dict[str, Any]) -> str:
    rows = [
        f"{report['samples']:,} MNIST samples; end to end {report['passes']} passes, publisher "
        f"{report['publish_passes']} passes, worker ingest and learner {report.get('ingest_passes', 1)} passes; "
        f"{report['repeats']} runs each",
        "",
        "| case | samples/s (median) | runs (s) |",
        "| --- | ---: | --- |",
    ]
    for name, rate in report["rates"].items():
        runs = ", ".join(f"{s:.3f}" for s in report["seconds"][name])
        rows.append(f"| {name} | {rate:,.0f} | {runs} |")
    before, after = report["load_average"]
    rows += [
        "",
        f"end to end packed / classic = {report['e2e_speedup']:.2f}x (goal >= {GOAL_E2E_SPEEDUP:g}x); "
        f"worker ingest packed / learner alone = {report['ingest_ratio']:.0%} (goal >= {GOAL_INGEST_RATIO:.0%}); "
        f"load average (1 min) before/after: {before:.2f} / {after:.2f}",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MNIST IDX directory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--passes", type=int, default=20, help="passes over the samples, end to end")
    parser.add_argument("--publish-passes", type=int, default=4, help="passes over the samples, publisher alone")
    parser.add_argument("--ingest-passes", type=int, default=4, help="passes over the samples, worker ingest")
    args = parser.parse_args(argv)
    report = run(args.data, repeats=args.repeats, passes=args.passes, publish_passes=args.publish_passes,
                 ingest_passes=args.ingest_passes)  # fmt: skip
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
