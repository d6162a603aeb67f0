"""A structure-aware generator of adversarial stream entries, and an independent oracle for them.

``FuzzEntries(seed).entry()`` builds one entry (a dict of bytes fields, in order) of a randomly
chosen kind: valid samples in every accepted form (raw bytes, flat JSON, 28x28 JSON with any
JSON whitespace, extra fields, producer and seq) and hostile ones: JSON with one token replaced
(floats, exponents, signs, booleans, null, NaN, Infinity, strings, objects, leading zeros, values
out of range, non-ASCII digits), broken structure (wrong counts, ragged rows, nesting up to
thousands deep, unbalanced or trailing brackets and commas, concatenated arrays, other
encodings, BOMs, comments, control characters), random JSON documents, byte garbage, bad labels,
bad producer/seq, missing fields, thousands of fields, and huge fields (>= 10 MB: pixels, label,
an extra value or a field name).

``oracle(fields)`` says what the protocol makes of an entry, written from the README's rules and
Python's ``json`` module (never the codec): ``(pixels, label)`` for a learnable entry, else None.
The fuzzer (``fuzz_stream``) checks the codec and the worker against it.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable

import numpy as np

from digitstream.protocol import MAX_ENTRY_BYTES, MAX_SEQ, N_PIXELS

HUGE_BYTES = 10 * 1024 * 1024 + 17  # >= 10 MB
_PRODUCER = re.compile(rb"[A-Za-z0-9_.:-]{1,64}")
_DIGITS = {str(d).encode(): d for d in range(10)}
_PADS = ["", "", "", "", "", " ", "  ", "\t", "\n", "\r\n", " \n  "]

BAD_TOKENS = [
    "1.5", "1.0", "0.0", "1e2", "1E+2", "2e-1", "-0", "-1", "+1", "256", "999", "1000", "100000000000000000000",
    "00", "01", "007", "0x1F", "true", "false", "null", "NaN", "Infinity", "-Infinity", '"7"', '""', "{}",
    '{"a":1}', "[]", "[1]", "1_0", "\u0663", "\uff11", "", " ", "1 2", "\u00a01", "1\x0c", "\x0b1", "/*c*/1",
    "1//", "'1'", "0b1", "1.", ".5", "--1", "∞",
]  # fmt: skip


def oracle(fields: dict[bytes, bytes]) -> tuple[np.ndarray, int] | None:
    """The protocol's verdict on an entry: (784 uint8 pixels, label) if learnable, else None."""
    if sum(len(k) + len(v) for k, v in fields.items()) > MAX_ENTRY_BYTES:
        return None
    label, pixels = _DIGITS.get(fields.get(b"label", b"")), fields.get(b"pixels")
    if label is None or pixels is None:
        return None
    image = np.frombuffer(pixels, dtype=np.uint8).copy() if len(pixels) == N_PIXELS else _json_oracle(pixels)
    if image is None:
        return None
    producer, seq = fields.get(b"producer"), fields.get(b"seq")
    if (producer is None) != (seq is None):
        return None
    if producer is not None and seq is not None:
        seq_ok = seq.isdigit() and (seq == b"0" or seq[:1] != b"0") and int(seq) <= MAX_SEQ
        if not (_PRODUCER.fullmatch(producer) and seq_ok):
            return None
    return image, label


def _json_oracle(raw: bytes) -> np.ndarray | None:
    """784 integers 0..255, flat or 28 rows of 28, as strict JSON in UTF-8 without signs."""
    try:
        text = raw.decode("utf-8")
        if "-" in text:  # JSON's -0 is an integer to Python, a sign to the protocol
            return None
        value = json.loads(text, parse_constant=lambda name: float("nan"))
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and len(value) == 28 and all(isinstance(row, list) and len(row) == 28 for row in value):
        value = [v for row in value for v in row]
    if not isinstance(value, list) or len(value) != N_PIXELS:
        return None
    if not all(type(v) is int and 0 <= v <= 255 for v in value):
        return None
    return np.array(value, dtype=np.uint8)


class FuzzEntries:
    """Seeded generator of adversarial entries; ``huge`` allows the >= 10 MB kinds."""

    def __init__(self, seed: int, *, huge: bool = True) -> None:
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.seq = 0  # valid origins get increasing numbers: the worker never sees a duplicate
        kinds: dict[str, tuple[float, Callable[[], dict[bytes, bytes]]]] = {
            "valid raw": (10, self.valid_raw),
            "valid JSON": (4, self.valid_json),
            "valid with extras and origin": (3, self.valid_extras),
            "JSON bad token": (12, self.json_bad_token),
            "JSON bad structure": (12, self.json_bad_structure),
            "JSON random document": (6, self.json_random_document),
            "byte garbage": (8, self.byte_garbage),
            "bad label": (6, self.bad_label),
            "bad producer/seq": (4, self.bad_origin),
            "missing fields": (4, self.missing_fields),
            "thousands of fields": (1, self.many_fields),
        }
        if huge:
            kinds["huge field (>= 10 MB)"] = (0.05, self.huge_field)
        self.kinds = kinds
        self._names = list(kinds)
        self._weights = [w for w, _ in kinds.values()]

    def entry(self) -> tuple[str, dict[bytes, bytes]]:
        """(kind, fields) of one generated entry."""
        kind = self.rng.choices(self._names, self._weights)[0]
        return kind, self.kinds[kind][1]()

    # -- pieces ---------------------------------------------------------------------------------
    def image(self) -> np.ndarray:
        return self.np.integers(0, 256, N_PIXELS, dtype=np.uint8)

    def label(self) -> bytes:
        return b"%d" % self.rng.randrange(10)

    def pads(self, n: int) -> list[str]:
        """``n`` JSON whitespace runs (all empty half the time: the compact form)."""
        if self.rng.random() < 0.5:
            return [""] * n
        return self.np.choice(_PADS, n).tolist()  # type: ignore[no-any-return]

    def json_text(self, values: list[str], nested: bool) -> bytes:
        pads = self.pads(2 * len(values) + 60)
        tokens = [pads[2 * i] + v + pads[2 * i + 1] for i, v in enumerate(values)]
        if nested and len(values) == N_PIXELS:
            rows = [pads[-i - 1] + "[" + ",".join(tokens[i * 28 : i * 28 + 28]) + "]" for i in range(28)]
            return ("[" + ",".join(rows) + pads[-30] + "]").encode()
        return ("[" + ",".join(tokens) + "]").encode()

    # -- valid ----------------------------------------------------------------------------------
    def valid_raw(self) -> dict[bytes, bytes]:
        return {b"pixels": self.image().tobytes(), b"label": self.label()}

    def valid_json(self) -> dict[bytes, bytes]:
        values = [str(v) for v in self.image().tolist()]
        return {b"label": self.label(), b"pixels": self.json_text(values, self.rng.random() < 0.5)}

    def valid_extras(self) -> dict[bytes, bytes]:
        fields = self.valid_raw() if self.rng.random() < 0.7 else self.valid_json()
        fields[b"source"] = bytes(self.np.integers(0, 256, self.rng.randrange(50), dtype=np.uint8))
        if self.rng.random() < 0.5:
            self.seq += 1
            fields.update({b"producer": b"fuzz-1", b"seq": b"%d" % self.seq})
        return fields

    # -- hostile JSON ---------------------------------------------------------------------------
    def json_bad_token(self) -> dict[bytes, bytes]:
        values = [str(v) for v in self.image().tolist()]
        for _ in range(self.rng.choice([1, 1, 2, 5])):
            values[self.rng.randrange(N_PIXELS)] = self.rng.choice(BAD_TOKENS)
        return {b"pixels": self.json_text(values, self.rng.random() < 0.3), b"label": self.label()}

    def json_bad_structure(self) -> dict[bytes, bytes]:
        r = self.rng
        values = [str(v) for v in self.image().tolist()]
        flat = self.json_text(values, False)
        choice = r.randrange(16)
        if choice == 0:
            n = r.choice([0, 1, 27, 28, 783, 785, 1568, r.randrange(3000)])
            text = self.json_text((values * 4)[:n], False)
        elif choice == 1:
            rows, cols = r.choice([(28, 27), (27, 28), (29, 28), (28, 29), (1, 784), (784, 1), (14, 56)])
            data = [[int(v) for v in values[:cols]] for _ in range(rows)]
            text = json.dumps(data).encode()
        elif choice == 2:
            data = [[int(v) for v in values[i * 28 : (i + 1) * 28]] for i in range(28)]
            data[r.randrange(28)].append(1)
            data[r.randrange(28)].pop()
            text = json.dumps(data).encode()
        elif choice == 3:
            depth = r.choice([3, 4, 50, 1000, 5000, 16_000])
            text = b"[" * depth + (b"0" if r.random() < 0.5 else b"") + b"]" * depth
        elif choice == 4:
            text = b"[" * r.choice([1, 2, 100, 10_000, 16_000])  # the crash: recursion in json.loads
        elif choice == 5:
            text = flat[:-1] if r.random() < 0.5 else flat + b"]"
        elif choice == 6:
            text = flat[:-1] + b",]" if r.random() < 0.5 else b"[," + flat[1:]
        elif choice == 7:
            i = flat.index(b",", r.randrange(len(flat) - 10))
            text = flat[:i] + b" " + flat[i + 1 :]  # a missing comma
        elif choice == 8:
            text = flat + r.choice([b"", b" ", b","]) + flat
        elif choice == 9:
            text = flat + r.choice([b"x", b"\x00", b"//", b"}", b"\xff"])
        elif choice == 10:
            text = json.dumps({"pixels": [int(v) for v in values]}).encode()
        elif choice == 11:
            text = json.dumps(flat.decode()).encode()  # the array as a JSON string
        elif choice == 12:
            text = flat.decode().encode(r.choice(["utf-16", "utf-16-le", "utf-32", "utf-8-sig"]))
        elif choice == 13:
            text = flat.replace(b",", r.choice([b",\x0c", b",\x0b", b",\x00", b",\xa0", b", /*x*/"]), 3)
        elif choice == 14:
            text = b"[[" + flat[1:-1] + b"]]"  # one row of 784: nested, but not 28x28
        else:
            text = b" " * r.randrange(100) + flat.replace(b",", b",\r\n\t ") + b"\n"  # valid: any JSON whitespace
        return {b"pixels": text, b"label": self.label()}

    def json_random_document(self) -> dict[bytes, bytes]:
        def value(depth: int) -> object:
            r = self.rng
            kind = r.randrange(9 if depth < 4 else 6)
            if kind == 0:
                return r.randrange(-300, 300)
            if kind == 1:
                return r.choice([0.5, 1e300, -0.0, float("nan"), float("inf"), 255.0])
            if kind == 2:
                return r.choice([True, False, None])
            if kind == 3:
                return "".join(chr(r.randrange(0x20, 0x3000)) for _ in range(r.randrange(5)))
            if kind in (4, 5):
                return r.randrange(256)
            if kind == 6:
                return {str(r.randrange(9)): value(depth + 1) for _ in range(r.randrange(4))}
            n = r.choice([r.randrange(5), 28, 784])
            items: list[object] = self.np.integers(0, 256, n).tolist()
            for _ in range(r.randrange(4) if n else 0):
                items[r.randrange(n)] = value(depth + 1)
            return items

        return {b"pixels": json.dumps(value(0)).encode(), b"label": self.label()}

    # -- other fields ---------------------------------------------------------------------------
    def byte_garbage(self) -> dict[bytes, bytes]:
        raw = bytes(
            self.np.integers(0, 256, self.rng.choice([0, 1, 783, 785, self.rng.randrange(5000)]), dtype=np.uint8)
        )
        if self.rng.random() < 0.3:
            raw = b"[" + raw
        fields = {b"pixels": raw, b"label": self.label()}
        if self.rng.random() < 0.3:  # garbage field names and values too
            fields[bytes(self.np.integers(0, 256, self.rng.randrange(1, 20), dtype=np.uint8))] = raw[:100]
        return fields

    def bad_label(self) -> dict[bytes, bytes]:
        label = self.rng.choice(
            [b"10", b"-1", b" 7", b"7 ", b"\xd9\xa7", b"", b"7\x00", b"07", b"seven", b"\xff", "7".encode("utf-16")]
        )
        if self.rng.random() < 0.2:
            label = bytes(self.np.integers(0, 256, self.rng.randrange(1, 2000), dtype=np.uint8))
        return {b"pixels": self.image().tobytes(), b"label": label}

    def bad_origin(self) -> dict[bytes, bytes]:
        fields = self.valid_raw()
        producer, seq = self.rng.choice(
            [(b"p", None), (None, b"1"), (b"p", b"-1"), (b"p", b"01"), (b"p", b"1.0"), (b"p", b"%d" % (MAX_SEQ + 1)),
             (b"x" * 65, b"1"), (b"has space", b"1"), (b"", b"1"), (b"p", b""), (b"p", b"+1"), (b"p", b"\xd9\xa1")]
        )  # fmt: skip
        if producer is not None:
            fields[b"producer"] = producer
        if seq is not None:
            fields[b"seq"] = seq
        return fields

    def missing_fields(self) -> dict[bytes, bytes]:
        return self.rng.choice(
            [
                {b"pixels": self.image().tobytes()},
                {b"label": self.label()},
                {b"source": b"x"},
                {b"Pixels": b"x", b"LABEL": b"1"},
            ]
        )

    def many_fields(self) -> dict[bytes, bytes]:
        n = self.rng.choice([1000, 3000, 10_000])
        fields = {b"f%d" % i: b"v" * self.rng.randrange(3) for i in range(n)}
        if self.rng.random() < 0.5:
            fields.update(self.valid_raw())  # still over the entry limit in all
        return fields

    def huge_field(self) -> dict[bytes, bytes]:
        chunk = bytes(self.np.integers(0, 256, 1024, dtype=np.uint8))
        huge = (chunk * (HUGE_BYTES // 1024 + 1))[:HUGE_BYTES]
        where = self.rng.randrange(4)
        fields = self.valid_raw()
        if where == 0:
            fields[b"pixels"] = b"[" + huge
        elif where == 1:
            fields[b"label"] = huge
        elif where == 2:
            fields[b"note"] = huge
        else:
            fields[huge] = b"1"
        return fields


__all__ = ["BAD_TOKENS", "HUGE_BYTES", "FuzzEntries", "oracle"]
