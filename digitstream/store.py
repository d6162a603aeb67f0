"""Reading and writing snapshots in Redis (the clients are always passed in).

Writing is one Lua script, so a snapshot, the "latest" pointer, the dead letters found since the
previous snapshot, the stream trim and the notification happen together or not at all
(state and stream position are committed atomically). The script first checks everything that
could fail, the writer's lease and that ``latest`` is still the version it built on
(``digitstream.commit_script``): a worker that lost its lease (paused, partitioned) or missed a
version can never overwrite its successor, and a refused write leaves Redis unchanged.

The script is given every key it touches: the writer reads the kept versions just before and
declares the new version's hash and every version the script may collect (``SnapshotWrite``). On a
stream outside the model's slot (``Keys.stream_apart``, a shared stream) the reader's position and
the trim are a second script, run after the snapshot's, in the stream's slot.

Snapshot metadata (JSON, ``Snapshot.meta``) is written by the worker and read by the service; its
fields are the ``SnapshotMeta`` contract in ``digitstream.contracts``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from .commit_script import STREAM_SCRIPT, TRIM_PROBE, WRITE_SCRIPT, WRITE_SCRIPT_SHARDED
from .connections import is_cluster
from .protocol import Keys
from .snapshot import Snapshot, SnapshotError, decode_snapshot, encode_snapshot

if TYPE_CHECKING:
    from .connections import RedisClient


class LeaseLost(RuntimeError):
    """The writer no longer holds the model's lease; its snapshot was not written."""


class StaleParent(LeaseLost):
    """``latest`` is not the version the writer built on: another writer got in between.

    A kind of ``LeaseLost``: the worker handles it the same way (back to standby, reload the latest).
    """


class SnapshotRefused(RuntimeError):
    """The snapshot script found a key of the wrong type or a bad argument; Redis was left unchanged."""


ANY_PARENT = "*"  # write_snapshot(parent=ANY_PARENT): no compare-and-set (tests, benchmarks, imports)
RETRIES = 10  # writes refused because the versions changed since the writer read them (then StaleParent)


def write_snapshot(
    client: RedisClient,
    keys: Keys,
    snapshot: Snapshot,
    *,
    lease_token: str,
    keep: int,
    parent: int | str | None = ANY_PARENT,
    deadletters: list[dict[bytes, bytes]] = (),  # type: ignore[assignment]
    trim_minid: str | None = None,
    trim_maxlen: int = 0,
    reader: str | None = None,
    keep_minutely: int = 0,
    keep_hourly: int = 0,
) -> int:
    """Write ``snapshot`` atomically as the next version; returns that version (``digitstream.commit_script``).

    ``snapshot.meta["version"]`` is ignored: the script assigns latest + 1 and stores it in the
    hash's ``version`` field. Raises LeaseLost if ``lease_token`` does not hold the model's lease,
    StaleParent if ``latest`` is not ``parent`` (None: no version yet; ``ANY_PARENT``: the latest
    read just before, written again on top of whatever came in between), SnapshotRefused if a key
    has the wrong type or an argument is bad; in each case nothing is written.
    ``trim_minid`` trims the stream below that id; ``trim_maxlen`` (>= ``TRIM_PROBE``) also keeps it
    to that many entries, but only while no more than ``TRIM_PROBE`` entries after the lowest
    reader's position are waiting to be learned. ``reader`` (a model name) records the snapshot's
    ``last_id`` as that model's position in ``Keys.readers``; no trim passes any reader's position.
    Versions kept: the newest ``keep``, the pinned one, one per minute for ``keep_minutely`` minutes
    and one per hour for ``keep_hourly`` hours.

    When the stream is not in the model's slot (``Keys.stream_apart``) the reader's position and the
    trims are a second script in the stream's slot, run once the snapshot is committed; a
    SnapshotRefused from that step says the snapshot itself was written.
    """
    write = SnapshotWrite(
        keys, snapshot, lease_token=lease_token, keep=keep, parent=parent, deadletters=deadletters,
        trim_minid=trim_minid, trim_maxlen=trim_maxlen, reader=reader, keep_minutely=keep_minutely,
        keep_hourly=keep_hourly,
    )  # fmt: skip
    for attempt in range(1, RETRIES + 1):
        try:
            version = int(write.call(client).run(client))
            break
        except redis.ResponseError as exc:
            message = str(exc)
            retry = message.startswith("UNDECLARED") or (message.startswith("STALE") and parent == ANY_PARENT)
            if retry and attempt < RETRIES:
                continue  # nothing was written: read the versions again
            _raise_refusal(keys, lease_token, message)
            raise
    step = write.stream_call()
    if step is not None:
        try:
            step.run(client)
        except redis.ResponseError as exc:
            message = f"snapshot {version} of model {keys.model!r} written, its stream step refused: {exc}"
            raise SnapshotRefused(message) from None
    return version


@dataclass(frozen=True)
class ScriptCall:
    """One run of a script, as ``EVAL`` sends it (built apart from sending it)."""

    script: str
    keys: list[str]
    args: list[Any]

    def run(self, client: RedisClient) -> Any:
        return client.eval(self.script, len(self.keys), *self.keys, *self.args)


class SnapshotWrite:
    """The calls ``write_snapshot`` makes for one snapshot (same arguments): the snapshot script, the stream step."""

    def __init__(
        self, keys: Keys, snapshot: Snapshot, *, lease_token: str, keep: int, parent: int | str | None = ANY_PARENT,
        deadletters: list[dict[bytes, bytes]] = (),  # type: ignore[assignment]
        trim_minid: str | None = None, trim_maxlen: int = 0, reader: str | None = None, keep_minutely: int = 0,
        keep_hourly: int = 0,
    ) -> None:  # fmt: skip
        self.keys, self.parent, self.keep = keys, parent, keep
        self.options: list[Any] = [lease_token, keys.snapshot_prefix, keep, keep_minutely, keep_hourly]
        meta = {k: v for k, v in snapshot.meta.items() if k != "version"}
        fields = encode_snapshot(Snapshot(meta, snapshot.arrays))
        self.stream_args: list[Any] = [str(meta.get("last_id") or "0-0"), reader or "", trim_minid or "", trim_maxlen]
        self.stream_step = keys.stream_apart and bool(reader or trim_minid or trim_maxlen)
        args: list[Any] = ["0" if keys.stream_apart else "1", *self.stream_args, len(fields)]
        for name, value in fields.items():
            args += [name, value]
        args.append(len(deadletters))
        for entry in deadletters:
            args.append(len(entry))
            for name, value in entry.items():
                args += [name, value]
        self.args = args
        self.model_keys = [
            keys.snapshot_latest, keys.snapshot_versions, keys.snapshot_events, keys.lease, keys.deadletter,
            keys.snapshot_times, keys.pinned,
        ]  # fmt: skip
        self.stream_keys = [] if keys.stream_apart else [keys.samples, keys.readers]

    def call(self, client: RedisClient) -> ScriptCall:
        """The snapshot script's call, declaring the versions it may collect as ``client`` reads them now."""
        built_on, versions = _versions_read(client, self.keys, self.parent)
        new_key = self.keys.snapshot(1 if built_on is None else built_on + 1)
        named = {new_key, *self.model_keys, *self.stream_keys}
        candidates = [key for key in collectable(self.keys, versions, self.keep) if key not in named]
        token, *limits = self.options
        head = [token, "" if built_on is None else str(built_on), *limits]
        script = WRITE_SCRIPT_SHARDED if is_cluster(client) else WRITE_SCRIPT
        return ScriptCall(script, [*self.model_keys, new_key, *self.stream_keys, *candidates], [*head, *self.args])

    def stream_call(self) -> ScriptCall | None:
        """The stream step's call (the reader's position and the trims, in the stream's slot), if it has one."""
        if not self.stream_step:
            return None
        return ScriptCall(STREAM_SCRIPT, [self.keys.samples, self.keys.readers], self.stream_args)


def collectable(keys: Keys, versions: list[bytes], keep: int) -> list[str]:
    """The hashes of the versions a write keeping ``keep`` may collect: all but the newest ``keep - 1`` listed.

    ``versions`` is ``Keys.snapshot_versions`` oldest first, as read before the write; the script
    decides which of them it drops (the pin, the history) and refuses to drop one not declared.

    >>> collectable(Keys.for_model("m"), [b"3", b"7", b"8", b"9"], keep=3)
    ['{m}:snapshot:3', '{m}:snapshot:7']
    """
    return [keys.snapshot_prefix + v.decode(errors="replace") for v in versions[: max(0, len(versions) - keep + 1)]]


def _versions_read(client: RedisClient, keys: Keys, parent: int | str | None) -> tuple[int | None, list[bytes]]:
    """(the version the write builds on, the kept versions oldest first): for ``ANY_PARENT``, the latest now."""
    try:
        versions: list[bytes] = client.zrange(keys.snapshot_versions, 0, -1)  # type: ignore[assignment]
    except redis.ResponseError:  # not a sorted set: the script says so
        versions = []
    if parent != ANY_PARENT:
        return (None if parent is None or parent == "" else int(parent)), versions
    latest = client.get(keys.snapshot_latest)
    if isinstance(latest, bytes) and latest.isdigit():
        return int(latest), versions
    return None, versions  # none yet (or not a number, which the script refuses)


def _raise_refusal(keys: Keys, lease_token: str, message: str) -> None:
    if message.startswith("LEASE"):
        raise LeaseLost(f"lease {keys.lease} is not held by {lease_token}") from None
    if message.startswith("STALE"):
        raise StaleParent(f"snapshot of model {keys.model!r} not written: {message[6:]}") from None
    if message.startswith(("BADSTATE", "BADARG", "UNDECLARED")):
        raise SnapshotRefused(f"snapshot of model {keys.model!r} not written: {message}") from None


def register_reader(client: RedisClient, keys: Keys, last_id: str) -> None:
    """Record ``last_id`` as this model's position in the stream's readers (no trim passes it)."""
    client.hset(keys.readers, keys.model, last_id)


def latest_version(client: RedisClient, keys: Keys) -> int | None:
    value = client.get(keys.snapshot_latest)
    return int(value) if value is not None else None


def read_snapshot(client: RedisClient, keys: Keys, version: int | None = None) -> Snapshot | None:
    """The snapshot ``version`` (default: the latest), or None if there is none."""
    if version is None:
        version = latest_version(client, keys)
        if version is None:
            return None
    fields: dict[bytes, bytes] = client.hgetall(keys.snapshot(version))  # type: ignore[assignment]
    if not fields:
        return None
    return decode_snapshot(fields)


def list_versions(client: RedisClient, keys: Keys) -> list[int]:
    """Kept versions, oldest first."""
    members: list[bytes] = client.zrange(keys.snapshot_versions, 0, -1)  # type: ignore[assignment]
    return [int(v) for v in members]


def parse_event(message: bytes | str) -> int:
    """Version number announced on the snapshot events channel."""
    try:
        data = json.loads(message)
        return int(data["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"bad snapshot event {message!r}") from exc


__all__ = [
    "ANY_PARENT",
    "TRIM_PROBE",
    "LeaseLost",
    "ScriptCall",
    "SnapshotRefused",
    "SnapshotWrite",
    "StaleParent",
    "collectable",
    "latest_version",
    "list_versions",
    "parse_event",
    "read_snapshot",
    "register_reader",
    "write_snapshot",
]
