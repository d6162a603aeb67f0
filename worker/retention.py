"""Stream retention: which already-learned entries the snapshot script may trim (by MINID, and by length).

Entries after the snapshotted position are never trimmed: they are what a restarted worker
learns next. At or before that position the worker keeps the newest ``max_len`` entries it has
consumed and, when ``max_age`` is set, none older than ``max_age`` seconds (by the millisecond
time in the entry id, i.e. Redis's clock against the worker's; a small skew only shifts the cut).
Whichever limit cuts more wins.

``max_len`` counts samples: a packed entry counts as many as it holds (so a stream of packed entries
keeps about as many learned samples as one of classic entries, not ``max_len`` packed entries).
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
    """The ids of the newest consumed entries, holding at least ``keep`` samples once that many were seen.

    A classic entry holds one sample, a packed entry (``digitstream.packed``) its count: the
    retention keeps ``max_len`` learned samples whatever their packing.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._batches: deque[tuple[list[bytes], list[int] | None]] = deque()  # ids, their samples (None: 1 each)
        self._count = 0

    def extend(self, ids: list[bytes], sizes: dict[bytes, int] | None = None) -> None:
        """Consumed entries, ``sizes`` giving the samples of the packed ones among them."""
        if not ids or self.keep == 0:
            return
        counts = [sizes.get(entry_id, 1) for entry_id in ids] if sizes else None
        self._batches.append((ids, counts))
        self._count += len(ids) if counts is None else sum(counts)
        while self._batches and self._count - _samples(self._batches[0]) >= self.keep:
            self._count -= _samples(self._batches.popleft())

    def nth_newest(self, n: int) -> bytes | None:
        """The entry holding the ``n``-th newest sample (1 = the newest), or None when fewer than ``n`` are known."""
        if n < 1 or n > self._count:
            return None
        for ids, counts in reversed(self._batches):
            if counts is None:
                if n <= len(ids):
                    return ids[-n]
                n -= len(ids)
                continue
            for entry_id, count in zip(reversed(ids), reversed(counts), strict=True):
                if n <= count:
                    return entry_id
                n -= count
        return None  # pragma: no cover - unreachable: n <= count


def _samples(batch: tuple[list[bytes], list[int] | None]) -> int:
    ids, counts = batch
    return len(ids) if counts is None else sum(counts)


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
