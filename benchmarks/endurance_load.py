"""The endurance run's load generator: closed-loop POST /predict on several replicas, every answer counted.

Unlike ``benchmarks/http_load.py`` (which measures speed and gives up on a connection at its first
error), this one keeps going through failures and records each answer by the second it completed,
so that the endurance run can tell failures inside the Redis-restart window from those outside it.
It runs in its own process (asyncio, uvloop when installed):

    python -m digitstream.benchmarks.endurance_load --url http://127.0.0.1:8001 --url ... --connections 64 \
        --duration 600 --body body.json --out load.json

Connections are spread evenly over the URLs. A request counts as ok when the answer is a 200 whose
body holds a ``"digit"``; anything else (another status, a malformed answer, a reset, a timeout)
counts as a failure, with its kind and the second it happened. The output (``--out``) is JSON:
totals, per-URL totals, latency percentiles and ``seconds``: ``{unix second: {kind: count}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TIMEOUT = 10.0  # seconds for one answer: longer counts as a failure ("timeout")
MAX_EXAMPLES = 20  # failures described in full (the rest are counted)


class Tally:
    """Every answer's kind by the second it completed, latencies of the ok ones, a few failure examples."""

    def __init__(self) -> None:
        self.seconds: defaultdict[int, Counter[str]] = defaultdict(Counter)
        self.per_url: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.latencies: list[float] = []
        self.examples: list[dict[str, Any]] = []

    def record(self, url: str, kind: str, latency: float | None = None, detail: str = "") -> None:
        now = time.time()
        self.seconds[int(now)][kind] += 1
        self.per_url[url][kind] += 1
        if latency is not None and kind == "ok":
            self.latencies.append(latency)
        if kind != "ok" and len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"time": round(now, 3), "url": url, "kind": kind, "detail": detail[:300]})


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """Send one request, read one answer: (status, body, whether the server will close the connection)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    body = await reader.readexactly(length)
    return status, body, close


async def connection(url: str, request: bytes, until: float, tally: Tally) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < until:
        if writer is None:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
            except (OSError, TimeoutError) as exc:
                tally.record(url, "connect error", detail=repr(exc))
                await asyncio.sleep(0.1)
                continue
        assert reader is not None and writer is not None
        started = time.perf_counter()
        try:
            status, body, close = await asyncio.wait_for(exchange(reader, writer, request), TIMEOUT)
        except TimeoutError:
            tally.record(url, "timeout", detail=f"no answer in {TIMEOUT:g} s")
            close = True
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            tally.record(url, "connection error", detail=repr(exc))
            close = True
        else:
            latency = time.perf_counter() - started
            if status == 200 and b'"digit"' in body:
                tally.record(url, "ok", latency)
            elif status == 200:
                tally.record(url, "malformed 200", detail=body.decode(errors="replace"))
            else:
                tally.record(url, str(status), detail=body.decode(errors="replace"))
        if close:
            writer.close()
            writer = reader = None
    if writer is not None:
        writer.close()


def request_for(url: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path or ''}/predict HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run(urls: list[str], connections: int, duration: float, body: bytes) -> dict[str, Any]:
    tally = Tally()
    started = time.time()
    until = time.monotonic() + duration
    tasks = [
        connection(urls[i % len(urls)], request_for(urls[i % len(urls)], body), until, tally)
        for i in range(connections)
    ]
    await asyncio.gather(*tasks)
    totals: Counter[str] = Counter()
    for counts in tally.seconds.values():
        totals.update(counts)
    ordered = sorted(tally.latencies) or [0.0]

    def percentile(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 3)

    return {
        "urls": urls,
        "connections": connections,
        "started": started,
        "ended": time.time(),
        "totals": dict(totals),
        "per_url": {url: dict(counts) for url, counts in tally.per_url.items()},
        "latency_ms": {"p50": percentile(50), "p99": percentile(99), "max": round(ordered[-1] * 1000, 3)},
        "seconds": {str(second): dict(counts) for second, counts in sorted(tally.seconds.items())},
        "examples": tally.examples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", required=True, help="a replica's base URL (repeat)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--body", type=Path, required=True, help="the JSON body of every POST /predict")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON result goes")
    args = parser.parse_args(argv)
    runner = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    result = runner(run(args.url, args.connections, args.duration, args.body.read_bytes()))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
