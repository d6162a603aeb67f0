"""``Idempotency-Key`` on POST /samples and /feedback: a retry gets the first answer, nothing is appended twice.

A client that got no answer (a timeout, a dropped connection, a 503 while Redis was paused) cannot
know whether its samples were appended. Sent again with the same ``Idempotency-Key`` header, the
request gets the first request's stream ids (and the header ``Idempotent-Replayed: true``) and
appends nothing. One Lua script looks the key up and, only if it is new, appends the samples and
records the answer, atomically: copies of a request racing on two replicas append once.

**Bounds.** A key is 1-128 characters ``A-Z a-z 0-9 _ . : -`` (a UUID fits). Answers are kept in
one hash per period of ``idempotency_ttl`` seconds (``Keys.idempotency``); a request looks in the
previous, current and next period's hash, and a hash expires two periods after its own ends, so an
answer is kept at least ``idempotency_ttl`` seconds (replicas' clocks may differ by less than that)
and at most three periods. A period's answers take at most ``idempotency_max_bytes`` (an answer is
its key, a fingerprint and the stream ids: ~40 bytes per sample); beyond that a keyed request is
answered 503 until the next period rather than let callers fill Redis. Only requests that passed
the write checks (the API key) get this far. The same key with another request is 422.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated

import numpy as np
from fastapi import Header, HTTPException

from digitstream.connections import AsyncRedisClient
from digitstream.protocol import Keys, encode_sample
from digitstream.settings import Settings

from .stream import publish
from .validation import InvalidInput

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_BYTES_FIELD = "#bytes"  # a period's total; '#' is outside the key alphabet
_ID_BYTES = 42  # the longest stream id ("<20 digits>-<20 digits>") and a separator

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        pattern=KEY_PATTERN,
        max_length=128,
        description="any unique string (e.g. a UUID) to send again with a retry: the retry gets the first answer "
        "and appends nothing",
    ),
]

# KEYS: stream, previous period, this period, next period ; ARGV: key, fingerprint, expire-at (unix ms),
# max bytes, n, (pixels, label) x n. Answers {0, record} (a replay), {1, record} (appended), {-1, used} (full).
_PUBLISH_ONCE = """
for k = 2, 4 do
  local found = redis.call('HGET', KEYS[k], ARGV[1])
  if found then return {0, found} end
end
local n = tonumber(ARGV[5])
local used = tonumber(redis.call('HGET', KEYS[3], '#bytes') or '0')
if used + #ARGV[1] + #ARGV[2] + ID_BYTES * n > tonumber(ARGV[4]) then return {-1, tostring(used)} end
local ids = {}
local j = 6
for i = 1, n do
  ids[i] = redis.call('XADD', KEYS[1], '*', 'pixels', ARGV[j], 'label', ARGV[j + 1])
  j = j + 2
end
local record = ARGV[2] .. ' ' .. table.concat(ids, ' ')
redis.call('HSET', KEYS[3], ARGV[1], record)
redis.call('HINCRBY', KEYS[3], '#bytes', #ARGV[1] + #record)
redis.call('PEXPIREAT', KEYS[3], ARGV[3])
return {1, record}
""".replace("ID_BYTES", str(_ID_BYTES))


def fingerprint(endpoint: str, *parts: bytes | str | np.ndarray) -> str:
    """What a request asks for (a retry must ask for the same): a hash of its endpoint and contents."""
    digest = hashlib.sha256(endpoint.encode())
    for part in parts:
        data = part.tobytes() if isinstance(part, np.ndarray) else part.encode() if isinstance(part, str) else part
        digest.update(b"\0%d\0" % len(data))
        digest.update(data)
    return digest.hexdigest()[:32]


class Idempotency:
    """The answers of keyed requests (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.keys: Keys = settings.keys
        self.ttl = settings.idempotency_ttl
        self.max_bytes = settings.idempotency_max_bytes

    async def replay(self, client: AsyncRedisClient, key: str, request: str) -> list[str] | None:
        """The stream ids answered to ``key`` if it was seen (422 if for another request), else None."""
        _, periods = self._periods()
        async with client.pipeline(transaction=False) as pipe:
            for name in periods:
                pipe.hget(name, key)
            found = [r for r in await pipe.execute() if r is not None]
        return self._answer(key, request, found[0]) if found else None

    async def publish(
        self, client: AsyncRedisClient, key: str | None, request: str, images: np.ndarray, labels: np.ndarray
    ) -> tuple[list[str], bool]:
        """(stream ids, replayed): the samples appended once per ``key`` (always, without a key)."""
        if key is None:
            return await publish(client, self.keys, images, labels), False
        now, periods = self._periods()
        expire_at = round((now + 3) * self.ttl * 1000)  # two periods after this one ends
        args: list[bytes | str | int] = [key, request, expire_at, self.max_bytes, len(labels)]
        for image, label in zip(images, labels, strict=True):
            fields = encode_sample(image, int(label))
            args += [fields[b"pixels"], fields[b"label"]]
        names = [self.keys.samples, *periods]
        status, body = await client.eval(_PUBLISH_ONCE, len(names), *names, *args)
        if int(status) < 0:
            wait = max(1, round(self.ttl - time.time() % self.ttl))
            raise HTTPException(
                503, f"{HEADER} (header): too many keyed requests for now (idempotency_max_bytes reached); retry in "
                f"{wait} s or without the header", headers={"Retry-After": str(wait)},
            )  # fmt: skip
        return self._answer(key, request, body), int(status) == 0

    def _periods(self) -> tuple[int, list[str]]:
        """The current period's number, and the previous, current and next periods' hashes."""
        now = int(time.time() // self.ttl)
        return now, [self.keys.idempotency(p) for p in (now - 1, now, now + 1)]

    def _answer(self, key: str, request: str, record: bytes) -> list[str]:
        stored, *ids = record.decode().split(" ")
        if stored != request:
            raise InvalidInput(
                f"{HEADER} (header): {key!r} was already used for a different request "
                f"(keys are remembered for {self.ttl:g} s); use a new key for a new request"
            )
        return ids


__all__ = ["HEADER", "REPLAYED_HEADER", "Idempotency", "IdempotencyKey", "fingerprint"]
