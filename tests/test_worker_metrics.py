"""Online metrics: batching and restarts never change the numbers; the curve stays bounded; drift is seen."""

from __future__ import annotations

import itertools
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from digitstream.contracts import MetricsReport
from digitstream.worker.metrics import OnlineMetrics


def outcomes(n: int, seed: int, accuracy: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) with about ``accuracy`` of the predictions right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    wrong = rng.random(n) > accuracy
    predictions = np.where(wrong, (labels + rng.integers(1, 10, n)) % 10, labels).astype(np.int8)
    return predictions, labels


def feed(metrics: OnlineMetrics, predictions: np.ndarray, labels: np.ndarray, cuts: list[int]) -> None:
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(labels)), len(labels)]
    for start, end in itertools.pairwise(bounds):
        metrics.update(predictions[start:end], labels[start:end])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3000),
    cuts=st.lists(st.integers(0, 3000), max_size=20),
    restart=st.integers(0, 3000),
    window=st.integers(1, 700),
    seed=st.integers(0, 2**32 - 1),
)
def test_counts_and_rolling_accuracy_do_not_depend_on_batches_or_restarts(
    n: int, cuts: list[int], restart: int, window: int, seed: int
) -> None:
    predictions, labels = outcomes(n, seed)
    whole = OnlineMetrics(window)
    whole.update(predictions, labels)

    first = OnlineMetrics(window)
    cut = min(restart, n)
    feed(first, predictions[:cut], labels[:cut], cuts)
    report = MetricsReport.from_json(json.loads(json.dumps(first.report().to_json())))  # what a snapshot stores
    resumed = OnlineMetrics.restore(report, first.rolling_outcomes(), window)
    feed(resumed, predictions[cut:], labels[cut:], [c - cut for c in cuts])

    correct = predictions == labels
    for metrics in (whole, resumed):
        assert metrics.n == n
        assert np.array_equal(metrics.confusion, np.bincount(labels * 10 + predictions, minlength=100).reshape(10, 10))
        assert metrics.prequential_accuracy == (correct.mean() if n else None)
        assert metrics.rolling_accuracy == (correct[-window:].mean() if n else None)
        assert np.array_equal(metrics.rolling_outcomes(), correct[-window:].astype(np.uint8))


def test_the_report_is_plain_json_with_no_nan_even_before_any_sample() -> None:
    empty = OnlineMetrics(10).report().to_json()
    assert json.loads(json.dumps(empty, allow_nan=False)) == empty
    assert empty["prequential_accuracy"] is None and empty["per_class_recall"] == [None] * 10
    metrics = OnlineMetrics(10)
    metrics.update(np.array([3, 3], dtype=np.int8), np.array([3, 5]))
    assert metrics.per_class_recall() == [None, None, None, 1.0, None, 0.0, None, None, None, None]


def test_the_learning_curve_stays_bounded_and_ends_near_the_newest_sample() -> None:
    metrics = OnlineMetrics(100, curve_step=1000, curve_points=50)
    predictions, labels = outcomes(1000, 0)
    for _ in range(400):  # 400,000 samples: 400 steps of the initial size
        metrics.update(predictions, labels)
    curve = metrics.learning_curve
    assert len(curve) <= 50
    assert [p[0] for p in curve] == sorted(p[0] for p in curve)
    assert curve[-1][0] >= 400_000 - 2 * 400_000 // 50
    assert all(p[1] == metrics.prequential_accuracy for p in curve[1:])


def test_adwin_flags_a_jump_in_the_error_as_a_worse_drift_where_it_happened() -> None:
    metrics = OnlineMetrics(500)
    good_p, good_y = outcomes(4000, 1, accuracy=0.95)
    bad_p, bad_y = outcomes(2000, 2, accuracy=0.3)
    events = []
    for start in range(0, 4000, 500):  # batch edges that do not fall on drift blocks (of 8)
        events += metrics.update(good_p[start : start + 500], good_y[start : start + 500])
    assert [e for e in events if e.direction == "worse"] == []
    events = metrics.update(bad_p, bad_y)
    worse = [e for e in events if e.direction == "worse"]
    assert worse and 4000 < worse[0].samples <= 4300
    before = float(np.mean(good_p != good_y))
    assert worse[0].detector == "ADWIN" and (worse[0].error_rate or 0) > before, "ADWIN's estimate after its cut"
    assert list(metrics.report().drift_events[-len(events) :]) == events


def test_a_jump_in_the_error_after_a_long_stable_stretch_is_a_worse_drift() -> None:
    """ADWIN's window then outgrows the blocks kept to tell the direction; the jump still reads as worse."""
    metrics = OnlineMetrics(500)
    good_p, good_y = outcomes(20_000, 3, accuracy=0.9)
    bad_p, bad_y = outcomes(1000, 4, accuracy=0.0)
    for start in range(0, 20_000, 1000):
        metrics.update(good_p[start : start + 1000], good_y[start : start + 1000])
    events = metrics.update(bad_p, bad_y)
    assert events, "the jump is flagged"
    assert events[0].direction == "worse" and 20_000 < events[0].samples <= 20_300, events
