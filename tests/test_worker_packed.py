"""Packed entries (``digitstream.packed``): many samples per stream entry, with every guarantee of classic ones.

Specifications: a packed entry's samples are learned as if sent one by one, mixed with classic
entries, in stream order; a bad sample inside one is dead-lettered alone (with its index, bytes
and own seq) and the others learned; a malformed entry is dead-lettered whole, truncated, with the
reason; a worker stopped between two pieces of an entry commits the offset inside it and the next
worker learns exactly the rest; sequence numbers count samples, so resends are skipped sample by
sample however they are packed; the lag counts samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis

from digitstream.contracts import SnapshotMeta
from digitstream.packed import decode_packed, encode_packed, max_packed_bytes
from digitstream.protocol import DEADLETTER_VALUE_BYTES, InvalidSample, decode_entries, encode_origin, encode_sample
from digitstream.worker.position import Position
from tests.worker_support import latest, publish_raw, reference

RNG = np.random.default_rng(18)
IMAGES = RNG.integers(0, 256, (200, 784)).astype(np.uint8)
LABELS = RNG.integers(0, 10, 200)


def packed(start: int, stop: int, producer: str | None = None, seq: int | None = None) -> dict[bytes, bytes]:
    fields = encode_packed(IMAGES[start:stop], LABELS[start:stop])
    return {**fields, **(encode_origin(producer, seq) if producer is not None and seq is not None else {})}


def classic(i: int) -> dict[bytes, bytes]:
    return encode_sample(IMAGES[i], int(LABELS[i]))


# -- the codec ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {b"pixels": bytes(784 * 2 + 5), b"labels": b"12"},
            "pixels: expected 2 x 784 = 1568 bytes for 2 labels, got 1573",
        ),
        ({b"pixels": bytes(784 * 3), b"labels": b"12"}, "got 2352 (3 images)"),
        ({b"pixels": b"", b"labels": b""}, "labels: a packed entry holds 1 to 8 samples, got 0"),
        ({b"pixels": bytes(784 * 9), b"labels": b"1" * 9}, "labels: a packed entry holds 1 to 8 samples, got 9"),
        ({b"pixels": bytes(784), b"labels": b"1", b"label": b"1"}, "both 'label' (a classic entry) and 'labels'"),
        ({b"labels": b"1"}, "missing field 'pixels'"),
        ({b"pixels": bytes(784), b"labels": b"1", b"junk": bytes(30000)}, "packed entry too large"),
        ({b"pixels": bytes(784 * 2), b"labels": b"12", b"producer": b"p", b"seq": b"%d" % (2**63 - 1)}, "passes"),
        ({b"pixels": bytes(784), b"labels": b"1", b"producer": b"p"}, "seq: required with producer"),
    ],
)
def test_a_malformed_packed_entry_is_refused_as_a_whole_with_the_reason(
    fields: dict[bytes, bytes], reason: str
) -> None:
    with pytest.raises(InvalidSample, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_packed(fields, pack_max=8)


def test_the_size_limit_follows_pack_max() -> None:
    assert max_packed_bytes(1024) == 1024 * 785 + 16 * 1024
    decode_packed(encode_packed(np.zeros((1024, 784), np.uint8), np.zeros(1024, np.int64)), 1024)


def test_a_read_mixing_classic_and_packed_entries_is_the_samples_in_stream_order() -> None:
    entries = [(b"1-0", classic(0)), (b"2-0", packed(1, 4, "p", 10)), (b"3-0", classic(4)), (b"4-0", packed(5, 6))]
    batch = decode_entries(entries)
    assert np.array_equal(batch.images, IMAGES[:6]) and np.array_equal(batch.labels, LABELS[:6])
    assert batch.ids == [b"1-0", b"2-0", b"2-0", b"2-0", b"3-0", b"4-0"]
    assert batch.seqs == [-1, 10, 11, 12, -1, -1] and batch.offsets is not None
    assert batch.offsets.tolist() == [0, 0, 1, 2, 0, 0] and batch.sizes == {b"2-0": 3, b"4-0": 1}


# -- the worker -----------------------------------------------------------------------------------
def test_a_mixed_stream_is_learned_as_its_samples_one_by_one(make_worker, redis_client: redis.Redis) -> None:
    worker = make_worker(batch_size=7, pack_max=64)
    entries = [packed(0, 50), classic(50), packed(51, 100), *[classic(i) for i in range(100, 110)], packed(110, 111)]
    publish_raw(redis_client, worker.keys.samples, entries)
    worker.run(burst=True)
    snapshot = latest(redis_client, worker.keys)
    meta = snapshot.typed_meta()
    expected, _ = reference(worker.settings, IMAGES[:111], LABELS[:111])
    assert np.array_equal(snapshot.learner().weights, expected.weights)
    assert (meta.samples_learned, meta.entries_consumed, meta.offset) == (111, 14, 0)
    assert worker.status()["lag"] == 0


def test_a_bad_sample_is_dead_lettered_alone_and_the_others_learned(make_worker, redis_client: redis.Redis) -> None:
    worker = make_worker(batch_size=4)
    bad = packed(0, 10, "cam", 100)
    bad[b"labels"] = bad[b"labels"][:3] + b"x" + bad[b"labels"][4:]
    [entry_id] = publish_raw(redis_client, worker.keys.samples, [bad])
    worker.run(burst=True)
    [(_, dead)] = redis_client.xrange(worker.keys.deadletter)
    assert dead[b"original_id"] == entry_id and dead[b"index"] == b"3" and dead[b"label"] == b"x"
    assert dead[b"pixels"] == IMAGES[3].tobytes() and (dead[b"producer"], dead[b"seq"]) == (b"cam", b"103")
    assert b"sample 3 of a packed entry of 10" in dead[b"reason"]
    snapshot = latest(redis_client, worker.keys)
    keep = [i for i in range(10) if i != 3]
    expected, _ = reference(worker.settings, IMAGES[keep], LABELS[keep])
    assert np.array_equal(snapshot.learner().weights, expected.weights)
    assert (snapshot.typed_meta().deadletter_count, snapshot.typed_meta().samples_learned) == (1, 9)


def test_a_malformed_entry_is_dead_lettered_whole_and_truncated(make_worker, redis_client: redis.Redis) -> None:
    worker = make_worker()
    wrong = {b"pixels": bytes(784 * 6 + 1), b"labels": b"123456"}
    publish_raw(redis_client, worker.keys.samples, [classic(0), wrong, classic(1)])
    worker.run(burst=True)
    [(_, dead)] = redis_client.xrange(worker.keys.deadletter)
    assert len(dead[b"pixels"]) == DEADLETTER_VALUE_BYTES and dead[b"pixels:length"] == b"4705"
    assert dead[b"labels"] == b"123456"
    assert dead[b"reason"] == b"pixels: expected 6 x 784 = 4704 bytes for 6 labels, got 4705"
    assert latest(redis_client, worker.keys).typed_meta().samples_learned == 2


@pytest.mark.parametrize(
    ("pieces_before_stop", "learned", "entries", "offset"), [(1, 5, 1, 4), (2, 10, 1, 9), (3, 15, 2, 2), (4, 20, 3, 0)]
)
def test_a_worker_stopped_inside_an_entry_commits_the_offset_and_the_next_learns_the_rest(
    make_worker, redis_client: redis.Redis, pieces_before_stop: int, learned: int, entries: int, offset: int
) -> None:
    """Entries of 1, 12, 7 and 1 samples, batch size 5: one read of all four (the first entry holds
    one sample, so the reader asks for 5 entries), learned in pieces of 5; a stop commits its piece."""
    worker = make_worker(batch_size=5)
    stream = worker.keys.samples
    publish_raw(redis_client, stream, [classic(0), packed(1, 13, "p", 0), packed(13, 20, "p", 12), classic(20)])
    started = 0
    original = worker._start

    def start_then_stop(*args):  # type: ignore[no-untyped-def]
        nonlocal started
        started += 1
        if started == pieces_before_stop:
            worker.stop()
        return original(*args)

    worker._start = start_then_stop  # type: ignore[method-assign]
    worker.run(burst=True)
    meta = latest(redis_client, worker.keys).typed_meta()
    assert (meta.samples_learned, meta.entries_consumed, meta.offset) == (learned, entries, offset)

    make_worker(batch_size=5).run(burst=True)
    snapshot = latest(redis_client, worker.keys)
    expected, _ = reference(worker.settings, IMAGES[:21], LABELS[:21])
    assert np.array_equal(snapshot.learner().weights, expected.weights)
    final = snapshot.typed_meta()
    assert (final.samples_learned, final.entries_consumed, final.offset, final.duplicates_skipped) == (21, 4, 0, 0)


def test_resends_are_skipped_sample_by_sample_however_packed(make_worker, redis_client: redis.Redis) -> None:
    worker = make_worker()
    stream = worker.keys.samples
    publish_raw(redis_client, stream, [packed(0, 8, "p", 0), packed(8, 16, "p", 8)])
    publish_raw(
        redis_client, stream, [packed(5, 11, "p", 5), *[{**classic(i), **encode_origin("p", i)} for i in (15, 16)]]
    )
    worker.run(burst=True)
    snapshot = latest(redis_client, worker.keys)
    expected, _ = reference(worker.settings, IMAGES[:17], LABELS[:17])
    assert np.array_equal(snapshot.learner().weights, expected.weights)
    assert (snapshot.typed_meta().samples_learned, snapshot.typed_meta().duplicates_skipped) == (17, 7)


def test_the_lag_counts_samples() -> None:
    position = Position(entries_consumed=3, samples_learned=3 * 1024 + 200, offset=200)
    assert position.samples_behind(2) == 2 * 1024 - 200
    assert Position(entries_consumed=5, samples_learned=5).samples_behind(4) == 4


def test_a_snapshot_from_before_packed_entries_loads_at_offset_0(make_worker, redis_client: redis.Redis) -> None:
    worker = make_worker()
    publish_raw(redis_client, worker.keys.samples, [classic(0), classic(1)])
    worker.run(burst=True)
    meta = latest(redis_client, worker.keys).meta
    older = {k: v for k, v in meta.items() if k != "offset"}
    assert "offset" in meta and Position.of_snapshot(SnapshotMeta.from_json(older)).offset == 0
