//! A small consumer runtime on consumer groups: every group sees every
//! event, each consumer of a group gets a share, and a
//! [`concert_domain::EventHandler`] decides what an event means.
//!
//! - **Delivery**: `XREADGROUP ... >` in batches on a connection of the
//!   consumer's own (the read blocks it); the group is created if missing
//!   (at the start of the stream, or at its end for [`StartAt::New`]).
//! - **Idempotent by event id**: a handled event's id is remembered per
//!   group (`SET P:events:seen:<group>:<id> PX <memory>`, written with the
//!   `XACK` in one `MULTI`); a delivery whose id is remembered, or repeated
//!   in the same batch, is acknowledged without calling the handler. A
//!   consumer that stops between handling and acknowledging gets the event
//!   again: handlers must tolerate a repeat (at least once).
//! - **Taking over**: every [`ConsumerConfig::claim_idle`], the consumer
//!   claims the group's entries pending for longer than that
//!   (`XAUTOCLAIM`): those of a consumer that died, and its own failed
//!   ones, which are thus retried.
//! - **Dead letters**: an event whose handling failed on its
//!   [`ConsumerConfig::max_attempts`]-th delivery (or that was delivered
//!   more often than that without ever succeeding, e.g. because it crashed
//!   its consumer), or that cannot be read, is appended to the stream's
//!   dead-letter stream with the reason and acknowledged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use concert_domain::{EventHandler, EventType, Failure, ReceivedEvent, Stream};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::streams::{
    StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply,
};
use deadpool_redis::redis::{self, RedisError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::RedisStreams;
use super::describe;
use super::read::text;
use crate::backoff::SpinBackoff;
use crate::connection::failure;

/// Where a group that does not exist yet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the oldest entry the stream keeps.
    Beginning,
    /// After the newest entry: only events appended from now on.
    New,
}

/// How one consumer consumes.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group (every group gets every event).
    pub group: String,
    /// This consumer's name in the group (unique among live consumers).
    pub consumer: String,
    pub streams: Vec<Stream>,
    pub start: StartAt,
    /// Entries per read.
    pub batch: usize,
    /// How long one read blocks waiting for entries.
    pub block: Duration,
    /// Entries pending longer than this are claimed (and retried).
    pub claim_idle: Duration,
    /// Handling attempts before an event becomes a dead letter.
    pub max_attempts: u32,
    /// How long handled event ids are remembered for de-duplication (zero:
    /// not at all, for handlers whose effect is idempotent anyway; repeats
    /// within one batch are still skipped).
    pub remember: Duration,
    /// Destroy the group when the consumer stops (a group of one process,
    /// such as a per-instance cache's).
    pub ephemeral: bool,
}

impl ConsumerConfig {
    /// The defaults: from the beginning, batches of 100, 2 s reads, claims
    /// after 30 s, 5 attempts, ids remembered 24 hours.
    pub fn new(group: impl Into<String>, consumer: impl Into<String>, streams: &[Stream]) -> Self {
        Self {
            group: group.into(),
            consumer: consumer.into(),
            streams: streams.to_vec(),
            start: StartAt::Beginning,
            batch: 100,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(30),
            max_attempts: 5,
            remember: Duration::from_secs(24 * 3600),
            ephemeral: false,
        }
    }
}

/// What a consumer did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Events the handler handled successfully.
    pub handled: u64,
    /// Deliveries skipped because the event id was already handled.
    pub duplicates: u64,
    /// Handler failures (the event stays pending, or becomes a dead letter).
    pub failed: u64,
    /// Events set aside as dead letters.
    pub dead_lettered: u64,
    /// Entries claimed from the group's pending list.
    pub claimed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    claimed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ConsumerStats {
        ConsumerStats {
            handled: self.handled.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            claimed: self.claimed.load(Ordering::Relaxed),
        }
    }
}

/// A consumer about to run.
pub struct Consumer {
    streams: RedisStreams,
    config: ConsumerConfig,
    handler: Arc<dyn EventHandler>,
    counters: Arc<Counters>,
    live: Arc<AtomicBool>,
}

/// A running consumer. Dropping it aborts the consumer at once, like a
/// crash (what it had read and not acknowledged stays pending for another
/// consumer to claim); [`ConsumerHandle::stop`] stops it cleanly.
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    live: Arc<AtomicBool>,
}

impl ConsumerHandle {
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// True while the consumer is connected and reading.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Stops after the batch in hand (destroying an ephemeral group), within
    /// `grace`; past it the consumer is aborted.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Kills the consumer at once (as if its process died).
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl RedisStreams {
    /// A consumer of `config.streams` in `config.group`, handing events to
    /// `handler`; [`Consumer::spawn`] runs it.
    pub fn consumer(&self, config: ConsumerConfig, handler: Arc<dyn EventHandler>) -> Consumer {
        Consumer {
            streams: self.clone(),
            config,
            handler,
            counters: Arc::default(),
            live: Arc::default(),
        }
    }
}

/// Why a session with Redis ended.
enum Ended {
    Stopped,
}

/// One delivered entry, read or not.
struct Delivery {
    entry: String,
    deliveries: u32,
    event: Result<ReceivedEvent, String>,
}

impl Consumer {
    /// Runs the consumer on the current runtime until stopped: it connects
    /// (and reconnects after failures, with backoff), creates its groups if
    /// missing, claims stale entries, and handles what it reads.
    pub fn spawn(self) -> ConsumerHandle {
        let (stop, stopped) = watch::channel(false);
        let counters = self.counters.clone();
        let live = self.live.clone();
        let task = tokio::spawn(self.run(stopped));
        ConsumerHandle {
            stop,
            task: Some(task),
            counters,
            live,
        }
    }

    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            match self.session(&mut stopped, &mut failures).await {
                Ok(Ended::Stopped) => break,
                Err(e) => {
                    self.set_live(false);
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        tracing::warn!(
                            group = %self.config.group,
                            error = %describe(&e),
                            "event consumer lost Redis; retrying"
                        );
                    }
                    let delay = SpinBackoff {
                        base: Duration::from_millis(100),
                        max: Duration::from_secs(5),
                    }
                    .delay(failures);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped.changed() => break,
                    }
                }
            }
        }
        self.set_live(false);
        if self.config.ephemeral {
            self.destroy_groups().await;
        }
    }

    fn set_live(&self, live: bool) {
        if self.live.swap(live, Ordering::AcqRel) != live {
            self.handler.delivering(live);
        }
    }

    fn keys(&self) -> Vec<String> {
        self.config
            .streams
            .iter()
            .map(|s| self.streams.inner.names.stream(*s))
            .collect()
    }

    async fn session(
        &self,
        stopped: &mut watch::Receiver<bool>,
        failures: &mut u32,
    ) -> Result<Ended, Failure> {
        let mut conn = self.streams.blocking_connection(self.config.block).await?;
        self.create_groups(&mut conn).await?;
        if *failures > 0 {
            tracing::info!(group = %self.config.group, "event consumer connected again");
            *failures = 0;
        }
        self.set_live(true);
        let keys = self.keys();
        let mut next_claim = Instant::now();
        loop {
            if *stopped.borrow() {
                return Ok(Ended::Stopped);
            }
            if Instant::now() >= next_claim {
                for stream in self.config.streams.clone() {
                    self.claim(&mut conn, stream).await?;
                }
                next_claim = Instant::now() + self.config.claim_idle.max(Duration::from_millis(10));
            }
            let block = self
                .config
                .block
                .min(next_claim.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let mut command = redis::cmd("XREADGROUP");
            command
                .arg("GROUP")
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg("COUNT")
                .arg(self.config.batch.max(1))
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&keys)
                .arg(vec![">"; keys.len()]);
            let read = command.query_async::<Option<StreamReadReply>>(&mut conn);
            let reply = tokio::select! {
                reply = read => reply.map_err(failure)?,
                _ = stopped.changed() => return Ok(Ended::Stopped),
            };
            for read in reply.map(|r| r.keys).unwrap_or_default() {
                let Some(stream) = self.streams.inner.names.stream_of(&read.key) else {
                    continue;
                };
                let deliveries = read
                    .ids
                    .iter()
                    .map(|entry| delivery(stream, entry, 1))
                    .collect();
                self.process(&mut conn, stream, deliveries).await?;
            }
        }
    }

    async fn create_groups(&self, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
        let start = match self.config.start {
            StartAt::Beginning => "0",
            StartAt::New => "$",
        };
        for key in self.keys() {
            let created: Result<(), RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(&self.config.group)
                .arg(start)
                .arg("MKSTREAM")
                .query_async(conn)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(failure(e)),
            }
        }
        Ok(())
    }

    async fn destroy_groups(&self) {
        for key in self.keys() {
            let key = &key;
            let destroyed: Result<i64, Failure> = self
                .streams
                .inner
                .conn
                .run(|mut conn| async move {
                    redis::cmd("XGROUP")
                        .arg("DESTROY")
                        .arg(key)
                        .arg(&self.config.group)
                        .query_async(&mut conn)
                        .await
                })
                .await;
            if let Err(e) = destroyed {
                tracing::debug!(group = %self.config.group, error = %e, "could not destroy the group");
            }
        }
    }

    /// Claims the group's entries of `stream` pending longer than the claim
    /// idle time, and processes them with their delivery counts.
    async fn claim(&self, conn: &mut MultiplexedConnection, stream: Stream) -> Result<(), Failure> {
        const ROUNDS: usize = 10;
        let key = self.streams.inner.names.stream(stream);
        let mut cursor = "0-0".to_owned();
        for _ in 0..ROUNDS {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg(self.config.claim_idle.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.config.batch.max(1))
                .query_async(conn)
                .await
                .map_err(failure)?;
            if !reply.claimed.is_empty() {
                Counters::add(&self.counters.claimed, reply.claimed.len() as u64);
                let counts = self.delivery_counts(conn, &key, &reply.claimed).await?;
                let deliveries = reply
                    .claimed
                    .iter()
                    .map(|entry| {
                        let n = counts.get(&entry.id).copied().unwrap_or(1);
                        delivery(stream, entry, n)
                    })
                    .collect();
                self.process(conn, stream, deliveries).await?;
            }
            cursor = reply.next_stream_id;
            if cursor == "0-0" {
                break;
            }
        }
        Ok(())
    }

    /// How often each of `entries` (just claimed by this consumer) has been
    /// delivered, this claim included.
    async fn delivery_counts(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        entries: &[StreamId],
    ) -> Result<HashMap<String, u32>, Failure> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashMap::new());
        };
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(key)
            .arg(&self.config.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len())
            .arg(&self.config.consumer)
            .query_async(conn)
            .await
            .map_err(failure)?;
        Ok(pending
            .ids
            .into_iter()
            .map(|p| (p.id, u32::try_from(p.times_delivered).unwrap_or(u32::MAX)))
            .collect())
    }

    /// Handles one batch of `stream` and acknowledges what is done with in
    /// one `MULTI`: handled events (their ids remembered), duplicates, and
    /// dead letters (appended to the dead-letter stream).
    async fn process(
        &self,
        conn: &mut MultiplexedConnection,
        stream: Stream,
        deliveries: Vec<Delivery>,
    ) -> Result<(), Failure> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let names = &self.streams.inner.names;
        let group = &self.config.group;
        let seen_keys: Vec<String> = deliveries
            .iter()
            .map(|d| match &d.event {
                Ok(event) => names.seen(group, &event.id),
                // never set: reads as "not seen"
                Err(_) => names.seen(group, &format!("unreadable:{}", d.entry)),
            })
            .collect();
        let seen: Vec<Option<String>> = if self.config.remember.is_zero() {
            vec![None; seen_keys.len()]
        } else {
            redis::cmd("MGET")
                .arg(&seen_keys)
                .query_async(conn)
                .await
                .map_err(failure)?
        };
        let mut ack = Vec::new();
        let mut remember = Vec::new();
        let mut dead = Vec::new();
        let mut this_batch = HashSet::new();
        for ((delivery, seen_key), was_seen) in deliveries.iter().zip(&seen_keys).zip(seen) {
            let event = match &delivery.event {
                Ok(event) => event,
                Err(reason) => {
                    dead.push((delivery, reason.clone()));
                    ack.push(delivery.entry.clone());
                    continue;
                }
            };
            if was_seen.is_some() || !this_batch.insert(event.id.clone()) {
                Counters::add(&self.counters.duplicates, 1);
                ack.push(delivery.entry.clone());
                continue;
            }
            if delivery.deliveries > self.config.max_attempts {
                dead.push((
                    delivery,
                    format!(
                        "delivered {} times without being handled",
                        delivery.deliveries
                    ),
                ));
                ack.push(delivery.entry.clone());
                continue;
            }
            match self.handler.handle(event).await {
                Ok(()) => {
                    Counters::add(&self.counters.handled, 1);
                    remember.push(seen_key.clone());
                    ack.push(delivery.entry.clone());
                }
                Err(e) => {
                    Counters::add(&self.counters.failed, 1);
                    if delivery.deliveries >= self.config.max_attempts {
                        dead.push((delivery, describe(&e)));
                        ack.push(delivery.entry.clone());
                    } else {
                        tracing::warn!(
                            group = %group,
                            event = %event.id,
                            attempt = delivery.deliveries,
                            error = %describe(&e),
                            "handling an event failed; it will be retried"
                        );
                        // the same id later in this batch is a repeat of a
                        // failure, not of a success: leave it pending too
                        this_batch.remove(&event.id);
                    }
                }
            }
        }
        if ack.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let remember_ms = self.config.remember.as_millis() as u64;
        for key in remember.iter().filter(|_| remember_ms > 0) {
            pipe.cmd("SET")
                .arg(key)
                .arg(1)
                .arg("PX")
                .arg(remember_ms)
                .ignore();
        }
        let dead_key = names.dead(stream);
        for (delivery, reason) in &dead {
            let (id, kind, payload) = match &delivery.event {
                Ok(e) => (e.id.as_str(), e.kind.as_str(), e.payload.as_str()),
                Err(_) => ("", "", ""),
            };
            pipe.cmd("XADD")
                .arg(&dead_key)
                .arg("MAXLEN")
                .arg("~")
                .arg(10_000)
                .arg("*")
                .arg("id")
                .arg(id)
                .arg("type")
                .arg(kind)
                .arg("payload")
                .arg(payload)
                .arg("group")
                .arg(group)
                .arg("entry")
                .arg(&delivery.entry)
                .arg("attempts")
                .arg(delivery.deliveries)
                .arg("error")
                .arg(reason)
                .ignore();
            tracing::error!(
                group = %group,
                entry = %delivery.entry,
                event = %id,
                reason = %reason,
                "event set aside as a dead letter"
            );
        }
        pipe.cmd("XACK")
            .arg(names.stream(stream))
            .arg(group)
            .arg(&ack)
            .ignore();
        pipe.query_async::<()>(conn).await.map_err(failure)?;
        Counters::add(&self.counters.dead_lettered, dead.len() as u64);
        Ok(())
    }
}

/// Reads one stream entry into an event (or the reason it cannot be read).
fn delivery(stream: Stream, entry: &StreamId, deliveries: u32) -> Delivery {
    let field = |name: &str| entry.map.get(name).map(text);
    let event = match (field("id"), field("type"), field("payload")) {
        (Some(id), Some(kind), Some(payload)) if !id.is_empty() => kind
            .parse::<EventType>()
            .map(|kind| ReceivedEvent {
                id,
                stream,
                kind,
                payload,
                deliveries,
            })
            .map_err(|_| format!("unknown event type {kind:?}")),
        _ => Err("the entry lacks an id, a type or a payload".to_owned()),
    };
    Delivery {
        entry: entry.id.clone(),
        deliveries,
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadpool_redis::redis::Value;

    fn entry(fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: "1-0".into(),
            map: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            ..StreamId::default()
        }
    }

    #[test]
    fn entries_read_into_events_or_into_a_reason() {
        let ok = delivery(
            Stream::Points,
            &entry(&[("id", "e1"), ("type", "PointsUsed"), ("payload", "{}")]),
            2,
        );
        let event = ok.event.unwrap();
        assert_eq!(
            (event.id.as_str(), event.kind, event.deliveries),
            ("e1", EventType::PointsUsed, 2)
        );
        let unknown = delivery(
            Stream::Points,
            &entry(&[("id", "e1"), ("type", "Nope"), ("payload", "{}")]),
            1,
        );
        assert!(unknown.event.unwrap_err().contains("Nope"));
        let missing = delivery(Stream::Points, &entry(&[("id", "e1")]), 1);
        assert!(missing.event.is_err());
    }
}
