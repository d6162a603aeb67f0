"""PredictionClient and AsyncPredictionClient against the real service (uvicorn + Redis): results and errors."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import redis
from PIL import Image

from digitstream.clients.embedded_redis import free_port
from digitstream.clients.prediction import (
    ApiError,
    AsyncPredictionClient,
    BatchPrediction,
    InvalidRequest,
    ModelStatus,
    NotFound,
    Prediction,
    PredictionClient,
    RateLimited,
    Retries,
    ServerError,
    ServiceUnavailable,
    ServiceUnreachable,
    Unauthorized,
    UnexpectedResponse,
)
from digitstream.learner import DeltaRuleLearner
from digitstream.protocol import decode_entries
from tests import service_support
from tests.service_support import LiveServer, train

# The service role's fixtures: a live uvicorn on the test Redis, and snapshots written as the worker does.
live = service_support.live
make_app = service_support.make_app
trained = service_support.trained
write = service_support.write


@pytest.fixture
def client(live: LiveServer) -> Iterator[PredictionClient]:
    with PredictionClient(live.url) as c:
        yield c


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.reshape(28, 28), "L").save(buffer, format="PNG")
    return buffer.getvalue()


# --- results ---------------------------------------------------------------------------------


def test_predict_returns_the_served_models_digit_and_probabilities(
    client: PredictionClient, trained: DeltaRuleLearner, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    image = mnist_test[0][0]
    result = client.predict(image)
    assert isinstance(result, Prediction)
    assert result.digit == trained.predict_one(image)
    np.testing.assert_allclose(result.probabilities, trained.predict_proba_many(image[None])[0], rtol=1e-12)
    assert (result.model_version, result.samples_learned) == (1, trained.n_samples)
    assert result.prediction_id is not None and len(result.prediction_id) == 32


def test_predict_takes_every_pixel_form(client: PredictionClient, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    image = mnist_test[0][1]
    forms = [image, image.reshape(28, 28), image.tolist(), image.tobytes(), image.reshape(28, 28).tolist()]
    answers = {tuple(client.predict(form).probabilities) for form in forms}
    assert len(answers) == 1


def test_predict_batch_sends_uint8_arrays_as_bytes_and_lists_as_json_with_the_same_answer(
    client: PredictionClient, trained: DeltaRuleLearner, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test[0][:50]
    binary = client.predict_batch(images)
    as_lists = client.predict_batch(images.astype(np.int64))
    assert isinstance(binary, BatchPrediction)
    assert binary == as_lists
    np.testing.assert_array_equal(binary.digits, trained.predict_many(images))
    assert binary.digits.dtype == np.int64 and binary.probabilities.shape == (50, 10)
    np.testing.assert_allclose(binary.probabilities, trained.predict_proba_many(images), rtol=1e-12)
    assert len(binary) == 50 and binary.model_version == 1


def test_predict_image_sends_a_png_from_a_path_bytes_or_a_file(
    client: PredictionClient, tmp_path: Path, trained: DeltaRuleLearner, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    image = mnist_test[0][2]
    (tmp_path / "d.png").write_bytes(png_bytes(image))
    by_path = client.predict_image(tmp_path / "d.png")
    by_bytes = client.predict_image(png_bytes(image))
    with (tmp_path / "d.png").open("rb") as handle:
        by_file = client.predict_image(handle, filename="d.png")
    assert by_path.digit == by_bytes.digit == by_file.digit == trained.predict_one(image)


def test_feedback_appends_the_predicted_pixels_with_the_true_label(
    client: PredictionClient, redis_client: redis.Redis, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    image = mnist_test[0][3]
    prediction = client.predict(image)
    receipt = client.feedback(prediction.prediction_id or "", 4)
    assert (receipt.prediction_id, receipt.label) == (prediction.prediction_id, 4)
    decoded = decode_entries(redis_client.xrange("{digitstream}:samples"))
    assert [i.decode() for i in decoded.ids] == [receipt.stream_id]
    np.testing.assert_array_equal(decoded.images[0], image)
    assert decoded.labels.tolist() == [4]


def test_add_samples_publishes_through_the_service(
    client: PredictionClient, redis_client: redis.Redis, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test[0][:3], mnist_test[1][:3]
    receipt = client.add_samples(list(zip(images, labels, strict=True)))
    assert receipt.count == 3 and len(receipt.stream_ids) == 3
    decoded = decode_entries(redis_client.xrange("{digitstream}:samples"))
    np.testing.assert_array_equal(decoded.images, images)
    np.testing.assert_array_equal(decoded.labels, labels)


def test_model_status_is_typed_and_keeps_every_field(client: PredictionClient, trained: DeltaRuleLearner) -> None:
    status = client.model()
    assert isinstance(status, ModelStatus)
    assert (status.model, status.version, status.samples_learned) == ("digitstream", 1, trained.n_samples)
    assert status.prequential_accuracy == pytest.approx(0.85)
    assert status.rolling_accuracy == pytest.approx(0.9)
    assert status.pinned is False
    assert status.rule == "softmax"
    assert set(status.raw) >= {"model", "version", "metrics", "lag", "worker", "params"}


def test_versions_pin_and_unpin_roll_the_served_model_back_and_forward(
    live: LiveServer, client: PredictionClient, write: Callable[..., int], mnist_train: tuple, mnist_test: tuple
) -> None:
    write(train(*mnist_train, 500))
    live.wait_for_version(2)
    versions = client.versions()
    assert [v.version for v in versions.versions] == [1, 2]
    assert (versions.latest, versions.served, versions.pinned) == (2, 2, None)
    pinned = client.pin(1)
    assert (pinned.version, pinned.pinned) == (1, True)
    assert client.predict(mnist_test[0][0]).model_version == 1
    assert client.versions().pinned == 1
    unpinned = client.unpin()
    assert (unpinned.version, unpinned.pinned) == (2, False)


def test_health_answers_ok(client: PredictionClient) -> None:
    assert client.health() == {"status": "ok"}


# --- errors carry the server's own message ---------------------------------------------------


def test_an_invalid_image_raises_invalid_request_with_the_servers_detail(client: PredictionClient) -> None:
    with pytest.raises(InvalidRequest) as caught:
        client.predict([0] * 783)
    assert caught.value.status_code == 422
    assert "pixels" in caught.value.detail and "783" in caught.value.detail
    assert str(caught.value).startswith("HTTP 422: ")


def test_unknown_prediction_ids_and_versions_raise_not_found(client: PredictionClient) -> None:
    with pytest.raises(NotFound, match="prediction_id"):
        client.feedback("0" * 32, 3)
    with pytest.raises(NotFound) as caught:
        client.pin(999)
    assert caught.value.status_code == 404 and "999" in caught.value.detail


def test_a_missing_or_wrong_api_key_raises_unauthorized(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(api_key="right-key")
    server.wait_for_version(1)
    for key in (None, "wrong-key"):
        with PredictionClient(server.url, api_key=key) as anonymous, pytest.raises(Unauthorized) as caught:
            anonymous.unpin()
        assert caught.value.status_code in (401, 403)
    with PredictionClient(server.url, api_key="right-key") as allowed:
        assert allowed.unpin().version == 1


def test_no_model_yet_raises_service_unavailable_with_retry_after(make_app: Callable[..., LiveServer]) -> None:
    server = make_app()
    with PredictionClient(server.url) as c, pytest.raises(ServiceUnavailable) as caught:
        c.predict([0] * 784)
    assert caught.value.status_code == 503
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    assert caught.value.detail


def test_nothing_listening_raises_service_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PredictionClient(url, timeout=2) as c, pytest.raises(ServiceUnreachable) as caught:
        c.model()
    assert caught.value.url == url
    assert "cannot reach the digitstream service at" in str(caught.value)


class NotDigitstream(ThreadingHTTPServer):
    """A real HTTP server that is not digitstream: every request gets ``reply = (status, body kind)``."""

    reply: tuple[int, str] = (200, "json")
    requests = 0
    keys: ClassVar[list[str | None]] = []  # the Idempotency-Key of each request (reset by the tests)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    server: NotDigitstream

    def do_GET(self) -> None:
        self.server.requests += 1
        self.server.keys.append(self.headers.get("Idempotency-Key"))
        status, kind = self.server.reply
        bodies = {"json": json.dumps({"detail": "disk on fire"}), "text": "plain failure", "odd": json.dumps([1, 2])}
        body = bodies[kind].encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if kind == "text" else "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status in (429, 503):
            self.send_header("Retry-After", "0.2")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[NotDigitstream]:
    server = NotDigitstream(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("reply", "error", "detail"),
    [
        ((500, "json"), ServerError, "disk on fire"),
        ((502, "text"), ServerError, "plain failure"),
        ((418, "json"), InvalidRequest, "disk on fire"),
        ((401, "json"), Unauthorized, "disk on fire"),
        ((403, "json"), Unauthorized, "disk on fire"),
    ],
)
def test_error_statuses_map_to_typed_errors_carrying_the_servers_message(
    other_server: NotDigitstream, reply: tuple[int, str], error: type[ApiError], detail: str
) -> None:
    other_server.reply = reply
    with PredictionClient(other_server.url) as c, pytest.raises(error) as caught:
        c.model()
    assert caught.value.detail == detail
    assert caught.value.status_code == reply[0]
    assert caught.value.method == "GET" and caught.value.url.endswith("/model")


def test_a_2xx_answer_that_breaks_the_contract_raises_unexpected_response(other_server: NotDigitstream) -> None:
    other_server.reply = (200, "odd")
    with PredictionClient(other_server.url) as c, pytest.raises(UnexpectedResponse, match="is this a digitstream"):
        c.model()


# --- the async twin --------------------------------------------------------------------------


def test_the_async_client_gives_the_same_answers_and_errors(
    live: LiveServer, client: PredictionClient, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test[0][:10]

    async def scenario() -> dict[str, Any]:
        async with AsyncPredictionClient(live.url) as aclient:
            singles = await asyncio.gather(*(aclient.predict(image) for image in images))
            batch = await aclient.predict_batch(images)
            image = await aclient.predict_image(png_bytes(images[0]))
            model = await aclient.model()
            versions = await aclient.versions()
            pinned = await aclient.pin(1)
            unpinned = await aclient.unpin()
            with pytest.raises(InvalidRequest):
                await aclient.predict([1, 2, 3])
            with pytest.raises(NotFound):
                await aclient.feedback("f" * 32, 1)
            feedback = await aclient.feedback(singles[0].prediction_id or "", 7)
            health = await aclient.health()
        async with AsyncPredictionClient(f"http://127.0.0.1:{free_port()}", timeout=2) as dead:
            with pytest.raises(ServiceUnreachable):
                await dead.model()
        return locals()

    got = asyncio.run(scenario())
    digits = [p.digit for p in got["singles"]]
    assert digits == client.predict_batch(images).digits.tolist() == got["batch"].digits.tolist()
    assert got["image"].digit == got["singles"][0].digit
    assert dataclasses.replace(got["model"], age_seconds=None) == dataclasses.replace(client.model(), age_seconds=None)
    assert got["versions"] == client.versions()
    assert got["pinned"].pinned and not got["unpinned"].pinned
    assert got["feedback"].label == 7
    assert got["health"] == {"status": "ok"}


# --- retries, readiness, notebook conveniences -------------------------------------------------


def test_retries_wait_for_the_first_model_honouring_retry_after(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    server = make_app()
    timer = threading.Timer(1.5, write, args=(trained,))  # the worker's first snapshot, a moment later
    timer.start()
    try:
        with PredictionClient(server.url, retries=Retries(count=10, max_wait=1.0)) as c:
            started = time.monotonic()
            answer = c.predict([0] * 784)
    finally:
        timer.join()
    assert answer.model_version == 1 and time.monotonic() - started >= 1.0


def test_without_retries_the_first_refusal_is_raised_at_once(make_app: Callable[..., LiveServer]) -> None:
    server = make_app()
    with PredictionClient(server.url) as c, pytest.raises(ServiceUnavailable):
        c.predict([0] * 784)


def test_retries_give_up_after_their_count_with_the_last_error(other_server: NotDigitstream) -> None:
    other_server.reply = (503, "json")
    other_server.requests = 0
    with (
        PredictionClient(other_server.url, retries=Retries(count=2, backoff=0.01)) as c,
        pytest.raises(ServiceUnavailable, match="disk on fire"),
    ):
        c.model()
    assert other_server.requests == 3, "one attempt and two retries"


def test_writes_are_resent_after_a_503_with_the_same_idempotency_key(other_server: NotDigitstream) -> None:
    """A write's answer may be lost after it landed: its key makes the resend safe (the service replays)."""
    other_server.reply = (503, "json")
    other_server.requests = 0
    other_server.keys.clear()
    with PredictionClient(other_server.url, retries=Retries(count=2, backoff=0.01, max_wait=0.01)) as c:
        with pytest.raises(ServiceUnavailable):
            c.add_samples([([0] * 784, 1)])
        with pytest.raises(ServiceUnavailable):
            c.feedback("f" * 32, 3, idempotency_key="mine")
    first, second = other_server.keys[:3], other_server.keys[3:]
    assert other_server.requests == 6 and len(set(first)) == 1 and second == ["mine"] * 3
    assert first[0] is not None and len(first[0]) == 32, "a new key per call"


def test_a_429_is_retried_even_for_writes_after_its_retry_after(other_server: NotDigitstream) -> None:
    other_server.reply = (429, "json")
    other_server.requests = 0
    with PredictionClient(other_server.url, retries=Retries(count=1, backoff=5.0, max_wait=0.2)) as c:
        started = time.monotonic()
        with pytest.raises(RateLimited) as caught:
            c.feedback("f" * 32, 3)
    assert other_server.requests == 2 and caught.value.retry_after == 0.2
    assert time.monotonic() - started >= 0.2, "waited the server's Retry-After"


def test_connection_errors_are_retried_with_backoff_for_reads() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PredictionClient(url, timeout=1, retries=Retries(count=2, backoff=0.05)) as c:
        started = time.monotonic()
        with pytest.raises(ServiceUnreachable):
            c.model()
    assert time.monotonic() - started >= 0.05 + 0.1, "waited 0.05 s, then 0.1 s"


def test_wait_until_ready_returns_once_a_model_is_served(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    server = make_app()
    with PredictionClient(server.url) as c:
        with pytest.raises(TimeoutError, match="not ready after"):
            c.wait_until_ready(timeout=0.5)
        write(trained)
        assert c.wait_until_ready(timeout=10)["status"] == "ready"

    async def async_wait() -> dict[str, Any]:
        async with AsyncPredictionClient(server.url) as ac:
            return await ac.wait_until_ready(timeout=10)

    assert asyncio.run(async_wait())["model_version"] == 1


def test_weights_are_a_numpy_array_of_the_served_templates(client: PredictionClient, trained: DeltaRuleLearner) -> None:
    weights = client.weights()
    assert isinstance(weights, np.ndarray) and weights.shape == (10, 784)
    np.testing.assert_allclose(weights, trained.weights, rtol=1e-6, atol=1e-7)  # float32 on the wire


def test_reprs_are_one_short_line(client: PredictionClient, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    shown = [
        repr(client),
        repr(client.predict(mnist_test[0][0])),
        repr(client.predict_batch(mnist_test[0][:500])),
        repr(client.model()),
        repr(client.versions()),
    ]
    assert all("\n" not in text and len(text) < 200 for text in shown), shown
    assert shown[2].startswith("BatchPrediction(500 images: digits [") and "…" in shown[2]
