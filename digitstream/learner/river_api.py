"""The learner as a river estimator, so river's evaluation tools and metrics run on it.

It is a **pixel estimator**: a feature is a pixel, named by its index 0..783 (an int or its
string), valued 0..255; absent features are blank pixels (0), as in river's sparse dicts, so
features that come and go are fine. Any other feature name or value raises ``ValueError``: a
model of handwritten digits has no use for a column called "age".

Mini-batches follow river's ``MiniBatchClassifier``: ``learn_many(X, y)`` returns None,
``predict_proba_many`` returns a DataFrame (one column per digit) and ``predict_many`` a Series,
for a DataFrame ``X`` whose columns are pixel indices. One documented extension: a numpy array
``X`` of shape (n, 784) or (n, 28, 28) is taken as is and answered with numpy arrays.
:meth:`DeltaRuleClassifier.learn_predict_many` also returns each sample's prediction made before
its update (the prequential predictions the worker scores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from river import base

if TYPE_CHECKING:
    import pandas as pd

from .factory import new_learner
from .model import N_PIXELS, as_images
from .params import HyperParameters, Rule, Schedule


def dict_to_pixels(x: dict[Any, Any]) -> np.ndarray:
    """River's feature dict -> one (1, 784) image. Keys: pixel index 0..783 (int or its str);
    absent pixels are 0, as in river's sparse dicts."""
    row = np.zeros((1, N_PIXELS), dtype=np.float64)
    for key, value in x.items():
        row[0, _pixel_index(key)] = value
    return as_images(row)


class DeltaRuleClassifier(base.MiniBatchClassifier):
    """river classifier of digit images backed by the learner of ``rule`` (the same exact per-sample updates).

    A pixel estimator (see the module docstring): features are pixel indices 0..783 valued 0..255.

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

    @property
    def _tags(self) -> set[str]:
        return {base.tags.POSITIVE_INPUT}  # pixel values are 0..255

    def learn_many(self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray) -> None:
        """Learn a mini-batch in order (exactly as ``learn_one`` on each row)."""
        self.learn_predict_many(X, y)

    def learn_predict_many(self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray) -> np.ndarray:
        """Learn a mini-batch in order; each sample's digit predicted before its update, (n,) int8."""
        labels = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
        return self.learner.learn_many(_pixels(X), labels.astype(np.int64))

    def predict_proba_many(self, X: pd.DataFrame | np.ndarray) -> Any:
        """Probabilities of the digits 0..9: a DataFrame (one column per digit), or (n, 10) for an array."""
        proba = self.learner.predict_proba_many(_pixels(X))
        if isinstance(X, np.ndarray):
            return proba
        import pandas as pd

        return pd.DataFrame(proba, index=X.index, columns=list(range(10)))

    def predict_many(self, X: pd.DataFrame | np.ndarray) -> Any:
        """The predicted digits: a Series, or an (n,) array for an array."""
        digits = self.learner.predict_many(_pixels(X))
        if isinstance(X, np.ndarray):
            return digits
        import pandas as pd

        return pd.Series(digits, index=X.index)


def _pixels(X: Any) -> np.ndarray:
    """(n, 784) uint8 images of a DataFrame with pixel-index columns (absent or NaN: 0), or of an array."""
    if isinstance(X, np.ndarray):
        return as_images(X)
    images = np.zeros((len(X), N_PIXELS), dtype=np.float64)
    for column in X.columns:
        images[:, _pixel_index(column)] = np.nan_to_num(X[column].to_numpy(dtype=np.float64), nan=0.0)
    return as_images(images)


def _pixel_index(key: Any) -> int:
    try:
        j = int(key)
    except (TypeError, ValueError):
        raise ValueError(f"feature names must be pixel indices 0..783, got {key!r}") from None
    if not 0 <= j < N_PIXELS or isinstance(key, bool | float):
        raise ValueError(f"feature names must be pixel indices 0..783, got {key!r}")
    return j
