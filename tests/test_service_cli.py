"""``digitstream serve`` as users run it: a subprocess configured by options and DIGITSTREAM_* variables."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from digitstream.clients.embedded_redis import free_port
from digitstream.learner import DeltaRuleLearner
from tests.cli_support import REPO, cli_env
from tests.service_support import trained, write  # noqa: F401
from tests.test_live_events import SSEClient


class Serve:
    """A running ``digitstream serve`` process with its log in a file."""

    def __init__(self, log: Path, *args: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digitstream", "serve", "--port", str(self.port), *args],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not ready within {timeout}s: {self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log.closed:
            self._log.close()
        return self.process.returncode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    processes: list[Serve] = []

    def start(*args: str, **env: str) -> Serve:
        process = Serve(tmp_path / f"serve-{len(processes)}.log", *args, env=cli_env(**env))
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


def test_serve_answers_from_the_latest_snapshot_and_shuts_down_gracefully_on_sigterm(
    serve: Callable[..., Serve], redis_url: str, write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = serve("--redis-url", redis_url)
    server.wait_ready()
    answer = httpx.post(f"{server.url}/predict", json={"pixels": [0] * 784}).json()
    assert (answer["model_version"], answer["samples_learned"]) == (1, trained.n_samples)
    assert httpx.get(f"{server.url}/model").json()["model"] == "digitstream"
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says how it ended.
    assert server.stop() in (0, -signal.SIGTERM)
    log = server.log()
    assert "Application shutdown complete" in log and "Traceback" not in log


def test_sigterm_ends_open_event_streams_at_once_so_serve_can_exit(
    serve: Callable[..., Serve], redis_url: str, write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = serve("--redis-url", redis_url)
    server.wait_ready()
    stream = SSEClient(f"{server.url}/model/events")
    assert stream.next("hello")["data"]["served"] == 1
    started = time.monotonic()
    assert server.stop() in (0, -signal.SIGTERM)
    assert stream.ended.wait(5) and time.monotonic() - started < 4, "serve waited for the endless stream"
    assert "Application shutdown complete" in server.log()


def test_serve_takes_its_settings_from_the_environment_too(
    serve: Callable[..., Serve], redis_url: str, write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = serve(DIGITSTREAM_REDIS_URL=redis_url, DIGITSTREAM_API_KEY="from-env")
    server.wait_ready()
    assert httpx.post(f"{server.url}/model/unpin").status_code == 401
    assert httpx.post(f"{server.url}/model/unpin", headers={"X-API-Key": "from-env"}).status_code == 200


def test_serve_with_several_worker_processes_passes_the_settings_to_each(
    serve: Callable[..., Serve], redis_url: str, write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = serve("--redis-url", redis_url, "--api-key", "k", "--workers", "2")
    server.wait_ready()
    for _ in range(10):  # answered by either process: both know the key and the Redis
        assert httpx.post(f"{server.url}/model/unpin").status_code == 401
        assert httpx.post(f"{server.url}/model/unpin", headers={"X-API-Key": "k"}).status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--redis-url", "http://localhost:6379"), "redis_url (DIGITSTREAM_REDIS_URL): Value error, must start with"),
        (("--port", "70000"), "port (DIGITSTREAM_PORT): Input should be less than or equal to 65535"),
        (("--log-level", "loud"), "Invalid value for '--log-level'"),
    ],
)
def test_serve_refuses_bad_settings_with_exit_code_2_naming_them(args: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "digitstream", "serve", *args],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr


def test_json_log_format_covers_uvicorn_and_the_service(
    serve: Callable[..., Serve], redis_url: str, write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    process = serve("--redis-url", redis_url, "--log-format", "json")
    process.wait_ready()
    assert process.stop() in (0, -signal.SIGTERM)
    records = [json.loads(line) for line in process.log_path.read_text().splitlines() if line.strip()]
    loggers = {r["logger"] for r in records}
    assert "uvicorn.error" in loggers and any(name.startswith("digitstream.service") for name in loggers), loggers
