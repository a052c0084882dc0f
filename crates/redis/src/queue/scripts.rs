//! The Lua scripts of the partition leases and of the replies.
//!
//! A partition's lease is a string holding the holder's owner token, with
//! a TTL (the lease); its fence is a counter without expiry. Every key of
//! one partition shares the hash tag `{prefix:queue:<n>}`.

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_redis::redis::Script;

use crate::scripts::{Call, millis};

/// KEYS: lease, fence. ARGV: owner, lease ms.
///
/// Takes a free lease and returns `{1, token}` (also when this owner took
/// it already: a retried call is harmless); returns `{0, PTTL}` when
/// another owner holds it. The token is `max(previous + 1, Redis TIME in
/// µs)`: it grows with every tenure, and it is at least the server time in
/// microseconds, so it is comparable with the seat locks' fencing tokens
/// (counters seeded from the same clock and advanced by one per
/// acquisition): a partition tenure that starts after a lock holder wrote
/// a seat carries a larger token, and storage accepts its writes.
const ACQUIRE_BODY: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return {1, tonumber(redis.call('GET', KEYS[2]))}
end
if holder then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local token = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
if now > token then token = now end
redis.call('SET', KEYS[2], string.format('%.0f', token))
return {1, token}
";

/// KEYS: lease. ARGV: owner, lease ms. 1 if renewed, 0 if not held.
const EXTEND_BODY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS: lease. ARGV: owner. 1 if released, 0 if not held (another
/// owner's lease is never deleted).
const RELEASE_BODY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// KEYS: the request's key. ARGV: outcome, ttl s, reply channel, request
/// id. Records the outcome unless one is recorded already (the first
/// applier's answer stands), and publishes the recorded one on the reply
/// channel. Sent with `EVAL` inside the reply pipeline.
pub(crate) const REPLY: &str = r"
redis.call('HSETNX', KEYS[1], 'outcome', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local outcome = redis.call('HGET', KEYS[1], 'outcome')
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. outcome)
return 1
";

pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_BODY));
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(EXTEND_BODY));
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_BODY));

pub(crate) fn acquire(lease_key: &str, fence_key: &str, owner: &str, lease: Duration) -> Call {
    Call {
        keys: vec![lease_key.to_owned(), fence_key.to_owned()],
        args: vec![owner.to_owned(), millis(lease).to_string()],
    }
}

pub(crate) fn extend(lease_key: &str, owner: &str, lease: Duration) -> Call {
    Call {
        keys: vec![lease_key.to_owned()],
        args: vec![owner.to_owned(), millis(lease).to_string()],
    }
}

pub(crate) fn release(lease_key: &str, owner: &str) -> Call {
    Call {
        keys: vec![lease_key.to_owned()],
        args: vec![owner.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn highest(body: &str, name: &str) -> usize {
        body.match_indices(&format!("{name}["))
            .map(|(at, m)| {
                let rest = &body[at + m.len()..];
                rest[..rest.find(']').unwrap()].parse::<usize>().unwrap()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn every_call_passes_exactly_what_its_script_reads() {
        let lease = Duration::from_secs(3);
        for (body, call) in [
            (
                ACQUIRE_BODY,
                acquire("{p:queue:1}:lease", "{p:queue:1}:fence", "o", lease),
            ),
            (EXTEND_BODY, extend("{p:queue:1}:lease", "o", lease)),
            (RELEASE_BODY, release("{p:queue:1}:lease", "o")),
        ] {
            assert_eq!(highest(body, "KEYS"), call.keys.len(), "{body}");
            assert_eq!(highest(body, "ARGV"), call.args.len(), "{body}");
        }
        assert_eq!(highest(REPLY, "KEYS"), 1);
        assert_eq!(highest(REPLY, "ARGV"), 4);
        assert_eq!(acquire("l", "f", "o", lease).args[1], "3000");
    }
}
