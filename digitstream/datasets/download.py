"""Downloading the official MNIST files from a list of mirrors: resumable, checksummed, atomic."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .idx import DATA_ENV_VAR, DatasetError

logger = logging.getLogger("digitstream.datasets")

#: Called as ``progress(file_name, bytes_done, bytes_total_or_None)`` while a file downloads.
ProgressCallback = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch and how to recognise a good copy of it (any checksum given must match)."""

    name: str
    size: int | None
    md5: str | None = None
    sha256: str | None = None


OFFICIAL_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("train-images-idx3-ubyte.gz", 9_912_422, md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile("train-labels-idx1-ubyte.gz", 28_881, md5="d53e105ee54ea40749a09fcbcd1e9432"),
    RemoteFile("t10k-images-idx3-ubyte.gz", 1_648_877, md5="9fb629c4189551a2d022fa330f9573f3"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", 4_542, md5="ec29112dd5afa0611ce80d1b7f02629c"),
)

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_CHUNK = 1 << 16
# Per mirror and file: resumes after a dropped connection that made progress, and one restart from
# scratch when a resumed file turns out corrupt (the kept prefix may be what was wrong).
_MAX_ATTEMPTS_PER_MIRROR = 4
_USER_AGENT = "digitstream-datasets (Python urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _MirrorFailure(Exception):
    """One mirror could not deliver one file; the caller logs it and tries the next mirror."""

    def __init__(self, reason: str, *, unreachable: bool = False, restart: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable  # no connection at all: try this mirror last for later files
        self.restart = restart  # the partial file was discarded: worth one more try from scratch


def download_mnist(
    cache_dir: Path,
    *,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    files: Sequence[RemoteFile] = OFFICIAL_FILES,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> Path:
    """Make sure every file is in cache_dir with the right checksum, fetching what is missing.

    Files already present and valid are not fetched again; the others go through ``<name>.part``
    (resumed with a Range request when one exists) and are moved into place only once verified.
    Raises DatasetError, listing each mirror and why it failed, when no mirror delivers a file.
    """
    cache_dir = Path(cache_dir).expanduser()
    _make_cache_dir(cache_dir)
    unreachable: list[str] = []
    for remote in files:
        _ensure_file(cache_dir, remote, mirrors, files, timeout, progress, unreachable)
    return cache_dir


def verify_file(path: Path, remote: RemoteFile) -> str | None:
    """What is wrong with the file compared with ``remote`` (size, then checksums), or None if good."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"size {size} bytes, expected {remote.size}"
    digests = _file_digests(path, md5=remote.md5 is not None, sha256=remote.sha256 is not None)
    for algorithm, expected in (("md5", remote.md5), ("sha256", remote.sha256)):
        if expected is not None and digests[algorithm] != expected.lower():
            return f"{algorithm} {digests[algorithm]}, expected {expected.lower()}"
    return None


def _ensure_file(
    cache_dir: Path,
    remote: RemoteFile,
    mirrors: Sequence[str],
    files: Sequence[RemoteFile],
    timeout: float,
    progress: ProgressCallback | None,
    unreachable: list[str],
) -> None:
    """Leave a verified copy of one file in cache_dir, trying the mirrors in order."""
    target = cache_dir / remote.name
    if target.is_file():
        problem = verify_file(target, remote)
        if problem is None:
            logger.debug("%s is already present and valid; not downloading it", target)
            return
        logger.warning("%s is invalid (%s); downloading it again", target, problem)
    failures: list[tuple[str, str]] = []
    for mirror in _reachable_first(mirrors, unreachable):
        try:
            _download_from_mirror(_file_url(mirror, remote.name), target, remote, timeout, progress)
        except _MirrorFailure as failure:
            logger.warning("mirror %s failed to deliver %s: %s", mirror, remote.name, failure.reason)
            failures.append((mirror, failure.reason))
            if failure.unreachable and mirror not in unreachable:
                unreachable.append(mirror)
            continue
        logger.info("downloaded %s from %s", remote.name, mirror)
        return
    raise DatasetError(_all_mirrors_failed(cache_dir, remote, failures, files))


def _download_from_mirror(
    url: str, target: Path, remote: RemoteFile, timeout: float, progress: ProgressCallback | None
) -> None:
    """Fetch one file from one mirror into ``<name>.part``, verify it, then move it into place."""
    part = target.with_name(target.name + ".part")
    for attempt in range(1, _MAX_ATTEMPTS_PER_MIRROR + 1):
        start = _usable_part_size(part, remote)
        try:
            if remote.size is None or start < remote.size:
                _fetch(url, part, start, remote, timeout, progress)
            _accept(part, target, remote, resumed=start > 0)
            return
        except _MirrorFailure as failure:
            progressed = _size_or_zero(part) > start
            if attempt == _MAX_ATTEMPTS_PER_MIRROR or not (progressed or failure.restart):
                raise
            logger.info("retrying %s (%s)", url, failure.reason)


def _accept(part: Path, target: Path, remote: RemoteFile, *, resumed: bool) -> None:
    """Move a verified .part to its final name; delete it if it is corrupt."""
    problem = verify_file(part, remote)
    if problem is not None:
        part.unlink(missing_ok=True)
        what = "resumed download is corrupt" if resumed else "served a corrupt file"
        raise _MirrorFailure(f"{what} ({problem}); partial file deleted", restart=resumed)
    os.replace(part, target)


def _fetch(
    url: str, part: Path, start: int, remote: RemoteFile, timeout: float, progress: ProgressCallback | None
) -> None:
    """One HTTP request: append to the .part from ``start`` (206) or rewrite it from zero (200)."""
    headers = {"User-Agent": _USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            offset, total = _response_offset(response, start, remote)
            _stream(response, part, offset, total, remote.name, progress)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and start:
            part.unlink(missing_ok=True)
            raise _MirrorFailure("refused to resume (HTTP 416); partial file deleted", restart=True) from exc
        raise _MirrorFailure(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _MirrorFailure(f"cannot connect ({_describe(exc.reason)})", unreachable=True) from exc
    except TimeoutError as exc:
        raise _MirrorFailure(f"timed out (no data for {timeout:g} s)", unreachable=True) from exc
    except (http.client.HTTPException, OSError) as exc:
        raise _MirrorFailure(f"connection failed ({_describe(exc)})") from exc


def _response_offset(response: http.client.HTTPResponse, start: int, remote: RemoteFile) -> tuple[int, int | None]:
    """Where the response body starts in the file, and the file's total size if known."""
    status = getattr(response, "status", None)
    if status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match is None or int(match.group(1)) != start:
            raise _MirrorFailure(
                f"answered the range request for bytes {start}- with Content-Range "
                f"{response.headers.get('Content-Range')!r}"
            )
        total = None if match.group(3) == "*" else int(match.group(3))
        return start, _check_total(total, remote)
    if status not in (200, None):  # None: a non-HTTP mirror such as file://
        raise _MirrorFailure(f"unexpected HTTP status {status}")
    if start:
        logger.info("%s ignored the Range request; downloading from the beginning", response.geturl())
    length = response.headers.get("Content-Length")
    return 0, _check_total(int(length) if length and length.isdigit() else None, remote)


def _check_total(announced: int | None, remote: RemoteFile) -> int | None:
    """Fail before downloading when the server announces a size other than the expected one."""
    if announced is not None and remote.size is not None and announced != remote.size:
        raise _MirrorFailure(f"serves {announced} bytes, expected {remote.size}")
    return remote.size if remote.size is not None else announced


def _stream(
    response: BinaryIO,
    part: Path,
    offset: int,
    total: int | None,
    name: str,
    progress: ProgressCallback | None,
) -> None:
    """Copy the body to the .part file from ``offset``; a body cut short raises _MirrorFailure."""
    done = offset
    with _open_part(part, offset) as handle:
        if progress is not None:
            progress(name, done, total)
        while chunk := response.read(_CHUNK):
            _write(handle, part, chunk)
            done += len(chunk)
            if progress is not None:
                progress(name, done, total)
    if total is not None and done < total:
        raise _MirrorFailure(f"connection closed after {done} of {total} bytes")


def _open_part(part: Path, offset: int) -> BinaryIO:
    try:
        handle = part.open("r+b" if offset else "wb")
        handle.seek(offset)
        handle.truncate()
    except OSError as exc:
        raise DatasetError(f"cannot write {part} ({exc}); check that the directory is writable.") from exc
    return handle


def _write(handle: BinaryIO, part: Path, chunk: bytes) -> None:
    """Write to the .part; a local failure (disk full...) is not the mirror's fault, so it is fatal."""
    try:
        handle.write(chunk)
    except OSError as exc:
        raise DatasetError(f"cannot write {part} ({exc}); free some space or choose another cache dir.") from exc


def _usable_part_size(part: Path, remote: RemoteFile) -> int:
    """Bytes of an earlier .part worth resuming from; a .part longer than the file is deleted."""
    size = _size_or_zero(part)
    if remote.size is not None and size > remote.size:
        logger.warning("%s is larger than the expected %d bytes; deleting it", part, remote.size)
        part.unlink(missing_ok=True)
        return 0
    return size


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _file_digests(path: Path, *, md5: bool, sha256: bool) -> dict[str, str]:
    hashers: dict[str, hashlib._Hash] = {}
    if md5:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    if sha256:
        hashers["sha256"] = hashlib.sha256()
    if hashers:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                for hasher in hashers.values():
                    hasher.update(block)
    return {algorithm: hasher.hexdigest() for algorithm, hasher in hashers.items()}


def _make_cache_dir(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"cannot create the cache directory {cache_dir} ({exc}); choose another one or fix its permissions."
        ) from exc


def _reachable_first(mirrors: Sequence[str], unreachable: list[str]) -> list[str]:
    """Mirrors in order, those that could not be reached for an earlier file moved to the end."""
    return [m for m in mirrors if m not in unreachable] + [m for m in mirrors if m in unreachable]


def _file_url(mirror: str, name: str) -> str:
    return (mirror if mirror.endswith("/") else mirror + "/") + urllib.parse.quote(name)


def _describe(reason: object) -> str:
    return str(reason) or type(reason).__name__


def _all_mirrors_failed(
    cache_dir: Path, remote: RemoteFile, failures: list[tuple[str, str]], files: Sequence[RemoteFile]
) -> str:
    tried = "\n".join(f"  - {mirror}: {reason}" for mirror, reason in failures) or "  (no mirrors were given)"
    names = ", ".join(f.name for f in files)
    part = cache_dir / f"{remote.name}.part"
    kept = f"The partial download {part} was kept; the next attempt resumes it.\n" if part.exists() else ""
    return (
        f"Could not download {remote.name} into {cache_dir}; every mirror failed:\n{tried}\n{kept}"
        f"To get the MNIST files manually, download {names} from any MNIST mirror and either\n"
        f"  - save them in {cache_dir}, or\n"
        f"  - save them in a directory DIR and pass --data DIR (or set {DATA_ENV_VAR}=DIR)."
    )
