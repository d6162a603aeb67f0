"""Faults narrowed down to the entries that cause them, so one bad entry never stops the batch.

* **Decoding.** ``decode_entries`` dead-letters every entry the protocol refuses, and any
  unexpected exception for one entry of its slow path. Should it raise all the same (a bug on its
  fast path), the read is bisected: each half is decoded again until the one entry that raises is
  found; it becomes a dead letter with the reason ``internal error: <class>: <message>``.
* **Learning.** ``learn_guarded`` learns a batch from a checkpoint of the learner's state. If the
  learner raises, or leaves non-finite weights, the checkpoint is restored and the batch bisected
  the same way: halves are learned in order, each from the state its predecessor left, down to
  single samples. A sample that raises is dead-lettered as ``internal error: ...``, one that makes
  the weights non-finite as ``diverged``; every other sample is learned, in stream order. Since
  non-finite weights stay non-finite, this is exactly what learning the samples one by one and
  undoing each offender would give: the weights equal those of a learner that saw only the kept
  samples (the learners are exact under any batching).

The happy path costs what it did before: one decode per read, one state copy per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitstream.learner import Learner, learner_from_state
from digitstream.packed import DEFAULT_PACK_MAX, FIELD_LABELS, sample_deadletter
from digitstream.protocol import FIELD_PRODUCER, FIELD_SEQ, N_PIXELS, DecodedBatch, decode_entries, internal_error

DIVERGED = "diverged"


def decode_isolating(entries: Sequence[Sequence[Any]], pack_max: int = DEFAULT_PACK_MAX) -> DecodedBatch:
    """``decode_entries``, with an entry that makes it raise dead-lettered instead (bisection)."""
    try:
        return decode_entries(entries, pack_max)
    except Exception as exc:
        if len(entries) <= 1:
            return _rejected(entries, exc)
        mid = len(entries) // 2
        return concat(decode_isolating(entries[:mid], pack_max), decode_isolating(entries[mid:], pack_max))


def _rejected(entries: Sequence[Sequence[Any]], exc: Exception) -> DecodedBatch:
    entry_id, fields = entries[0][0], entries[0][1]
    return DecodedBatch(
        [], np.empty((0, N_PIXELS), dtype=np.uint8), np.empty(0, dtype=np.int64),
        [(entry_id, as_fields(fields), internal_error(exc))], entry_id,
    )  # fmt: skip


def as_fields(fields: object) -> dict[bytes, bytes]:
    """An entry's fields as a dict of bytes, whatever shape the reply had (for its dead letter)."""
    if isinstance(fields, dict):
        items = list(fields.items())
    elif isinstance(fields, list | tuple):
        items = list(zip(fields[::2], fields[1::2], strict=False))
    else:
        items = []
    return {_as_bytes(k): _as_bytes(v) for k, v in items}


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "replace") if isinstance(value, str) else repr(value).encode()


def concat(first: DecodedBatch, second: DecodedBatch) -> DecodedBatch:
    """Two decoded reads as one, in stream order."""
    producers: list[bytes | None] = []
    seqs: list[int] = []
    if first.producers or second.producers:
        for part in (first, second):
            producers += part.producers or [None] * len(part.ids)
            seqs += part.seqs or [-1] * len(part.ids)
    offsets = None
    if first.offsets is not None or second.offsets is not None:  # packed entries: each sample's index in its entry
        parts = [p.offsets if p.offsets is not None else np.zeros(len(p.ids), np.int64) for p in (first, second)]
        offsets = np.concatenate(parts)
    return DecodedBatch(
        first.ids + second.ids, np.concatenate([first.images, second.images]),
        np.concatenate([first.labels, second.labels]), first.rejects + second.rejects,
        second.last_id or first.last_id, producers, seqs, offsets, {**first.sizes, **second.sizes},
    )  # fmt: skip


def offender_fields(batch: DecodedBatch, index: int, fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The dead letter of sample ``index`` of a batch: its entry's fields, or its own for a packed entry's sample."""
    entry_id = batch.ids[index]
    if entry_id not in batch.sizes or batch.offsets is None or FIELD_LABELS not in fields:
        return fields
    own = sample_deadletter(fields, int(batch.offsets[index]), None)
    if batch.producers and batch.producers[index] is not None:
        own[FIELD_PRODUCER], own[FIELD_SEQ] = batch.producers[index], b"%d" % batch.seqs[index]  # type: ignore[assignment]
    return own


@dataclass
class Learned:
    """A batch learned by ``learn_guarded``: the learner to go on with and what it did not learn."""

    learner: Learner  # the same object, or one restored from a checkpoint
    keep: np.ndarray  # (n,) bool: the samples learned
    predictions: np.ndarray  # of the learned samples, in order: each predicted before its update
    offenders: list[tuple[int, str]]  # (position in the batch, reason) of the samples not learned
    n_samples: int  # the learner's sample count right after the batch


def learn_guarded(learner: Learner, images: np.ndarray, labels: np.ndarray) -> Learned:
    """Learn the batch; samples that raise or make the weights non-finite are left out (see above)."""
    n = len(labels)
    predictions = np.zeros(n, dtype=np.int64)
    offenders: list[tuple[int, str]] = []

    def learn(current: Learner, lo: int, hi: int) -> Learner:
        checkpoint = current.state()
        try:
            predicted = current.learn_many(images[lo:hi], labels[lo:hi])
            if current.is_finite():
                predictions[lo:hi] = predicted
                return current
            reason = DIVERGED
        except Exception as exc:
            reason = internal_error(exc)
        current = learner_from_state(checkpoint)
        if hi - lo == 1:
            offenders.append((lo, reason))
            return current
        mid = (lo + hi) // 2
        return learn(learn(current, lo, mid), mid, hi)

    learner = learn(learner, 0, n) if n else learner
    keep = np.ones(n, dtype=bool)
    keep[[i for i, _ in offenders]] = False
    return Learned(learner, keep, predictions[keep], offenders, learner.n_samples)


__all__ = ["DIVERGED", "Learned", "as_fields", "concat", "decode_isolating", "learn_guarded"]
