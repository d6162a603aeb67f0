"""Packed entries: many labelled samples in one stream entry, for bulk backfill.

A packed entry has the fields ``pixels`` = N x 784 raw bytes (the samples' rows one after the
other) and ``labels`` = N ASCII digits, the label of sample i at byte i. The plural field name is
what tells it from a classic entry (``label``): a classic entry is never read as packed nor the
other way round, a packed entry that a reader unaware of the form sees is rejected by it as
"missing field 'label'" rather than learned wrongly, and no ``count`` field can disagree with the
two lengths. An entry holding both ``label`` and ``labels`` is rejected.

* N is 1..``pack_max`` (a setting, default 1024), and the entry (all names and values) is at most
  :func:`max_packed_bytes` (``pack_max`` x 785 bytes + 16 KiB for the other fields).
* ``producer`` and ``seq`` work as for classic entries, but ``seq`` numbers **samples**: it is the
  number of the entry's first sample, and sample i has ``seq + i`` (the next entry of that producer
  starts at ``seq + N`` or later). So a producer numbers its samples the same whether it packs them
  or not, and the worker's resend check (``worker.dedupe``) is exact at sample granularity, also
  for a resend that packs differently or a snapshot that stopped inside an entry.
* A malformed entry as a whole (lengths that disagree, too many samples, too large) is
  dead-lettered whole (its long fields cut by ``protocol.deadletter_fields``, as for any entry). A sample whose label
  byte is not a digit is dead-lettered alone (:func:`sample_deadletter`: its 784 bytes, its label
  byte, ``index`` and its own ``seq``); the entry's other samples are learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .protocol import (
    FIELD_LABEL,
    FIELD_PIXELS,
    FIELD_PRODUCER,
    FIELD_SEQ,
    MAX_ENTRY_BYTES,
    MAX_SEQ,
    N_PIXELS,
    InvalidSample,
    Origin,
    decode_origin,
    encode_origin,
)

FIELD_LABELS = b"labels"
FIELD_INDEX = b"index"  # of a dead-lettered sample inside its packed entry
DEFAULT_PACK_MAX = 1024
MAX_PACK_MAX = 16384  # the setting's ceiling: a 12.5 MiB entry
KEEP_FIELD_BYTES = 1024  # a whole dead-lettered packed entry keeps this much of each long field
_OWN_FIELDS = {FIELD_PIXELS, FIELD_LABELS, FIELD_PRODUCER, FIELD_SEQ, b"original_id", b"reason", FIELD_INDEX}


def max_packed_bytes(pack_max: int = DEFAULT_PACK_MAX) -> int:
    """The largest packed entry accepted: ``pack_max`` pixels rows and labels, plus the classic limit."""
    return pack_max * (N_PIXELS + 1) + MAX_ENTRY_BYTES


def encode_packed(
    images: np.ndarray, labels: np.ndarray, first_seq: int | None = None, producer: str = ""
) -> dict[bytes, bytes]:
    """Stream fields of a packed entry: (n, 784) uint8 images, n labels 0..9 (and the origin if ``first_seq``).

    >>> fields = encode_packed(np.zeros((3, 784), np.uint8), np.array([7, 0, 9]))
    >>> len(fields[b"pixels"]), fields[b"labels"]
    (2352, b'709')
    >>> decoded = decode_packed(fields)
    >>> decoded.labels.tolist(), decoded.bad
    ([7, 0, 9], [])
    """
    pixels = np.ascontiguousarray(images, dtype=np.uint8)
    codes = np.asarray(labels)
    if pixels.ndim != 2 or pixels.shape[1] != N_PIXELS or codes.shape != (pixels.shape[0],) or not len(codes):
        raise InvalidSample(f"packed: expected (n, {N_PIXELS}) pixels and n labels, got {pixels.shape}, {codes.shape}")
    if codes.min() < 0 or codes.max() > 9:
        raise InvalidSample("labels: must be digits 0-9")
    fields = {FIELD_PIXELS: pixels.tobytes(), FIELD_LABELS: (codes.astype(np.uint8) + 48).tobytes()}
    if first_seq is not None:
        fields.update(encode_origin(producer, first_seq))
    return fields


@dataclass(frozen=True)
class PackedSamples:
    """A decoded packed entry: every sample's pixels and label, and the samples to dead-letter."""

    images: np.ndarray  # (n, 784) uint8, all samples (a view of the entry's bytes)
    labels: np.ndarray  # (n,) int64; 0 where the label is bad
    bad: list[int]  # indices of samples whose label byte is not a digit
    origin: Origin | None

    @property
    def good(self) -> np.ndarray:
        """A mask of the learnable samples."""
        mask = np.ones(len(self.labels), dtype=bool)
        mask[self.bad] = False
        return mask


def decode_packed(fields: dict[bytes, bytes], pack_max: int = DEFAULT_PACK_MAX) -> PackedSamples:
    """The samples of a packed entry, or InvalidSample saying why the entry as a whole is malformed."""
    size = sum(len(k) + len(v) for k, v in fields.items())
    limit = max_packed_bytes(pack_max)
    if size > limit:
        raise InvalidSample(f"packed entry too large: {size} bytes (limit {limit} for pack_max {pack_max})")
    if FIELD_LABEL in fields:
        raise InvalidSample("both 'label' (a classic entry) and 'labels' (a packed one)")
    raw, text = fields.get(FIELD_PIXELS), fields[FIELD_LABELS]
    if raw is None:
        raise InvalidSample("missing field 'pixels'")
    n = len(text)
    if not 1 <= n <= pack_max:
        raise InvalidSample(f"labels: a packed entry holds 1 to {pack_max} samples, got {n}")
    if len(raw) != n * N_PIXELS:
        multiple = "" if len(raw) % N_PIXELS else f" ({len(raw) // N_PIXELS} images)"
        raise InvalidSample(
            f"pixels: expected {n} x {N_PIXELS} = {n * N_PIXELS} bytes for {n} labels, got {len(raw)}{multiple}"
        )
    origin = decode_origin(fields)
    if origin is not None and origin.seq + n - 1 > MAX_SEQ:
        raise InvalidSample(f"seq: {origin.seq} + {n} samples passes {MAX_SEQ}")
    codes = np.frombuffer(text, dtype=np.uint8).astype(np.int64) - 48
    wrong = (codes < 0) | (codes > 9)
    bad = np.flatnonzero(wrong).tolist() if wrong.any() else []
    if bad:
        codes[wrong] = 0
    return PackedSamples(np.frombuffer(raw, dtype=np.uint8).reshape(n, N_PIXELS), codes, bad, origin)


def sample_deadletter(fields: dict[bytes, bytes], index: int, origin: Origin | None) -> dict[bytes, bytes]:
    """The fields a bad sample of a packed entry is dead-lettered with (``deadletter_fields`` adds id and reason).

    Its own pixels, label byte, ``index`` and ``seq``, and the entry's extra fields (truncated).
    """
    text = fields[FIELD_LABELS]
    extras = {k: v for k, v in fields.items() if k not in _OWN_FIELDS}
    out = {
        **truncated_fields(extras)[0],
        FIELD_PIXELS: fields[FIELD_PIXELS][index * N_PIXELS : (index + 1) * N_PIXELS],
        FIELD_LABEL: text[index : index + 1],
        FIELD_INDEX: b"%d" % index,
    }
    if origin is not None:
        out[FIELD_PRODUCER], out[FIELD_SEQ] = origin.producer, b"%d" % (origin.seq + index)
    return out


def sample_reason(fields: dict[bytes, bytes], index: int, count: int) -> str:
    label = fields[FIELD_LABELS][index : index + 1]
    return f"sample {index} of a packed entry of {count}: label must be one digit 0-9, got {label!r}"


def truncated_fields(fields: dict[bytes, bytes], keep: int = KEEP_FIELD_BYTES) -> tuple[dict[bytes, bytes], bool]:
    """The fields with every value longer than ``keep`` bytes cut to ``keep`` (and whether any was).

    >>> truncated_fields({b"pixels": bytes(5000), b"labels": b"12"}, 16)[0][b"pixels"]
    b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
    """
    cut = any(len(v) > keep for v in fields.values()) or any(len(k) > keep for k in fields)
    if not cut:
        return fields, False
    return {k[:keep]: v[:keep] for k, v in fields.items()}, True


def reject_whole(fields: dict[bytes, bytes], reason: str) -> tuple[dict[bytes, bytes], str]:
    """The fields and reason a malformed packed entry is dead-lettered with (``protocol.deadletter_fields``
    bounds its long fields, as for every dead letter)."""
    return fields, reason


class Unpacker:
    """``protocol.decode_entries``'s helper: adds a packed entry's samples to the lists it builds."""

    def __init__(
        self, pack_max: int, ids: list[bytes], chunks: list[bytes], labels: list[int],
        producers: list[bytes | None], seqs: list[int], rejects: list[tuple[bytes, dict[bytes, bytes], str]],
    ) -> None:  # fmt: skip
        self.pack_max = pack_max
        self.ids, self.chunks, self.labels = ids, chunks, labels
        self.producers, self.seqs, self.rejects = producers, seqs, rejects
        self.sizes: dict[bytes, int] = {}
        self._runs: list[tuple[int, np.ndarray]] = []  # (first row in ids, the rows' indices in their entry)

    def add(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            entry = decode_packed(fields, self.pack_max)
        except InvalidSample as exc:
            self.rejects.append((entry_id, *reject_whole(fields, str(exc))))
            return
        n = len(entry.labels)
        self.sizes[entry_id] = n
        origin = entry.origin
        for index in entry.bad:
            self.rejects.append((entry_id, sample_deadletter(fields, index, origin), sample_reason(fields, index, n)))
        if entry.bad:
            good = entry.good
            indices = np.flatnonzero(good)
            self.chunks.append(entry.images[good].tobytes())
            self.labels.extend(entry.labels[good].tolist())
        else:
            indices = np.arange(n)
            self.chunks.append(fields[FIELD_PIXELS])
            self.labels.extend(entry.labels.tolist())
        k = len(indices)
        if not k:
            return
        self._runs.append((len(self.ids), indices))
        self.ids.extend([entry_id] * k)
        if origin is None:
            self.producers.extend([None] * k)
            self.seqs.extend([-1] * k)
        else:
            self.producers.extend([origin.producer] * k)
            self.seqs.extend((indices + origin.seq).tolist())

    def offsets(self) -> tuple[np.ndarray | None, dict[bytes, int]]:
        """Each sample's index inside its entry (None without packed entries), and the packed entries' sizes."""
        if not self.sizes:
            return None, self.sizes
        offsets = np.zeros(len(self.ids), dtype=np.int64)
        for start, indices in self._runs:
            offsets[start : start + len(indices)] = indices
        return offsets, self.sizes
