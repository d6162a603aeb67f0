"""The worker lease: one active learner per model, a Redis key with an expiry, renewed by its holder.

The key (``Keys.lease``) holds the holder's token. Claiming and releasing are compare-and-set Lua
scripts, so two workers can never both believe they hold it. A worker that dies stops renewing and
its lease expires after ``ttl`` seconds; a standby then claims it. A worker paused for longer than
``ttl`` finds the lease gone or taken when it resumes, and ``digitstream.store.write_snapshot``
(which checks the token inside its own script) refuses its writes in any case: the worker goes
back to standby and drops its state. A worker that finds its lease expired but free (Redis was
down for longer than ``ttl``) claims it again and keeps its in-memory state only if no other
worker wrote a snapshot meanwhile (``Lease.keep``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from digitstream.connections import RedisClient
from digitstream.store import LeaseLost

if TYPE_CHECKING:
    from .retry import RedisRetry

log = logging.getLogger("digitstream.worker")

# KEYS: lease ; ARGV: token, ttl_ms. Returns 0 (held by another), 1 (newly claimed), 2 (ours, renewed).
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Claim(enum.IntEnum):
    """Outcome of claiming the lease."""

    HELD_BY_OTHER = 0
    ACQUIRED = 1  # it was free (never held, released, or expired): state may have moved on since
    RENEWED = 2  # we held it all along


class Lease:
    """The lease of one model for the worker identified by ``token``."""

    def __init__(self, client: RedisClient, key: str, token: str, ttl: float) -> None:
        self.client = client
        self.key = key
        self.token = token
        self.ttl_ms = max(1, round(ttl * 1000))
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def claim(self) -> Claim:
        """Take the lease if it is free, or extend it if it is ours; never steals it."""
        return Claim(int(self._claim(keys=[self.key], args=[self.token, self.ttl_ms])))

    def release(self) -> bool:
        """Give the lease up (only if still ours), so a standby takes over without waiting for the expiry."""
        return bool(self._release(keys=[self.key], args=[self.token]))

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def keep(self, retry: RedisRetry, version: int | None, latest: Callable[[], int | None]) -> None:
        """Renew the lease held since snapshot ``version``; raise LeaseLost if our state may be stale.

        That is when another worker holds it, or when it had expired (e.g. Redis was down for longer
        than the TTL) and ``latest()``, the latest snapshot, is not ``version`` any more.
        """
        claim = retry(self.claim)
        if claim == Claim.HELD_BY_OTHER:
            raise LeaseLost(f"{self.key} is held by {retry(self.holder)}")
        if claim == Claim.ACQUIRED:
            current = retry(latest)
            if current != version:
                raise LeaseLost(
                    f"the lease was let go and snapshot {current} was written by another writer (a worker or an import)"
                )
            log.warning("the lease had expired; claimed it again (no other worker wrote in between)")
