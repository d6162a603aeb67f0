"""What a role checks of its Redis server at start: could it evict our keys? (a warning, never fatal).

The stream holds samples not yet learned and the snapshots hold the model: Redis must never evict
them. With ``maxmemory`` set, only ``maxmemory-policy noeviction`` guarantees that (Redis then
refuses writes when full: publishers see an error and retry, nothing acknowledged is lost). The
decision, documented in docs/deploy.md:

* ``noeviction``: silent;
* ``volatile-*``: a warning. The stream and the snapshots have no TTL, so they stay; but keys with
  one can go early: the lease (a standby takes over; the snapshot script's fence keeps that safe),
  kept predictions (their feedback is refused), Idempotency-Key answers and producer fences (a
  retried sample could then be learned twice);
* ``allkeys-*``: a warning that samples and the model itself can be evicted.

The worker and the service log it once at start (``check_eviction``). A user without the right to
run ``INFO`` (an older ACL file), a cluster that answers per node, or an unreachable server only
skip the check, logged at DEBUG.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

SAFE_POLICY = "noeviction"


def eviction_risk(policy: str) -> str | None:
    """The warning for ``maxmemory-policy`` ``policy``, or None when it evicts nothing of ours.

    >>> eviction_risk("noeviction") is None
    True
    >>> eviction_risk("allkeys-lru").split(":")[0]
    'Redis maxmemory-policy allkeys-lru can evict any key'
    """
    fix = f"set maxmemory-policy {SAFE_POLICY} (docs/deploy.md)"
    if policy == SAFE_POLICY:
        return None
    if policy.startswith("volatile-"):
        return (
            f"Redis maxmemory-policy {policy} can evict keys with a TTL: the stream and the snapshots stay, but the "
            "worker lease, kept predictions, Idempotency-Key answers and producer fences may go early (a retried "
            f"sample could then be learned twice); {fix}"
        )
    return (
        f"Redis maxmemory-policy {policy} can evict any key: the samples stream (samples lost before they are "
        f"learned) and the snapshots (the model itself); {fix}"
    )


def _policy(info: Any) -> str | None:
    if isinstance(info, dict):
        value = info.get("maxmemory_policy")
        if isinstance(value, bytes | str):
            return value.decode() if isinstance(value, bytes) else value
        for node in info.values():  # a cluster client answers per node
            found = _policy(node) if isinstance(node, dict) else None
            if found is not None:
                return found
    return None


def _report(info: Any, log: logging.Logger) -> str | None:
    policy = _policy(info)
    warning = None if policy is None else eviction_risk(policy)
    if warning is not None:
        log.warning("%s", warning)
    return warning


def check_eviction(client: Any, log: logging.Logger) -> str | None:
    """Log (and return) the warning for the server's eviction policy, if any."""
    try:
        info = client.info("memory")
    except (redis.RedisError, OSError) as exc:
        log.debug("could not read the Redis eviction policy: %s", exc)
        return None
    return _report(info, log)


async def check_eviction_async(client: Any, log: logging.Logger) -> str | None:
    """``check_eviction`` for an asyncio client (the service)."""
    try:
        info = await client.info("memory")
    except (redis.RedisError, OSError) as exc:
        log.debug("could not read the Redis eviction policy: %s", exc)
        return None
    return _report(info, log)
