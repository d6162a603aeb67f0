"""Scoring a learned state with numpy alone: what the API process serves (it never loads numba).

A :class:`Scorer` is built once per snapshot from a :class:`~digitstream.learner.state.LearnerState`
and never mutated, so concurrent requests can share it. Its scores equal the compiled learner's up
to floating-point summation order (the kernels add only the inked pixels, numpy adds all of them).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

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


def scorer_for(state: LearnerState) -> Scorer:
    """The scorer of a learned state; ValueError if its arrays are missing, misshapen or non-finite."""
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


__all__ = ["LinearScorer", "Scorer", "pixel_values", "scorer_for", "scores_to_proba", "served_linear_parameters"]
