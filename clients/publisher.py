"""Publishing labelled samples to the model's Redis stream: validated, batched, exactly once, optionally paced.

Validation follows the worker's rules exactly (``digitstream.protocol``), but runs over a whole numpy
batch at once so that publishing stays close to the speed of a bare pipelined XADD loop; the exact
protocol functions are called only for the rows found invalid, to report the same reasons the worker
would give. Invalid samples are never sent.

Each batch is appended by ``clients.producer.Producer``: entries carry the publisher's producer id
and sequence numbers, a Redis restart or failover is ridden out (capped backoff, for ``retry_for``
seconds), and whatever was not acknowledged, or acknowledged and then lost by Redis, is sent again;
neither the fence nor the worker lets a sample count twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitstream.clients.producer import Producer, ProducerConflict, new_producer_id
from digitstream.connections import RedisClient
from digitstream.protocol import (
    IMAGE_SHAPE,
    N_PIXELS,
    InvalidSample,
    Keys,
    validate_label,
    validate_pixels,
)

__all__ = [
    "InvalidSamples",
    "ProducerConflict",
    "PublishProgress",
    "Publisher",
    "Rejection",
    "ValidatedBatch",
    "validate_batch",
]

DEFAULT_BATCH_SIZE = 1000
#: Samples per packed entry for bulk sources (``digitstream publish``): the worker's default batch size,
#: so that each entry is one batch the worker learns.
BULK_PACK = 1000
#: With a rate limit, batches are cut so that one goes out about every 1/_PACED_BATCHES_PER_S seconds.
_PACED_BATCHES_PER_S = 20


@dataclass(frozen=True)
class Rejection:
    """One sample that was not sent: its position in the input and the protocol's reason."""

    index: int
    reason: str


class InvalidSamples(InvalidSample):
    """Some samples of a batch break the stream protocol; nothing of that batch was sent."""

    def __init__(self, rejections: list[Rejection]) -> None:
        self.rejections = rejections
        first = rejections[0]
        more = f" (and {len(rejections) - 1} more)" if len(rejections) > 1 else ""
        super().__init__(f"sample {first.index}: {first.reason}{more}")


@dataclass(frozen=True)
class PublishProgress:
    """Counts since the publisher was created, passed to the progress callback after each batch."""

    sent: int
    rejected: int
    elapsed: float  # seconds since the first publish

    @property
    def rate(self) -> float:
        """Samples sent per second so far."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class ValidatedBatch:
    """The valid rows of a batch, in canonical form, and the reasons for the others."""

    images: np.ndarray  # (k, 784) uint8, C-contiguous
    labels: np.ndarray  # (k,) int64, digits 0..9
    indices: np.ndarray  # (k,) positions of the valid rows in the input
    rejections: list[Rejection]


def validate_batch(images: Any, labels: Any) -> ValidatedBatch:
    """Split a batch into valid samples and rejections, by the rules of ``protocol.encode_sample``.

    ``images`` is (n, 784) or (n, 28, 28) numbers, or any sequence of per-sample pixels that
    ``protocol.validate_pixels`` accepts; ``labels`` is n digits (ints, or one-digit str/bytes).
    Raises ValueError if the two lengths differ (a programming error, not a bad sample).
    """
    label_values, label_ok = _check_labels(labels)
    n = len(label_values)
    pixels, pixel_ok = _check_images(images, n)
    ok = pixel_ok & label_ok
    bad = np.flatnonzero(~ok)
    rejections = [Rejection(int(i), _reason(images, labels, int(i))) for i in bad]
    if bad.size:
        keep = np.flatnonzero(ok)
        return ValidatedBatch(np.ascontiguousarray(pixels[keep]), label_values[keep], keep, rejections)
    return ValidatedBatch(pixels, label_values, np.arange(n), rejections)


class Publisher:
    """Sends labelled samples to the stream ``keys.samples``, ``batch_size`` XADDs per round trip.

    Parameters
    ----------
    client
        A redis-py client (created by the caller; the publisher never opens connections).
    keys
        The model's keys (``Settings.keys`` or ``Keys.for_model(name)``).
    batch_size
        Samples appended per round trip (one Lua script each); raised to ``pack`` if below it.
    pack
        Samples per stream entry: 1 (the default) appends classic entries, one sample each, as a
        person or redis-cli would; more appends packed entries of up to ``pack`` samples
        (``digitstream.packed``), several times faster to send and to learn, for bulk backfill.
        It must not exceed the worker's ``pack_max`` setting (default 1024), or the worker
        dead-letters the entries.
    rate
        Optional limit in samples per second; batches are then cut small and paced evenly, and the
        pace carries over from one ``publish`` call to the next.
    progress
        Called with a :class:`PublishProgress` after every batch sent.
    producer_id
        The id written in every entry (default: a new one per publisher, ``host-pid-random``);
        numbering continues after what Redis holds for it. One publisher per id at a time.
    retry_for
        Seconds to keep retrying through a Redis outage (once Redis has answered once) before the
        Redis error is raised.
    resend_window, resend_max
        Seconds an acknowledged batch is kept (at most ``resend_max`` entries, ~800 bytes each), to
        be sent again if Redis loses it (an append-only file that had not reached the disk);
        entries Redis loses beyond it are counted in ``producer.lost``.
    replicas, wait_timeout
        Durable mode (``Settings.durable_replicas``): a batch counts as sent only once ``replicas``
        replicas acknowledge it (``WAIT``, ``wait_timeout`` seconds each, retried through the fence
        until ``retry_for``); then a failover loses no acknowledged sample.

    Examples
    --------
    >>> publisher = Publisher(redis.Redis(), Keys.for_model())  # doctest: +SKIP
    >>> ids = publisher.publish(images, labels)  # doctest: +SKIP
    """

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        rate: float | None = None,
        progress: Callable[[PublishProgress], None] | None = None,
        producer_id: str | None = None,
        retry_for: float = 300.0,
        resend_window: float = 5.0,
        resend_max: int = 100_000,
        replicas: int = 0,
        wait_timeout: float = 1.0,
        pack: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch_size = max(batch_size, pack)
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0 samples/s, got {rate}")
        self.client = client
        self.keys = keys
        self.batch_size = batch_size if rate is None else min(batch_size, max(1, int(rate / _PACED_BATCHES_PER_S)))
        self.rate = rate
        self.progress = progress
        self.producer = Producer(
            client,
            keys,
            new_producer_id() if producer_id is None else producer_id,
            retry_for=retry_for,
            resend_window=resend_window,
            resend_max=resend_max,
            replicas=replicas,
            wait_timeout=wait_timeout,
            pack=pack,
        )
        self.sent = 0
        self.rejected = 0
        self._started: float | None = None
        self._pace_start = 0.0
        self._paced = 0  # samples sent since the pace clock started

    def publish(self, images: Any, labels: Any, *, skip_invalid: bool = False) -> list[bytes]:
        """Validate then send the samples; returns the stream ids of the samples sent, in order.

        By default a batch holding any invalid sample raises :class:`InvalidSamples`, listing every
        rejection, and nothing of it is sent. With ``skip_invalid=True`` the valid samples are sent and
        the invalid ones only counted in ``rejected``; use :meth:`publish_checked` to get their reasons.
        """
        return self.publish_checked(images, labels, skip_invalid=skip_invalid)[0]

    def publish_checked(
        self, images: Any, labels: Any, *, skip_invalid: bool = True
    ) -> tuple[list[bytes], list[Rejection]]:
        """Like :meth:`publish`, also returning the rejections (indices into this call's input)."""
        batch = validate_batch(images, labels)
        if batch.rejections and not skip_invalid:
            raise InvalidSamples(batch.rejections)
        self.rejected += len(batch.rejections)
        ids = self._send(batch.images, batch.labels)
        if not ids and batch.rejections:
            self._report()
        return ids, batch.rejections

    def publish_many(
        self, samples: Iterable[tuple[Any, Any]], *, skip_invalid: bool = True
    ) -> tuple[list[bytes], list[Rejection]]:
        """Publish ``(pixels, label)`` pairs from any iterable, ``batch_size`` at a time.

        Returns the ids sent and the rejections, whose indices count from the iterable's start.
        With ``skip_invalid=False`` the first invalid batch raises :class:`InvalidSamples` (indices
        from the iterable's start); the batches before it have been sent.
        """
        ids: list[bytes] = []
        rejections: list[Rejection] = []
        start = 0
        for chunk in _chunks(samples, self.batch_size):
            images = [pixels for pixels, _ in chunk]
            labels = [label for _, label in chunk]
            try:
                sent, rejected = self.publish_checked(images, labels, skip_invalid=skip_invalid)
            except InvalidSamples as exc:
                raise InvalidSamples([Rejection(r.index + start, r.reason) for r in exc.rejections]) from None
            ids += sent
            rejections += [Rejection(r.index + start, r.reason) for r in rejected]
            start += len(chunk)
        return ids, rejections

    def _send(self, images: np.ndarray, labels: np.ndarray) -> list[bytes]:
        ids: list[bytes] = []
        if self._started is None:
            self._started = time.perf_counter()
        label_list = labels.tolist()
        for start in range(0, len(label_list), self.batch_size):
            stop = start + self.batch_size
            self._pace()
            ids += self.producer.append(images[start:stop], label_list[start:stop])
            sent = min(stop, len(label_list)) - start
            self.sent += sent
            self._paced += sent
            self._report()
        return ids

    def _pace(self) -> None:
        """Sleep until the samples sent so far fit the rate limit (no catch-up bursts after a stall)."""
        if self.rate is None:
            return
        now = time.perf_counter()
        if self._paced == 0:
            self._pace_start = now
            return
        due = self._pace_start + self._paced / self.rate
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:  # fell far behind (e.g. Redis was slow): restart the clock
            self._pace_start, self._paced = now, 0

    def _report(self) -> None:
        if self.progress is not None:
            elapsed = time.perf_counter() - (self._started or time.perf_counter())
            self.progress(PublishProgress(self.sent, self.rejected, elapsed))


def _chunks(samples: Iterable[tuple[Any, Any]], size: int) -> Iterator[list[tuple[Any, Any]]]:
    chunk: list[tuple[Any, Any]] = []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_labels(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(int64 labels with 0 where invalid, validity mask), vectorised for integer arrays."""
    arr = labels if isinstance(labels, np.ndarray) else np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-d sequence, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        ok = (arr >= 0) & (arr <= 9)
        return np.where(ok, arr, 0).astype(np.int64), ok
    values = np.zeros(len(arr), dtype=np.int64)
    ok = np.zeros(len(arr), dtype=bool)
    for i, label in enumerate(arr.tolist() if arr.dtype != object else arr):
        try:
            values[i] = validate_label(label)
            ok[i] = True
        except InvalidSample:
            pass
    return values, ok


def _check_images(images: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """((n, 784) uint8 pixels with zeros where invalid, validity mask); fast for numeric arrays."""
    arr = images if isinstance(images, np.ndarray) else None
    if arr is None and not _is_ragged_or_bytes(images):
        try:
            arr = np.asarray(images)
        except ValueError:  # ragged nested sequences
            arr = None
    if arr is not None and len(arr) != n:
        raise ValueError(f"{len(arr)} images but {n} labels: every image needs exactly one label")
    if arr is not None and arr.ndim == 3 and arr.shape[1:] == IMAGE_SHAPE:
        arr = arr.reshape(n, N_PIXELS)
    if arr is not None and arr.ndim == 2 and arr.shape[1] == N_PIXELS and arr.dtype.kind in "iubf":
        return _check_numeric(arr)
    return _check_each(images, n)


def _is_ragged_or_bytes(images: Any) -> bool:
    return isinstance(images, list | tuple) and any(isinstance(x, bytes | bytearray | memoryview) for x in images)


def _check_numeric(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr), np.ones(len(arr), dtype=bool)
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8), np.ones(len(arr), dtype=bool)
    with np.errstate(invalid="ignore"):
        ok: np.ndarray = np.asarray(((arr >= 0) & (arr <= 255)).all(axis=1))
        if arr.dtype.kind == "f":
            ok &= (np.isfinite(arr) & (arr == np.round(arr))).all(axis=1)
    pixels = np.zeros(arr.shape, dtype=np.uint8)
    pixels[ok] = arr[ok]
    return pixels, ok


def _check_each(images: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Slow path for sequences of bytes, ragged lists, object arrays: the protocol per sample."""
    items = list(images)
    if len(items) != n:
        raise ValueError(f"{len(items)} images but {n} labels: every image needs exactly one label")
    pixels = np.zeros((n, N_PIXELS), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    for i, item in enumerate(items):
        try:
            pixels[i] = validate_pixels(item)
            ok[i] = True
        except InvalidSample:
            pass
    return pixels, ok


def _reason(images: Any, labels: Any, i: int) -> str:
    """The protocol's own message for sample ``i`` (pixels checked first, as ``encode_sample`` does)."""
    label = labels[i]
    try:
        validate_pixels(images[i])
        validate_label(label.item() if isinstance(label, np.generic) else label)  # "got 10", not "np.int64(10)"
    except InvalidSample as exc:
        return str(exc)
    return "invalid sample"  # unreachable while the vectorised rules match the protocol's
