"""Stream retention: which already-learned entries the snapshot script may trim (by MINID, and by length).

Entries after the snapshotted position are never trimmed: they are what a restarted worker
learns next. At or before that position the worker keeps the newest ``max_len`` entries it has
consumed and, when ``max_age`` is set, none older than ``max_age`` seconds (by the millisecond
time in the entry id, i.e. Redis's clock against the worker's; a small skew only shifts the cut).
Whichever limit cuts more wins.

The ``max_len``-th newest id comes from the ids the worker has consumed since it started, kept
per batch (a few MB for 100,000 ids), so nothing is asked of Redis. Until it has consumed
``max_len`` entries since starting, a worker does not know the older ids; the snapshot script then
bounds the stream itself (``XTRIM MAXLEN max_len``), but only while at most ``TRIM_PROBE`` entries
are waiting to be learned (``digitstream.store``), so a worker restarted every few seconds still
keeps the stream bounded, and nothing unlearned is ever trimmed.
"""

from __future__ import annotations

from collections import deque

from digitstream.protocol import parse_id


def next_id(entry_id: bytes | str) -> str:
    """The smallest id after ``entry_id``: ``MINID next_id(x)`` trims ``x`` and everything before it."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"


class ConsumedIds:
    """The ids of the newest consumed entries, at least ``keep`` of them once that many were seen."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._batches: deque[list[bytes]] = deque()
        self._count = 0

    def extend(self, ids: list[bytes]) -> None:
        if not ids or self.keep == 0:
            return
        self._batches.append(ids)
        self._count += len(ids)
        while self._batches and self._count - len(self._batches[0]) >= self.keep:
            self._count -= len(self._batches.popleft())

    def nth_newest(self, n: int) -> bytes | None:
        """The ``n``-th newest id (1 = the newest), or None when fewer than ``n`` are known."""
        if n < 1 or n > self._count:
            return None
        for batch in reversed(self._batches):
            if n <= len(batch):
                return batch[-n]
            n -= len(batch)
        return None  # pragma: no cover - unreachable: n <= count


def trim_minid(
    last_id: bytes | str, consumed: ConsumedIds, max_len: int, max_age: float | None, now: float
) -> str | None:
    """The MINID for XTRIM after a snapshot at ``last_id`` (None: trim nothing)."""
    if parse_id(last_id) == (0, 0):
        return None
    ceiling = next_id(last_id)
    candidates = []
    if max_len == 0:
        candidates.append(ceiling)
    else:
        oldest_kept = consumed.nth_newest(max_len)
        if oldest_kept is not None:
            candidates.append(oldest_kept.decode() if isinstance(oldest_kept, bytes) else oldest_kept)
    if max_age is not None:
        candidates.append(f"{max(0, int((now - max_age) * 1000))}-0")
    if not candidates:
        return None
    minid = max(candidates, key=parse_id)
    return min(minid, ceiling, key=parse_id)
