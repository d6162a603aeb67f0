"""The service serving an mlp model (numpy only): predictions, GET /model, the templates, the hidden features."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from digitstream.learner import DeltaRuleLearner, MLPLearner
from digitstream.learner.mlp_init import initial_arrays
from tests.service_support import LiveServer, live, make_app, trained, trained_mlp, write  # noqa: F401


@pytest.fixture
def live_mlp(make_app: Callable[..., LiveServer], write: Callable[..., int], trained_mlp: MLPLearner) -> LiveServer:
    version = write(trained_mlp)
    server = make_app()
    server.wait_for_version(version)
    return server


def learned_layers(learner: MLPLearner) -> tuple[np.ndarray, np.ndarray]:
    """What the served (averaged) first layer learned since its seeded start, and the served output layer."""
    arrays = learner.state().arrays
    return arrays["avg_w1"] - initial_arrays(learner.params)["w1"], arrays["avg_w2"]


def test_predictions_are_the_learners(
    live_mlp: LiveServer, trained_mlp: MLPLearner, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test[0][:200]
    binary = {"content-type": "application/octet-stream"}
    batch = live_mlp.post("/predict/batch", content=images.tobytes(), headers=binary)
    assert batch.status_code == 200, batch.text
    body = batch.json()
    expected = trained_mlp.predict_proba_many(images)
    assert body["digits"] == trained_mlp.predict_many(images).tolist()
    np.testing.assert_allclose(body["probabilities"], expected, atol=1e-5)  # float32: numpy's order of addition
    single = live_mlp.predict(images[0])
    assert single["digit"] == trained_mlp.predict_one(images[0]) and single["samples_learned"] == 3000


def test_get_model_reports_the_rule_and_its_hyper_parameters(live_mlp: LiveServer, trained_mlp: MLPLearner) -> None:
    info = live_mlp.get("/model").json()
    assert info["rule"] == "mlp"
    assert info["params"] == trained_mlp.params.to_json()
    assert {"hidden": 256, "init_seed": 0, "average_every": 25}.items() <= info["params"].items()


def test_the_templates_are_the_output_layer_mapped_back_through_what_the_first_layer_learned(
    live_mlp: LiveServer, trained_mlp: MLPLearner
) -> None:
    body = live_mlp.get("/model/weights").json()
    assert body["rule"] == "mlp"
    learned, w2 = learned_layers(trained_mlp)
    expected = (learned.astype(np.float64) @ w2.astype(np.float64)).T
    np.testing.assert_allclose(body["weights"], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    png = Image.open(io.BytesIO(live_mlp.get("/model/weights.png", params={"scale": 1}).content))
    assert png.size == (10 * 30 - 2, 28)


def test_the_hidden_features_are_the_most_important_units_as_28x28_maps(
    live_mlp: LiveServer, trained_mlp: MLPLearner
) -> None:
    answer = live_mlp.get("/model/features", params={"count": 12})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-cache"
    body = answer.json()
    assert (body["version"], body["rule"], body["hidden"], len(body["units"])) == (1, "mlp", 256, 12)
    learned, w2 = learned_layers(trained_mlp)
    importance = np.linalg.norm(learned, axis=0) * np.linalg.norm(w2, axis=1)
    assert [u["unit"] for u in body["units"]] == np.argsort(-importance)[:12].tolist()
    for unit in body["units"]:
        u = unit["unit"]
        levels = np.array(unit["input"])
        assert levels.shape == (784,) and np.abs(levels).max() == 127
        np.testing.assert_allclose(levels * unit["peak"] / 127, learned[:, u], atol=unit["peak"] / 254 * 1.001)
        np.testing.assert_allclose(unit["output"], w2[u], rtol=1e-6)
        assert unit["votes_for"] == int(np.argmax(w2[u])) and unit["votes_against"] == int(np.argmin(w2[u]))
    picture = live_mlp.get("/model/features.png", params={"count": 30, "scale": 2})
    assert picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).size == (2 * (12 * 30 - 2), 2 * (3 * 30 - 2))  # 12 a row


@pytest.mark.parametrize("count", [0, 65, "many"])
def test_the_feature_count_is_bounded(live_mlp: LiveServer, count: object) -> None:
    for path in ("/model/features", "/model/features.png"):
        answer = live_mlp.get(path, params={"count": count})
        assert answer.status_code == 422 and "count" in answer.json()["detail"]


def test_a_linear_model_has_no_hidden_features(live: LiveServer, trained: DeltaRuleLearner) -> None:
    body = live.get("/model/features").json()
    assert (body["rule"], body["hidden"], body["units"]) == ("softmax", 0, [])
    picture = live.get("/model/features.png")
    assert picture.status_code == 404 and "no hidden layer" in picture.json()["detail"]
    assert live.get("/model/weights").json()["rule"] == "softmax"


def test_the_api_process_scores_an_mlp_without_numba() -> None:
    script = """
import sys
import numpy as np
from digitstream.learner import HyperParameters, LearnerState, scorer_for
from digitstream.learner.mlp_init import initial_arrays
from digitstream.service.app import create_app
from digitstream.settings import load_settings
create_app(load_settings())
params = HyperParameters.for_rule("mlp")
scorer = scorer_for(LearnerState(params, 0, initial_arrays(params)))
assert scorer.scores(np.zeros((2, 784), np.uint8)).shape == (2, 10)
scorer.templates(); scorer.features()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite", "river"))
print(loaded)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
