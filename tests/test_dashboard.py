"""The dashboard in a real headless Chromium, against a real Redis, worker and uvicorn service.

Screenshots of each state are saved in the test's tmp dir and in ``test-artifacts/dashboard/``.
"""

# ruff: noqa: F811  (the fixtures imported from the support modules are parameters here)

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis

from digitstream.connections import worker_client
from digitstream.learner import DeltaRuleLearner, HyperParameters, MLPLearner
from digitstream.protocol import Keys
from digitstream.registry import ModelConfig, Registry
from digitstream.settings import Settings
from digitstream.store import read_snapshot
from digitstream.worker.loop import Worker
from digitstream.worker.pool import WorkerPool
from tests.browser_support import ARTIFACTS, browser, open_page, screenshot  # noqa: F401
from tests.service_support import LiveServer, live, make_app, train, trained, trained_mlp, write  # noqa: F401
from tests.worker_support import pool_running, publish, wait_for

SEEDED = 2000  # MNIST samples the worker learns before the page is used

# Counts the pixels of a canvas that are not white, and which are blue-ish / red-ish (weight templates).
CANVAS_INK = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0, blue = 0, red = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (r < 245 || g < 245 || b < 245) ink++;
    if (b > r + 40) blue++;
    if (r > b + 40) red++;
  }
  return {ink, blue, red, pixels: data.length / 4};
}"""


@pytest.fixture
def run_worker(make_settings: Callable[..., Settings]) -> Iterator[Callable[[], Worker]]:
    """``run_worker()`` starts a real worker (the ``digitstream worker`` loop) in a thread; stopped after the test."""
    started: list[tuple[Worker, threading.Thread, redis.Redis]] = []

    def run() -> Worker:
        settings = make_settings()
        client = worker_client(settings)
        worker = Worker(settings, client)
        thread = threading.Thread(target=worker.run, name="dashboard-test-worker", daemon=True)
        thread.start()
        started.append((worker, thread, client))
        return worker

    yield run
    for worker, thread, client in started:
        worker.stop()
        thread.join(30)
        client.close()
        assert not thread.is_alive(), "the worker did not stop"


def test_the_weight_templates_are_served_as_numbers_for_the_page(live: LiveServer, trained: DeltaRuleLearner) -> None:
    answer = live.get("/model/weights")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-cache"
    body = answer.json()
    assert (body["version"], body["samples_learned"]) == (1, 3000)
    np.testing.assert_allclose(body["weights"], trained.weights, rtol=1e-6, atol=1e-7)  # float32 on the wire
    np.testing.assert_allclose(body["bias"], trained.bias, rtol=1e-6, atol=1e-7)


def test_the_page_and_its_files_are_served_by_the_app_itself(live: LiveServer) -> None:
    page = live.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text
    for asset, kind in [("/static/dashboard.js", "javascript"), ("/static/dashboard.css", "text/css")]:
        assert f'"{asset}"' in page.text
        served = live.get(asset)
        assert served.status_code == 200 and kind in served.headers["content-type"]
        assert "http://" not in served.text and "https://" not in served.text  # no CDN: works offline


def stat(page: Any, name: str) -> str | None:
    """The raw value behind a live-panel number (``data-value`` of ``#stat-<name>``)."""
    return page.get_attribute(f"#stat-{name}", "data-value")  # type: ignore[no-any-return]


def wait_for_stat(page: Any, name: str, value: object, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "([id, want]) => document.getElementById(id).dataset.value === want",
        arg=[f"stat-{name}", str(value)],
        timeout=timeout,
    )


def draw_stroke(page: Any, points: list[tuple[float, float]]) -> None:
    """Drag the mouse through ``points`` given as fractions (0..1) of the drawing canvas."""
    box = page.locator("#pad").bounding_box()

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(*point), steps=12)
    page.mouse.up()


@pytest.mark.browser
def test_a_drawn_one_is_predicted_and_the_feedback_is_learned_live(
    make_app: Callable[..., LiveServer], run_worker: Callable[[], Worker], redis_client: redis.Redis,
    mnist_train: tuple[np.ndarray, np.ndarray], open_page: Callable[..., Any],
    screenshot: Callable[[Any, str], Any],
) -> None:  # fmt: skip
    server = make_app()
    page = open_page(server.url)

    # Before any snapshot the page says so in words, and the drawing pad answers the same way.
    page.wait_for_selector("body[data-state='no-model']")
    assert "No model yet" in page.inner_text("#banner")
    draw_stroke(page, [(0.5, 0.2), (0.5, 0.8)])
    page.wait_for_function("document.getElementById('prediction-note').textContent.includes('No model yet')")
    screenshot(page, "01-no-model-yet")
    page.click("#clear")

    # A real worker learns the seeded samples; the live panel follows without a reload.
    images, labels = mnist_train
    publish(redis_client, "{digitstream}:samples", images[:SEEDED], labels[:SEEDED])
    run_worker()
    wait_for_stat(page, "samples", SEEDED, timeout=30_000)
    page.wait_for_selector("body[data-state='ok']")
    assert page.is_hidden("#banner")
    assert float(stat(page, "preq") or 0) > 0.5
    assert stat(page, "worker") == "active"

    # Weight templates: 10 drawn canvases with both blue (for) and red (against) pixels.
    page.wait_for_selector("#weights[data-version]")
    for digit in range(10):
        ink = page.eval_on_selector(f"#weights-{digit}", CANVAS_INK)
        assert ink["ink"] > ink["pixels"] // 4, f"template {digit} is (nearly) blank: {ink}"
        assert ink["blue"] > 20 and ink["red"] > 20, f"template {digit}: {ink}"
    assert page.eval_on_selector("#curve", CANVAS_INK)["ink"] > 500  # the learning curve is drawn
    diagonal = page.eval_on_selector_all("#confusion tbody tr", "rows => rows.map((r, i) => r.cells[i + 1].innerText)")
    assert len(diagonal) == 10 and all(diagonal), f"confusion matrix diagonal: {diagonal}"

    # A vertical stroke is a "1": the prediction and all 10 bars are shown while drawing.
    draw_stroke(page, [(0.52, 0.15), (0.5, 0.5), (0.48, 0.85)])
    page.wait_for_selector("body[data-prediction='1']")
    assert page.inner_text("#prediction") == "1"
    heights = page.eval_on_selector_all("#bars .fill", "bars => bars.map(b => parseFloat(b.style.height))")
    assert len(heights) == 10 and heights.index(max(heights)) == 1 and abs(sum(heights) - 100) < 1
    screenshot(page, "02-predicted-one")

    # "That's wrong, it was N": the feedback is published to the stream and learned by the worker.
    page.select_option("#feedback-label", "1")
    page.click("#feedback-send")
    page.wait_for_function("document.getElementById('feedback-status').textContent.includes('published as a 1')")
    assert page.is_disabled("#feedback-send")  # one feedback per prediction
    wait_for_stat(page, "samples", SEEDED + 1)
    assert server.get("/model").json()["samples_learned"] == SEEDED + 1
    screenshot(page, "03-feedback-learned")


@pytest.mark.browser
def test_pinning_a_version_asks_for_the_api_key_then_serves_it(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    mnist_train: tuple[np.ndarray, np.ndarray], open_page: Callable[..., Any],
    screenshot: Callable[[Any, str], Any],
) -> None:  # fmt: skip
    write(train(*mnist_train, 500))
    write(trained)
    server = make_app(api_key="dashboard-secret")
    server.wait_for_version(2)
    page = open_page(server.url)
    page.wait_for_selector("#versions tbody tr[data-version='1']")
    wait_for_stat(page, "version", 2)

    page.click("#versions tr[data-version='1'] button")
    page.wait_for_selector("#api-key-form", state="visible")
    assert "needs an API key" in page.inner_text("#api-key-prompt")
    assert server.get("/model").json()["version"] == 2  # nothing changed without the key
    page.fill("#api-key", "wrong-key")
    page.click("#api-key-save")
    page.wait_for_function("document.getElementById('api-key-prompt').textContent.includes('refused')")
    page.fill("#api-key", "dashboard-secret")
    page.press("#api-key", "Enter")  # the form works from the keyboard

    page.wait_for_function("document.getElementById('versions-status').textContent.startsWith('Pinned')")
    wait_for_stat(page, "version", 1)
    assert "(pinned)" in page.inner_text("#stat-version")
    assert server.get("/model").json()["pinned"] is True
    page.wait_for_selector("#versions tr[data-version='1'] button:text('Unpin')")
    screenshot(page, "04-pinned-version")

    page.click("#versions tr[data-version='1'] button")  # the key is remembered for the session
    wait_for_stat(page, "version", 2)
    assert server.get("/model").json()["pinned"] is False


@pytest.mark.browser
def test_the_page_says_in_words_when_the_service_is_unreachable(
    live: LiveServer, open_page: Callable[..., Any], screenshot: Callable[[Any, str], Any]
) -> None:
    page = open_page(live.url)
    page.wait_for_selector("body[data-state='ok']")
    wait_for_stat(page, "samples", 3000)
    live.stop()
    page.wait_for_selector("body[data-state='unreachable']")
    banner = page.inner_text("#banner")
    assert "Cannot reach the service" in banner and "last ones received" in banner
    assert page.inner_text("#stat-samples") == "3,000"  # the last numbers stay, marked stale
    screenshot(page, "05-service-unreachable")


@pytest.mark.browser
def test_the_page_is_usable_at_phone_width_with_labelled_controls(
    live: LiveServer, open_page: Callable[..., Any], screenshot: Callable[[Any, str], Any]
) -> None:
    page = open_page(live.url, width=390, height=844)
    page.wait_for_selector("#weights[data-version='1']")
    assert page.is_hidden("#features-section")  # a linear model has no hidden layer to show
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    assert page.eval_on_selector("#pad", "c => c.getBoundingClientRect().width") <= 390

    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, canvas#pad, button')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.id || e.outerHTML.slice(0, 60))""")
    assert unlabelled == []

    # Keyboard: Enter on the focused Clear button clears the pad (every control is a real <button>).
    draw_stroke(page, [(0.5, 0.2), (0.5, 0.8)])
    page.wait_for_selector("body[data-prediction='1']")
    page.focus("#clear")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-prediction='']")
    assert page.eval_on_selector("#pad", CANVAS_INK)["ink"] == 0
    screenshot(page, "06-phone-width")


@pytest.mark.browser
def test_an_mlp_shows_what_each_digit_responds_to_and_its_hidden_features(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained_mlp: MLPLearner,
    open_page: Callable[..., Any], screenshot: Callable[[Any, str], Any],
) -> None:  # fmt: skip
    write(trained_mlp)
    server = make_app()
    server.wait_for_version(1)
    page = open_page(server.url)
    page.wait_for_selector("#features[data-version='1']")
    page.wait_for_selector("#weights[data-rule='mlp']")

    # The output layer mapped back onto the pixels: 10 drawn templates, explained for a network.
    assert page.inner_text("#weights-title") == "What each digit responds to"
    assert page.is_visible("#weights-mlp") and page.is_hidden("#weights-linear")
    for digit in range(10):
        ink = page.eval_on_selector(f"#weights-{digit}", CANVAS_INK)
        assert ink["ink"] > ink["pixels"] // 4 and ink["blue"] > 20 and ink["red"] > 20, f"template {digit}: {ink}"

    # The most important hidden units, as 28x28 maps, each captioned with the digits it votes for and against.
    units = server.get("/model/features", params={"count": 42}).json()["units"]
    canvases = page.eval_on_selector_all("#features canvas", "cs => cs.map(c => [c.dataset.unit, c.width, c.height])")
    assert canvases == [[str(u["unit"]), 28, 28] for u in units]
    captions = page.eval_on_selector_all("#features figcaption", "cs => cs.map(c => c.textContent)")
    assert captions == [f"+{u['votes_for']} \u2212{u['votes_against']}" for u in units]
    for rank in range(len(units)):
        ink = page.eval_on_selector(f"#feature-{rank}", CANVAS_INK)
        assert ink["ink"] > 100 and ink["blue"] > 10 and ink["red"] > 10, f"feature {rank}: {ink}"
    assert "42 most important of 256 units" in page.inner_text("#features-note")
    assert page.is_visible("#features-link")
    screenshot(page, "07-mlp-features")


def model_reads(requests: list[str]) -> int:
    return sum(1 for url in requests if url.split("?")[0].endswith("/model"))


@pytest.mark.browser
def test_the_live_panel_follows_snapshot_events_without_polling(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    mnist_train: tuple[np.ndarray, np.ndarray], open_page: Callable[..., Any],
    screenshot: Callable[[Any, str], Any],
) -> None:  # fmt: skip
    write(trained)
    server = make_app()
    requests: list[str] = []
    sources: list[str] = []
    page = open_page(server.url)
    page.on("request", lambda r: (sources if r.resource_type == "eventsource" else requests).append(r.url))
    page.reload()
    page.wait_for_selector("body[data-live='events']")
    wait_for_stat(page, "version", 1)
    # (an EventSource may reconnect, e.g. after the reload's first stream was cut: the same URL again)
    assert sources and set(sources) == {f"{server.url}/model/events"}, "an EventSource on the event stream"
    page.wait_for_timeout(300)
    before = model_reads(requests)
    page.wait_for_timeout(2500)  # polling would read /model every second here
    # (with the stream open the page still reads /model every 5 s, to keep the ages current)
    assert model_reads(requests) - before <= 1, "no polling while the event stream is open"

    write(train(*mnist_train, 500))  # a new snapshot: the page hears of it and reads /model once
    wait_for_stat(page, "version", 2, timeout=5000)
    assert page.evaluate("document.body.dataset.lastEvent") == "snapshot"
    assert 1 <= model_reads(requests) - before <= 2
    assert stat(page, "health") in ("stalled", "no-worker")  # a snapshot writer, but no worker heartbeat
    assert "live events" in page.inner_text("#updated")
    screenshot(page, "08-live-events")


@pytest.mark.browser
def test_the_page_falls_back_to_polling_when_the_event_stream_is_refused(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    mnist_train: tuple[np.ndarray, np.ndarray], open_page: Callable[..., Any],
) -> None:  # fmt: skip
    write(trained)
    server = make_app(sse_max_clients=1)
    with server.http.stream("GET", "/model/events") as taken:  # the only stream this process allows
        assert taken.status_code == 200
        page = open_page(server.url)
        wait_for_stat(page, "version", 1)
        assert page.evaluate("document.body.dataset.live") == "polling"
        write(train(*mnist_train, 500))
        wait_for_stat(page, "version", 2, timeout=5000)
        assert "polling" in page.inner_text("#updated")


@pytest.mark.browser
def test_a_model_selector_shows_each_registered_model(
    make_app: Callable[..., LiveServer], make_settings: Callable[..., Settings], write: Callable[..., int],
    trained: DeltaRuleLearner, mnist_train: tuple[np.ndarray, np.ndarray], redis_client: redis.Redis,
    open_page: Callable[..., Any], screenshot: Callable[[Any, str], Any],
) -> None:  # fmt: skip
    from tests.service_support import snapshot_writer

    write(trained)  # the default model: 3,000 samples
    Registry(redis_client).create(ModelConfig.new("small", HyperParameters.for_rule("softmax"), created_at=time.time()))
    snapshot_writer(redis_client, make_settings(model_name="small"))(train(*mnist_train, 200))
    server = make_app()
    page = open_page(server.url)
    wait_for_stat(page, "samples", 3000)
    assert page.is_visible("#model-select")
    assert page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)") == ["", "small"]
    page.select_option("#model-select", "small")
    wait_for_stat(page, "samples", 200)  # the named model's numbers, from /models/small
    page.wait_for_selector("body[data-live='events']")  # and its own event stream
    screenshot(page, "08-model-selector")
    page.select_option("#model-select", "")
    wait_for_stat(page, "samples", 3000)


# Pixels of the canvas whose colour is within 12 of #rrggbb on each channel (the lines' own colour).
PIXELS_OF_COLOUR = """(canvas, hex) => {
  const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (want.every((v, c) => Math.abs(data[i + c] - v) <= 12) && data[i + 3] > 200) n++;
  }
  return n;
}"""


@pytest.mark.browser
def test_compare_models_shows_the_learning_curves_and_accuracies_of_models_on_one_stream_together(
    make_app: Callable[..., LiveServer], make_settings: Callable[..., Settings], redis_client: redis.Redis,
    mnist_train: tuple[np.ndarray, np.ndarray], open_page: Callable[..., Any],
    screenshot: Callable[[Any, str], Any],
) -> None:  # fmt: skip
    images, labels = mnist_train
    images = images.reshape(len(labels), -1)
    shared = "digits:samples"
    challengers = {
        "champion": HyperParameters.for_rule("softmax"),
        "seedling": HyperParameters.for_rule("seed"),
        "eager": HyperParameters.for_rule("softmax", learning_rate=0.2),
    }
    registry = Registry(redis_client)
    for name, params in challengers.items():
        assert registry.create(ModelConfig.new(name, params, stream=shared, created_at=time.time()))
    publish(redis_client, shared, images[:2000], labels[:2000])

    def all_learned(n: int) -> bool:
        snapshots = [read_snapshot(redis_client, Keys.for_model(name, shared)) for name in challengers]
        return all(s is not None and s.learner().n_samples == n for s in snapshots)

    server = make_app()
    pool = WorkerPool(make_settings(snapshot_interval=0.1, block_ms=50), redis_client, ("*",), interval=0.1)
    with pool_running(pool):
        wait_for(lambda: all_learned(2000), 60, what="three models learning one stream")
        page = open_page(server.url, csp=True)  # the panel keeps the page's Content-Security-Policy
        violations: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.reload()
        page.wait_for_selector("#compare-section:not([hidden])")
        offered = page.eval_on_selector_all("#compare-choices input", "boxes => boxes.map(b => b.value)")
        assert offered == ["digitstream", "champion", "eager", "seedling"], "the default model and the registered ones"
        for name in challengers:
            page.check(f"#compare-choices input[value='{name}']")
        page.wait_for_selector("#compare-legend li:nth-child(3)")

        # the stream goes on while the page is open: the comparison follows without a reload
        publish(redis_client, shared, images[2000:3000], labels[2000:3000])
        wait_for(lambda: all_learned(3000), 60, what="the three models learning 1,000 more")
        wait_for(lambda: all(server.get(f"/models/{n}").json()["samples_learned"] == 3000 for n in challengers), 10)
        reported = {name: server.get(f"/models/{name}").json() for name in challengers}
        wanted = {name: info["metrics"]["prequential_accuracy"] for name, info in reported.items()}
        wait_for(lambda: table_of(page, "prequential") == wanted, 15, what="the table showing the API's accuracies")

    shown = page.eval_on_selector_all(
        "#compare-table tbody tr",
        "rows => rows.map(r => [r.dataset.model, ...[...r.cells].map(c => c.dataset.value ?? c.textContent)])",
    )
    names = ["champion", "eager", "seedling"]  # in the picker's order, each with its own colour
    assert [row[0] for row in shown] == names
    for name, rule, rate, stream, samples, prequential, rolling, version in [row[1:] for row in shown]:
        info = reported[name]
        assert (rule, float(rate), stream, int(samples)) == (
            info["rule"],
            info["params"]["learning_rate"],
            shared,
            3000,
        )
        assert float(prequential) == info["metrics"]["prequential_accuracy"]
        assert float(rolling) == info["metrics"]["rolling_accuracy"]
        assert int(version) == info["version"]
    assert (
        reported["champion"]["metrics"]["prequential_accuracy"]
        > reported["seedling"]["metrics"]["prequential_accuracy"]
    )

    legend = page.eval_on_selector_all(
        "#compare-legend li", "items => items.map(i => [i.dataset.model, i.dataset.colour, i.textContent])"
    )
    assert [item[0] for item in legend] == names
    assert len({item[1] for item in legend}) == 3, "a colour per model"
    for name, _, text in legend:
        assert f"{reported[name]['metrics']['prequential_accuracy'] * 100:.2f} %" in text
    canvas = page.locator("#compare-curve")
    for name, colour, _ in legend:  # each model's curve is drawn, in its legend colour
        assert canvas.evaluate(PIXELS_OF_COLOUR, colour) > 200, f"no curve of {name} ({colour}) on the canvas"
    label = canvas.get_attribute("aria-label")
    assert label.startswith("Prequential learning curves of 3 models over 3,000 samples") and "seedling" in label
    assert not violations, violations
    screenshot(page, "09-compare-models")

    page.set_viewport_size({"width": 390, "height": 844})  # at phone width: no sideways scrolling, labelled boxes
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert all(box.evaluate("b => b.labels.length === 1") for box in page.locator("#compare-choices input").all())
    page.locator("#compare-section").screenshot(path=str(ARTIFACTS / "10-compare-phone-width.png"))


def table_of(page: Any, field: str) -> dict[str, float]:
    """The compare table's raw values of one column (``data-value`` of its ``data-field`` cells), by model."""
    rows = page.eval_on_selector_all(
        "#compare-table tbody tr", f"rows => rows.map(r => [r.dataset.model, r.querySelector('[data-field={field}]')"
        ".dataset.value])"
    )  # fmt: skip
    return {name: float(value) for name, value in rows if value is not None}
