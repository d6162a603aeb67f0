"""Exactly once from the publisher, on the worker's side: producer ids, sequence numbers and skipped duplicates.

An entry may carry ``producer`` and ``seq``; the worker keeps each producer's highest number in the
snapshot and skips an entry that does not go beyond it. The properties: whatever the interleaving
of producers, resent batches and batch boundaries, and wherever the worker restarts from a
snapshot, the learned samples are the unique entries, each once, in the order they first appeared;
marks are forgotten only by the documented rule (stream time past ``producer_ttl``, or LRU beyond
``producers_max``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitstream.protocol import (
    MAX_SEQ,
    PRODUCER_PATTERN,
    DecodedBatch,
    InvalidSample,
    Origin,
    decode_entries,
    decode_origin,
    encode_origin,
    encode_sample,
)
from digitstream.snapshot import SnapshotError
from digitstream.worker.dedupe import ID_ARRAY, SEQ_ARRAY, Producers
from tests.worker_support import latest, publish_raw, reference

RNG = np.random.default_rng(13)
POOL = RNG.integers(0, 256, (64, 784)).astype(np.uint8)  # the payload of (producer p, seq s) is POOL[(7p + s) % 64]


# -- the protocol's two optional fields ---------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"producer": b"a"}, "seq: required with producer"),
        ({b"seq": b"1"}, "producer: required with seq"),
        ({b"producer": b"", b"seq": b"1"}, "producer: must be 1-64 characters"),
        ({b"producer": b"a" * 65, b"seq": b"1"}, "producer: must be 1-64 characters"),
        ({b"producer": b"caf\xc3\xa9", b"seq": b"1"}, "producer: must be 1-64 characters"),
        ({b"producer": b"a b", b"seq": b"1"}, "producer: must be 1-64 characters"),
        ({b"producer": b"a\n", b"seq": b"1"}, "producer: must be 1-64 characters"),
        ({b"producer": b"a", b"seq": b"-1"}, "seq: must be a decimal integer"),
        ({b"producer": b"a", b"seq": b"+1"}, "seq: must be a decimal integer"),
        ({b"producer": b"a", b"seq": b" 1"}, "seq: must be a decimal integer"),
        ({b"producer": b"a", b"seq": b"1_0"}, "seq: must be a decimal integer"),
        ({b"producer": b"a", b"seq": b"01"}, "seq: must be a decimal integer"),
        ({b"producer": b"a", b"seq": b"1.0"}, "seq: must be a decimal integer"),
        ({b"producer": b"a", b"seq": b"\xd9\xa1"}, "seq: must be a decimal integer"),  # an Arabic-Indic one
        ({b"producer": b"a", b"seq": b""}, "seq: must be a decimal integer"),
        ({b"producer": b"a", b"seq": str(MAX_SEQ + 1).encode()}, "seq: must be a decimal integer"),
        ({b"producer": b"a", b"seq": b"9" * 40}, "seq: must be a decimal integer"),
    ],
)
def test_a_malformed_producer_or_seq_is_a_dead_letter_reason(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(InvalidSample, match=reason):
        decode_origin(fields)
    entry = {**encode_sample(POOL[0], 1), **fields}
    for form in (entry, [x for pair in entry.items() for x in pair]):  # redis-py's dict, the worker's flat list
        batch = decode_entries([(b"1-1", form)])
        assert batch.ids == [] and batch.rejects[0][2].startswith(reason), batch.rejects


@given(producer=st.from_regex(PRODUCER_PATTERN, fullmatch=True), seq=st.integers(0, MAX_SEQ))
def test_every_well_formed_origin_is_read_back_in_either_form(producer: str, seq: int) -> None:
    entry = {**encode_sample(POOL[1], 7), **encode_origin(producer, seq)}
    flat = [x for pair in entry.items() for x in pair]
    for form in (entry, flat, [*flat, b"source", b"x"], [*flat[4:], *flat[:4]]):
        batch = decode_entries([(b"5-0", form)])
        assert batch.origins == [Origin(producer.encode(), seq)] and batch.rejects == []


def test_entries_without_an_origin_keep_the_batch_untagged() -> None:
    batch = decode_entries([(b"1-0", encode_sample(POOL[0], 3)), (b"2-0", encode_sample(POOL[1], 4))])
    assert batch.origins == [] and len(batch.ids) == 2


# -- the marks, as a pure rule ------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    ms: int  # stream time of the entry (its id's ms part)
    producer: int
    seq: int

    @property
    def origin(self) -> Origin:
        return Origin(b"p%d" % self.producer, self.seq)


@st.composite
def interleavings(draw: st.DrawFn, max_producers: int = 4) -> list[Event]:
    """Producers appending numbered entries, some batches appended again later (a retry), clocks moving on."""
    n_producers = draw(st.integers(1, max_producers))
    sent: list[list[tuple[int, int]]] = [[] for _ in range(n_producers)]  # each producer's batches (start, stop)
    events: list[Event] = []
    ms = 1_000
    for _ in range(draw(st.integers(1, 40))):
        producer = draw(st.integers(0, n_producers - 1))
        ms += draw(st.sampled_from([0, 1, 5, 50, 400]))
        batches = sent[producer]
        if batches and draw(st.booleans()):  # resend an earlier batch, or the part of it Redis lost
            first, stop = draw(st.sampled_from(batches))
            start = draw(st.integers(first, stop - 1))
        else:
            start = (batches[-1][1] if batches else 0) + draw(st.sampled_from([0, 0, 0, 2]))  # a gap, sometimes
            stop = start + draw(st.integers(1, 4))
            batches.append((start, stop))
        events += [Event(ms, producer, seq) for seq in range(start, stop)]
    return events


def batches_of(events: list[Event], cuts: list[int]) -> list[DecodedBatch]:
    """The events as decoded stream reads, cut at ``cuts`` (positions)."""
    bounds = [0, *sorted({c % (len(events) + 1) for c in cuts}), len(events)]
    out = []
    for a, b in itertools.pairwise(bounds):
        part = events[a:b]
        ids = [b"%d-%d" % (e.ms, a + i) for i, e in enumerate(part)]
        images = np.stack([POOL[(7 * e.producer + e.seq) % 64] for e in part]) if part else np.zeros((0, 784), np.uint8)
        labels = np.array([e.seq % 10 for e in part], dtype=np.int64)
        producers = [e.origin.producer for e in part]
        out.append(DecodedBatch(ids, images, labels, [], ids[-1] if ids else None, producers, [e.seq for e in part]))
    return out


def run_rule(events: list[Event], cuts: list[int], restarts: set[int], cap: int, ttl_ms: int) -> list[Event]:
    """The events the worker learns, batch by batch, restoring the marks from snapshot arrays after some batches."""
    producers = Producers(cap, ttl_ms / 1000)
    learned: list[Event] = []
    position = 0
    for index, batch in enumerate(batches_of(events, cuts)):
        kept, duplicates = producers.filter(batch)
        assert len(kept.ids) + duplicates == len(batch.ids)
        kept_ids = set(kept.ids)
        learned += [e for e, entry_id in zip(events[position:], batch.ids, strict=False) if entry_id in kept_ids]
        position += len(batch.ids)
        if index in restarts:  # a restart: only what the snapshot holds survives
            producers = Producers.restore(producers.arrays(), cap, ttl_ms / 1000)
    return learned


def held_throughout(events: list[Event], first: int, later: int, cap: int, ttl_ms: int) -> bool:
    """Whether the documented rule keeps the mark of ``events[first]``'s producer until ``events[later]``."""
    producer = events[first].producer
    mine = [i for i in range(first, later + 1) if events[i].producer == producer]
    for a, b in itertools.pairwise(mine):
        if events[b].ms - events[a].ms > ttl_ms:
            return False
        others = {events[i].producer for i in range(a + 1, b)}
        if len(others) >= cap:
            return False
    return True


@settings(max_examples=250, deadline=None)
@given(
    events=interleavings(),
    cuts=st.lists(st.integers(0, 200), max_size=6),
    restarts=st.sets(st.integers(0, 6), max_size=3),
    cap=st.integers(1, 5),
    ttl_ms=st.sampled_from([100, 1000, 10**9]),
)
def test_marks_skip_exactly_the_duplicates_the_documented_rule_covers(
    events: list[Event], cuts: list[int], restarts: set[int], cap: int, ttl_ms: int
) -> None:
    learned = run_rule(events, cuts, restarts, cap, ttl_ms)
    # Batch boundaries and restarts change nothing: the rule depends on the stream alone.
    assert learned == run_rule(events, [], set(), cap, ttl_ms)
    learned_at = {id(e) for e in learned}
    first_seen: dict[tuple[int, int], int] = {}
    highest: dict[int, int] = {}
    for i, event in enumerate(events):
        key = (event.producer, event.seq)
        if key not in first_seen:
            first_seen[key] = i
            if event.seq > highest.get(event.producer, -1):
                assert id(event) in learned_at, f"a new entry is always learned: {event}"
            highest[event.producer] = max(highest.get(event.producer, -1), event.seq)
        elif held_throughout(events, first_seen[key], i, cap, ttl_ms):
            assert id(event) not in learned_at, f"a duplicate within the rule is skipped: {event}"


@settings(max_examples=200, deadline=None)
@given(events=interleavings(max_producers=6), cuts=st.lists(st.integers(0, 200), max_size=6),
       restarts=st.sets(st.integers(0, 6), max_size=3))  # fmt: skip
def test_without_expiry_the_learned_multiset_is_the_unique_entries_in_first_order(
    events: list[Event], cuts: list[int], restarts: set[int]
) -> None:
    learned = run_rule(events, cuts, restarts, cap=6, ttl_ms=10**12)
    unique = list(dict.fromkeys((e.producer, e.seq) for e in events))
    assert [(e.producer, e.seq) for e in learned] == unique


@settings(max_examples=200, deadline=None)
@given(events=interleavings(), cap=st.integers(1, 5), ttl_ms=st.sampled_from([100, 1000, 10**9]),
       untagged=st.sets(st.integers(0, 200), max_size=5))  # fmt: skip
def test_a_batch_is_filtered_exactly_as_entry_by_entry(
    events: list[Event], cap: int, ttl_ms: int, untagged: set[int]
) -> None:
    """The vectorised filter (runs of one producer) decides what the per-entry rule decides."""
    [batch] = batches_of(events, [])
    batch.producers = [None if i in untagged else p for i, p in enumerate(batch.producers)]
    by_batch, by_entry = Producers(cap, ttl_ms / 1000), Producers(cap, ttl_ms / 1000)
    kept, duplicates = by_batch.filter(batch)
    expected = [entry_id for entry_id, p, seq in zip(batch.ids, batch.producers, batch.seqs, strict=True)
                if p is None or not by_entry.is_duplicate(Origin(p, seq), entry_id)]  # fmt: skip
    assert kept.ids == expected and duplicates == len(batch.ids) - len(expected)
    assert kept.labels.tolist() == [batch.labels[batch.ids.index(i)] for i in expected]
    for name, array in by_entry.arrays().items():
        assert np.array_equal(by_batch.arrays()[name], array), name


def test_the_cap_forgets_the_least_recently_seen_producer_first() -> None:
    producers = Producers(2, 3600)
    for producer, seq in [(b"a", 5), (b"b", 5), (b"a", 6), (b"c", 1)]:
        producers.is_duplicate(Origin(producer, seq), b"1000-0")
    assert (producers.mark(b"a"), producers.mark(b"b"), producers.mark(b"c")) == (6, None, 1)


def test_expired_marks_are_not_written_to_the_snapshot() -> None:
    producers = Producers(10, 1.0)
    producers.is_duplicate(Origin(b"old", 3), b"1000-0")
    producers.is_duplicate(Origin(b"new", 4), b"2500-0")
    restored = Producers.restore(producers.arrays(), 10, 1.0)
    assert (restored.mark(b"old"), restored.mark(b"new"), len(restored)) == (None, 4, 1)


@pytest.mark.parametrize(
    "arrays",
    [
        {ID_ARRAY: np.frombuffer(b"a\nb", np.uint8), SEQ_ARRAY: np.array([1], np.int64)},
        {ID_ARRAY: np.frombuffer(b"a\nb", np.uint8), SEQ_ARRAY: np.array([1, 2]), "producers:seen": np.array([1])},
        {ID_ARRAY: np.frombuffer(b"a\na", np.uint8), SEQ_ARRAY: np.array([1, 2]), "producers:seen": np.array([1, 1])},
        {ID_ARRAY: np.frombuffer(b"a b", np.uint8), SEQ_ARRAY: np.array([1]), "producers:seen": np.array([1])},
        {ID_ARRAY: np.frombuffer(b"a", np.uint8), SEQ_ARRAY: np.array([-1]), "producers:seen": np.array([1])},
    ],
)
def test_garbled_marks_in_a_snapshot_are_refused_rather_than_forgotten(arrays: dict[str, np.ndarray]) -> None:
    with pytest.raises(SnapshotError):
        Producers.restore(arrays, 10, 60)


# -- a real worker on a real Redis ----------------------------------------------------------------
def entry(producer: str, seq: int, **extra: bytes) -> dict[bytes, bytes]:
    return {**encode_sample(POOL[seq % 64], seq % 10), **encode_origin(producer, seq), **extra}


def test_a_resent_batch_is_skipped_counted_and_neither_learned_nor_dead_lettered(make_worker, redis_client) -> None:
    worker = make_worker(batch_size=3)
    stream = worker.keys.samples
    first = [entry("cam-1", s) for s in range(5)]
    publish_raw(redis_client, stream, first)
    publish_raw(redis_client, stream, [entry("cam-2", s) for s in range(3)])
    publish_raw(redis_client, stream, first[2:])  # cam-1's retry of a batch that had landed, after cam-2's entries
    publish_raw(redis_client, stream, [{**encode_sample(POOL[9], 9)}, entry("cam-1", 5)])

    worker.run(burst=True)

    snapshot = latest(redis_client, worker.keys)
    meta = snapshot.typed_meta()
    assert (meta.samples_learned, meta.duplicates_skipped, meta.deadletter_count) == (10, 3, 0)
    assert meta.entries_consumed == redis_client.xlen(stream) == 13
    order = [(s % 64, s % 10) for s in range(5)] + [(s % 64, s % 10) for s in range(3)] + [(9, 9), (5, 5)]
    expected, _ = reference(worker.settings, POOL[[i for i, _ in order]], np.array([label for _, label in order]))
    assert np.array_equal(snapshot.learner().weights, expected.weights)
    assert worker.status()["duplicates_skipped"] == 3


def test_the_marks_survive_a_restart_in_the_snapshot(make_worker, redis_client) -> None:
    stream = make_worker().keys.samples
    publish_raw(redis_client, stream, [entry("p", s) for s in range(4)])
    make_worker().run(burst=True)  # learns 0..3 and commits the mark 3
    publish_raw(redis_client, stream, [entry("p", s) for s in range(2, 6)])  # a resend overlapping the past

    worker = make_worker()
    worker.run(burst=True)

    meta = latest(redis_client, worker.keys).typed_meta()
    assert (meta.samples_learned, meta.duplicates_skipped) == (6, 2)
    assert worker.producers.mark(b"p") == 5


def test_a_stopping_worker_leaves_the_read_ahead_unmarked(make_worker, redis_client) -> None:
    """The read-ahead is not committed, so its numbers must not be either, or the next worker would skip it."""
    worker = make_worker(batch_size=2)
    stream = worker.keys.samples
    publish_raw(redis_client, stream, [entry("p", s) for s in range(6)])
    reads = 0
    original = worker._read

    def read_then_stop(block: bool):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        entries = original(block)
        if reads == 3:
            worker.stop()  # asked while the third read is in hand: it stays unlearned, for the next worker
        return entries

    worker._read = read_then_stop  # type: ignore[method-assign]
    worker.run(burst=True)
    meta = latest(redis_client, worker.keys).typed_meta()
    assert meta.samples_learned == 4 and worker.producers.mark(b"p") == 3

    make_worker(batch_size=2).run(burst=True)
    final = latest(redis_client, worker.keys).typed_meta()
    assert (final.samples_learned, final.duplicates_skipped) == (6, 0)


def test_malformed_origins_are_dead_lettered_with_their_reason(make_worker, redis_client) -> None:
    worker = make_worker()
    publish_raw(redis_client, worker.keys.samples, [entry("ok", 0), {**encode_sample(POOL[0], 0), b"seq": b"1"}])
    worker.run(burst=True)
    [(_, dead)] = redis_client.xrange(worker.keys.deadletter)
    assert dead[b"reason"] == b"producer: required with seq"
    assert latest(redis_client, worker.keys).samples_learned == 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=interleavings(max_producers=3), data=st.data())
def test_a_real_worker_restarted_anywhere_learns_each_unique_entry_once(
    make_worker, redis_client: redis.Redis, events: list[Event], data: st.DataObject
) -> None:
    redis_client.flushall()
    stream = make_worker().keys.samples
    fields = [entry(f"p{e.producer}", e.seq) for e in events]
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(fields)), max_size=3))) | {len(fields)})
    batch_size = data.draw(st.integers(1, 7))
    start = 0
    for cut in cuts:  # each part published, then learned by a new worker (a restart from the snapshot)
        publish_raw(redis_client, stream, fields[start:cut])
        make_worker(batch_size=batch_size).run(burst=True)
        start = cut
    unique = list(dict.fromkeys((e.producer, e.seq) for e in events))
    meta = latest(redis_client, make_worker().keys).typed_meta()
    assert (meta.samples_learned, meta.duplicates_skipped) == (len(unique), len(events) - len(unique))
    images = POOL[[s % 64 for _, s in unique]]
    expected, _ = reference(make_worker().settings, images, np.array([s % 10 for _, s in unique]))
    assert np.array_equal(latest(redis_client, make_worker().keys).learner().weights, expected.weights)
