//! Reading the streams without a consumer group: whole ranges (tests,
//! audits), following them as entries arrive (`app events tail`), and their
//! status (`app events status`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use concert_domain::{Failure, Stream};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::streams::{
    StreamId, StreamInfoConsumersReply, StreamInfoGroupsReply, StreamRangeReply,
};
use deadpool_redis::redis::{self, AsyncConnectionConfig, Client, Value};

use super::RedisStreams;
use crate::connection::failure;

/// How long one blocking read waits before it is sent again.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries per page of a range read.
const PAGE: usize = 1_000;

/// One entry of an event stream (or of a dead-letter stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub stream: Stream,
    /// The entry id Redis gave it (`<milliseconds>-<sequence>`).
    pub entry: String,
    /// The event id.
    pub id: String,
    /// The event type.
    pub kind: String,
    /// The JSON payload.
    pub payload: String,
    /// Any other field, by name (dead letters: `group`, `entry`,
    /// `attempts`, `error`).
    pub extra: Vec<(String, String)>,
}

impl StreamEntry {
    fn from_id(stream: Stream, entry: &StreamId) -> StreamEntry {
        let mut fields: HashMap<&str, String> = entry
            .map
            .iter()
            .map(|(k, v)| (k.as_str(), text(v)))
            .collect();
        let id = fields.remove("id").unwrap_or_default();
        let kind = fields.remove("type").unwrap_or_default();
        let payload = fields.remove("payload").unwrap_or_default();
        let mut extra: Vec<(String, String)> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        extra.sort();
        StreamEntry {
            stream,
            entry: entry.id.clone(),
            id,
            kind,
            payload,
            extra,
        }
    }

    /// The value of an extra field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A field value as text (lossy for non-UTF-8 bytes, which we never write).
pub(crate) fn text(value: &Value) -> String {
    redis::from_redis_value_ref::<String>(value).unwrap_or_default()
}

/// One consumer group of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    pub consumers: u64,
    /// Delivered and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group (when Redis can tell).
    pub lag: Option<u64>,
    pub last_delivered: String,
}

/// One stream as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatus {
    pub stream: Stream,
    pub key: String,
    pub length: u64,
    /// The id of the newest entry.
    pub last_entry: Option<String>,
    pub groups: Vec<GroupStatus>,
    /// Entries of its dead-letter stream.
    pub dead_letters: u64,
}

impl RedisStreams {
    /// Every entry of `stream`, oldest first.
    pub async fn range(&self, stream: Stream) -> Result<Vec<StreamEntry>, Failure> {
        self.range_of(stream, self.inner.names.stream(stream)).await
    }

    /// Every dead letter of `stream`'s consumers, oldest first.
    pub async fn dead_letters(&self, stream: Stream) -> Result<Vec<StreamEntry>, Failure> {
        self.range_of(stream, self.inner.names.dead(stream)).await
    }

    async fn range_of(&self, stream: Stream, key: String) -> Result<Vec<StreamEntry>, Failure> {
        let mut out = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let (key, from) = (&key, &start);
            let page: StreamRangeReply = self
                .inner
                .conn
                .run(|mut conn| async move {
                    redis::cmd("XRANGE")
                        .arg(key)
                        .arg(from)
                        .arg("+")
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let full = page.ids.len() == PAGE;
            if let Some(last) = page.ids.last() {
                start = format!("({}", last.id);
            }
            out.extend(page.ids.iter().map(|e| StreamEntry::from_id(stream, e)));
            if !full {
                return Ok(out);
            }
        }
    }

    /// The status of `stream`: its length, newest entry, consumer groups and
    /// dead letters.
    pub async fn status(&self, stream: Stream) -> Result<StreamStatus, Failure> {
        let key = self.inner.names.stream(stream);
        let dead = self.inner.names.dead(stream);
        let (length, last, dead_letters): (u64, StreamRangeReply, u64) = self
            .inner
            .conn
            .run(|mut conn| {
                let (key, dead) = (&key, &dead);
                async move {
                    redis::pipe()
                        .cmd("XLEN")
                        .arg(key)
                        .cmd("XREVRANGE")
                        .arg(key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .cmd("XLEN")
                        .arg(dead)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        let groups = if length > 0 || self.exists(&key).await? {
            self.groups(&key)
                .await?
                .groups
                .into_iter()
                .map(|g| GroupStatus {
                    name: g.name,
                    consumers: g.consumers as u64,
                    pending: g.pending as u64,
                    lag: g.lag.map(|l| l as u64),
                    last_delivered: g.last_delivered_id,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(StreamStatus {
            stream,
            key: key.clone(),
            length,
            last_entry: last.ids.first().map(|e| e.id.clone()),
            groups,
            dead_letters,
        })
    }

    /// Destroys the consumer groups of `stream` named `<name_prefix>...`
    /// (except `keep`) that have consumers, all idle for longer than
    /// `idle`: groups of processes that stopped without cleaning up.
    /// Returns how many it destroyed.
    pub async fn destroy_idle_groups(
        &self,
        stream: Stream,
        name_prefix: &str,
        keep: &str,
        idle: Duration,
    ) -> Result<u64, Failure> {
        let key = self.inner.names.stream(stream);
        if !self.exists(&key).await? {
            return Ok(0);
        }
        let groups = self.groups(&key).await?;
        let key = &key;
        let idle_ms = idle.as_millis() as usize;
        let mut destroyed = 0;
        for group in groups.groups {
            if !group.name.starts_with(name_prefix) || group.name == keep {
                continue;
            }
            let name = &group.name;
            let consumers: StreamInfoConsumersReply = self
                .inner
                .conn
                .run(|mut conn| async move {
                    redis::cmd("XINFO")
                        .arg("CONSUMERS")
                        .arg(key)
                        .arg(name)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let abandoned = !consumers.consumers.is_empty()
                && consumers.consumers.iter().all(|c| c.idle > idle_ms);
            if abandoned {
                let n: u64 = self
                    .inner
                    .conn
                    .run(|mut conn| async move {
                        redis::cmd("XGROUP")
                            .arg("DESTROY")
                            .arg(key)
                            .arg(name)
                            .query_async(&mut conn)
                            .await
                    })
                    .await?;
                destroyed += n;
            }
        }
        Ok(destroyed)
    }

    /// `XINFO GROUPS` of the stream at `key` (which must exist).
    async fn groups(&self, key: &str) -> Result<StreamInfoGroupsReply, Failure> {
        self.inner
            .conn
            .run(|mut conn| async move {
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
            })
            .await
    }

    async fn exists(&self, key: &str) -> Result<bool, Failure> {
        let n: u64 =
            self.inner
                .conn
                .run(|mut conn| async move {
                    redis::cmd("EXISTS").arg(key).query_async(&mut conn).await
                })
                .await?;
        Ok(n > 0)
    }

    /// Follows `streams`: calls `each` with every entry appended from now
    /// on (with `from_start`, every entry they hold first), in order per
    /// stream, until `each` returns false. Fails when Redis cannot be
    /// reached.
    pub async fn tail(
        &self,
        streams: &[Stream],
        from_start: bool,
        mut each: impl FnMut(StreamEntry) -> bool + Send,
    ) -> Result<(), Failure> {
        let mut conn = self.blocking_connection(BLOCK).await?;
        let keys: Vec<String> = streams
            .iter()
            .map(|s| self.inner.names.stream(*s))
            .collect();
        // Where each stream stands now, so nothing appended between two
        // reads is missed.
        let mut after = Vec::with_capacity(keys.len());
        for key in &keys {
            if from_start {
                after.push("0-0".to_owned());
            } else {
                let last: StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(failure)?;
                after.push(last.ids.first().map_or("0-0".to_owned(), |e| e.id.clone()));
            }
        }
        loop {
            let reply: Option<deadpool_redis::redis::streams::StreamReadReply> =
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(PAGE)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&keys)
                    .arg(&after)
                    .query_async(&mut conn)
                    .await
                    .map_err(failure)?;
            let Some(reply) = reply else { continue };
            for read in reply.keys {
                let Some(i) = keys.iter().position(|k| *k == read.key) else {
                    continue;
                };
                for entry in &read.ids {
                    after[i] = entry.id.clone();
                    if !each(StreamEntry::from_id(streams[i], entry)) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A connection of its own for blocking reads (`XREAD`/`XREADGROUP ...
    /// BLOCK`), whose replies may take `block` plus the usual response
    /// time; a blocking read must not share the multiplexed command
    /// connection, whose other commands it would hold up.
    pub async fn blocking_connection(
        &self,
        block: Duration,
    ) -> Result<MultiplexedConnection, Failure> {
        let settings = &self.inner.settings;
        let client = Client::open(self.inner.url.as_str())
            .context("invalid Redis URL")
            .map_err(Failure::unknown)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(block + settings.response_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(failure)
    }
}
