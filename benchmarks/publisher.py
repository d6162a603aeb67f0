"""Publisher throughput against a bare pipelined XADD loop, side by side in one run.

Goal: ``Publisher.publish`` (which validates every sample first) sends at >= 80 % of the speed of
a raw pipelined XADD loop with the same batch size, on the same redis-server, in the same run.
The tightest loop redis-py allows (``execute_command``; the publisher sends one Lua script per batch) and one
XADD per round trip are shown for reference. Repetitions alternate between the contenders so
that drift in machine load hits both alike; medians are reported.

    python benchmarks/publisher.py [--data DIR] [--repeats 5] [--batch-size 1000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.connection import DefaultParser

from digitstream.clients.embedded_redis import RedisServer
from digitstream.clients.publisher import Publisher
from digitstream.datasets import find_mnist, load_mnist
from digitstream.protocol import FIELD_LABEL, FIELD_PIXELS, Keys

REPO = Path(__file__).resolve().parent.parent
GOAL_RATIO = 0.80
KEYS = Keys.for_model("bench")


def raw_pipelined(client: redis.Redis, images: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
    """The baseline: what anyone would write with redis-py, no validation."""
    for start in range(0, len(labels), batch_size):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + batch_size, len(labels))):
            pipe.xadd(KEYS.samples, {FIELD_PIXELS: images[i].tobytes(), FIELD_LABEL: b"%d" % labels[i]})
        pipe.execute()


def raw_tightest(client: redis.Redis, images: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
    """The tightest loop redis-py allows: ``execute_command`` skips ``xadd``'s argument building."""
    label_bytes = [b"%d" % digit for digit in range(10)]
    stream = KEYS.samples
    for start in range(0, len(labels), batch_size):
        pipe = client.pipeline(transaction=False)
        command: Callable[..., object] = pipe.execute_command
        chunk = slice(start, start + batch_size)
        for row, label in zip(images[chunk], labels[chunk].tolist(), strict=True):
            command("XADD", stream, "*", FIELD_PIXELS, row.tobytes(), FIELD_LABEL, label_bytes[label])
        pipe.execute()


def one_per_round_trip(client: redis.Redis, images: np.ndarray, labels: np.ndarray) -> None:
    for i in range(len(labels)):
        client.xadd(KEYS.samples, {FIELD_PIXELS: images[i].tobytes(), FIELD_LABEL: b"%d" % labels[i]})


def _timed(client: redis.Redis, action: Callable[[], Any], n: int) -> float:
    """Samples/s of one run, on an emptied stream (so every run does the same work)."""
    client.delete(KEYS.samples)
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    assert client.xlen(KEYS.samples) == n, "not every sample reached the stream"
    return n / elapsed


def run(
    data_dir: Path | None = None,
    repeats: int = 5,
    batch_size: int = 1000,
    quick: bool = False,
    server: RedisServer | None = None,
) -> dict[str, Any]:
    """Benchmark on a fresh embedded redis-server (or ``server``, running and empty); returns medians
    (samples/s), runs and the ratio."""
    train = load_mnist(find_mnist(data_dir, download=False), "train")
    images, labels = train.images, train.labels
    if quick:
        images, labels = images[:5000], labels[:5000]
    n = len(labels)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = server or stack.enter_context(RedisServer(Path(tmp), appendonly=False))
        client = redis.Redis.from_url(server.url)
        publisher = Publisher(client, KEYS, batch_size=batch_size)
        raw_rates: list[float] = []
        tight_rates: list[float] = []
        publisher_rates: list[float] = []
        _timed(client, lambda: raw_pipelined(client, images, labels, batch_size), n)  # warm-up
        for repeat in range(repeats):
            contenders = [
                (raw_rates, lambda: raw_pipelined(client, images, labels, batch_size)),
                (publisher_rates, lambda: publisher.publish(images, labels)),
                (tight_rates, lambda: raw_tightest(client, images, labels, batch_size)),
            ]
            for rates, action in contenders if repeat % 2 == 0 else contenders[::-1]:
                rates.append(_timed(client, action, n))
        k = min(2000 if quick else 5000, n)
        single = _timed(client, lambda: one_per_round_trip(client, images[:k], labels[:k]), k)
        client.delete(KEYS.samples)
        client.close()
    raw, pub = statistics.median(raw_rates), statistics.median(publisher_rates)
    return {
        "samples": n,
        "parser": DefaultParser.__name__.strip("_"),  # HiredisParser when hiredis is installed
        "batch_size": batch_size,
        "repeats": repeats,
        "raw_pipelined_xadd_per_s": raw,
        "publisher_per_s": pub,
        "raw_tightest_per_s": statistics.median(tight_rates),
        "one_xadd_per_round_trip_per_s": single,
        "one_xadd_samples": k,
        "ratio": pub / raw,
        "goal_ratio": GOAL_RATIO,
        "raw_runs": raw_rates,
        "publisher_runs": publisher_rates,
    }


def table(report: dict[str, Any]) -> str:
    """The numbers side by side, as a markdown table."""
    raw, single = report["raw_pipelined_xadd_per_s"], report["one_xadd_per_round_trip_per_s"]
    tight = report["raw_tightest_per_s"]
    verdict = "meets" if report["ratio"] >= report["goal_ratio"] else "MISSES"
    rows = [
        "| method | samples | samples/s (median) | vs raw pipelined XADD | note |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| raw pipelined XADD loop (redis-py, {report['parser']}) | {report['samples']:,} | {raw:,.0f} | 1x | "
        f"batches of {report['batch_size']}, no validation ({report['repeats']} runs) |",
        f"| `Publisher.publish` | {report['samples']:,} | {report['publisher_per_s']:,.0f} | "
        f"{report['ratio']:.2f}x | validates every sample; {verdict} the goal >= {report['goal_ratio']:.2f}x "
        f"({report['repeats']} runs, alternating) |",
        f"| raw pipelined XADD via `execute_command` | {report['samples']:,} | {tight:,.0f} | "
        f"{tight / raw:.2f}x | the tightest redis-py loop, no validation; publisher / this = "
        f"{report['publisher_per_s'] / tight:.2f}x |",
        f"| one XADD per round trip | {report['one_xadd_samples']:,} | {single:,.0f} | "
        f"{single / raw:.2f}x | reference, 1 run |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MNIST IDX directory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="5,000 samples instead of the whole training split")
    args = parser.parse_args(argv)
    data = args.data or Path(os.environ.get("DIGITSTREAM_TEST_DATA", REPO.parent / "shared" / "data" / "mnist"))
    report = run(data, repeats=args.repeats, batch_size=args.batch_size, quick=args.quick)
    print(f"Publishing MNIST samples to a local redis-server; {os.cpu_count()} cores")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
