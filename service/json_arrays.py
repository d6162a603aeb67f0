"""Large JSON batches read in pieces straight into numpy, so that a body costs little more than its own bytes.

``orjson.loads`` on a 39 MB batch makes 10,000 Python lists (~65 MB) and ``np.array`` an int64
copy (~65 MB) before the uint8 result; a hostile body of tiny objects (``[{},{},...]``) costs 20x
its size. Here a body over ``WHOLE_LIMIT`` is cut at the boundaries between the items of its
``images`` (or ``samples``) array into pieces of ~``PIECE`` bytes. A piece of plain integers is
parsed by a vectorised scanner (no Python object per number); any other piece (``7.0``, a
string, bad JSON) by orjson and the usual validation, so the answers and messages are those of
a whole parse, with the item's index in the whole batch. The rest of the document (the body
with the array swapped for a random token) must be small and valid JSON naming the array once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from digitstream.protocol import N_PIXELS

from . import validation
from .validation import InvalidInput

WHOLE_LIMIT = 1024 * 1024  # bodies up to this are parsed whole (at most ~20 MB of Python objects)
PIECE = 256 * 1024
REST_LIMIT = 64 * 1024

Body = bytes | bytearray

_DIGIT, _COMMA, _OPEN, _CLOSE, _OTHER = 1, 2, 3, 4, 5
_CLASS = np.full(256, _OTHER, dtype=np.uint8)
_CLASS[ord("0") : ord("9") + 1] = _DIGIT
_CLASS[[ord(c) for c in " \t\r\n"]] = 0
_CLASS[ord(",")], _CLASS[ord("[")], _CLASS[ord("]")] = _COMMA, _OPEN, _CLOSE


class _Array:
    """Where an array of items begins in a body, and how its items are separated and closed."""

    def __init__(self, key: str, item_open: bytes, item_close: bytes) -> None:
        self.key = key
        self.start = re.compile(rb'"' + key.encode() + rb'"\s*:\s*\[')
        o, c = re.escape(item_open), re.escape(item_close)
        self.between = re.compile(c + rb"\s*,\s*" + o)
        self.end = re.compile(c + rb"\s*\]")
        self.empty = re.compile(rb"\s*\]")


IMAGES = _Array("images", b"[", b"]")
SAMPLES = _Array("samples", b"{", b"}")


def read_images(body: Body, max_batch: int, *, whole_limit: int = WHOLE_LIMIT, piece_size: int = PIECE) -> np.ndarray:
    """The (n, 784) uint8 images of a JSON ``{"images": [[784 integers], ...]}`` body."""
    if len(body) <= whole_limit:
        data = validation.parse_json(body)
        return validation.images(validation.get_field(data, "images"), max_batch)
    parts: list[np.ndarray] = []
    count = 0
    for piece, first in _pieces(body, IMAGES, piece_size):
        images = _plain_integers(piece, N_PIXELS)
        if images is None:
            images = validation.images(_parse_piece(piece, "images", first), max_batch, start=first)
        count += len(images)
        _check_count(count, max_batch, "images")
        parts.append(images)
    return _joined(parts, count, "images", max_batch, np.empty((0, N_PIXELS), dtype=np.uint8))


def read_samples(
    body: Body, max_batch: int, *, whole_limit: int = WHOLE_LIMIT, piece_size: int = PIECE
) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 784) uint8, labels (n,)) of a JSON ``{"samples": [{"pixels": ..., "label": ...}, ...]}`` body."""
    if len(body) <= whole_limit:
        data = validation.parse_json(body)
        return validation.samples(validation.get_field(data, "samples"), max_batch)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    count = 0
    for piece, first in _pieces(body, SAMPLES, piece_size):
        piece_images, piece_labels = validation.samples(_parse_piece(piece, "samples", first), max_batch, start=first)
        count += len(piece_labels)
        _check_count(count, max_batch, "samples")
        images.append(piece_images)
        labels.append(piece_labels)
    empty = np.empty((0, N_PIXELS), dtype=np.uint8)
    return _joined(images, count, "samples", max_batch, empty), np.concatenate(labels or [np.empty(0, np.int64)])


def _joined(parts: list[np.ndarray], count: int, name: str, max_batch: int, empty: np.ndarray) -> np.ndarray:
    validation.check_batch_size(count, max_batch, name)
    return np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else empty)


def _check_count(count: int, max_batch: int, name: str) -> None:
    if count > max_batch:
        raise InvalidInput(f"{name}: more than {max_batch} items exceed the maximum batch of {max_batch}", 413)


def _pieces(body: Body, array: _Array, piece_size: int = PIECE) -> Iterator[tuple[memoryview, int]]:
    """The array's items as pieces of about ``PIECE`` bytes (each a comma-separated run of whole items).

    Yields (piece, index of its first item); then checks the rest of the document.
    """
    found = array.start.search(body)
    if found is None:
        raise InvalidInput(f'{array.key}: field required (a body over {WHOLE_LIMIT:,} bytes must be a JSON object '
                           f'with an "{array.key}" array)')  # fmt: skip
    view = memoryview(body)
    position = found.end()
    close = array.empty.match(body, position)
    first = 0
    while close is None:
        ahead = position + piece_size
        boundary = array.between.search(body, ahead) if ahead < len(body) else None
        limit = boundary.start() + 1 if boundary is not None else len(body)
        end = array.end.search(body, position, limit + 1)
        if end is not None:  # the last piece
            yield view[position : end.start() + 1], first
            close = end
            break
        if boundary is None:
            raise InvalidInput(f"{array.key}: the array is not closed (the body ends inside it)")
        piece = view[position : boundary.start() + 1]
        yield piece, first
        first += _items_in(piece, array)
        position = boundary.end() - 1
    _check_rest(body, found.end() - 1, close.end(), array.key)


def _items_in(piece: memoryview, array: _Array) -> int:
    return len(array.between.findall(piece)) + 1


def _check_rest(body: Body, array_start: int, array_end: int, key: str) -> None:
    """The document without the array must be small, valid, and hold the array as its one ``key``."""
    token = secrets.token_hex(16)
    rest = bytes(body[:array_start]) + b'"' + token.encode() + b'"' + bytes(body[array_end:])
    if len(rest) > REST_LIMIT:
        raise InvalidInput(f"body: besides '{key}', at most {REST_LIMIT:,} bytes of JSON are accepted", 413)
    data = validation.parse_json(rest)
    if type(data) is not dict or data.get(key) != token:
        raise InvalidInput(f"body: expected a JSON object whose '{key}' field is the array of items")


def _parse_piece(piece: memoryview, key: str, first: int) -> Any:
    try:
        return orjson.loads(b"[" + bytes(piece) + b"]")
    except orjson.JSONDecodeError as exc:
        detail = f"{key}: from item {first} on, not valid JSON or not a flat array per item ({exc.msg})"
        raise InvalidInput(detail) from None


def _plain_integers(piece: memoryview, width: int) -> np.ndarray | None:
    """``[a,b,...],[c,...]`` of plain integers 0..255, ``width`` per item, as uint8 rows; None for anything else.

    Numbers are runs of digits; the structure is checked on the separators alone: per item ``[``,
    ``width - 1`` commas, ``]``, then a comma before the next item, and the k-th number of an
    item between its k-th and (k+1)-th separator.
    """
    chars = np.frombuffer(piece, dtype=np.uint8)
    kinds = _CLASS[chars]
    if not len(kinds) or kinds.max() == _OTHER:
        return None
    digit = kinds == _DIGIT
    edge = np.flatnonzero(digit[1:] != digit[:-1]) + 1  # where runs of digits start or stop
    if digit[0] or digit[-1]:
        return None  # a piece starts with "[" and ends with "]"
    starts, ends = edge[0::2], edge[1::2] - 1
    n = len(starts) // width
    if n == 0 or len(starts) != n * width or len(ends) != len(starts):
        return None
    length = ends - starts + 1
    if length.max() > 3:
        return None  # out of range: the slow path names the value
    separators = np.flatnonzero(kinds >= _COMMA)
    per_item = width + 2  # "[", width - 1 commas, "]", and the comma after the item
    if len(separators) != n * per_item - 1:
        return None
    sep_kinds = np.append(kinds[separators], _COMMA).reshape(n, per_item)
    if not np.array_equal(sep_kinds, _separator_template(width, n)):
        return None
    grid = np.append(separators, 0).reshape(n, per_item)
    after_opening = (grid[:, :width] < starts.reshape(n, width)).all()
    if not (after_opening and (ends.reshape(n, width) < grid[:, 1 : width + 1]).all()):
        return None
    digits = chars.astype(np.int16) - 48
    value = digits[ends].copy()
    value[length > 1] += 10 * digits[ends[length > 1] - 1]
    value[length > 2] += 100 * digits[ends[length > 2] - 2]
    if value.max() > 255 or (digits[starts][length > 1] == 0).any():
        return None  # too large, or a leading zero (not JSON): the slow path names it
    return value.astype(np.uint8).reshape(n, width)


def _separator_template(width: int, n: int) -> np.ndarray:
    one = np.concatenate(([_OPEN], np.full(width - 1, _COMMA), [_CLOSE, _COMMA])).astype(np.uint8)
    return np.broadcast_to(one, (n, width + 2))
