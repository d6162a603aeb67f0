"""A worker pool: one process learns every registered model that matches its patterns, sharing them
with the other live pools.

``digitstream worker --models all`` (or a comma-separated list of names and globs) runs one
:class:`WorkerPool`. Every ``interval`` seconds it

1. renews its membership (``digitstream.registry.MEMBERS_KEY``, a sorted set of pool ids scored
   by their expiry on the Redis server's clock, with the patterns each pool serves beside it);
   a pool that stops renewing drops out after ``ttl`` seconds (the lease TTL);
2. reads the registry when its change counter moved (a new model is picked up without restarts);
3. gives each model to one live pool by rendezvous hashing (highest ``blake2b(pool, model)``
   among the pools whose patterns match the model): every pool computes the same answer from the
   same membership, the models spread evenly, and a join or a death moves only the models that
   the joiner wins or the dead pool held;
4. starts a :class:`~digitstream.worker.loop.Worker` thread for each model it now owns (a hot
   standby until the model's lease is free) and asks the ones it no longer owns to stop, which
   finishes their batch and writes a final snapshot before the lease is released: a model changes
   hands only at a snapshot.

Rendezvous only decides who *tries*: each model still has exactly one writer, fenced by its lease
(and by the snapshot script's checks). When pools disagree for a moment (a membership change seen
by one before the other), the newcomer waits as a standby until the old owner lets go.

A dead pool's models are learning again after its membership and their leases expire (both the
lease TTL) plus one interval; a joining pool takes its share within an interval plus the time its
predecessors take to finish a batch and snapshot.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from digitstream.connections import RedisClient
from digitstream.registry import MEMBERS_KEY, PATTERNS_KEY, ModelConfig, Registry
from digitstream.settings import Settings

from .loop import Worker
from .retry import CONNECTION_ERRORS

log = logging.getLogger("digitstream.worker")

# KEYS: members, patterns ; ARGV: pool id, ttl ms, patterns JSON ("" = leave).
# Returns [member, patterns JSON, ...] of the live pools (after this one's renewal), on the server's clock.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(expired) do redis.call('HDEL', KEYS[2], m) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]); redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, m in ipairs(live) do
  out[#out + 1] = m; out[#out + 1] = redis.call('HGET', KEYS[2], m) or '[]'
end
return out
"""


def parse_patterns(text: str) -> tuple[str, ...]:
    """``all`` (every model), or comma-separated names and shell globs (``tenant-*``)."""
    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
    if not patterns:
        raise ValueError("--models: give 'all', or names and globs separated by commas")
    return ("*",) if "all" in patterns else patterns


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _weight(pool: str, model: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{pool}\0{model}".encode(), digest_size=8).digest(), "big")


def owner(model: str, pools: Mapping[str, Sequence[str]]) -> str | None:
    """The pool that learns ``model``: the highest rendezvous weight among the pools whose patterns match it.

    >>> pools = {"a": ["*"], "b": ["*"], "c": ["tenant-*"]}
    >>> owner("x", pools) in ("a", "b") and owner("x", {"c": ["tenant-*"]}) is None
    True
    """
    candidates = [pool for pool, patterns in pools.items() if matches(model, patterns)]
    return max(candidates, key=lambda pool: (_weight(pool, model), pool)) if candidates else None


class Membership:
    """This pool's entry among the live pools, renewed on the Redis server's clock."""

    def __init__(self, client: RedisClient, pool_id: str, patterns: Sequence[str], ttl: float) -> None:
        self._beat = client.register_script(_BEAT)
        self.pool_id = pool_id
        self._patterns = json.dumps(list(patterns))
        self._ttl_ms = max(1, int(ttl * 1000))

    def beat(self) -> dict[str, list[str]]:
        """Renew this pool; the live pools and their patterns."""
        return self._run(self._patterns)

    def leave(self) -> None:
        self._run("")

    def _run(self, patterns: str) -> dict[str, list[str]]:
        reply = self._beat(keys=[MEMBERS_KEY, PATTERNS_KEY], args=[self.pool_id, self._ttl_ms, patterns])
        pools: dict[str, list[str]] = {}
        for member, raw in zip(reply[::2], reply[1::2], strict=True):
            try:
                listed = json.loads(raw)
            except ValueError:
                listed = []
            pools[member.decode() if isinstance(member, bytes) else member] = [str(p) for p in listed]
        return pools


@dataclass
class _Running:
    config: ModelConfig
    worker: Worker
    thread: threading.Thread


class WorkerPool:
    """Learns the models matching ``patterns`` that rendezvous gives this pool; ``run()`` until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        client: RedisClient,
        patterns: Sequence[str],
        *,
        pool_id: str | None = None,
        interval: float | None = None,
        make_worker: Callable[[Settings, RedisClient, str], Worker] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.patterns = tuple(patterns)
        self.pool_id = pool_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.interval = interval if interval is not None else min(0.5, settings.lease_ttl / 4)
        self.membership = Membership(client, self.pool_id, self.patterns, settings.lease_ttl)
        self.registry = Registry(client)
        self._make_worker = make_worker or (lambda s, c, worker_id: Worker(s, c, worker_id=worker_id))
        self._running: dict[str, _Running] = {}
        self._stopping = threading.Event()
        self._models: dict[str, ModelConfig] = {}
        self._registry_version = -1
        self._wanted: dict[str, ModelConfig] = {}
        self._wanted_basis: tuple[int, tuple[tuple[str, tuple[str, ...]], ...]] | None = None

    @property
    def models(self) -> list[str]:
        """The models this pool runs a worker for (active or standby), sorted."""
        return sorted(self._running)

    def stop(self) -> None:
        """Stop every model's worker (each writes its final snapshot), then leave (signal-safe)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        log.info("worker pool %s serving models %s", self.pool_id, ", ".join(self.patterns))
        unreachable_since: float | None = None  # one warning per outage, and one line when it ends
        try:
            while not self._stopping.is_set():
                try:
                    self.step()
                    if unreachable_since is not None:
                        log.info("worker pool %s: Redis reachable again after %.1fs", self.pool_id,
                                 time.monotonic() - unreachable_since)  # fmt: skip
                        unreachable_since = None
                except CONNECTION_ERRORS as exc:  # each worker rides out the outage itself; retry the round
                    if unreachable_since is None:
                        log.warning("worker pool %s: Redis unreachable (%s); retrying", self.pool_id, exc)
                        unreachable_since = time.monotonic()
                self._stopping.wait(self.interval)
        finally:
            for running in self._running.values():
                running.worker.stop()
            for running in self._running.values():
                running.thread.join()
            self._running.clear()
            with contextlib.suppress(*CONNECTION_ERRORS):  # else it expires by itself
                self.membership.leave()
            log.info("worker pool %s stopped", self.pool_id)

    def step(self) -> None:
        """One round: renew membership, re-read the registry if it changed, start and stop workers."""
        pools = self.membership.beat()
        version = self.registry.version()
        if version != self._registry_version:
            self._models = self.registry.models()
            self._registry_version = version
        # Rendezvous hashes every model against every pool: only when the models or the pools changed.
        basis = (version, tuple(sorted((pool, tuple(patterns)) for pool, patterns in pools.items())))
        if basis != self._wanted_basis:
            self._wanted = {
                name: config
                for name, config in self._models.items()
                if matches(name, self.patterns) and owner(name, pools) == self.pool_id
            }
            self._wanted_basis = basis
        self._reconcile(self._wanted)

    def _reconcile(self, wanted: Mapping[str, ModelConfig]) -> None:
        for name, running in list(self._running.items()):
            if not running.thread.is_alive():
                del self._running[name]  # ended: handed over, deleted, or failed (logged by the thread)
            elif (wanted.get(name) != running.config) and not running.worker.stopping:
                why = "handed over" if name in self._models else "deleted from the registry"
                log.info("model %r: %s; stopping its worker after a final snapshot", name, why)
                running.worker.stop()
        for name, config in wanted.items():
            if name not in self._running:
                self._start(config)

    def _start(self, config: ModelConfig) -> None:
        settings = config.settings(self.settings)
        worker = self._make_worker(settings, self.client, f"{self.pool_id}/{config.name}")

        def target() -> None:
            try:
                worker.run()
            except Exception:  # logged; the next round starts a new worker if the model is still ours
                log.exception("worker of model %r failed", config.name)

        thread = threading.Thread(target=target, name=f"digitstream-model-{config.name}", daemon=True)
        self._running[config.name] = _Running(config, worker, thread)
        thread.start()


__all__ = ["Membership", "WorkerPool", "matches", "owner", "parse_patterns"]
