"""Drives the repository's docker-compose.yml for a test: its own project name, env file and generated override.

Works with Compose v2 (``docker compose``) when the CLI has it, else v1 (``docker-compose``). Nothing
is maintained by hand besides docker-compose.yml: the images, password and ports come from an env file
the harness writes, and the one thing the file leaves out on purpose (Redis published on the host, so
the test can publish from the host) from an override file the harness generates.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.docker.images import REPO, CommandFailed, HarnessUnavailable, run

COMPOSE_FILE = REPO / "docker-compose.yml"
CLUSTER_COMPOSE_FILE = REPO / "docker-compose.cluster.yml"  # the same roles on a 6-node Redis Cluster
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
# Only what the Docker and Compose clients need: the user's DIGITSTREAM_*, REDIS_* ... must not leak in.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH")


def compose_command() -> list[str]:
    """``docker compose`` (v2) if this Docker CLI has it, else ``docker-compose``; HarnessUnavailable if neither."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        try:
            probe = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return argv
    raise HarnessUnavailable("neither `docker compose` nor `docker-compose` is installed")


def free_port_range(size: int, host: str = "127.0.0.1") -> tuple[int, int]:
    """``size`` consecutive TCP ports that are all free right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((host, 0))
            start = int(probe.getsockname()[1])
        if start + size > 65535:
            continue
        ports = range(start, start + size)
        sockets: list[socket.socket] = []
        try:
            for port in ports:
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((host, port))
            return start, start + size - 1
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {size} consecutive free ports found")


@dataclass
class ComposeProject:
    """One compose project of docker-compose.yml (or ``compose_file``); ``down`` removes everything it created."""

    command: list[str]
    name: str
    work_dir: Path
    env: dict[str, str]
    override: str = ""
    log: Callable[[str], None] = print
    compose_file: Path = COMPOSE_FILE
    files: list[Path] = field(init=False)
    env_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.env_file = self.work_dir / "compose.env"
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in self.env.items()))
        self.files = [self.compose_file]
        if self.override:
            override = self.work_dir / "compose.override.yml"
            override.write_text(self.override)
            self.files.append(override)

    @classmethod
    def create(
        cls,
        work_dir: Path,
        env: dict[str, str],
        override: str = "",
        log: Callable[[str], None] = print,
        compose_file: Path = COMPOSE_FILE,
    ) -> ComposeProject:
        name = f"dstest{os.getpid()}{secrets.token_hex(3)}"
        return cls(compose_command(), name, work_dir, env, override, log, compose_file)

    # -- compose itself ------------------------------------------------------------------------------

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        argv = [*self.command, "-p", self.name, *files, "--env-file", str(self.env_file), *args]
        client_env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
        return run(argv, timeout=timeout, log=self.work_dir / "compose-commands.log", env=client_env, check=check)

    def up(self, *services: str, scale: dict[str, int] | None = None, timeout: float = 300) -> None:
        scales = [a for service, n in (scale or {}).items() for a in ("--scale", f"{service}={n}")]
        self("up", "--detach", "--no-build", *scales, *services, timeout=timeout)

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)

    def tear_down(self, logs: Path | None = None) -> None:
        """At a test's end: save the logs (to ``logs``), ``down``, then remove whatever is left."""
        if logs is not None:
            self.save_logs(logs)
        self.down()
        self.force_remove()

    def save_logs(self, path: Path) -> None:
        result = self("logs", "--no-color", "--timestamps", timeout=120, check=False)
        path.write_text(result.stdout + result.stderr)

    # -- the engine's view of the project ------------------------------------------------------------

    def containers(self, service: str | None = None, *, running_only: bool = False) -> list[str]:
        """Container ids of the project (or of one service), by the labels both Compose versions set."""
        filters = ["--filter", f"label={PROJECT_LABEL}={self.name}"]
        if service is not None:
            filters += ["--filter", f"label={SERVICE_LABEL}={service}"]
        all_flag = [] if running_only else ["--all"]
        out = run(["docker", "ps", *all_flag, "--quiet", "--no-trunc", *filters], timeout=60).stdout
        return sorted(out.split())

    def container(self, service: str) -> str:
        ids = self.containers(service)
        if len(ids) != 1:
            raise AssertionError(f"expected one {service} container, found {len(ids)}")
        return ids[0]

    def state(self, container: str) -> dict[str, object]:
        out = run(["docker", "inspect", "--format", "{{json .State}}", container], timeout=60).stdout
        state: dict[str, object] = json.loads(out)
        return state

    def health(self, container: str) -> str:
        """The health status (healthy, starting, unhealthy), or the container's status without a healthcheck."""
        state = self.state(container)
        health = state.get("Health")
        if isinstance(health, dict):
            return str(health.get("Status"))
        return str(state.get("Status"))

    def wait_healthy(self, services: Sequence[str], timeout: float = 180) -> None:
        """Wait until every container of ``services`` is healthy (or running, without a healthcheck)."""
        deadline = time.monotonic() + timeout
        while True:
            pending = {}
            for service in services:
                ids = self.containers(service)
                if not ids:
                    pending[service] = "no container"
                for cid in ids:
                    status = self.health(cid)
                    if status not in ("healthy", "running"):
                        pending[f"{service}:{cid[:12]}"] = status
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy after {timeout:.0f} s: {pending}")
            time.sleep(0.5)

    def host_port(self, container: str, port: int) -> int:
        """The host port that ``port``/tcp of the container is published on."""
        out = run(["docker", "port", container, f"{port}/tcp"], timeout=60).stdout
        first = out.strip().splitlines()[0]
        return int(first.rsplit(":", 1)[1])

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of this project still in the engine (labelled or named so)."""
        found: dict[str, list[str]] = {}
        label = ["--filter", f"label={PROJECT_LABEL}={self.name}"]
        named = ["--filter", f"name={self.name}"]
        for kind, argv in (
            ("containers", ["docker", "ps", "--all", "--quiet"]),
            ("volumes", ["docker", "volume", "ls", "--quiet"]),
            ("networks", ["docker", "network", "ls", "--quiet"]),
        ):
            ids = set(run([*argv, *label], timeout=60).stdout.split())
            ids |= set(run([*argv, *named], timeout=60).stdout.split())
            if ids:
                found[kind] = sorted(ids)
        return found

    def force_remove(self) -> None:
        """Last resort after a failed ``down``: remove whatever the project left, by id."""
        left = self.leftovers()
        commands = {"containers": ["docker", "rm", "-f", "-v"], "volumes": ["docker", "volume", "rm", "-f"],
                    "networks": ["docker", "network", "rm"]}  # fmt: skip
        for kind in ("containers", "networks", "volumes"):
            if left.get(kind):
                try:
                    run([*commands[kind], *left[kind]], timeout=120)
                except CommandFailed as exc:
                    self.log(f"could not remove {kind} {left[kind]}: {exc}")
