//! What every Lua script call of this crate shares: [`Call`] (the `KEYS`
//! and `ARGV` of one call, run by [`crate::connection::Connection`]),
//! [`millis`] (durations as script arguments) and [`KEEP`]; and the
//! scripts more than one adapter runs: compare-and-extend ([`EXTEND`]) and
//! compare-and-delete ([`DELETE`]) of an owner's key (the lock watchdogs,
//! the RedLock, the queue's partition leases), and the fencing counter
//! ([`NEXT_FENCE`], the lock's and the RedLock's acquisitions). The other
//! scripts live with their adapters: `lock/scripts.rs`, `queue/scripts.rs`,
//! `room/scripts.rs`, and the RedLock's in `redlock.rs`.

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_redis::redis::{Script, ScriptInvocation};

/// How long the bookkeeping keys of an idle lock live: the fence counter
/// and the waiter queue expire a day after their last use.
pub(crate) const KEEP: Duration = Duration::from_secs(24 * 3600);

/// A duration in whole milliseconds for `PX`/`PEXPIRE` and deadlines: at
/// least 1, at most ten years (Redis refuses expiry times that overflow its
/// clock).
pub(crate) fn millis(d: Duration) -> u64 {
    const MAX: u64 = 10 * 365 * 24 * 3600 * 1000;
    u64::try_from(d.as_millis()).unwrap_or(MAX).clamp(1, MAX)
}

/// The `KEYS` and `ARGV` of one script call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

impl Call {
    pub fn invocation(&self, script: &'static Script) -> ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(arg);
        }
        invocation
    }
}

/// The Lua function `next_fence(fence, keep)`, which scripts prepend: the
/// next fencing token of a key's counter `fence`, which then expires
/// `keep` seconds later.
///
/// It seeds a missing counter with the server time in microseconds before
/// `INCR`. Why an expired (or lost) counter stays monotonic: a counter
/// seeded at time `T0` (µs) and incremented `n` times holds `T0 + n`; it
/// expires only after a day without any acquisition, and is then re-seeded
/// at `T1 >= T_last + 1 day`. The new tokens are larger as long as
/// `n < T1 - T0`, that is as long as the key averaged fewer than one
/// acquisition per microsecond over its life (Redis runs one script at a
/// time and an acquisition script takes microseconds, so it cannot) and
/// Redis' clock has not stepped back by more than the day of slack.
pub(crate) const NEXT_FENCE: &str = r"
local function next_fence(fence, keep)
  if redis.call('EXISTS', fence) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', fence, t[1] .. string.format('%06d', tonumber(t[2])))
  end
  local token = redis.call('INCR', fence)
  redis.call('EXPIRE', fence, keep)
  return token
end
";

/// KEYS: key. ARGV: owner, lease ms. 1 if renewed, 0 if `owner` does not
/// hold the key.
const EXTEND_BODY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS: key. ARGV: owner. 1 if deleted, 0 if `owner` does not hold the
/// key (another owner's key is never deleted).
const DELETE_BODY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Compare-and-extend (see [`extend`]).
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(EXTEND_BODY));
/// Compare-and-delete (see [`delete`]).
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_BODY));

/// The [`EXTEND`] call: sets the TTL of `key` to `lease` if `owner` holds
/// it.
pub(crate) fn extend(key: &str, owner: &str, lease: Duration) -> Call {
    Call {
        keys: vec![key.to_owned()],
        args: vec![owner.to_owned(), millis(lease).to_string()],
    }
}

/// The [`DELETE`] call: deletes `key` if `owner` holds it.
pub(crate) fn delete(key: &str, owner: &str) -> Call {
    Call {
        keys: vec![key.to_owned()],
        args: vec![owner.to_owned()],
    }
}

/// The highest `KEYS[n]` / `ARGV[n]` a script body reads (for the tests
/// that check each call passes exactly what its script reads).
#[cfg(test)]
pub(crate) fn highest(body: &str, name: &str) -> usize {
    body.match_indices(&format!("{name}["))
        .map(|(at, m)| {
            let rest = &body[at + m.len()..];
            rest[..rest.find(']').unwrap()].parse::<usize>().unwrap()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_calls_pass_exactly_what_their_scripts_read() {
        let lease = Duration::from_micros(1500);
        for (body, call) in [
            (EXTEND_BODY, extend("{t:k}", "o", lease)),
            (DELETE_BODY, delete("{t:k}", "o")),
        ] {
            assert_eq!(highest(body, "KEYS"), call.keys.len(), "{body}");
            assert_eq!(highest(body, "ARGV"), call.args.len(), "{body}");
        }
        assert_eq!(extend("k", "o", lease).args, ["o", "1"]);
        assert_eq!(highest(NEXT_FENCE, "KEYS") + highest(NEXT_FENCE, "ARGV"), 0);
        assert_ne!(EXTEND.get_hash(), DELETE.get_hash());
    }
}
