"""Exactly once from the publisher: each producer's highest sequence number, kept with the weights; duplicates skipped.

Entries may carry a ``producer`` and a ``seq`` (``digitstream.protocol.Origin``). The worker keeps
a *mark* per producer: the highest ``seq`` it has consumed from it and the stream time (the
millisecond part of the entry id) it last saw it. An entry whose ``seq`` is not above its
producer's mark is a duplicate (a batch the producer sent again because it could not know whether
it had landed): it is skipped, counted in ``duplicates_skipped``, neither learned nor dead-lettered.
The samples of a packed entry (``digitstream.packed``) are numbered ``seq + i`` and judged one by
one, like classic entries: a resend is skipped sample by sample, however it is packed.

**Committed with the weights.** The marks travel in every snapshot as three arrays
(``producers:id``, ``producers:seq``, ``producers:seen``), written by the same script as the
weights and the stream position, so a restarted worker skips exactly what the crashed one had
learned, never more. They are updated when a batch is handed to the learner, never for the read
ahead that a stopping worker leaves for the next run.

**Bounded.** At most ``producers_max`` marks are kept. A mark expires when the stream moves more
than ``producer_ttl`` seconds (by entry ids, not by the clock: replays decide the same) past the
producer's last entry; beyond the cap the least recently seen producer is forgotten. Both rules
only ever drop the marks of the producers seen longest ago.

**The guarantee.** A duplicate is skipped if its producer's mark is still held, i.e. unless
(a) the duplicate comes more than ``producer_ttl`` seconds of stream time after that producer's
previous entry, or (b) more than ``producers_max`` other producers appeared in the stream since
that entry. Only then could a resent entry be learned twice. The publisher resends within its
``retry_for`` period (minutes), far inside the default day.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from digitstream.protocol import PRODUCER_PATTERN, DecodedBatch, Origin
from digitstream.snapshot import SnapshotError

ID_ARRAY = "producers:id"  # the producer ids, b"\n"-joined (the id alphabet has no newline), as uint8
SEQ_ARRAY = "producers:seq"  # int64: each producer's highest sequence number
SEEN_ARRAY = "producers:seen"  # int64: the stream time (ms) of its last entry; the arrays are oldest first
_PRODUCER = re.compile(PRODUCER_PATTERN.encode())


@dataclass
class _Mark:
    seq: int
    seen: int  # ms part of the stream id of the producer's last entry


class Producers:
    """The high-water marks of the producers, least recently seen first (see the module docstring)."""

    def __init__(self, max_producers: int, ttl_seconds: float) -> None:
        self.max_producers = max_producers
        self.ttl_ms = round(ttl_seconds * 1000)
        self._marks: OrderedDict[bytes, _Mark] = OrderedDict()

    def __len__(self) -> int:
        return len(self._marks)

    def mark(self, producer: bytes) -> int | None:
        """The highest sequence number held for ``producer`` (None if none is held)."""
        found = self._marks.get(producer)
        return None if found is None else found.seq

    def filter(self, batch: DecodedBatch) -> tuple[DecodedBatch, int]:
        """The batch without its duplicates, and their number; the marks move past the batch.

        Decides exactly as :meth:`is_duplicate` entry by entry would, but a run of entries from one
        producer (a publisher's batch) costs a few numpy calls instead of a Python step per entry.
        """
        if not batch.producers:
            return batch, 0
        producers, n = batch.producers, len(batch.producers)
        seqs = np.array(batch.seqs, dtype=np.int64)
        drop: list[int] = []
        start = 0
        while start < n:
            producer = producers[start]
            one = start == 0 and producers.count(producer) == n  # the common case: one producer
            stop = n if one else _run_end(producers, start)
            if producer is not None:
                drop += self._run(producer, batch.ids, seqs, start, stop)
            start = stop
        return (batch.without(drop) if drop else batch), len(drop)

    def _run(self, producer: bytes, ids: list[bytes], seqs: np.ndarray, start: int, stop: int) -> list[int]:
        """The duplicates among the entries ``start:stop``, all from ``producer``; records them."""
        first, last = _ms(ids[start]), _ms(ids[stop - 1])
        if last - first > self.ttl_ms:  # a mark could expire inside the run: entry by entry (rare)
            return [i for i in range(start, stop) if self.is_duplicate(Origin(producer, int(seqs[i])), ids[i])]
        marks = self._marks
        mark = marks.get(producer)
        if mark is not None and first - mark.seen > self.ttl_ms:
            mark = None  # expired: the producer starts afresh
        run = seqs[start:stop]
        before = np.maximum.accumulate(np.concatenate(([-1 if mark is None else mark.seq], run[:-1])))
        duplicates = (np.flatnonzero(run <= before) + start).tolist()
        highest = max(int(run.max()), -1 if mark is None else mark.seq)
        marks[producer] = _Mark(highest, last if mark is None else max(mark.seen, last))
        marks.move_to_end(producer)
        while len(marks) > self.max_producers:
            marks.popitem(last=False)
        return duplicates

    def is_duplicate(self, origin: Origin, entry_id: bytes) -> bool:
        """Whether the entry ``entry_id`` from ``origin`` repeats one already consumed; records it either way."""
        now = _ms(entry_id)
        marks = self._marks
        mark = marks.get(origin.producer)
        if mark is not None and now - mark.seen > self.ttl_ms:
            mark = None  # expired: the producer starts afresh
        if mark is not None and origin.seq <= mark.seq:
            mark.seen = max(mark.seen, now)
            marks.move_to_end(origin.producer)
            return True
        marks[origin.producer] = _Mark(origin.seq, now)
        marks.move_to_end(origin.producer)
        while len(marks) > self.max_producers:
            marks.popitem(last=False)
        return False

    # -- in the snapshot --------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The marks still held, as snapshot arrays (expired ones are dropped here: they decide nothing)."""
        if self._marks:
            newest = max(mark.seen for mark in self._marks.values())
            for producer in [p for p, m in self._marks.items() if newest - m.seen > self.ttl_ms]:
                del self._marks[producer]
        ids = b"\n".join(self._marks)
        return {
            ID_ARRAY: np.frombuffer(ids, dtype=np.uint8).copy(),
            SEQ_ARRAY: np.array([m.seq for m in self._marks.values()], dtype=np.int64),
            SEEN_ARRAY: np.array([m.seen for m in self._marks.values()], dtype=np.int64),
        }

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], max_producers: int, ttl_seconds: float) -> Producers:
        """The marks a snapshot holds (none in snapshots older than this feature); SnapshotError if garbled."""
        producers = cls(max_producers, ttl_seconds)
        if ID_ARRAY not in arrays:
            return producers
        try:
            raw, seqs, seen = arrays[ID_ARRAY], arrays[SEQ_ARRAY], arrays[SEEN_ARRAY]
        except KeyError as exc:
            raise SnapshotError(f"snapshot has {ID_ARRAY} but no {exc.args[0]}") from None
        ids = raw.astype(np.uint8).tobytes().split(b"\n") if raw.size else []
        if not (len(ids) == seqs.size == seen.size) or seqs.ndim != 1 or seen.ndim != 1:
            raise SnapshotError(f"producer arrays disagree: {len(ids)} ids, {seqs.size} seqs, {seen.size} times")
        if (seqs.size and int(seqs.min()) < 0) or len(set(ids)) != len(ids):
            raise SnapshotError("producer arrays: negative sequence number or repeated producer")
        for producer, seq, when in zip(ids, seqs.tolist(), seen.tolist(), strict=True):
            if not _PRODUCER.fullmatch(producer):
                raise SnapshotError(f"producer arrays: invalid producer id {producer[:80]!r}")
            producers._marks[producer] = _Mark(int(seq), int(when))
        while len(producers._marks) > max_producers:  # the cap was lowered since
            producers._marks.popitem(last=False)
        return producers


def _ms(entry_id: bytes) -> int:
    """The stream time of an entry: the millisecond part of its id."""
    return int(entry_id.partition(b"-")[0])


def _run_end(producers: list[bytes | None], start: int) -> int:
    """The end of the run of entries from ``producers[start]``'s producer."""
    producer, end = producers[start], start + 1
    while end < len(producers) and producers[end] == producer:
        end += 1
    return end
