"""The mlp rule: the numpy definition, exactness under any batching, seeded start, state, scoring, accuracy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitstream.learner import (
    DeltaRuleClassifier,
    HyperParameters,
    MLPLearner,
    learner_from_state,
    new_learner,
    scorer_for,
)
from digitstream.learner.mlp_init import initial_arrays, splitmix64
from digitstream.learner.reference import numpy_mlp
from digitstream.snapshot import decode_snapshot, encode_snapshot, snapshot_of

RNG = np.random.default_rng(11)
RANDOM_IMAGES = ((RNG.random((300, 784)) < 0.2) * RNG.integers(1, 256, (300, 784))).astype(np.uint8)
RANDOM_LABELS = RNG.integers(0, 10, 300)
CONFIGS = [
    HyperParameters.for_rule("mlp", hidden=48),
    HyperParameters.for_rule("mlp", hidden=48, average_every=7, average_power=0.0, init_seed=5),
    HyperParameters.for_rule("mlp", hidden=33, averaging=False, schedule="constant", learning_rate=0.1),
    HyperParameters.for_rule("mlp", hidden=16, average_every=1, decay=50.0, power=1.0),
]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(np.max(np.abs(b64)), 1e-300))


# -- the definition -----------------------------------------------------------------------------


@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: f"h{p.hidden}-avg{p.averaging}-every{p.average_every}")
def test_compiled_kernel_equals_the_plain_numpy_definition(params: HyperParameters) -> None:
    learner = MLPLearner(params)
    predictions = learner.learn_many(RANDOM_IMAGES, RANDOM_LABELS)
    arrays, expected_predictions = numpy_mlp(params, RANDOM_IMAGES, RANDOM_LABELS)
    state = learner.state().arrays
    assert set(state) == set(arrays)
    for name, expected in arrays.items():  # float32 added in another order: equal to a few roundings
        assert relative_error(state[name], expected) < 1e-5, name
    assert np.mean(predictions == expected_predictions) > 0.99  # near-ties may round the other way


@settings(max_examples=40, deadline=None)
@given(
    config=st.sampled_from(range(len(CONFIGS))),
    cuts=st.lists(st.integers(min_value=0, max_value=90), max_size=12),
)
def test_any_batching_gives_exactly_the_one_at_a_time_model(config: int, cuts: list[int]) -> None:
    params = CONFIGS[config]
    images, labels = RANDOM_IMAGES[:90], RANDOM_LABELS[:90]
    one_by_one = MLPLearner(params)
    expected_predictions = [one_by_one.learn_one(image, label) for image, label in zip(images, labels, strict=True)]
    batched = MLPLearner(params)
    bounds = [0, *sorted(set(cuts)), 90]
    predictions = np.concatenate([batched.learn_many(images[a:b], labels[a:b]) for a, b in itertools.pairwise(bounds)])
    assert batched.n_samples == one_by_one.n_samples == 90
    assert predictions.tolist() == expected_predictions
    for name, array in one_by_one.state().arrays.items():
        assert batched.state().arrays[name].tobytes() == array.tobytes(), name


def test_predictions_before_learning_come_from_the_served_average_once_there_is_one() -> None:
    params = HyperParameters.for_rule("mlp", hidden=32, average_every=10)
    learner = MLPLearner(params)
    learner.learn_many(RANDOM_IMAGES[:40], RANDOM_LABELS[:40])
    served_before = learner.predict_many(RANDOM_IMAGES[40:49])  # samples 41..49: no averaging step in between
    assert learner.learn_many(RANDOM_IMAGES[40:49], RANDOM_LABELS[40:49]).tolist() == served_before.tolist()


# -- the seeded start ---------------------------------------------------------------------------


def test_splitmix64_is_the_published_generator() -> None:
    # The first outputs of SplitMix64 seeded with 0 (Steele, Lea and Flood 2014; Vigna's splitmix64.c).
    assert [int(v) for v in splitmix64(0, 3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_a_model_starts_from_its_seed_alone() -> None:
    a = initial_arrays(HyperParameters.for_rule("mlp", hidden=64, init_seed=3))
    b = initial_arrays(HyperParameters.for_rule("mlp", hidden=64, init_seed=3))
    c = initial_arrays(HyperParameters.for_rule("mlp", hidden=64, init_seed=4))
    for name in a:
        assert a[name].tobytes() == b[name].tobytes()
    assert not np.array_equal(a["w1"], c["w1"])
    bound = np.sqrt(6.0 / 784)  # He-uniform for the ReLU layer
    assert -bound <= a["w1"].min() < -0.9 * bound and 0.9 * bound < a["w1"].max() < bound
    assert abs(float(a["w1"].mean())) < 0.01 * bound and not a["b1"].any() and not a["b2"].any()
    assert np.array_equal(a["avg_w1"], a["w1"]) and a["norm"][0] == 0.0


def test_two_learners_with_one_configuration_learn_the_same_model() -> None:
    params = HyperParameters.for_rule("mlp", hidden=40, init_seed=9)
    first, second = MLPLearner(params), MLPLearner(params)
    first.learn_many(RANDOM_IMAGES, RANDOM_LABELS)
    second.learn_many(RANDOM_IMAGES, RANDOM_LABELS)
    for name, array in first.state().arrays.items():
        assert second.state().arrays[name].tobytes() == array.tobytes()


# -- state, snapshots and scoring -----------------------------------------------------------------


def test_state_round_trips_through_the_snapshot_format_bit_for_bit() -> None:
    learner = new_learner(HyperParameters.for_rule("mlp", hidden=24, average_every=9))
    learner.learn_many(RANDOM_IMAGES[:200], RANDOM_LABELS[:200])
    fields = encode_snapshot(snapshot_of(learner, version=1, samples_learned=200, last_id="1-0"))
    restored = decode_snapshot(fields)
    assert set(restored.arrays) == {"w1", "b1", "w2", "b2", "avg_w1", "avg_b1", "avg_w2", "avg_b2", "norm"}
    clone = restored.learner()
    assert isinstance(clone, MLPLearner) and clone.params == learner.params and clone.n_samples == 200
    for name, array in learner.state().arrays.items():
        assert clone.state().arrays[name].tobytes() == array.tobytes(), name
    # ...and continuing from the restored state is exactly continuing the original.
    learner.learn_many(RANDOM_IMAGES[200:], RANDOM_LABELS[200:])
    clone.learn_many(RANDOM_IMAGES[200:], RANDOM_LABELS[200:])
    for name, array in learner.state().arrays.items():
        assert clone.state().arrays[name].tobytes() == array.tobytes(), name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("avg_w2"), "avg_w2"),
        (lambda a: a.update(w1=np.zeros((784, 7), np.float32)), "w1"),
        (lambda a: a.update(b1=a["b1"].astype(np.float64)), "float32"),
    ],
)
def test_a_damaged_state_is_refused_with_the_array_named(change, message) -> None:
    learner = MLPLearner(HyperParameters.for_rule("mlp", hidden=8))
    state = learner.state()
    change(state.arrays)
    with pytest.raises(ValueError, match=message):
        learner_from_state(state)
    with pytest.raises(ValueError, match=message):
        scorer_for(state)


def test_the_numpy_scorer_serves_what_the_learner_predicts(mnist_train) -> None:
    images, labels = mnist_train
    learner = MLPLearner(HyperParameters.for_rule("mlp", hidden=64))
    learner.learn_many(images[:2000], labels[:2000])
    scorer = scorer_for(learner.state())
    mine, theirs = scorer.scores(images[2000:3000].reshape(1000, 784)), learner.scores_many(images[2000:3000])
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)  # float32, numpy's order of addition
    assert np.mean(np.argmax(mine, axis=1) == np.argmax(theirs, axis=1)) > 0.999


def test_the_scorer_pictures_what_was_learned_not_the_random_start(mnist_train) -> None:
    images, labels = mnist_train
    learner = MLPLearner(HyperParameters.for_rule("mlp", hidden=32))
    never_inked = (images[:1500].reshape(1500, 784) == 0).all(axis=0)
    learner.learn_many(images[:1500], labels[:1500])
    scorer = scorer_for(learner.state())
    learned, w2 = scorer.features()
    assert learned.shape == (784, 32) and w2.shape == (32, 10)
    assert not learned[never_inked].any() and learned[~never_inked].any()
    templates, bias = scorer.templates()
    assert templates.shape == (784, 10) and bias.shape == (10,)
    np.testing.assert_allclose(templates, learned.astype(np.float64) @ w2.astype(np.float64), rtol=1e-9)
    assert scorer_for(new_learner(HyperParameters.for_rule("softmax")).state()).features() is None


# -- hyper-parameters ---------------------------------------------------------------------------


def test_mlp_hyper_parameters_are_validated_and_kept_out_of_the_linear_rules() -> None:
    with pytest.raises(ValueError, match="hidden"):
        HyperParameters.for_rule("mlp", hidden=0)
    with pytest.raises(ValueError, match="apply to the mlp rule only"):
        HyperParameters.for_rule("softmax", hidden=64)
    with pytest.raises(ValueError, match="init_seed"):
        HyperParameters.for_rule("mlp", init_seed=-1)
    with pytest.raises(ValueError, match="average_every"):
        HyperParameters.for_rule("mlp", average_every=0)
    with pytest.raises(ValueError, match="hidden"):
        HyperParameters.for_rule("mlp", hidden=True)  # a bool is not a size
    mlp = HyperParameters.for_rule("mlp", hidden=128, init_seed=7)
    assert HyperParameters.from_json(mlp.to_json()) == mlp
    assert {"hidden": 128, "init_seed": 7}.items() <= mlp.to_json().items()
    # The linear rules' JSON is what it was before the mlp rule existed: old snapshots read back equal.
    softmax = HyperParameters.for_rule("softmax")
    assert "hidden" not in softmax.to_json()
    old = {"rule": "softmax", "learning_rate": 0.05, "schedule": "inverse_scaling", "decay": 3000.0, "power": 0.5,
           "averaging": True, "average_power": 2.0}  # fmt: skip
    assert HyperParameters.from_json(old) == softmax


# -- misc ---------------------------------------------------------------------------------------


def test_an_absurd_rate_overflows_float32_which_is_detectable() -> None:
    # A merely large rate does not diverge: the ReLU units it pushes negative switch off and stop
    # learning, and the softmax error stays below the rate. Overflowing float32 takes an absurd one.
    large = MLPLearner(HyperParameters.for_rule("mlp", hidden=16, learning_rate=1e4, schedule="constant"))
    large.learn_many(RANDOM_IMAGES[:100], RANDOM_LABELS[:100])
    assert large.is_finite()
    absurd = MLPLearner(HyperParameters.for_rule("mlp", hidden=16, learning_rate=1e30, schedule="constant"))
    absurd.learn_many(RANDOM_IMAGES[:100], RANDOM_LABELS[:100])
    assert not absurd.is_finite()


def test_inputs_from_bytes_use_the_kernels_compiled_up_front() -> None:
    """np.frombuffer arrays are read-only: a new numba signature would compile without SIMD."""
    from digitstream.learner import mlp_kernels

    learner = MLPLearner(HyperParameters.for_rule("mlp", hidden=16))
    compiled = len(mlp_kernels.learn_loop.signatures), len(mlp_kernels.score_loop.signatures)
    images = np.frombuffer(RANDOM_IMAGES[:20].tobytes(), dtype=np.uint8).reshape(20, 784)
    learner.learn_many(images, RANDOM_LABELS[:20])
    learner.predict_many(images)
    assert (len(mlp_kernels.learn_loop.signatures), len(mlp_kernels.score_loop.signatures)) == compiled


def test_the_river_adapter_learns_the_mlp_rule(mnist_train) -> None:
    from river import evaluate, metrics

    images, labels = mnist_train
    stream = [
        ({j: int(v) for j, v in enumerate(image) if v}, int(y))
        for image, y in zip(images[:300], labels[:300], strict=True)
    ]
    model = DeltaRuleClassifier(rule="mlp", hidden=32, init_seed=2)
    metric = evaluate.progressive_val_score(stream, model, metrics.Accuracy())
    reference = MLPLearner(HyperParameters.for_rule("mlp", hidden=32, init_seed=2)).learn_many(
        images[:300], labels[:300]
    )
    assert metric.get() == pytest.approx(float(np.mean(reference == labels[:300])))
    assert model.learner.params.hidden == 32 and model.learner.n_samples == 300
    assert model.clone().learner.n_samples == 0


# -- the goals of one pass over the shared stream ----------------------------------------------------


def test_one_pass_reaches_96_percent_test_and_93_5_prequential(mnist_train, mnist_test) -> None:
    images, labels = mnist_train
    learner = new_learner(HyperParameters.for_rule("mlp"))
    prequential = float(np.mean(learner.learn_many(images, labels) == labels))
    test = float(np.mean(learner.predict_many(mnist_test[0]) == mnist_test[1]))
    assert len(labels) == 22_699
    assert prequential >= 0.935
    assert test >= 0.960
