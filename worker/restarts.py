"""Unclean starts at one stream position, counted across worker processes: a crash loop made visible.

Each worker records, when it becomes active, the position it continues from in
``{model}:worker:restarts`` (a hash: ``position``, ``count``): the count goes up when the position
is the one recorded, and starts again at 1 when it moved. A clean stop (``stop()``, a drained
burst) deletes the key. So ``count`` is the number of consecutive starts at a position that no
worker got past nor left cleanly: at ``CRASH_LOOP_STARTS`` the worker records a ``restart``
fault, logs an ERROR, and reports the learning health ``crash-looping`` (``WorkerStatus.health``,
``restarts``) until it commits a position beyond it.
"""

from __future__ import annotations

from digitstream.connections import RedisClient

CRASH_LOOP_STARTS = 3

# KEYS: restarts hash ; ARGV: position. Returns the starts counted at that position.
_RECORD = """
if redis.call('HGET', KEYS[1], 'position') == ARGV[1] then
  return redis.call('HINCRBY', KEYS[1], 'count', 1)
end
redis.call('HSET', KEYS[1], 'position', ARGV[1], 'count', 1)
return 1
"""


def record_start(client: RedisClient, key: str, position: str) -> int:
    """Count a start at ``position``; returns the consecutive starts there (1 after any progress)."""
    return int(client.eval(_RECORD, 1, key, position))


def clear(client: RedisClient, key: str) -> None:
    """A clean stop: the next start is not a restart after a crash."""
    client.delete(key)


__all__ = ["CRASH_LOOP_STARTS", "clear", "record_start"]
