"""The delta-rule learner: seed fidelity, exactness under any batching, accuracy, state, river API."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitstream.learner import DeltaRuleClassifier, DeltaRuleLearner, HyperParameters
from digitstream.learner.reference import numpy_loop, pure_python_seed
from digitstream.snapshot import decode_snapshot, encode_snapshot, snapshot_of

SEED_SCORES_AFTER_5_EPOCHS_ON_IMAGE_0 = [
    0.0, 0.03036370905054081, 0.06072741810108162, 0.09109112715162263, 0.12145483620216324,
    1.1407872249800253, 0.18218225430324525, 0.21254596335378556, 0.24290967240432648, 0.2732733814548679,
]  # fmt: skip

RNG = np.random.default_rng(7)
RANDOM_IMAGES = (RNG.random((400, 784)) < 0.2) * RNG.integers(1, 256, (400, 784))
RANDOM_LABELS = RNG.integers(0, 10, 400)
ALL_RULES = [
    HyperParameters.for_rule("seed"),
    HyperParameters.for_rule("softmax"),
    HyperParameters.for_rule("softmax", averaging=False, schedule="constant", learning_rate=0.3),
    HyperParameters.for_rule("softmax", average_power=0.0, power=1.0, decay=50.0),
]


def seed_learner() -> DeltaRuleLearner:
    return DeltaRuleLearner(HyperParameters.for_rule("seed"))


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# -- the seed rule reproduces the original post ----------------------------------------------


def test_seed_rule_initialises_row_k_to_0_0001_times_k() -> None:
    weights = seed_learner().weights
    assert weights.shape == (10, 784)
    assert np.array_equal(weights, np.repeat(0.0001 * np.arange(10)[:, None], 784, axis=1))


def test_seed_rule_trained_5_epochs_on_image_0_gives_the_posts_scores(mnist_train) -> None:
    images, labels = mnist_train
    learner = seed_learner()
    for _ in range(5):
        learner.learn_many(images[:1], labels[:1])
    scores = learner.scores_many(images[:1])[0]
    np.testing.assert_allclose(scores, SEED_SCORES_AFTER_5_EPOCHS_ON_IMAGE_0, rtol=0, atol=1e-12)


def test_seed_rule_on_1000_images_for_5_epochs_reaches_the_posts_74_to_75_percent(mnist_train, mnist_test) -> None:
    images, labels = mnist_train
    learner = seed_learner()
    for _ in range(5):
        learner.learn_many(images[:1000], labels[:1000])
    accuracy = float(np.mean(learner.predict_many(mnist_test[0]) == mnist_test[1]))
    assert 0.74 <= accuracy <= 0.75


def test_seed_rule_equals_the_posts_pure_python_algorithm(mnist_train) -> None:
    images, labels = mnist_train
    expected = np.array(pure_python_seed(images[:30].tolist(), labels[:30].tolist(), epochs=2))
    learner = seed_learner()
    for _ in range(2):
        learner.learn_many(images[:30], labels[:30])
    assert relative_error(learner.weights, expected) < 1e-9


def test_seed_rule_equals_river_linear_regression_per_class(mnist_train) -> None:
    """Oracle from STYLE.md: the identity delta rule with rate eta is river's squared-loss SGD at eta/2."""
    from river import linear_model, optim

    images, labels = mnist_train
    regressors = [
        linear_model.LinearRegression(
            optimizer=optim.SGD(1e-7 / 2),
            intercept_lr=0.0,
            l2=0.0,
            initializer=optim.initializers.Constant(0.0001 * k),
            clip_gradient=1e300,
        )
        for k in range(10)
    ]
    learner = seed_learner()
    for image, label in zip(images[:40], labels[:40], strict=True):
        x = {j: float(v) for j, v in enumerate(image)}
        for k, regressor in enumerate(regressors):
            regressor.learn_one(x, 1.0 if k == label else 0.0)
    learner.learn_many(images[:40], labels[:40])
    river_weights = np.array([[r.weights.get(j, 0.0001 * k) for j in range(784)] for k, r in enumerate(regressors)])
    assert relative_error(learner.weights, river_weights) < 1e-9


# -- exact per-sample semantics ----------------------------------------------------------------


@pytest.mark.parametrize("params", ALL_RULES, ids=lambda p: f"{p.rule}-{p.schedule}-avg{p.averaging}")
def test_fast_kernel_equals_the_plain_numpy_definition(params: HyperParameters) -> None:
    learner = DeltaRuleLearner(params)
    predictions = learner.learn_many(RANDOM_IMAGES, RANDOM_LABELS)
    weights, bias, expected_predictions = numpy_loop(params, RANDOM_IMAGES, RANDOM_LABELS)
    assert relative_error(learner.weights, weights) < 1e-9
    assert relative_error(learner.bias, bias) < 1e-9 or not params.uses_bias
    assert np.mean(predictions == expected_predictions) > 0.99  # ties may round differently


@settings(max_examples=40, deadline=None)
@given(
    rule=st.sampled_from(range(len(ALL_RULES))),
    cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=12),
)
def test_any_batching_gives_exactly_the_one_at_a_time_model(rule: int, cuts: list[int]) -> None:
    params = ALL_RULES[rule]
    images, labels = RANDOM_IMAGES[:120], RANDOM_LABELS[:120]
    one_by_one = DeltaRuleLearner(params)
    expected_predictions = [one_by_one.learn_one(image, label) for image, label in zip(images, labels, strict=True)]
    batched = DeltaRuleLearner(params)
    bounds = [0, *sorted(set(cuts)), 120]
    predictions = np.concatenate(
        [batched.learn_many(images[a:b], labels[a:b]) for a, b in itertools.pairwise(bounds)]
    )
    assert batched.n_samples == one_by_one.n_samples == 120
    assert predictions.tolist() == expected_predictions
    for mine, theirs in zip(batched.state().arrays.values(), one_by_one.state().arrays.values(), strict=True):
        assert np.array_equal(mine, theirs)


def test_learn_many_returns_the_prediction_made_before_each_update() -> None:
    learner = DeltaRuleLearner()
    image = RANDOM_IMAGES[:1]
    before = learner.predict_one(image)
    twice = learner.learn_many(np.repeat(image, 60, axis=0), [3] * 60)
    assert twice[0] == before
    assert twice[-1] == 3


def test_learning_does_not_mutate_its_inputs() -> None:
    images, labels = RANDOM_IMAGES.copy(), RANDOM_LABELS.copy()
    DeltaRuleLearner().learn_many(images, labels)
    assert np.array_equal(images, RANDOM_IMAGES) and np.array_equal(labels, RANDOM_LABELS)


def test_inputs_of_28x28_and_of_other_integer_dtypes_are_accepted() -> None:
    a, b = DeltaRuleLearner(), DeltaRuleLearner()
    a.learn_many(RANDOM_IMAGES[:5].reshape(5, 28, 28).astype(np.int32), RANDOM_LABELS[:5])
    b.learn_many(RANDOM_IMAGES[:5].astype(np.uint8), RANDOM_LABELS[:5])
    assert np.array_equal(a.weights, b.weights)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 783)), [1, 2], "shape"),
        (np.full((1, 784), 256), [1], "0..255"),
        (np.full((1, 784), -1), [1], "0..255"),
        (np.full((1, 784), 0.5), [1], "whole numbers"),
        (np.zeros((2, 784)), [1], "labels"),
        (np.zeros((1, 784)), [10], "0..9"),
    ],
)
def test_invalid_inputs_are_rejected_with_a_clear_message(images, labels, message) -> None:
    learner = DeltaRuleLearner()
    with pytest.raises(ValueError, match=message):
        learner.learn_many(images, labels)
    assert learner.n_samples == 0


def test_a_far_too_large_rate_makes_the_model_non_finite_which_is_detectable() -> None:
    learner = DeltaRuleLearner(HyperParameters.for_rule("seed", learning_rate=1.0))
    learner.learn_many(RANDOM_IMAGES[:200], RANDOM_LABELS[:200])  # grows ~1e5x per sample
    assert not learner.is_finite()


# -- accuracy goals on one pass over the shared stream ----------------------------------------


def test_softmax_rule_one_pass_reaches_91_percent_test_and_89_5_prequential(mnist_train, mnist_test) -> None:
    images, labels = mnist_train
    learner = DeltaRuleLearner()
    predictions = learner.learn_many(images, labels)
    prequential = float(np.mean(predictions == labels))
    test = float(np.mean(learner.predict_many(mnist_test[0]) == mnist_test[1]))
    assert len(labels) == 22_699
    assert prequential >= 0.895
    assert test >= 0.910


def test_probabilities_are_distributions_for_both_rules(mnist_train) -> None:
    images, labels = mnist_train
    for params in (HyperParameters.for_rule("seed"), HyperParameters.for_rule("softmax")):
        learner = DeltaRuleLearner(params)
        learner.learn_many(images[:500], labels[:500])
        proba = learner.predict_proba_many(images[500:600])
        assert proba.shape == (100, 10)
        assert np.all(proba >= 0)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert np.array_equal(np.argmax(proba, axis=1), learner.predict_many(images[500:600]))


# -- state -----------------------------------------------------------------------------------


@pytest.mark.parametrize("params", ALL_RULES[:2], ids=lambda p: p.rule)
def test_state_round_trips_through_the_snapshot_format_bit_for_bit(params: HyperParameters) -> None:
    learner = DeltaRuleLearner(params)
    learner.learn_many(RANDOM_IMAGES[:200], RANDOM_LABELS[:200])
    restored = decode_snapshot(encode_snapshot(snapshot_of(learner, version=1, samples_learned=200, last_id="1-0")))
    clone = restored.learner()
    assert clone.params == learner.params and clone.n_samples == 200
    for mine, theirs in zip(learner.state().arrays.values(), clone.state().arrays.values(), strict=True):
        assert mine.tobytes() == theirs.tobytes()
    # ...and continuing from the restored state is exactly continuing the original.
    learner.learn_many(RANDOM_IMAGES[200:], RANDOM_LABELS[200:])
    clone.learn_many(RANDOM_IMAGES[200:], RANDOM_LABELS[200:])
    assert np.array_equal(learner.weights, clone.weights)


def test_hyper_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        HyperParameters(learning_rate=0.0)
    with pytest.raises(ValueError, match="rule"):
        HyperParameters(rule="perceptron")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        HyperParameters.from_json({"rule": "seed", "momentum": 0.9})


# -- river estimator API -----------------------------------------------------------------------


def test_the_learner_runs_under_rivers_progressive_validation(mnist_train) -> None:
    from river import evaluate, metrics

    images, labels = mnist_train
    stream = [
        ({j: int(v) for j, v in enumerate(image) if v}, int(y))
        for image, y in zip(images[:300], labels[:300], strict=True)
    ]
    model = DeltaRuleClassifier()
    metric = evaluate.progressive_val_score(stream, model, metrics.Accuracy())
    # river's prequential accuracy equals the one learn_many reports on the same stream.
    reference = DeltaRuleLearner().learn_many(images[:300], labels[:300])
    assert metric.get() == pytest.approx(float(np.mean(reference == labels[:300])))
    assert model.learner.n_samples == 300


def test_river_dict_and_mini_batch_methods_agree_with_the_numpy_api(mnist_train) -> None:
    images, labels = mnist_train
    model = DeltaRuleClassifier(rule="seed")
    assert model.learn_many(images[:100], labels[:100]) is None
    x = {j: int(v) for j, v in enumerate(images[100])}
    proba = model.predict_proba_one(x)
    assert set(proba) == set(range(10))
    assert model.predict_one(x) == int(model.predict_many(images[100:101])[0]) == max(proba, key=proba.get)
    np.testing.assert_allclose(list(proba.values()), model.predict_proba_many(images[100:101])[0])
    with pytest.raises(ValueError, match="pixel"):
        model.predict_one({"colour": 3})
    assert model.clone().learner.n_samples == 0


def test_inputs_from_bytes_use_the_vectorised_kernels_compiled_up_front() -> None:
    """np.frombuffer arrays are read-only: a new numba signature would compile without SIMD."""
    from digitstream.learner import kernels

    learner = DeltaRuleLearner()
    compiled = len(kernels.learn_loop.signatures), len(kernels.score_loop.signatures)
    images = np.frombuffer(RANDOM_IMAGES[:20].astype(np.uint8).tobytes(), dtype=np.uint8).reshape(20, 784)
    learner.learn_many(images, RANDOM_LABELS[:20])
    learner.predict_many(images)
    learner.learn_many(RANDOM_IMAGES[20:40], RANDOM_LABELS[20:40])
    assert (len(kernels.learn_loop.signatures), len(kernels.score_loop.signatures)) == compiled
