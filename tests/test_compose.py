"""The docker-compose deployments, built and run for real on this machine's Docker engine (no registry needed).

Two compose files: docker-compose.yml (one Redis) and docker-compose.cluster.yml (the same roles on a
6-node Redis Cluster, whose test SIGKILLs the master of the model's slot midway).

The harness (tests/docker/) builds a Debian base image with debootstrap (and a runtime base from it), the
role images (Dockerfile targets api and worker) on them from a wheelhouse of the lock files made on the
host, and runs the hardened docker-compose.yml with an env file and a generated override.
Tests marked ``docker`` skip, saying why, where no Docker engine answers or debootstrap can't be had.
Step timings are printed live and kept in test-artifacts/docker/timings.txt.
"""

from __future__ import annotations

import json
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
from redis.cluster import RedisCluster

from digitstream.clients.publisher import BULK_PACK, Publisher, PublishProgress
from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import MAX_ENTRY_BYTES, Keys
from digitstream.redis_config import ClusterConf, RedisConfigError, acl_file, redis_conf, replication_password
from digitstream.settings import Settings
from tests.docker import images
from tests.docker.compose import (
    CLUSTER_COMPOSE_FILE,
    COMPOSE_FILE,
    ComposeProject,
    compose_command,
    free_port_range,
)
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


API_IMAGE_LIMIT_MB = 250  # issue 12: the API image must stay within this


@dataclass(frozen=True)
class BuiltImages:
    base: str  # debootstrap Debian with python3, venv, redis-server: BUILD_IMAGE and REDIS_IMAGE
    runtime: str  # the base without the build-only packages and Redis: BASE_IMAGE
    api: str
    worker: str


@pytest.fixture(scope="module")
def built_images(docker_engine: None, timings: Timings) -> BuiltImages:
    """The bases (cached by recipe hash) and the role images built on them offline, once per run."""
    try:
        base = images.build_base_image(timings, ARTIFACTS)
        runtime = images.build_runtime_image(base, timings, ARTIFACTS)
        roles = images.build_role_images(base, runtime, timings, ARTIFACTS)
    except HarnessUnavailable as exc:
        pytest.skip(f"cannot build the test images here: {exc}")
    built = BuiltImages(base, runtime, roles["api"], roles["worker"])
    timings.note("images: " + ", ".join(f"{tag} {images.image_size_mb(tag):.0f} MB" for tag in vars(built).values()))
    return built


def config_of(
    compose_tool: list[str], env_file: Path, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    argv = [*compose_tool, "-f", compose_file, "--env-file", env_file, "-p", "cfg", "config"]
    return run(argv, timeout=120, check=False)


# -- the compose files as written ---------------------------------------------------------------------

COMPOSE_FILES = pytest.mark.parametrize("compose_file", [COMPOSE_FILE, CLUSTER_COMPOSE_FILE], ids=lambda f: f.name)
CLUSTER_NODES = tuple(f"redis-{i}" for i in range(1, 7))


def compose_variables(compose_file: Path) -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)", compose_file.read_text()))


@COMPOSE_FILES
def test_example_env_file_documents_every_variable_the_compose_file_reads(compose_file: Path) -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    passed_through = set(re.findall(r"^\s+(DIGITSTREAM_[A-Z_]+):\s*$", compose_file.read_text(), re.MULTILINE))
    assert compose_variables(compose_file) | passed_through <= documented, "add them to .env.example"


def test_the_cluster_file_shares_docker_compose_yml_s_hardening_settings_and_images() -> None:
    """The blocks the cluster file copies (a compose file cannot share them with another) stay equal."""
    single, cluster = (yaml.safe_load(f.read_text()) for f in (COMPOSE_FILE, CLUSTER_COMPOSE_FILE))
    for block in ("x-logging", "x-hardened", "x-settings", "x-api-image"):
        assert cluster[block] == single[block], block
    assert cluster["services"]["api"]["environment"] == {
        **single["services"]["api"]["environment"],
        "DIGITSTREAM_REDIS_URL": cluster["services"]["api"]["environment"]["DIGITSTREAM_REDIS_URL"],
    }


ROLES = ("admin", "worker", "api", "publisher")
ROLE_PASSWORDS = {f"REDIS_{role.upper()}_PASSWORD": f"{role}-{'x' * 24}" for role in ROLES}


@COMPOSE_FILES
def test_the_compose_file_passes_every_setting_through(compose_file: Path) -> None:
    """Each setting reaches the containers from .env, except those the compose file sets itself."""
    set_by_compose = {"redis_url", "host", "port", "url"}  # per-role URLs; the API's address; the CLI's target
    passed = set(re.findall(r"^\s+DIGITSTREAM_([A-Z_]+):", compose_file.read_text(), re.MULTILINE))
    wanted = {name.upper() for name in Settings.model_fields} - {name.upper() for name in set_by_compose}
    assert wanted <= passed, f"not passed through: {sorted(wanted - passed)}"


def config_services(compose_tool: list[str], env_file: Path, compose_file: Path = COMPOSE_FILE) -> dict[str, Any]:
    result = config_of(compose_tool, env_file, compose_file)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


SERVICES = {
    COMPOSE_FILE: {"redis-config", "redis", "worker", "api", "publisher"},
    CLUSTER_COMPOSE_FILE: {"redis-config", *CLUSTER_NODES, "redis-cluster", "model", "worker", "api", "publisher"},
}


@pytest.mark.docker
@COMPOSE_FILES
def test_every_service_is_hardened_and_bounded(compose_tool: list[str], compose_file: Path) -> None:
    services = config_services(compose_tool, ENV_EXAMPLE, compose_file)
    assert set(services) == SERVICES[compose_file]
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["init"] is True, name
        assert service.get("mem_limit") and service.get("pids_limit"), f"{name}: no memory or pids limit"
        assert "privileged" not in service and "cap_add" not in service, name


@pytest.mark.docker
def test_each_role_runs_its_own_image_as_its_own_redis_user(compose_tool: list[str]) -> None:
    services = config_services(compose_tool, ENV_EXAMPLE)
    assert services["worker"]["image"] == "digitstream-worker:latest"
    assert services["worker"]["build"]["target"] == "worker"
    for name in ("api", "publisher", "redis-config"):
        assert services[name]["image"] == "digitstream-api:latest", name
        assert services[name]["build"]["target"] == "api", name
    for role, name in (("worker", "worker"), ("api", "api"), ("publisher", "publisher")):
        url = services[name]["environment"]["DIGITSTREAM_REDIS_URL"]
        assert url == f"redis://{role}:change-me-{role}@redis:6379/0", url
    # The API's key and limits go to the API alone.
    assert "DIGITSTREAM_API_KEY" not in services["worker"]["environment"]
    assert "DIGITSTREAM_API_KEY" not in services["redis-config"]["environment"]


@pytest.mark.docker
def test_redis_keeps_its_passwords_off_argv_and_env_and_its_data_private_persistent_unevicted(
    compose_tool: list[str],
) -> None:
    services = config_services(compose_tool, ENV_EXAMPLE)
    redis_service, config = services["redis"], services["redis-config"]
    assert "ports" not in redis_service
    command = " ".join(redis_service["entrypoint"] + redis_service["command"])
    assert command == "redis-server /etc/digitstream/redis/redis.conf"
    assert not [v for v in (redis_service.get("environment") or {}).values() if v and "change-me" in str(v)]
    assert redis_service["user"] != "0" and not str(redis_service["user"]).startswith("root")
    assert redis_service["depends_on"]["redis-config"]["condition"] == "service_completed_successfully"
    # Compose v1 prints "redis-data:/data:rw", v2 {"source": "redis-data", "target": "/data", ...}
    mounts = [
        (v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2]) for v in redis_service["volumes"]
    ]
    assert ("redis-data", "/data") in mounts and ("redis-config", "/etc/digitstream/redis") in mounts
    assert "redis-cli" in " ".join(redis_service["healthcheck"]["test"])
    # The configuration job talks to nobody and gets the passwords, which it writes as hashes only.
    assert config["network_mode"] == "none"
    assert config["environment"]["REDIS_API_PASSWORD"] == "change-me-api"
    for name in ("worker", "api"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["restart"] == "unless-stopped"
    assert services["worker"]["stop_grace_period"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["publisher"]["profiles"] == ["publish"]


@pytest.mark.docker
def test_the_cluster_file_runs_six_nodes_a_create_job_two_worker_pools_and_two_api_replicas(
    compose_tool: list[str],
) -> None:
    services = config_services(compose_tool, ENV_EXAMPLE, CLUSTER_COMPOSE_FILE)
    nodes = "redis-1:6379,redis-2:6379,redis-3:6379,redis-4:6379,redis-5:6379,redis-6:6379"
    for node in CLUSTER_NODES:
        service = services[node]
        # Each node: the generated config (no password on its command line or in its environment), the name
        # it announces to clients, its own data volume, a health check; never published.
        command = " ".join(service["entrypoint"] + service["command"])
        assert command == f"redis-server /etc/digitstream/redis/redis.conf --cluster-announce-hostname {node}"
        assert not service.get("environment") and "ports" not in service, node
        mounts = [(v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2])
                  for v in service["volumes"]]  # fmt: skip
        assert set(mounts) == {(f"{node}-data", "/data"), ("redis-config", "/etc/digitstream/redis")}, node
        assert service["depends_on"]["redis-config"]["condition"] == "service_completed_successfully"
        assert service["restart"] == "unless-stopped" and "redis-cli" in " ".join(service["healthcheck"]["test"])
    assert services["redis-config"]["entrypoint"][-1] == "--cluster"
    assert services["redis-config"]["network_mode"] == "none"
    # The create job: once every node answers; redis-cli --cluster create with a replica per master.
    create = services["redis-cluster"]
    assert set(create["depends_on"]) == set(CLUSTER_NODES)
    assert {d["condition"] for d in create["depends_on"].values()} == {"service_healthy"}
    assert "--cluster create" in create["command"][0] and "--cluster-replicas 1 --cluster-yes" in create["command"][0]
    assert create["environment"] == {"REDISCLI_AUTH": "change-me-admin"} and create["restart"] == "no"
    # The default model is registered (as the worker), then two worker pools and two API replicas start.
    assert services["model"]["depends_on"]["redis-cluster"]["condition"] == "service_completed_successfully"
    assert services["worker"]["command"] == ["worker", "--models", "all"]
    for role, name in (("worker", "model"), ("worker", "worker"), ("api", "api"), ("publisher", "publisher")):
        url = services[name]["environment"]["DIGITSTREAM_REDIS_URL"]
        assert url == f"redis+cluster://{role}:change-me-{role}@{nodes}", url
    for name in ("worker", "api"):
        assert services[name]["scale"] == 2, name
        assert services[name]["depends_on"]["model"]["condition"] == "service_completed_successfully"
        assert services[name]["restart"] == "unless-stopped"
    assert services["worker"]["image"] == "digitstream-worker:latest"
    assert services["publisher"]["profiles"] == ["publish"]
    assert "DIGITSTREAM_API_KEY" not in services["worker"]["environment"]


def test_the_generated_cluster_conf_and_acl_make_each_replica_authenticate_as_a_replication_user() -> None:
    """What ``redis_config --cluster`` writes for the nodes of docker-compose.cluster.yml."""
    passwords = {key.removeprefix("REDIS_").removesuffix("_PASSWORD").lower(): value
                 for key, value in ROLE_PASSWORDS.items()}  # fmt: skip
    conf = redis_conf("/etc/digitstream/redis/users.acl", cluster=ClusterConf(passwords["admin"]))
    settings = dict(line.split(" ", 1) for line in conf.splitlines() if line and not line.startswith("#"))
    secret = replication_password(passwords["admin"])
    assert settings["cluster-enabled"] == "yes" and settings["cluster-node-timeout"] == "5000"
    assert settings["cluster-preferred-endpoint-type"] == "hostname" and settings["appendonly"] == "yes"
    assert settings["masteruser"] == "replication" and settings["masterauth"] == secret
    assert secret not in passwords.values() and secret == replication_password(passwords["admin"])
    acl = acl_file(Keys.for_model(MODEL), passwords, cluster=True).splitlines()
    [replication] = [line for line in acl if line.startswith("user replication ")]
    assert replication.endswith("-@all +psync +replconf +ping") and secret not in replication
    for role in ("worker", "api", "publisher"):
        [line] = [line for line in acl if line.startswith(f"user {role} ")]
        assert "+cluster|slots" in line and "+command" in line and "+cluster|addslots" not in line
    assert "cluster" not in redis_conf("x") and "replication" not in acl_file(Keys.for_model(MODEL), passwords)
    assert "cluster-node-timeout 15000" in redis_conf("x", cluster=ClusterConf(passwords["admin"], 15_000))
    with pytest.raises(RedisConfigError, match="REDIS_CLUSTER_NODE_TIMEOUT"):
        redis_conf("x", cluster=ClusterConf(passwords["admin"], 5))


def test_the_generated_redis_conf_never_evicts_and_bounds_bulk_strings() -> None:
    """What the redis-config job writes (digitstream/redis_config.py), for the compose file's Redis."""
    conf = redis_conf("/etc/digitstream/redis/users.acl")
    settings = dict(line.split(" ", 1) for line in conf.splitlines() if line and not line.startswith("#"))
    assert settings["maxmemory-policy"] == "noeviction" and settings["maxmemory"] == "512mb"
    assert settings["appendonly"] == "yes" and settings["appendfsync"] == "everysec"
    assert settings["aclfile"] == "/etc/digitstream/redis/users.acl" and "requirepass" not in settings
    # Large enough for any stream entry (MAX_ENTRY_BYTES) and snapshot array, far below the default 512 MB.
    assert settings["proto-max-bulk-len"] == "16mb" and MAX_ENTRY_BYTES < 16 * 2**20
    assert redis_conf("x", appendfsync="always").count("appendfsync always") == 1


@pytest.mark.docker
def test_worker_and_api_point_at_an_existing_redis_through_the_env(compose_tool: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "external.env"
    settings = {**ROLE_PASSWORDS, "REDIS_SCHEME": "rediss", "REDIS_HOST": "redis.internal", "REDIS_PORT": "6380",
                "REDIS_DB": "2"}  # fmt: skip
    env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    services = config_services(compose_tool, env_file)
    for role in ("worker", "api", "publisher"):
        password = ROLE_PASSWORDS[f"REDIS_{role.upper()}_PASSWORD"]
        url = f"rediss://{role}:{password}@redis.internal:6380/2"
        assert services[role]["environment"]["DIGITSTREAM_REDIS_URL"] == url


@pytest.mark.docker
@COMPOSE_FILES
@pytest.mark.parametrize("missing", sorted(ROLE_PASSWORDS))
def test_compose_refuses_to_start_without_each_redis_password(
    compose_tool: list[str], tmp_path: Path, missing: str, compose_file: Path
) -> None:
    env_file = tmp_path / "no-password.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in ROLE_PASSWORDS.items() if k != missing))
    result = config_of(compose_tool, env_file, compose_file)
    assert result.returncode != 0
    assert missing in result.stderr


# -- the image ----------------------------------------------------------------------------------------


def in_image(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script],
               timeout=120, check=False)  # fmt: skip


@pytest.mark.docker
@pytest.mark.timeout(2400)  # the first test to need the images builds them
@pytest.mark.parametrize("role", ["api", "worker"])
def test_role_images_run_unprivileged_with_no_compiler_and_no_pip(built_images: BuiltImages, role: str) -> None:
    script = (
        "id -u; for c in gcc cc c++ clang make strip pip pip3; do command -v $c; done; "
        "for py in python /usr/bin/python3 /usr/local/bin/python3; do "
        '[ -x "$(command -v $py)" ] && $py -c \'import pip\' 2>/dev/null && echo "pip-importable-by-$py"; done; '
        "ls /usr/share/python-wheels /wheels /opt/build-tools 2>/dev/null; true"
    )
    result = in_image(getattr(built_images, role), script)
    lines = result.stdout.split()
    assert result.returncode == 0, result.stderr
    assert lines[0] != "0"
    assert lines[1:] == [], f"build tools in the {role} image: {lines[1:]}"


@pytest.mark.docker
@pytest.mark.timeout(2400)
def test_the_api_image_is_small_and_holds_none_of_the_worker_dependencies(
    built_images: BuiltImages, timings: Timings
) -> None:
    modules = ("numba", "llvmlite", "river", "scipy")
    probe = f"import importlib.util as u; print(sorted(m for m in {modules!r} if u.find_spec(m)))"
    assert in_image(built_images.api, f'python -c "{probe}"').stdout.strip() == "[]"
    assert in_image(built_images.worker, f'python -c "{probe}"').stdout.strip() != "[]"
    size = images.image_size_mb(built_images.api)
    timings.note(f"API image {size:.0f} MB (limit {API_IMAGE_LIMIT_MB}), worker image "
                 f"{images.image_size_mb(built_images.worker):.0f} MB")  # fmt: skip
    assert size <= API_IMAGE_LIMIT_MB


@pytest.mark.docker
@pytest.mark.timeout(2400)
def test_each_image_runs_its_role_by_default_and_the_cli(built_images: BuiltImages) -> None:
    for image, role in ((built_images.api, "serve"), (built_images.worker, "worker")):
        config = run(["docker", "image", "inspect", "--format", "{{json .Config.Cmd}}", image], timeout=60).stdout
        assert json.loads(config)[0] == role
        result = run(["docker", "run", "--rm", "--network", "none", image, "--help"], timeout=120)
        commands = set(re.findall(r"^  (\S+)", result.stdout, re.MULTILINE))
        assert {role, "publish", "status"} <= commands, result.stdout


def env_example() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE))


@pytest.mark.docker
@pytest.mark.timeout(2400)
def test_the_placeholder_passwords_of_env_example_are_refused_when_the_stack_starts(
    built_images: BuiltImages, compose_tool: list[str], tmp_path: Path, timings: Timings
) -> None:
    env = {**env_example(), "DIGITSTREAM_API_IMAGE": built_images.api, "DIGITSTREAM_WORKER_IMAGE": built_images.worker,
           "REDIS_IMAGE": built_images.base, "API_PORTS": "{}-{}".format(*free_port_range(10))}  # fmt: skip
    project = ComposeProject.create(tmp_path / "compose", env, log=timings.note)
    try:
        started = project("up", "--detach", "--no-build", "api", timeout=300, check=False)
        assert started.returncode != 0, "the stack started with the example's passwords"
        logs = project("logs", "--no-color", "redis-config", timeout=60).stdout
        assert "REDIS_ADMIN_PASSWORD is still the placeholder of .env.example" in logs, logs
        for service in ("redis", "worker", "api"):
            running = project.containers(service, running_only=True)
            assert running == [], f"{service} runs"
    finally:
        project.tear_down()


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
    redis_port: int  # Redis as published on the host by the test's override
    passwords: dict[str, str]  # of each Redis user

    def redis_url(self, user: str = "admin") -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.redis_port}/0"


@pytest.fixture
def stack(built_images: BuiltImages, mnist_dir: Path, timings: Timings, tmp_path: Path) -> Iterator[Stack]:
    """A compose project on the built images, Redis also published on a free loopback port; always torn down."""
    redis_port, _ = free_port_range(1)
    first_api, last_api = free_port_range(10)
    passwords = {role: secrets.token_hex(16) for role in ROLES}
    env = {
        "DIGITSTREAM_API_IMAGE": built_images.api,
        "DIGITSTREAM_WORKER_IMAGE": built_images.worker,
        "REDIS_IMAGE": built_images.base,  # Debian's redis-server: the official image can't be pulled here
        **{f"REDIS_{role.upper()}_PASSWORD": password for role, password in passwords.items()},
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
        yield Stack(project, redis_port, passwords)
    finally:
        project.tear_down(ARTIFACTS / f"{project.name}.log")


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
    client = redis.Redis.from_url(stack.redis_url("admin"))
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

    # Every role did all of the above as its own Redis user without one refused command, and no more.
    assert_roles_kept_to_their_rights(stack, keys)
    assert_containers_hardened(compose)

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


def assert_roles_kept_to_their_rights(stack: Stack, keys: Keys) -> None:
    admin = redis.Redis.from_url(stack.redis_url("admin"))
    api = redis.Redis.from_url(stack.redis_url("api"))
    try:
        refusals = admin.acl_log()
        assert refusals == [], f"commands refused to the roles during their work: {refusals}"
        latest = int(api.get(keys.snapshot_latest))  # type: ignore[arg-type]
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.delete(keys.snapshot(latest))
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.xtrim(keys.samples, maxlen=0)
        # The job publishes an archive: packed entries (BULK_PACK samples each), the host's Publisher classic ones.
        entries = FIRST + SECOND + -(-JOB // BULK_PACK)
        assert admin.exists(keys.snapshot(latest)) and admin.xlen(keys.samples) == entries
        # The passwords reach redis-server through its config files: not its command line, not its environment.
        redis_container = stack.compose.container("redis")
        processes = run(["docker", "top", redis_container, "-o", "pid,args"], timeout=60).stdout
        inspected = run(["docker", "inspect", "--format", "{{json .Config.Env}}", redis_container], timeout=60).stdout
        for password in stack.passwords.values():
            assert password not in processes and password not in inspected
        assert "redis-server /etc/digitstream/redis/redis.conf" in processes
    finally:
        admin.close()
        api.close()


def assert_containers_hardened(compose: ComposeProject) -> None:
    """What the engine applied to every running container of the stack (not only what the file says)."""
    for container in compose.containers(running_only=True):
        template = "{{json .HostConfig}} {{json .Config.User}}"
        raw = run(["docker", "inspect", "--format", template, container], timeout=60)
        host_json, user_json = raw.stdout.strip().rsplit(" ", 1)
        host, user = json.loads(host_json), json.loads(user_json)
        name = f"{container[:12]} ({user or 'root'})"
        assert host["ReadonlyRootfs"] is True, name
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], name
        assert "no-new-privileges:true" in host["SecurityOpt"], name
        assert host["Memory"] > 0 and host["PidsLimit"] and host["PidsLimit"] > 0, name
        assert user not in ("", "0", "root"), name


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


# -- the cluster file, for real -----------------------------------------------------------------------

CLUSTER_BATCH = 250  # samples per publisher batch: the most the default mode may lose in a master's failure
BEFORE_KILL, AROUND_KILL = 2_000, 4_000  # samples published before the kill, then at 1000/s with the kill at ~30 %


@dataclass
class ClusterStack:
    compose: ComposeProject
    node_ports: dict[str, int]  # each node (its service name, the host name it announces) -> its loopback port
    passwords: dict[str, str]  # of each Redis user

    def node(self, name: str) -> redis.Redis:
        """A plain admin client of one node, from the host."""
        return redis.Redis(port=self.node_ports[name], username="admin", password=self.passwords["admin"],
                           socket_timeout=5.0, socket_connect_timeout=2.0)  # fmt: skip

    def cluster(self, user: str) -> RedisCluster:
        """A cluster client from the host: the names the nodes announce are mapped to their loopback ports."""

        def remap(address: tuple[str, int]) -> tuple[str, int]:
            host, _ = address
            return ("127.0.0.1", self.node_ports[host]) if host in self.node_ports else address

        return RedisCluster(host="127.0.0.1", port=self.node_ports[CLUSTER_NODES[0]], username=user,
                            password=self.passwords[user], address_remap=remap, socket_timeout=5.0,
                            socket_connect_timeout=2.0)  # fmt: skip

    def shard_of(self, slot: int, asking: str) -> tuple[str, list[str]]:
        """The master serving ``slot`` and its replicas (by the names they announce), as node ``asking`` sees it."""
        with self.node(asking) as client:
            shards = client.execute_command("CLUSTER", "SHARDS")
        for shard in shards:
            fields = _pairs(shard)
            ranges = [int(n) for n in fields["slots"]]
            if any(start <= slot <= end for start, end in zip(ranges[::2], ranges[1::2], strict=True)):
                nodes = [_pairs(node) for node in fields["nodes"]]
                healthy = [n for n in nodes if _text(n["health"]) == "online"]
                [master] = [_text(n["hostname"]) for n in healthy if _text(n["role"]) == "master"]
                return master, [_text(n["hostname"]) for n in healthy if _text(n["role"]) == "replica"]
        raise LookupError(f"slot {slot} is not served")

    def role(self, name: str) -> str:
        with self.node(name) as client:
            return str(client.info("replication")["role"])


def _pairs(value: Any) -> dict[str, Any]:
    """A reply of field/value pairs (a flat list, or a dict if redis-py parsed it) as a dict of str keys."""
    items = value.items() if isinstance(value, dict) else zip(value[::2], value[1::2], strict=True)
    return {_text(key): item for key, item in items}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture
def cluster_stack(built_images: BuiltImages, timings: Timings, tmp_path: Path) -> Iterator[ClusterStack]:
    """docker-compose.cluster.yml on the built images, each node also published on a loopback port; torn down."""
    first_node, _ = free_port_range(len(CLUSTER_NODES))
    node_ports = {node: first_node + index for index, node in enumerate(CLUSTER_NODES)}
    first_api, last_api = free_port_range(10)
    passwords = {role: secrets.token_hex(16) for role in ROLES}
    env = {
        "DIGITSTREAM_API_IMAGE": built_images.api,
        "DIGITSTREAM_WORKER_IMAGE": built_images.worker,
        "REDIS_IMAGE": built_images.base,  # Debian's redis-server 7.0 and redis-cli
        **{f"REDIS_{role.upper()}_PASSWORD": password for role, password in passwords.items()},
        "API_BIND": "127.0.0.1",
        "API_PORTS": f"{first_api}-{last_api}",
        "DIGITSTREAM_MODEL_NAME": MODEL,
    }
    # The compose file publishes no node; the test publishes from the host, so it needs every node there.
    override = "services:\n" + "".join(
        f'  {node}:\n    ports:\n      - "127.0.0.1:{port}:6379"\n' for node, port in node_ports.items()
    )
    project = ComposeProject.create(tmp_path / "compose", env, override, log=timings.note,
                                    compose_file=CLUSTER_COMPOSE_FILE)  # fmt: skip
    timings.note(f"compose project {project.name} (cluster) with {' '.join(project.command)}")
    try:
        yield ClusterStack(project, node_ports, passwords)
    finally:
        project.tear_down(ARTIFACTS / f"{project.name}-cluster.log")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_cluster_stack_rides_out_the_kill_of_the_model_s_master_and_learns_what_it_kept_once(
    cluster_stack: ClusterStack, mnist_train: tuple[np.ndarray, np.ndarray], timings: Timings
) -> None:
    """The master of the model's slot SIGKILLed mid-stream: its replica is promoted, the workers and the API
    replicas carry on unaided, and the model learns every sample published except at most the one batch
    only the dead master held, which the publisher counts as lost (the default, asynchronous mode:
    docs/cluster.md), and none twice."""
    train_x, train_y = mnist_train
    total = BEFORE_KILL + AROUND_KILL
    keys = Keys.for_model(MODEL)
    stack, compose = cluster_stack, cluster_stack.compose

    with timings.step("cluster up: 6 nodes, create job, model job, 2 worker pools, 2 API replicas"):
        compose.up(timeout=600)
        compose.wait_healthy(list(CLUSTER_NODES), timeout=120)

        def running(service: str) -> bool:
            return len(compose.containers(service, running_only=True)) == 2

        wait_for("2 worker pools and 2 API replicas running", lambda: running("worker") and running("api"), 60)
    created = compose("logs", "--no-color", "redis-cluster", timeout=60).stdout
    assert "[OK] All 16384 slots covered" in created and "cluster ok" in created, created
    apis = [Api(compose.host_port(cid, 8000)) for cid in compose.containers("api")]
    client = stack.cluster("publisher")
    sent = [0]
    progressed = threading.Condition()

    def on_progress(progress: PublishProgress) -> None:
        with progressed:
            sent[0] = progress.sent
            progressed.notify_all()

    # A fenced producer in the default mode (no WAIT): what a failover loses is counted in producer.lost.
    publisher = Publisher(client, keys, batch_size=CLUSTER_BATCH, rate=1000.0, progress=on_progress,
                          producer_id="compose-cluster-test", retry_for=120)  # fmt: skip
    try:
        with timings.step(f"publish {BEFORE_KILL} samples from the host until both API replicas serve them"):
            publish(publisher, train_x[:BEFORE_KILL], train_y[:BEFORE_KILL])
            for api in apis:
                wait_learned(api, BEFORE_KILL)
            compose.wait_healthy(["api"], timeout=60)

        slot = int(stack.node(CLUSTER_NODES[0]).execute_command("CLUSTER", "KEYSLOT", keys.samples))  # type: ignore[no-untyped-call]
        master, [replica] = stack.shard_of(slot, asking=CLUSTER_NODES[0])
        timings.note(f"model {MODEL!r}: slot {slot}, master {master}, replica {replica}")
        errors: list[BaseException] = []

        def send() -> None:
            try:
                publish(publisher, train_x[BEFORE_KILL:total], train_y[BEFORE_KILL:total])
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=send, name="publisher")
        with timings.step(f"publish {AROUND_KILL} more at 1000/s, SIGKILL {master} at ~30 %, until {replica} leads"):
            thread.start()
            try:
                with progressed:
                    progressed.wait_for(lambda: sent[0] >= BEFORE_KILL + AROUND_KILL * 0.3 or bool(errors), 60)
                    killed_after = sent[0]
                run(["docker", "kill", compose.container(master)], timeout=60)
                killed_at = time.monotonic()

                def promoted() -> bool:
                    try:
                        return stack.role(replica) == "master" and stack.shard_of(slot, asking=replica)[0] == replica
                    except (redis.RedisError, ValueError):
                        return False

                wait_for(f"{replica} promoted to master of slot {slot}", promoted, 60)
                promoted_s = time.monotonic() - killed_at
            finally:
                thread.join(timeout=180)
        assert not thread.is_alive() and not errors, errors
        assert BEFORE_KILL < killed_after < total, "the kill was not mid-stream"
        lost = publisher.producer.lost
        with timings.step("until both API replicas serve every sample kept"):
            models = [wait_learned(api, total - lost) for api in apis]
            resumed_s = time.monotonic() - killed_at
        timings.note(f"{master} killed after {killed_after} samples sent; {replica} promoted after "
                     f"{promoted_s:.1f} s; all learned after {resumed_s:.1f} s; resent {publisher.producer.resent}, "
                     f"lost {lost}")  # fmt: skip
        assert lost <= CLUSTER_BATCH, "more lost than the batch only the dead master held"
        assert {m["version"] for m in models} == {models[0]["version"]}, "the replicas serve different versions"
    finally:
        for api in apis:
            api.close()
        client.close()

    # Unaided: no worker pool or API replica was restarted, and every role kept to its Redis user's rights.
    for service in ("worker", "api"):
        for cid in compose.containers(service):
            restarts = run(["docker", "inspect", "--format", "{{.RestartCount}}", cid], timeout=60).stdout.strip()
            assert compose.health(cid) in ("running", "healthy") and restarts == "0", (service, cid[:12], restarts)
    for node in CLUSTER_NODES:
        if node != master:
            with stack.node(node) as admin:
                assert admin.acl_log() == [], f"{node}: commands refused to the roles: {admin.acl_log()}"
    processes = run(["docker", "top", compose.container(replica), "-o", "pid,args"], timeout=60).stdout
    assert f"--cluster-announce-hostname {replica}" in processes
    assert not [password for password in stack.passwords.values() if password in processes]
    assert_containers_hardened(compose)

    # The dead master, started again, rejoins as the replica of the node that took its place.
    with timings.step(f"docker start {master} until it replicates {replica}"):
        run(["docker", "start", compose.container(master)], timeout=60)

        def replicating() -> bool:
            try:
                with stack.node(master) as node:
                    info = node.info("replication")
            except redis.RedisError:
                return False
            return bool(info["role"] == "slave" and info["master_link_status"] == "up")

        wait_for(f"{master} replicating", replicating, 60)
    assert stack.shard_of(slot, asking=master) == (replica, [master])
    # The create job run again (as every `up` does) leaves the cluster it finds as it is.
    with timings.step("the create job again, on the existing cluster"):
        again = compose("run", "--rm", "-T", "redis-cluster", timeout=120)
    assert "not created again" in again.stdout and "cluster ok" in again.stdout, again.stdout + again.stderr
    assert stack.shard_of(slot, asking=replica) == (replica, [master])
