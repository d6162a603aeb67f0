"""The endurance run's verdict: each goal with its measured value, and the printed table (``endurance.py``).

Bounds are derived, never picked: from the run's settings and what the run measured.

* **Stream.** A worker trims learned entries beyond the newest ``retention_max_len`` it has consumed
  *since it started* (``worker/retention.py``); until it knows that many ids, the snapshot script
  bounds the stream to ``retention_max_len`` only while at most 1,000 entries wait to be learned. So
  the learned entries kept stay below ``2 x retention_max_len``, and the unlearned ones below what
  is published while nobody learns: after a SIGKILL, the lease TTL plus the new worker's start-up
  (measured: the first worker's, from spawn to its first snapshot); after a Redis outage, the
  worker's longest backoff (``worker.retry.BACKOFF_MAX``); plus one snapshot interval.
  ``bound = 2 x retention_max_len + rate x (max(lease_ttl + start-up, BACKOFF_MAX) + snapshot_interval)``.
* **Dead letters.** With a dead-letter retention setting (``deadletter_max_len``, trimmed with
  ``MAXLEN ~`` after the snapshot that adds them) the bound is that limit, plus one radix-tree node
  of slack (``stream-node-max-entries``, 100), plus the dead letters one snapshot may add
  (``worker.commit.MAX_PENDING_DEADLETTERS``). Without one, every dead letter is kept: the bound is
  the bad entries published.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

RESTART_GRACE = 5.0  # seconds after Redis answers again still inside a restart window
MEMORY_MIN_MINUTES = 5.0
RSS_GROWTH = 0.20
RSS_SLACK_MB = 20.0
STREAM_NODE_ENTRIES = 100  # Redis's stream-node-max-entries: the slack of an approximate MAXLEN ~ trim


@dataclass
class Goal:
    what: str
    measured: str
    met: bool | None  # None: not judged in this run (reported only)


def restart_windows(report: dict[str, Any]) -> list[tuple[float, float]]:
    """(from, to) unix seconds of each Redis outage, widened by the documented grace."""
    return [(event["stop"] - 1, event["back"] + RESTART_GRACE) for event in report["timeline"]["redis"]]


def classify(report: dict[str, Any]) -> dict[str, int]:
    """Answers by kind: ok, 503 inside a Redis-restart window, and failures (everything else)."""
    windows = restart_windows(report)
    out = {"ok": 0, "503 in restart window": 0, "failed": 0, "failed in restart window": 0}
    for second, counts in report["load"]["seconds"].items():
        inside = any(start <= int(second) <= end for start, end in windows)
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


def stream_bound(report: dict[str, Any]) -> tuple[float, str]:
    """The stream-length bound and how it was derived."""
    b = report["bounds"]
    backlog_s = max(b["lease_ttl"] + b["worker_startup_s"], b["backoff_max"]) + b["snapshot_interval"]
    bound = 2 * report["retention_max_len"] + report["rate"] * backlog_s
    how = (
        f"2 x {report['retention_max_len']:,} + {report['rate']:g}/s x (max({b['lease_ttl']:g} s lease + "
        f"{b['worker_startup_s']:.1f} s start-up, {b['backoff_max']:g} s backoff) + {b['snapshot_interval']:g} s)"
    )
    return bound, how


def deadletter_bound(report: dict[str, Any]) -> tuple[float, str]:
    b, bad = report["bounds"], report["final"]["bad_published"]
    if b["deadletter_max_len"] is None:
        return bad, f"{bad:,} bad entries published (no dead-letter retention setting: all kept)"
    bound = b["deadletter_max_len"] + STREAM_NODE_ENTRIES + b["max_pending_deadletters"]
    return bound, (
        f"{b['deadletter_max_len']:,} + {STREAM_NODE_ENTRIES} (MAXLEN ~ node) + {b['max_pending_deadletters']:,} "
        "(one snapshot's)"
    )


def goals(report: dict[str, Any]) -> list[Goal]:
    answers = classify(report)
    final = report["final"]
    redis_events = report["timeline"]["redis"]
    duration = report["minutes"] * 60
    warmup = min(60.0, duration / 4)
    kills = [e for e in redis_events if e["kind"] == "SIGKILL"]
    lost = final["acknowledged_lost"]
    items = [
        Goal("prediction requests answered ok", f"{answers['ok']:,}", answers["ok"] > 0),
        Goal(
            "failed prediction requests (outside the documented 503s of the Redis restarts)",
            f"{answers['failed']:,} (of which {answers['failed in restart window']:,} during a restart)",
            answers["failed"] == 0,
        ),
        Goal(
            "503 answers during the Redis restarts (documented, allowed)", f"{answers['503 in restart window']:,}", None
        ),
        Goal(
            "samples learned == samples published (after the drain)",
            f"{final['learned']:,} learned, {final['published']:,} published",
            final["learned"] == final["published"],
        ),
        Goal(
            "duplicates learned (learned - published; resends the worker skipped by producer seq)",
            f"{max(0, final['learned'] - final['published'])} ({final['duplicates_skipped']:,} skipped)",
            final["learned"] <= final["published"],
        ),
        Goal(
            f"acknowledged samples lost by Redis (appendfsync {report['appendfsync']}; resent by the publisher "
            "+ lost beyond its window)",
            f"{lost['resent'] + lost['lost']} ({lost['resent']} resent, {lost['lost']} lost)",
            lost["resent"] + lost["lost"] == 0 if report["appendfsync"] == "always" else None,
        ),
        Goal(
            "bad entries dead-lettered exactly once",
            f"{final['deadletter_count']:,} dead-lettered, {final['bad_published']:,} published",
            final["deadletter_count"] == final["bad_published"],
        ),
        Goal(
            "both replicas serve the final model",
            ", ".join(f"{v}" for v in final["served"].values()),
            all(v == final["learned"] for v in final["served"].values()),
        ),
        Goal(
            "worker SIGKILLs / Redis SIGKILLs / Redis restarts (SIGTERM)",
            f"{len(report['timeline']['kills'])} / {len(kills)} / {len(redis_events) - len(kills)}",
            len(report["timeline"]["kills"]) >= 1 and len(kills) >= 2,
        ),
    ]
    lengths = [length for _, length, _, _ in report["stream"]]
    bound, how = stream_bound(report)
    peak_usage = max((usage or 0 for _, _, usage, _ in report["stream"]), default=0)
    items.append(
        Goal(
            f"stream length within the retention bound ({how} = {bound:,.0f})",
            f"peak {max(lengths, default=0):,} entries ({peak_usage / 2**20:.1f} MB), end {final['stream_length']:,}",
            max(lengths, default=0) <= bound,
        )
    )
    dead_lengths = [dead for _, _, _, dead in report["stream"]] + [final["deadletters"]]
    dead_bound, dead_how = deadletter_bound(report)
    items.append(
        Goal(
            f"dead-letter stream within its bound ({dead_how} = {dead_bound:,.0f})",
            f"peak {max(dead_lengths):,} entries, end {final['deadletters']:,}",
            max(dead_lengths) <= dead_bound,
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
        start, end, peak = rss_start_end(samples, report["timeline"]["load_start"], warmup)
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
    outages = ", ".join(f"{e['kind']} ({e['back'] - e['stop']:.1f} s down)" for e in report["timeline"]["redis"])
    lines = [
        f"endurance: {report['minutes']:g} min, publisher {report['rate']:g} samples/s (1 bad entry per "
        f"{report['bad_every']:,}), {report['connections']} connections on {len(load['urls'])} replicas, worker "
        f"SIGKILL every {report['kill_every']:g} s, Redis: {outages or 'never stopped'}; appendfsync "
        f"{report['appendfsync']}, retention {report['retention_max_len']:,}",
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


def redis_schedule(duration: float, kill_every: float, kinds: tuple[str, ...]) -> list[tuple[float, str]]:
    """When to stop Redis and how: spread over the run, each half a kill period from any worker SIGKILL.

    >>> redis_schedule(600, 60, ("SIGKILL", "SIGTERM", "SIGKILL"))
    [(90.0, 'SIGKILL'), (330.0, 'SIGTERM'), (510.0, 'SIGKILL')]
    >>> redis_schedule(30, 10, ("SIGKILL", "SIGTERM", "SIGKILL"))
    [(5.0, 'SIGKILL'), (15.0, 'SIGTERM'), (25.0, 'SIGKILL')]
    """
    halves = [
        (k + 0.5) * kill_every for k in range(math.ceil(duration / kill_every)) if (k + 0.5) * kill_every < duration
    ]
    picked = sorted({math.floor((i + 0.5) * len(halves) / len(kinds)) for i in range(len(kinds))})
    return [(halves[index], kind) for index, kind in zip(picked, kinds, strict=False)]
