"""Reading and writing snapshots in Redis (the clients are always passed in).

Writing is one Lua script, so a snapshot, the "latest" pointer, the dead letters found since the
previous snapshot, the stream trim and the notification happen together or not at all
(state and stream position are committed atomically). The script first checks the writer's
lease: a worker that lost its lease (paused, partitioned) can never overwrite its successor.

Snapshot metadata (JSON, ``Snapshot.meta``) is written by the worker and read by the service; its
fields are the ``SnapshotMeta`` contract in ``digitstream.contracts``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import redis

from .protocol import Keys
from .snapshot import Snapshot, SnapshotError, decode_snapshot, encode_snapshot

if TYPE_CHECKING:
    from .connections import RedisClient


class LeaseLost(RuntimeError):
    """The writer no longer holds the model's lease; its snapshot was not written."""


# KEYS: latest, versions, events, lease, stream, deadletter ; ARGV: token, keep, prefix,
# trim_minid ("" = none), trim_maxlen (0 = none), learned_id, n_fields, field, value, ..., n_dead,
# (n_f, f, v, ...)...
# The version is assigned here (latest + 1), so it is continuous whoever writes. The length trim
# happens only when at most TRIM_PROBE entries are still to learn and the limit is at least that:
# then the newest trim_maxlen entries hold every one of them.
TRIM_PROBE = 1000  # entries still to learn beyond which the snapshot script skips the length trim
_WRITE_SCRIPT = """
local latest_key, versions_key, events_key, lease_key, stream_key, dead_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local token, keep, prefix, minid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local maxlen, learned_id = tonumber(ARGV[5]), ARGV[6]
if redis.call('GET', lease_key) ~= token then
  return redis.error_reply('LEASE lease lost')
end
local version = tonumber(redis.call('GET', latest_key) or '0') + 1
local i = 7
local n = tonumber(ARGV[i]); i = i + 1
local hash = {}
for j = 1, n do
  hash[#hash + 1] = ARGV[i]; hash[#hash + 1] = ARGV[i + 1]
  i = i + 2
end
redis.call('DEL', prefix .. version)
redis.call('HSET', prefix .. version, 'version', version, unpack(hash))
redis.call('SET', latest_key, version)
redis.call('ZADD', versions_key, version, version)
local dead = tonumber(ARGV[i]); i = i + 1
for d = 1, dead do
  local nf = tonumber(ARGV[i]); i = i + 1
  local entry = {}
  for j = 1, nf do entry[#entry + 1] = ARGV[i]; entry[#entry + 1] = ARGV[i + 1]; i = i + 2 end
  redis.call('XADD', dead_key, '*', unpack(entry))
end
local count = redis.call('ZCARD', versions_key)
if count > keep then
  local old = redis.call('ZRANGE', versions_key, 0, count - keep - 1)
  for _, v in ipairs(old) do redis.call('DEL', prefix .. v) end
  redis.call('ZREMRANGEBYRANK', versions_key, 0, count - keep - 1)
end
if minid ~= '' then redis.call('XTRIM', stream_key, 'MINID', minid) end
if maxlen >= TRIM_PROBE then
  local unlearned = redis.call('XRANGE', stream_key, '(' .. learned_id, '+', 'COUNT', TRIM_PROBE + 1)
  if #unlearned <= TRIM_PROBE then redis.call('XTRIM', stream_key, 'MAXLEN', maxlen) end
end
redis.call('PUBLISH', events_key, '{"version":' .. version .. '}')
return version
""".replace("TRIM_PROBE", str(TRIM_PROBE))


def write_snapshot(
    client: RedisClient,
    keys: Keys,
    snapshot: Snapshot,
    *,
    lease_token: str,
    keep: int,
    deadletters: list[dict[bytes, bytes]] = (),  # type: ignore[assignment]
    trim_minid: str | None = None,
    trim_maxlen: int = 0,
) -> int:
    """Write ``snapshot`` atomically as the next version; returns that version.

    ``snapshot.meta["version"]`` is ignored: the script assigns latest + 1 and stores it in the
    hash's ``version`` field. Raises LeaseLost if ``lease_token`` does not hold the model's lease.
    ``trim_minid`` trims the stream below that id; ``trim_maxlen`` (>= ``TRIM_PROBE``) also keeps it
    to that many entries, but only while no more than ``TRIM_PROBE`` entries after the snapshot's
    ``last_id`` are waiting to be learned, so nothing unlearned is ever trimmed. It bounds the stream
    even when workers restart too often to know ``trim_maxlen`` learned ids themselves.
    """
    meta = {k: v for k, v in snapshot.meta.items() if k != "version"}
    fields = encode_snapshot(Snapshot(meta, snapshot.arrays))
    learned_id = str(meta.get("last_id") or "0-0")
    args: list[Any] = [lease_token, keep, keys.snapshot_prefix, trim_minid or "", trim_maxlen, learned_id, len(fields)]
    for name, value in fields.items():
        args += [name, value]
    args.append(len(deadletters))
    for entry in deadletters:
        args.append(len(entry))
        for name, value in entry.items():
            args += [name, value]
    script_keys = [
        keys.snapshot_latest, keys.snapshot_versions, keys.snapshot_events, keys.lease, keys.samples, keys.deadletter,
    ]
    try:
        return int(client.eval(_WRITE_SCRIPT, len(script_keys), *script_keys, *args))
    except redis.ResponseError as exc:
        if str(exc).startswith("LEASE"):
            raise LeaseLost(f"lease {keys.lease} is not held by {lease_token}") from None
        raise


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
