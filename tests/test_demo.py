"""``digitstream demo`` run as users run it: it learns, it answers, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from digitstream.clients.embedded_redis import free_port
from tests.cli_support import REPO, cli_env, run_cli

STARTUP = 120.0  # seconds; a cold start compiles the numba kernels in the worker and the API


def process_identity(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, or None once it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of ``root``."""
    parents: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (identity := process_identity(int(entry))) is not None:
            parents[int(entry)] = identity
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                frontier.append(pid)
    return found


def still_running(processes: dict[int, int]) -> list[int]:
    return [pid for pid, started in processes.items() if (identity := process_identity(pid)) and identity[1] == started]


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment contains ``text``."""
    hits = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for name in ("cmdline", "environ"):
            try:
                if text.encode() in Path(f"/proc/{entry}/{name}").read_bytes():
                    hits.append(int(entry))
                    break
            except OSError:
                continue
    return [pid for pid in hits if process_identity(pid) is not None]


class Demo:
    """A running ``digitstream demo`` subprocess, its API client, and the processes it started."""

    def __init__(self, args: list[str], state: Path) -> None:
        self.state = state
        self.port = free_port()
        command = [
            sys.executable, "-m", "digitstream", "demo", "--port", str(self.port), "--state-dir", str(state), *args
        ]
        self.process = subprocess.Popen(
            command, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        self.children: dict[int, int] = {}

    def wait_for(self, what: str, check: object, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                raise AssertionError(f"the demo exited ({self.process.returncode}) before {what}:\n{out}\n{err}")
            try:
                result = check()  # type: ignore[operator]
            except httpx.HTTPError:
                result = None
            if result:
                self.children.update(descendants(self.process.pid))
                return result
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}")

    def samples_learned(self) -> int | None:
        response = self.api.get("/model")
        return int(response.json()["samples_learned"]) if response.status_code == 200 else None

    def interrupt(self, signum: int = signal.SIGINT, timeout: float = 60.0) -> tuple[str, str]:
        self.children.update(descendants(self.process.pid))
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=timeout)
        return out, err

    def close(self) -> None:
        self.api.close()
        if self.process.poll() is None:  # a failed test: make sure nothing survives it
            self.children.update(descendants(self.process.pid))
            self.process.kill()
            self.process.communicate()
        for pid in still_running(self.children):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[object]:
    demos: list[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(list(args), tmp_path / f"state{len(demos)}")
        demos.append(demo)
        return demo

    yield start
    for demo in demos:
        demo.close()


@pytest.mark.slow
def test_the_demo_learns_answers_predictions_and_stops_cleanly_on_ctrl_c(
    start_demo: object, mnist_dir: Path, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    demo: Demo = start_demo("--data", str(mnist_dir), "--rate", "400")  # type: ignore[operator]
    image = mnist_test[0][0].tolist()

    def prediction() -> dict | None:
        response = demo.api.post("/predict", json={"pixels": image})
        return response.json() if response.status_code == 200 else None

    answer = demo.wait_for("a prediction from its API", prediction, STARTUP)
    assert answer["digit"] in range(10)  # type: ignore[index]
    first = demo.wait_for("a model", demo.samples_learned, 30)
    demo.wait_for("the samples-learned count to rise", lambda: (demo.samples_learned() or 0) > first, 30)  # type: ignore[operator]
    assert len(demo.children) >= 3, demo.children  # redis-server, worker, API
    assert (demo.state / "redis").is_dir()

    out, err = demo.interrupt()
    assert demo.process.returncode == 0, err
    assert f"dashboard   http://127.0.0.1:{demo.port}/" in out
    assert "learned " in out and "accuracy " in out  # the progress lines
    assert "stopped; nothing is left running" in err
    assert still_running(demo.children) == []
    assert processes_mentioning(str(demo.state)) == []
    assert processes_mentioning(f"DIGITSTREAM_PORT={demo.port}") == []
    with socket.socket() as sock:  # nothing listens on the API's port any more
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", demo.port))
        sock.listen()


@pytest.mark.slow
def test_the_demo_uses_the_redis_given_with_redis_url_and_stops_on_sigterm(
    start_demo: object, mnist_dir: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    demo: Demo = start_demo("--data", str(mnist_dir), "--redis-url", redis_url, "--model", "demo-test")  # type: ignore[operator]
    demo.wait_for("a model", demo.samples_learned, STARTUP)
    assert redis_client.get("{demo-test}:snapshot:latest") is not None
    out, err = demo.interrupt(signal.SIGTERM)
    assert demo.process.returncode == 0, err
    assert f"Redis       {redis_url} (yours)" in out
    assert not (demo.state / "redis").exists()  # no embedded Redis was started
    assert still_running(demo.children) == []
    assert redis_client.ping()  # the demo leaves a Redis it did not start running


@pytest.mark.slow
def test_if_the_demo_itself_is_killed_its_children_die_with_it(start_demo: object, mnist_dir: Path) -> None:
    demo: Demo = start_demo("--data", str(mnist_dir))  # type: ignore[operator]
    demo.wait_for("its API", lambda: demo.api.get("/healthz").status_code == 200, STARTUP)
    children = descendants(demo.process.pid)
    assert len(children) >= 3
    demo.process.kill()  # SIGKILL: no chance to clean up; the kernel's death signal does it
    demo.process.communicate()
    deadline = time.monotonic() + 30
    while still_running(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_running(children) == []


def test_a_taken_port_is_refused_with_a_hint(mnist_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("demo", "--port", str(port), "--data", str(mnist_dir), "--state-dir", str(tmp_path))
    assert done.returncode == 2
    assert f"port {port} is already in use" in done.stderr and "--port" in done.stderr
    assert not (tmp_path / "redis").exists()


def test_a_wrong_data_directory_is_refused_before_anything_starts(tmp_path: Path) -> None:
    done = run_cli("demo", "--data", str(tmp_path / "nowhere"), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 2
    assert "MNIST data not found where the data directory given (--data) says" in done.stderr
    assert not (tmp_path / "state").exists()


def test_offline_with_no_data_it_says_exactly_what_to_pass(tmp_path: Path) -> None:
    dead_mirror = f"http://127.0.0.1:{free_port()}/"
    env = cli_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = run_cli("demo", "--mirror", dead_mirror, "--state-dir", str(tmp_path / "state"), env=env)
    assert done.returncode == 2
    assert "downloading it" in done.stderr
    assert f"{dead_mirror}: cannot connect" in done.stderr
    assert "pass --data DIR" in done.stderr and "DIGITSTREAM_DATA_DIR=DIR" in done.stderr
    assert "Traceback" not in done.stderr
