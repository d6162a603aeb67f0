"""A small keep-alive HTTP/1.1 load generator (asyncio, uvloop if installed), used when ``wrk`` is missing.

Run in its own process so that it never shares an interpreter with the server it measures:

    python -m digitstream.benchmarks.http_load URL --duration 5 --connections 16 [--body FILE --content-type T]

Prints one JSON line: requests, duration_us, errors, non2xx, p50_us, p90_us, p99_us, max_us (the
same fields as the wrk script of benchmarks/service.py). Each connection sends a request, reads
the full answer (Content-Length framing), and sends the next: closed-loop, like wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


async def connection(host: str, port: int, request: bytes, until: float, latencies: list[float]) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection(host, port)
    errors = non2xx = 0
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            non2xx += not 200 <= status < 300
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors += 1
    finally:
        writer.close()
    return errors, non2xx


async def load(url: str, duration: float, connections: int, body: bytes | None, content_type: str) -> dict[str, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if body is None:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    else:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        request = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + duration
    results = await asyncio.gather(*(connection(host, port, request, until, latencies) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def percentile(p: float) -> int:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6)

    return {
        "requests": len(latencies),
        "duration_us": round(elapsed * 1e6),
        "errors": sum(e for e, _ in results),
        "non2xx": sum(n for _, n in results),
        "p50_us": percentile(50),
        "p90_us": percentile(90),
        "p99_us": percentile(99),
        "max_us": round(ordered[-1] * 1e6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--body", type=Path, help="POST this file's bytes (default: GET)")
    parser.add_argument("--content-type", default="application/json")
    args = parser.parse_args(argv)
    body = args.body.read_bytes() if args.body else None
    runner = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    print(json.dumps(runner(load(args.url, args.duration, args.connections, body, args.content_type))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
