"""The worker and the stream protocol: what it learns, and where every malformed entry goes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from digitstream.protocol import MAX_ENTRY_BYTES, N_PIXELS
from digitstream.store import list_versions
from digitstream.worker.commit import MAX_DEADLETTER_FIELDS, MAX_PENDING_DEADLETTERS
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
    redis_client.xadd(stream, {"pixels": json_pixels(IMAGES[2].tolist()).replace(b",", b", "), "label": "4"})

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
    "JSON non-integer value": ({b"pixels": json_pixels([0] * 783 + [1.5]), b"label": b"3"}, "integers only"),
    "JSON string value": ({b"pixels": json_pixels(["7"] + [0] * 783), b"label": b"3"}, "integers only"),
    "JSON 28x28 rows": ({b"pixels": json_pixels([[0] * 28] * 28), b"label": b"3"}, "integers only"),
    "not JSON": ({b"pixels": b"[1, 2, oops", b"label": b"3"}, "not valid JSON"),
    "JSON not UTF-8": ({b"pixels": b"[\xff\xfe]", b"label": b"3"}, "not valid JSON"),
    "label 10": ({b"pixels": GOOD, b"label": b"10"}, "label: must be one digit 0-9"),
    "label letter": ({b"pixels": GOOD, b"label": b"a"}, "label: must be one digit 0-9"),
    "label empty": ({b"pixels": GOOD, b"label": b""}, "label: must be one digit 0-9"),
    "label padded": ({b"pixels": GOOD, b"label": b" 7"}, "label: must be one digit 0-9"),
    "label UTF-16": ({b"pixels": GOOD, b"label": "7".encode("utf-16")}, "label: must be one digit 0-9"),
    "label non-ASCII digit": ({b"pixels": GOOD, b"label": "٧".encode()}, "label: must be one digit 0-9"),
    "oversized entry": ({b"pixels": GOOD, b"label": b"3", b"note": b"x" * MAX_ENTRY_BYTES}, "entry too large"),
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
    assert dead == fields, "the original fields are kept as they were"
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
    fields = {b"f%d" % i: b"" for i in range(3 * MAX_DEADLETTER_FIELDS)}
    bad_id = redis_client.xadd(worker.keys.samples, fields)  # type: ignore[arg-type]
    publish(redis_client, worker.keys.samples, IMAGES[:1], LABELS[:1])

    worker.run(burst=True)

    [(_, dead)] = redis_client.xrange(worker.keys.deadletter)
    assert dead.pop(b"original_id") == bad_id
    assert "fields kept" in dead.pop(b"reason").decode()
    assert dead == dict(list(fields.items())[:MAX_DEADLETTER_FIELDS])
    assert latest(redis_client, worker.keys).samples_learned == 1
