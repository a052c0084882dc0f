//! The Lua scripts of the Redis waiting room. Every step of a room is one
//! script, so one round trip and atomic across instances; every key a
//! script touches is passed in `KEYS` and shares the room's hash tag (see
//! [`super::RoomKeys`]).
//!
//! - [`STEP`]: enter (`e`), poll (`p`), leave (`l`) or release (`r`): the
//!   room's time moves to `max(now, last now)`, lapsed admissions and (up
//!   to 256) idle entries go, the step applies, and users are admitted
//!   from the head of the line while places are free and the room is not
//!   sold out (idle heads are dropped, never admitted). Enter and poll
//!   answer where the user stands.
//! - [`SOLD_OUT`]: sets or clears the sold-out mark.
//! - [`SIZES`]: waiting users seen within the idle time, admissions not
//!   ended.
//!
//! Running a step twice for one call is harmless (entering again keeps the
//! place; leaving or releasing twice removes nothing more), so a retry
//! after a lost reply is safe.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// The admission rate is counted in two buckets of this many milliseconds
/// (the same as the in-process room).
pub(crate) const RATE_BUCKET_MS: u64 = 10_000;
/// Idle entries dropped (or skipped at the head) per step at most.
pub(crate) const IDLE_BATCH: u32 = 256;

/// KEYS: line, seen, admitted, meta. ARGV: op (`e`, `p`, `l`, `r`), user,
/// now ms, active limit, admission ms, idle ms, keep ms (the keys' time to
/// live after the last step), rate bucket ms, idle batch.
///
/// | key | type | holds |
/// |---|---|---|
/// | `line` | sorted set | waiting users by ticket (order of first entry) |
/// | `seen` | sorted set | waiting users by when last seen (ms) |
/// | `admitted` | sorted set | admitted users by the end of their admission (ms) |
/// | `meta` | hash | `t` the room's time (ms), `seq` the last ticket, `so` sold out (`1`), `rb`/`rc`/`rp` the rate's bucket and its current and previous counts |
///
/// Returns `{kind, value, rate}`: kind 0 no entry, 1 waiting (value: the
/// position), 2 admitted (value: the end, ms), 3 waiting in a sold-out
/// room; rate: admissions per second over the last bucket's length, in
/// thousandths. Leave and release return `{0, 0, 0}`.
const STEP_BODY: &str = r"
local line, seen, admitted, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, user = ARGV[1], ARGV[2]
local now = tonumber(ARGV[3])
local limit, admission, idle = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local keep, bucket, batch = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])

local m = redis.call('HMGET', meta, 't', 'so', 'rb', 'rc', 'rp')
local clock = tonumber(m[1] or '0')
if clock > now then now = clock end
local sold_out = m[2] == '1'
local rb, rc, rp = tonumber(m[3] or '-1'), tonumber(m[4] or '0'), tonumber(m[5] or '0')
local function roll()
  local b = math.floor(now / bucket)
  if b ~= rb then
    if b == rb + 1 then rp = rc else rp = 0 end
    rc = 0
    rb = b
  end
end
local function fmt(x) return string.format('%.0f', x) end
local cutoff = now - idle

-- lapsed admissions and idle entries go
redis.call('ZREMRANGEBYSCORE', admitted, '-inf', fmt(now))
local gone = redis.call('ZRANGEBYSCORE', seen, '-inf', fmt(cutoff), 'LIMIT', 0, batch)
if #gone > 0 then
  redis.call('ZREM', line, unpack(gone))
  redis.call('ZREM', seen, unpack(gone))
end

-- the user's own entry: seen now, or gone if idle past the cutoff
local function refresh()
  local s = redis.call('ZSCORE', seen, user)
  if not s then
    redis.call('ZREM', line, user)
    return false
  end
  if tonumber(s) <= cutoff then
    redis.call('ZREM', line, user)
    redis.call('ZREM', seen, user)
    return false
  end
  redis.call('ZADD', seen, fmt(now), user)
  return true
end

local is_admitted = redis.call('ZSCORE', admitted, user)
if op == 'e' then
  if not is_admitted and not refresh() then
    local ticket = redis.call('HINCRBY', meta, 'seq', 1)
    redis.call('ZADD', line, ticket, user)
    redis.call('ZADD', seen, fmt(now), user)
  end
elseif op == 'p' then
  if not is_admitted then refresh() end
elseif op == 'l' then
  redis.call('ZREM', line, user)
  redis.call('ZREM', seen, user)
  redis.call('ZREM', admitted, user)
elseif op == 'r' then
  redis.call('ZREM', admitted, user)
end

-- admit from the head while places are free
if not sold_out then
  local free = limit - redis.call('ZCARD', admitted)
  local skipped = 0
  while free > 0 and skipped < batch do
    local head = redis.call('ZPOPMIN', line)
    if #head == 0 then break end
    local s = redis.call('ZSCORE', seen, head[1])
    redis.call('ZREM', seen, head[1])
    if s and tonumber(s) > cutoff then
      redis.call('ZADD', admitted, fmt(now + admission), head[1])
      free = free - 1
      roll()
      rc = rc + 1
    else
      skipped = skipped + 1
    end
  end
end

roll()
redis.call('HSET', meta, 't', fmt(now), 'rb', fmt(rb), 'rc', rc, 'rp', rp)
redis.call('PEXPIRE', line, keep)
redis.call('PEXPIRE', seen, keep)
redis.call('PEXPIRE', admitted, keep)
redis.call('PEXPIRE', meta, keep)
if op == 'l' or op == 'r' then
  return {0, 0, 0}
end

local into = now - rb * bucket
local window = rp * (1 - into / bucket) + rc
local rate = math.floor(window * 1000 / bucket * 1000)
local ends = redis.call('ZSCORE', admitted, user)
if ends then
  return {2, tonumber(ends), rate}
end
local rank = redis.call('ZRANK', line, user)
if not rank then
  return {0, 0, rate}
end
if sold_out then
  return {3, 0, rate}
end
return {1, rank + 1, rate}
";

/// KEYS: meta. ARGV: `1` (sold out) or `0` (on sale), keep ms.
const SOLD_OUT_BODY: &str = r"
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'so', '1')
else
  redis.call('HDEL', KEYS[1], 'so')
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS: seen, admitted. ARGV: now ms, idle ms. Returns `{waiting,
/// admitted}`.
const SIZES_BODY: &str = r"
local now, idle = tonumber(ARGV[1]), tonumber(ARGV[2])
local waiting = redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now - idle), '+inf')
local admitted = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.0f', now), '+inf')
return {waiting, admitted}
";

pub(crate) static STEP: LazyLock<Script> = LazyLock::new(|| Script::new(STEP_BODY));
pub(crate) static SOLD_OUT: LazyLock<Script> = LazyLock::new(|| Script::new(SOLD_OUT_BODY));
pub(crate) static SIZES: LazyLock<Script> = LazyLock::new(|| Script::new(SIZES_BODY));

#[cfg(test)]
pub(crate) fn bodies() -> [(&'static str, &'static str); 3] {
    [
        ("step", STEP_BODY),
        ("sold-out", SOLD_OUT_BODY),
        ("sizes", SIZES_BODY),
    ]
}
