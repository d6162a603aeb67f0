"""Behaviour of download_mnist and find_mnist against a real HTTP server on 127.0.0.1 (no other host)."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from digitstream.datasets import (
    DATA_ENV_VAR,
    MNIST_FILE_STEMS,
    DatasetError,
    RemoteFile,
    default_cache_dir,
    download_mnist,
    find_mnist,
    load_mnist,
    write_idx_images,
    write_idx_labels,
)

LABELS = "t10k-labels-idx1-ubyte.gz"
MIRROR_KINDS = {"good", "corrupt", "error", "slow", "norange", "flaky"}  # any other prefix: 404
TIMEOUT = 5.0  # generous for 127.0.0.1; only the "slow mirror" test waits for a timeout


# --- a local mirror server --------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    mirror: str
    name: str
    range: str | None
    status: int


class MirrorServer(ThreadingHTTPServer):
    """Serves the same files under several URL prefixes, each prefix behaving like one kind of mirror.

    /good/ serves them faithfully (with Range support), /corrupt/ flips bytes, /error/ answers 500,
    /slow/ does not answer until the test ends, /norange/ ignores Range headers, /flaky/ drops the
    connection half-way through the first request for each file.
    """

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.files = files
        self.seen: list[Seen] = []
        self.dropped: set[str] = set()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def url(self, mirror: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/{mirror}/"

    def requests(self, mirror: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if mirror is None or s.mirror == mirror]

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)

    def first_drop(self, name: str) -> bool:
        with self.lock:
            first = name not in self.dropped
            self.dropped.add(name)
            return first

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up early (timeouts, aborted downloads) are expected here."""


class MirrorHandler(BaseHTTPRequestHandler):
    server: MirrorServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        mirror, _, name = self.path.strip("/").partition("/")
        requested = self.headers.get("Range")
        status, body, start = self._respond_to(mirror, name, requested)
        self.server.record(Seen(mirror, name, requested, status))
        if status >= 400:
            self.send_error(status)
            return
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            total = len(self.server.files[name])
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()
        if mirror == "flaky" and self.server.first_drop(name):
            body = body[: len(body) // 2]  # then the connection closes: the client sees a short body
        self.wfile.write(body)

    def _respond_to(self, mirror: str, name: str, requested: str | None) -> tuple[int, bytes, int]:
        if mirror == "error":
            return 500, b"", 0
        if mirror not in MIRROR_KINDS or name not in self.server.files:
            return 404, b"", 0
        if mirror == "slow":
            self.server.release.wait(10)
        body = self.server.files[name]
        if mirror == "corrupt":
            body = corrupted(body)
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if match is None or mirror == "norange":
            return 200, body, 0
        start = int(match.group(1))
        return (206, body[start:], start) if start < len(body) else (416, b"", 0)


def corrupted(data: bytes) -> bytes:
    """Same length, a few bytes flipped in the middle: only a checksum can tell."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables: make sure requests to 127.0.0.1 go straight there."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "*")


@pytest.fixture(scope="module")
def payloads(mnist_dir: Path) -> dict[str, bytes]:
    return {f"{stem}.gz": (mnist_dir / f"{stem}.gz").read_bytes() for stem in MNIST_FILE_STEMS}


@pytest.fixture(scope="module")
def table(payloads: dict[str, bytes]) -> tuple[RemoteFile, ...]:
    """The files to download, identified by the shared files' sha256 and sizes (not the official md5s)."""
    return tuple(
        RemoteFile(name, len(data), sha256=hashlib.sha256(data).hexdigest())
        for name, data in payloads.items()
    )


@pytest.fixture
def labels_only(table: tuple[RemoteFile, ...]) -> tuple[RemoteFile, ...]:
    return tuple(f for f in table if f.name == LABELS)


@pytest.fixture
def server(payloads: dict[str, bytes]) -> Iterator[MirrorServer]:
    mirror_server = MirrorServer(payloads)
    thread = threading.Thread(target=mirror_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield mirror_server
    mirror_server.release.set()
    mirror_server.shutdown()
    mirror_server.server_close()
    thread.join(5)


@pytest.fixture
def down_mirror() -> str:
    """A URL on a 127.0.0.1 port where nothing listens (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_holds(directory: Path, files: tuple[RemoteFile, ...]) -> None:
    """Every file is there with the right content, and no .part file is left behind."""
    for remote in files:
        assert sha256_of(directory / remote.name) == remote.sha256, remote.name
    assert not list(directory.glob("*.part"))


def fake_mnist_dir(directory: Path) -> Path:
    """A tiny but valid MNIST directory (2 samples per split)."""
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx_images(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (2, 784)))
        write_idx_labels(directory / f"{prefix}-labels-idx1-ubyte.gz", [1, 2])
    return directory


# --- download_mnist ---------------------------------------------------------------------------


def test_downloads_every_file_from_a_good_mirror_into_an_empty_cache(
    server: MirrorServer, table: tuple[RemoteFile, ...], cache: Path
) -> None:
    assert download_mnist(cache, mirrors=[server.url("good")], files=table, timeout=TIMEOUT) == cache
    assert_holds(cache, table)
    assert len(load_mnist(cache, "train")) == 22_699
    assert [s.name for s in server.requests()] == [f.name for f in table]


def test_reports_progress_up_to_the_file_size(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path
) -> None:
    calls: list[tuple[str, int, int | None]] = []
    download_mnist(
        cache,
        mirrors=[server.url("good")],
        files=labels_only,
        timeout=TIMEOUT,
        progress=lambda *call: calls.append(call),
    )
    size = labels_only[0].size
    assert calls[0] == (LABELS, 0, size) and calls[-1] == (LABELS, size, size)


def test_a_mirror_serving_corrupt_bytes_is_skipped_and_they_never_reach_the_final_name(
    server: MirrorServer, table: tuple[RemoteFile, ...], cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    final_name_seen_during_download: list[bool] = []

    def progress(name: str, done: int, total: int | None) -> None:
        final_name_seen_during_download.append((cache / name).exists())

    caplog.set_level(logging.WARNING, logger="digitstream.datasets")
    mirrors = [server.url("corrupt"), server.url("good")]
    download_mnist(cache, mirrors=mirrors, files=table, timeout=TIMEOUT, progress=progress)

    assert_holds(cache, table)
    assert not any(final_name_seen_during_download)
    assert len(server.requests("corrupt")) == len(server.requests("good")) == len(table)
    assert any(server.url("corrupt") in r.getMessage() and "sha256" in r.getMessage() for r in caplog.records)


def test_a_corrupt_download_leaves_neither_a_final_file_nor_a_part_file(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path
) -> None:
    with pytest.raises(DatasetError, match="corrupt"):
        download_mnist(cache, mirrors=[server.url("corrupt")], files=labels_only, timeout=TIMEOUT)
    assert list(cache.iterdir()) == []


def test_a_mirror_that_is_down_is_logged_and_the_next_one_is_used(
    server: MirrorServer,
    table: tuple[RemoteFile, ...],
    cache: Path,
    down_mirror: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="digitstream.datasets")
    download_mnist(cache, mirrors=[down_mirror, server.url("good")], files=table, timeout=TIMEOUT)
    assert_holds(cache, table)
    assert any(down_mirror in r.getMessage() and "cannot connect" in r.getMessage() for r in caplog.records)


def test_a_mirror_answering_with_an_error_status_is_skipped(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path
) -> None:
    download_mnist(
        cache, mirrors=[server.url("error"), server.url("good")], files=labels_only, timeout=TIMEOUT
    )
    assert_holds(cache, labels_only)
    assert [s.status for s in server.requests()] == [500, 200]


def test_a_mirror_that_does_not_answer_in_time_is_skipped(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path
) -> None:
    download_mnist(cache, mirrors=[server.url("slow"), server.url("good")], files=labels_only, timeout=0.3)
    assert_holds(cache, labels_only)


def test_when_every_mirror_fails_the_error_lists_each_mirror_and_how_to_get_the_files_by_hand(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path, down_mirror: str
) -> None:
    mirrors = [down_mirror, server.url("error"), server.url("corrupt"), server.url("missing")]
    with pytest.raises(DatasetError) as excinfo:
        download_mnist(cache, mirrors=mirrors, files=labels_only, timeout=TIMEOUT)
    message = str(excinfo.value)
    lines = {mirror: next(line for line in message.splitlines() if mirror in line) for mirror in mirrors}
    assert "cannot connect" in lines[down_mirror]
    assert "HTTP 500" in lines[server.url("error")]
    assert "corrupt" in lines[server.url("corrupt")] and "sha256" in lines[server.url("corrupt")]
    assert "HTTP 404" in lines[server.url("missing")]
    assert LABELS in message and str(cache) in message
    assert "--data DIR" in message and DATA_ENV_VAR in message
    assert not (cache / LABELS).exists()


def test_an_interrupted_download_resumes_with_a_range_request(
    server: MirrorServer, table: tuple[RemoteFile, ...], cache: Path
) -> None:
    download_mnist(cache, mirrors=[server.url("flaky")], files=table, timeout=TIMEOUT)
    assert_holds(cache, table)
    for remote in table:
        first, second = [s for s in server.requests() if s.name == remote.name]
        assert remote.size is not None
        assert first.range is None
        assert second.range == f"bytes={remote.size // 2}-" and second.status == 206


def test_a_part_file_is_kept_for_later_when_every_mirror_fails_mid_file(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path, payloads: dict[str, bytes]
) -> None:
    cache.mkdir()
    (cache / f"{LABELS}.part").write_bytes(payloads[LABELS][:1000])
    with pytest.raises(DatasetError, match=r"was kept; the next attempt resumes it"):
        download_mnist(cache, mirrors=[server.url("error")], files=labels_only, timeout=TIMEOUT)
    assert (cache / f"{LABELS}.part").read_bytes() == payloads[LABELS][:1000]
    assert not (cache / LABELS).exists()


def test_a_part_file_left_by_an_earlier_run_is_resumed(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path, payloads: dict[str, bytes]
) -> None:
    cache.mkdir()
    (cache / f"{LABELS}.part").write_bytes(payloads[LABELS][:1000])
    download_mnist(cache, mirrors=[server.url("good")], files=labels_only, timeout=TIMEOUT)
    assert_holds(cache, labels_only)
    assert [(s.range, s.status) for s in server.requests()] == [("bytes=1000-", 206)]


def test_a_server_that_ignores_range_restarts_the_file_from_the_beginning(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path, payloads: dict[str, bytes]
) -> None:
    cache.mkdir()
    (cache / f"{LABELS}.part").write_bytes(payloads[LABELS][:1000])
    download_mnist(cache, mirrors=[server.url("norange")], files=labels_only, timeout=TIMEOUT)
    assert_holds(cache, labels_only)
    assert [(s.range, s.status) for s in server.requests()] == [("bytes=1000-", 200)]


def test_a_corrupt_part_file_is_discarded_and_the_file_downloaded_afresh(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path
) -> None:
    cache.mkdir()
    (cache / f"{LABELS}.part").write_bytes(b"\x00" * 1000)
    download_mnist(cache, mirrors=[server.url("good")], files=labels_only, timeout=TIMEOUT)
    assert_holds(cache, labels_only)
    assert [(s.range, s.status) for s in server.requests()] == [("bytes=1000-", 206), (None, 200)]


def test_a_complete_part_file_is_verified_and_moved_into_place_without_a_request(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path, payloads: dict[str, bytes]
) -> None:
    cache.mkdir()
    (cache / f"{LABELS}.part").write_bytes(payloads[LABELS])
    download_mnist(cache, mirrors=[server.url("good")], files=labels_only, timeout=TIMEOUT)
    assert_holds(cache, labels_only)
    assert server.requests() == []


def test_files_already_present_and_valid_are_not_downloaded_again(
    server: MirrorServer, table: tuple[RemoteFile, ...], cache: Path
) -> None:
    download_mnist(cache, mirrors=[server.url("good")], files=table, timeout=TIMEOUT)
    assert len(server.requests()) == len(table)
    download_mnist(cache, mirrors=[server.url("good")], files=table, timeout=TIMEOUT)
    assert len(server.requests()) == len(table)


def test_an_invalid_file_in_the_cache_is_replaced(
    server: MirrorServer, labels_only: tuple[RemoteFile, ...], cache: Path, payloads: dict[str, bytes]
) -> None:
    cache.mkdir()
    (cache / LABELS).write_bytes(corrupted(payloads[LABELS]))
    download_mnist(cache, mirrors=[server.url("good")], files=labels_only, timeout=TIMEOUT)
    assert_holds(cache, labels_only)


# --- find_mnist -------------------------------------------------------------------------------


def test_an_explicit_data_dir_wins_over_the_environment_and_the_cache(
    tmp_path: Path, mnist_dir: Path
) -> None:
    env = {DATA_ENV_VAR: str(fake_mnist_dir(tmp_path / "env"))}
    cache = fake_mnist_dir(tmp_path / "cache")
    assert find_mnist(mnist_dir, env=env, cache_dir=cache, download=False) == mnist_dir


def test_an_explicit_data_dir_without_the_files_is_an_error_not_a_fallback(
    tmp_path: Path, server: MirrorServer, table: tuple[RemoteFile, ...]
) -> None:
    (tmp_path / "empty").mkdir()
    env = {DATA_ENV_VAR: str(fake_mnist_dir(tmp_path / "env"))}
    with pytest.raises(DatasetError) as excinfo:
        find_mnist(
            tmp_path / "empty",
            env=env,
            cache_dir=tmp_path / "cache",
            mirrors=[server.url("good")],
            files=table,
        )
    message = str(excinfo.value)
    assert str(tmp_path / "empty") in message and "--data" in message
    assert all(f"{stem}.gz" in message for stem in MNIST_FILE_STEMS)
    assert server.requests() == []


def test_a_data_dir_that_does_not_exist_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a directory"):
        find_mnist(tmp_path / "nowhere", env={}, cache_dir=tmp_path / "cache", download=False)


def test_the_environment_variable_is_used_when_no_directory_is_given(
    tmp_path: Path, mnist_dir: Path, server: MirrorServer, table: tuple[RemoteFile, ...]
) -> None:
    env = {DATA_ENV_VAR: str(mnist_dir)}
    cache = fake_mnist_dir(tmp_path / "cache")
    assert find_mnist(env=env, cache_dir=cache, mirrors=[server.url("good")], files=table) == mnist_dir
    assert server.requests() == []


def test_an_environment_variable_naming_a_directory_without_the_files_is_an_error(tmp_path: Path) -> None:
    cache = fake_mnist_dir(tmp_path / "cache")
    with pytest.raises(DatasetError, match=DATA_ENV_VAR):
        find_mnist(env={DATA_ENV_VAR: str(tmp_path)}, cache_dir=cache, download=False)


def test_the_cache_is_used_when_it_holds_the_files(
    tmp_path: Path, server: MirrorServer, table: tuple[RemoteFile, ...]
) -> None:
    cache = fake_mnist_dir(tmp_path / "cache")
    assert find_mnist(env={}, cache_dir=cache, mirrors=[server.url("good")], files=table) == cache
    assert server.requests() == []


def test_raw_uncompressed_files_in_the_cache_count_as_present(tmp_path: Path, mnist_dir: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for stem in MNIST_FILE_STEMS:
        shutil.copyfile(mnist_dir / f"{stem}.gz", cache / stem)  # gzip bytes under the raw name: fine
    assert find_mnist(env={}, cache_dir=cache, download=False) == cache
    assert len(load_mnist(cache, "test")) == 10_000


def test_the_files_are_downloaded_into_the_cache_when_found_nowhere(
    tmp_path: Path, server: MirrorServer, table: tuple[RemoteFile, ...]
) -> None:
    cache = tmp_path / "cache"
    assert find_mnist(env={}, cache_dir=cache, mirrors=[server.url("good")], files=table) == cache
    assert_holds(cache, table)
    assert len(server.requests()) == len(table)


def test_without_data_or_download_the_error_says_exactly_what_to_do(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    with pytest.raises(DatasetError) as excinfo:
        find_mnist(env=env, download=False)
    message = str(excinfo.value)
    assert "--data DIR" in message
    assert DATA_ENV_VAR in message
    assert "digitstream data download" in message
    assert all(f"{stem}.gz" in message for stem in MNIST_FILE_STEMS)
    assert str(tmp_path / "xdg" / "digitstream" / "mnist") in message


def test_a_failed_download_error_also_says_what_to_do(
    tmp_path: Path, down_mirror: str, table: tuple[RemoteFile, ...]
) -> None:
    with pytest.raises(DatasetError) as excinfo:
        find_mnist(env={}, cache_dir=tmp_path / "cache", mirrors=[down_mirror], files=table)
    message = str(excinfo.value)
    assert down_mirror in message and "digitstream data download" in message and "--data DIR" in message


def test_the_default_cache_follows_xdg_cache_home_else_the_home_directory(tmp_path: Path) -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "digitstream" / "mnist"
    home_cache = Path.home() / ".cache" / "digitstream" / "mnist"
    assert default_cache_dir({}) == home_cache
    assert default_cache_dir({"XDG_CACHE_HOME": "relative/dir"}) == home_cache  # the XDG spec ignores these
