"""Uploads with a bounded cost: the multipart body read in memory, and a few decodes at a time per process.

Starlette's form parser spools file parts over 1 MB to temporary files; here the body (already
limited to ``max_upload_bytes``) is parsed in memory by python-multipart's low-level parser and
only the ``file`` part is kept. Decoding runs in a thread, at most ``image_decoders`` at once per
process, with a short bounded queue: past it the upload is answered 503 with ``Retry-After``
instead of queueing work (and memory) without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException

from .body_limit import RETRY_AFTER
from .validation import InvalidInput

MAX_PARTS = 8
NICE = 10
QUEUE_PER_SLOT = 8  # uploads that may wait for each decode slot
DECODE_WAIT = 10.0  # seconds an upload may wait for a slot
T = TypeVar("T")


class DecodeSlots:
    """Image decodes of this process: ``slots`` at once in low-priority threads, a bounded queue for the rest.

    An upload waits for a slot at most ``DECODE_WAIT`` seconds, behind at most ``QUEUE_PER_SLOT``
    others per slot; past either bound it is answered 503 with ``Retry-After``. Waiting costs no
    CPU, so a crowd of uploads does not turn into a storm of retries. Only the event loop counts
    them (no lock). The threads run at a lower CPU priority (nice ``NICE``, Linux): on a busy
    machine the event loop, hence /predict, is served first.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.busy = 0
        self.waiting = 0
        self.refused = 0
        self._free = asyncio.Semaphore(slots)
        self._executor: ThreadPoolExecutor | None = None

    def check(self) -> None:
        """503 with Retry-After when the slots and the queue are full (before the body is read)."""
        if self.busy + self.waiting >= self.slots * (1 + QUEUE_PER_SLOT):
            self._refuse(f"file: {self.busy} uploads are being decoded and {self.waiting} wait, the most this "
                         "service takes at once; retry later")  # fmt: skip

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a decode thread once a slot is free, or 503 with Retry-After."""
        self.check()
        self.waiting += 1
        try:
            await asyncio.wait_for(self._free.acquire(), DECODE_WAIT)
        except TimeoutError:
            self._refuse(f"file: no decode slot freed within {DECODE_WAIT:g} s; retry later")
        finally:
            self.waiting -= 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.slots, "decode", initializer=_lower_priority)
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self.busy -= 1
            self._free.release()

    def _refuse(self, detail: str) -> NoReturn:
        self.refused += 1
        raise HTTPException(503, detail, headers={"Retry-After": RETRY_AFTER})

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def give_memory_back() -> None:
    """Return the freed heap of a decode to the OS (glibc keeps it otherwise): the next request starts lean."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_malloc_trim = _load_malloc_trim()


def _lower_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):  # Linux: a thread id is a process id to setpriority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


def form_file(body: bytes | bytearray, content_type: str, field: str = "file") -> bytes:
    """The bytes of the part named ``field`` of a ``multipart/form-data`` body."""
    media, options = parse_options_header(content_type)
    if media != b"multipart/form-data":
        shown = media.decode("latin-1") or "none"
        raise InvalidInput(f"body: expected multipart/form-data with a '{field}' part (a PNG or JPEG), "
                           f"got Content-Type {shown}", 415)  # fmt: skip
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("body: multipart/form-data without a boundary")
    parts: list[tuple[bytes | None, bytearray]] = []
    header: list[bytes] = [b"", b""]
    current: dict[str, bytes | None] = {"name": None}

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise InvalidInput(f"body: more than {MAX_PARTS} form parts")
        current["name"] = None
        parts.append((None, bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += bytes(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += bytes(data[start:end])

    def on_header_end() -> None:
        if header[0].lower() == b"content-disposition":
            _, params = parse_options_header(header[1])
            parts[-1] = (params.get(b"name"), parts[-1][1])
        header[0], header[1] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if parts[-1][0] == field.encode():  # only the file is kept
            parts[-1][1].extend(data[start:end])

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data,
    })  # fmt: skip
    try:
        parser.write(body)  # type: ignore[arg-type]  # a bytearray is read the same way
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidInput(f"body: invalid multipart/form-data ({exc})") from None
    for name, data in parts:
        if name == field.encode():
            return bytes(data)
    raise InvalidInput(f"{field}: field required (a multipart/form-data part named '{field}')")
