//! Redis key layout. Every key of one lock shares a hash tag, so the lock,
//! its fencing counter, its waiter queue and its release channel fall in
//! one Redis Cluster slot and one Lua script may touch them all.

use concert_domain::{Failure, LockKey};

/// The Redis names of the lock on one key, all under the hash tag
/// `{prefix:name}`:
///
/// | name | type | holds | expires |
/// |---|---|---|---|
/// | `…:lock` | string | the holder's owner token | the lease |
/// | `…:fence` | string (integer) | the last fencing token | a day after the last acquisition |
/// | `…:queue` | sorted set | waiting owner tokens, scored by arrival (µs) | a day after the last arrival |
/// | `…:waiters` | hash | per waiting owner: `"<lease ms> <deadline ms>"` | a day after the last arrival |
/// | `…:gone:<owner>` | string | "this acquisition gave up" | the clean-up horizon |
/// | `…:released` | pub/sub channel | `r` (freed) or `h <owner> <fence>` (handed over) | |
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    pub lock: String,
    pub fence: String,
    pub queue: String,
    pub waiters: String,
    pub channel: String,
    tag: String,
}

impl Keys {
    /// The tombstone of the acquisition `owner` (see `scripts::LEAVE`).
    pub fn gone(&self, owner: &str) -> String {
        format!("{}:gone:{owner}", self.tag)
    }
}

/// A validated key prefix (no `{` or `}`, which would break the hash tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prefix(String);

impl Prefix {
    pub fn new(prefix: &str) -> Result<Self, Failure> {
        if prefix.contains(['{', '}']) {
            return Err(Failure::unknown(anyhow::anyhow!(
                "the Redis key prefix {prefix:?} must not contain '{{' or '}}'"
            )));
        }
        Ok(Self(prefix.to_owned()))
    }

    /// `{prefix:name}`: the hash tag of `name` under this prefix.
    pub(crate) fn tag(&self, name: &str) -> String {
        if self.0.is_empty() {
            format!("{{{name}}}")
        } else {
            format!("{{{}:{name}}}", self.0)
        }
    }

    /// The names of the lock on `key`.
    pub fn keys(&self, key: &LockKey) -> Keys {
        let tag = self.tag(key.as_str());
        Keys {
            lock: format!("{tag}:lock"),
            fence: format!("{tag}:fence"),
            queue: format!("{tag}:queue"),
            waiters: format!("{tag}:waiters"),
            channel: format!("{tag}:released"),
            tag,
        }
    }

    fn escaped(&self) -> String {
        let mut escaped = String::with_capacity(self.0.len() + 8);
        for c in self.0.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped
    }

    /// The `PSUBSCRIBE` pattern matching every release channel under this
    /// prefix (glob characters of the prefix escaped).
    pub fn release_pattern(&self) -> String {
        match self.escaped() {
            e if e.is_empty() => "{*}:released".to_owned(),
            e => format!("{{{e}:*}}:released"),
        }
    }

    /// The `SCAN` pattern matching every key under this prefix.
    pub fn key_pattern(&self) -> String {
        match self.escaped() {
            e if e.is_empty() => "{*".to_owned(),
            e => format!("{{{e}:*"),
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hash_tag_for_every_name_of_a_lock() {
        let keys = Prefix::new("t1").unwrap().keys(&LockKey::new("seat:3:7"));
        assert_eq!(keys.lock, "{t1:seat:3:7}:lock");
        assert_eq!(keys.fence, "{t1:seat:3:7}:fence");
        assert_eq!(keys.queue, "{t1:seat:3:7}:queue");
        assert_eq!(keys.waiters, "{t1:seat:3:7}:waiters");
        assert_eq!(keys.channel, "{t1:seat:3:7}:released");
        assert_eq!(keys.gone("ab12"), "{t1:seat:3:7}:gone:ab12");
        let no_prefix = Prefix::new("").unwrap().keys(&LockKey::new("wallet:4"));
        assert_eq!(no_prefix.lock, "{wallet:4}:lock");
    }

    #[test]
    fn patterns_match_only_this_prefix_and_escape_globs() {
        assert_eq!(
            Prefix::new("app").unwrap().release_pattern(),
            "{app:*}:released"
        );
        assert_eq!(
            Prefix::new("a*b?[c]").unwrap().release_pattern(),
            "{a\\*b\\?\\[c\\]:*}:released"
        );
        assert_eq!(Prefix::new("").unwrap().release_pattern(), "{*}:released");
        assert_eq!(Prefix::new("t:1").unwrap().key_pattern(), "{t:1:*");
    }

    #[test]
    fn braces_in_the_prefix_are_refused() {
        assert!(matches!(Prefix::new("a{b"), Err(Failure::Unknown(_))));
        assert!(matches!(Prefix::new("a}b"), Err(Failure::Unknown(_))));
    }
}
