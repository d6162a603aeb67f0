"""One producer's entries appended exactly once: sequence numbers, a fenced append, resending through restarts.

Every entry a :class:`Producer` appends carries its ``producer`` id and a ``seq`` number
(``digitstream.protocol.Origin``). Numbers count samples, consecutive: a classic entry takes one, a
packed entry of N samples (``pack``, ``digitstream.packed``) the number of its first sample, its
samples the N numbers from it, so everything below (the fence, the resend) works sample by sample
whatever the packing. A batch is appended by one Lua script that
also records, in ``Keys.producer(id)`` (in the stream's cluster slot), the highest number appended
(the *fence*), and that appends nothing unless that record is the number the producer expects. So:

* **A batch whose reply was lost** (a timeout, a broken connection, a Redis restart) is simply
  sent again: if it had landed, the fence refuses it and says so; if not, it is appended now.
  Nothing is ever appended twice by the producer itself.
* **A Redis that lost acknowledged entries** (killed before its append-only file reached the disk,
  or a replica promoted before it had them) holds a lower fence than the producer expects: the
  producer resends the entries after it from the ones it keeps, in order, before anything new. It
  keeps what Redis acknowledged in the last ``resend_window`` seconds (at most ``resend_max``
  entries); Redis losing older entries is reported in ``lost``, never silent.
* **Durable mode** (``replicas`` > 0): a batch counts as appended only once ``WAIT`` says that many
  replicas hold it. A shorter answer, or a master lost meanwhile, sends the batch again through the
  fence (so a failover that lost it appends it again, and one that kept it appends nothing), until
  the replicas have it or ``retry_for`` runs out: a promoted replica never lacks an acknowledged entry.
* **Outages** are ridden out with capped exponential backoff for up to ``retry_for`` seconds once
  Redis has answered once (a Redis that never answered fails at once: a wrong URL is not an outage).

The worker skips entries whose number it has already learned (``worker.dedupe``), so even a resend
the fence cannot see (its record expired after ``ttl`` seconds idle) is learned once.
One producer id belongs to one producer at a time: a fence beyond what this producer has sent
raises :class:`ProducerConflict`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from digitstream.connections import OUTAGE_ERRORS, RedisClient, wait_for_replicas
from digitstream.packed import FIELD_LABELS, MAX_PACK_MAX
from digitstream.protocol import FIELD_LABEL, FIELD_PIXELS, FIELD_PRODUCER, FIELD_SEQ, N_PIXELS, Keys, encode_origin

log = logging.getLogger("digitstream.publisher")

#: Errors after which Redis may be back soon (BusyLoadingError is a ConnectionError; ReadOnlyError: a failover).
RETRYABLE: tuple[type[Exception], ...] = (*OUTAGE_ERRORS, redis.ReadOnlyError)
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
_LABEL_BYTES = [b"%d" % digit for digit in range(10)]

# KEYS: stream, fence ; ARGV: expected seq ("" = no record), ttl ms, producer, instance token, n, label field
# ("label", or "labels" for packed entries), the last sample's seq, (pixels, label(s), seq) x n. Appends all n
# entries and moves the fence (seq, the first and last ids, and the token of the Producer instance that wrote
# them), or (fenced) appends nothing and answers where it stands.
APPEND_SCRIPT = """
local held = redis.call('HGET', KEYS[2], 'seq') or ''
if held ~= ARGV[1] then
  local where = redis.call('HMGET', KEYS[2], 'first', 'last', 'owner')
  return {0, held, where[1] or '', where[2] or '', where[3] or ''}
end
local n, stream, producer, field = tonumber(ARGV[5]), KEYS[1], ARGV[3], ARGV[6]
local ids = {}
local j = 8
for i = 1, n do
  ids[i] = redis.call('XADD', stream, '*', 'pixels', ARGV[j], field, ARGV[j + 1],
                      'producer', producer, 'seq', ARGV[j + 2])
  j = j + 3
end
redis.call('HSET', KEYS[2], 'seq', ARGV[7], 'first', ids[1], 'last', ids[n], 'owner', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {1, ids}
"""
assert all(f"'{name.decode()}'" in APPEND_SCRIPT for name in (FIELD_PIXELS, FIELD_PRODUCER, FIELD_SEQ))


def _packed_command(items: list[Any]) -> list[bytes | memoryview]:
    """A command in RESP, its large arguments as they are and the rest joined (few, large writes).

    >>> b"".join(_packed_command([b"EVALSHA", "ab", 2, memoryview(b"x" * 3)]))
    b'*4\\r\\n$7\\r\\nEVALSHA\\r\\n$2\\r\\nab\\r\\n$1\\r\\n2\\r\\n$3\\r\\nxxx\\r\\n'
    """
    out: list[bytes | memoryview] = []
    head = bytearray(b"*%d\r\n" % len(items))
    for item in items:
        value = item.encode() if isinstance(item, str) else b"%d" % item if isinstance(item, int) else item
        head += b"$%d\r\n" % len(value)
        if len(value) > 16384:
            out += (bytes(head), value)
            head = bytearray(b"\r\n")
        else:
            head += value
            head += b"\r\n"
    out.append(bytes(head))
    return out


class ProducerConflict(RuntimeError):
    """Redis holds a sequence number for this producer id beyond any this producer sent."""


def new_producer_id() -> str:
    """A producer id unique to this run: ``host-pid-random`` (within the protocol's alphabet and length)."""
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@dataclass
class _Batch:
    """Entries with consecutive sequence numbers from ``first``; ``acked_at`` once Redis holds them."""

    first: int
    pixels: bytes  # n x 784, a copy: the caller may reuse its arrays before a resend
    labels: list[int]
    acked_at: float = 0.0

    @property
    def end(self) -> int:
        return self.first + len(self.labels)

    def after(self, seq: int) -> _Batch:
        """The part of the batch numbered above ``seq``."""
        skip = max(0, seq + 1 - self.first)
        return _Batch(self.first + skip, self.pixels[skip * N_PIXELS :], self.labels[skip:], self.acked_at)


@dataclass
class _Outage:
    started: float
    attempts: int = 0
    resent_before: int = 0


@dataclass
class Producer:
    """Appends batches for one producer id, exactly once, through outages (see the module docstring)."""

    client: RedisClient
    keys: Keys
    producer_id: str = field(default_factory=new_producer_id)
    retry_for: float = 300.0
    resend_window: float = 5.0
    resend_max: int = 100_000
    ttl: float = 86400.0
    replicas: int = 0  # durable mode: replicas that must acknowledge each batch (WAIT); 0 = off
    wait_timeout: float = 1.0  # seconds per WAIT
    resent: int = 0  # entries appended again after Redis lost them
    lost: int = 0  # acknowledged entries Redis lost that were no longer kept for resending
    outages: int = 0
    pack: int = 1  # samples per entry: 1 = classic entries, more = packed ones of up to ``pack`` samples

    def __post_init__(self) -> None:
        encode_origin(self.producer_id, 0)  # InvalidSample naming the problem
        if not 1 <= self.pack <= MAX_PACK_MAX:
            raise ValueError(f"pack must be 1..{MAX_PACK_MAX} samples per entry, got {self.pack}")
        if self.retry_for < 0 or self.resend_window < 0 or self.resend_max < 0 or self.ttl <= 0:
            raise ValueError("retry_for, resend_window and resend_max must be >= 0, ttl > 0")
        self._fence = self.keys.producer(self.producer_id)
        self._token = uuid.uuid4().hex  # tells this instance's appends from another's under the same id
        self._script = self.client.register_script(APPEND_SCRIPT)
        self._held: int | None = None  # the highest number Redis holds for us, as far as we know
        self._next: int | None = None  # the next number to give (None before the first contact)
        self._kept: deque[_Batch] = deque()
        self._kept_entries = 0
        self._accounted = 0  # numbers below this are already counted in ``lost``
        self._outage: _Outage | None = None

    @property
    def next_seq(self) -> int | None:
        """The number the next entry gets (None until the first append)."""
        return self._next

    def append(self, images: np.ndarray, labels: list[int]) -> list[bytes]:
        """Append the samples (``(n, 784)`` uint8 and n digits) after all earlier ones; returns their ids.

        One id per sample: the samples of one packed entry share its id."""
        if not labels:
            return []
        if self._next is None:
            held = self.client.hget(self._fence, "seq")  # not retried: an unreachable Redis fails at once
            self._held = None if held is None else int(held)
            self._next = 0 if self._held is None else self._held + 1
        batch = _Batch(self._next, np.ascontiguousarray(images, dtype=np.uint8).tobytes(), labels)
        self._next = batch.end
        before = self._held
        ids = self._deliver(batch)
        if self.replicas:
            ids = self._until_replicated(batch, before, ids)
        batch.acked_at = time.monotonic()
        self._keep(batch)
        return ids

    # -- delivery ---------------------------------------------------------------------------------
    def _deliver(self, batch: _Batch) -> list[bytes]:
        """Append ``batch``, first resending whatever Redis turns out to have lost."""
        pending = [batch]
        while True:
            piece = pending[0]
            try:
                reply: list[Any] = self._append(keys=[self.keys.samples, self._fence], args=self._args(piece))
                ids = self._per_sample(piece, self._settle(piece, batch, reply))
            except RETRYABLE as exc:
                self._wait(exc)
                continue
            if ids is None:  # Redis holds less than we thought: resend from there
                pending = [*self._kept_after(self._held), batch]
                continue
            self._held = piece.end - 1
            pending.pop(0)
            if piece is batch:
                self._recovered()
                return ids
            self.resent += len(piece.labels)
            piece.acked_at = time.monotonic()

    def _args(self, piece: _Batch) -> list[Any]:
        pack, n = self.pack, len(piece.labels)
        entries = -(-n // pack)
        args: list[Any] = [b"" if self._held is None else b"%d" % self._held, round(self.ttl * 1000),
                           self.producer_id, self._token, entries, FIELD_LABEL if pack == 1 else FIELD_LABELS,
                           b"%d" % (piece.end - 1)]  # fmt: skip
        rows = memoryview(piece.pixels)
        if pack == 1:
            for i, (label, seq) in enumerate(zip(piece.labels, range(piece.first, piece.end), strict=True)):
                args += (rows[i * N_PIXELS : (i + 1) * N_PIXELS], _LABEL_BYTES[label], b"%d" % seq)
            return args
        text = (np.array(piece.labels, dtype=np.uint8) + 48).tobytes()
        for start in range(0, n, pack):
            stop = min(n, start + pack)
            args += (rows[start * N_PIXELS : stop * N_PIXELS], text[start:stop], b"%d" % (piece.first + start))
        return args

    def _append(self, keys: list[str], args: list[Any]) -> Any:
        """The append script; packed entries' pixels go out as they are (redis-py's hiredis packer copies them)."""
        client = self.client
        if self.pack == 1 or type(client) is not redis.Redis:
            return self._script(keys=keys, args=args)
        pool = client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(_packed_command([b"EVALSHA", self._script.sha, len(keys), *keys, *args]))  # type: ignore[no-untyped-call]
            reply = connection.read_response()
        except redis.exceptions.NoScriptError:  # not loaded (yet, or Redis restarted): redis-py's way loads it
            return self._script(keys=keys, args=args)
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]  # a reply may be on its way: not reused
            raise
        finally:
            pool.release(connection)
        return reply

    def _per_sample(self, piece: _Batch, ids: list[bytes] | None) -> list[bytes] | None:
        """The entries' ids, one per sample (a packed entry's id repeated for each of its samples)."""
        if ids is None or self.pack == 1:
            return ids
        n, pack = len(piece.labels), self.pack
        out: list[bytes] = []
        for k, entry_id in enumerate(ids):
            out += [entry_id] * (min(n, (k + 1) * pack) - k * pack)
        return out

    def _settle(self, piece: _Batch, batch: _Batch, reply: list[Any]) -> list[bytes] | None:
        """The ids of ``piece`` if Redis holds it now; None (and ``_held`` updated) if Redis lost entries."""
        if int(reply[0]) == 1:
            return list(reply[1])
        held = int(reply[1]) if reply[1] else None
        if held == piece.end - 1 and reply[4] == self._token.encode():  # it had landed: only its reply was lost
            return self._read_back(reply[2], reply[3], piece) if piece is batch else []
        if held is not None and held > (self._held if self._held is not None else -1):
            raise ProducerConflict(
                f"Redis holds sequence number {held} for producer {self.producer_id!r}, beyond the {self._held} this "
                "publisher knows of: another publisher is using the same producer id"
            )
        self._count_lost(held, batch)
        self._held = held
        return None

    def _read_back(self, first_id: bytes, last_id: bytes, piece: _Batch) -> list[bytes]:
        """The ids of a batch that landed while its reply was lost (one script: a contiguous range)."""
        expected = -(-len(piece.labels) // self.pack)
        entries: list[tuple[bytes, Any]] = self.client.xrange(  # type: ignore[assignment]
            self.keys.samples, first_id, last_id, count=expected
        )
        ids = [entry_id for entry_id, _ in entries]
        if len(ids) != expected:
            log.warning("%d of %d entries appended by producer %s were trimmed before their ids could be read back",
                        expected - len(ids), expected, self.producer_id)  # fmt: skip
        return ids

    def _count_lost(self, held: int | None, batch: _Batch) -> None:
        floor = self._kept[0].first if self._kept else batch.first
        if held is None:
            log.warning(
                "Redis no longer holds producer %s's record (restarted without persistence, or %gs idle): resending "
                "the %d entries kept; any older ones Redis lost cannot be resent", self.producer_id, self.ttl,
                self._kept_entries,
            )  # fmt: skip
            return
        missing = floor - max(held + 1, self._accounted)
        if missing > 0:
            self.lost += missing
            log.error(
                "Redis lost %d acknowledged entries of producer %s (numbers %d..%d) that are no longer kept for "
                "resending (resend_window %gs); use appendfsync always for no loss", missing, self.producer_id,
                floor - missing, floor - 1, self.resend_window,
            )  # fmt: skip
        self._accounted = max(self._accounted, floor)
        log.warning("Redis holds producer %s's entries up to number %d only: resending from there",
                    self.producer_id, held)  # fmt: skip

    def _kept_after(self, held: int | None) -> list[_Batch]:
        """The kept entries numbered above ``held`` (all of them if None)."""
        start = -1 if held is None else held
        return [kept.after(start) for kept in self._kept if kept.end - 1 > start]

    def _keep(self, batch: _Batch) -> None:
        """Keep an acknowledged batch for resending; forget the ones older than the window (the newest stays)."""
        self._kept.append(batch)
        self._kept_entries += len(batch.labels)
        horizon = time.monotonic() - self.resend_window
        while len(self._kept) > 1 and (self._kept[0].acked_at < horizon or self._kept_entries > self.resend_max):
            self._kept_entries -= len(self._kept.popleft().labels)

    def _until_replicated(self, batch: _Batch, before: int | None, ids: list[bytes]) -> list[bytes]:
        """Durable mode: return once ``replicas`` replicas hold ``batch``; raise after ``retry_for`` seconds."""
        started: float | None = None
        attempt = 0
        while True:
            try:
                acked = wait_for_replicas(self.client, self.keys.samples, self.replicas, self.wait_timeout)
                problem = f"{acked} of {self.replicas} replicas acknowledged it"
            except RETRYABLE as exc:
                acked, problem = -1, str(exc)
            if acked >= self.replicas:
                if started is not None:
                    log.warning("batch replicated after %.1fs", time.monotonic() - started)
                return ids
            now = time.monotonic()
            if started is None:
                started = now
                log.warning(
                    "batch not replicated yet (%s); verifying and waiting for up to %gs", problem, self.retry_for
                )
            elif now - started >= self.retry_for:
                raise redis.TimeoutError(f"batch not replicated after {self.retry_for:g}s: {problem}")
            if acked < 0:  # the connection broke: back off before asking again
                attempt += 1
                time.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempt, 16)))
            self._held = before  # verify through the fence: landed (ids read back) or lost (appended again)
            ids = self._deliver(batch)

    # -- outages ----------------------------------------------------------------------------------
    def _wait(self, exc: Exception) -> None:
        """Sleep before the next attempt (capped exponential backoff with jitter); re-raise after ``retry_for``."""
        now = time.monotonic()
        if self._outage is None:
            self._outage = _Outage(now, resent_before=self.resent)
            self.outages += 1
            log.warning("Redis unreachable (%s); retrying for up to %gs", exc, self.retry_for)
        outage = self._outage
        if now - outage.started >= self.retry_for:
            self._outage = None
            raise exc
        outage.attempts += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(outage.attempts, 16))
        time.sleep(min(random.uniform(delay / 2, delay), outage.started + self.retry_for - now))

    def _recovered(self) -> None:
        if self._outage is not None:
            seconds = time.monotonic() - self._outage.started
            resent = self.resent - self._outage.resent_before
            log.warning("Redis reachable again after %.1fs; %d entries resent", seconds, resent)
            self._outage = None


__all__ = ["RETRYABLE", "Producer", "ProducerConflict", "new_producer_id"]
