"""The ``mlp`` learner: one ReLU hidden layer and a softmax output, learned one sample at a time (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels, mlp_kernels
from .mlp_init import ARRAY_NAMES, N_CLASSES, check_arrays, initial_arrays
from .model import as_images, as_labels
from .params import HyperParameters
from .scoring import scores_to_proba
from .state import LearnerState


class MLPLearner:
    """The generalised delta rule (back-propagation) with one hidden layer, exact per sample.

    After N samples the model equals the N per-sample updates applied in order, whatever batches
    they arrived in: every batch runs the same compiled per-sample loop (``mlp_kernels``).

    Examples
    --------
    >>> import numpy as np
    >>> learner = MLPLearner(HyperParameters.for_rule("mlp", hidden=32))
    >>> images = np.zeros((3, 784), dtype=np.uint8); images[:, 300:340] = 200
    >>> learner.learn_many(images, [4, 4, 4]).shape
    (3,)
    >>> learner.predict_one(images[0])
    4
    """

    def __init__(self, params: HyperParameters | None = None) -> None:
        params = params or HyperParameters.for_rule("mlp")
        if params.rule != "mlp":
            raise ValueError(f"MLPLearner learns the mlp rule, not {params.rule!r}")
        mlp_kernels.ensure_compiled()
        self.params = params
        self.n_samples = 0
        self._arrays = initial_arrays(params)
        self._scale = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)

    # -- learning ---------------------------------------------------------------------------
    def learn_many(self, images: Any, labels: Any) -> np.ndarray:
        """Learn the samples in order; returns the digit each was predicted *before* its update."""
        x = as_images(images)
        y = as_labels(labels, x.shape[0])
        predictions = np.empty(x.shape[0], dtype=np.int8)
        p, a = self.params, self._arrays
        mlp_kernels.learn_loop(
            a["w1"], a["b1"], a["w2"], a["b2"], a["avg_w1"], a["avg_b1"], a["avg_w2"], a["avg_b2"], a["norm"],
            x, x.view(np.uint64), y, self._scale, float(p.learning_rate),
            kernels.SCHEDULE_CONSTANT if p.schedule == "constant" else kernels.SCHEDULE_INVERSE_SCALING,
            float(p.decay), float(p.power), p.averaging, float(p.average_power), p.average_every,
            self.n_samples, predictions,
        )  # fmt: skip
        self.n_samples += x.shape[0]
        return predictions

    def learn_one(self, image: Any, label: int) -> int:
        """Learn one sample; returns the digit it was predicted before the update."""
        return int(self.learn_many(np.asarray(image).reshape(1, -1), [label])[0])

    # -- prediction -------------------------------------------------------------------------
    def served_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(w1, b1, w2, b2) that predictions use: the averaged copy once one exists."""
        a = self._arrays
        prefix = "avg_" if self.params.averaging and a["norm"][0] > 0 else ""
        return a[prefix + "w1"], a[prefix + "b1"], a[prefix + "w2"], a[prefix + "b2"]

    def scores_many(self, images: Any) -> np.ndarray:
        """Output scores (before the softmax) of the served weights, shape (n, 10)."""
        x = as_images(images)
        out = np.empty((x.shape[0], N_CLASSES), dtype=np.float64)
        mlp_kernels.score_loop(*self.served_arrays(), x, x.view(np.uint64), self._scale, out)
        return out

    def predict_proba_many(self, images: Any) -> np.ndarray:
        """Class probabilities (the softmax of the scores), shape (n, 10)."""
        return scores_to_proba(self.scores_many(images), self.params.rule)

    def predict_many(self, images: Any) -> np.ndarray:
        """Predicted digits (first maximum score on ties), shape (n,)."""
        predicted: np.ndarray = np.argmax(self.scores_many(images), axis=1)
        return predicted

    def predict_one(self, image: Any) -> int:
        return int(self.predict_many(np.asarray(image).reshape(1, -1))[0])

    def is_finite(self) -> bool:
        """False once a too-large learning rate made any weight inf or NaN."""
        return all(bool(np.isfinite(array).all()) for array in self._arrays.values())

    # -- state ------------------------------------------------------------------------------
    def state(self) -> LearnerState:
        """A copy of the full state: learned and served arrays, the averaging norm, the count."""
        return LearnerState(self.params, self.n_samples, {name: self._arrays[name].copy() for name in ARRAY_NAMES})

    @classmethod
    def from_state(cls, state: LearnerState) -> MLPLearner:
        """Rebuild a learner that continues exactly where ``state`` left off."""
        if state.n_samples < 0:
            raise ValueError("n_samples must be >= 0")
        learner = cls(state.params)
        for name, array in check_arrays(state.arrays, state.params.hidden).items():
            learner._arrays[name][...] = array
        learner.n_samples = state.n_samples
        return learner
