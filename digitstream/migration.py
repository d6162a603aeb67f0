"""Moving a deployment from the key layout before 0.3 (``M:samples``, ``M:snapshot:latest``, ...) to the
hash-tagged one (``{M}:samples``, ...; ``digitstream.protocol``), which a Redis Cluster needs.

``digitstream models migrate --model M`` runs :func:`migrate`: with no worker of the model running, it
moves the model's samples and dead-letter streams (when they had their default names), its snapshots,
the versions set, the latest and pinned pointers, and the publishers' fences. On one Redis each key is
``RENAME``d (atomic, nothing copied); on a cluster the old and new keys are in different slots, so each
is copied (``DUMP``/``RESTORE``, its expiry kept) and then deleted. Predictions kept for feedback and
Idempotency-Key answers expire within hours and are left to expire. A worker that finds no snapshot in
the new layout but one in the old refuses to start from scratch and names the command
(:func:`refuse_legacy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from .protocol import Keys

if TYPE_CHECKING:
    from .connections import RedisClient


class MigrationError(RuntimeError):
    """The keys cannot be moved as they are (a worker runs, or both layouts hold data)."""


@dataclass(frozen=True)
class LegacyKeys:
    """The names of a model's keys before 0.3."""

    model: str

    @property
    def samples(self) -> str:
        return f"{self.model}:samples"

    @property
    def deadletter(self) -> str:
        return f"{self.model}:deadletter"

    @property
    def snapshot_latest(self) -> str:
        return f"{self.model}:snapshot:latest"

    @property
    def snapshot_versions(self) -> str:
        return f"{self.model}:snapshot:versions"

    def snapshot(self, version: int) -> str:
        return f"{self.model}:snapshot:{version}"

    @property
    def snapshot_times(self) -> str:
        """When each version was written (added in 0.3, beside the layout change: present if a 0.3 worker ran)."""
        return f"{self.model}:snapshot:times"

    @property
    def pinned(self) -> str:
        return f"{self.model}:service:pinned"

    @property
    def lease(self) -> str:
        return f"{self.model}:worker:lease"

    @property
    def producer_pattern(self) -> str:
        return "{" + self.samples + "}:producer:*"


@dataclass
class Moved:
    """What :func:`migrate` moved (old name -> new name), in order."""

    keys: list[tuple[str, str]] = field(default_factory=list)


def plan(client: RedisClient, keys: Keys) -> list[tuple[str, str]]:
    """(old, new) for every old-layout key of the model that exists."""
    old = LegacyKeys(keys.model)
    pairs = [(old.snapshot_latest, keys.snapshot_latest), (old.snapshot_versions, keys.snapshot_versions),
             (old.snapshot_times, keys.snapshot_times), (old.pinned, keys.pinned)]  # fmt: skip
    versions = client.zrange(old.snapshot_versions, 0, -1)
    pairs += [(old.snapshot(int(v)), keys.snapshot(int(v))) for v in versions]  # type: ignore[arg-type]
    if keys.samples == Keys.for_model(keys.model).samples:  # the default stream: its name changes
        pairs.append((old.samples, keys.samples))
        for name in client.scan_iter(match=old.producer_pattern, count=1000):
            text = name.decode() if isinstance(name, bytes) else str(name)
            pairs.append((text, keys.producer(text.rsplit(":producer:", 1)[1])))
    if keys.deadletter == Keys.for_model(keys.model).deadletter:
        pairs.append((old.deadletter, keys.deadletter))
    return [(a, b) for a, b in pairs if client.exists(a)]


def migrate(client: RedisClient, keys: Keys, *, cluster: bool) -> Moved:
    """Move the model's old-layout keys to their tagged names; see the module docstring."""
    old = LegacyKeys(keys.model)
    if client.exists(old.lease):
        raise MigrationError(
            f"a worker of model {keys.model!r} still runs with the old layout (key {old.lease}): stop it first"
        )
    pairs = plan(client, keys)
    clashes = [new for _, new in pairs if client.exists(new)]
    if clashes:
        raise MigrationError(
            f"model {keys.model!r} has data in both layouts (e.g. {clashes[0]}): a new-layout worker already "
            "started; move or delete one side by hand"
        )
    moved = Moved()
    # Pointers last: a reader of the new layout sees the latest pointer only once its snapshot is there.
    pointers = {keys.snapshot_latest, keys.pinned}
    for source, target in sorted(pairs, key=lambda pair: pair[1] in pointers):
        if cluster:
            _copy_then_delete(client, source, target)
        else:
            client.rename(source, target)
        moved.keys.append((source, target))
    return moved


def _copy_then_delete(client: RedisClient, source: str, target: str) -> None:
    payload = client.dump(source)
    if payload is None:
        return
    ttl = int(client.pttl(source))
    client.restore(target, max(ttl, 0), payload)
    client.delete(source)


def refuse_legacy(client: RedisClient, keys: Keys) -> None:
    """Raise MigrationError if the model has snapshots in the old layout only (call when none is found)."""
    old = LegacyKeys(keys.model)
    try:
        found = client.exists(old.snapshot_latest)
    except redis.exceptions.NoPermissionError:  # a user limited to the new layout's keys (docs/deploy.md) cannot look
        return
    if found:
        raise MigrationError(
            f"model {keys.model!r} has snapshots in the key layout before 0.3 ({old.snapshot_latest}); "
            f"run `digitstream models migrate --model {keys.model}` once (docs/cluster.md), then start the worker"
        )
