"""Serving many models: GET /models, and /models/{name}/... for every registered model, against a real
uvicorn and redis-server; models load on first use into a bounded LRU and hot-reload on their own events."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import pytest
import redis

from digitstream.clients.prediction import ApiError, PredictionClient
from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import Keys
from digitstream.registry import ModelConfig, Registry
from digitstream.settings import Settings
from digitstream.snapshot import META_FIELD
from tests.cli_support import assert_one_line_error, run_cli
from tests.service_support import LiveServer, make_app, snapshot_writer, train, trained, write  # noqa: F401
from tests.worker_support import wait_for


def register(client: redis.Redis, name: str, rule: str = "softmax") -> None:
    config = ModelConfig.new(name, HyperParameters.for_rule(rule), created_at=time.time())  # type: ignore[arg-type]
    assert Registry(client).create(config)


@pytest.fixture
def small(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, write: Callable[..., int],
    trained: DeltaRuleLearner, mnist_train: tuple[np.ndarray, np.ndarray],
) -> DeltaRuleLearner:  # fmt: skip
    """The default model (``trained``, 3,000 samples) and a registered model "small" that learned 200: they differ."""
    images, labels = mnist_train
    write(trained)
    learner = train(images.reshape(len(labels), -1), labels, 200)
    register(redis_client, "small")
    snapshot_writer(redis_client, make_settings(model_name="small"))(learner)
    return learner


def test_each_registered_model_is_served_under_its_name_and_the_default_paths_keep_the_default(
    make_app: Callable[..., LiveServer],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    trained: DeltaRuleLearner,
    small: DeltaRuleLearner,
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = mnist_train
    images = images.reshape(len(labels), -1)
    register(redis_client, "empty")  # registered, no snapshot yet
    server = make_app(served_models_max=4)

    listed = server.get("/models").json()
    assert {m["name"] for m in listed["models"]} == {"small", "empty"} and listed["cursor"] == 0
    assert listed["default"] == "digitstream" and not any(m["loaded"] for m in listed["models"])

    batch = images[:50]
    answer = server.post("/models/small/predict/batch", json={"images": batch.tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["digits"] == small.predict_many(batch).tolist()
    assert server.post("/predict/batch", json={"images": batch.tolist()}).json()["digits"] == (
        trained.predict_many(batch).tolist()
    )
    one = server.post("/models/small/predict", json={"pixels": batch[0].tolist()}).json()
    assert one["digit"] == int(small.predict_many(batch[:1])[0]) and one["samples_learned"] == 200
    raw = server.post(
        "/models/small/predict/batch", content=batch.tobytes(), headers={"content-type": "application/octet-stream"}
    )
    assert raw.json()["digits"] == answer.json()["digits"]

    info = server.get("/models/small").json()
    assert info["model"] == "small" and info["samples_learned"] == 200 and info["version"] == 1
    assert server.get("/models/small/versions").json()["latest"] == 1
    assert {m["name"]: m["loaded"] for m in server.get("/models").json()["models"]} == {"small": True, "empty": False}

    # hot reload on the model's own snapshot events
    more = train(images, labels, 400)
    version = snapshot_writer(redis_client, make_settings(model_name="small"))(more)
    wait_for(lambda: server.get("/models/small").json()["version"] == version, 5, what="the named model's reload")
    assert server.post("/models/small/unpin").status_code == 200
    pinned = server.post("/models/small/pin", json={"version": 1})
    assert pinned.status_code == 200 and pinned.json()["pinned"] and pinned.json()["version"] == 1
    assert server.get("/model").json()["version"] == 1 and not server.get("/model").json()["pinned"]

    # errors say what is wrong
    unknown = server.post("/models/nobody/predict", json={"pixels": batch[0].tolist()})
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    assert server.get("/models/empty").status_code == 503, "registered, but no snapshot yet"
    assert server.get("/models/bad%7Bname%7D").status_code == 422
    assert server.get("/models", params={"count": 0}).status_code == 422


def test_the_served_models_are_bounded_by_the_lru_setting(
    make_app: Callable[..., LiveServer],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    trained: DeltaRuleLearner,
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:
    images, _ = mnist_train
    names = [f"tenant-{i}" for i in range(6)]
    for name in names:
        register(redis_client, name)
        snapshot_writer(redis_client, make_settings(model_name=name))(trained)
    server = make_app(served_models_max=2)
    pixels = images[0].reshape(-1).tolist()
    for name in names:
        assert server.post(f"/models/{name}/predict", json={"pixels": pixels}).status_code == 200
    holders = server.app.state.holders
    assert holders.loaded == names[-2:], "the two most recently used are held"
    assert holders.loads == 6 and holders.evictions == 4
    # an evicted model is loaded again on demand
    assert server.post(f"/models/{names[0]}/predict", json={"pixels": pixels}).status_code == 200
    assert holders.loaded == [names[-1], names[0]]


def test_the_python_client_and_the_command_line_follow_a_named_model(
    make_app: Callable[..., LiveServer], small: DeltaRuleLearner, mnist_train: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_train
    images = images.reshape(len(labels), -1)
    server = make_app()

    with PredictionClient(server.url, model="small") as client, PredictionClient(server.url) as default:
        assert client.model().samples_learned == 200 and default.model().samples_learned == 3000
        assert client.predict_batch(images[:20]).digits.tolist() == small.predict_many(images[:20]).tolist()
        assert client.predict(images[0]).model_version == 1
        assert client.versions().latest == 1
        mine, theirs = client.weights(), default.weights()
        assert mine.shape == theirs.shape == (10, 784) and not np.allclose(mine, theirs)
    with PredictionClient(server.url, model="nobody") as client, pytest.raises(ApiError) as raised:
        client.model()
    assert raised.value.status_code == 404

    status = run_cli("status", "--model", "small", "--url", server.url, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["samples_learned"] == 200
    assert_one_line_error(run_cli("status", "--model", "nobody", "--url", server.url), 1, "nobody")


def test_compare_answers_several_models_accuracies_and_curves_in_one_call_without_loading_them(
    make_app: Callable[..., LiveServer],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    small: DeltaRuleLearner,
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:
    curve = [[100, 0.7, 0.7], [200, 0.75, 0.8]]
    metrics = {"prequential_accuracy": 0.75, "rolling_accuracy": 0.8, "rolling_window": 100, "learning_curve": curve}
    eager = ModelConfig.new(
        "eager", HyperParameters.for_rule("softmax", learning_rate=0.2), stream="digits:samples", created_at=time.time()
    )
    assert Registry(redis_client).create(eager)
    images, labels = mnist_train
    learner = DeltaRuleLearner(eager.params)
    learner.learn_many(images[:200].reshape(200, -1), labels[:200])
    snapshot_writer(redis_client, eager.settings(make_settings()))(learner, metrics=metrics)
    register(redis_client, "empty")  # registered, no snapshot yet
    register(redis_client, "garbled")  # a snapshot whose metadata breaks the contract
    garbled = Keys.for_model("garbled")
    redis_client.set(garbled.snapshot_latest, 1)
    redis_client.hset(garbled.snapshot(1), META_FIELD, b"{not json")
    server = make_app()

    answer = server.get("/compare", params={"names": "eager,digitstream,small,empty,garbled"})
    assert answer.status_code == 200, answer.text
    rows = answer.json()["models"]
    assert [row["name"] for row in rows] == ["eager", "digitstream", "small", "empty", "garbled"], "in the order asked"
    first = rows[0]
    assert (first["rule"], first["learning_rate"], first["stream"]) == ("softmax", 0.2, "digits:samples")
    assert (first["version"], first["samples_learned"], first["learning_curve"]) == (1, 200, curve)
    assert (first["prequential_accuracy"], first["rolling_accuracy"], first["rolling_window"]) == (0.75, 0.8, 100)
    assert rows[1]["samples_learned"] == 3000, "the default model needs no registration"
    assert rows[3] == {**rows[3], "version": None, "samples_learned": 0, "learning_curve": [],
                       "prequential_accuracy": None}  # fmt: skip
    assert (rows[4]["version"], rows[4]["prequential_accuracy"], rows[4]["learning_curve"]) == (1, None, [])
    assert not any(m["loaded"] for m in server.get("/models").json()["models"]), "no model was loaded to compare"
    for row in rows[:3]:  # the numbers GET /models/{name} reports
        info = server.get(f"/models/{row['name']}").json()
        assert row["version"] == info["version"] and row["samples_learned"] == info["samples_learned"]
        assert row["prequential_accuracy"] == info["metrics"]["prequential_accuracy"]
        assert row["learning_curve"] == info["metrics"]["learning_curve"]

    # bad input is a 4xx that says what is wrong
    for names, status, said in [
        ("", 422, "one or more"),
        (",".join(f"m{i}" for i in range(9)), 422, "at most 8"),
        ("small,small", 422, "more than once"),
        ("small,bad{name}", 422, "not a model name"),
        ("small,nobody", 404, "nobody"),
    ]:
        refused = server.get("/compare", params={"names": names})
        assert refused.status_code == status and said in refused.json()["detail"], (names, refused.text)
    assert server.get("/compare").status_code == 422
