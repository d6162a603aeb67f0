"""The delta-rule learner: a pure numpy-in, numpy-out linear 10-class model (no I/O, no clock)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels
from .params import HyperParameters
from .scoring import pixel_values, scores_to_proba
from .state import LearnerState

N_CLASSES = kernels.N_CLASSES
N_PIXELS = kernels.N_PIXELS
_ARRAY_NAMES = ("wt", "bias", "acc_wt", "acc_bias", "norm")


def as_images(images: Any) -> np.ndarray:
    """Validate images as a C-contiguous ``(n, 784)`` uint8 array of raw pixels 0..255.

    Accepts ``(n, 784)`` or ``(n, 28, 28)`` arrays of any integer (or integral float) dtype.
    """
    arr = np.asarray(images)
    if arr.ndim == 3 and arr.shape[1:] == (28, 28):
        arr = arr.reshape(arr.shape[0], N_PIXELS)
    if arr.ndim != 2 or arr.shape[1] != N_PIXELS:
        raise ValueError(f"images must have shape (n, 784) or (n, 28, 28), got {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "iuf" and arr.size:
            raise ValueError(f"pixels must be numbers 0..255, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("pixels must be in 0..255")
        if arr.dtype.kind == "f" and arr.size and not np.array_equal(arr, np.round(arr)):
            raise ValueError("pixels must be whole numbers 0..255")
        arr = arr.astype(np.uint8)
    if not arr.flags.c_contiguous or arr.ctypes.data % 8:
        arr = arr.copy()  # the kernels read each image as 98 aligned 8-byte words
    return arr


def as_labels(labels: Any, n: int) -> np.ndarray:
    """Validate ``n`` labels as an int64 array of digits 0..9."""
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"expected {n} labels, got shape {arr.shape}")
    if n and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 9):
        raise ValueError("labels must be integers 0..9")
    return np.ascontiguousarray(arr, dtype=np.int64)


class DeltaRuleLearner:
    """Linear model over 784 pixels learned one example at a time with the delta rule.

    After N samples the model equals the N per-sample updates applied in order, whatever
    batches they arrived in: every batch runs the same compiled per-sample loop.

    Examples
    --------
    >>> import numpy as np
    >>> learner = DeltaRuleLearner(HyperParameters.for_rule("seed"))
    >>> image = np.full((1, 784), 10, dtype=np.uint8)
    >>> learner.learn_many(image, [3]).tolist()  # predicted before learning: ties -> row 9 largest
    [9]
    >>> learner.n_samples
    1
    """

    def __init__(self, params: HyperParameters | None = None) -> None:
        kernels.ensure_compiled()
        self.params = params or HyperParameters()
        self.n_samples = 0
        self._wt = np.zeros((N_PIXELS, N_CLASSES), dtype=np.float64)
        if self.params.rule == "seed":
            # The post's initialisation: row k of W (10 x 784) is the constant 0.0001 * k.
            self._wt[:] = 0.0001 * np.arange(N_CLASSES, dtype=np.float64)
        self._bias = np.zeros(N_CLASSES, dtype=np.float64)
        self._acc_wt = np.zeros((N_PIXELS, N_CLASSES), dtype=np.float64)
        self._acc_bias = np.zeros(N_CLASSES, dtype=np.float64)
        self._norm = np.zeros(1, dtype=np.float64)
        self._scale = pixel_values(self.params)
        self._served: tuple[np.ndarray, np.ndarray] | None = None

    # -- learning ---------------------------------------------------------------------------
    def learn_many(self, images: Any, labels: Any) -> np.ndarray:
        """Learn the samples in order; returns the digit each was predicted *before* its update."""
        x = as_images(images)
        y = as_labels(labels, x.shape[0])
        predictions = np.empty(x.shape[0], dtype=np.int8)
        p = self.params
        kernels.learn_loop(
            self._wt, self._bias, self._acc_wt, self._acc_bias, self._norm,
            x, x.view(np.uint64), y, self._scale,
            kernels.SOFTMAX if p.rule == "softmax" else kernels.IDENTITY,
            p.uses_bias, p.averaging, float(p.average_power), float(p.learning_rate),
            kernels.SCHEDULE_CONSTANT if p.schedule == "constant" else kernels.SCHEDULE_INVERSE_SCALING,
            float(p.decay), float(p.power), self.n_samples, predictions,
        )  # fmt: skip
        self.n_samples += x.shape[0]
        self._served = None
        return predictions

    def learn_one(self, image: Any, label: int) -> int:
        """Learn one sample; returns the digit it was predicted before the update."""
        return int(self.learn_many(np.asarray(image).reshape(1, -1), [label])[0])

    # -- prediction -------------------------------------------------------------------------
    def scores_many(self, images: Any) -> np.ndarray:
        """Raw linear scores ``W x + b`` of the served weights, shape (n, 10)."""
        x = as_images(images)
        wt, bias = self.served_parameters()
        out = np.empty((x.shape[0], N_CLASSES), dtype=np.float64)
        kernels.score_loop(wt, bias, x, x.view(np.uint64), self._scale, self.params.uses_bias, out)
        return out

    def predict_proba_many(self, images: Any) -> np.ndarray:
        """Class probabilities, shape (n, 10), rows summing to 1.

        Softmax rule: the softmax of the scores. Seed (identity) rule: its scores estimate the
        one-hot target by least squares, so their positive parts are normalised (the softmax
        when none is positive). Either way the most probable digit is the predicted one.
        """
        return scores_to_proba(self.scores_many(images), self.params.rule)

    def predict_many(self, images: Any) -> np.ndarray:
        """Predicted digits (first maximum score on ties), shape (n,)."""
        predicted: np.ndarray = np.argmax(self.scores_many(images), axis=1)
        return predicted

    def predict_one(self, image: Any) -> int:
        return int(self.predict_many(np.asarray(image).reshape(1, -1))[0])

    def served_parameters(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights pixel-major (784, 10), bias) that predictions use: the Polyak average if on."""
        if self._served is None:
            if self.params.averaging and self.n_samples > 0:
                norm = self._norm[0]
                self._served = (self._wt - self._acc_wt / norm, self._bias - self._acc_bias / norm)
            else:
                self._served = (self._wt, self._bias)
        return self._served

    @property
    def weights(self) -> np.ndarray:
        """Served weights as the familiar (10, 784) matrix (a copy)."""
        return np.ascontiguousarray(self.served_parameters()[0].T)

    @property
    def bias(self) -> np.ndarray:
        return self.served_parameters()[1].copy()

    def is_finite(self) -> bool:
        """False once a too-large learning rate made any weight inf or NaN."""
        return bool(np.isfinite(self._wt).all() and np.isfinite(self._bias).all() and np.isfinite(self._acc_wt).all())

    # -- state ------------------------------------------------------------------------------
    def state(self) -> LearnerState:
        """A copy of the full state (raw weights, bias, averaging accumulators, counters)."""
        arrays = {
            "wt": self._wt.copy(),
            "bias": self._bias.copy(),
            "acc_wt": self._acc_wt.copy(),
            "acc_bias": self._acc_bias.copy(),
            "norm": self._norm.copy(),
        }
        return LearnerState(self.params, self.n_samples, arrays)

    @classmethod
    def from_state(cls, state: LearnerState) -> DeltaRuleLearner:
        """Rebuild a learner that continues exactly where ``state`` left off."""
        learner = cls(state.params)
        for name, target in zip(_ARRAY_NAMES, learner._arrays(), strict=True):
            source = state.arrays.get(name)
            if source is None or source.shape != target.shape:
                raise ValueError(f"state array {name!r} missing or of wrong shape")
            target[...] = source
        if state.n_samples < 0:
            raise ValueError("n_samples must be >= 0")
        learner.n_samples = state.n_samples
        return learner

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self._wt, self._bias, self._acc_wt, self._acc_bias, self._norm)


__all__ = ["DeltaRuleLearner", "LearnerState", "as_images", "as_labels", "pixel_values", "scores_to_proba"]
