//! The Lua scripts of the queue: submitting a request, answering a batch,
//! and taking a partition lease (renewing and releasing it are the shared
//! [`crate::scripts::EXTEND`] and [`crate::scripts::DELETE`]).
//!
//! A partition's lease is a string holding the holder's owner token, with
//! a TTL (the lease); its fence is a counter without expiry. Every key of
//! one partition (its stream, lease, fence and its requests' hashes)
//! shares the hash tag `{prefix:queue:<n>}`, so each script touches one
//! Redis Cluster slot.

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

/// KEYS: the request's hash, the partition's stream. ARGV: owner, many
/// (`0`/`1`), ttl s, then the entry's field and value. Records the
/// request's owner and appends its entry, atomically (both in the
/// partition's slot); returns the entry id.
const SUBMIT_BODY: &str = r"
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'many', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('XADD', KEYS[2], '*', ARGV[4], ARGV[5])
";

/// KEYS: the partition's stream, then the hash of each request answered.
/// ARGV: group, n (requests answered), then per request its outcome, reply
/// channel and id, then the entry ids to acknowledge.
///
/// For each answered request: records the outcome in its hash unless one
/// is recorded already (the first applier's answer stands; a hash that
/// expired is not created again). Then publishes, once per reply channel,
/// the lines `<id> <recorded outcome>` of that channel's requests, and
/// acknowledges and deletes the entries. One call per batch.
const ANSWER_BODY: &str = r"
local n = tonumber(ARGV[2])
local lines, channels = {}, {}
for i = 1, n do
  local key = KEYS[i + 1]
  local at = 2 + (i - 1) * 3
  local outcome = ARGV[at + 1]
  if redis.call('EXISTS', key) == 1 and redis.call('HSETNX', key, 'outcome', outcome) == 0 then
    outcome = redis.call('HGET', key, 'outcome')
  end
  local channel = ARGV[at + 2]
  if not lines[channel] then
    lines[channel] = {}
    channels[#channels + 1] = channel
  end
  table.insert(lines[channel], ARGV[at + 3] .. ' ' .. outcome)
end
for _, channel in ipairs(channels) do
  redis.call('PUBLISH', channel, table.concat(lines[channel], '\n'))
end
local first = 3 + n * 3
if #ARGV >= first then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, first))
  redis.call('XDEL', KEYS[1], unpack(ARGV, first))
end
return n
";

pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_BODY));
pub(crate) static SUBMIT: LazyLock<Script> = LazyLock::new(|| Script::new(SUBMIT_BODY));
pub(crate) static ANSWER: LazyLock<Script> = LazyLock::new(|| Script::new(ANSWER_BODY));

pub(crate) fn acquire(lease_key: &str, fence_key: &str, owner: &str, lease: Duration) -> Call {
    Call {
        keys: vec![lease_key.to_owned(), fence_key.to_owned()],
        args: vec![owner.to_owned(), millis(lease).to_string()],
    }
}

/// The call that records `request_key`'s owner and appends the entry
/// `field` = `value` to `stream`.
pub(crate) fn submit(
    request_key: &str,
    stream: &str,
    owner: u64,
    many: bool,
    ttl: Duration,
    (field, value): (&str, String),
) -> Call {
    Call {
        keys: vec![request_key.to_owned(), stream.to_owned()],
        args: vec![
            owner.to_string(),
            u8::from(many).to_string(),
            ttl.as_secs().max(1).to_string(),
            field.to_owned(),
            value,
        ],
    }
}

/// One answered request: its hash, outcome, reply channel and id.
pub(crate) struct Answer<'a> {
    pub key: String,
    pub outcome: &'a str,
    pub channel: &'a str,
    pub id: &'a str,
}

/// The call that answers `answers` and acknowledges `done` (entry ids).
pub(crate) fn answer(stream: &str, group: &str, answers: &[Answer<'_>], done: &[String]) -> Call {
    let mut keys = vec![stream.to_owned()];
    let mut args = vec![group.to_owned(), answers.len().to_string()];
    for a in answers {
        keys.push(a.key.clone());
        args.extend([a.outcome.to_owned(), a.channel.to_owned(), a.id.to_owned()]);
    }
    args.extend(done.iter().cloned());
    Call { keys, args }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripts::highest;

    #[test]
    fn every_call_passes_exactly_what_its_script_reads() {
        let lease = Duration::from_secs(3);
        let call = acquire("{p:queue:1}:lease", "{p:queue:1}:fence", "o", lease);
        assert_eq!(highest(ACQUIRE_BODY, "KEYS"), call.keys.len());
        assert_eq!(highest(ACQUIRE_BODY, "ARGV"), call.args.len());
        assert_eq!(acquire("l", "f", "o", lease).args[1], "3000");
        let call = submit(
            "{p:queue:1}:request:r",
            "{p:queue:1}:requests",
            7,
            true,
            Duration::from_secs(900),
            ("r", "x y".to_owned()),
        );
        assert_eq!(call.keys.len(), highest(SUBMIT_BODY, "KEYS"));
        assert_eq!(call.args.len(), highest(SUBMIT_BODY, "ARGV"));
        assert_eq!(call.args, ["7", "1", "900", "r", "x y"]);
    }

    #[test]
    fn an_answer_lays_out_its_requests_then_the_entries() {
        let answers = [
            Answer {
                key: "{p:queue:1}:request:a".into(),
                outcome: "{}",
                channel: "c1",
                id: "a",
            },
            Answer {
                key: "{p:queue:1}:request:b".into(),
                outcome: "{\"kind\":\"seatNotFound\"}",
                channel: "c2",
                id: "b",
            },
        ];
        let call = answer(
            "{p:queue:1}:requests",
            "g",
            &answers,
            &["1-0".to_owned(), "2-0".to_owned(), "3-0".to_owned()],
        );
        assert_eq!(call.keys.len(), 3);
        assert!(
            call.keys.iter().all(|k| k.starts_with("{p:queue:1}:")),
            "one slot"
        );
        assert_eq!(
            call.args,
            [
                "g",
                "2",
                "{}",
                "c1",
                "a",
                "{\"kind\":\"seatNotFound\"}",
                "c2",
                "b",
                "1-0",
                "2-0",
                "3-0"
            ]
        );
    }
}
