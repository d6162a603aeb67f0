"""Cutting a decoded read into the batches the learner takes, inside packed entries if need be.

A read holding packed entries (``digitstream.packed``) may hold far more samples than
``batch_size``: it is learned in pieces of at most ``batch_size`` samples, cut wherever that falls,
also inside an entry. A piece reaches up to its ``last_id`` (the last entry it finishes) plus
``partial`` samples of the next entry, which is exactly what the position records
(``worker.position``), so a snapshot taken between two pieces of one entry holds the samples
before the cut and a restarted worker skips them (:func:`skip_consumed`), learning the rest.

Rejects go to the piece their place in the stream falls in: a whole entry by its position, a
bad sample of a packed entry by its ``index`` as well.
"""

from __future__ import annotations

from digitstream.packed import FIELD_INDEX
from digitstream.protocol import DecodedBatch

Piece = tuple[DecodedBatch, list[bytes]]  # a batch to learn, and the ids of the entries it finishes


def pieces(batch: DecodedBatch, entry_ids: list[bytes], limit: int) -> list[Piece]:
    """``batch`` (the decoded read of ``entry_ids``) as pieces of at most ``limit`` learnable samples."""
    if batch.offsets is None or len(batch.ids) <= limit:
        return [(batch, entry_ids)]
    order = {entry_id: i for i, entry_id in enumerate(entry_ids)}
    places = [_place(batch, order, entry_id, fields) for entry_id, fields, _ in batch.rejects]
    ids, offsets = batch.ids, batch.offsets
    out: list[Piece] = []
    start = finished = rejected = 0
    while len(ids) - start > limit:
        stop = start + limit
        entry_id, index = ids[stop - 1], int(offsets[stop - 1])
        entry = order[entry_id]
        last_id: bytes | None
        if index == batch.sizes.get(entry_id, 1) - 1:  # the cut falls between two entries
            ends, last_id, partial = entry + 1, entry_id, 0
        else:
            ends, last_id, partial = entry, entry_ids[entry - 1] if entry else None, index + 1
        upto = rejected
        while upto < len(places) and places[upto] <= (entry, index):
            upto += 1
        piece = _rows(batch, start, stop, batch.rejects[rejected:upto], last_id, partial)
        out.append((piece, entry_ids[finished:ends]))
        start, finished, rejected = stop, ends, upto
    out.append((_rows(batch, start, len(ids), batch.rejects[rejected:], batch.last_id, 0), entry_ids[finished:]))
    return out


def skip_consumed(batch: DecodedBatch, first_id: bytes, offset: int) -> DecodedBatch:
    """The read without the first ``offset`` samples of its first entry ``first_id`` (a snapshot had them)."""
    if offset <= 0 or first_id not in batch.sizes or batch.offsets is None:
        return batch
    ids, offsets = batch.ids, batch.offsets
    drop = [i for i in range(len(ids)) if ids[i] == first_id and offsets[i] < offset]
    rejects = [r for r in batch.rejects if r[0] != first_id or _index(r[1]) >= offset]
    kept = batch.without(drop) if drop else batch
    kept.rejects = rejects
    return kept


def _rows(
    batch: DecodedBatch, start: int, stop: int, rejects: list[tuple[bytes, dict[bytes, bytes], str]],
    last_id: bytes | None, partial: int,
) -> DecodedBatch:  # fmt: skip
    with_origin = bool(batch.producers)
    return DecodedBatch(
        batch.ids[start:stop], batch.images[start:stop], batch.labels[start:stop], rejects, last_id,
        batch.producers[start:stop] if with_origin else [], batch.seqs[start:stop] if with_origin else [],
        None if batch.offsets is None else batch.offsets[start:stop], batch.sizes, partial,
    )  # fmt: skip


def _place(
    batch: DecodedBatch, order: dict[bytes, int], entry_id: bytes, fields: dict[bytes, bytes]
) -> tuple[int, int]:
    """Where a reject sits in the read: (its entry, its sample's index for a bad sample of a packed entry)."""
    return order[entry_id], _index(fields) if entry_id in batch.sizes else 0


def _index(fields: dict[bytes, bytes]) -> int:
    raw = fields.get(FIELD_INDEX, b"0")
    return int(raw) if raw.isdigit() else 0


__all__ = ["Piece", "pieces", "skip_consumed"]
