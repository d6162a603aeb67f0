"""The Open Inference Protocol (V2) routes, spoken to by the real ``tritonclient[http]`` against uvicorn and Redis."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from digitstream.learner import DeltaRuleLearner
from tests.service_support import LiveServer, live, make_app, train, trained, write  # noqa: F401

httpclient = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

MODEL = "digitstream"
HEADER = "Inference-Header-Content-Length"


@pytest.fixture
def triton(live: LiveServer) -> Any:
    client = httpclient.InferenceServerClient(live.url.removeprefix("http://"))
    yield client
    client.close()


def native(live: LiveServer, images: np.ndarray) -> dict[str, Any]:
    """The native batch answer, the reference for the OIP one."""
    response = live.post(
        "/predict/batch", content=images.tobytes(), headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def infer(client: Any, images: np.ndarray, *, binary_in: bool, binary_out: bool, version: str = "") -> Any:
    tensor = httpclient.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=binary_in)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in ("probabilities", "digits")]
    return client.infer(MODEL, [tensor], model_version=version, outputs=outputs)


def test_health_metadata_and_readiness_answer_tritonclient(triton: Any, live: LiveServer) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, "1")
    assert not triton.is_model_ready(MODEL, "99") and not triton.is_model_ready("other")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    metadata = triton.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"] and metadata["platform"] == "digitstream-softmax"
    assert metadata["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 784]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]} == {
        "probabilities": ("FP32", [-1, 10]), "digits": ("INT64", [-1]),
    }  # fmt: skip
    assert triton.get_model_metadata(MODEL, "1")["versions"] == ["1"]


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (True, False), (False, True)])
@pytest.mark.parametrize("rows", [False, True], ids=["flat", "28x28"])
def test_infer_answers_as_the_native_api_in_json_and_binary_both_shapes(
    triton: Any, live: LiveServer, mnist_test: tuple[np.ndarray, np.ndarray], binary_in: bool, binary_out: bool,
    rows: bool,
) -> None:  # fmt: skip
    images = mnist_test[0][:7]
    result = infer(triton, images.reshape(-1, 28, 28) if rows else images, binary_in=binary_in, binary_out=binary_out)
    expected = native(live, images)
    assert result.as_numpy("digits").tolist() == expected["digits"]
    proba = result.as_numpy("probabilities")
    assert proba.dtype == np.float32 and proba.shape == (7, 10)
    np.testing.assert_allclose(proba, expected["probabilities"], rtol=1e-6, atol=1e-7)
    response = result.get_response()
    assert response["model_name"] == MODEL and response["model_version"] == "1"
    ids = response["parameters"]["prediction_ids"].split(",")
    assert len(ids) == 7 and len(set(ids)) == 7


def test_a_prediction_id_from_infer_takes_feedback(
    triton: Any, live: LiveServer, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    parameters = infer(triton, images[:1], binary_in=True, binary_out=True).get_response()["parameters"]
    assert parameters["prediction_ids"] == parameters["prediction_id"]
    answer = live.post("/feedback", json={"prediction_id": parameters["prediction_id"], "label": int(labels[0])})
    assert answer.status_code == 200, answer.text
    again = live.post("/feedback", json={"prediction_id": parameters["prediction_id"], "label": int(labels[0])})
    assert again.status_code == 409


def test_versions_infer_answers_from_each_kept_version(
    triton: Any, live: LiveServer, write: Callable[..., int], mnist_train: tuple[np.ndarray, np.ndarray],
    mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    fresh = train(*mnist_train, 50)
    assert write(fresh) == 2
    live.wait_for_version(2)
    images = mnist_test[0][:200]
    latest = infer(triton, images, binary_in=True, binary_out=True)
    first = infer(triton, images, binary_in=True, binary_out=True, version="1")
    second = infer(triton, images, binary_in=False, binary_out=False, version="2")
    assert latest.get_response()["model_version"] == "2" and first.get_response()["model_version"] == "1"
    assert (latest.as_numpy("digits") == second.as_numpy("digits")).all()
    assert (first.as_numpy("digits") != latest.as_numpy("digits")).any()  # 3,000 samples against 50
    assert triton.get_model_metadata(MODEL)["versions"] == ["1", "2"]


def test_errors_are_oip_error_bodies_through_tritonclient(
    triton: Any, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test[0][:2]
    for model, version, status in (("other", "", "404"), (MODEL, "7", "404"), (MODEL, "x", "404")):
        with pytest.raises(InferenceServerException) as caught:
            tensor = httpclient.InferInput("images", [2, 784], "UINT8")
            tensor.set_data_from_numpy(images)
            triton.infer(model, [tensor], model_version=version)
        assert caught.value.status() == status and caught.value.message()
    wrong = httpclient.InferInput("images", [2, 784], "FP32")
    wrong.set_data_from_numpy(images.astype(np.float32))
    with pytest.raises(InferenceServerException, match="datatype: expected 'UINT8'") as caught:
        triton.infer(MODEL, [wrong])
    assert caught.value.status() == "400"


def body(shape: Any, data: Any, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "images", "shape": shape, "datatype": "UINT8", "data": data, **extra}]}


BAD_JSON = [
    (b"", "body: empty"),
    (b"{", "body: not valid JSON"),
    (b"[]", "body: expected a JSON object"),
    (b'{"inputs": []}', "inputs: expected exactly one input"),
    (body([1, 784], [0] * 784) | {"id": 5}, "id: must be a string"),
    ({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}]}, "inputs[0].name"),
    ({"inputs": [{"name": "images", "shape": [1, 784], "datatype": "INT8", "data": [0] * 784}]}, "datatype"),
    (body([1, 783], [0] * 783), "inputs[0].shape: expected [N, 784] or [N, 28, 28]"),
    (body([1, 28, 27], [0] * 756), "inputs[0].shape"),
    (body([0, 784], []), "inputs[0].shape: 0 images"),
    (body([17, 784], [0] * 784 * 17), "inputs[0].shape: 17 images; 1..16"),
    (body([1, 784], [0] * 785), "inputs[0].data: shape [1, 784] needs 784 values"),
    (body([2, 784], [0] * 784), "needs 1568 values"),
    (body([1, 784], [0] * 783 + [256]), "inputs[0].data[783]: 256 is outside 0..255"),
    (body([1, 784], [-1] + [0] * 783), "inputs[0].data[0]: -1 is outside 0..255"),
    (body([1, 784], [0.5] * 784), "numbers with fractions"),
    (body([1, 784], ["a"] * 784), "strings"),
    (body([1, 784], [[0] * 783, [0]]), "ragged"),
    (body([1, 784], None), "inputs[0].data: expected an array"),
    ({"inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8"}]}, "inputs[0].data: field required"),
    (body([1, 784], [0] * 784) | {"outputs": [{"name": "logits"}]}, "outputs[0].name"),
    (body([1, 784], [0] * 784) | {"parameters": {"binary_data_output": "yes"}}, "binary_data_output"),
    (body([1, 784], [0] * 784, parameters={"binary_data_size": 784}), "both data and parameters.binary_data_size"),
]


def test_bad_json_requests_get_400_with_an_oip_error(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    live = make_app(max_batch=16)
    live.wait_for_version(1)
    for request_body, message in BAD_JSON:
        content = request_body if isinstance(request_body, bytes) else orjson.dumps(request_body)
        response = live.post(f"/v2/models/{MODEL}/infer", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, (message, response.text)
        assert list(response.json()) == ["error"] and message in response.json()["error"], (message, response.text)


def binary_request(header: dict[str, Any], payload: bytes, length: str | None = None) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + payload, {HEADER: length if length is not None else str(len(head))}


def test_bad_binary_requests_get_400_with_an_oip_error(live: LiveServer) -> None:
    tensor = {"name": "images", "shape": [2, 784], "datatype": "UINT8", "parameters": {"binary_data_size": 1568}}
    cases = [
        (binary_request({"inputs": [tensor]}, bytes(1567)), "1568 bytes of binary data expected"),
        (binary_request({"inputs": [tensor]}, bytes(1569)), "1568 bytes of binary data expected"),
        (binary_request({"inputs": [tensor]}, bytes(1568), "x"), "not an integer"),
        (binary_request({"inputs": [tensor]}, bytes(1568), "99999"), "is not within the body"),
        (binary_request({"inputs": [tensor]}, bytes(1568), "0"), "is not within the body"),
        (binary_request({"inputs": [{**tensor, "parameters": {"binary_data_size": 10}}]}, bytes(10)),
         "binary_data_size: a UINT8 tensor of shape [2, 784] is 1568 bytes"),
        (binary_request(body([1, 784], [0] * 784), bytes(3)), "3 bytes after the JSON header that no input claims"),
    ]  # fmt: skip
    for (content, headers), message in cases:
        response = live.post(f"/v2/models/{MODEL}/infer", content=content, headers=headers)
        assert response.status_code == 400, response.text
        assert message in response.json()["error"], (message, response.text)


def test_binary_outputs_follow_the_json_header(live: LiveServer, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    images = mnist_test[0][:3]
    request = body([3, 784], images.ravel().tolist()) | {"parameters": {"binary_data_output": True}, "id": "r-1"}
    response = live.post(f"/v2/models/{MODEL}/infer", content=orjson.dumps(request))
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    size = int(response.headers[HEADER])
    head = orjson.loads(response.content[:size])
    assert head["id"] == "r-1"
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes == [3 * 10 * 4, 3 * 8] and len(response.content) == size + sum(sizes)
    digits = np.frombuffer(response.content[size + sizes[0] :], dtype="<i8")
    assert digits.tolist() == native(live, images)["digits"]


def test_before_any_snapshot_infer_is_503_and_not_ready(make_app: Callable[..., LiveServer]) -> None:
    live = make_app()
    assert live.get("/v2/health/live").json() == {"live": True}
    assert live.get("/v2/health/ready").status_code == 400
    assert live.get(f"/v2/models/{MODEL}/ready").status_code == 400
    response = live.post(f"/v2/models/{MODEL}/infer", json=body([1, 784], [0] * 784))
    assert response.status_code == 503 and "error" in response.json() and response.headers["retry-after"]
    assert live.get(f"/v2/models/{MODEL}").json()["versions"] == []


def test_a_large_json_batch_fits_the_batch_body_limit(make_app: Callable[..., LiveServer], write: Callable[..., int],
                                                      trained: DeltaRuleLearner) -> None:  # fmt: skip
    write(trained)
    live = make_app(max_batch=100)
    live.wait_for_version(1)
    response = live.post(f"/v2/models/{MODEL}/infer", json=body([100, 784], [255] * 78_400))
    assert response.status_code == 200, response.text
    too_many = live.post(f"/v2/models/{MODEL}/infer", content=b"[" + b"255," * 200_000 + b"0]")
    assert too_many.status_code == 413


def test_openapi_documents_the_oip_and_transfer_routes_and_their_bodies(live: LiveServer) -> None:
    paths = live.get("/openapi.json").json()["paths"]
    for path, method in [("/v2", "get"), ("/v2/health/live", "get"), ("/v2/health/ready", "get"),
                         ("/v2/models/{name}", "get"), ("/v2/models/{name}/ready", "get"),
                         ("/v2/models/{name}/versions/{version}", "get"),
                         ("/v2/models/{name}/versions/{version}/ready", "get"),
                         ("/v2/models/{name}/infer", "post"), ("/v2/models/{name}/versions/{version}/infer", "post"),
                         ("/models/{name}/export", "get"), ("/models/{name}/import", "post")]:  # fmt: skip
        assert method in paths[path], path
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert "Inference-Header-Content-Length".lower() in infer["requestBody"]["description"]
    assert infer["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/OipErrorBody")
    assert "application/octet-stream" in paths["/models/{name}/import"]["post"]["requestBody"]["content"]


def test_every_registered_model_is_served_by_its_name(
    triton: Any, live: LiveServer, redis_client: Any, make_settings: Callable[..., Any],
    mnist_train: tuple[np.ndarray, np.ndarray], mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    from digitstream.learner import HyperParameters
    from digitstream.registry import ModelConfig, Registry
    from tests.service_support import snapshot_writer

    other = train(*mnist_train, 200)
    Registry(redis_client).create(ModelConfig.new("second", HyperParameters.for_rule("softmax"), created_at=1.7e9))
    snapshot_writer(redis_client, make_settings(model_name="second"))(other)
    images = mnist_test[0][:50]
    assert triton.is_model_ready("second") and triton.get_model_metadata("second")["versions"] == ["1"]
    result = infer(triton, images, binary_in=True, binary_out=True)
    second = infer_model(triton, "second", images)
    assert second.get_response()["model_name"] == "second"
    assert second.as_numpy("digits").tolist() == other.predict_many(images).tolist()
    assert (second.as_numpy("digits") != result.as_numpy("digits")).any()  # 200 samples against 3,000
    with pytest.raises(InferenceServerException) as caught:
        infer_model(triton, "third", images)
    assert caught.value.status() == "404" and "GET /models" in caught.value.message()


def infer_model(client: Any, model: str, images: np.ndarray) -> Any:
    tensor = httpclient.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=True)
    return client.infer(model, [tensor])
