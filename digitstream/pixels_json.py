"""The strict JSON pixel parser: 784 integers 0..255, flat or as 28 rows of 28, and nothing else.

Stream entries may carry their pixels as JSON text instead of 784 raw bytes. Python's ``json``
module accepts far more than that (floats, exponents, ``NaN``, objects, nesting as deep as the
interpreter's recursion limit, which it then overflows), so the stream does not use it. This
parser accepts exactly::

    [ n, n, ..., n ]                    784 values
    [ [ n, ..., n ], ..., [ n, ..., n ] ]   28 rows of 28 values

where ``n`` is a JSON integer 0..255 without sign, fraction, exponent or leading zeros, and
whitespace (space, tab, CR, LF) may surround every token. Everything else is refused with a
reason naming what was found. The work is linear in the input, a few numpy passes over its bytes:
every byte must be one of ``0-9 , [ ]`` or whitespace; the text without whitespace, each number
written ``n``, must equal one of the two accepted token strings; numbers have 1-3 digits without
a leading zero. Inputs above ``MAX_JSON_PIXELS_BYTES`` are refused unread.
"""

from __future__ import annotations

import numpy as np

N_PIXELS = 784
ROWS = COLUMNS = 28
#: 784 values of up to 3 digits, their commas and brackets take ~3.2 KB; generous whitespace fits too.
MAX_JSON_PIXELS_BYTES = 16 * 1024

# The two accepted forms as token strings, with each number written "n" and no whitespace.
_FLAT_TOKENS = b"[" + b"n," * (N_PIXELS - 1) + b"n]"
_ROW_TOKENS = b"[" + b"n," * (COLUMNS - 1) + b"n]"
_NESTED_TOKENS = b"[" + b",".join([_ROW_TOKENS] * ROWS) + b"]"
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[list(b"0123456789")] = True
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\r\n")] = True

_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[list(b"0123456789,[] \t\r\n")] = True
# What a refused byte most likely starts, for the reason.
_FOUND = {
    ord("."): "a fraction (values must be integers)",
    ord("e"): "an exponent or the word 'true'/'false' (values must be integers)",
    ord("E"): "an exponent (values must be integers)",
    ord("-"): "a '-' sign (values must be integers 0..255)",
    ord("+"): "a '+' sign (values must be integers 0..255, unsigned)",
    ord("t"): "a boolean (values must be integers)",
    ord("f"): "a boolean (values must be integers)",
    ord("n"): "null (values must be integers)",
    ord("N"): "NaN (values must be integers)",
    ord("I"): "Infinity (values must be integers)",
    ord('"'): "a string (values must be unquoted integers)",
    ord("{"): "an object (values must be integers)",
}


class PixelsJSONError(ValueError):
    """JSON pixel text that is not one of the two accepted forms; the message says why."""


def parse_json_pixels(raw: bytes) -> np.ndarray:
    """The (784,) uint8 pixels of JSON text in one of the accepted forms, else ``PixelsJSONError``.

    >>> parse_json_pixels(b"[" + b",".join([b"7"] * 784) + b"]")[:3].tolist()
    [7, 7, 7]
    >>> rows = b",".join([b"[" + b", ".join([b"255"] * 28) + b"]"] * 28)
    >>> int(parse_json_pixels(b"[" + rows + b"]").sum()) == 784 * 255
    True
    >>> parse_json_pixels(b"[1.5]")
    Traceback (most recent call last):
    ...
    digitstream.pixels_json.PixelsJSONError: pixels: found a fraction (values must be integers) at byte 2
    """
    if len(raw) > MAX_JSON_PIXELS_BYTES:
        raise PixelsJSONError(f"pixels: JSON text of {len(raw)} bytes is too long (limit {MAX_JSON_PIXELS_BYTES})")
    data = np.frombuffer(raw, dtype=np.uint8)
    bad = np.flatnonzero(~_ALLOWED[data])
    if bad.size:
        at = int(bad[0])
        found = _FOUND.get(raw[at], f"the byte {raw[at : at + 1]!r}")
        raise PixelsJSONError(f"pixels: found {found} at byte {at}")
    kept = np.flatnonzero(~_SPACE[data])  # positions of the non-space bytes, in order
    compact = data[kept]
    digit = _DIGIT[compact]
    follows = np.zeros(digit.size, dtype=bool)  # a digit right after another non-space digit
    follows[1:] = digit[1:] & digit[:-1]
    if (follows[1:] & (kept[1:] - kept[:-1] != 1)).any():
        raise PixelsJSONError("pixels: numbers separated by a space instead of a comma")
    starts = np.flatnonzero(digit & ~follows)  # first digit of each number
    ends = np.flatnonzero(digit & ~np.append(follows[1:], False))  # last digit of each number
    if (ends - starts >= 3).any():
        raise PixelsJSONError("pixels: values must be in 0..255")
    if ((compact[starts] == ord("0")) & (ends > starts)).any():
        raise PixelsJSONError("pixels: a number with a leading zero")
    tokens = compact.copy()
    tokens[starts] = ord("n")
    shape = tokens[~follows].tobytes()  # each number one "n"
    if shape != _FLAT_TOKENS and shape != _NESTED_TOKENS:
        raise PixelsJSONError(_refusal(shape))
    # Only digits, commas and whitespace remain without the brackets: numpy reads them at C speed.
    values = np.fromstring(raw.translate(None, b"[]"), dtype=np.int64, sep=",")
    if values.size != N_PIXELS or values.max() > 255:
        raise PixelsJSONError("pixels: values must be in 0..255")
    return values.astype(np.uint8)


def _refusal(shape: bytes) -> str:
    """Why a token string (numbers as "n", no spaces) is not one of the accepted forms."""
    tokens = np.frombuffer(shape, dtype=np.uint8)
    opens, closes = tokens == ord("["), tokens == ord("]")
    numbers = int(np.count_nonzero(tokens == ord("n")))
    if not opens.any():
        return f"pixels: expected a JSON array of {N_PIXELS} integers"
    depth = np.cumsum(opens.astype(np.int64) - closes.astype(np.int64))
    if depth.min() < 0 or depth[-1] != 0:
        return "pixels: unbalanced brackets"
    deepest = int(depth.max())
    if deepest > 2:
        return f"pixels: arrays nested {deepest} deep (only {N_PIXELS} values or {ROWS} rows of {COLUMNS})"
    if int(np.count_nonzero(depth == 0)) > 1 or shape[:1] != b"[":
        return "pixels: more than one JSON value"
    if deepest == 1 and numbers != N_PIXELS:
        return f"pixels: expected {N_PIXELS} integers, got {numbers}"
    if deepest == 2:
        rows = int(np.count_nonzero(opens)) - 1
        if rows != ROWS or numbers != N_PIXELS:
            return f"pixels: expected {ROWS} rows of {COLUMNS} integers, got {rows} rows and {numbers} integers"
    return "pixels: not a JSON array of integers (a misplaced comma or bracket)"


__all__ = ["MAX_JSON_PIXELS_BYTES", "PixelsJSONError", "parse_json_pixels"]
