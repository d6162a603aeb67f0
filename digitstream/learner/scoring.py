"""Scoring a learned state with numpy alone: what the API process serves (it never loads numba).

A :class:`Scorer` is built once per snapshot from a :class:`~digitstream.learner.state.LearnerState`
and never mutated, so concurrent requests can share it. Its scores equal the compiled learner's up
to floating-point summation order (the kernels add only the inked pixels, numpy adds all of them).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .mlp_init import check_arrays, initial_w1
from .params import HyperParameters
from .state import LearnerState

N_CLASSES = 10
N_PIXELS = 784
CHUNK_ROWS = 1024  # images scored per step: bounds the float64 copy of a large batch to ~6 MB


class Scorer(Protocol):
    """What serving needs of a learned model."""

    params: HyperParameters

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Raw output scores, shape (n, 10), of uint8 images shaped (n, 784)."""
        ...

    def templates(self) -> tuple[np.ndarray, np.ndarray]:
        """What each class responds to in pixel space: (weights (784, 10), bias (10,)), for pictures."""
        ...

    def features(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The hidden layer, for pictures: (learned input weights (784, H), output weights (H, 10)); None if none."""
        ...


class LinearScorer:
    """The linear rules (``seed``, ``softmax``): served weights (784, 10) and bias."""

    def __init__(self, state: LearnerState) -> None:
        self.params = state.params
        self.wt, self.bias = served_linear_parameters(state)
        if not (np.isfinite(self.wt).all() and np.isfinite(self.bias).all()):
            raise ValueError("the state has non-finite weights")
        self._scale = pixel_values(state.params)

    def scores(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((images.shape[0], N_CLASSES), dtype=np.float64)
        for start in range(0, images.shape[0], CHUNK_ROWS):
            chunk = self._scale[images[start : start + CHUNK_ROWS]]
            np.matmul(chunk, self.wt, out=out[start : start + CHUNK_ROWS])
        if self.params.uses_bias:
            out += self.bias
        return out

    def templates(self) -> tuple[np.ndarray, np.ndarray]:
        return self.wt, self.bias

    def features(self) -> None:
        return None


class MLPScorer:
    """The ``mlp`` rule: the served (averaged) layers, scored in float32 as the learner keeps them."""

    def __init__(self, state: LearnerState) -> None:
        self.params = state.params
        arrays = check_arrays(state.arrays, state.params.hidden)
        prefix = "avg_" if state.params.averaging and arrays["norm"][0] > 0 else ""
        self.w1, self.b1, self.w2, self.b2 = (arrays[prefix + name] for name in ("w1", "b1", "w2", "b2"))
        if not all(np.isfinite(a).all() for a in (self.w1, self.b1, self.w2, self.b2)):
            raise ValueError("the state has non-finite weights")
        self._scale = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
        # Computed for the first picture; two racing requests would compute the same array (a benign race).
        self._learned_w1: np.ndarray | None = None

    def scores(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((images.shape[0], N_CLASSES), dtype=np.float64)
        for start in range(0, images.shape[0], CHUNK_ROWS):
            hidden = self._scale[images[start : start + CHUNK_ROWS]] @ self.w1
            hidden += self.b1
            np.maximum(hidden, 0.0, out=hidden)
            out[start : start + CHUNK_ROWS] = hidden @ self.w2 + self.b2
        return out

    def templates(self) -> tuple[np.ndarray, np.ndarray]:
        """The output layer mapped back through the hidden one: ``learned_w1 @ w2`` and ``b1 @ w2 + b2``.

        The network's linear part (exact for an image that leaves every unit on), from what the
        first layer learned: ink on a positive weight raises the digit's score through the units
        that vote for it. ``learned_w1`` is ``w1`` minus its seeded initial value, which pixels
        that were never inked keep: their random start says nothing about digits.
        """
        learned, w2 = self.features()
        weights = learned.astype(np.float64) @ w2.astype(np.float64)
        bias = self.b1.astype(np.float64) @ w2.astype(np.float64) + self.b2
        return weights, bias

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """(``w1`` minus its seeded initial value (784, H), ``w2`` (H, 10)): what each unit learned to detect."""
        if self._learned_w1 is None:
            self._learned_w1 = self.w1 - initial_w1(self.params.init_seed, self.params.hidden)
        return self._learned_w1, self.w2


def scorer_for(state: LearnerState) -> Scorer:
    """The scorer of a learned state; ValueError if its arrays are missing, misshapen or non-finite."""
    if state.params.rule == "mlp":
        return MLPScorer(state)
    return LinearScorer(state)


def served_linear_parameters(state: LearnerState) -> tuple[np.ndarray, np.ndarray]:
    """(weights pixel-major (784, 10), bias) that predictions use: the Polyak average if on."""
    arrays = state.arrays
    wt, bias = _array(arrays, "wt", (N_PIXELS, N_CLASSES)), _array(arrays, "bias", (N_CLASSES,))
    if state.params.averaging and state.n_samples > 0:
        norm = float(_array(arrays, "norm", (1,))[0])
        acc_wt, acc_bias = _array(arrays, "acc_wt", wt.shape), _array(arrays, "acc_bias", bias.shape)
        return wt - acc_wt / norm, bias - acc_bias / norm
    return wt, bias


def _array(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = arrays.get(name)
    if array is None or array.shape != shape:
        raise ValueError(f"state array {name!r} missing or of wrong shape")
    return np.asarray(array, dtype=np.float64)


def pixel_values(params: HyperParameters) -> np.ndarray:
    """Input value of each pixel byte 0..255: raw for the seed rule, ``p / 255`` otherwise."""
    values = np.arange(256, dtype=np.float64)
    return values if params.rule == "seed" else values / 255.0


def scores_to_proba(scores: np.ndarray, rule: str) -> np.ndarray:
    """Probabilities from raw scores; the most probable digit is always the highest-scoring one.

    Rules with a softmax output: the softmax of the scores. The seed (identity) rule: its scores
    estimate the one-hot target by least squares, so their positive parts are normalised (the
    softmax when none is positive), which preserves their order.
    """
    if rule != "seed":
        return softmax(scores)
    positive = np.maximum(scores, 0.0)
    totals = positive.sum(axis=1, keepdims=True)
    has_positive = totals[:, 0] > 0
    out = softmax(scores)
    out[has_positive] = positive[has_positive] / totals[has_positive]
    return out


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    proba: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return proba


__all__ = [
    "LinearScorer",
    "MLPScorer",
    "Scorer",
    "pixel_values",
    "scorer_for",
    "scores_to_proba",
    "served_linear_parameters",
]
