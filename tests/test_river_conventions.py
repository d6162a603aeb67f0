"""The river adapter follows river's conventions: its mini-batch API, and river's own estimator checks.

The checks river runs on every estimator are run here too. Those that use a dataset are given
digit images (dicts of the 784 pixel indices -> values) instead of river's tabular datasets: the
adapter is a pixel estimator, whose features can only be pixels. (The checks that drop features
then blank pixels, which the adapter must take in its stride.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from river import checks

from digitstream.learner import DeltaRuleClassifier, DeltaRuleLearner, HyperParameters

MODELS = {
    "softmax": lambda: DeltaRuleClassifier(),
    "seed": lambda: DeltaRuleClassifier(rule="seed"),
    "mlp": lambda: DeltaRuleClassifier(rule="mlp", hidden=16, init_seed=3),
}


def pixel_dataset(images: np.ndarray, labels: np.ndarray) -> list[tuple[dict[int, int], int]]:
    return [({j: int(v) for j, v in enumerate(image)}, int(y)) for image, y in zip(images, labels, strict=True)]


def river_checks(model: DeltaRuleClassifier, dataset: list[tuple[dict[int, int], int]]) -> list[tuple[str, Callable]]:
    """river's checks for ``model``, each dataset check bound to ``dataset`` (a fresh iterator per call)."""
    out: dict[str, Callable] = {}
    for check in checks.yield_checks(model):
        if isinstance(check, functools.partial) and "dataset" in check.keywords:
            func = check.func
            out[func.__name__] = functools.partial(_with_dataset, func, dataset)
        else:
            out[check.__name__] = check
    return sorted(out.items())


def _with_dataset(func: Callable, dataset: list, model: Any) -> None:
    func(model, dataset=iter(list(dataset)))


@pytest.mark.parametrize("rule", list(MODELS))
def test_rivers_own_estimator_checks_pass_on_digit_images(rule: str, mnist_train) -> None:
    images, labels = mnist_train
    dataset = pixel_dataset(images[:120], labels[:120])
    ran = []
    for name, check in river_checks(MODELS[rule](), dataset):
        check(MODELS[rule]())
        ran.append(name)
    # The generic checks and the dataset ones that apply to a mini-batch classifier all ran.
    assert {"check_learn_many_matches_learn_one", "check_predict_proba_many_matches_predict_proba_one",
            "check_emerging_features", "check_disappearing_features", "check_clone_is_independent",
            "check_pickling_supports_roundtrip", "check_classifier_tracks_seen_labels",
            "check_bounded_memory_growth"} <= set(ran)  # fmt: skip


def test_mini_batches_take_and_give_what_rivers_docs_say(mnist_train) -> None:
    images, labels = mnist_train
    X = pd.DataFrame(images[:50]).loc[:, lambda df: df.any()]  # pixel-index columns; blank columns left out
    y = pd.Series(labels[:50])
    model = DeltaRuleClassifier()
    assert model.learn_many(X, y) is None
    proba = model.predict_proba_many(X)
    assert isinstance(proba, pd.DataFrame) and list(proba.columns) == list(range(10))
    assert (proba.index == X.index).all()
    digits = model.predict_many(X)
    assert isinstance(digits, pd.Series) and (digits == proba.idxmax(axis="columns")).all()
    reference = DeltaRuleLearner(HyperParameters())
    reference.learn_many(images[:50], labels[:50])
    np.testing.assert_allclose(proba.to_numpy(), reference.predict_proba_many(images[:50]), rtol=1e-12)


def test_numpy_arrays_are_a_documented_extension_answered_in_numpy(mnist_train) -> None:
    images, labels = mnist_train
    model = DeltaRuleClassifier()
    before = model.learn_predict_many(images[:200], labels[:200])
    assert before.shape == (200,) and model.learner.n_samples == 200
    assert isinstance(model.predict_proba_many(images[:5]), np.ndarray)
    assert isinstance(model.predict_many(images[:5].reshape(5, 28, 28)), np.ndarray)


@pytest.mark.parametrize("column", ["colour", 784, -1, 3.5, True])
def test_features_other_than_pixels_are_refused_by_name(column: object) -> None:
    with pytest.raises(ValueError, match=r"pixel indices 0\.\.783"):
        DeltaRuleClassifier().predict_many(pd.DataFrame({column: [1, 2]}))
