"""Worker pools changing hands (issue 15): how soon a dead pool's models learn again, and a joiner takes its share.

Two ``digitstream worker --models all`` processes share ``models`` registered models on a real
redis-server while each model's stream is fed a sample every ``tick`` seconds. Then, ``rounds``
times:

* **death**: the pool holding more models is SIGKILLed; the clock runs until every one of its
  models has a snapshot with more samples than at the kill (it learns again). Goal: within the lease
  TTL plus 2 s.
* **join**: a new pool starts; the clock runs until every model's lease is held by its rendezvous
  owner among the live pools (``worker.pool.owner``), the joiner holding its share. Goal: within 10 s.

    python -m digitstream.benchmarks.handover [--models 20] [--rounds 3] [--lease-ttl 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from digitstream.clients.embedded_redis import RedisServer
from digitstream.protocol import Keys
from digitstream.registry import MEMBERS_KEY
from digitstream.worker.pool import owner

from .endurance import Child, clean_env
from .models import learned, load_digits, publish, register
from .suite import default_data_dir

JOIN_GOAL = 10.0
DEATH_MARGIN = 2.0  # seconds beyond the lease TTL


def holders(client: redis.Redis, names: list[str]) -> dict[str, str | None]:
    """Each model's lease holder: the pool id (None: the lease is free)."""
    found: list[bytes | None] = [client.get(Keys.for_model(name).lease) for name in names]  # type: ignore[misc]
    return {name: v.decode().split("/")[0] if v else None for name, v in zip(names, found, strict=True)}


def live_pools(client: redis.Redis) -> set[str]:
    """The pool ids in the membership set that have not expired, on the server's clock."""
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    members: list[bytes] = client.zrangebyscore(MEMBERS_KEY, f"({now_ms}", "+inf")  # type: ignore[assignment]
    return {m.decode() for m in members}


def settled(client: redis.Redis, names: list[str], pools: int) -> bool:
    """``pools`` live pools, and each model's lease held by its rendezvous owner among them (a pool may
    win none of a few models)."""
    live = live_pools(client)
    wanted = {name: owner(name, dict.fromkeys(live, ("*",))) for name in names}
    return len(live) == pools and holders(client, names) == wanted


def _until(condition: Any, timeout: float) -> float | None:
    """Seconds until ``condition()`` holds (polled every 20 ms), None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def _kill_the_busier(client: redis.Redis, pools: list[Child], names: list[str]) -> float | None:
    """SIGKILL the live pool holding more models; seconds until each of them has learned more (None: 60 s)."""
    held = holders(client, names)
    alive = [p for p in pools if p.alive()]
    victim = max(alive, key=lambda p: sum(f":{p.pid}:" in (h or "") for h in held.values()))
    victims = [name for name, h in held.items() if h and f":{victim.pid}:" in h]
    before = learned(client, victims)
    victim.kill()
    return _until(lambda: all(a > b for a, b in zip(learned(client, victims), before, strict=True)), 60)


def run(
    images: np.ndarray, labels: np.ndarray, work: Path, models: int = 20, rounds: int = 3, lease_ttl: float = 3.0,
    tick: float = 0.05,
) -> dict[str, Any]:  # fmt: skip
    with RedisServer(work / "redis", appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        names = [f"h{i:02d}" for i in range(models)]
        register(client, names)
        env = clean_env(redis_url=server.url, lease_ttl=str(lease_ttl), snapshot_interval="0.1")
        args = ["worker", "--models", "all", "--lease-ttl", str(lease_ttl)]
        pools = [Child(f"pool{i}", args, work / f"pool{i}.log", env).start() for i in range(2)]
        stop = threading.Event()

        def feed() -> None:  # one sample per model per tick
            i = 0
            while not stop.is_set():
                for name in names:
                    publish(client, Keys.for_model(name).samples, images[i : i + 1], labels[i : i + 1])
                i = (i + 1) % len(labels)
                stop.wait(tick)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        deaths: list[float | None] = []
        joins: list[float | None] = []
        try:
            if _until(lambda: settled(client, names, 2), 120) is None:
                raise RuntimeError("the two pools did not settle")
            for _ in range(rounds):
                deaths.append(_kill_the_busier(client, pools, names))
                if _until(lambda: settled(client, names, 1), 60) is None:
                    raise RuntimeError("the survivor did not take every model")
                pools.append(Child(f"pool{len(pools)}", args, work / f"pool{len(pools)}.log", env).start())
                joins.append(_until(lambda: settled(client, names, 2), 60))
        finally:
            stop.set()
            feeder.join()
            for pool in pools:
                if pool.alive():
                    pool.stop()
            client.close()
    measured_deaths = [d for d in deaths if d is not None]
    measured_joins = [j for j in joins if j is not None]
    return {
        "models": models, "rounds": rounds, "lease_ttl": lease_ttl,
        "death_seconds": deaths, "join_seconds": joins,
        "death_worst": max(measured_deaths) if len(measured_deaths) == rounds else None,
        "join_worst": max(measured_joins) if len(measured_joins) == rounds else None,
        "death_median": statistics.median(measured_deaths) if measured_deaths else None,
        "join_median": statistics.median(measured_joins) if measured_joins else None,
    }  # fmt: skip


def text(report: dict[str, Any]) -> str:
    def show(values: list[float | None]) -> str:
        return ", ".join("timed out" if v is None else f"{v:.2f}" for v in values)

    ttl = report["lease_ttl"]
    death, join = report["death_worst"], report["join_worst"]
    death_ok = death is not None and death <= ttl + DEATH_MARGIN
    join_ok = join is not None and join <= JOIN_GOAL
    return "\n".join([
        f"{report['models']} models, 2 pools, lease TTL {ttl:g} s, {report['rounds']} rounds",
        f"dead pool's models learning again (s): {show(report['death_seconds'])}; worst "
        f"{'-' if death is None else f'{death:.2f}'} (goal <= lease TTL + {DEATH_MARGIN:g} s = "
        f"{ttl + DEATH_MARGIN:g}): {'met' if death_ok else 'NOT met'}",
        f"joiner holding its share (s): {show(report['join_seconds'])}; worst "
        f"{'-' if join is None else f'{join:.2f}'} (goal <= {JOIN_GOAL:g}): {'met' if join_ok else 'NOT met'}",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease-ttl", type=float, default=3.0, help="the default lease TTL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    images, labels = load_digits(args.data or default_data_dir())
    with tempfile.TemporaryDirectory() as tmp:
        report = run(images, labels, Path(tmp), args.models, args.rounds, args.lease_ttl)
    print(json.dumps(report, indent=2) if args.json else text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
