"""The snapshot script is all or nothing: each check that can refuse it leaves Redis byte for byte as it was.

Each case breaks one thing the script depends on (a key of the wrong type, a bad id, a lost lease, a
``latest`` that moved on, a dead-letter stream that cannot take another id, too many fields) and
compares a ``DUMP`` of every key before and after the refused write. The same write then succeeds
once the fault is removed, so each refusal is for that fault alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis

from digitstream.commit_script import MAX_FIELDS, MAX_ID
from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import Keys, deadletter_fields
from digitstream.settings import SettingsError, load_settings
from digitstream.snapshot import snapshot_of
from digitstream.store import LeaseLost, SnapshotRefused, StaleParent, list_versions, read_snapshot, write_snapshot
from tests.worker_support import publish, reference, state_difference

KEYS = Keys.for_model("digitstream")
TOKEN = "writer-1"


def everything(client: redis.Redis) -> dict[bytes, tuple[bytes | None, int]]:
    """Every key's serialized value and expiry: equal dicts mean Redis holds the same data."""
    return {key: (client.dump(key), client.pttl(key)) for key in client.scan_iter(count=1000)}  # type: ignore[misc]


def snapshot(last_id: str = "0-0") -> Any:
    learner = DeltaRuleLearner(HyperParameters.for_rule("softmax"))
    return snapshot_of(learner, model="digitstream", samples_learned=0, last_id=last_id)


@pytest.fixture
def state(redis_client: redis.Redis) -> redis.Redis:
    """A model with two versions, a stream of 5 entries, dead letters, a reader, a pin, and the lease held."""
    redis_client.set(KEYS.lease, TOKEN)
    for _ in range(2):
        write_snapshot(redis_client, KEYS, snapshot(), lease_token=TOKEN, keep=10, reader="digitstream")
    for i in range(5):
        redis_client.xadd(KEYS.samples, {"label": str(i)}, id=f"{1000 + i}-0")
    redis_client.xadd(KEYS.deadletter, {"reason": "old"})
    redis_client.set(KEYS.pinned, 1)
    return redis_client


def dead_letter() -> dict[bytes, bytes]:
    return deadletter_fields(b"1000-0", {b"label": b"x"}, "label: bad")


def the_write(client: redis.Redis, **overrides: Any) -> int:
    """A full write: parent 2, learned up to 1002-0, trims, a dead letter, the reader recorded."""
    options: dict[str, Any] = {
        "lease_token": TOKEN, "keep": 1, "parent": 2, "deadletters": [dead_letter()], "trim_minid": "1001-0",
        "trim_maxlen": 1000, "reader": "digitstream", "keep_minutely": 0, "keep_hourly": 0,
    }  # fmt: skip
    options.update(overrides)
    last_id = options.pop("last_id", "1002-0")
    return write_snapshot(client, KEYS, snapshot(last_id), **options)


def wrong_type(key: str) -> Callable[[redis.Redis], None]:
    """Replace ``key`` with a value of a type the script does not expect there."""

    def apply(client: redis.Redis) -> None:
        client.delete(key)
        if key in (KEYS.snapshot_versions, KEYS.snapshot_times):
            client.set(key, "a string")
        else:
            client.sadd(key, "a set")

    return apply


FAULTS: dict[str, tuple[Callable[[redis.Redis], None], dict[str, Any], type[Exception]]] = {
    # (break Redis, break the call, the refusal)
    "latest is a set": (wrong_type(KEYS.snapshot_latest), {}, SnapshotRefused),
    "latest is not a number": (lambda c: c.set(KEYS.snapshot_latest, "two"), {}, SnapshotRefused),
    "the versions are a string": (wrong_type(KEYS.snapshot_versions), {}, SnapshotRefused),
    "the version times are a string": (wrong_type(KEYS.snapshot_times), {}, SnapshotRefused),
    "the lease is a set": (wrong_type(KEYS.lease), {}, SnapshotRefused),
    "the stream is a set": (wrong_type(KEYS.samples), {}, SnapshotRefused),
    "the dead-letter stream is a set": (wrong_type(KEYS.deadletter), {}, SnapshotRefused),
    "the pin is a set": (wrong_type(KEYS.pinned), {}, SnapshotRefused),
    "the readers are a set": (wrong_type(KEYS.readers), {}, SnapshotRefused),
    "the dead-letter stream is at the largest id": (
        lambda c: c.xadd(KEYS.deadletter, {"reason": "last"}, id=MAX_ID), {}, SnapshotRefused,
    ),
    "the lease is another writer's": (lambda c: c.set(KEYS.lease, "writer-2"), {}, LeaseLost),
    "the lease expired": (lambda c: c.delete(KEYS.lease), {}, LeaseLost),
    "latest moved on": (lambda c: c.set(KEYS.snapshot_latest, 3), {}, StaleParent),
    "built on nothing, but there is a latest": (lambda c: None, {"parent": None}, StaleParent),
    "built on an older version": (lambda c: None, {"parent": 1}, StaleParent),
    "a learned id that is not an id": (lambda c: None, {"last_id": "1002"}, SnapshotRefused),
    "a learned id beyond 64 bits": (lambda c: None, {"last_id": "18446744073709551616-0"}, SnapshotRefused),
    "a trim id that is not an id": (lambda c: None, {"trim_minid": "yesterday"}, SnapshotRefused),
    "a dead letter with too many fields": (
        lambda c: None,
        {"deadletters": [dead_letter(), {f"f{i}".encode(): b"" for i in range(MAX_FIELDS + 1)}]},
        SnapshotRefused,
    ),
}  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS)
def test_each_refusal_leaves_redis_unchanged(state: redis.Redis, fault: str) -> None:
    break_redis, break_call, refusal = FAULTS[fault]
    break_redis(state)
    before = everything(state)

    with pytest.raises(refusal):
        the_write(state, **break_call)

    assert everything(state) == before


def test_without_a_fault_the_same_write_does_every_step(state: redis.Redis) -> None:
    version = the_write(state)

    assert version == 3 and int(state.get(KEYS.snapshot_latest)) == 3  # type: ignore[arg-type]
    assert list_versions(state, KEYS) == [1, 3], "the newest one, and the pinned one"
    assert state.zscore(KEYS.snapshot_times, 3) is not None
    assert state.hget(KEYS.readers, "digitstream") == b"1002-0"
    assert [e[1][b"reason"] for e in state.xrange(KEYS.deadletter)] == [b"old", b"label: bad"]
    assert [e[0] for e in state.xrange(KEYS.samples)] == [b"1001-0", b"1002-0", b"1003-0", b"1004-0"]


def test_a_stale_parent_is_a_kind_of_lost_lease() -> None:
    """The worker's loop handles it as one: back to standby, then reload the latest snapshot."""
    assert issubclass(StaleParent, LeaseLost)


@pytest.mark.parametrize(
    "keys",
    [
        {"deadletter_key": "{digitstream}:samples"},
        {"stream_key": "shared", "deadletter_key": "shared"},
        {"stream_key": "{digitstream}:worker:lease"},
        {"deadletter_key": "{digitstream}:snapshot:latest"},
        {"stream_key": "{digitstream}:snapshot:7"},
        {"deadletter_key": "{digitstream}:readers"},
        {"deadletter_key": "{digitstream}:service:pinned"},
        {"stream_key": "{digitstream}:prediction:x"},
    ],
)
def test_settings_refuse_keys_that_collide(keys: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="key collision"):
        load_settings(**keys)


def test_a_worker_whose_parent_was_overtaken_reloads_the_latest_and_learns_each_sample_once(
    make_worker, redis_client: redis.Redis, mnist_train, caplog: pytest.LogCaptureFixture
) -> None:
    """A twin holding the same lease writes a version after the worker loaded: the worker's write is refused."""
    images, labels = mnist_train
    images, labels = images[:300].reshape(300, -1), labels[:300].astype(np.int64)
    worker = make_worker(batch_size=100, snapshot_every=100)
    publish(redis_client, worker.keys.samples, images[:100], labels[:100])
    worker.run(burst=True)  # version 1: 100 samples
    publish(redis_client, worker.keys.samples, images[100:], labels[100:])
    twin_wrote: list[int] = []
    keep_lease = worker._keep_lease

    def twin_writes_once() -> None:  # fault injection: the twin gets in right after this worker loaded
        keep_lease()
        if not twin_wrote:
            copy = read_snapshot(redis_client, worker.keys)
            assert copy is not None
            twin_wrote.append(write_snapshot(redis_client, worker.keys, copy, lease_token=worker.worker_id, keep=10))

    worker._keep_lease = twin_writes_once  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, logger="digitstream.worker")
    worker.run(burst=True)

    assert twin_wrote == [2]
    assert any("lost the lease" in r.getMessage() and "latest is 2, not 1" in r.getMessage() for r in caplog.records)
    final = read_snapshot(redis_client, worker.keys)
    expected, _ = reference(worker.settings, images, labels)
    assert final is not None and final.samples_learned == 300 and final.version > 2
    assert state_difference(final.learner(), expected) < 1e-9, "learned once each, on top of the twin's version"


def test_on_a_shared_stream_the_snapshot_lands_first_and_the_stream_step_catches_up(redis_client: redis.Redis) -> None:
    """A stream outside the model's slot is trimmed by a second script, after the snapshot's: when that step does
    not happen (here refused: the readers key is a string; a crash or an outage does the same), the snapshot is
    written and the stream kept whole, the model's position behind; the next snapshot's step trims."""
    keys = Keys.for_model("digitstream", "{shared}:samples")
    redis_client.set(keys.lease, TOKEN)
    ids = [redis_client.xadd(keys.samples, {"label": str(i)}, id=f"{1000 + i}-0") for i in range(5)]
    redis_client.set(keys.readers, "not a hash")
    options: dict[str, Any] = {"lease_token": TOKEN, "keep": 3, "trim_minid": "1004-0", "reader": "digitstream"}

    with pytest.raises(SnapshotRefused, match="snapshot 1 of model 'digitstream' written, its stream step refused"):
        write_snapshot(redis_client, keys, snapshot("1002-0"), parent=None, **options)
    assert list_versions(redis_client, keys) == [1]
    assert [e[0] for e in redis_client.xrange(keys.samples)] == ids, "nothing trimmed"

    redis_client.delete(keys.readers)
    assert write_snapshot(redis_client, keys, snapshot("1002-0"), parent=1, **options) == 2
    assert [e[0] for e in redis_client.xrange(keys.samples)] == ids[3:]
    assert redis_client.hgetall(keys.readers) == {b"digitstream": b"1002-0"}
