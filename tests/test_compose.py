"""The docker-compose deployment, built and run for real on this machine's Docker engine (no registry needed).

The harness (tests/docker/) builds a Debian base image with debootstrap, the project image on it from
a wheelhouse made on the host, and runs docker-compose.yml with an env file and a generated override.
Tests marked ``docker`` skip, saying why, where no Docker engine answers or debootstrap can't be had.
Step timings are printed live and kept in test-artifacts/docker/timings.txt.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import yaml

from digitstream.clients.publisher import Publisher, PublishProgress
from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import Keys
from tests.docker import images
from tests.docker.compose import COMPOSE_FILE, ComposeProject, compose_command, free_port_range
from tests.docker.images import REPO, HarnessUnavailable, run
from tests.docker.timing import Timings

ARTIFACTS = REPO / "test-artifacts" / "docker"
ENV_EXAMPLE = REPO / ".env.example"
MODEL = "digitstream"
FIRST, SECOND, JOB = 5_000, 5_000, 1_000  # samples: published from the host, then mid-kill, then by the job
TEST_IMAGES = 1_000


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timings(request: pytest.FixtureRequest) -> Iterator[Timings]:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        """Straight to the terminal, past pytest's capture: the timings show in every run's output."""
        if reporter is None:
            return
        if capture is None:
            reporter.write_line(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    log = ARTIFACTS / "timings.txt"
    recorder = Timings(log, write)
    recorder.note(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} test_compose")
    yield recorder
    if recorder.steps:
        recorder.note(recorder.summary())


@pytest.fixture(scope="module")
def compose_tool() -> list[str]:
    try:
        return compose_command()
    except HarnessUnavailable as exc:
        pytest.skip(f"no Docker Compose: {exc}")


@pytest.fixture(scope="module")
def docker_engine(compose_tool: list[str]) -> None:
    try:
        images.require_docker()
    except HarnessUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")


@dataclass(frozen=True)
class BuiltImages:
    base: str  # debootstrap Debian with python3 and redis-server: BASE_IMAGE and REDIS_IMAGE
    project: str


@pytest.fixture(scope="module")
def built_images(docker_engine: None, timings: Timings) -> BuiltImages:
    """The base image (cached by recipe hash) and the project image built on it offline, once per run."""
    try:
        base = images.build_base_image(timings, ARTIFACTS)
        project = images.build_project_image(base, timings, ARTIFACTS)
    except HarnessUnavailable as exc:
        pytest.skip(f"cannot build the test images here: {exc}")
    sizes = f"{base} {images.image_size_mb(base):.0f} MB, {project} {images.image_size_mb(project):.0f} MB"
    timings.note(f"images: {sizes}")
    return BuiltImages(base, project)


def config_of(compose_tool: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    argv = [*compose_tool, "-f", COMPOSE_FILE, "--env-file", env_file, "-p", "cfg", "config"]
    return run(argv, timeout=120, check=False)


# -- the compose file as written ----------------------------------------------------------------------


def compose_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))


def test_example_env_file_documents_every_variable_the_compose_file_reads() -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    passed_through = set(re.findall(r"^\s+(DIGITSTREAM_[A-Z_]+):\s*$", COMPOSE_FILE.read_text(), re.MULTILINE))
    assert compose_variables() | passed_through <= documented, "add them to .env.example"


@pytest.mark.docker
def test_compose_file_keeps_redis_private_persistent_and_password_protected(compose_tool: list[str]) -> None:
    result = config_of(compose_tool, ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    redis_service = services["redis"]
    command = redis_service["command"]
    assert "ports" not in redis_service
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert command[command.index("--requirepass") + 1] == "change-me-to-a-long-random-string"
    # Compose v1 prints "redis-data:/data:rw", v2 {"source": "redis-data", "target": "/data", ...}
    mounts = [
        (v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2]) for v in redis_service["volumes"]
    ]
    assert ("redis-data", "/data") in mounts
    assert "redis-cli" in " ".join(redis_service["healthcheck"]["test"])
    for name in ("worker", "api"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["restart"] == "unless-stopped"
        url = services[name]["environment"]["DIGITSTREAM_REDIS_URL"]
        assert url == "redis://:change-me-to-a-long-random-string@redis:6379/0"
    assert services["worker"]["stop_grace_period"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["publisher"]["profiles"] == ["publish"]


@pytest.mark.docker
def test_worker_and_api_point_at_an_existing_redis_through_the_env(compose_tool: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "external.env"
    settings = {"REDIS_PASSWORD": "s3cret", "REDIS_SCHEME": "rediss", "REDIS_HOST": "redis.internal",
                "REDIS_PORT": "6380", "REDIS_DB": "2"}  # fmt: skip
    env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    result = config_of(compose_tool, env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("worker", "api", "publisher"):
        assert services[name]["environment"]["DIGITSTREAM_REDIS_URL"] == "rediss://:s3cret@redis.internal:6380/2"


@pytest.mark.docker
def test_compose_refuses_to_start_without_a_redis_password(compose_tool: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "no-password.env"
    env_file.write_text("DIGITSTREAM_IMAGE=digitstream:latest\n")
    result = config_of(compose_tool, env_file)
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr


# -- the image ----------------------------------------------------------------------------------------


def in_image(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script],
               timeout=120, check=False)  # fmt: skip


@pytest.mark.docker
@pytest.mark.timeout(1200)  # the first test to need the images builds them
def test_image_runs_as_an_unprivileged_user_without_compilers(built_images: BuiltImages) -> None:
    result = in_image(built_images.project, "id -u; for c in gcc cc c++ clang make; do command -v $c; done; true")
    lines = result.stdout.split()
    assert result.returncode == 0, result.stderr
    assert lines[0] != "0"
    assert lines[1:] == [], f"compilers or build tools in the image: {lines[1:]}"


@pytest.mark.docker
@pytest.mark.timeout(1200)  # the first test to need the images builds them
def test_image_has_the_worker_api_and_publish_commands(built_images: BuiltImages) -> None:
    result = run(["docker", "run", "--rm", "--network", "none", built_images.project, "--help"], timeout=120)
    commands = set(re.findall(r"^  (\S+)", result.stdout, re.MULTILINE))
    assert {"worker", "serve", "publish"} <= commands, result.stdout


# -- the deployment, for real -------------------------------------------------------------------------


class Api:
    """Minimal HTTP calls on one API replica (the JSON contract of docs/ARCHITECTURE.md)."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)

    def model(self) -> dict[str, Any] | None:
        """GET /model, or None while the replica has no model or does not answer."""
        try:
            response = self.http.get("/model")
        except httpx.TransportError:
            return None
        if response.status_code == 503:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def readiness(self) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.http.get("/readyz").json()
        except (httpx.TransportError, ValueError):
            return None
        return body

    def predict(self, images: np.ndarray) -> dict[str, Any]:
        response = self.http.post(
            "/predict/batch", content=images.astype(np.uint8).tobytes(),
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def close(self) -> None:
        self.http.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_learned(api: Api, expected: int, timeout: float = 120) -> dict[str, Any]:
    """Wait until the served model has learned exactly ``expected`` samples; more is a duplicate."""
    seen: list[int] = []

    def learned() -> dict[str, Any] | None:
        model = api.model()
        if model is None:
            return None
        seen.append(model["samples_learned"])
        assert model["samples_learned"] <= expected, f"learned {model['samples_learned']} > {expected} published"
        return model if model["samples_learned"] == expected else None

    try:
        model: dict[str, Any] = wait_for(f"{expected} samples learned", learned, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last samples_learned seen: {seen[-5:]}") from None
    return model


def publish(publisher: Publisher, images_: np.ndarray, labels: np.ndarray) -> list[bytes]:
    ids = publisher.publish(images_, labels)
    assert len(ids) == len(labels)
    return ids


@dataclass
class Stack:
    compose: ComposeProject
    redis_url: str  # Redis as published on the host by the test's override


@pytest.fixture
def stack(built_images: BuiltImages, mnist_dir: Path, timings: Timings, tmp_path: Path) -> Iterator[Stack]:
    """A compose project on the built images, Redis also published on a free loopback port; always torn down."""
    redis_port, _ = free_port_range(1)
    first_api, last_api = free_port_range(10)
    env = {
        "DIGITSTREAM_IMAGE": built_images.project,
        "REDIS_IMAGE": built_images.base,  # Debian's redis-server: the official image can't be pulled here
        "REDIS_PASSWORD": secrets.token_hex(16),
        "API_BIND": "127.0.0.1",
        "API_PORTS": f"{first_api}-{last_api}",
        "MNIST_DIR": str(mnist_dir),
        "PUBLISH_OPTIONS": f"--offset {FIRST + SECOND} --limit {JOB} --quiet",
        "DIGITSTREAM_MODEL_NAME": MODEL,
    }
    # The compose file never publishes Redis; the test needs it from the host (to publish with Publisher).
    override = f'services:\n  redis:\n    ports:\n      - "127.0.0.1:{redis_port}:6379"\n'
    project = ComposeProject.create(tmp_path / "compose", env, override, log=timings.note)
    timings.note(f"compose project {project.name} with {' '.join(project.command)}")
    try:
        yield Stack(project, f"redis://:{env['REDIS_PASSWORD']}@127.0.0.1:{redis_port}/0")
    finally:
        project.save_logs(ARTIFACTS / f"{project.name}.log")
        project.down()
        project.force_remove()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_stack_learns_every_sample_once_through_a_worker_kill_and_a_redis_restart_and_scales(
    stack: Stack,
    mnist_train: tuple[np.ndarray, np.ndarray],
    mnist_test: tuple[np.ndarray, np.ndarray],
    timings: Timings,
) -> None:
    train_x, train_y = mnist_train
    test_x = mnist_test[0][:TEST_IMAGES]
    keys = Keys.for_model(MODEL)
    client = redis.Redis.from_url(stack.redis_url)
    publisher = Publisher(client, keys)
    compose = stack.compose

    # The stack comes up healthy: Redis first, then the worker and the API (ready once a model exists).
    with timings.step("up: redis, worker, api until healthy"):
        compose.up()
        compose.wait_healthy(["redis"], timeout=120)
        wait_for("the worker container running", lambda: compose.health(compose.container("worker")) == "running", 120)
    api = Api(compose.host_port(compose.container("api"), 8000))
    try:
        # Samples published from the host are learned, all of them, and the API serves the model.
        with timings.step(f"publish {FIRST} samples from the host until all are learned"):
            ids = publish(publisher, train_x[:FIRST], train_y[:FIRST])
            model = wait_learned(api, FIRST)
            compose.wait_healthy(["redis", "api"], timeout=120)
        assert model["last_id"] == ids[-1].decode()
        first = api.predict(test_x)
        assert first["samples_learned"] == FIRST
        accuracy = float(np.mean(np.array(first["digits"]) == mnist_test[1][:TEST_IMAGES]))
        timings.note(f"served model after {FIRST} samples: version {first['model_version']}, accuracy {accuracy:.3f}")
        assert accuracy > 0.8

        # The worker killed mid-stream and started again: every sample learned exactly once.
        worker = compose.container("worker")
        with timings.step(f"publish {SECOND} more at 1000/s, worker killed and started mid-stream"):
            killed_at = publish_while_killing_worker(compose, worker, client, keys, train_x, train_y)
            model = wait_learned(api, FIRST + SECOND)
        timings.note(f"worker killed after {killed_at[0]} samples sent, started after {killed_at[1]}")
        assert FIRST < killed_at[0] < killed_at[1] < FIRST + SECOND, "the kill was not mid-stream"
        assert model["last_id"] == client.xrevrange(keys.samples, count=1)[0][0].decode()
        assert_served_model_equals_local_learner(api, train_x[: FIRST + SECOND], train_y[: FIRST + SECOND], test_x)

        # Redis restarted: nothing learned is lost (AOF), and the worker and the API recover by themselves.
        before = api.predict(test_x)
        with timings.step("restart the redis container until the API is ready again"):
            run(["docker", "restart", compose.container("redis")], timeout=120)
            compose.wait_healthy(["redis"], timeout=120)
            wait_for("the API reconnected to Redis", lambda: (api.readiness() or {}).get("redis") == "ok", 120)
        after = api.predict(test_x)
        # The worker may write a new version (recording the outage as a fault), but never a different model.
        assert after["samples_learned"] == FIRST + SECOND
        assert after["model_version"] >= before["model_version"]
        assert after["digits"] == before["digits"]
        np.testing.assert_array_equal(np.array(after["probabilities"]), np.array(before["probabilities"]))
        assert client.xlen(keys.samples) == FIRST + SECOND

        # The publisher job (profile "publish") streams MNIST from the mounted directory: the worker learns it.
        with timings.step(f"publisher job: {JOB} samples from the mounted MNIST directory, learned"):
            job = compose("--profile", "publish", "run", "--rm", "-T", "publisher", timeout=300)
            model = wait_learned(api, FIRST + SECOND + JOB)
        timings.note(f"publisher job said: {job.stdout.strip().splitlines()[-1] if job.stdout.strip() else '-'}")

        # Two API replicas serve the same model version, and the same predictions.
        with timings.step("scale the API to 2 replicas until both are healthy"):
            compose.up("api", scale={"api": 2})
            wait_for("2 API containers", lambda: len(compose.containers("api")) == 2, 60)
            compose.wait_healthy(["api"], timeout=120)
        replicas = [Api(compose.host_port(cid, 8000)) for cid in compose.containers("api")]
        try:
            assert len({replica.http.base_url.port for replica in replicas}) == 2
            models = [wait_for("a model on each replica", replica.model, 60) for replica in replicas]
            assert {m["version"] for m in models} == {model["version"]}
            answers = [replica.predict(test_x) for replica in replicas]
            assert answers[0]["digits"] == answers[1]["digits"]
            assert answers[0]["model_version"] == answers[1]["model_version"] == model["version"]
        finally:
            for replica in replicas:
                replica.close()
    finally:
        api.close()
        client.close()

    # A stop is graceful: SIGTERM reaches every process (through init) and none needs the SIGKILL (137).
    with timings.step("stop: every service exits on SIGTERM"):
        compose("stop", timeout=180)
    exit_codes = {s: {compose.state(c)["ExitCode"] for c in compose.containers(s)} for s in ("redis", "worker", "api")}
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, hence 143 (128 + 15) for the API.
    assert exit_codes["redis"] == exit_codes["worker"] == {0} and exit_codes["api"] <= {0, 143}, exit_codes

    # down -v leaves nothing behind: no container, volume or network of the project.
    with timings.step("down -v"):
        compose.down()
    assert compose.leftovers() == {}


def publish_while_killing_worker(
    stack: ComposeProject,
    worker: str,
    client: redis.Redis,
    keys: Keys,
    train_x: np.ndarray,
    train_y: np.ndarray,
) -> tuple[int, int]:
    """Publish SECOND samples at 1000/s in a thread; kill the worker after ~30 %, start it after ~70 %."""
    sent = [0]
    progressed = threading.Condition()

    def on_progress(progress: PublishProgress) -> None:
        with progressed:
            sent[0] = progress.sent
            progressed.notify_all()

    paced = Publisher(client, keys, rate=1000.0, progress=on_progress)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            publish(paced, train_x[FIRST : FIRST + SECOND], train_y[FIRST : FIRST + SECOND])
        except BaseException as exc:
            errors.append(exc)

    def sent_at_least(n: int) -> int:
        with progressed:
            progressed.wait_for(lambda: sent[0] >= n or bool(errors), timeout=60)
            return sent[0]

    thread = threading.Thread(target=send, name="publisher")
    thread.start()
    try:
        killed_at = sent_at_least(int(SECOND * 0.3))
        run(["docker", "kill", worker], timeout=60)
        wait_for("the killed worker to exit", lambda: stack.health(worker) == "exited", 30)
        started_at = sent_at_least(int(SECOND * 0.7))
        run(["docker", "start", worker], timeout=60)
    finally:
        thread.join(timeout=60)
    assert not errors, errors
    return FIRST + killed_at, FIRST + started_at


def assert_served_model_equals_local_learner(
    api: Api, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray
) -> None:
    """The served model is the one learning these samples once each, in order, gives (the learner is exact)."""
    local = DeltaRuleLearner(HyperParameters.for_rule("softmax"))
    local.learn_many(train_x, train_y)
    served = api.predict(test_x)
    assert served["samples_learned"] == len(train_y)
    np.testing.assert_array_equal(np.array(served["digits"]), local.predict_many(test_x))
    np.testing.assert_allclose(np.array(served["probabilities"]), local.predict_proba_many(test_x), atol=1e-6)
