"""Worker ingest speed against the raw read ceiling, side by side in one run.

A real redis-server is started and one stream filled with the 22,699 shared MNIST training
samples. Then, alternating in each repetition (so a noisy neighbour slows all alike):

* **raw read + decode (ceiling)**: a plain loop of XREAD COUNT ``batch_size`` with redis-py (+ hiredis
  when installed) that turns each batch into a numpy (n, 784) image array and labels, nothing else;
* **read + protocol decode**: the same loop with ``digitstream.protocol.decode_entries`` (validation,
  dead-letter detection): what the worker must do before learning;
* **worker**: ``Worker.run(burst=True)`` learning everything, with snapshots at the default cadence
  (a fresh model name each time, the same stream), from start to its final snapshot;
* **worker, publisher's entries**: the same worker on a second stream holding the same samples as
  ``digitstream publish`` writes them, with ``producer`` and ``seq`` (decoded, then checked for
  duplicates against the producer's mark: the cost of exactly once from the publisher);
* **learner alone** (for reference): ``learn_many`` over the same samples in memory. The worker reads
  in the main thread while the learner thread learns (the kernel releases the GIL), so with two free
  cores it approaches the slower of reading and learning; with one free core, their sum;
* the same **worker** and **learner alone** with the ``mlp`` rule, whose learning is the slower
  part: there the goal is the worker's end-to-end rate against its learner's (>= 70 %).

The start-up heap is frozen (``gc.freeze()``) for all cases, as the worker's CLI does. Reports the
median samples/s of each and the worker's ratio to the ceiling (goals: >= 70 % and
>= 200,000 samples/s on the reference machine).

    python benchmarks/worker_ingest.py [--data DIR] [--repeats 5] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import gc
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
from redis.utils import HIREDIS_AVAILABLE

from digitstream.clients.embedded_redis import RedisServer
from digitstream.datasets import load_mnist
from digitstream.learner import new_learner
from digitstream.protocol import N_PIXELS, decode_entries, encode_origin, encode_sample
from digitstream.settings import load_settings
from digitstream.worker.loop import Worker

REPO = Path(__file__).resolve().parent.parent
STREAM = "bench:samples"
TAGGED_STREAM = "bench:samples:tagged"  # the same samples with producer and seq
GOAL_RATIO = 0.70
GOAL_RATE = 200_000
GOAL_MLP_RATIO = 0.70
WORKER, LEARNER = "worker (learn + snapshots)", "learner alone, no Redis (reference)"
MLP_WORKER, MLP_LEARNER = "worker, mlp rule (learn + snapshots)", "learner alone, mlp rule (reference)"


def fill(
    client: redis.Redis, images: np.ndarray, labels: np.ndarray, chunk: int = 1000, stream: str = STREAM,
    producer: str | None = None,
) -> None:  # fmt: skip
    pipe = client.pipeline(transaction=False)
    for i in range(len(labels)):
        fields = encode_sample(images[i], int(labels[i]))
        fields.update(encode_origin(producer, i) if producer else {})
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
        if (i + 1) % chunk == 0:
            pipe.execute()
    pipe.execute()


def read_raw(client: redis.Redis, batch_size: int) -> int:
    """The ceiling: read every entry and decode it to numpy, without any validation."""
    last: bytes | str = "0-0"
    total = 0
    while True:
        response: Any = client.xread({STREAM: last}, count=batch_size)
        if not response:
            return total
        entries = response[0][1]
        images = np.frombuffer(b"".join([fields[b"pixels"] for _, fields in entries]), dtype=np.uint8)
        images = images.reshape(len(entries), N_PIXELS)
        labels = np.frombuffer(b"".join([fields[b"label"] for _, fields in entries]), dtype=np.uint8) - 48
        assert len(labels) == len(images)
        total += len(entries)
        last = entries[-1][0]


def read_decoded(client: redis.Redis, batch_size: int) -> int:
    last: bytes | str = "0-0"
    total = 0
    while True:
        response: Any = client.xread({STREAM: last}, count=batch_size)
        if not response:
            return total
        batch = decode_entries(response[0][1])
        total += len(batch.ids) + len(batch.rejects)
        last = batch.last_id or last


def learn_only(images: np.ndarray, labels: np.ndarray, rule: str | None = None) -> int:
    """The learner on in-memory arrays: with two free cores the worker approaches max(read, learn)."""
    learner = new_learner(load_settings(rule=rule).hyper_parameters())
    learner.learn_many(images, labels)
    return learner.n_samples


def prepared_worker(
    client: redis.Redis, url: str, batch_size: int, model: str, stream: str = STREAM, rule: str | None = None
) -> Callable[[], int]:
    """A worker for a fresh model on a shared stream, built before the timing starts."""
    settings = load_settings(redis_url=url, model_name=model, stream_key=stream, batch_size=batch_size, rule=rule)
    worker = Worker(settings, client)

    def learn_everything() -> int:
        worker.run(burst=True)
        return worker.samples_learned

    return learn_everything


def forget_models(client: redis.Redis) -> None:
    keys = list(client.scan_iter("bench*:*", count=1000))
    keys = [key for key in keys if not key.startswith(STREAM.encode())]
    if keys:
        client.delete(*keys)


def run(
    data_dir: Path | None = None,
    repeats: int = 5,
    batch_size: int | None = None,
    server: RedisServer | None = None,
) -> dict[str, Any]:
    """Run the comparison; returns the rates (median samples/s), their ratio and the raw timings.

    ``server``: an already running (and empty) redis-server to use instead of starting one.
    """
    directory = data_dir or Path(os.environ.get("DIGITSTREAM_TEST_DATA", REPO.parent / "shared" / "data" / "mnist"))
    train = load_mnist(directory, "train")
    images, labels = train.images.reshape(len(train.labels), N_PIXELS), train.labels
    n = len(labels)
    size = batch_size or load_settings().batch_size
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = server or stack.enter_context(RedisServer(Path(tmp), appendonly=False))
        client = redis.Redis.from_url(server.url)
        fill(client, images, labels)
        fill(client, images, labels, stream=TAGGED_STREAM, producer="bench-publisher")
        # Each case prepares (untimed) the function that is timed, for repetition r.
        cases: dict[str, Callable[[int], Callable[[], int]]] = {
            "raw read + decode (ceiling)": lambda r: lambda: read_raw(client, size),
            "read + protocol decode": lambda r: lambda: read_decoded(client, size),
            WORKER: lambda r: prepared_worker(client, server.url, size, f"bench{r}"),
            "worker, publisher's entries (producer, seq)": lambda r: prepared_worker(
                client, server.url, size, f"benchtagged{r}", TAGGED_STREAM
            ),
            LEARNER: lambda r: lambda: learn_only(images, labels),
            MLP_WORKER: lambda r: prepared_worker(client, server.url, size, f"bench-mlp{r}", rule="mlp"),
            MLP_LEARNER: lambda r: lambda: learn_only(images, labels, rule="mlp"),
        }
        for prepare in cases.values():  # warm up: numba's cache, Redis's memory, the sockets
            assert prepare(-1)() == n
        forget_models(client)
        # As `digitstream worker` does after start-up: the collector's full passes then skip the
        # ~130,000 objects of numpy/numba/river/redis, which otherwise cost the reads up to ~40 %.
        gc.collect()
        gc.freeze()
        load_before = os.getloadavg()[0]
        seconds: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(repeats):
            for name, prepare in cases.items():
                timed = prepare(r)
                start = time.perf_counter()
                count = timed()
                seconds[name].append(time.perf_counter() - start)
                assert count == n, f"{name}: {count} of {n} samples"
                forget_models(client)
        client.close()
    rates = {name: n / statistics.median(values) for name, values in seconds.items()}
    ceiling = rates["raw read + decode (ceiling)"]
    worker = rates[WORKER]
    mlp_ratio = rates[MLP_WORKER] / rates[MLP_LEARNER]
    return {
        "samples": n,
        "batch_size": size,
        "repeats": repeats,
        "hiredis": HIREDIS_AVAILABLE,
        "rates": rates,
        "seconds": seconds,
        "worker_ratio": worker / ceiling,
        "mlp_worker_ratio": mlp_ratio,
        "goals_met": {
            "ratio": worker / ceiling >= GOAL_RATIO,
            "rate": worker >= GOAL_RATE,
            "mlp ratio": mlp_ratio >= GOAL_MLP_RATIO,
        },
        "load_average": (load_before, os.getloadavg()[0]),
    }


def table(report: dict[str, Any]) -> str:
    ceiling = report["rates"]["raw read + decode (ceiling)"]
    rows = ["| case | samples/s (median) | vs ceiling | runs (s) |", "| --- | ---: | ---: | --- |"]
    for name, rate in report["rates"].items():
        runs = ", ".join(f"{s:.3f}" for s in report["seconds"][name])
        rows.append(f"| {name} | {rate:,.0f} | {rate / ceiling:.0%} | {runs} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MNIST IDX directory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="entries per read (default: the setting's)")
    args = parser.parse_args(argv)
    report = run(args.data, repeats=args.repeats, batch_size=args.batch_size)
    print(
        f"{report['samples']:,} MNIST samples in one stream, batch size {report['batch_size']}, "
        f"hiredis {'on' if report['hiredis'] else 'OFF'}, {os.cpu_count()} cores, {report['repeats']} runs each"
    )
    print(table(report))
    before, after = report["load_average"]
    print(f"load average (1 min) before/after the timed runs: {before:.2f} / {after:.2f} (other processes count too)")
    goals = {name: "met" if met else "NOT met" for name, met in report["goals_met"].items()}
    print(
        f"worker / ceiling = {report['worker_ratio']:.0%} (goal >= {GOAL_RATIO:.0%}: {goals['ratio']}); "
        f"{report['rates'][WORKER]:,.0f} samples/s (goal >= {GOAL_RATE:,}: {goals['rate']}); "
        f"mlp worker / mlp learner = {report['mlp_worker_ratio']:.0%} "
        f"(goal >= {GOAL_MLP_RATIO:.0%}: {goals['mlp ratio']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
