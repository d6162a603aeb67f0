"""The wire contract: Redis key names, stream entry fields, and the sample codec.

This module sits at the bottom of the project: it imports only the standard library and numpy,
so any role (and any client in any language, through the README) can follow it.

Redis layout for a model named ``M`` (default ``digitstream``). Every key of a model carries the
hash tag ``{M}``, so on a Redis Cluster they all live in one slot and each script touches one slot
(model names cannot contain braces)::

    {M}:samples               stream   labelled samples: fields pixels, label (+ producer, seq; + ignored extras),
                                       or packed: pixels, labels (N samples; digitstream.packed)
    {M}:deadletter            stream   rejected entries: original fields + original_id + reason
    {M}:snapshot:latest       string   version number of the newest snapshot
    {M}:snapshot:versions     zset     kept versions (score = version)
    {M}:snapshot:<version>    hash     "meta" (JSON, contracts.SnapshotMeta) + "array:<name>" (raw bytes)
    {M}:snapshot:times        zset     kept versions (score = Redis time written, ms): the spaced history kept
    {M}:snapshot:events       pub/sub  JSON {"version": n} published when a snapshot is written
                                       (sharded pub/sub on a cluster: the channel hashes like a key)
    {M}:worker:lease          string   id of the one active worker, with an expiry (PX)
    {M}:worker:status         string   JSON health of the active worker (contracts.WorkerStatus), with expiry
    {M}:worker:restarts       hash     position, count: unclean starts at one stream position (a crash loop)
    {M}:service:pinned        string   version every service replica serves (absent: the latest)
    {M}:prediction:<id>       string   a served prediction's 784 pixels, kept for feedback (TTL)
    {M}:producer:<p>          hash     a publisher's fence: seq (highest appended), first, last (ids), owner (TTL)
    {M}:readers               hash     model -> last learned id, for every model reading the stream (no trim passes one)
    {M}:idempotency:<period>  hash     Idempotency-Key -> "<fingerprint> <stream id> ..." of one period (TTL)
    (the last three take the stream key's hash tag, or the stream key as one: the stream's cluster slot;
    for a model's own stream that is {M})

Every Lua script is given every key it touches (``KEYS``; none is built inside), all in one slot. A
stream outside the model's slot (``Keys.stream_apart``: shared by several models, ``--stream``) is
committed in two scripts: the snapshot in the model's slot, then the reader's position and the trims
in the stream's (``digitstream.commit_script``). The dead-letter stream is one of the model's keys:
on a cluster a custom one must carry the model's tag, ``{M}:...``.

Before version 0.3 the keys were ``M:samples``, ``M:snapshot:latest``, ... without the tag;
``digitstream models migrate`` renames an existing deployment's keys (docs/cluster.md).

Stream entry (canonical form): ``pixels`` = 784 raw bytes, row-major 28x28, 0 = background;
``label`` = one ASCII digit. ``pixels`` may also be the JSON text of an array of 784 integers
0..255, or of 28 rows of 28 (read by the strict parser ``pixels_json``, never by ``json``).
Optionally ``producer`` (1-64 characters ``A-Z a-z 0-9 _ . : -``) and ``seq`` (decimal, 0..2**63-1),
both or neither: the worker skips an entry whose ``seq`` is not above the highest it has learned
from that producer (a resent duplicate; see ``Origin`` and docs/worker.md).

Packed entry (``digitstream.packed``): ``pixels`` = N x 784 raw bytes, ``labels`` = N ASCII digits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .pixels_json import PixelsJSONError, parse_json_pixels

SCHEMA_VERSION = 1
N_PIXELS = 784
IMAGE_SHAPE = (28, 28)

FIELD_PIXELS = b"pixels"
FIELD_LABEL = b"label"
FIELD_ORIGINAL_ID = b"original_id"
FIELD_REASON = b"reason"
FIELD_PRODUCER = b"producer"
FIELD_SEQ = b"seq"

#: A producer id: what identifies one sender's numbering (the publisher makes one per run).
PRODUCER_PATTERN = r"[A-Za-z0-9_.:-]{1,64}"
MAX_PRODUCER_LENGTH = 64
#: Sequence numbers are non-negative signed 64-bit integers (what Redis, numpy and JSON readers all hold).
MAX_SEQ = 2**63 - 1
_PRODUCER_RE = re.compile(PRODUCER_PATTERN.encode())
_MAX_SEQ_DIGITS = len(str(MAX_SEQ))
_MAX_SEQ_TEXT = str(MAX_SEQ).encode()  # digit strings of one length compare as their numbers

#: Entries larger than this (all field names and values together) are rejected unread: a JSON
#: pixel array of 784 three-digit numbers is ~3.1 KB, so 16 KiB leaves room for extra fields.
MAX_ENTRY_BYTES = 16 * 1024

_LABELS = {str(d).encode(): d for d in range(10)}


@dataclass(frozen=True)
class Keys:
    """Every Redis key of one model; build with :meth:`for_model`."""

    model: str
    samples: str
    deadletter: str

    @classmethod
    def for_model(cls, model: str = "digitstream", samples: str | None = None, deadletter: str | None = None) -> Keys:
        """The keys of model ``model``: its own stream and dead-letter stream unless named.

        >>> keys = Keys.for_model("champion")
        >>> keys.samples, keys.snapshot(3), Keys.for_model("challenger", "{champion}:samples").producer("p")
        ('{champion}:samples', '{champion}:snapshot:3', '{champion}:producer:p')
        """
        tag = "{" + model + "}"
        return cls(model, samples or f"{tag}:samples", deadletter or f"{tag}:deadletter")

    @property
    def tag(self) -> str:
        """The model's hash tag: every key below (and its own streams) hash to the slot of ``{model}``."""
        return "{" + self.model + "}"

    @property
    def snapshot_latest(self) -> str:
        return f"{self.tag}:snapshot:latest"

    @property
    def snapshot_versions(self) -> str:
        return f"{self.tag}:snapshot:versions"

    @property
    def snapshot_times(self) -> str:
        return f"{self.tag}:snapshot:times"

    @property
    def snapshot_events(self) -> str:
        return f"{self.tag}:snapshot:events"

    def snapshot(self, version: int) -> str:
        return f"{self.tag}:snapshot:{version}"

    @property
    def snapshot_prefix(self) -> str:
        return f"{self.tag}:snapshot:"

    @property
    def lease(self) -> str:
        return f"{self.tag}:worker:lease"

    @property
    def worker_status(self) -> str:
        return f"{self.tag}:worker:status"

    @property
    def worker_restarts(self) -> str:
        return f"{self.tag}:worker:restarts"

    @property
    def pinned(self) -> str:
        return f"{self.tag}:service:pinned"

    def prediction(self, prediction_id: str) -> str:
        return f"{self.tag}:prediction:{prediction_id}"

    def producer(self, producer_id: str) -> str:
        """The publisher's fence for one producer id on the stream (``clients.producer``).

        Its script touches the fence and the stream together, so the fence takes the stream's hash
        tag (Redis Cluster: the same slot, whatever the key layout):

        >>> Keys.for_model().producer("cam-1"), Keys.for_model("m", "shared:samples").producer("cam-1")
        ('{digitstream}:producer:cam-1', '{shared:samples}:producer:cam-1')
        """
        return f"{self._stream_tag}:producer:{producer_id}"

    @property
    def readers(self) -> str:
        """Each model reading the stream -> the last id it learned; no trim passes the lowest (the stream's slot)."""
        return f"{self._stream_tag}:readers"

    def collisions(self) -> list[str]:
        """Why the stream or dead-letter key would clash with another key of the model (empty: they do not).

        >>> Keys.for_model("m", deadletter="{m}:samples").collisions()
        ['the dead-letter key is the stream key ({m}:samples)']
        """
        own = {
            "the snapshot latest key": self.snapshot_latest, "the snapshot versions key": self.snapshot_versions,
            "the snapshot times key": self.snapshot_times, "the snapshot events channel": self.snapshot_events,
            "the lease key": self.lease, "the worker status key": self.worker_status, "the pin key": self.pinned,
            "the readers key": self.readers,
        }  # fmt: skip
        prefixes = {
            "a snapshot key": self.snapshot_prefix, "a prediction key": self.prediction(""),
            "a producer fence": self.producer(""), "an idempotency key": self.idempotency(0).rsplit(":", 1)[0] + ":",
        }  # fmt: skip
        problems = []
        if self.samples == self.deadletter:
            problems.append(f"the dead-letter key is the stream key ({self.samples})")
        for what, key in (("stream", self.samples), ("dead-letter", self.deadletter)):
            problems += [f"the {what} key is {name} ({key})" for name, other in own.items() if key == other]
            problems += [f"the {what} key {key} looks like {name}" for name, p in prefixes.items() if key.startswith(p)]
        return problems

    @property
    def stream_apart(self) -> bool:
        """Whether the stream is outside the model's slot: its hash tag is not ``{model}`` (a shared stream).

        The snapshot script then commits the model's keys alone, and a second script in the stream's
        slot records the reader's position and trims (``digitstream.commit_script``), on one Redis as
        on a cluster.

        >>> Keys.for_model("m").stream_apart, Keys.for_model("m", "{m}:raw").stream_apart
        (False, False)
        >>> Keys.for_model("m", "{shared}:samples").stream_apart, Keys.for_model("m", "m:samples").stream_apart
        (True, True)
        """
        return self._stream_tag != self.tag

    def idempotency(self, period: int) -> str:
        """The service's Idempotency-Key answers of one period (``service.idempotency``), in the stream's slot."""
        return f"{self._stream_tag}:idempotency:{period}"

    @property
    def _stream_tag(self) -> str:
        """The stream key's hash tag (``{...}``), or the whole key made one: it hashes to the stream's slot."""
        start = self.samples.find("{")
        end = self.samples.find("}", start + 1) if start >= 0 else -1
        return self.samples[start : end + 1] if end > start + 1 else "{" + self.samples + "}"


class InvalidSample(ValueError):
    """A sample that breaks the stream protocol; the message is the human-readable reason."""


def validate_pixels(pixels: object) -> np.ndarray:
    """Pixels as a (784,) uint8 array; accepts 784 bytes, or 784 / 28x28 integers 0..255."""
    if isinstance(pixels, bytes | bytearray | memoryview):
        raw = bytes(pixels)
        if len(raw) != N_PIXELS:
            raise InvalidSample(f"pixels: expected {N_PIXELS} bytes, got {len(raw)}")
        return np.frombuffer(raw, dtype=np.uint8).copy()
    arr = np.asarray(pixels)
    if arr.dtype == object or arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.array_equal(arr, np.round(arr)):
            if arr.min() < 0 or arr.max() > 255:  # checked before the cast, which cannot hold huge floats
                raise InvalidSample("pixels: values must be in 0..255")
            arr = arr.astype(np.int64)
        else:
            raise InvalidSample("pixels: must be integers 0..255")
    if arr.shape == IMAGE_SHAPE:
        arr = arr.reshape(N_PIXELS)
    if arr.shape != (N_PIXELS,):
        raise InvalidSample(f"pixels: expected {N_PIXELS} values (or 28x28), got shape {list(arr.shape)}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise InvalidSample("pixels: values must be in 0..255")
    return arr.astype(np.uint8)


def validate_label(label: object) -> int:
    """A label as an int 0..9; accepts ints and one-digit strings/bytes."""
    if isinstance(label, bytes | bytearray):
        value = _LABELS.get(bytes(label))
    elif isinstance(label, str):
        value = _LABELS.get(label.encode("utf-8", "replace"))
    elif isinstance(label, bool):
        value = None
    elif isinstance(label, int | np.integer):
        value = int(label) if 0 <= int(label) <= 9 else None
    else:
        value = None
    if value is None:
        raise InvalidSample(f"label: must be one digit 0-9, got {_show(label)}")
    return value


def encode_sample(pixels: object, label: object) -> dict[bytes, bytes]:
    """Stream fields of one sample in canonical form (validated first).

    >>> fields = encode_sample([[0] * 28] * 27 + [[255] * 28], "7")
    >>> len(fields[b"pixels"]), fields[b"label"]
    (784, b'7')
    >>> pixels, label = decode_entry(fields)
    >>> int(pixels.sum()) == 28 * 255, label
    (True, 7)
    """
    return {FIELD_PIXELS: validate_pixels(pixels).tobytes(), FIELD_LABEL: b"%d" % validate_label(label)}


def encode_origin(producer: str | bytes, seq: int) -> dict[bytes, bytes]:
    """The optional ``producer`` and ``seq`` fields (validated), to add to an entry's fields.

    >>> encode_origin("camera-3", 41)
    {b'producer': b'camera-3', b'seq': b'41'}
    """
    raw = producer.encode("utf-8", "replace") if isinstance(producer, str) else bytes(producer)
    fields = {FIELD_PRODUCER: raw, FIELD_SEQ: b"%d" % seq if isinstance(seq, int) and seq >= 0 else b"-"}
    decode_origin(fields)  # raises InvalidSample naming the bad field
    return fields


def decode_entry(fields: dict[bytes, bytes]) -> tuple[np.ndarray, int]:
    """(pixels (784,) uint8, label) of one stream entry, or InvalidSample with the reason."""
    size = sum(map(len, fields)) + sum(map(len, fields.values()))  # at C speed: an entry may have thousands
    if size > MAX_ENTRY_BYTES:
        raise InvalidSample(f"entry too large: {size} bytes (limit {MAX_ENTRY_BYTES})")
    if FIELD_LABEL not in fields:
        raise InvalidSample("missing field 'label'")
    if FIELD_PIXELS not in fields:
        raise InvalidSample("missing field 'pixels'")
    label = validate_label(fields[FIELD_LABEL])
    raw = fields[FIELD_PIXELS]
    if len(raw) == N_PIXELS:
        return np.frombuffer(raw, dtype=np.uint8).copy(), label
    return _decode_json_pixels(raw), label


@dataclass(frozen=True)
class Origin:
    """Who appended an entry and its number in that producer's sequence (the optional fields).

    A sequence number counts **samples**: a classic entry takes one number, and a packed entry of
    N samples (``digitstream.packed``) the N numbers from its ``seq`` on, so resends are recognised
    sample by sample whatever the packing. Numbers must increase along the stream for each producer; gaps are allowed
    (the worker cannot tell a lost entry from a number never used). An entry whose number is not
    above the highest the worker has seen from its producer is a duplicate: skipped, counted, never
    learned nor dead-lettered. One producer id therefore belongs to one sender at a time, which
    appends in order (a retried batch is appended again later, after other producers' entries:
    that is fine, its numbers are already known).
    """

    producer: bytes
    seq: int


def decode_origin(fields: dict[bytes, bytes]) -> Origin | None:
    """The entry's ``producer`` and ``seq`` (None when it has neither), or InvalidSample with the reason."""
    producer, seq = fields.get(FIELD_PRODUCER), fields.get(FIELD_SEQ)
    if producer is None and seq is None:
        return None
    if producer is None:
        raise InvalidSample("producer: required with seq")
    if seq is None:
        raise InvalidSample("seq: required with producer")
    origin = _origin(producer, seq)
    if origin is None:
        if not _PRODUCER_RE.fullmatch(producer):
            raise InvalidSample(f"producer: must be 1-{MAX_PRODUCER_LENGTH} characters A-Z a-z 0-9 _ . : -")
        raise InvalidSample(f"seq: must be a decimal integer 0..{MAX_SEQ} without sign or leading zeros")
    return origin


def _origin(producer: bytes, seq: bytes) -> Origin | None:
    """The origin if both fields are well-formed, else None (the caller says why)."""
    value = _seq_value(seq)
    if value < 0 or not _valid_producer(producer):
        return None
    return Origin(bytes(producer), value)


def _seq_value(seq: bytes) -> int:
    """A well-formed ``seq`` as an int, else -1 (``decode_entries`` inlines the same check)."""
    size = len(seq)
    fits = 0 < size < _MAX_SEQ_DIGITS or (size == _MAX_SEQ_DIGITS and seq <= _MAX_SEQ_TEXT)
    if fits and seq.isdigit() and (seq[0] != 48 or size == 1):
        return int(seq)  # bytes.isdigit() is ASCII only; int() alone would take " 7", "+7" and "1_0"
    return -1


_KNOWN_PRODUCERS: set[bytes] = set()  # ids found valid: a stream holds few producers, each seen often


def _valid_producer(producer: bytes) -> bool:
    if producer in _KNOWN_PRODUCERS:
        return True
    if not _PRODUCER_RE.fullmatch(producer):
        return False
    if len(_KNOWN_PRODUCERS) >= 10_000:  # bounded, whoever writes to the stream
        _KNOWN_PRODUCERS.clear()
    _KNOWN_PRODUCERS.add(bytes(producer))
    return True


def _decode_json_pixels(raw: bytes) -> np.ndarray:
    if not raw.lstrip()[:1] == b"[":
        raise InvalidSample(
            f"pixels: expected {N_PIXELS} raw bytes or a JSON array of {N_PIXELS} integers, got {len(raw)} bytes"
        )
    try:
        return parse_json_pixels(raw)
    except PixelsJSONError as exc:
        raise InvalidSample(str(exc)) from None


def internal_error(exc: BaseException) -> str:
    """The dead-letter reason for an entry whose decoding or learning raised ``exc`` unexpectedly."""
    message = " ".join(str(exc).split())
    message = message if len(message) <= 200 else message[:197] + "..."
    name = exc.__class__.__name__
    return f"internal error: {name}: {message}" if message else f"internal error: {name}"


@dataclass
class DecodedBatch:
    """A batch of stream entries split into learnable samples (in stream order) and rejects."""

    ids: list[bytes]
    images: np.ndarray  # (n, 784) uint8
    labels: np.ndarray  # (n,) int64
    rejects: list[tuple[bytes, dict[bytes, bytes], str]] = field(default_factory=list)
    last_id: bytes | None = None  # of the whole read, learned or rejected
    # Each learnable entry's producer (None: it has none) and seq (-1: none), aligned with ids;
    # both empty when no entry of the batch has an origin.
    producers: list[bytes | None] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    # With packed entries (``digitstream.packed``) ``ids`` has one id per sample (an entry's id
    # repeated), ``offsets`` each sample's index inside its entry and ``sizes`` each packed entry's
    # sample count; None and empty when the batch holds no packed entry. ``last_id`` and ``partial``
    # say how far the batch reaches: ``partial`` samples of the entry after ``last_id`` included
    # (a piece of a read cut inside a packed entry, ``worker.pieces``).
    offsets: np.ndarray | None = None  # int64, aligned with ids
    sizes: dict[bytes, int] = field(default_factory=dict)
    partial: int = 0

    @property
    def origins(self) -> list[Origin | None]:
        """The learnable entries' origins, aligned with ids (empty when none has one)."""
        return [None if p is None else Origin(p, s) for p, s in zip(self.producers, self.seqs, strict=True)]

    def without(self, drop: Sequence[int]) -> DecodedBatch:
        """The batch without the learnable entries at the positions ``drop`` (rejects and last_id kept)."""
        keep = np.ones(len(self.ids), dtype=bool)
        keep[list(drop)] = False
        kept = np.flatnonzero(keep).tolist()
        producers = [self.producers[i] for i in kept] if self.producers else []
        seqs = [self.seqs[i] for i in kept] if self.producers else []
        ids = [self.ids[i] for i in kept]
        offsets = None if self.offsets is None else self.offsets[keep]
        return DecodedBatch(
            ids, self.images[keep], self.labels[keep], self.rejects, self.last_id, producers, seqs,
            offsets, self.sizes, self.partial,
        )  # fmt: skip


def decode_entries(entries: Sequence[Sequence[Any]], pack_max: int = 1024) -> DecodedBatch:
    """Decode a stream read; the fast path handles canonical entries without a per-pixel loop.

    An entry is ``(id, fields)`` with the fields as a dict (redis-py's XREAD answer) or as the flat
    ``[name, value, ...]`` list of the raw Redis reply, which the worker reads to skip building a
    dict per entry (a quarter of its reading time). In a flat list a repeated name keeps its last
    value, as in redis-py's dicts. Packed entries (``labels``) hold 1..``pack_max`` samples each.
    """
    ids: list[bytes] = []
    chunks: list[bytes] = []
    labels: list[int] = []
    producers: list[bytes | None] = []
    seqs: list[int] = []
    rejects: list[tuple[bytes, dict[bytes, bytes], str]] = []
    packed = _packed.Unpacker(pack_max, ids, chunks, labels, producers, seqs, rejects)
    labels_get = _LABELS.get
    known = _KNOWN_PRODUCERS
    for entry_id, fields in entries:
        if type(fields) is list:
            n = len(fields)
            if (n == 4 or n == 8) and fields[0] == FIELD_PIXELS and fields[2] == FIELD_LABEL:
                raw, label = fields[1], labels_get(fields[3])
                producer, seq = None, -1
                if n == 8 and fields[4] == FIELD_PRODUCER and fields[6] == FIELD_SEQ:  # the publisher's form
                    producer, text = fields[5], fields[7]  # checked inline: a call costs as much as the check
                    size = len(text)
                    fits = 0 < size < _MAX_SEQ_DIGITS or (size == _MAX_SEQ_DIGITS and text <= _MAX_SEQ_TEXT)
                    if fits and text.isdigit() and (text[0] != 48 or size == 1):
                        seq = int(text) if producer in known or _valid_producer(producer) else -1
                if len(raw) == N_PIXELS and label is not None and (n == 4 or seq >= 0):
                    ids.append(entry_id)
                    chunks.append(raw)
                    labels.append(label)
                    producers.append(producer)
                    seqs.append(seq)
                    continue
            fields = dict(zip(fields[::2], fields[1::2], strict=False))
        raw = fields.get(FIELD_PIXELS)
        label = labels_get(fields.get(FIELD_LABEL, b""))
        if raw is not None and len(raw) == N_PIXELS and label is not None and len(fields) == 2:
            ids.append(entry_id)
            chunks.append(raw)
            labels.append(label)
            producers.append(None)
            seqs.append(-1)
            continue
        if _packed.FIELD_LABELS in fields:
            packed.add(entry_id, fields)
            continue
        try:
            pixels, value = decode_entry(fields)
            origin = decode_origin(fields)
        except InvalidSample as exc:
            rejects.append((entry_id, fields, str(exc)))
            continue
        except Exception as exc:  # a codec bug must not stop the stream: the entry is dead-lettered
            rejects.append((entry_id, fields, internal_error(exc)))
            continue
        ids.append(entry_id)
        chunks.append(pixels.tobytes())
        labels.append(value)
        producers.append(None if origin is None else origin.producer)
        seqs.append(-1 if origin is None else origin.seq)
    images = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(len(ids), N_PIXELS)
    last_id = entries[-1][0] if entries else None
    if not any(producers):  # no entry has an origin: the worker skips the duplicate check
        producers, seqs = [], []
    return DecodedBatch(
        ids, images, np.array(labels, dtype=np.int64), rejects, last_id, producers, seqs, *packed.offsets()
    )


#: A dead letter keeps at most this many of the entry's fields (the first ones, in entry order) ...
DEADLETTER_MAX_FIELDS = 32
#: ... each field value cut to this many bytes (a JSON pixel array of 784 values fits whole) ...
DEADLETTER_VALUE_BYTES = 4 * 1024
#: ... and all kept names and values together at most this many bytes (the entry limit).
DEADLETTER_BUDGET_BYTES = MAX_ENTRY_BYTES
#: Field names longer than this are dropped (the protocol's names are short).
DEADLETTER_NAME_BYTES = 128
FIELD_DROPPED = b"dropped_fields"
LENGTH_SUFFIX = b":length"


def deadletter_fields(entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> dict[bytes, bytes]:
    """Dead-letter entry: the original fields (bounded) plus the original id and the reason.

    A dead letter is at most ~17 KiB, whatever the entry: a value longer than
    ``DEADLETTER_VALUE_BYTES`` (or than what is left of ``DEADLETTER_BUDGET_BYTES``) keeps its first
    bytes, and a field ``<name>:length`` records its original length in bytes (decimal); fields
    beyond the first ``DEADLETTER_MAX_FIELDS``, with a name over ``DEADLETTER_NAME_BYTES``, or past
    the budget are dropped, and ``dropped_fields`` counts them. The fields the worker adds
    (``original_id``, ``reason``, ``dropped_fields``, ``*:length``) replace originals of those names.

    >>> dead = deadletter_fields(b"1-1", {b"pixels": b"x" * 10_000, b"label": b"7"}, "too long")
    >>> len(dead[b"pixels"]), dead[b"pixels:length"], dead[b"label"], dead[b"reason"]
    (4096, b'10000', b'7', b'too long')
    """
    out: dict[bytes, bytes] = {}
    lengths: dict[bytes, bytes] = {}
    budget, dropped = DEADLETTER_BUDGET_BYTES, 0
    for seen, (name, value) in enumerate(fields.items()):
        if len(out) >= DEADLETTER_MAX_FIELDS:
            dropped += len(fields) - seen  # the rest, uncounted one by one (an entry may have thousands)
            break
        keep = min(len(value), DEADLETTER_VALUE_BYTES, budget - len(name))
        if len(name) > DEADLETTER_NAME_BYTES or keep < min(len(value), 1):
            dropped += 1
            continue
        out[name] = value[:keep] if keep < len(value) else value
        if keep < len(value):
            lengths[name + LENGTH_SUFFIX] = b"%d" % len(value)
        budget -= len(name) + keep
    for name in (FIELD_ORIGINAL_ID, FIELD_REASON, FIELD_DROPPED):
        out.pop(name, None)
    out.update(lengths)
    if dropped:
        out[FIELD_DROPPED] = b"%d" % dropped
    out[FIELD_ORIGINAL_ID] = entry_id
    out[FIELD_REASON] = reason.encode("utf-8", "replace")[:1024]
    return out


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id ``ms-seq`` as a sortable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


from . import packed as _packed  # noqa: E402  (it builds on this module)
