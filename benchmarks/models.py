"""Many models: the registry at 1,000 models, worker pools scaling over 100, and a chaos run over 50.

    python -m digitstream.benchmarks.models [--data DIR] [--quick] [--repeat N] [--parts registry,scaling,cluster,chaos]

* **registry**: 1,000 registered models, each with a snapshot. Redis memory per model (one version,
  and at the default version policy's most versions), an API process (``digitstream serve``, real
  uvicorn) answering predictions for random models: its RSS stays bounded by ``served_models_max``;
  the first prediction of a cold model (not in the LRU): p50 and p99.
* **scaling**: 100 models with their own streams, learned by 1 and by 2 ``digitstream worker
  --models all`` processes, in alternation (1, 2, 2, 1, ... ``--repeat`` times each); aggregate
  samples/s (between 10 % and 90 % of the work, so start-up and the tail do not count), the
  medians' ratio, the CPU the pools and Redis used, and the load average around each run.
* **cluster**: the scaling part's work for 1 pool on a single redis-server and on a local Redis
  Cluster of 3 masters with a replica each (``digitstream.clients.local_cluster``), both Debian's
  redis-server 7 (the cluster needs it; the other parts use the embedded server), in alternation;
  both rates and their ratio. Skipped, saying why, without redis-server 7 and redis-cli.
* **chaos**: 50 models, pools SIGKILLed and started at random while samples are published at a
  steady pace; after the drain every model's weights are compared with its uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from digitstream.clients.embedded_redis import RedisServer, free_port
from digitstream.clients.local_cluster import ClusterUnavailable, LocalCluster, find_binaries
from digitstream.connections import RedisClient, client_client, is_cluster
from digitstream.learner import HyperParameters, new_learner
from digitstream.protocol import N_PIXELS, Keys, encode_sample
from digitstream.registry import ModelConfig, Registry
from digitstream.settings import load_settings
from digitstream.snapshot import snapshot_of
from digitstream.store import read_snapshot, write_snapshot

from .endurance import Child, clean_env, rss_mb
from .suite import default_data_dir

PARTS = ("registry", "scaling", "cluster", "chaos")


def load_digits(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from digitstream.datasets import load_mnist

    train = load_mnist(data_dir, "train")
    return train.images.reshape(len(train.labels), N_PIXELS), train.labels.astype(np.int64)


def register(client: RedisClient, names: list[str], stream: str | None = None) -> None:
    registry = Registry(client)
    for name in names:
        registry.create(
            ModelConfig.new(name, HyperParameters.for_rule("softmax"), stream=stream, created_at=time.time())
        )


def publish(client: RedisClient, stream: str, images: np.ndarray, labels: np.ndarray) -> None:
    pipe = client.pipeline(transaction=False)
    for image, label in zip(images, labels, strict=True):
        pipe.xadd(stream, encode_sample(image, int(label)))  # type: ignore[arg-type]
    pipe.execute()


def learned(client: RedisClient, models: list[str]) -> list[int]:
    """Samples each model's worker has committed (its status), 0 when it has none yet."""
    keys = [Keys.for_model(m).worker_status for m in models]
    found: list[Any] = client.mget_nonatomic(keys) if is_cluster(client) else client.mget(keys)  # type: ignore[union-attr]
    return [int(json.loads(raw)["samples_learned"]) if raw else 0 for raw in found]


# -- registry ---------------------------------------------------------------------------------------


def snapshot_meta(name: str, samples: int) -> dict[str, Any]:
    """The metadata a worker writes (``SnapshotMeta``), for a model that learned ``samples`` samples."""
    metrics = {"prequential_accuracy": 0.85, "rolling_accuracy": 0.9, "rolling_window": 1000, "lag": 0}
    return {
        "model": name,
        "samples_learned": samples,
        "last_id": f"1-{samples}",
        "created_at": time.time(),
        "entries_consumed": samples,
        "deadletter_count": 0,
        "metrics": {**metrics, "drift_events": []},
    }


def registry_part(
    server: RedisServer, images: np.ndarray, labels: np.ndarray, quick: bool, work: Path
) -> dict[str, Any]:
    n_models = 100 if quick else 1000
    client = redis.Redis.from_url(server.url)
    client.flushall()
    names = [f"tenant-{i:04d}" for i in range(n_models)]
    register(client, names)
    learner = new_learner(HyperParameters.for_rule("softmax"))
    learner.learn_many(images[:500], labels[:500])
    before = int(client.info("memory")["used_memory"])
    for name in names:
        keys = Keys.for_model(name)
        client.set(keys.lease, "bench")
        snapshot = snapshot_of(learner, **snapshot_meta(name, learner.n_samples))
        write_snapshot(client, keys, snapshot, lease_token="bench", keep=10)
        client.delete(keys.lease)
    per_model = (int(client.info("memory")["used_memory"]) - before) / n_models
    one = Keys.for_model(names[0])
    version_bytes = int(client.memory_usage(one.snapshot(1)) or 0)  # MEMORY USAGE: an estimate, above the delta
    keep = load_settings().keep_versions
    lru = 16
    port = free_port()
    env = clean_env(redis_url=server.url, served_models_max=str(lru), port=str(port))
    api = Child("serve", ["serve", "--port", str(port), "--log-level", "warning"], work / "serve.log", env).start()
    cold: list[float] = []
    rss: list[float] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start: {(work / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.1)
            body = {"pixels": images[0].tolist()}
            order = random.Random(0).sample(names, len(names)) * 2
            for i, name in enumerate(order):
                started = time.perf_counter()
                answer = http.post(f"/models/{name}/predict", json=body)
                elapsed = time.perf_counter() - started
                if answer.status_code != 200:
                    raise RuntimeError(f"/models/{name}/predict: {answer.status_code} {answer.text}")
                cold.append(elapsed)  # every model is cold here: the LRU (16) is far smaller than the models
                if i % 50 == 0:
                    rss.append(rss_mb(api.pid) or 0.0)
    finally:
        api.stop()
    cold_ms = sorted(1000 * c for c in cold)
    return {
        "models": n_models,
        "redis_bytes_per_model_one_version": per_model,
        "snapshot_version_bytes": version_bytes,
        "keep_versions": keep,
        "redis_bytes_per_model_at_keep": per_model * keep,  # the snapshot hash is nearly all of it
        "served_models_max": lru,
        "api_rss_mb_first": rss[0] if rss else None,
        "api_rss_mb_max": max(rss) if rss else None,
        "api_rss_mb_last": rss[-1] if rss else None,
        "cold_first_prediction_ms_p50": statistics.median(cold_ms),
        "cold_first_prediction_ms_p99": cold_ms[int(0.99 * (len(cold_ms) - 1))],
        "predictions": len(cold_ms),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children) from /proc; 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


# -- scaling ----------------------------------------------------------------------------------------


@dataclass
class Target:
    """The Redis the pools learn from: one server or a cluster (its URL, a client, its processes)."""

    url: str
    client: RedisClient
    pids: list[int]
    flush: Callable[[], None]
    version: str


def single_target(server: RedisServer) -> Target:
    assert server.process is not None
    client = redis.Redis.from_url(server.url)
    version = str(client.info("server")["redis_version"])

    def flush() -> None:
        client.flushall()

    return Target(server.url, client, [server.process.pid], flush, version)


def cluster_target(cluster: LocalCluster) -> Target:
    client = client_client(load_settings(redis_url=cluster.url))
    pids = [node.server.process.pid for node in cluster.nodes if node.server.process is not None]
    version = str(cluster.nodes[0].command("INFO", "server")["redis_version"])  # type: ignore[index]
    return Target(cluster.url, client, pids, cluster.flush, version)


def pools_rate(
    target: Target, images: np.ndarray, labels: np.ndarray, n_pools: int, n_models: int, per_model: int, work: Path
) -> dict[str, Any]:
    client = target.client
    target.flush()
    names = [f"m{i:03d}" for i in range(n_models)]
    register(client, names)
    stage = {name: f"{Keys.for_model(name).tag}:stage" for name in names}  # in the stream's slot (RENAME)
    for i, name in enumerate(names):  # staged aside, moved into place (RENAME) once the pools have settled
        start = (i * 97) % (len(labels) - per_model)
        publish(client, stage[name], images[start : start + per_model], labels[start : start + per_model])
    total = n_models * per_model
    env = clean_env(redis_url=target.url)
    log = work / f"pool{n_pools}-{time.monotonic_ns()}"
    pools = [
        Child(f"pool{p}", ["worker", "--models", "all", "--log-level", "WARNING"], Path(f"{log}-{p}.log"), env)
        for p in range(n_pools)
    ]
    load_before = os.getloadavg()[0]
    for pool in pools:
        pool.start()

    def settled() -> bool:
        holders: list[bytes | None] = [client.get(Keys.for_model(m).lease) for m in names]  # type: ignore[misc]
        pool_ids = {h.rsplit(b"/", 1)[0] for h in holders if h is not None}
        return None not in holders and len(pool_ids) == n_pools

    deadline = time.monotonic() + 120
    while not settled():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pools did not settle: {Path(f'{log}-0.log').read_text()[-2000:]}")
        time.sleep(0.1)
    time.sleep(1.0)
    for name in names:  # one by one: a cluster pipeline refuses RENAME (~10 ms for 100)
        client.rename(stage[name], Keys.for_model(name).samples)
    renamed = time.perf_counter()
    cpu_before = {p.pid: cpu_seconds(p.pid) for p in pools} | {pid: cpu_seconds(pid) for pid in target.pids}
    marks: dict[float, float] = {}
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = sum(learned(client, names))
            now = time.perf_counter()
            for fraction in (0.1, 0.9):
                if fraction not in marks and done >= fraction * total:
                    marks[fraction] = now
            if done >= total:
                marks[1.0] = now
                break
            time.sleep(0.05)
        busy: dict[int, float] = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
    finally:
        for pool in pools:
            pool.stop()
    if 1.0 not in marks:
        raise RuntimeError(f"the pools did not learn everything: {sum(learned(client, names))} of {total}")
    middle = marks[0.9] - marks[0.1]
    whole = marks[1.0] - renamed
    return {
        "pools": n_pools, "models": n_models, "samples": total,
        "rate": 0.8 * total / middle if middle > 0 else None,  # between 10 % and 90 % of the work
        "rate_whole": total / whole,  # from the samples' arrival to the last commit
        # CPU seconds per wall second while learning: what the 2 cores did (pools, and Redis itself)
        "pool_cores": sum(busy[p.pid] for p in pools) / whole,
        "redis_cores": sum(busy[pid] for pid in target.pids) / whole,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def _rate(run: dict[str, Any]) -> float:
    return float(run["rate"] or run["rate_whole"])


def alternated(cases: dict[str, Callable[[], dict[str, Any]]], repeat: int) -> dict[str, list[dict[str, Any]]]:
    """Each case ``repeat`` times, in the order A B B A A B ... (a drift of the machine's load favours neither)."""
    names = list(cases)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names if r % 2 == 0 else reversed(names):
            runs[name].append(cases[name]())
    return runs


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run's figures (by rate), with every run's rate."""
    ordered = sorted(runs, key=_rate)
    median = ordered[(len(ordered) - 1) // 2]
    return {
        **median,
        "rate_median": statistics.median(_rate(r) for r in runs),
        "rates": [round(_rate(r)) for r in runs],
    }


def scaling_part(
    server: RedisServer, images: np.ndarray, labels: np.ndarray, quick: bool, work: Path, repeat: int = 2
) -> dict[str, Any]:
    n_models, per_model = (20, 5000) if quick else (100, 5000)
    target = single_target(server)
    runs = alternated(
        {
            "one_pool": lambda: pools_rate(target, images, labels, 1, n_models, per_model, work),
            "two_pools": lambda: pools_rate(target, images, labels, 2, n_models, per_model, work),
        },
        1 if quick else repeat,
    )
    one, two = summary(runs["one_pool"]), summary(runs["two_pools"])
    return {
        "redis": target.version,
        "one_pool": one,
        "two_pools": two,
        "ratio": two["rate_median"] / one["rate_median"],
    }


@contextmanager
def redis_7(work: Path) -> Iterator[tuple[RedisServer, LocalCluster]]:
    """A single redis-server 7 and a local cluster of 3 masters and 3 replicas, from the same binary."""
    binaries = find_binaries()
    with RedisServer(work / "redis-7", appendonly=False, binary=binaries[0]) as single:
        cluster = LocalCluster(work / "cluster", binaries=binaries).start()
        try:
            yield single, cluster
        finally:
            cluster.stop()


def cluster_part(
    server: RedisServer, images: np.ndarray, labels: np.ndarray, quick: bool, work: Path, repeat: int = 2
) -> dict[str, Any]:
    """The scaling part's work for one pool: a single redis-server 7 against a 3-master/3-replica cluster."""
    n_models, per_model = (20, 5000) if quick else (100, 5000)
    try:
        find_binaries()
    except ClusterUnavailable as exc:
        return {"skipped": str(exc)}
    with redis_7(work) as (single, cluster):
        one, many = single_target(single), cluster_target(cluster)
        runs = alternated(
            {
                "single": lambda: pools_rate(one, images, labels, 1, n_models, per_model, work),
                "cluster": lambda: pools_rate(many, images, labels, 1, n_models, per_model, work),
            },
            1 if quick else repeat,
        )
        single_run, cluster_run = summary(runs["single"]), summary(runs["cluster"])
        return {
            "redis": one.version, "nodes": len(many.pids), "masters": cluster.masters,
            "single": single_run, "cluster": cluster_run,
            "ratio": cluster_run["rate_median"] / single_run["rate_median"],
        }  # fmt: skip


def report_text(report: dict[str, Any]) -> str:
    """The scaling and cluster parts as the Markdown section of BENCHMARKS.md."""
    lines = []
    scaling, cluster = report.get("scaling"), report.get("cluster")
    header = "| case | samples/s (median) | runs | pool cores | Redis cores | load before / after |"
    rule = "| --- | ---: | --- | ---: | ---: | --- |"

    def row(name: str, r: dict[str, Any]) -> str:
        runs = ", ".join(f"{v:,}" for v in r["rates"])
        load = f"{r['load_before']:.2f} / {r['load_after']:.2f}"
        return (
            f"| {name} | {r['rate_median']:,.0f} | {runs} | {r['pool_cores']:.2f} | {r['redis_cores']:.2f} | {load} |"
        )

    if scaling:
        one = scaling["one_pool"]
        lines += [
            f"{one['models']} models, {one['samples'] // one['models']:,} samples each in its own stream, learned by "
            f"`digitstream worker --models all` processes (redis-server {scaling['redis']}); samples/s between "
            f"10 % and 90 % of the work, runs in alternation; the CPU columns are the median run's (cores "
            f"while learning).",
            "",
            header,
            rule,
            row("1 pool", scaling["one_pool"]),
            row("2 pools", scaling["two_pools"]),
            "",
            f"2 pools / 1 pool: **{scaling['ratio']:.2f}x** (goal >= 1.6x on this 2-core machine: "
            f"{'met' if scaling['ratio'] >= 1.6 else 'NOT met'}).",
        ]
    if cluster and "skipped" in cluster:
        lines += ["", f"Cluster comparison skipped: {cluster['skipped']}"]
    elif cluster:
        lines += [
            "",
            f"The same work for 1 pool on a single redis-server {cluster['redis']} and on a local Redis Cluster "
            f"({cluster['masters']} masters with a replica each, {cluster['nodes']} processes, the same binary), "
            f"in alternation:",
            "",
            header,
            rule,
            row("single node", cluster["single"]),
            row("cluster", cluster["cluster"]),
            "",
            f"cluster / single node: **{cluster['ratio']:.2f}x**.",
        ]
    return "\n".join(lines)


# -- chaos ------------------------------------------------------------------------------------------


def chaos_part(server: RedisServer, images: np.ndarray, labels: np.ndarray, quick: bool, work: Path) -> dict[str, Any]:
    n_models, per_model, seconds = (10, 600, 15.0) if quick else (50, 3000, 90.0)
    client = redis.Redis.from_url(server.url)
    client.flushall()
    names = [f"c{i:02d}" for i in range(n_models)]
    register(client, names)
    chunks = 30
    rng = random.Random(1)
    env = clean_env(redis_url=server.url, lease_ttl="1.0", snapshot_interval="0.2")
    pools: list[Child] = []
    kills = joins = 0
    stop = threading.Event()

    def publisher() -> None:
        for c in range(chunks):
            for i, name in enumerate(names):
                start = (i * 131) % (len(labels) - per_model) + c * per_model // chunks
                end = (i * 131) % (len(labels) - per_model) + (c + 1) * per_model // chunks
                publish(client, Keys.for_model(name).samples, images[start:end], labels[start:end])
            stop.wait(seconds / chunks)

    def start_pool() -> None:
        pools.append(
            Child(
                "pool", ["worker", "--models", "all", "--lease-ttl", "1.0"], work / f"chaos{len(pools)}.log", env
            ).start()
        )

    start_pool()
    start_pool()
    feeder = threading.Thread(target=publisher, daemon=True)
    feeder.start()
    while feeder.is_alive():
        time.sleep(rng.uniform(1.0, 4.0))
        alive = [p for p in pools if p.alive()]
        if len(alive) > 1 and rng.random() < 0.6:
            rng.choice(alive).kill()
            kills += 1
        else:
            start_pool()
            joins += 1
    if not any(p.alive() for p in pools):
        start_pool()
    deadline = time.monotonic() + 300
    while sum(learned(client, names)) < n_models * per_model and time.monotonic() < deadline:
        time.sleep(0.2)
    for pool in pools:
        if pool.alive():
            pool.stop()
    worst = 0.0
    settings = load_settings()
    for i, name in enumerate(names):
        base = (i * 131) % (len(labels) - per_model)
        expected = new_learner(settings.hyper_parameters())
        expected.learn_many(images[base : base + per_model], labels[base : base + per_model])
        snapshot = read_snapshot(client, Keys.for_model(name))
        if snapshot is None:
            worst = float("inf")
            continue
        got = snapshot.learner().state().arrays
        for key, want in expected.state().arrays.items():
            scale = max(float(np.linalg.norm(want)), 1e-300)
            worst = max(worst, float(np.linalg.norm(got[key].astype(np.float64) - want.astype(np.float64))) / scale)
    return {
        "models": n_models,
        "samples_per_model": per_model,
        "kills": kills,
        "joins": joins,
        "worst_relative_difference": worst,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each case, in alternation (scaling, cluster)")
    parser.add_argument("--parts", default=",".join(PARTS))
    args = parser.parse_args(argv)
    images, labels = load_digits(args.data or default_data_dir())
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="digitstream-models-") as tmp:
        work = Path(tmp)
        with RedisServer(work / "redis", appendonly=False) as server:
            for part in args.parts.split(","):
                started = time.monotonic()
                if part in ("scaling", "cluster"):
                    run = {"scaling": scaling_part, "cluster": cluster_part}[part]
                    report[part] = run(server, images, labels, args.quick, work, args.repeat)
                else:
                    other = {"registry": registry_part, "chaos": chaos_part}[part]
                    report[part] = other(server, images, labels, args.quick, work)
                report[part]["seconds"] = round(time.monotonic() - started, 1)
                print(part, json.dumps(report[part], indent=2), flush=True)
    if "scaling" in report or "cluster" in report:
        print(f"\n{report_text(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
