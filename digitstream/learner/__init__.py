"""The learners of the delta rules, linear and with a hidden layer (pure: numpy in, numpy out).

Importing this package is cheap: the compiled learner (numba) and the river adapter load on first
use of their names, so the settings, the snapshot format and the API process, which need only
``params``, ``state`` and ``scoring`` (numpy), never load numba or river.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .factory import Learner, learner_from_state, new_learner
from .params import RULES, SCHEDULES, HyperParameters, Rule, Schedule
from .scoring import Scorer, scorer_for, scores_to_proba
from .state import LearnerState

if TYPE_CHECKING:
    from .mlp import MLPLearner
    from .model import DeltaRuleLearner, as_images, as_labels
    from .river_api import DeltaRuleClassifier

_LAZY = {
    "DeltaRuleLearner": ".model",
    "MLPLearner": ".mlp",
    "as_images": ".model",
    "as_labels": ".model",
    "DeltaRuleClassifier": ".river_api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "RULES",
    "SCHEDULES",
    "DeltaRuleClassifier",
    "DeltaRuleLearner",
    "HyperParameters",
    "Learner",
    "LearnerState",
    "MLPLearner",
    "Rule",
    "Schedule",
    "Scorer",
    "as_images",
    "as_labels",
    "learner_from_state",
    "new_learner",
    "scorer_for",
    "scores_to_proba",
]
