//! The event streams on Redis Streams: the relay's publisher
//! ([`concert_domain::EventPublisher`]), a small consumer runtime on
//! consumer groups ([`Consumer`]), and the reads of operators and tests
//! (tail, ranges, status).
//!
//! Key layout under the prefix `P` (no hash tags: the stream names are part
//! of the contract; the publish script touches the relay's state key and
//! the streams together, so a Redis Cluster deployment would need them on
//! one node):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:events:<stream>` | stream | one entry per event: fields `id`, `type`, `payload` |
//! | `P:events:<stream>:dead` | stream | dead letters of that stream's consumers: the event's fields plus `group`, `entry`, `attempts`, `error` |
//! | `P:events:relay` | hash | `fence`: the largest relay fencing token that published |
//! | `P:events:seen:<group>:<event id>` | string | "handled by that group", expires after the group's memory |
//!
//! Streams are trimmed approximately (`XADD ... MAXLEN ~ N`) to
//! [`StreamSettings::max_len`] entries.

mod consumer;
mod publish;
mod read;

use std::sync::Arc;
use std::time::Duration;

use concert_domain::{Failure, Stream};

use crate::connection::Connection;
use crate::settings::RedisLockSettings;

pub use consumer::{Consumer, ConsumerConfig, ConsumerHandle, ConsumerStats, StartAt};
pub use read::{GroupStatus, StreamEntry, StreamStatus};

/// Tuning of [`RedisStreams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Each stream keeps about this many entries (`MAXLEN ~`); 0 keeps all.
    pub max_len: u64,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on every non-blocking command's reply.
    pub response_timeout: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_len: 100_000,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
        }
    }
}

/// The event streams of one prefix: cheap to clone (clones share one
/// command connection, opened on first use).
#[derive(Clone)]
pub struct RedisStreams {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub url: String,
    pub conn: Connection,
    pub names: Names,
    pub settings: StreamSettings,
}

impl std::fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreams")
            .field("prefix", &self.inner.names.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStreams {
    /// Configures the streams under `prefix`; nothing is opened until the
    /// first command. Fails only for an invalid URL or a prefix with `{` or
    /// `}`.
    pub fn new(url: &str, prefix: &str, settings: StreamSettings) -> Result<Self, Failure> {
        crate::keys::Prefix::new(prefix)?;
        let conn = Connection::new(
            url,
            &RedisLockSettings {
                connect_timeout: settings.connect_timeout,
                response_timeout: settings.response_timeout,
                ..RedisLockSettings::default()
            },
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                conn,
                names: Names {
                    prefix: prefix.to_owned(),
                },
                settings,
            }),
        })
    }

    /// The Redis key of `stream` (`<prefix>:events:<stream>`).
    pub fn stream_key(&self, stream: Stream) -> String {
        self.inner.names.stream(stream)
    }

    /// The dead-letter stream of `stream`'s consumers.
    pub fn dead_letter_key(&self, stream: Stream) -> String {
        self.inner.names.dead(stream)
    }

    /// One `PING`.
    pub async fn ping(&self) -> Result<(), Failure> {
        self.inner.conn.ping().await
    }

    /// Deletes every key of the event streams under this prefix (streams,
    /// dead letters, the relay's state, de-duplication marks); returns how
    /// many. For tests and for retiring a prefix.
    pub async fn purge(&self) -> Result<u64, Failure> {
        self.inner
            .conn
            .delete_matching(&self.inner.names.pattern())
            .await
    }
}

/// An error with its causes, for logs and dead letters.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    fn base(&self) -> String {
        if self.prefix.is_empty() {
            "events".to_owned()
        } else {
            format!("{}:events", self.prefix)
        }
    }

    pub fn stream(&self, stream: Stream) -> String {
        format!("{}:{stream}", self.base())
    }

    pub fn dead(&self, stream: Stream) -> String {
        format!("{}:{stream}:dead", self.base())
    }

    pub fn relay(&self) -> String {
        format!("{}:relay", self.base())
    }

    pub fn seen(&self, group: &str, id: &str) -> String {
        format!("{}:seen:{group}:{id}", self.base())
    }

    /// The stream a key names, if it is one of ours.
    pub fn stream_of(&self, key: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| self.stream(*s) == key)
    }

    /// The `SCAN` pattern of every key under `<prefix>:events:` (glob
    /// characters of the prefix escaped).
    fn pattern(&self) -> String {
        let mut escaped = String::with_capacity(self.prefix.len() + 16);
        for c in self.base().chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped.push_str(":*");
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let names = Names {
            prefix: "concert".into(),
        };
        assert_eq!(
            names.stream(Stream::Reservations),
            "concert:events:reservations"
        );
        assert_eq!(names.dead(Stream::Points), "concert:events:points:dead");
        assert_eq!(names.relay(), "concert:events:relay");
        assert_eq!(
            names.seen("seat-map:1", "abc"),
            "concert:events:seen:seat-map:1:abc"
        );
        assert_eq!(
            names.stream_of("concert:events:payments"),
            Some(Stream::Payments)
        );
        assert_eq!(names.stream_of("concert:events:payments:dead"), None);
        assert_eq!(names.pattern(), "concert:events:*");
        let odd = Names {
            prefix: "a*[b]".into(),
        };
        assert_eq!(odd.pattern(), "a\\*\\[b\\]:events:*");
        let bare = Names {
            prefix: String::new(),
        };
        assert_eq!(bare.stream(Stream::Points), "events:points");
    }

    #[test]
    fn a_bad_prefix_or_url_is_refused() {
        assert!(
            RedisStreams::new("redis://127.0.0.1:1", "a{b", StreamSettings::default()).is_err()
        );
        assert!(RedisStreams::new("not a url", "p", StreamSettings::default()).is_err());
    }
}
