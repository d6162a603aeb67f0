"""The service's HTTP API against a real Redis and a real uvicorn: answers, errors, feedback, security."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis
from PIL import Image

from digitstream.contracts import WorkerStatus
from digitstream.learner import DeltaRuleLearner
from digitstream.protocol import N_PIXELS, decode_entries
from tests.service_support import LiveServer, live, make_app, trained, write  # noqa: F401

JSON = {"content-type": "application/json"}
BINARY = {"content-type": "application/octet-stream"}


def stream_entries(client: redis.Redis, key: str = "{digitstream}:samples") -> list[tuple[bytes, dict[bytes, bytes]]]:
    return client.xrange(key)  # type: ignore[return-value]


# -- predictions ---------------------------------------------------------------------------------


def test_predict_answers_the_served_models_digit_and_probabilities(
    live: LiveServer, trained: DeltaRuleLearner, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_test
    for image in images[:20]:
        answer = live.predict(image)
        assert answer["digit"] == trained.predict_one(image)
        np.testing.assert_allclose(answer["probabilities"], trained.predict_proba_many(image[None])[0], rtol=1e-12)
        assert answer["model_version"] == 1
        assert answer["samples_learned"] == trained.n_samples
        assert len(answer["prediction_id"]) == 32


def test_predict_accepts_28_rows_of_28(live: LiveServer, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    image = mnist_test[0][0]
    nested = live.post("/predict", json={"pixels": image.reshape(28, 28).tolist()}).json()
    flat = live.predict(image)
    assert nested["digit"] == flat["digit"]
    assert nested["probabilities"] == flat["probabilities"]


def test_batch_answers_json_and_binary_bodies_like_the_learner(
    live: LiveServer, trained: DeltaRuleLearner, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test[0][:300]
    binary = live.post("/predict/batch", content=images.tobytes(), headers=BINARY)
    as_json = live.post("/predict/batch", json={"images": images.tolist()})
    assert binary.status_code == as_json.status_code == 200
    assert binary.json() == as_json.json()
    body = binary.json()
    assert body["digits"] == trained.predict_many(images).tolist()
    np.testing.assert_allclose(body["probabilities"], trained.predict_proba_many(images), rtol=1e-12)
    assert (body["model_version"], body["samples_learned"]) == (1, trained.n_samples)


def test_batch_takes_the_documented_maximum_and_refuses_more(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(max_batch=10_000)
    server.wait_for_version(1)
    images = np.random.default_rng(0).integers(0, 256, (10_001, N_PIXELS), dtype=np.uint8)
    full = server.post("/predict/batch", content=images[:10_000].tobytes(), headers=BINARY)
    assert full.status_code == 200 and len(full.json()["digits"]) == 10_000
    too_many = server.post("/predict/batch", content=images.tobytes(), headers=BINARY)
    assert too_many.status_code == 413
    assert too_many.json()["detail"] == "images: 10001 items exceed the maximum batch of 10000"
    documented = server.get("/openapi.json").json()["paths"]["/predict/batch"]["post"]["requestBody"]
    assert documented["content"]["application/json"]["schema"]["properties"]["images"]["maxItems"] == 10_000


def test_predict_before_any_snapshot_answers_503_with_retry_after(make_app: Callable[..., LiveServer]) -> None:
    server = make_app()
    for path, kwargs in [("/predict", {"json": {"pixels": [0] * N_PIXELS}}), ("/predict/batch", {"json": {}})]:
        response = server.post(path, **kwargs)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "no model snapshot has been loaded yet" in response.json()["detail"]
    assert server.get("/model").status_code == 503
    ready = server.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert server.get("/healthz").json() == {"status": "ok"}


# -- bad input ------------------------------------------------------------------------------------

ROW = [0] * 28
BAD_PREDICT_BODIES = [
    (b"", 422, "body: empty, expected a JSON object"),
    (b"{not json", 422, "body: not valid JSON"),
    (b"[1, 2]", 422, "body: expected a JSON object with the field 'pixels', got an array"),
    (b"{}", 422, "pixels: field required"),
    (json.dumps({"pixels": "abc"}).encode(), 422, "pixels: expected an array of 784 integers 0..255, got a string"),
    (json.dumps({"pixels": [0] * 783}).encode(), 422, "pixels: expected 784 values (or 28 rows of 28), got 783"),
    (json.dumps({"pixels": [0] * 783 + [256]}).encode(), 422, "pixels[783]: 256 is outside 0..255"),
    (json.dumps({"pixels": [-1] + [0] * 783}).encode(), 422, "pixels[0]: -1 is outside 0..255"),
    (json.dumps({"pixels": [0.5] * 784}).encode(), 422, "pixels: values must be integers 0..255, got numbers"),
    (json.dumps({"pixels": ["1"] * 784}).encode(), 422, "pixels: values must be integers 0..255, got strings"),
    (json.dumps({"pixels": [0] * 783 + [None]}).encode(), 422, "pixels: values must be integers 0..255"),
    (json.dumps({"pixels": [ROW] * 27 + [[0] * 27]}).encode(), 422, "pixels[27]: expected 28 values per row, got 27"),
    (json.dumps({"pixels": [ROW] * 27 + [[300] + [0] * 27]}).encode(), 422, "pixels[27][0]: 300 is outside 0..255"),
    (json.dumps({"pixels": [[0, 0]] * 784}).encode(), 422, "pixels: expected 784 integers, got nested arrays"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_PREDICT_BODIES)
def test_bad_predict_bodies_get_a_4xx_naming_the_field(
    live: LiveServer, body: bytes, status: int, message: str
) -> None:
    response = live.post("/predict", content=body, headers=JSON)
    assert response.status_code == status
    assert response.json()["detail"].startswith(message)


BAD_BATCHES = [
    ({"images": []}, None, 422, "images: empty, expected 1..10000 items"),
    (
        {"images": [[0] * 784, [0] * 10]},
        None,
        422,
        "images[1]: expected an array of 784 integers 0..255, got 10 values",
    ),
    ({"images": [[0] * 784, "x"]}, None, 422, "images[1]: expected an array of 784 integers 0..255, got a string"),
    ({"images": [[0] * 784, [0] * 783 + [999]]}, None, 422, "images[1][783]: 999 is outside 0..255"),
    ({"pictures": []}, None, 422, "images: field required"),
    (None, b"\x00" * 785, 422, "body: a binary batch must be a non-empty multiple of 784 bytes, got 785"),
    (None, b"", 422, "body: a binary batch must be a non-empty multiple of 784 bytes, got 0"),
]


@pytest.mark.parametrize(("payload", "raw", "status", "message"), BAD_BATCHES)
def test_bad_batches_get_a_4xx_naming_the_field(
    live: LiveServer, payload: object, raw: bytes | None, status: int, message: str
) -> None:
    if raw is not None:
        response = live.post("/predict/batch", content=raw, headers=BINARY)
    else:
        response = live.post("/predict/batch", json=payload)
    assert response.status_code == status
    assert response.json()["detail"] == message


BAD_OTHER_REQUESTS = [
    ("/feedback", {"prediction_id": "0" * 32, "label": 3}, 404, "prediction_id: unknown or expired prediction 000"),
    ("/feedback", {"prediction_id": "not-an-id", "label": 3}, 422, "prediction_id: String should match pattern"),
    ("/feedback", {"prediction_id": "0" * 32, "label": 10}, 422, "label: Input should be less than or equal to 9"),
    ("/feedback", {"prediction_id": "0" * 32, "label": "3"}, 422, "label: Input should be an integer"),
    ("/feedback", {"prediction_id": "0" * 32, "label": True}, 422, "label: Input should be an integer"),
    ("/feedback", {"prediction_id": "0" * 32, "label": 2.5}, 422, "label: Input should be an integer"),
    ("/feedback", {"prediction_id": "0" * 32}, 422, "label: Field required"),
    ("/samples", {"samples": [{"pixels": [0] * 784}]}, 422, "samples[0].label: field required"),
    ("/samples", {"samples": [{"pixels": [0] * 784, "label": 12}]}, 422, "samples[0].label: must be an integer 0..9"),
    ("/samples", {"samples": [{"label": 1, "pixels": [0] * 5}]}, 422, "samples[0].pixels: expected 784 values"),
    ("/samples", {"samples": "x"}, 422, "samples: expected an array of {pixels, label} objects, got a string"),
    ("/samples", {"samples": []}, 422, "samples: empty, expected 1..10000 items"),
    ("/model/pin", {"version": 99}, 404, "version: snapshot 99 is not kept"),
    ("/model/pin", {"version": "one"}, 422, "version: Input should be an integer"),
    ("/model/pin", {}, 422, "version: Field required"),
]


@pytest.mark.parametrize(("path", "payload", "status", "message"), BAD_OTHER_REQUESTS)
def test_bad_feedback_samples_and_pins_get_a_4xx_naming_the_field(
    live: LiveServer, path: str, payload: object, status: int, message: str
) -> None:
    response = live.post(path, json=payload)
    assert response.status_code == status
    assert response.json()["detail"].startswith(message)


def test_bad_query_parameters_and_unknown_paths_get_a_4xx(live: LiveServer) -> None:
    scale = live.get("/model/weights.png", params={"scale": 0})
    assert scale.status_code == 422
    assert scale.json()["detail"] == "scale (query): Input should be greater than or equal to 1"
    assert live.get("/nowhere").status_code == 404
    assert live.get("/predict").status_code == 405


def test_bodies_over_the_limit_get_413_whether_declared_or_streamed(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(max_body_bytes=4096, max_batch=10)
    server.wait_for_version(1)
    big = json.dumps({"pixels": [0] * 784, "padding": "x" * 5000}).encode()
    declared = server.post("/predict", content=big, headers=JSON)
    assert declared.status_code == 413
    expected = f"body: request body too large ({len(big):,} bytes; the limit for this endpoint is 4,096 bytes)"
    assert declared.json()["detail"] == expected

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    streamed = server.post("/predict", content=chunks(), headers=JSON)
    assert streamed.status_code == 413
    assert streamed.json()["detail"].startswith("body: request body too large")
    # The batch endpoint's limit fits a full batch of JSON images (4 KiB per image).
    batch = json.dumps({"images": [[255] * 784] * 10}).encode()
    assert len(batch) > 4096
    assert server.post("/predict/batch", content=batch, headers=JSON).status_code == 200
    assert server.post("/predict", json={"pixels": [0] * 784}).status_code == 200


# -- feedback and samples -------------------------------------------------------------------------


def test_feedback_publishes_the_predicted_pixels_with_the_true_label(
    live: LiveServer, redis_client: redis.Redis, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    answer = live.predict(images[7])
    receipt = live.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": int(labels[7])})
    assert receipt.status_code == 200
    body = receipt.json()
    assert body["prediction_id"] == answer["prediction_id"] and body["label"] == labels[7]
    decoded = decode_entries(stream_entries(redis_client))
    assert [i.decode() for i in decoded.ids] == [body["stream_id"]]
    np.testing.assert_array_equal(decoded.images[0], images[7])
    assert decoded.labels.tolist() == [labels[7]]


def test_feedback_given_to_another_replica_finds_the_prediction_in_redis(
    live: LiveServer, make_app: Callable[..., LiveServer], redis_client: redis.Redis,
    mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    other = make_app()
    other.wait_for_version(1)
    image = mnist_test[0][3]
    prediction_id = live.predict(image)["prediction_id"]
    deadline = time.monotonic() + 2
    while redis_client.get(f"{{digitstream}}:prediction:{prediction_id}") is None:  # written in the background
        assert time.monotonic() < deadline, "prediction input never written to Redis"
        time.sleep(0.01)
    assert redis_client.pttl(f"{{digitstream}}:prediction:{prediction_id}") > 3_500_000  # prediction_ttl 3600 s
    receipt = other.post("/feedback", json={"prediction_id": prediction_id, "label": 0})
    assert receipt.status_code == 200
    np.testing.assert_array_equal(decode_entries(stream_entries(redis_client)).images[0], image)


def test_prediction_inputs_are_forgotten_after_prediction_ttl(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    write(trained)
    server = make_app(prediction_ttl=0.5)
    server.wait_for_version(1)
    prediction_id = server.predict(np.zeros(N_PIXELS, dtype=np.uint8))["prediction_id"]
    assert server.post("/feedback", json={"prediction_id": prediction_id, "label": 1}).status_code == 200
    time.sleep(1.0)
    expired = server.post("/feedback", json={"prediction_id": prediction_id, "label": 1})
    assert expired.status_code == 404
    assert "unknown or expired" in expired.json()["detail"]
    assert redis_client.exists(f"{{digitstream}}:prediction:{prediction_id}") == 0


def test_samples_are_published_to_the_stream_in_order(
    live: LiveServer, redis_client: redis.Redis, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    samples = [{"pixels": images[i].tolist(), "label": int(labels[i])} for i in range(5)]
    samples.append({"pixels": images[5].reshape(28, 28).tolist(), "label": int(labels[5])})
    receipt = live.post("/samples", json={"samples": samples})
    assert receipt.status_code == 200
    assert receipt.json()["count"] == 6
    decoded = decode_entries(stream_entries(redis_client))
    assert [i.decode() for i in decoded.ids] == receipt.json()["stream_ids"]
    np.testing.assert_array_equal(decoded.images, images[:6])
    assert decoded.labels.tolist() == labels[:6].tolist()


def test_a_bad_sample_rejects_the_whole_request_and_publishes_nothing(
    live: LiveServer, redis_client: redis.Redis
) -> None:
    samples = [{"pixels": [0] * 784, "label": 1}, {"pixels": [0] * 784, "label": -1}]
    response = live.post("/samples", json={"samples": samples})
    assert response.status_code == 422
    assert response.json()["detail"] == "samples[1].label: must be an integer 0..9, got -1"
    assert redis_client.xlen("{digitstream}:samples") == 0


# -- security -------------------------------------------------------------------------------------


def test_mutating_endpoints_require_the_api_key_when_one_is_set(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(api_key="s3cret")
    server.wait_for_version(1)
    prediction_id = server.predict(np.zeros(N_PIXELS, dtype=np.uint8))["prediction_id"]
    requests = [
        ("/feedback", {"prediction_id": prediction_id, "label": 1}),
        ("/samples", {"samples": [{"pixels": [0] * 784, "label": 1}]}),
        ("/model/pin", {"version": 1}),
        ("/model/unpin", None),
    ]
    for path, payload in requests:
        missing = server.post(path, json=payload)
        assert missing.status_code == 401, path
        assert missing.json()["detail"] == "X-API-Key: header required for this endpoint"
        wrong = server.post(path, json=payload, headers={"X-API-Key": "guess"})
        assert wrong.status_code == 403, path
        assert wrong.json()["detail"] == "X-API-Key: invalid API key"
        assert server.post(path, json=payload, headers={"X-API-Key": "s3cret"}).status_code == 200, path
    security = server.get("/openapi.json").json()["components"]["securitySchemes"]
    assert security["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                        "description": security["APIKeyHeader"]["description"]}  # fmt: skip
    # Reading never needs the key.
    assert server.get("/model").status_code == 200
    assert server.post("/predict/batch", json={"images": [[0] * 784]}).status_code == 200


def test_cors_is_off_by_default_and_allows_only_configured_origins(
    live: LiveServer, make_app: Callable[..., LiveServer]
) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in live.http.options("/predict", headers=preflight).headers
    assert "access-control-allow-origin" not in live.get("/model", headers={"Origin": "https://evil.example"}).headers
    server = make_app(cors_origins=["https://dash.example"])
    allowed = server.http.options("/predict", headers={**preflight, "Origin": "https://dash.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    refused = server.http.options("/predict", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers


# -- model metadata -------------------------------------------------------------------------------


def test_model_describes_the_served_snapshot_and_the_worker(
    live: LiveServer, trained: DeltaRuleLearner, redis_client: redis.Redis
) -> None:
    body = live.get("/model").json()
    assert body["model"] == "digitstream"
    assert (body["version"], body["samples_learned"], body["rule"]) == (1, trained.n_samples, "softmax")
    assert body["params"] == trained.params.to_json()
    assert body["metrics"]["prequential_accuracy"] == 0.85 and body["metrics"]["drift_events"] == []
    assert body["last_id"] == f"{1_700_000_000_000 + trained.n_samples}-0"
    assert 0 <= body["age_seconds"] < 60 and body["created_at"] > 1e9
    assert body["pinned"] is False and body["worker"] is None and body["lag"] == 0
    assert body["deadletter_count"] == 0
    status = WorkerStatus(worker_id="w1", state="active", model="digitstream", samples_learned=3000, last_id="1-0",
                          updated_at=time.time(), version=1, lag=42, throughput=1e5)  # fmt: skip
    redis_client.set("{digitstream}:worker:status", json.dumps(status.to_json()), px=5000)
    deadline = time.monotonic() + 3
    while (body := live.get("/model").json())["worker"] is None:
        assert time.monotonic() < deadline, "worker status never reported"
        time.sleep(0.05)
    assert body["worker"] == status.to_json() and body["lag"] == 42


def test_weights_png_draws_the_ten_templates(live: LiveServer, trained: DeltaRuleLearner) -> None:
    response = live.get("/model/weights.png", params={"scale": 2})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float64)
    assert image.shape == (28 * 2, (10 * 28 + 9 * 2) * 2, 3)
    for digit in range(10):
        left = digit * (28 + 2) * 2
        tile = image[::2, left : left + 56 : 2]
        blueness = tile[..., 2] - tile[..., 0]  # positive weights are drawn blue, negative red
        weights = trained.weights[digit].reshape(28, 28)
        assert np.corrcoef(blueness.ravel(), weights.ravel())[0, 1] > 0.9


def test_metrics_expose_requests_latency_version_age_and_lag(live: LiveServer) -> None:
    live.predict(np.zeros(N_PIXELS, dtype=np.uint8))
    text = live.get("/metrics").text
    assert 'digitstream_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'digitstream_http_request_duration_seconds_bucket{le="0.005",route="/predict"}' in text
    assert "digitstream_served_model_version 1.0" in text
    assert "digitstream_served_samples_learned 3000.0" in text
    for name in ("digitstream_snapshot_age_seconds", "digitstream_worker_lag", "digitstream_redis_up 1.0",
                 "digitstream_images_predicted_total 1.0"):  # fmt: skip
        assert name in text


def test_health_readiness_and_the_root_page(live: LiveServer) -> None:
    assert live.get("/healthz").json() == {"status": "ok"}
    assert live.get("/readyz").json() == {"status": "ready", "model_version": 1, "redis": "ok", "detail": None}
    root = live.get("/")
    assert root.status_code == 200 and 'href="/docs"' in root.text


def test_openapi_documents_every_endpoint_and_its_bodies(live: LiveServer) -> None:
    schema = live.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [("/predict", "post"), ("/predict/batch", "post"), ("/predict/image", "post"),
                         ("/feedback", "post"), ("/samples", "post"), ("/model", "get"), ("/model/versions", "get"),
                         ("/model/pin", "post"), ("/model/unpin", "post"), ("/model/weights.png", "get"),
                         ("/model/features", "get"), ("/model/features.png", "get"),
                         ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get")]:  # fmt: skip
        assert method in paths[path], path
    pixels = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["pixels"]
    assert pixels["anyOf"][0]["minItems"] == pixels["anyOf"][0]["maxItems"] == 784
    assert "application/octet-stream" in paths["/predict/batch"]["post"]["requestBody"]["content"]
    assert "securitySchemes" not in schema.get("components", {})  # no API key set: nothing to send


def test_json_integers_may_be_written_as_integral_floats(live: LiveServer) -> None:
    """JSON Schema's "integer" includes 7.0, so the API accepts it wherever it documents an integer."""
    as_floats = live.post("/predict", json={"pixels": [float(v) for v in range(256)] * 3 + [0.0] * 16})
    as_ints = live.post("/predict", json={"pixels": list(range(256)) * 3 + [0] * 16})
    assert as_floats.status_code == 200
    assert as_floats.json()["probabilities"] == as_ints.json()["probabilities"]
    receipt = live.post("/feedback", json={"prediction_id": as_ints.json()["prediction_id"], "label": 7.0})
    assert receipt.status_code == 200 and receipt.json()["label"] == 7


def test_predict_is_served_by_the_fast_route_and_documented_by_the_fastapi_one(live: LiveServer) -> None:
    from fastapi.routing import APIRoute
    from starlette.routing import Match

    from digitstream.service.routes.fast_route import PlainRoute

    scope = {"type": "http", "path": "/predict", "method": "POST", "root_path": ""}
    first = next(route for route in live.app.router.routes if route.matches(scope)[0] is Match.FULL)
    assert isinstance(first, PlainRoute), "Starlette matches routes in order: the plain route answers"
    documented = [r for r in live.app.router.routes if isinstance(r, APIRoute) and r.path == "/predict"]
    assert len(documented) == 1 and documented[0].endpoint is first.endpoint, "one handler, registered twice"
    operation = live.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert operation["summary"] == "Predict one image" and "requestBody" in operation
    assert live.post("/predict", json={"pixels": [0] * N_PIXELS}).status_code == 200
