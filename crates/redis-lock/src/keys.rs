//! Redis key layout. Every key of one lock shares a hash tag, so the lock,
//! its fencing counter and its release channel fall in one Redis Cluster
//! slot and one Lua script may touch them all.

use concert_domain::{LockError, LockKey};

/// The Redis names of one lock: `{prefix:name}:lock`, `{prefix:name}:fence`
/// and the release channel `{prefix:name}:released`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    pub lock: String,
    pub fence: String,
    pub channel: String,
}

/// A validated key prefix (no `{` or `}`, which would break the hash tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prefix(String);

impl Prefix {
    pub fn new(prefix: &str) -> Result<Self, LockError> {
        if prefix.contains(['{', '}']) {
            return Err(LockError::Unknown(anyhow::anyhow!(
                "the Redis key prefix {prefix:?} must not contain '{{' or '}}'"
            )));
        }
        Ok(Self(prefix.to_owned()))
    }

    fn tag(&self, name: &str) -> String {
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
            channel: format!("{tag}:released"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hash_tag_for_lock_fence_and_channel() {
        let keys = Prefix::new("t1").unwrap().keys(&LockKey::new("seat:3:7"));
        assert_eq!(keys.lock, "{t1:seat:3:7}:lock");
        assert_eq!(keys.fence, "{t1:seat:3:7}:fence");
        assert_eq!(keys.channel, "{t1:seat:3:7}:released");
        let no_prefix = Prefix::new("").unwrap().keys(&LockKey::new("wallet:4"));
        assert_eq!(no_prefix.lock, "{wallet:4}:lock");
    }

    #[test]
    fn pattern_matches_only_this_prefix_and_escapes_globs() {
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
        assert!(Prefix::new("a{b").is_err());
        assert!(Prefix::new("a}b").is_err());
    }
}
