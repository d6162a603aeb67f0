"""The delta-rule learner (pure: numpy in, numpy out)."""

from .model import DeltaRuleLearner, LearnerState, as_images, as_labels, scores_to_proba
from .params import RULES, SCHEDULES, HyperParameters, Rule, Schedule
from .river_api import DeltaRuleClassifier

__all__ = [
    "RULES",
    "SCHEDULES",
    "DeltaRuleClassifier",
    "DeltaRuleLearner",
    "HyperParameters",
    "LearnerState",
    "Rule",
    "Schedule",
    "as_images",
    "as_labels",
    "scores_to_proba",
]
