"""Snapshots: cadence, kept versions, notifications, retention, metrics, status, and resuming."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from digitstream.contracts import SnapshotMeta, WorkerStatus
from digitstream.learner import DeltaRuleLearner
from digitstream.protocol import N_PIXELS, parse_id
from digitstream.snapshot import snapshot_of
from digitstream.store import TRIM_PROBE, list_versions, parse_event, read_snapshot, write_snapshot
from digitstream.worker.retention import ConsumedIds, next_id, trim_minid
from digitstream.worker.status import LAG_CAP
from tests.worker_support import latest, publish, reference, running, wait_for


@pytest.fixture(scope="module")
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:6000], labels[:6000].astype(np.int64)


def subscribed(client: redis.Redis, channel: str) -> Any:
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    wait_for(lambda: pubsub.get_message(timeout=0.1), timeout=5, what="the subscription")
    return pubsub


def next_message(pubsub: Any, timeout: float = 10) -> dict[str, Any]:
    return wait_for(lambda: pubsub.get_message(timeout=0.1), timeout=timeout, what="a snapshot event")  # type: ignore[no-any-return]


# -- cadence and versions -------------------------------------------------------------------------


def test_a_snapshot_is_written_every_n_samples_and_at_the_end(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(batch_size=100, snapshot_every=500, snapshot_interval=3600)
    ids = publish(redis_client, worker.keys.samples, images[:2250], labels[:2250])

    worker.run(burst=True)

    versions = list_versions(redis_client, worker.keys)
    assert versions == [1, 2, 3, 4, 5]
    snapshots = [read_snapshot(redis_client, worker.keys, v) for v in versions]
    assert [s.samples_learned for s in snapshots] == [500, 1000, 1500, 2000, 2250]  # type: ignore[union-attr]
    assert [s.last_id for s in snapshots] == [ids[n - 1].decode() for n in (500, 1000, 1500, 2000, 2250)]  # type: ignore[union-attr]
    for snapshot in snapshots:
        expected, _ = reference(worker.settings, images[: snapshot.samples_learned], labels[: snapshot.samples_learned])  # type: ignore[union-attr]
        assert np.array_equal(snapshot.learner().weights, expected.weights)  # type: ignore[union-attr]


def test_a_snapshot_follows_within_the_interval_when_samples_trickle_in(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(snapshot_every=1_000_000, snapshot_interval=0.2, block_ms=50)
    with running(worker):
        for i in range(5):
            publish(redis_client, worker.keys.samples, images[i : i + 1], labels[i : i + 1])
            wait_for(
                lambda i=i: (s := read_snapshot(redis_client, worker.keys)) and s.samples_learned == i + 1,
                timeout=5,
                what=f"a snapshot with sample {i + 1}",
            )
    assert list_versions(redis_client, worker.keys) == [1, 2, 3, 4, 5], "one per trickle, none while idle"


def test_without_a_spaced_history_only_the_last_k_versions_are_kept(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(batch_size=100, snapshot_every=100, keep_versions=3, keep_minutely=0, keep_hourly=0)
    publish(redis_client, worker.keys.samples, images[:1000], labels[:1000])

    worker.run(burst=True)

    assert list_versions(redis_client, worker.keys) == [8, 9, 10]
    assert int(redis_client.get(worker.keys.snapshot_latest)) == 10  # type: ignore[arg-type]
    assert redis_client.exists(*(worker.keys.snapshot(v) for v in range(1, 8))) == 0
    assert read_snapshot(redis_client, worker.keys, 8).samples_learned == 800  # type: ignore[union-attr]


def test_each_snapshot_is_announced_on_the_events_channel(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(batch_size=100, snapshot_every=200)
    pubsub = subscribed(redis_client, worker.keys.snapshot_events)
    publish(redis_client, worker.keys.samples, images[:600], labels[:600])

    worker.run(burst=True)

    announced = [parse_event(next_message(pubsub)["data"]) for _ in range(3)]
    pubsub.close()
    assert announced == [1, 2, 3]


def test_snapshot_metadata_follows_the_store_contract(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(rule="seed")
    ids = publish(redis_client, worker.keys.samples, images[:300], labels[:300])

    worker.run(burst=True)

    meta = latest(redis_client, worker.keys).meta
    assert meta["schema"] == 1 and meta["model"] == worker.keys.model and meta["version"] == 1
    assert meta["samples_learned"] == 300 and meta["last_id"] == ids[-1].decode()
    assert abs(meta["created_at"] - time.time()) < 60
    assert meta["entries_consumed"] == 300 and meta["deadletter_count"] == 0 and meta["faults"] == []
    assert meta["learner"]["params"] == worker.settings.hyper_parameters().to_json()
    assert meta["learner"]["params"]["rule"] == "seed" and meta["learner"]["n_samples"] == 300
    assert set(meta["metrics"]) >= {
        "prequential_accuracy", "rolling_accuracy", "rolling_window", "confusion_matrix", "per_class_recall",
        "throughput", "lag", "drift_events", "learning_curve",
    }  # fmt: skip
    assert SnapshotMeta.from_json(meta).to_json() == meta, "exactly the contract, nothing more"


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_are_the_prequential_scores_of_a_reference_run(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(batch_size=700, rolling_window=500)
    publish(redis_client, worker.keys.samples, images[:3500], labels[:3500])

    worker.run(burst=True)

    metrics = latest(redis_client, worker.keys).meta["metrics"]
    _, predictions = reference(worker.settings, images[:3500], labels[:3500])
    correct = predictions == labels[:3500]
    assert metrics["prequential_accuracy"] == pytest.approx(correct.mean(), abs=1e-6)
    assert metrics["rolling_accuracy"] == pytest.approx(correct[-500:].mean(), abs=1e-6)
    assert metrics["rolling_window"] == 500
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (labels[:3500], predictions), 1)
    assert metrics["confusion_matrix"] == confusion.tolist()
    recall = [confusion[k, k] / confusion[k].sum() for k in range(10)]
    assert metrics["per_class_recall"] == pytest.approx(recall, abs=1e-6)
    curve = metrics["learning_curve"]
    assert [point[0] for point in curve] == [1400, 2100, 3500], "one point per 1,000 samples, at batch ends"
    assert curve[-1][1] == pytest.approx(correct.mean(), abs=1e-6)
    assert metrics["throughput"] > 0 and metrics["lag"] == 0


def test_a_change_in_the_data_is_reported_as_drift_where_it_happened(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker()
    shifted = np.concatenate([labels[:3000], (labels[3000:6000] + 1) % 10])  # the meaning of digits changes
    publish(redis_client, worker.keys.samples, images[:6000], shifted)

    worker.run(burst=True)

    events = latest(redis_client, worker.keys).meta["metrics"]["drift_events"]
    worse = [e for e in events if e["direction"] == "worse"]
    assert worse and worse[0]["detector"] == "ADWIN"
    assert 3000 < worse[0]["samples"] <= 3500, events


def test_lag_is_the_count_of_entries_not_yet_learned(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(batch_size=1000, snapshot_every=1000)
    publish(redis_client, worker.keys.samples, images[:3000], labels[:3000])

    worker.run(burst=True)

    lags = [read_snapshot(redis_client, worker.keys, v).meta["metrics"]["lag"] for v in (1, 2, 3)]  # type: ignore[union-attr]
    assert lags == [2000, 1000, 0]


def test_a_large_lag_is_exact_on_redis_7_and_a_lower_bound_on_redis_6(make_worker, redis_client) -> None:
    worker = make_worker(batch_size=5000, snapshot_every=5000)
    n = LAG_CAP + 5000 + 1
    images = np.zeros((n, N_PIXELS), dtype=np.uint8)
    publish(redis_client, worker.keys.samples, images, np.zeros(n, dtype=np.int64), chunk=5000)

    worker.run(burst=True)

    first = read_snapshot(redis_client, worker.keys, 1).meta["metrics"]  # type: ignore[union-attr]
    if "entries-added" in redis_client.xinfo_stream(worker.keys.samples):  # Redis >= 7: an exact count
        assert (first["lag"], first["lag_at_least"]) == (n - 5000, False)
    else:  # Redis 6.2: counted server-side up to the cap
        assert (first["lag"], first["lag_at_least"]) == (LAG_CAP, True)
    assert latest(redis_client, worker.keys).meta["metrics"]["lag"] == 0


def test_on_redis_6_a_large_lag_is_counted_again_only_after_as_many_entries_were_learned(
    make_worker, redis_client, digits
) -> None:
    """Redis 6.2 counts the lag by reading the entries: a count of 5,500 entries is not repeated at every
    snapshot (each would read more than the 500 learned since); meanwhile the lag is the lower bound
    count - learned since (here exact: nothing is published meanwhile)."""
    if int(str(redis_client.info("server")["redis_version"]).split(".")[0]) >= 7:
        pytest.skip("Redis >= 7 counts the lag in O(1) (entries-added)")
    images, labels = digits
    worker = make_worker(batch_size=500, snapshot_every=500, keep_versions=20)
    publish(redis_client, worker.keys.samples, images[:6000], labels[:6000])

    worker.run(burst=True)

    metrics = [read_snapshot(redis_client, worker.keys, v).meta["metrics"] for v in range(1, 13)]  # type: ignore[union-attr]
    assert [m["lag"] for m in metrics] == list(range(5500, -1, -500))
    assert [m["lag_at_least"] for m in metrics] == [False] + [True] * 10 + [False], "counted at 500 and 6,000 only"


# -- retention ------------------------------------------------------------------------------------


def test_learned_entries_beyond_the_retention_length_are_trimmed(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(batch_size=100, snapshot_every=500, retention_max_len=300)
    ids = publish(redis_client, worker.keys.samples, images[:2000], labels[:2000])

    worker.run(burst=True)

    kept = [entry_id for entry_id, _ in redis_client.xrange(worker.keys.samples)]
    assert kept == ids[-300:]


def test_workers_restarted_before_knowing_max_len_ids_still_bound_the_stream(make_worker, redis_client, digits) -> None:
    """Each worker learns fewer entries than the retention length, yet the stream stays that long."""
    images, labels = digits
    samples = make_worker().keys.samples
    ids: list[bytes] = []
    for start in range(0, 3000, 600):  # five short-lived workers, 600 new entries each
        ids += publish(redis_client, samples, images[start : start + 600], labels[start : start + 600])
        make_worker(batch_size=100, snapshot_every=300, retention_max_len=1000).run(burst=True)
    assert [entry_id for entry_id, _ in redis_client.xrange(samples)] == ids[-1000:]


@pytest.mark.parametrize("unlearned", [TRIM_PROBE, TRIM_PROBE + 1])
def test_the_length_trim_is_skipped_while_too_many_entries_wait_to_be_learned(
    make_settings, redis_client, digits, unlearned: int
) -> None:
    """The snapshot script checks what is left to learn before XTRIM MAXLEN: nothing unlearned is lost."""
    images, labels = digits
    keys = make_settings().keys
    n = 2500
    ids = publish(redis_client, keys.samples, images[:n], labels[:n])
    learned_id = ids[n - unlearned - 1].decode()
    redis_client.set(keys.lease, "token")
    snapshot = snapshot_of(DeltaRuleLearner(), model="m", samples_learned=0, last_id=learned_id, created_at=0.0)
    write_snapshot(redis_client, keys, snapshot, lease_token="token", keep=3, trim_maxlen=1000)
    kept = [entry_id for entry_id, _ in redis_client.xrange(keys.samples)]
    assert kept == (ids[-1000:] if unlearned <= TRIM_PROBE else ids)


def test_unlearned_entries_are_never_trimmed(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(batch_size=100, snapshot_every=500, retention_max_len=0)
    ids = publish(redis_client, worker.keys.samples, images[:1000], labels[:1000])
    pubsub = subscribed(redis_client, worker.keys.snapshot_events)
    lengths = []

    with running(worker):
        # After each snapshot, exactly the entries after its position are left.
        for _ in range(2):
            snapshot = read_snapshot(redis_client, worker.keys, parse_event(next_message(pubsub)["data"]))
            lengths.append((snapshot.samples_learned, redis_client.xrange(worker.keys.samples, count=1)))  # type: ignore[union-attr]
    pubsub.close()
    assert lengths[0][0] == 500
    first_left = lengths[0][1]
    assert not first_left or parse_id(first_left[0][0]) > parse_id(ids[499])
    assert redis_client.xlen(worker.keys.samples) == 0, "all learned, retention 0: all trimmed"


def test_entries_older_than_the_retention_age_are_trimmed(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(retention_max_len=1_000_000, retention_max_age=3600)
    old = [
        redis_client.xadd(worker.keys.samples, {"pixels": images[i].tobytes(), "label": str(labels[i])}, id=f"1000-{i}")
        for i in range(1, 51)
    ]
    recent = publish(redis_client, worker.keys.samples, images[50:100], labels[50:100])

    worker.run(burst=True)

    assert latest(redis_client, worker.keys).samples_learned == 100
    assert [entry_id for entry_id, _ in redis_client.xrange(worker.keys.samples)] == recent
    assert old[0] not in {entry_id for entry_id, _ in redis_client.xrange(worker.keys.samples)}


@given(
    batches=st.lists(st.integers(1, 40), min_size=0, max_size=30),
    max_len=st.integers(0, 500),
    max_age=st.none() | st.floats(0.001, 10_000),
)
def test_the_trim_point_never_passes_the_snapshot_and_keeps_max_len_learned(
    batches: list[int], max_len: int, max_age: float | None
) -> None:
    consumed = ConsumedIds(max_len)
    all_ids: list[bytes] = []
    for size in batches:
        ids = [b"%d-%d" % (1000 + len(all_ids) + i, 0) for i in range(size)]
        consumed.extend(ids)
        all_ids.extend(ids)
    last_id = all_ids[-1] if all_ids else b"0-0"
    now = (1000 + len(all_ids)) / 1000 + 1.0
    minid = trim_minid(last_id, consumed, max_len, max_age, now)
    if not all_ids:
        assert minid is None
        return
    if minid is None:
        assert max_age is None and max_len > len(all_ids)
        return
    assert parse_id(minid) <= parse_id(next_id(last_id)), "never above the snapshotted position"
    kept = [i for i in all_ids if parse_id(i) >= parse_id(minid)]
    if max_age is None:
        assert len(kept) == min(max_len, len(all_ids)), "exactly the newest max_len learned entries"
    else:
        assert len(kept) <= max_len


# -- status and resuming --------------------------------------------------------------------------


def test_the_status_key_reports_the_active_worker_and_expires(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(lease_ttl=1.0)
    publish(redis_client, worker.keys.samples, images[:100], labels[:100])
    with running(worker):

        def status_after_100() -> dict[str, Any] | None:
            raw = redis_client.get(worker.keys.worker_status)
            status = json.loads(raw) if raw else None  # type: ignore[arg-type]
            return status if status and status["samples_learned"] == 100 else None

        status = wait_for(status_after_100, timeout=10, what="the status of 100 samples learned")
        ttl = redis_client.pttl(worker.keys.worker_status)
    assert status["worker_id"] == worker.worker_id and status["state"] == "active"
    assert WorkerStatus.from_json(status).to_json() == status, "exactly the contract, nothing more"
    assert status["model"] == worker.keys.model
    assert 0 < ttl <= 3000
    assert redis_client.get(worker.keys.worker_status) is None, "a stopped worker removes its status"


def test_stop_finishes_the_batch_and_writes_a_final_snapshot(make_worker, redis_client, digits) -> None:
    images, labels = digits
    worker = make_worker(snapshot_every=1_000_000, snapshot_interval=3600)
    publish(redis_client, worker.keys.samples, images[:2000], labels[:2000])
    with running(worker):
        wait_for(lambda: worker.samples_learned == 2000, timeout=10, what="2,000 samples learned")
        assert read_snapshot(redis_client, worker.keys) is None
    snapshot = latest(redis_client, worker.keys)
    expected, _ = reference(worker.settings, images[:2000], labels[:2000])
    assert snapshot.samples_learned == 2000 and np.array_equal(snapshot.learner().weights, expected.weights)


def test_a_restarted_worker_learns_what_was_published_while_it_was_down(make_worker, redis_client, digits) -> None:
    images, labels = digits
    first = make_worker(rolling_window=300)
    publish(redis_client, first.keys.samples, images[:1000], labels[:1000])
    first.run(burst=True)
    publish(redis_client, first.keys.samples, images[1000:1500], labels[1000:1500])  # while no worker runs

    second = make_worker(rolling_window=300)
    second.run(burst=True)

    snapshot = latest(redis_client, second.keys)
    expected, predictions = reference(second.settings, images[:1500], labels[:1500])
    assert snapshot.version == 2 and snapshot.samples_learned == 1500
    assert np.array_equal(snapshot.learner().weights, expected.weights), "each sample learned once, in order"
    metrics = snapshot.meta["metrics"]
    correct = predictions == labels[:1500]
    assert metrics["prequential_accuracy"] == pytest.approx(correct.mean(), abs=1e-6), "metrics carry on too"
    assert metrics["rolling_accuracy"] == pytest.approx(correct[-300:].mean(), abs=1e-6)


def test_an_unreadable_latest_snapshot_falls_back_to_the_previous_version(
    make_worker, redis_client, digits, caplog: pytest.LogCaptureFixture
) -> None:
    images, labels = digits
    first = make_worker(batch_size=100, snapshot_every=100)
    publish(redis_client, first.keys.samples, images[:300], labels[:300])
    first.run(burst=True)
    redis_client.hset(first.keys.snapshot(3), "array:wt", b"damaged")
    publish(redis_client, first.keys.samples, images[300:400], labels[300:400])

    make_worker(batch_size=100, snapshot_every=100).run(burst=True)

    snapshot = latest(redis_client, first.keys)
    expected, _ = reference(first.settings, images[:400], labels[:400])
    assert snapshot.version == 5 and snapshot.samples_learned == 400, "from version 2: samples 201-400 again"
    assert np.array_equal(snapshot.learner().weights, expected.weights)
    assert any("snapshot 3" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)


def test_a_model_whose_snapshots_are_all_gone_is_not_silently_restarted(make_worker, redis_client, digits) -> None:
    images, labels = digits
    first = make_worker()
    publish(redis_client, first.keys.samples, images[:100], labels[:100])
    first.run(burst=True)
    redis_client.delete(first.keys.snapshot(1))

    with pytest.raises(RuntimeError, match="no readable snapshot"):
        make_worker().run(burst=True)
    assert redis_client.get(first.keys.lease) is None, "the lease is released on the way out"
