"""Reading a model's stream in batches, as Redis sends them (no dict per entry), never blocking past a heartbeat."""

from __future__ import annotations

from typing import Any

import redis

from digitstream.connections import RedisClient
from digitstream.packed import FIELD_LABELS
from digitstream.settings import Settings

from .status import heartbeat_period


class StreamReader:
    """``read(stream, after, block)``: up to ``batch_size`` entries after id ``after``, as ``[id, [name, value, ...]]``.

    It reads through the worker's connections, but XREAD answers stay Redis's flat lists: redis-py
    would build a dict per entry, and ``protocol.decode_entries`` takes either. A cluster client
    parses replies in its per-node clients, out of reach: on a cluster the reader gets dicts
    (about a third slower to read, measured in docs/cluster.md). A blocking read
    waits at most ``block_ms``, never longer than a heartbeat period, so the lease is renewed in time.

    With packed entries (many samples each) a read of ``batch_size`` entries would hold
    ``batch_size`` x ``pack_max`` samples: after each read (``measured``) the count becomes about
    ``batch_size`` samples' worth of entries of the size just read (at least 1), so a read holds
    about ``batch_size`` samples whatever the entries. Before the first read, the first entry
    (XRANGE COUNT 1) sets it the same way. A read right after a run of classic entries turns packed
    may still hold up to ``batch_size`` packed entries.
    """

    def __init__(self, settings: Settings, client: RedisClient) -> None:
        self.batch_size = settings.batch_size
        self.count: int | None = None  # entries per read: set by the first entry, then measured (the docstring)
        self.block_ms = max(1, min(settings.block_ms, int(heartbeat_period(settings) * 1000)))
        self._client: RedisClient = client
        if isinstance(client, redis.Redis):
            self._client = redis.Redis(connection_pool=client.connection_pool)
            self._client.set_response_callback("XREAD", _raw_reply)

    def read(self, stream: str, after: str, block: bool, limit_ms: int | None = None) -> list[list[Any]]:
        """``limit_ms`` shortens a blocking read (never below 1 ms): a snapshot falls due by then."""
        block_ms = (self.block_ms if limit_ms is None else max(1, min(self.block_ms, limit_ms))) if block else None
        if self.count is None:
            first: Any = self._client.xrange(stream, f"({after}", "+", count=1)
            if first:
                fields = first[0][1]
                labels = fields.get(FIELD_LABELS) if isinstance(fields, dict) else None
                self.measured(1, len(labels) if labels else 1)
        response: Any = self._client.xread({stream: after}, count=self.count or self.batch_size, block=block_ms)
        if not response:
            return []
        # RESP3 answers a map {stream: entries}, RESP2 a list [[stream, entries]]; one stream either way.
        return next(iter(response.values())) if isinstance(response, dict) else response[0][1]

    def measured(self, entries: int, samples: int) -> None:
        """A read of ``entries`` entries held ``samples`` samples: the next asks for ``batch_size`` samples' worth."""
        if entries and samples:
            self.count = max(1, min(self.batch_size, self.batch_size * entries // samples))


def _raw_reply(response: Any, **options: Any) -> Any:
    """A response callback that keeps Redis's reply as it came."""
    return response
