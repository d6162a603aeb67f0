"""The learner as a river estimator, so river's evaluation tools and metrics run on it."""

from __future__ import annotations

from typing import Any

import numpy as np
from river import base

from .factory import new_learner
from .model import N_PIXELS, as_images
from .params import HyperParameters, Rule, Schedule


def dict_to_pixels(x: dict[Any, Any]) -> np.ndarray:
    """River's feature dict -> one (1, 784) image. Keys: pixel index 0..783 (int or its str);
    absent pixels are 0, as in river's sparse dicts."""
    row = np.zeros((1, N_PIXELS), dtype=np.int64)
    for key, value in x.items():
        try:
            j = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"feature names must be pixel indices 0..783, got {key!r}") from None
        if not 0 <= j < N_PIXELS:
            raise ValueError(f"pixel index out of range 0..783: {key!r}")
        row[0, j] = value
    return as_images(row)


class DeltaRuleClassifier(base.MiniBatchClassifier):
    """river classifier backed by the project's learner of ``rule`` (same exact per-sample updates).

    ``rule="mlp"`` learns the network with a hidden layer (``hidden`` units, initial weights from
    ``init_seed``); the other parameters default to the rule's own.

    Examples
    --------
    >>> from river import evaluate, metrics
    >>> stream = [({i: (7 * i + d * 31) % 256 for i in range(784)}, d) for d in range(10)] * 3
    >>> model = DeltaRuleClassifier()
    >>> evaluate.progressive_val_score(stream, model, metrics.Accuracy())  # doctest: +ELLIPSIS
    Accuracy: ...
    >>> model.learner.n_samples
    30
    """

    def __init__(
        self,
        rule: Rule = "softmax",
        learning_rate: float | None = None,
        schedule: Schedule | None = None,
        decay: float | None = None,
        power: float | None = None,
        averaging: bool | None = None,
        average_power: float | None = None,
        hidden: int | None = None,
        init_seed: int | None = None,
        average_every: int | None = None,
    ) -> None:
        self.rule = rule
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.decay = decay
        self.power = power
        self.averaging = averaging
        self.average_power = average_power
        self.hidden = hidden
        self.init_seed = init_seed
        self.average_every = average_every
        params = HyperParameters.for_rule(
            rule, learning_rate=learning_rate, schedule=schedule, decay=decay, power=power,
            averaging=averaging, average_power=average_power, hidden=hidden, init_seed=init_seed,
            average_every=average_every,
        )  # fmt: skip
        self.learner = new_learner(params)

    @property
    def _multiclass(self) -> bool:
        return True

    def learn_one(self, x: dict[Any, Any], y: Any) -> None:
        self.learner.learn_many(dict_to_pixels(x), [int(y)])

    def predict_proba_one(self, x: dict[Any, Any], **kwargs: Any) -> dict[Any, float]:
        proba = self.learner.predict_proba_many(dict_to_pixels(x))[0]
        return {k: float(p) for k, p in enumerate(proba)}

    def predict_one(self, x: dict[Any, Any], **kwargs: Any) -> int:
        return int(self.learner.predict_many(dict_to_pixels(x))[0])

    def learn_many(self, X: Any, y: Any) -> np.ndarray:  # type: ignore[override]
        """Learn a mini-batch in order; returns each sample's prediction made before its update."""
        return self.learner.learn_many(_matrix(X), _vector(y))

    def predict_proba_many(self, X: Any) -> np.ndarray:
        return self.learner.predict_proba_many(_matrix(X))

    def predict_many(self, X: Any) -> np.ndarray:
        return self.learner.predict_many(_matrix(X))


def _matrix(X: Any) -> Any:
    return X.to_numpy() if hasattr(X, "to_numpy") else X


def _vector(y: Any) -> Any:
    return y.to_numpy() if hasattr(y, "to_numpy") else y
