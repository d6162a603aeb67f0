"""Which learner learns a rule: the one place that maps hyper-parameters (or a saved state) to a learner.

Importing this module is cheap; the compiled learners (numba) load when one is first built.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .params import HyperParameters
from .state import LearnerState


class Learner(Protocol):
    """What the worker, the snapshots and the benchmarks need of a learner, whatever its rule."""

    params: HyperParameters
    n_samples: int

    def learn_many(self, images: Any, labels: Any) -> np.ndarray:
        """Learn in order; returns the digit each sample was predicted before its update."""
        ...

    def learn_one(self, image: Any, label: int) -> int: ...

    def scores_many(self, images: Any) -> np.ndarray: ...

    def predict_proba_many(self, images: Any) -> np.ndarray: ...

    def predict_many(self, images: Any) -> np.ndarray: ...

    def predict_one(self, image: Any) -> int: ...

    def is_finite(self) -> bool: ...

    def state(self) -> LearnerState:
        """A copy of everything needed to continue exactly."""
        ...


def new_learner(params: HyperParameters | None = None) -> Learner:
    """A fresh learner of ``params.rule`` (the default rule's when None)."""
    params = params or HyperParameters()
    if params.rule == "mlp":
        from .mlp import MLPLearner

        return MLPLearner(params)
    from .model import DeltaRuleLearner

    return DeltaRuleLearner(params)


def learner_from_state(state: LearnerState) -> Learner:
    """The learner that continues exactly where ``state`` left off; ValueError if the state is unusable."""
    if state.params.rule == "mlp":
        from .mlp import MLPLearner

        return MLPLearner.from_state(state)
    from .model import DeltaRuleLearner

    return DeltaRuleLearner.from_state(state)
