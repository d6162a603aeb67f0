"""Faults narrowed to entries: a sample that diverges or raises is dead-lettered, the rest of its batch learned.

``worker.isolate`` bisects a batch on a checkpoint of the learner's state; the specification is the
slow one-sample-at-a-time guard (``reference_without_offenders``): the same samples left out, the
same weights, bit for bit.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from digitstream.learner import DeltaRuleLearner, new_learner
from digitstream.protocol import N_PIXELS, encode_sample
from digitstream.settings import load_settings
from digitstream.worker.isolate import DIVERGED, decode_isolating, learn_guarded
from tests.worker_support import latest, publish, publish_raw, reference, reference_without_offenders


@st.composite
def mixed_batch(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Faint images (a few pixels of 1, stable at any rate that is not absurd) mixed with bright ones."""
    n = draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bright = rng.random(n) < draw(st.floats(0, 1))
    images = np.zeros((n, N_PIXELS), dtype=np.uint8)
    for i in range(n):
        idx = rng.integers(0, N_PIXELS, rng.integers(1, 4))
        images[i, idx] = rng.integers(128, 256) if bright[i] else 1
        if bright[i]:
            images[i, rng.integers(0, N_PIXELS, 200)] = 255
    return images, rng.integers(0, 10, n)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=mixed_batch(), learning_rate=st.sampled_from([1e-7, 1.0, 1e20, 1e60, 1e150, 1e300]))
def test_a_batch_learns_exactly_what_the_one_by_one_guard_learns(batch, learning_rate) -> None:
    images, labels = batch
    settings_ = load_settings(rule="seed", learning_rate=learning_rate)

    learned = learn_guarded(new_learner(settings_.hyper_parameters()), images, labels)

    expected, offenders = reference_without_offenders(settings_, images, labels)
    event("some samples diverge" if offenders else "no sample diverges")
    assert [i for i, _ in learned.offenders] == offenders
    assert all(reason == DIVERGED for _, reason in learned.offenders)
    assert learned.learner.is_finite()
    assert np.array_equal(learned.learner.state().arrays["wt"], expected.state().arrays["wt"])
    assert np.array_equal(learned.learner.weights, expected.weights)
    assert learned.learner.n_samples == expected.n_samples == len(labels) - len(offenders)
    kept = reference(settings_, images[learned.keep], labels[learned.keep])[0]
    assert np.array_equal(learned.learner.weights, kept.weights), "equal to learning the good samples alone"


def test_the_happy_path_learns_the_batch_in_one_go() -> None:
    images = np.random.default_rng(1).integers(0, 256, (64, N_PIXELS)).astype(np.uint8)
    labels = np.arange(64) % 10
    learner = new_learner()
    learned = learn_guarded(learner, images, labels)
    assert learned.learner is learner and learned.offenders == [] and learned.keep.all()
    assert np.array_equal(learned.predictions, reference(load_settings(), images, labels)[1])


def test_a_read_whose_decoding_raises_is_bisected_to_the_entry() -> None:
    good = encode_sample(np.zeros(N_PIXELS, dtype=np.uint8), 3)
    entries = [(b"1-%d" % i, dict(good)) for i in range(7)]
    entries[4] = (b"1-4", None)  # a deleted entry as some replies show it: the fast path cannot read it

    batch = decode_isolating(entries)

    assert batch.ids == [b"1-%d" % i for i in range(7) if i != 4] and batch.last_id == b"1-6"
    [(entry_id, fields, reason)] = batch.rejects
    assert entry_id == b"1-4" and fields == {} and reason.startswith("internal error: AttributeError: ")


def poison_learning(monkeypatch: pytest.MonkeyPatch, value: int) -> None:
    """Make the learner raise on any batch holding an image whose first pixel is ``value`` (a learner bug)."""
    original = DeltaRuleLearner.learn_many

    def learn_many(self: DeltaRuleLearner, images, labels):  # type: ignore[no-untyped-def]
        if (np.asarray(images)[:, 0] == value).any():
            raise FloatingPointError(f"poisoned by a pixel {value}\nsecond line")
        return original(self, images, labels)

    monkeypatch.setattr(DeltaRuleLearner, "learn_many", learn_many)


def test_a_sample_that_makes_learning_raise_is_dead_lettered_and_the_rest_of_its_batch_learned(
    make_worker, redis_client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker(batch_size=100)
    rng = np.random.default_rng(5)
    images = rng.integers(0, 200, (300, N_PIXELS)).astype(np.uint8)
    labels = rng.integers(0, 10, 300)
    images[[17, 150, 151], 0] = 213
    ids = publish(redis_client, worker.keys.samples, images, labels)
    poison_learning(monkeypatch, 213)

    worker.run(burst=True)

    dead = redis_client.xrange(worker.keys.deadletter)
    assert [f[b"original_id"] for _, f in dead] == [ids[17], ids[150], ids[151]]
    for _, fields in dead:
        assert fields[b"reason"] == b"internal error: FloatingPointError: poisoned by a pixel 213 second line"
        assert fields[b"label"] == b"%d" % labels[ids.index(fields[b"original_id"])], "the original fields"
    keep = np.ones(300, dtype=bool)
    keep[[17, 150, 151]] = False
    snapshot = latest(redis_client, worker.keys)
    monkeypatch.undo()
    expected, _ = reference(worker.settings, images[keep], labels[keep])
    assert np.array_equal(snapshot.learner().weights, expected.weights)
    assert snapshot.samples_learned == 297 and snapshot.meta["deadletter_count"] == 3
    assert {f["kind"] for f in snapshot.meta["faults"]} == {"internal"}
    assert any(r.levelno == logging.ERROR and "internal error" in r.getMessage() for r in caplog.records)


def test_diverging_samples_are_dead_lettered_and_their_batch_mates_learned(
    make_worker, redis_client, mnist_train
) -> None:
    images, labels = mnist_train[0][:300], mnist_train[1][:300]
    worker = make_worker(rule="seed", learning_rate=1.0, batch_size=50, snapshot_every=50)
    faint = np.zeros((300, N_PIXELS), dtype=np.uint8)
    faint[np.arange(300), np.random.default_rng(3).integers(0, N_PIXELS, 300)] = 1
    mixed = np.concatenate([faint[:100], images[:100], faint[100:200], images[100:150], faint[200:]])
    mixed_labels = np.concatenate([labels[:100], labels[:100], labels[100:200], labels[100:150], labels[200:300]])
    ids = publish(redis_client, worker.keys.samples, mixed, mixed_labels)

    worker.run(burst=True)

    expected, offenders = reference_without_offenders(worker.settings, mixed, mixed_labels)
    assert offenders, "real digits at learning rate 1.0 (raw pixels up to 255) overflow"
    dead = redis_client.xrange(worker.keys.deadletter)
    assert sorted(f[b"original_id"] for _, f in dead) == sorted(ids[i] for i in offenders)
    assert {f[b"reason"] for _, f in dead} == {b"diverged"}
    snapshot = latest(redis_client, worker.keys)
    assert np.array_equal(snapshot.learner().weights, expected.weights), "learned the others, exactly"
    assert snapshot.samples_learned == len(mixed) - len(offenders) and snapshot.meta["samples_skipped"] == 0
    faults = [f for f in snapshot.meta["faults"] if f["kind"] == "divergence"]
    assert faults and sum(f["skipped"] for f in faults) == len(offenders)
    assert all("learning rate 1" in f["message"] and "dead-lettered" in f["message"] for f in faults)


def test_raw_bytes_of_a_deleted_entry_do_not_stop_the_worker(make_worker, redis_client) -> None:
    worker = make_worker()
    ids = publish_raw(redis_client, worker.keys.samples, [{b"pixels": b"[" * 10_000, b"label": b"1"}])
    publish(redis_client, worker.keys.samples, np.zeros((1, N_PIXELS), dtype=np.uint8), np.array([1]))
    worker.run(burst=True)
    [(_, dead)] = redis_client.xrange(worker.keys.deadletter)
    assert dead[b"original_id"] == ids[0] and dead[b"reason"] == b"pixels: unbalanced brackets"
    assert latest(redis_client, worker.keys).samples_learned == 1


def test_a_worker_that_keeps_restarting_at_one_position_reports_a_crash_loop(
    make_worker, redis_client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from digitstream.worker.loop import Worker

    keys = make_worker().keys
    publish(redis_client, keys.samples, np.zeros((3, N_PIXELS), dtype=np.uint8), np.array([1, 2, 3]))
    statuses = []

    def crash(self: Worker, executor: object, burst: bool) -> None:
        statuses.append(self.status())
        raise SystemError("the process dies here")

    monkeypatch.setattr(Worker, "_learn", crash)
    for _ in range(3):
        with pytest.raises(SystemError):
            make_worker().run(burst=True)
    monkeypatch.undo()

    assert [(s["health"], s["restarts"]) for s in statuses] == [("ok", 1), ("ok", 2), ("crash-looping", 3)]
    assert statuses[-1]["faults"][-1]["kind"] == "restart"
    assert "started 3 times in a row at stream id 0-0" in statuses[-1]["faults"][-1]["message"]
    assert any(r.levelno == logging.ERROR and "crash loop" in r.getMessage() for r in caplog.records)

    worker = make_worker()
    worker.run(burst=True)  # gets past it: learns, and stops cleanly

    assert worker.status()["health"] == "ok" and worker.status()["restarts"] == 0
    assert latest(redis_client, worker.keys).samples_learned == 3
    assert redis_client.exists(worker.keys.worker_restarts) == 0, "a clean stop clears the count"
