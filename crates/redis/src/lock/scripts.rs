//! The Lua scripts of the Redis lock, their arguments and their replies.
//! Each lock operation is one script, so one round trip and atomic; every
//! key a script touches is passed in `KEYS` and shares the lock's hash tag
//! (see [`crate::keys`]).
//!
//! - [`ACQUIRE`]: one attempt. Takes a free lock (`SET NX PX`) with a new
//!   fencing token, recognises a lock already handed to this owner, and
//!   otherwise (pub/sub) joins the key's waiter queue.
//! - [`RELEASE`]: compare-and-delete, or **hand-over**: the lock goes
//!   straight to the first queued waiter whose wait has not run out (its
//!   own lease, a new fencing token, a message to it on the channel).
//! - the watchdog's compare-and-extend is the shared
//!   [`crate::scripts::EXTEND`].
//! - [`LEAVE`]: a waiter or a given-up acquisition leaves: out of the
//!   queue, optionally a tombstone so that a late copy of one of its
//!   acquire attempts does nothing, and the lock released (or handed on) if
//!   it had become this owner's.

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::anyhow;
use concert_domain::Failure;
use deadpool_redis::redis::Script;

use crate::keys::Keys;
use crate::scripts::{Call, KEEP, NEXT_FENCE, millis};

/// Functions the scripts share, after [`NEXT_FENCE`] (`next_fence`, the
/// fencing counter).
///
/// `pass_on` frees the lock or hands it to the first queued waiter whose
/// deadline (in Redis time) has not passed, dropping stale entries (at most
/// 16 per call, so a release stays O(log n)); after a hand-over the lock
/// holds the waiter's token with the waiter's lease, the fence has moved
/// on, and `h <owner> <token>` is published. A plain release publishes `r`
/// only while waiters remain queued (an uncontended release sends no
/// message). Returns 2 when handed over, 1 when freed.
const FUNCTIONS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function pass_on(lock, fence, queue, waiters, channel, keep)
  local now = nil
  for _ = 1, 16 do
    local first = redis.call('ZRANGE', queue, 0, 0)[1]
    if not first then break end
    redis.call('ZREM', queue, first)
    local entry = redis.call('HGET', waiters, first)
    redis.call('HDEL', waiters, first)
    if entry then
      local lease, deadline = string.match(entry, '^(%d+) (%d+)$')
      now = now or now_ms()
      if lease and tonumber(deadline) > now then
        redis.call('SET', lock, first, 'PX', lease)
        local token = next_fence(fence, keep)
        redis.call('PUBLISH', channel, 'h ' .. first .. ' ' .. string.format('%.0f', token))
        return 2
      end
    end
  end
  redis.call('DEL', lock)
  if redis.call('EXISTS', queue) == 1 then
    redis.call('PUBLISH', channel, 'r')
  end
  return 1
end
";

/// KEYS: lock, fence, queue, waiters, gone. ARGV: owner, lease ms, queue
/// mode (`n` never queue, `q` join the queue if held, `l` last attempt:
/// leave the queue if held), wait ms, keep s.
///
/// Returns `{1, token}` when this owner holds the lock (just taken, or
/// handed over earlier: then the current fence, which no other acquisition
/// can have moved since), `{0, holder's PTTL ms}` when held by another, and
/// `{-1, 0}` when this acquisition has a tombstone (it gave up). Running it
/// twice for one owner is harmless, so a retry after a lost reply is safe.
const ACQUIRE_BODY: &str = r"
local owner, mode = ARGV[1], ARGV[3]
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {-1, 0}
end
local holder = redis.call('GET', KEYS[1])
if holder == owner then
  local token = redis.call('GET', KEYS[2])
  if token then return {1, tonumber(token)} end
  return {1, next_fence(KEYS[2], ARGV[5])}
end
if not holder then
  redis.call('SET', KEYS[1], owner, 'PX', ARGV[2])
  if mode ~= 'n' then
    redis.call('ZREM', KEYS[3], owner)
    redis.call('HDEL', KEYS[4], owner)
  end
  return {1, next_fence(KEYS[2], ARGV[5])}
end
if mode == 'q' then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[3], 'NX', t[1] .. string.format('%06d', tonumber(t[2])), owner)
  local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[4])
  redis.call('HSET', KEYS[4], owner, ARGV[2] .. ' ' .. string.format('%.0f', deadline))
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
elseif mode == 'l' then
  redis.call('ZREM', KEYS[3], owner)
  redis.call('HDEL', KEYS[4], owner)
end
return {0, redis.call('PTTL', KEYS[1])}
";

/// KEYS: lock, fence, queue, waiters. ARGV: owner, channel, keep s.
/// Returns 0 when `owner` does not hold the lock (nothing touched), else
/// what `pass_on` returns.
const RELEASE_BODY: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
return pass_on(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3])
";

/// KEYS: lock, fence, queue, waiters, gone. ARGV: owner, channel, keep s,
/// tombstone ms (`0`: none). Leaves the queue, sets the tombstone, and
/// releases (or hands on) the lock if this owner holds it; returns like
/// [`RELEASE`].
const LEAVE_BODY: &str = r"
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[4])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return pass_on(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3])
end
return 0
";

/// KEYS: lock. ARGV: owner, lease ms. 1 if renewed, 0 if not held.
pub(crate) static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{NEXT_FENCE}{FUNCTIONS}{ACQUIRE_BODY}")));
pub(crate) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{NEXT_FENCE}{FUNCTIONS}{RELEASE_BODY}")));
pub(crate) static LEAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{NEXT_FENCE}{FUNCTIONS}{LEAVE_BODY}")));

/// What an acquire attempt does with the waiter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// Simple and spin locks: never queued.
    Never,
    /// Pub/sub with budget left: join (or keep the place) if held.
    Join,
    /// Pub/sub, budget spent: leave the queue if held.
    Leave,
}

fn keep() -> String {
    KEEP.as_secs().to_string()
}

/// The `KEYS` of the acquire, release and leave scripts: the lock, its
/// fence, its queue and waiters, and with `tombstone_of` the tombstone of
/// that owner's acquisition.
fn script_keys(keys: &Keys, tombstone_of: Option<&str>) -> Vec<String> {
    let mut all = vec![
        keys.lock.clone(),
        keys.fence.clone(),
        keys.queue.clone(),
        keys.waiters.clone(),
    ];
    all.extend(tombstone_of.map(|owner| keys.gone(owner)));
    all
}

pub(crate) fn acquire(
    keys: &Keys,
    owner: &str,
    lease: Duration,
    queue: Queue,
    wait: Duration,
) -> Call {
    let mode = match queue {
        Queue::Never => "n",
        Queue::Join => "q",
        Queue::Leave => "l",
    };
    Call {
        keys: script_keys(keys, Some(owner)),
        args: vec![
            owner.to_owned(),
            millis(lease).to_string(),
            mode.to_owned(),
            millis(wait).to_string(),
            keep(),
        ],
    }
}

pub(crate) fn release(keys: &Keys, owner: &str) -> Call {
    Call {
        keys: script_keys(keys, None),
        args: vec![owner.to_owned(), keys.channel.clone(), keep()],
    }
}

/// `tombstone`: how long a late copy of one of this owner's acquire
/// attempts must find it gone (`None` for a dropped guard, whose attempts
/// all answered).
pub(crate) fn leave(keys: &Keys, owner: &str, tombstone: Option<Duration>) -> Call {
    Call {
        keys: script_keys(keys, Some(owner)),
        args: vec![
            owner.to_owned(),
            keys.channel.clone(),
            keep(),
            tombstone.map_or(0, millis).to_string(),
        ],
    }
}

/// The outcome of one [`ACQUIRE`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// This owner holds the lock, with this fencing token.
    Acquired(u64),
    /// Another owner holds it; its remaining lease if it has one.
    Held(Option<Duration>),
    /// This acquisition had given up (its tombstone is set).
    Abandoned,
}

impl Attempt {
    pub fn from_reply((status, n): (i64, i64)) -> Result<Self, Failure> {
        match status {
            1 => u64::try_from(n)
                .map(Attempt::Acquired)
                .map_err(|_| Failure::unknown(anyhow!("negative fencing token {n}"))),
            0 => Ok(Attempt::Held(
                u64::try_from(n).ok().map(Duration::from_millis),
            )),
            -1 => Ok(Attempt::Abandoned),
            other => Err(Failure::unknown(anyhow!(
                "unexpected acquire reply {other}"
            ))),
        }
    }
}

/// The outcome of a [`RELEASE`] or [`LEAVE`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// The owner did not hold the lock: nothing was deleted.
    NotHeld,
    /// The lock is free.
    Freed,
    /// The lock went to the next waiter.
    HandedOver,
}

impl Released {
    pub fn from_reply(reply: i64) -> Result<Self, Failure> {
        match reply {
            0 => Ok(Released::NotHeld),
            1 => Ok(Released::Freed),
            2 => Ok(Released::HandedOver),
            other => Err(Failure::unknown(anyhow!(
                "unexpected release reply {other}"
            ))),
        }
    }
}

/// A message on a lock's release channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice<'a> {
    /// The lock was freed with waiters queued: one of them should retry.
    Freed,
    /// The lock was handed to `owner` with fencing token `token`.
    Handed { owner: &'a str, token: u64 },
}

impl<'a> Notice<'a> {
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut words = text.split_ascii_whitespace();
        match (words.next()?, words.next(), words.next(), words.next()) {
            ("r", None, None, None) => Some(Notice::Freed),
            ("h", Some(owner), Some(token), None) => Some(Notice::Handed {
                owner,
                token: token.parse().ok()?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Prefix;
    use crate::scripts::highest;
    use concert_domain::LockKey;

    fn keys() -> Keys {
        Prefix::new("t").unwrap().keys(&LockKey::new("seat:1:01"))
    }

    #[test]
    fn every_call_passes_exactly_what_its_script_reads() {
        let k = keys();
        let lease = Duration::from_secs(10);
        for (body, call) in [
            (
                ACQUIRE_BODY,
                acquire(&k, "o", lease, Queue::Join, Duration::from_secs(5)),
            ),
            (RELEASE_BODY, release(&k, "o")),
            (LEAVE_BODY, leave(&k, "o", Some(lease))),
        ] {
            assert_eq!(highest(body, "KEYS"), call.keys.len(), "{body}");
            assert_eq!(highest(body, "ARGV"), call.args.len(), "{body}");
            // cluster-safe: every key in one slot (one hash tag)
            assert!(
                call.keys
                    .iter()
                    .all(|key| key.starts_with("{t:seat:1:01}:"))
            );
        }
    }

    #[test]
    fn scripts_touch_keys_only_through_keys_or_the_shared_functions() {
        for body in [ACQUIRE_BODY, RELEASE_BODY, LEAVE_BODY] {
            // no literal key names: a key is KEYS[n] or a function argument
            assert!(!body.contains("redis.call('GET', '"), "{body}");
            assert!(!body.contains("'{"), "{body}");
        }
        // the release and leave scripts hand over through the one function
        assert!(RELEASE_BODY.contains("pass_on(") && LEAVE_BODY.contains("pass_on("));
        assert!(FUNCTIONS.contains("for _ = 1, 16 do"), "bounded skipping");
        assert_ne!(ACQUIRE.get_hash(), RELEASE.get_hash());
    }

    #[test]
    fn arguments_are_whole_milliseconds_and_modes() {
        let k = keys();
        let call = acquire(
            &k,
            "owner1",
            Duration::from_micros(1500),
            Queue::Never,
            Duration::MAX,
        );
        assert_eq!(
            call.args,
            ["owner1", "1", "n", "315360000000", "86400"].map(String::from)
        );
        assert_eq!(call.keys[4], "{t:seat:1:01}:gone:owner1");
        assert_eq!(
            acquire(&k, "o", Duration::ZERO, Queue::Leave, Duration::ZERO).args[..4],
            ["o", "1", "l", "1"].map(String::from)
        );
        assert_eq!(leave(&k, "o", None).args[3], "0");
        assert_eq!(
            leave(&k, "o", Some(Duration::from_secs(60))).args[3],
            "60000"
        );
        assert_eq!(release(&k, "o").args[1], "{t:seat:1:01}:released");
    }

    #[test]
    fn replies_parse_into_outcomes() {
        assert_eq!(Attempt::from_reply((1, 42)).unwrap(), Attempt::Acquired(42));
        assert_eq!(
            Attempt::from_reply((0, 250)).unwrap(),
            Attempt::Held(Some(Duration::from_millis(250)))
        );
        assert_eq!(Attempt::from_reply((0, -1)).unwrap(), Attempt::Held(None));
        assert_eq!(Attempt::from_reply((-1, 0)).unwrap(), Attempt::Abandoned);
        assert!(Attempt::from_reply((1, -5)).is_err());
        assert!(Attempt::from_reply((7, 0)).is_err());
        assert_eq!(Released::from_reply(0).unwrap(), Released::NotHeld);
        assert_eq!(Released::from_reply(1).unwrap(), Released::Freed);
        assert_eq!(Released::from_reply(2).unwrap(), Released::HandedOver);
        assert!(Released::from_reply(3).is_err());
    }

    #[test]
    fn notices_parse_and_junk_is_ignored() {
        assert_eq!(Notice::parse(b"r"), Some(Notice::Freed));
        assert_eq!(
            Notice::parse(b"h abc 1700000000123457"),
            Some(Notice::Handed {
                owner: "abc",
                token: 1_700_000_000_123_457
            })
        );
        for junk in [&b""[..], b"released", b"h abc", b"h abc x", b"r r", b"\xff"] {
            assert_eq!(Notice::parse(junk), None, "{junk:?}");
        }
    }
}
