"""The snapshot commit script: one Lua script that checks everything, then writes everything.

``digitstream.store.write_snapshot`` runs it. It is all-or-nothing: every check that can fail
comes before the first write, and each write after them cannot fail on what was checked.

Checks, in order (each refusal is an error reply, and Redis is left exactly as it was):

1. arguments: counts of fields that add up, ids of the form ``ms-seq`` within 64 bits, at most
   ``MAX_FIELDS`` fields per hash or dead letter (Lua's ``unpack`` limit), no two keys the same;
2. key types (``TYPE``): each key absent or of its own type (``BADSTATE``);
3. the lease: held by this writer's token (``LEASE``);
4. the parent: ``latest`` is the version this writer built on, or absent for a new model
   (``STALE``; a compare-and-set, so a writer that missed a version can never overwrite it);
5. the dead-letter stream can take new ids (not at the largest id, ``BADSTATE``).

Writes, in order: the snapshot hash (``version`` = latest + 1), ``latest``, the version set and
the version's creation time (Redis's ``TIME``), this reader's position, the dead letters, the
garbage collection of versions, the stream trims, the ``PUBLISH``. With ``maxmemory`` reached
and ``noeviction``, Redis refuses a script's *first* write only (later ones cannot be stopped
half-way), so an out-of-memory refusal leaves nothing written either.

**Readers.** ``{stream}:readers`` (``Keys.readers``) maps every model reading the stream to the
last id it has learned (its latest snapshot's ``last_id``; the worker registers it when it loads).
No trim ever passes the lowest of them. A value that is not an id counts as ``0-0`` (trims
nothing). A model that stopped reading for good holds the stream until its field is deleted
(``HDEL {stream}:readers <model>``, docs/worker.md): nothing expires on its own.

**Versions kept.** The newest ``keep`` versions; the pinned one (``Keys.pinned``); and, by the
time each was written, the oldest version of each minute of the last ``minutes`` minutes and of
each hour of the last ``hours`` hours. At most ``keep + minutes + hours + 3`` versions (the
partial minute and hour, the pin), whatever the snapshot rate.
"""

from __future__ import annotations

MAX_FIELDS = 3000  # fields of one hash or dead letter the script accepts (Lua's unpack takes ~8000 values)
TRIM_PROBE = 1000  # entries still to learn beyond which the snapshot script skips the length trim
MAX_ID = "18446744073709551615-18446744073709551615"

# KEYS: latest, versions, events, lease, stream, deadletter, times, pinned, readers
# ARGV: token, parent ("" = none, "*" = any), prefix, trim_minid ("" = none), trim_maxlen (0 = none),
#   learned_id, reader ("" = none), keep, minutes, hours, n_fields, field, value, ..., n_dead,
#   (n_f, f, v, ...)...
WRITE_SCRIPT = (
    r"""
local function refuse(code, message) return redis.error_reply(code .. ' ' .. message) end
local MAXU = '18446744073709551615'
local function norm(d) d = string.gsub(d, '^0+', ''); if d == '' then return '0' end; return d end
local function ucmp(a, b)
  if #a ~= #b then if #a < #b then return -1 else return 1 end end
  if a == b then return 0 elseif a < b then return -1 else return 1 end
end
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  if not ms then return nil end
  ms, seq = norm(ms), norm(seq)
  if ucmp(ms, MAXU) > 0 or ucmp(seq, MAXU) > 0 then return nil end
  return {ms, seq}
end
local function idcmp(a, b)
  local c = ucmp(a[1], b[1]); if c ~= 0 then return c end
  return ucmp(a[2], b[2])
end
local function show(id) return id[1] .. '-' .. id[2] end

-- 1. arguments
for a = 1, #KEYS do for b = a + 1, #KEYS do
  if KEYS[a] == KEYS[b] then return refuse('BADARG', 'key ' .. KEYS[a] .. ' is given twice') end
end end
local latest_key, versions_key, events_key, lease_key, stream_key, dead_key, times_key, pinned_key, readers_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local token, parent, prefix, minid_arg = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local maxlen, learned_arg, reader = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local keep, minutes, hours = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
if not (maxlen and keep and minutes and hours) or keep < 1 then return refuse('BADARG', 'limits') end
local learned = parse_id(learned_arg)
if not learned then return refuse('BADARG', 'learned id ' .. learned_arg) end
local cut = nil
if minid_arg ~= '' then
  cut = parse_id(minid_arg)
  if not cut then return refuse('BADARG', 'trim id ' .. minid_arg) end
end
if parent ~= '' and parent ~= '*' and not string.match(parent, '^%d+$') then
  return refuse('BADARG', 'parent ' .. parent)
end
local i = 11
local function count_at(what)
  local n = tonumber(ARGV[i])
  if not n or n < 0 or n > MAX_FIELDS or n ~= math.floor(n) or i + 2 * n > #ARGV then return nil end
  return n
end
local n = count_at('fields')
if not n or n < 1 then return refuse('BADARG', 'snapshot fields') end
local fields_at = i + 1
i = i + 1 + 2 * n
local dead = tonumber(ARGV[i])
if not dead or dead < 0 then return refuse('BADARG', 'dead letters') end
local dead_at = i + 1
i = i + 1
for d = 1, dead do
  local nf = count_at('dead letter')
  if not nf or nf < 1 then return refuse('BADARG', 'dead letter ' .. d) end
  i = i + 1 + 2 * nf
end
if i ~= #ARGV + 1 then return refuse('BADARG', 'argument count') end

-- 2. key types
local expected = {{latest_key, 'string'}, {versions_key, 'zset'}, {lease_key, 'string'}, {stream_key, 'stream'},
  {dead_key, 'stream'}, {times_key, 'zset'}, {pinned_key, 'string'}, {readers_key, 'hash'}}
for _, kt in ipairs(expected) do
  local t = redis.call('TYPE', kt[1])['ok']
  if t ~= 'none' and t ~= kt[2] then
    return refuse('BADSTATE', kt[1] .. ' is a ' .. t .. ', not a ' .. kt[2])
  end
end

-- 3. the lease
if redis.call('GET', lease_key) ~= token then return redis.error_reply('LEASE lease lost') end

-- 4. the parent
local current = redis.call('GET', latest_key)
if current and not string.match(current, '^%d+$') then
  return refuse('BADSTATE', latest_key .. ' is not a version number')
end
if parent ~= '*' then
  local expected_parent = (parent ~= '') and tonumber(parent) or nil
  local found = current and tonumber(current) or nil
  if expected_parent ~= found then
    return refuse('STALE', 'latest is ' .. (current or 'none') .. ', not ' .. (parent ~= '' and parent or 'none'))
  end
end
local version = tonumber(current or '0') + 1

-- 5. the dead-letter stream
if dead > 0 and redis.call('EXISTS', dead_key) == 1 then
  local info = redis.call('XINFO', 'STREAM', dead_key)
  for k = 1, #info, 2 do
    if info[k] == 'last-generated-id' and info[k + 1] == 'MAX_ID' then
      return refuse('BADSTATE', dead_key .. ' has reached the largest stream id')
    end
  end
end

-- Reads for the trims and the garbage collection (still nothing written).
local lowest = learned
if reader ~= '' then
  local others = redis.call('HGETALL', readers_key)
  for k = 1, #others, 2 do
    if others[k] ~= reader then
      local position = parse_id(others[k + 1]) or {'0', '0'}
      if idcmp(position, lowest) < 0 then lowest = position end
    end
  end
end
local pinned = redis.call('GET', pinned_key)
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

-- Writes (none of them can fail on what was checked above).
local key = prefix .. version
redis.call('DEL', key)
redis.call('HSET', key, 'version', version, unpack(ARGV, fields_at, fields_at + 2 * n - 1))
redis.call('SET', latest_key, version)
redis.call('ZADD', versions_key, version, version)
redis.call('ZADD', times_key, now_ms, version)
if reader ~= '' then redis.call('HSET', readers_key, reader, show(learned)) end
i = dead_at
for d = 1, dead do
  local nf = tonumber(ARGV[i])
  redis.call('XADD', dead_key, '*', unpack(ARGV, i + 1, i + 2 * nf))
  i = i + 1 + 2 * nf
end
local all = redis.call('ZRANGE', versions_key, 0, -1)
if #all > keep then
  local seen = {}
  for idx = 1, #all - keep do
    local v = all[idx]
    local kept = (v == pinned)
    local t = tonumber(redis.call('ZSCORE', times_key, v))
    if t then
      local age = now_ms - t
      if age < minutes * 60000 then
        local bucket = 'm' .. math.floor(t / 60000)
        if not seen[bucket] then seen[bucket] = true; kept = true end
      end
      if age < hours * 3600000 then
        local bucket = 'h' .. math.floor(t / 3600000)
        if not seen[bucket] then seen[bucket] = true; kept = true end
      end
    end
    if not kept then
      redis.call('DEL', prefix .. v)
      redis.call('ZREM', versions_key, v)
      redis.call('ZREM', times_key, v)
    end
  end
end
-- The trims never pass the lowest reader: MINID at most the id after it; the length trim only
-- while at most TRIM_PROBE entries after it are left (then the newest maxlen hold them all).
local ceiling = lowest
if #lowest[2] < 15 then ceiling = {lowest[1], tostring(tonumber(lowest[2]) + 1)} end
if cut then
  if idcmp(cut, ceiling) > 0 then cut = ceiling end
  redis.call('XTRIM', stream_key, 'MINID', show(cut))
end
if maxlen >= TRIM_PROBE then
  local unlearned = redis.call('XRANGE', stream_key, '(' .. show(lowest), '+', 'COUNT', TRIM_PROBE + 1)
  if #unlearned <= TRIM_PROBE then redis.call('XTRIM', stream_key, 'MAXLEN', maxlen) end
end
redis.call('PUBLISH', events_key, '{"version":' .. version .. '}')
return version
""".replace("TRIM_PROBE", str(TRIM_PROBE))
    .replace("MAX_FIELDS", str(MAX_FIELDS))
    .replace("MAX_ID", MAX_ID)
)
#: The same script for a Redis Cluster: the notification is a sharded message (SPUBLISH, Redis 7), which
#: stays within the model's shard; the channel is declared among the keys (KEYS[3]), in the model's slot.
#: A cluster of Redis 6.2 has no SPUBLISH (its services poll, docs/cluster.md): a classic PUBLISH then.
_NOTIFY = "redis.call('PUBLISH', events_key, '{\"version\":' .. version .. '}')"
_NOTIFY_SHARDED = (
    "local note = '{\"version\":' .. version .. '}'\n"
    "local sent = redis.pcall('SPUBLISH', events_key, note)\n"
    "if type(sent) == 'table' and sent.err then redis.call('PUBLISH', events_key, note) end"
)
WRITE_SCRIPT_SHARDED = WRITE_SCRIPT.replace(_NOTIFY, _NOTIFY_SHARDED)
assert WRITE_SCRIPT_SHARDED != WRITE_SCRIPT
