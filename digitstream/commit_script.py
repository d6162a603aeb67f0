"""The snapshot commit scripts: each checks everything, then writes everything, on keys it is given.

``digitstream.store.write_snapshot`` runs them. Every key a script touches is declared in its
``KEYS``, none is built inside (``tests/test_script_keys.py`` watches them on a real Redis), and all
of one script's keys share one hash tag: on a Redis Cluster each script runs in one slot.

**The snapshot script** (``WRITE_SCRIPT``) commits the model's keys, all tagged ``{M}``. It is
all-or-nothing: every check that can fail comes before the first write, and each write after them
cannot fail on what was checked. Checks, in order (each refusal is an error reply, and Redis is left
exactly as it was):

1. arguments: counts of fields that add up, ids of the form ``ms-seq`` within 64 bits, at most
   ``MAX_FIELDS`` fields per hash or dead letter (Lua's ``unpack`` limit), no two keys the same;
2. key types (``TYPE``): each key absent or of its own type (``BADSTATE``);
3. the lease: held by this writer's token (``LEASE``);
4. the parent: ``latest`` is the version this writer built on, or absent for a new model
   (``STALE``; a compare-and-set, so a writer that missed a version can never overwrite it); the
   new version's hash, ``Keys.snapshot(parent + 1)``, is the declared one (``BADARG`` otherwise);
5. the dead-letter stream can take new ids (not at the largest id, ``BADSTATE``);
6. the versions to collect (below) are all declared (``UNDECLARED``: the writer reads the versions
   again and retries; it happens only when the version set changed since its read).

Writes, in order: the snapshot hash (``version`` = latest + 1), ``latest``, the version set and
the version's creation time (Redis's ``TIME``), the dead letters, the garbage collection of
versions, with the stream (below) this reader's position and the trims, the ``PUBLISH``. With
``maxmemory`` reached and ``noeviction``, Redis refuses a script's *first* write only (later ones
cannot be stopped half-way), so an out-of-memory refusal leaves nothing written either.

**Versions kept.** The newest ``keep`` versions; the pinned one (``Keys.pinned``); and, by the
time each was written, the oldest version of each minute of the last ``minutes`` minutes and of
each hour of the last ``hours`` hours. At most ``keep + minutes + hours + 3`` versions (the
partial minute and hour, the pin), whatever the snapshot rate. The script decides which versions
to drop, as before, by Redis's clock; the writer declares every version it *might* drop: each one
in ``Keys.snapshot_versions`` but the newest ``keep - 1``, read just before (``store.collectable``;
at most ``minutes + hours + 4`` keys once the history is bounded). Declaring a superset, rather
than predicting the script's decision, needs no agreement between the writer's clock and Redis's,
and a pin moved meanwhile never makes a retry: only a change of the version set itself does.

**Readers and trims.** ``{stream}:readers`` (``Keys.readers``, in the stream's slot) maps every
model reading the stream to the last id it has learned (its latest snapshot's ``last_id``; the
worker registers it when it loads). No trim ever passes the lowest of them. A value that is not an
id counts as ``0-0`` (trims nothing). A model that stopped reading for good holds the stream until
its field is deleted (``HDEL {stream}:readers <model>``, docs/worker.md): nothing expires on its own.

Where the stream shares the model's hash tag (its own stream ``{M}:samples``, or any ``{M}:...``),
the snapshot script declares the stream and its readers too and does both in the same atomic write.
Where it does not (``Keys.stream_apart``: a stream shared by several models, or any other name), on
one Redis as on a cluster, the snapshot script commits the model's keys alone and then the **stream
script** (``STREAM_SCRIPT``), in the stream's slot, records the reader's position and trims, with
the same checks first. A crash, an outage or a refusal between the two leaves the reader's position
behind the committed snapshot: the stream is trimmed less, never more, and the next snapshot's
stream step catches up (the position is only ever a snapshot's ``last_id``, so setting it again is
harmless). Dead letters stay with the model: the dead-letter stream is one of the model's keys.
"""

from __future__ import annotations

MAX_FIELDS = 3000  # fields of one hash or dead letter the script accepts (Lua's unpack takes ~8000 values)
TRIM_PROBE = 1000  # entries still to learn beyond which the snapshot script skips the length trim
MAX_ID = "18446744073709551615-18446744073709551615"
#: The snapshot script's keys before the stream's (when it has them) and the versions it may collect.
MODEL_KEYS = 8

# Stream ids as pairs of decimal strings (Lua's numbers hold 53 bits, ids 64 + 64).
_IDS = r"""
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
local function distinct_keys()
  local seen = {}
  for k = 1, #KEYS do
    if seen[KEYS[k]] then return refuse('BADARG', 'key ' .. KEYS[k] .. ' is given twice') end
    seen[KEYS[k]] = true
  end
end
local function check_types(expected)
  for _, kt in ipairs(expected) do
    local t = redis.call('TYPE', kt[1])['ok']
    if t ~= 'none' and t ~= kt[2] then
      return refuse('BADSTATE', kt[1] .. ' is a ' .. t .. ', not a ' .. kt[2])
    end
  end
end
"""

# The stream step, shared by both scripts. ARGV from ``at``: learned id, reader ("" = none),
# trim_minid ("" = none), trim_maxlen (0 = none).
_STREAM = r"""
local function stream_args(at)
  if #ARGV < at + 3 then return nil, 'stream arguments' end
  local s = {learned = parse_id(ARGV[at]), reader = ARGV[at + 1], maxlen = tonumber(ARGV[at + 3])}
  if not s.learned then return nil, 'learned id ' .. ARGV[at] end
  if not s.maxlen then return nil, 'limits' end
  if ARGV[at + 2] ~= '' then
    s.cut = parse_id(ARGV[at + 2])
    if not s.cut then return nil, 'trim id ' .. ARGV[at + 2] end
  end
  return s
end
-- A read: the lowest position of the stream's readers, this one's counted at the id it learned.
local function lowest_reader(readers_key, s)
  local lowest = s.learned
  if s.reader ~= '' then
    local others = redis.call('HGETALL', readers_key)
    for k = 1, #others, 2 do
      if others[k] ~= s.reader then
        local position = parse_id(others[k + 1]) or {'0', '0'}
        if idcmp(position, lowest) < 0 then lowest = position end
      end
    end
  end
  return lowest
end
-- The writes: this reader's position, then the trims, which never pass the lowest reader: MINID at
-- most the id after it; the length trim only while at most TRIM_PROBE entries after it are left
-- (then the newest maxlen hold them all). The probe reads those entries whole (~4 ms of Redis for
-- TRIM_PROBE MNIST entries, ten times the rest of a snapshot): only for a stream longer than
-- maxlen, the only one the length trim changes.
local function stream_writes(stream_key, readers_key, s, lowest)
  if s.reader ~= '' then redis.call('HSET', readers_key, s.reader, show(s.learned)) end
  local ceiling = lowest
  if #lowest[2] < 15 then ceiling = {lowest[1], tostring(tonumber(lowest[2]) + 1)} end
  local cut = s.cut
  if cut then
    if idcmp(cut, ceiling) > 0 then cut = ceiling end
    redis.call('XTRIM', stream_key, 'MINID', show(cut))
  end
  if s.maxlen >= TRIM_PROBE and redis.call('XLEN', stream_key) > s.maxlen then
    local unlearned = redis.call('XRANGE', stream_key, '(' .. show(lowest), '+', 'COUNT', TRIM_PROBE + 1)
    if #unlearned <= TRIM_PROBE then redis.call('XTRIM', stream_key, 'MAXLEN', s.maxlen) end
  end
end
"""

# KEYS: latest, versions, events, lease, deadletter, times, pinned, the new version's hash (Keys.snapshot(parent + 1)),
#   [stream, readers: when ARGV with_stream is 1], then the versions' hashes it may collect (any number).
# ARGV: token, parent ("" = none), snapshot key prefix, keep, minutes, hours, with_stream (0/1),
#   learned_id, reader ("" = none), trim_minid ("" = none), trim_maxlen (0 = none),
#   n_fields, field, value, ..., n_dead, (n_f, f, v, ...)...
_WRITE = r"""
-- 1. arguments
local bad = distinct_keys(); if bad then return bad end
local latest_key, versions_key, events_key, lease_key, dead_key, times_key, pinned_key, new_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local token, parent, prefix, with_stream = ARGV[1], ARGV[2], ARGV[3], ARGV[7]
local keep, minutes, hours = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if not (keep and minutes and hours) or keep < 1 then return refuse('BADARG', 'limits') end
if parent ~= '' and not string.match(parent, '^%d+$') then return refuse('BADARG', 'parent ' .. parent) end
if with_stream ~= '0' and with_stream ~= '1' then return refuse('BADARG', 'with_stream ' .. with_stream) end
local s, problem = stream_args(8)
if not s then return refuse('BADARG', problem) end
local stream_key, readers_key, first_version_key = nil, nil, MODEL_KEYS + 1
if with_stream == '1' then
  stream_key, readers_key, first_version_key = KEYS[MODEL_KEYS + 1], KEYS[MODEL_KEYS + 2], MODEL_KEYS + 3
end
if #KEYS < first_version_key - 1 then return refuse('BADARG', 'key count') end
local collectable = {}  -- declared hash of a version -> its index in KEYS
for k = first_version_key, #KEYS do collectable[KEYS[k]] = k end
local i = 12
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

-- 2. key types (the new version's hash and the collected ones are deleted whatever they hold)
local expected = {{latest_key, 'string'}, {versions_key, 'zset'}, {lease_key, 'string'}, {dead_key, 'stream'},
  {times_key, 'zset'}, {pinned_key, 'string'}}
if with_stream == '1' then
  expected[#expected + 1] = {stream_key, 'stream'}
  expected[#expected + 1] = {readers_key, 'hash'}
end
bad = check_types(expected); if bad then return bad end

-- 3. the lease
if redis.call('GET', lease_key) ~= token then return redis.error_reply('LEASE lease lost') end

-- 4. the parent, and the new version's declared hash
local current = redis.call('GET', latest_key)
if current and not string.match(current, '^%d+$') then
  return refuse('BADSTATE', latest_key .. ' is not a version number')
end
if (parent == '' and current) or (parent ~= '' and (not current or tonumber(current) ~= tonumber(parent))) then
  return refuse('STALE', 'latest is ' .. (current or 'none') .. ', not ' .. (parent ~= '' and parent or 'none'))
end
local version = tonumber(current or '0') + 1
local member = tostring(version)
if new_key ~= prefix .. member then
  return refuse('BADARG', 'the new version is ' .. member .. ', its hash is not ' .. new_key)
end

-- 5. the dead-letter stream
if dead > 0 and redis.call('EXISTS', dead_key) == 1 then
  local info = redis.call('XINFO', 'STREAM', dead_key)
  for k = 1, #info, 2 do
    if info[k] == 'last-generated-id' and info[k + 1] == 'MAX_ID' then
      return refuse('BADSTATE', dead_key .. ' has reached the largest stream id')
    end
  end
end

-- 6. the versions to collect (reads only): the set as it will be after this write, oldest first
local lowest = nil
if with_stream == '1' then lowest = lowest_reader(readers_key, s) end
local pinned = redis.call('GET', pinned_key)
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local listed = redis.call('ZRANGE', versions_key, 0, -1, 'WITHSCORES')
local all, placed = {}, false
for k = 1, #listed, 2 do
  if listed[k] ~= member then
    if not placed and tonumber(listed[k + 1]) > version then all[#all + 1] = member; placed = true end
    all[#all + 1] = listed[k]
  end
end
if not placed then all[#all + 1] = member end
local victims = {}
if #all > keep then
  local seen = {}
  for idx = 1, #all - keep do
    local v = all[idx]
    local kept = (v == pinned)
    local t = (v == member) and now_ms or tonumber(redis.call('ZSCORE', times_key, v))
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
      local k = collectable[prefix .. v]
      if not k then return refuse('UNDECLARED', 'version ' .. v .. ' is to be collected, its hash is not declared') end
      victims[#victims + 1] = {v, KEYS[k]}
    end
  end
end

-- Writes (none of them can fail on what was checked above).
redis.call('DEL', new_key)
redis.call('HSET', new_key, 'version', version, unpack(ARGV, fields_at, fields_at + 2 * n - 1))
redis.call('SET', latest_key, version)
redis.call('ZADD', versions_key, version, version)
redis.call('ZADD', times_key, now_ms, version)
i = dead_at
for d = 1, dead do
  local nf = tonumber(ARGV[i])
  redis.call('XADD', dead_key, '*', unpack(ARGV, i + 1, i + 2 * nf))
  i = i + 1 + 2 * nf
end
for _, victim in ipairs(victims) do
  redis.call('DEL', victim[2])
  redis.call('ZREM', versions_key, victim[1])
  redis.call('ZREM', times_key, victim[1])
end
if with_stream == '1' then stream_writes(stream_key, readers_key, s, lowest) end
redis.call('PUBLISH', events_key, '{"version":' .. version .. '}')
return version
"""

# KEYS: stream, readers (one slot: Keys.readers takes the stream's hash tag).
# ARGV: learned_id, reader ("" = none), trim_minid ("" = none), trim_maxlen (0 = none). Returns 1.
_STREAM_STEP = r"""
if #KEYS ~= 2 then return refuse('BADARG', 'key count') end
local bad = distinct_keys(); if bad then return bad end
local s, problem = stream_args(1)
if not s then return refuse('BADARG', problem) end
if #ARGV ~= 4 then return refuse('BADARG', 'argument count') end
bad = check_types({{KEYS[1], 'stream'}, {KEYS[2], 'hash'}}); if bad then return bad end
local lowest = lowest_reader(KEYS[2], s)
stream_writes(KEYS[1], KEYS[2], s, lowest)
return 1
"""


def _lua(*parts: str) -> str:
    text = "".join(parts)
    for name, value in (("TRIM_PROBE", TRIM_PROBE), ("MAX_FIELDS", MAX_FIELDS), ("MAX_ID", MAX_ID),
                        ("MODEL_KEYS", MODEL_KEYS)):  # fmt: skip
        text = text.replace(name, str(value))
    return text


WRITE_SCRIPT = _lua(_IDS, _STREAM, _WRITE)
STREAM_SCRIPT = _lua(_IDS, _STREAM, _STREAM_STEP)
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
