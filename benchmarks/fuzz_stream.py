"""The stream fuzzer: adversarial entries through the codec, a real worker, and the throughput they cost.

Entries come from ``fuzz_entries.FuzzEntries`` (structure-aware: every accepted form, hostile JSON
of every kind, byte garbage, bad labels and origins, thousands of fields, fields of >= 10 MB),
each judged by the independent ``fuzz_entries.oracle``. Three parts, one run:

* **codec**: ``decode_entries`` on reads of 1,000 entries as Redis's raw reply lists them. It must
  never raise, learn exactly the entries the oracle accepts (same pixels, same label), and
  reject every other one with a reason.
* **worker**: a real ``digitstream worker`` process against a real redis-server while the entries
  are published in chunks. Checked: the process never exits (it is stopped with SIGTERM at the
  end and must exit 0), every bad entry is dead-lettered exactly once and no valid one, at every
  snapshot observed the dead letters are exactly the bad entries up to its position (they are
  written by the snapshot that passes them), the delay from publishing a bad entry to its dead
  letter (against ``snapshot_interval``), and the weights equal those of a learner fed the valid
  entries alone (bit for bit).
* **throughput**: ``Worker.run(burst=True)`` over a stream of canonical samples and over the same
  stream with 1 % of its entries replaced by bad ones (every kind but the >= 10 MB one),
  alternating, medians of the repeats: entries consumed per second and the ratio (goal >= 90 %).

    python -m digitstream.benchmarks.fuzz_stream [--codec 100000] [--worker 6000] [--throughput 50000]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import redis

from digitstream.benchmarks.fuzz_entries import FuzzEntries, oracle
from digitstream.clients.embedded_redis import RedisServer
from digitstream.learner import new_learner
from digitstream.protocol import N_PIXELS, decode_entries, encode_sample, parse_id
from digitstream.settings import load_settings
from digitstream.store import read_snapshot

GOAL_RATIO = 0.90
BAD_SHARE = 0.01


def flat(fields: dict[bytes, bytes]) -> list[bytes]:
    return [item for pair in fields.items() for item in pair]


# -- codec ----------------------------------------------------------------------------------------
def codec_run(n: int, seed: int, batch: int = 1000) -> dict[str, Any]:
    """``n`` generated entries through ``decode_entries``; the verdicts against the oracle."""
    fuzz = FuzzEntries(seed)
    kinds: collections.Counter[str] = collections.Counter()
    learnable = rejected = mismatches = exceptions = 0
    decode_seconds = 0.0
    largest = 0
    for start in range(0, n, batch):
        entries = [fuzz.entry() for _ in range(min(batch, n - start))]
        ids = [b"%d-0" % (start + i) for i in range(len(entries))]
        read = [[entry_id, flat(fields)] for entry_id, (_, fields) in zip(ids, entries, strict=True)]
        began = time.perf_counter()
        try:
            decoded = decode_entries(read)
        except Exception:
            exceptions += 1
            continue
        decode_seconds += time.perf_counter() - began
        got = dict(zip(decoded.ids, zip(decoded.images, decoded.labels, strict=True), strict=True))
        reasons = {entry_id: reason for entry_id, _, reason in decoded.rejects}
        for (kind, fields), entry_id in zip(entries, ids, strict=True):
            kinds[kind] += 1
            largest = max(largest, sum(len(k) + len(v) for k, v in fields.items()))
            expected = oracle(fields)
            if expected is None:
                rejected += 1
                mismatches += not reasons.get(entry_id, "").strip()
            else:
                learnable += 1
                pixels_label = got.get(entry_id)
                same = pixels_label is not None and np.array_equal(pixels_label[0], expected[0])
                mismatches += not (same and pixels_label is not None and int(pixels_label[1]) == expected[1])
    return {
        "entries": n, "kinds": dict(kinds), "learnable": learnable, "rejected": rejected, "mismatches": mismatches,
        "exceptions": exceptions, "decode_seconds": decode_seconds, "largest_entry_bytes": largest,
    }  # fmt: skip


# -- a real worker --------------------------------------------------------------------------------
_ATOMIC_VIEW = """
local v = redis.call('GET', KEYS[1])
if not v then return {false, false, 0} end
return {v, redis.call('HGET', KEYS[2] .. v, 'meta'), redis.call('XLEN', KEYS[3])}
"""


def worker_entries(n: int, seed: int) -> list[tuple[str, dict[bytes, bytes]]]:
    """``n`` fuzz entries with at least two of >= 10 MB and two with thousands of fields."""
    fuzz = FuzzEntries(seed)
    entries = [fuzz.entry() for _ in range(n)]
    rng = np.random.default_rng(seed)
    for kind, make in (("huge field (>= 10 MB)", fuzz.huge_field), ("thousands of fields", fuzz.many_fields)):
        for _ in range(max(0, 2 - sum(k == kind for k, _ in entries))):
            entries[int(rng.integers(n))] = (kind, make())
    return entries


def worker_run(n: int, seed: int, server: RedisServer, log_dir: Path, chunk: int = 100) -> dict[str, Any]:
    import json

    settings = load_settings(redis_url=server.url, model_name="fuzz")
    keys = settings.keys
    client = redis.Redis.from_url(server.url)
    entries = worker_entries(n, seed)
    verdicts = [oracle(fields) for _, fields in entries]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSTREAM_")}
    env.update(DIGITSTREAM_REDIS_URL=server.url, DIGITSTREAM_MODEL_NAME="fuzz")
    log = open(log_dir / "fuzz-worker.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "digitstream", "worker"], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    view = client.register_script(_ATOMIC_VIEW)
    exits, violations, observed = 0, 0, 0
    published: list[tuple[tuple[int, int], bool, float]] = []  # (id, bad, time)
    bad_at: dict[bytes, float] = {}
    delays: list[float] = []
    dead_cursor = "0-0"
    try:
        deadline = time.monotonic() + 120
        while not client.exists(keys.worker_status) and time.monotonic() < deadline:
            time.sleep(0.05)  # the worker is up (kernels loaded) before the clock starts

        def observe() -> None:
            nonlocal violations, observed, dead_cursor
            version, meta, dead = view(keys=[keys.snapshot_latest, keys.snapshot_prefix, keys.deadletter])
            if version:
                last = parse_id(json.loads(meta)["last_id"])
                position = bisect.bisect_right(published, (last, True, float("inf")))
                passed_bad = sum(bad for _, bad, _ in published[:position])
                violations += passed_bad != int(dead)
                observed += 1
            news: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
                keys.deadletter, f"({dead_cursor}", "+", count=10_000
            )
            for dead_id, fields in news:
                delays.append(time.monotonic() - bad_at.get(fields[b"original_id"], float("nan")))
                dead_cursor = dead_id.decode()

        started = time.monotonic()
        for start in range(0, n, chunk):
            pipe = client.pipeline(transaction=False)
            part = entries[start : start + chunk]
            for _, fields in part:
                pipe.xadd(keys.samples, fields)  # type: ignore[arg-type]
            ids = pipe.execute()
            now = time.monotonic()
            for entry_id, index in zip(ids, range(start, start + len(part)), strict=True):
                bad = verdicts[index] is None
                published.append((parse_id(entry_id), bad, now))
                if bad:
                    bad_at[entry_id] = now
            exits += process.poll() is not None
            observe()
            time.sleep(0.02)
        last_id = published[-1][0]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            observe()
            exits += process.poll() is not None
            snapshot = read_snapshot(client, keys)
            if snapshot is not None and parse_id(str(snapshot.meta["last_id"])) >= last_id:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        observe()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    dead: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(keys.deadletter)  # type: ignore[assignment]
    counts = collections.Counter(fields[b"original_id"] for _, fields in dead)
    bad_ids = set(bad_at)
    snapshot = read_snapshot(client, keys)
    assert snapshot is not None
    valid = [v for v in verdicts if v is not None]
    reference: Any = new_learner(settings.hyper_parameters())
    reference.learn_many(np.array([v[0] for v in valid]).reshape(-1, N_PIXELS), np.array([v[1] for v in valid]))
    learner: Any = snapshot.learner()
    same_state = all(np.array_equal(a, reference.state().arrays[k]) for k, a in learner.state().arrays.items())
    client.close()
    return {
        "entries": n, "bad": len(bad_ids), "valid": len(valid), "exits_while_running": exits,
        "returncode_on_sigterm": returncode, "dead_letters": len(dead),
        "bad_dead_lettered_once": sum(counts.get(i) == 1 for i in bad_ids),
        "dead_lettered_more_than_once": sum(c > 1 for c in counts.values()),
        "valid_dead_lettered": sum(1 for i in counts if i not in bad_ids),
        "snapshots_observed": observed, "snapshot_violations": violations,
        "delay_max_s": max(delays, default=0.0), "delay_p99_s": float(np.percentile(delays, 99)) if delays else 0.0,
        "snapshot_interval_s": settings.snapshot_interval, "samples_learned": snapshot.samples_learned,
        "weights_equal": bool(np.array_equal(learner.weights, reference.weights)), "state_equal": same_state,
        "huge_entries": sum(k.startswith("huge") for k, _ in entries), "seconds": elapsed,
    }  # fmt: skip


# -- throughput -----------------------------------------------------------------------------------
def throughput_run(n: int, seed: int, server: RedisServer, repeats: int) -> dict[str, Any]:
    """Entries/s of a burst worker over clean entries and over the same with 1 % bad ones, alternating."""
    from digitstream.worker.loop import Worker

    client = redis.Redis.from_url(server.url)
    rng = np.random.default_rng(seed)
    images, labels = rng.integers(0, 256, (n, N_PIXELS), dtype=np.uint8), rng.integers(0, 10, n)
    clean = [encode_sample(images[i], int(labels[i])) for i in range(n)]
    fuzz = FuzzEntries(seed, huge=False)
    bad_entries: list[tuple[str, dict[bytes, bytes]]] = []
    while len(bad_entries) < round(n * BAD_SHARE):
        kind, fields = fuzz.entry()
        if oracle(fields) is None:
            bad_entries.append((kind, fields))
    positions = rng.choice(n, len(bad_entries), replace=False)
    dirty, few_fields = list(clean), list(clean)
    for (kind, fields), i in zip(bad_entries, positions, strict=True):
        dirty[int(i)] = fields
        if kind != "thousands of fields":  # the breakdown: what the rest of the mix costs
            few_fields[int(i)] = fields
    streams = {"clean": "tp:clean", "1 % bad": "tp:dirty", "1 % bad, no thousand-field entries": "tp:few"}
    for stream, entries in zip(streams.values(), (clean, dirty, few_fields), strict=True):
        for start in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for fields in entries[start : start + 1000]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            pipe.execute()
    seconds: dict[str, list[float]] = {name: [] for name in streams}
    cpu: dict[str, list[float]] = {name: [] for name in streams}  # this process's and Redis's CPU seconds
    gc.collect()
    gc.freeze()
    for r in range(-1, repeats):  # -1: a warm-up round, not counted
        for name, stream in streams.items():
            settings = load_settings(redis_url=server.url, model_name=f"tp{r}-{stream}",
                                     stream_key=stream, retention_max_len=10 * n)  # fmt: skip
            worker = Worker(settings, client)
            began, cpu_began = time.perf_counter(), time.process_time() + _redis_cpu(client)
            worker.run(burst=True)
            took, cpu_took = time.perf_counter() - began, time.process_time() + _redis_cpu(client) - cpu_began
            assert worker.position.entries_consumed == n
            if r >= 0:
                seconds[name].append(took)
                cpu[name].append(cpu_took)
    gc.unfreeze()
    client.close()
    rates = {name: n / statistics.median(values) for name, values in seconds.items()}
    cpu_rates = {name: n / statistics.median(values) for name, values in cpu.items()}
    return {
        "entries": n, "bad": len(bad_entries), "repeats": repeats, "rates": rates, "seconds": seconds,
        "ratio": rates["1 % bad"] / rates["clean"], "cpu_seconds": cpu, "cpu_rates": cpu_rates,
        "cpu_ratio": cpu_rates["1 % bad"] / cpu_rates["clean"], "load_average": os.getloadavg()[0],
        "many_fields": sum(kind == "thousands of fields" for kind, _ in bad_entries),
        "ratio_few_fields": rates["1 % bad, no thousand-field entries"] / rates["clean"],
        "cpu_ratio_few_fields": cpu_rates["1 % bad, no thousand-field entries"] / cpu_rates["clean"],
    }  # fmt: skip


def _redis_cpu(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- the whole run --------------------------------------------------------------------------------
def run(
    codec: int = 100_000, worker: int = 6000, throughput: int = 50_000, seed: int = 0, repeats: int = 3,
    server: RedisServer | None = None,
) -> dict[str, Any]:  # fmt: skip
    """All three parts on one redis-server (``server``, emptied between them, or a new one)."""
    report: dict[str, Any] = {"seed": seed}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = server or stack.enter_context(RedisServer(Path(tmp) / "redis", appendonly=False))
        client = redis.Redis.from_url(server.url)
        began = time.perf_counter()
        report["codec"] = codec_run(codec, seed)
        report["codec"]["seconds"] = time.perf_counter() - began
        client.flushall()
        report["worker"] = worker_run(worker, seed + 1, server, Path(tmp))
        client.flushall()
        report["throughput"] = throughput_run(throughput, seed + 2, server, repeats)
        client.flushall()
        client.close()
    return report


def goals(report: dict[str, Any]) -> dict[str, bool]:
    c, w, t = report["codec"], report["worker"], report["throughput"]
    return {
        "codec: >= 100,000 entries, 0 exceptions, 0 verdicts off the oracle": c["entries"] >= 100_000
        and c["exceptions"] == 0 and c["mismatches"] == 0,
        "worker: >= 5,000 entries, 0 exits, exit 0 on SIGTERM": w["entries"] >= 5000 and w["exits_while_running"] == 0
        and w["returncode_on_sigterm"] == 0,
        "worker: every bad entry dead-lettered exactly once, no valid one": w["bad_dead_lettered_once"] == w["bad"]
        and w["dead_letters"] == w["bad"] and w["valid_dead_lettered"] == 0,
        "worker: dead letters written by the snapshot that passes them": w["snapshot_violations"] == 0,
        "worker: weights equal the valid entries' alone": w["weights_equal"] and w["state_equal"],
        f"throughput with 1 % bad >= {GOAL_RATIO:.0%} of clean": t["ratio"] >= GOAL_RATIO,
    }  # fmt: skip


def report_text(report: dict[str, Any]) -> str:
    c, w, t = report["codec"], report["worker"], report["throughput"]
    lines = [
        f"codec: {c['entries']:,} entries ({c['learnable']:,} learnable, {c['rejected']:,} rejected), "
        f"{c['exceptions']} exceptions, {c['mismatches']} verdicts off the oracle, decoded in "
        f"{c['decode_seconds']:.1f} s ({c['entries'] / max(c['decode_seconds'], 1e-9):,.0f} entries/s); "
        f"largest entry {c['largest_entry_bytes']:,} bytes",
        "  kinds: " + ", ".join(f"{k} {v:,}" for k, v in sorted(c["kinds"].items())),
        f"worker: {w['entries']:,} entries ({w['bad']:,} bad, {w['huge_entries']} of >= 10 MB) in "
        f"{w['seconds']:.1f} s; "
        f"exits while running {w['exits_while_running']}, exit code on SIGTERM {w['returncode_on_sigterm']}",
        f"  dead letters {w['dead_letters']:,}: bad entries dead-lettered exactly once {w['bad_dead_lettered_once']:,}"
        f" of {w['bad']:,}, more than once {w['dead_lettered_more_than_once']}, valid ones {w['valid_dead_lettered']}",
        f"  snapshots observed {w['snapshots_observed']}, dead letters not matching their position "
        f"{w['snapshot_violations']}; publish -> dead letter delay p99 {w['delay_p99_s']:.2f} s, "
        f"max {w['delay_max_s']:.2f} s (snapshot interval {w['snapshot_interval_s']} s)",
        f"  samples learned {w['samples_learned']:,} of {w['valid']:,} valid; weights equal to the valid entries' "
        f"alone: {w['weights_equal']} (whole state: {w['state_equal']})",
        f"throughput: {t['entries']:,} entries, {t['repeats']} runs each (medians): clean "
        f"{t['rates']['clean']:,.0f} entries/s, 1 % bad ({t['bad']}) {t['rates']['1 % bad']:,.0f} entries/s; "
        f"ratio {t['ratio']:.1%} (goal >= {GOAL_RATIO:.0%}); per CPU second (worker + Redis, robust to a busy "
        f"machine): clean {t['cpu_rates']['clean']:,.0f}, 1 % bad {t['cpu_rates']['1 % bad']:,.0f} entries, "
        f"ratio {t['cpu_ratio']:.1%}; load average {t['load_average']:.1f} on {os.cpu_count()} cores",
        f"  of which {t['many_fields']} entries of 1,000-10,000 fields; without them (the same stream, those "
        f"entries clean): ratio {t['ratio_few_fields']:.1%}, per CPU second {t['cpu_ratio_few_fields']:.1%}",
    ]
    lines += [f"goal {'met' if met else 'NOT met'}: {name}" for name, met in goals(report).items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", type=int, default=100_000, help="entries through the codec")
    parser.add_argument("--worker", type=int, default=6000, help="entries through a real worker")
    parser.add_argument("--throughput", type=int, default=50_000, help="entries per throughput run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run(args.codec, args.worker, args.throughput, args.seed, args.repeats)
    print(report_text(report))
    return 0 if all(goals(report).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
