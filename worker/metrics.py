"""Online (prequential) metrics of the learner: accuracy, confusion, drift, learning curve.

Every sample is predicted before it is learned (``DeltaRuleLearner.learn_many`` returns those
predictions), so each prediction is an honest test on unseen data.

Why numpy and not river's ``metrics.Accuracy``/``ConfusionMatrix``: they are updated one sample at a
time in Python (~1 µs each), a large share of the worker's budget of a few µs per sample. The
counts here are updated once per batch with numpy and give exactly the same numbers. river's
ADWIN (``river.drift.ADWIN``) watches the prequential error for drift. Fed every 0/1 error from
Python it costs ~1.1 µs per sample, a third of the budget; it is fed instead the mean error of
blocks of ``drift_block`` samples (8 by default, ~0.1 µs per sample), and looks for a cut after
every block (``clock=1``). Measured on MNIST with the digits' labels shifted after 3,000 samples:
per-sample ADWIN flags the change at 3,040, blocks of 8 at ~3,130, blocks of 32 only at ~3,600
(a block mean is one observation to ADWIN, so bigger blocks need more samples for the same
confidence). Drift events are reported with the sample count where ADWIN flagged them, the
direction of the change (``"worse"`` = the error rose, e.g. the data changed; ``"better"`` = it
fell, e.g. the model improved quickly at the start) and ADWIN's error estimate after its cut (its
shrunk window still holds some samples from before the change).

Restoring from a snapshot restores the counts, the rolling window (an array of the snapshot), the
learning curve and the past drift events; ADWIN itself restarts empty after a restart.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np
from river.drift import ADWIN

from digitstream.contracts import CurvePoint, DriftEvent, MetricsReport

log = logging.getLogger("digitstream.worker")

N_CLASSES = 10
ROLLING_ARRAY = "rolling_correct"  # snapshot array: the rolling window's 0/1 outcomes, oldest first
MAX_DRIFT_EVENTS = 100
RECENT_BLOCKS = 16  # blocks (of ``drift_block`` samples) that tell which way a drift went


class OnlineMetrics:
    """Prequential accuracy (cumulative and rolling), confusion matrix, drift and a learning curve."""

    def __init__(
        self,
        rolling_window: int = 1000,
        *,
        drift_block: int = 8,
        curve_step: int = 1000,
        curve_points: int = 500,
    ) -> None:
        self.rolling_window = rolling_window
        self.drift_block = drift_block
        self.curve_step = curve_step
        self.curve_points = curve_points
        self.n = 0
        self.confusion = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)  # rows: true digit, columns: predicted
        self.learning_curve: list[CurvePoint] = []
        self.drift_events: list[DriftEvent] = []
        self.drift_events_total = 0  # over the model's life (drift_events keeps the newest MAX_DRIFT_EVENTS)
        self._ring = np.zeros(rolling_window, dtype=np.uint8)
        self._ring_pos = 0
        self._ring_filled = 0
        self._ring_sum = 0
        self._adwin = ADWIN(clock=1)  # type: ignore[no-untyped-call]  # each update is already a block: test for a cut after every one
        self._block_errors = 0
        self._block_count = 0
        self._recent_means: deque[float] = deque(maxlen=1024)  # block means, to tell a drift's direction
        self._deferred: list[tuple[np.ndarray, np.ndarray]] = []  # learned batches' (predictions, labels)

    # -- updates --------------------------------------------------------------------------------
    def defer(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        """Count a learned batch at the next ``flush`` (the worker's main thread scores while the next batch
        is learned)."""
        self._deferred.append((predictions, labels))

    def flush(self) -> None:
        """Count the deferred batches, in the order given (logs the drift they flag)."""
        for predictions, labels in self._deferred:
            self.update(predictions, labels)
        self._deferred.clear()

    def update(self, predictions: np.ndarray, labels: np.ndarray) -> list[DriftEvent]:
        """Count one learned batch (in stream order); returns (and logs) the drift events it raised."""
        if len(labels) == 0:
            return []
        predictions = predictions.astype(np.int64, copy=False)
        correct = (predictions == labels).view(np.uint8)
        self.confusion += np.bincount(labels * N_CLASSES + predictions, minlength=N_CLASSES * N_CLASSES).reshape(
            N_CLASSES, N_CLASSES
        )
        self._push_rolling(correct)
        start = self.n
        self.n += len(labels)
        events = self._detect_drift(1 - correct, start)
        self._extend_curve()
        return events

    def _push_rolling(self, correct: np.ndarray) -> None:
        window = self.rolling_window
        if len(correct) >= window:
            self._ring[:] = correct[-window:]
            self._ring_pos, self._ring_filled, self._ring_sum = 0, window, int(self._ring.sum())
            return
        slots = (self._ring_pos + np.arange(len(correct))) % window
        self._ring_sum += int(correct.sum()) - int(self._ring[slots].sum())
        self._ring[slots] = correct
        self._ring_pos = int((self._ring_pos + len(correct)) % window)
        self._ring_filled = min(window, self._ring_filled + len(correct))

    def _detect_drift(self, errors: np.ndarray, start: int) -> list[DriftEvent]:
        """Feed ADWIN block means of the 0/1 errors; ``start`` is the sample count before this batch."""
        block = self.drift_block
        means: list[float] = []
        i = 0
        if self._block_count:  # complete the block left open by the previous batch
            i = min(block - self._block_count, len(errors))
            self._block_errors += int(errors[:i].sum())
            self._block_count += i
            if self._block_count < block:
                return []
            means.append(self._block_errors / block)
        first_end = start + (i if means else block)  # sample count at the end of the first block
        full = (len(errors) - i) // block
        if full:
            means.extend((errors[i : i + full * block].reshape(full, block).sum(axis=1) / block).tolist())
        rest = errors[i + full * block :]
        self._block_errors, self._block_count = int(rest.sum()), len(rest)
        events = []
        adwin, update = self._adwin, self._adwin.update
        for j, mean in enumerate(means):
            update(mean)  # type: ignore[no-untyped-call]
            if adwin.drift_detected:
                events.append(self._drift_event(first_end + j * block, [*self._recent_means, *means[: j + 1]]))
        self._recent_means.extend(means)
        if events:
            self.drift_events = (self.drift_events + events)[-MAX_DRIFT_EVENTS:]
            self.drift_events_total += len(events)
        for event in events:
            worse = event.direction == "worse"
            log.log(
                logging.WARNING if worse else logging.INFO,
                "drift flagged by %s at sample %s: the prequential error %s (now ~%.1f%%)",
                event.detector, f"{event.samples:,}", "rose" if worse else "fell", 100 * (event.error_rate or 0.0),
            )  # fmt: skip
        return events

    def _drift_event(self, samples: int, means: list[float]) -> DriftEvent:
        """The event ADWIN just raised.

        Its direction compares the error of the newest blocks (the last ``RECENT_BLOCKS``) with the
        error before ADWIN's new window: the blocks it dropped when we still hold them, else the
        cumulative error. ADWIN's own estimate is no guide: right after a change its window still
        holds mostly samples from before it.
        """
        after = float(self._adwin.estimation)
        recent = means[-RECENT_BLOCKS:]
        now = sum(recent) / len(recent)
        dropped = means[: max(0, len(means) - int(self._adwin.width))][-64:]
        if dropped:
            before = sum(dropped) / len(dropped)
        else:  # the window is longer than the blocks we keep: compare with the whole history
            before = 1.0 - float(np.trace(self.confusion)) / max(1, int(self.confusion.sum()))
        return DriftEvent(samples, "ADWIN", "worse" if now > before else "better", round(after, 6))

    def _extend_curve(self) -> None:
        """One point per ``step`` samples; the step doubles (and old points are thinned) to stay bounded."""
        step = self.curve_step
        while self.n > step * self.curve_points:
            step *= 2
        last = self.learning_curve[-1][0] if self.learning_curve else 0
        if self.n // step > last // step:
            point = (self.n, self._round(self.prequential_accuracy), self._round(self.rolling_accuracy))
            self.learning_curve.append(point)
            if len(self.learning_curve) > self.curve_points:
                self.learning_curve = self.learning_curve[::2]  # an odd count: the newest point stays

    # -- reading ----------------------------------------------------------------------------------
    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def prequential_accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def rolling_accuracy(self) -> float | None:
        return self._ring_sum / self._ring_filled if self._ring_filled else None

    def per_class_recall(self) -> list[float | None]:
        """Recall of each digit (None for a digit never seen), from the confusion matrix."""
        totals = self.confusion.sum(axis=1)
        diagonal = np.diag(self.confusion)
        return [self._round(int(diagonal[k]) / int(totals[k])) if totals[k] else None for k in range(N_CLASSES)]

    def report(self) -> MetricsReport:
        """The metrics as a snapshot stores them (the worker adds throughput and lag)."""
        return MetricsReport(
            samples=self.n,
            prequential_accuracy=self._round(self.prequential_accuracy),
            rolling_accuracy=self._round(self.rolling_accuracy),
            rolling_window=self.rolling_window,
            confusion_matrix=tuple(tuple(row) for row in self.confusion.tolist()),
            per_class_recall=tuple(self.per_class_recall()),
            drift_events=tuple(self.drift_events),
            learning_curve=tuple(self.learning_curve),
            drift_events_total=self.drift_events_total,
        )

    def rolling_outcomes(self) -> np.ndarray:
        """The rolling window's 0/1 outcomes, oldest first (saved as a snapshot array)."""
        if self._ring_filled < self.rolling_window:
            return self._ring[: self._ring_filled].copy()
        return np.roll(self._ring, -self._ring_pos)

    @classmethod
    def restore(
        cls, report: MetricsReport | None, outcomes: np.ndarray | None, rolling_window: int, **options: Any
    ) -> OnlineMetrics:
        """Metrics continuing from a snapshot's ``report()`` and ``rolling_outcomes()``."""
        metrics = cls(rolling_window, **options)
        if report is None:
            return metrics
        confusion = np.asarray(report.confusion_matrix, dtype=np.int64)
        if confusion.shape == (N_CLASSES, N_CLASSES) and (confusion >= 0).all():
            metrics.confusion = confusion.copy()
            metrics.n = int(confusion.sum())
        metrics.learning_curve = list(report.learning_curve)[-metrics.curve_points :]
        metrics.drift_events = list(report.drift_events)[-MAX_DRIFT_EVENTS:]
        metrics.drift_events_total = max(report.drift_events_total, len(report.drift_events))
        if outcomes is not None and outcomes.size:
            metrics._push_rolling(outcomes.astype(np.uint8).ravel()[-rolling_window:])
        return metrics

    @staticmethod
    def _round(value: float | None) -> float | None:
        return None if value is None else round(float(value), 6)
