"""The worker and the stream protocol: what it learns, and where every malformed entry goes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from digitstream.protocol import DEADLETTER_MAX_FIELDS, DEADLETTER_VALUE_BYTES, MAX_ENTRY_BYTES, N_PIXELS
from digitstream.store import list_versions
from digitstream.worker.commit import MAX_PENDING_DEADLETTERS
from tests.worker_support import latest, publish, publish_raw, reference

RNG = np.random.default_rng(7)
IMAGES = RNG.integers(0, 256, (4, N_PIXELS)).astype(np.uint8)
LABELS = np.array([3, 1, 4, 1])
GOOD = IMAGES[0].tobytes()


def json_pixels(values: Any) -> bytes:
    return json.dumps(values).encode()


def test_raw_and_json_pixels_are_learned_alike_in_stream_order(make_worker, redis_client) -> None:
    worker = make_worker()
    stream = worker.keys.samples
    redis_client.xadd(stream, {"pixels": IMAGES[0].tobytes(), "label": "3"})
    # what `redis-cli XADD {digitstream}:samples '*' label 1 pixels '[0,0,...]'` sends
    redis_client.execute_command("XADD", stream, "*", "label", "1", "pixels", json.dumps(IMAGES[1].tolist()))
    rows = json.dumps(IMAGES[2].reshape(28, 28).tolist(), indent=1).encode()  # 28 rows of 28, on many lines
    redis_client.xadd(stream, {"pixels": rows, "label": "4"})

    worker.run(burst=True)

    snapshot = latest(redis_client, worker.keys)
    expected, _ = reference(worker.settings, IMAGES[:3], LABELS[:3])
    assert snapshot.samples_learned == 3
    assert np.array_equal(snapshot.learner().weights, expected.weights)
    assert redis_client.xlen(worker.keys.deadletter) == 0


def test_extra_fields_are_ignored_when_learning(make_worker, redis_client) -> None:
    worker = make_worker()
    redis_client.xadd(worker.keys.samples, {"pixels": GOOD, "label": "3", "source": "tablet-7", "user": "ann"})

    worker.run(burst=True)

    expected, _ = reference(worker.settings, IMAGES[:1], LABELS[:1])
    assert np.array_equal(latest(redis_client, worker.keys).learner().weights, expected.weights)
    assert redis_client.xlen(worker.keys.deadletter) == 0


BAD_ENTRIES: dict[str, tuple[dict[bytes, bytes], str]] = {
    "missing label": ({b"pixels": GOOD}, "missing field 'label'"),
    "missing pixels": ({b"label": b"3"}, "missing field 'pixels'"),
    "only unknown fields": ({b"source": b"scanner"}, "missing field"),
    "raw pixels too short": ({b"pixels": GOOD[:-1], b"label": b"3"}, "783 bytes"),
    "raw pixels too long": ({b"pixels": GOOD + b"\x00", b"label": b"3"}, "785 bytes"),
    "empty pixels": ({b"pixels": b"", b"label": b"3"}, "got 0 bytes"),
    "JSON with 783 values": ({b"pixels": json_pixels([0] * 783), b"label": b"3"}, "got 783"),
    "JSON value above 255": ({b"pixels": json_pixels([0] * 783 + [256]), b"label": b"3"}, "0..255"),
    "JSON negative value": ({b"pixels": json_pixels([-1] + [0] * 783), b"label": b"3"}, "0..255"),
    "JSON non-integer value": ({b"pixels": json_pixels([0] * 783 + [1.5]), b"label": b"3"}, "a fraction"),
    "JSON integral float": ({b"pixels": json_pixels([0] * 783 + [1.0]), b"label": b"3"}, "a fraction"),
    "JSON exponent": ({b"pixels": json_pixels([0] * 783).replace(b"0]", b"1E2]"), b"label": b"3"}, "exponent"),
    "JSON string value": ({b"pixels": json_pixels(["7"] + [0] * 783), b"label": b"3"}, "a string"),
    "JSON boolean": ({b"pixels": json_pixels([True] + [0] * 783), b"label": b"3"}, "a boolean"),
    "JSON null": ({b"pixels": json_pixels([None] + [0] * 783), b"label": b"3"}, "null"),
    "JSON NaN": ({b"pixels": json_pixels([float("nan")] + [0] * 783), b"label": b"3"}, "NaN"),
    "JSON Infinity": ({b"pixels": json_pixels([float("inf")] + [0] * 783), b"label": b"3"}, "Infinity"),
    "JSON plus sign": ({b"pixels": b"[+1" + json_pixels([0] * 783)[2:], b"label": b"3"}, "'+' sign"),
    "JSON leading zero": ({b"pixels": b"[01" + json_pixels([0] * 783)[2:], b"label": b"3"}, "leading zero"),
    "JSON rows of 27": ({b"pixels": json_pixels([[0] * 27] * 28), b"label": b"3"}, "28 rows of 28"),
    "JSON 3 deep": ({b"pixels": json_pixels([[[0] * 28] * 28]), b"label": b"3"}, "nested 3 deep"),
    "JSON 10,000 brackets": ({b"pixels": b"[" * 10_000, b"label": b"3"}, "unbalanced brackets"),
    "JSON nested 5,000 deep": ({b"pixels": b"[" * 5_000 + b"]" * 5_000, b"label": b"3"}, "nested 5000 deep"),
    "not JSON": ({b"pixels": b"[1, 2, oops", b"label": b"3"}, "found the byte b'o' at byte 7"),
    "JSON not UTF-8": ({b"pixels": b"[\xff\xfe]", b"label": b"3"}, "found the byte b'\\xff'"),
    "JSON two arrays": ({b"pixels": json_pixels([0] * 784) * 2, b"label": b"3"}, "more than one JSON value"),
    "label 10": ({b"pixels": GOOD, b"label": b"10"}, "label: must be one digit 0-9"),
    "label letter": ({b"pixels": GOOD, b"label": b"a"}, "label: must be one digit 0-9"),
    "label empty": ({b"pixels": GOOD, b"label": b""}, "label: must be one digit 0-9"),
    "label padded": ({b"pixels": GOOD, b"label": b" 7"}, "label: must be one digit 0-9"),
    "label UTF-16": ({b"pixels": GOOD, b"label": "7".encode("utf-16")}, "label: must be one digit 0-9"),
    "label non-ASCII digit": ({b"pixels": GOOD, b"label": "٧".encode()}, "label: must be one digit 0-9"),
    "oversized entry": ({b"pixels": GOOD, b"label": b"3", **{b"n%d" % i: b"x" * 4000 for i in range(4)}}, "too large"),
}


@pytest.mark.parametrize("kind", list(BAD_ENTRIES))
def test_each_kind_of_malformed_entry_is_dead_lettered_with_its_fields_id_and_reason(
    make_worker, redis_client, kind: str
) -> None:
    fields, reason = BAD_ENTRIES[kind]
    worker = make_worker()
    stream = worker.keys.samples
    first = publish(redis_client, stream, IMAGES[:1], LABELS[:1])
    bad_id = redis_client.xadd(stream, fields)  # type: ignore[arg-type]
    last = publish(redis_client, stream, IMAGES[1:2], LABELS[1:2])

    worker.run(burst=True)

    [(_, dead)] = redis_client.xrange(worker.keys.deadletter)
    assert dead.pop(b"original_id") == bad_id
    assert reason in dead.pop(b"reason").decode()
    small = max(map(len, fields.values())) <= DEADLETTER_VALUE_BYTES
    if small and sum(len(k) + len(v) for k, v in fields.items()) <= MAX_ENTRY_BYTES:
        assert dead == fields, "the original fields are kept as they were"
    else:  # a dead letter is bounded: longer values keep their first bytes and record their length
        assert all(fields[k].startswith(v) for k, v in dead.items() if not k.endswith(b":length"))
        assert any(k.endswith(b":length") for k in dead)
    snapshot = latest(redis_client, worker.keys)
    expected, _ = reference(worker.settings, IMAGES[:2], LABELS[:2])
    assert np.array_equal(snapshot.learner().weights, expected.weights), "the bad entry never touches the weights"
    assert snapshot.samples_learned == 2 and snapshot.meta["deadletter_count"] == 1
    assert snapshot.meta["entries_consumed"] == 3 and snapshot.last_id == last[0].decode() != first[0].decode()


def test_dead_letters_are_written_once_with_the_snapshot_that_passes_them(make_worker, redis_client) -> None:
    worker = make_worker(batch_size=10, snapshot_every=20, snapshot_interval=3600)
    stream = worker.keys.samples
    bad = [{b"label": b"%d" % (i % 10)} for i in range(25)]
    entries = [{b"pixels": GOOD, b"label": b"1"} if i % 2 else bad[i // 2] for i in range(50)]
    ids = publish_raw(redis_client, stream, entries)

    worker.run(burst=True)
    make_worker(batch_size=10).run(burst=True)  # a restart re-reads nothing and re-writes nothing

    dead = redis_client.xrange(worker.keys.deadletter)
    assert [fields[b"original_id"] for _, fields in dead] == ids[0::2], "in stream order, each once"
    snapshots = [latest(redis_client, worker.keys)]
    assert snapshots[0].meta["deadletter_count"] == 25 and snapshots[0].samples_learned == 25
    assert list_versions(redis_client, worker.keys) == [1, 2, 3], "20 + 20 + 10 entries: three snapshots"


def test_a_flood_of_malformed_entries_forces_early_snapshots(make_worker, redis_client) -> None:
    worker = make_worker(snapshot_every=1_000_000, snapshot_interval=3600)
    n = 2 * MAX_PENDING_DEADLETTERS + 500
    publish_raw(redis_client, worker.keys.samples, [{b"pixels": b"short", b"label": b"1"}] * n)

    worker.run(burst=True)

    assert redis_client.xlen(worker.keys.deadletter) == n
    assert len(list_versions(redis_client, worker.keys)) == 3, "at most MAX_PENDING_DEADLETTERS per snapshot"
    assert latest(redis_client, worker.keys).meta["deadletter_count"] == n


def test_an_entry_with_thousands_of_fields_is_dead_lettered_with_the_first_ones(make_worker, redis_client) -> None:
    worker = make_worker()
    fields = {b"f%d" % i: b"" for i in range(5000)}
    bad_id = redis_client.xadd(worker.keys.samples, fields)  # type: ignore[arg-type]
    publish(redis_client, worker.keys.samples, IMAGES[:1], LABELS[:1])

    worker.run(burst=True)

    [(_, dead)] = redis_client.xrange(worker.keys.deadletter)
    assert dead.pop(b"original_id") == bad_id
    assert dead.pop(b"reason").startswith(b"entry too large")
    assert dead.pop(b"dropped_fields") == b"%d" % (5000 - DEADLETTER_MAX_FIELDS)
    assert dead == dict(list(fields.items())[:DEADLETTER_MAX_FIELDS])
    assert latest(redis_client, worker.keys).samples_learned == 1


def test_a_20_mb_entry_becomes_a_dead_letter_of_a_few_kilobytes_that_records_its_length(
    make_worker, redis_client
) -> None:
    worker = make_worker()
    huge = bytes(range(256)) * (20_000_000 // 256)
    bad_id = redis_client.xadd(worker.keys.samples, {b"label": b"3", b"pixels": huge})
    publish(redis_client, worker.keys.samples, IMAGES[:1], LABELS[:1])

    worker.run(burst=True)

    [(_, dead)] = redis_client.xrange(worker.keys.deadletter)
    assert dead[b"original_id"] == bad_id
    assert dead[b"reason"].startswith(b"entry too large: %d bytes" % (len(huge) + 12))  # with the names
    assert dead[b"pixels"] == huge[:DEADLETTER_VALUE_BYTES] and dead[b"pixels:length"] == b"%d" % len(huge)
    assert dead[b"label"] == b"3"
    assert redis_client.memory_usage(worker.keys.deadletter) < 64 * 1024
    assert latest(redis_client, worker.keys).samples_learned == 1


def test_the_dead_letter_stream_keeps_about_its_own_retention_length(make_worker, redis_client) -> None:
    worker = make_worker(deadletter_max_len=200, batch_size=100)
    ids = publish_raw(redis_client, worker.keys.samples, [{b"label": b"%d" % (i % 10)} for i in range(2000)])

    worker.run(burst=True)

    length = redis_client.xlen(worker.keys.deadletter)
    assert 200 <= length <= 200 + 100, "MAXLEN ~ trims whole stream nodes (100 entries each by default)"
    assert redis_client.xrevrange(worker.keys.deadletter, count=1)[0][1][b"original_id"] == ids[-1], "the newest kept"
    assert latest(redis_client, worker.keys).meta["deadletter_count"] == 2000
