"""No ambient writes: cross-site, rebinding, replay and flooding attempts are refused; a local JSON client still writes.

Writes are POST /feedback, /samples, /model/pin and /model/unpin. Everything runs against a real
uvicorn and redis-server; a real headless Chromium plays the attacker's page.
"""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import uvicorn

from digitstream.clients.embedded_redis import free_port
from digitstream.clients.prediction import PredictionClient
from digitstream.contracts import WorkerStatus
from digitstream.learner import DeltaRuleLearner
from digitstream.protocol import N_PIXELS
from digitstream.service.app import create_app
from digitstream.settings import Settings
from tests.browser_support import browser, open_page  # noqa: F401
from tests.service_support import LiveServer, live, make_app, trained, write  # noqa: F401

IMAGE = [0] * N_PIXELS
WRITES: list[tuple[str, dict[str, Any] | None]] = [
    ("/samples", {"samples": [{"pixels": IMAGE, "label": 1}]}),
    ("/model/pin", {"version": 1}),
    ("/model/unpin", None),
]


def feedback_body(server: LiveServer, label: int = 3) -> dict[str, Any]:
    return {"prediction_id": server.predict(np.zeros(N_PIXELS, dtype=np.uint8))["prediction_id"], "label": label}


# -- a plain local client ----------------------------------------------------------------------------


def test_a_plain_local_json_client_writes_without_a_key_on_loopback(
    live: LiveServer, redis_client: redis.Redis
) -> None:
    with PredictionClient(live.url) as client:
        answer = client.predict(np.zeros(N_PIXELS, dtype=np.uint8))
        receipt = client.feedback(answer.prediction_id, 4)
        assert receipt.label == 4
        assert client.pin(1).pinned and not client.unpin().pinned
    published = live.post("/samples", json={"samples": [{"pixels": IMAGE, "label": 2}]})
    assert published.status_code == 200, published.text
    assert redis_client.xlen(live.settings.keys.samples) == 2


# -- the key, and services reachable beyond loopback --------------------------------------------------


def test_without_a_key_a_service_beyond_loopback_refuses_writes_saying_how_to_enable_them(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    write(trained)
    server = make_app(host="0.0.0.0")  # what it believes it listens on decides
    server.wait_for_version(1)
    for path, payload in [("/feedback", feedback_body(server)), *WRITES]:
        refused = server.post(path, json=payload)
        assert refused.status_code == 403, path
        detail = refused.json()["detail"]
        assert "listens on 0.0.0.0 and has no API key" in detail and "DIGITSTREAM_API_KEY" in detail, detail
    assert redis_client.xlen(server.settings.keys.samples) == 0
    # Predictions keep working.
    assert server.post("/predict/batch", json={"images": [IMAGE]}).status_code == 200


def test_with_a_key_writes_need_it_from_anywhere(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(host="0.0.0.0", api_key="k3y-for-tests")
    server.wait_for_version(1)
    for path, payload in [("/feedback", feedback_body(server)), *WRITES]:
        assert server.post(path, json=payload).status_code == 401, path
        assert server.post(path, json=payload, headers={"X-API-Key": "guess"}).status_code == 403, path
        assert server.post(path, json=payload, headers={"X-API-Key": "k3y-for-tests"}).status_code == 200, path


def primary_address() -> str | None:
    """This machine's address on its first non-loopback interface, if any (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture
def bound_everywhere(make_settings: Callable[..., Settings], write: Callable[..., int],
                     trained: DeltaRuleLearner) -> Iterator[tuple[Settings, int]]:  # fmt: skip
    """The app (settings: loopback, no key) under a uvicorn bound to 0.0.0.0, as ``uvicorn --host 0.0.0.0`` would."""
    write(trained)
    settings = make_settings(allowed_hosts=["*"])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="0.0.0.0", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield settings, port
    server.should_exit = True
    thread.join(15)


def test_without_a_key_clients_from_other_machines_cannot_write_even_if_the_settings_say_loopback(
    bound_everywhere: tuple[Settings, int]
) -> None:
    _, port = bound_everywhere
    address = primary_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with httpx.Client(base_url=f"http://{address}:{port}", timeout=10) as remote:
        refused = remote.post("/samples", json={"samples": [{"pixels": IMAGE, "label": 1}]})
        assert refused.status_code == 403 and f"was reached from {address}" in refused.json()["detail"]
        assert remote.post("/predict/batch", json={"images": [IMAGE]}).status_code in (200, 503)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as local:
        assert local.post("/samples", json={"samples": [{"pixels": IMAGE, "label": 1}]}).status_code == 200


def test_the_operator_can_turn_feedback_and_samples_off(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(allow_feedback=False, allow_samples=False)
    server.wait_for_version(1)
    feedback = server.post("/feedback", json=feedback_body(server))
    assert feedback.status_code == 403 and "DIGITSTREAM_ALLOW_FEEDBACK=false" in feedback.json()["detail"]
    samples = server.post("/samples", json={"samples": [{"pixels": IMAGE, "label": 1}]})
    assert samples.status_code == 403 and "DIGITSTREAM_ALLOW_SAMPLES=false" in samples.json()["detail"]
    assert server.post("/model/pin", json={"version": 1}).status_code == 200  # rollback stays possible


# -- cross-site requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_write_bodies_that_need_no_cors_preflight_get_415(
    live: LiveServer, redis_client: redis.Redis, content_type: str
) -> None:
    for path, payload in [("/feedback", feedback_body(live)), *WRITES]:
        body = json.dumps(payload or {})
        refused = live.post(path, content=body, headers={"Content-Type": content_type})
        assert refused.status_code == 415, path
        assert refused.json()["detail"].startswith("Content-Type: write requests take application/json"), path
    assert redis_client.xlen(live.settings.keys.samples) == 0


def test_a_foreign_origin_is_refused_and_the_services_own_origin_and_configured_ones_are_not(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(cors_origins=["https://dash.example"])
    server.wait_for_version(1)
    samples = {"samples": [{"pixels": IMAGE, "label": 1}]}
    for origin in ("https://evil.example", "null", f"http://localhost:{server.port}"):  # localhost != 127.0.0.1
        refused = server.post("/samples", json=samples, headers={"Origin": origin})
        assert refused.status_code == 403 and refused.json()["detail"].startswith("Origin: requests from"), origin
        assert server.post("/predict", json={"pixels": IMAGE}, headers={"Origin": origin}).status_code == 403
    own = server.post("/samples", json=samples, headers={"Origin": server.url})
    assert own.status_code == 200, own.text
    configured = server.post("/samples", json=samples, headers={"Origin": "https://dash.example"})
    assert configured.status_code == 200 and configured.headers["access-control-allow-origin"] == "https://dash.example"


def test_dns_rebinding_host_names_are_refused_and_configured_names_served(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app()
    server.wait_for_version(1)
    for host in ("attacker.example", f"attacker.example:{server.port}", "127.0.0.1.nip.io"):
        refused = server.get("/model", headers={"Host": host})
        assert refused.status_code == 400, host
        assert "DNS rebinding" in refused.json()["detail"] and "DIGITSTREAM_ALLOWED_HOSTS" in refused.json()["detail"]
        assert server.post("/samples", json={"samples": [{"pixels": IMAGE, "label": 1}]},
                           headers={"Host": host}).status_code == 400  # fmt: skip
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert server.get("/model", headers={"Host": host}).status_code == 200, host
    named = make_app(allowed_hosts=["digits.example"])
    assert named.get("/model", headers={"Host": "digits.example"}).status_code in (200, 503)
    assert named.get("/model", headers={"Host": "localhost"}).status_code == 400
    # Probes and scrapers use the address (a Kubernetes pod IP): they read nothing worth rebinding for.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert server.get(path, headers={"Host": "10.1.2.3:8000"}).status_code == 200, path


ATTACK_PAGE = "<!doctype html><title>cute cats</title><body><p>nothing to see here</p></body>"
# What the attacker's page runs: requests a page may send anywhere without asking (no CORS preflight),
# and one that needs a preflight; then a plain HTML form post.
ATTACKS = """async (target) => {
  const image = new Array(784).fill(0);
  const outcome = (p) => p.then((r) => r.type + " " + r.status, (e) => "failed: " + e.message);
  return await Promise.all([
    outcome(fetch(target + "/samples", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                                        body: JSON.stringify({samples: [{pixels: image, label: 6}]})})),
    outcome(fetch(target + "/model/unpin", {method: "POST", mode: "no-cors"})),
    outcome(fetch(target + "/samples", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify({samples: [{pixels: image, label: 6}]})})),
  ]);
}"""
FORM_POST = """(target) => {
  const form = document.createElement("form");
  form.method = "POST"; form.action = target + "/model/unpin"; form.enctype = "text/plain";
  const field = document.createElement("input");
  field.name = '{"x": "'; field.value = '"}';
  form.appendChild(field); document.body.appendChild(form); form.submit();
}"""


def test_a_page_of_another_site_cannot_write_through_the_users_browser(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    redis_client: redis.Redis, open_page: Callable[..., Any],
) -> None:  # fmt: skip
    write(trained)
    server = make_app()  # loopback, no key: exactly what a page could reach on the user's machine
    server.wait_for_version(1)
    assert server.post("/model/pin", json={"version": 1}).status_code == 200  # pinned: the attack would unpin
    evil = EvilSite(ATTACK_PAGE).start()
    try:
        page = open_page(evil.url)
        outcomes = page.evaluate(ATTACKS, server.url)
        assert outcomes[0] == "opaque 0" and outcomes[1] == "opaque 0"  # sent, answer unreadable
        assert outcomes[2].startswith("failed")  # the preflight found no CORS permission
        with page.expect_navigation():
            page.evaluate(FORM_POST, server.url)
        assert "Origin: requests from pages of" in page.content()
    finally:
        evil.stop()
    assert redis_client.xlen(server.settings.keys.samples) == 0
    assert server.get("/model").json()["pinned"] is True


class EvilSite:
    """A page served from another origin (another port of 127.0.0.1) by a tiny HTTP server."""

    def __init__(self, html: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the standard library's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def start(self) -> EvilSite:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- replay and flooding ------------------------------------------------------------------------------


def test_a_prediction_takes_one_label_even_across_replicas_at_once(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    write(trained)
    first, second = make_app(), make_app()
    first.wait_for_version(1)
    second.wait_for_version(1)
    keys = first.settings.keys
    # Given to the replica that made the prediction, before it reached Redis, then replayed anywhere.
    body = feedback_body(first, 3)
    assert first.post("/feedback", json=body).status_code == 200
    for server, label in ((first, 3), (second, 5), (first, 8)):
        replay = server.post("/feedback", json={**body, "label": label})
        assert replay.status_code == 409 and "already given" in replay.json()["detail"]
    # Once in Redis, flipping labels raced on two replicas: exactly one is learned.
    for _ in range(5):
        body = feedback_body(first, 0)
        key = keys.prediction(body["prediction_id"])
        deadline = time.monotonic() + 5
        while not redis_client.exists(key) and time.monotonic() < deadline:
            time.sleep(0.01)
        barrier = threading.Barrier(4)
        answers: list[int] = []

        def give(server: LiveServer, label: int, body: dict[str, Any] = body, barrier: threading.Barrier = barrier,
                 answers: list[int] = answers) -> None:  # fmt: skip
            barrier.wait()
            answers.append(server.post("/feedback", json={**body, "label": label}).status_code)

        threads = [threading.Thread(target=give, args=(s, label)) for s, label in
                   ((first, 1), (second, 2), (first, 7), (second, 9))]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [200, 409, 409, 409]
    assert redis_client.xlen(keys.samples) == 1 + 5


def test_writes_are_rate_limited_per_client_with_retry_after(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(rate_limit_loopback=True, write_rate=0.5, write_burst=3)
    server.wait_for_version(1)
    samples = {"samples": [{"pixels": IMAGE, "label": 1}]}
    answers = [server.post("/samples", json=samples) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert int(answers[3].headers["retry-after"]) >= 1 and "too many writes" in answers[3].json()["detail"]
    assert server.post("/predict", json={"pixels": IMAGE}).status_code == 200  # predictions are not writes
    unlimited = make_app(write_rate=0.5, write_burst=1)  # loopback clients are exempt by default
    assert all(unlimited.post("/samples", json=samples).status_code == 200 for _ in range(4))


# -- headers and what /model tells -------------------------------------------------------------------


def test_the_dashboard_has_a_csp_and_the_api_nosniff(live: LiveServer) -> None:
    page = live.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    for response in (live.get("/model"), live.post("/predict", json={"pixels": IMAGE}), live.get("/nowhere"),
                     live.post("/samples", content=b"x", headers={"Content-Type": "text/plain"})):  # fmt: skip
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_dashboard_works_under_its_csp(live: LiveServer, open_page: Callable[..., Any]) -> None:
    expect = pytest.importorskip("playwright.sync_api").expect
    page = open_page(live.url, csp=True)
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text
            else None)  # fmt: skip
    page.reload()
    expect(page.locator("#stat-version")).to_have_attribute("data-value", "1")
    pad = page.locator("#pad").bounding_box()
    page.mouse.move(pad["x"] + pad["width"] * 0.5, pad["y"] + pad["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(pad["x"] + pad["width"] * 0.5, pad["y"] + pad["height"] * 0.8, steps=12)
    page.mouse.up()
    expect(page.locator("#prediction")).not_to_have_text("?", timeout=15_000)  # /predict/image answered
    assert not violations, violations


def test_the_workers_hostname_and_pid_show_only_to_callers_that_may_write(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    write(trained)
    server = make_app(api_key="k3y-for-tests")
    status = WorkerStatus(worker_id="db-host-7:4242:9f3a1c2e", state="active", model="digitstream",
                          samples_learned=3000, last_id="1-0", updated_at=time.time(), lag=0)  # fmt: skip
    redis_client.set(server.settings.keys.worker_status, json.dumps(status.to_json()), px=60_000)
    deadline = time.monotonic() + 5
    while server.get("/model").json().get("worker") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    anonymous = server.get("/model").json()["worker"]
    assert anonymous["worker_id"] == "hidden:9f3a1c2e" and anonymous["state"] == "active"
    assert "db-host-7" not in server.get("/model").text
    keyed = server.get("/model", headers={"X-API-Key": "k3y-for-tests"}).json()["worker"]
    assert keyed["worker_id"] == "db-host-7:4242:9f3a1c2e"
