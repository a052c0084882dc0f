//! The queue strategy on Redis Streams: the domain's [`SeatQueue`] port
//! ([`RedisQueue`]) and the partition consumers that feed its
//! [`Appliers`] ([`RedisQueue::start_consumers`]).
//!
//! Keys (every key of one partition shares a hash tag, so the lease
//! script stays in one Redis Cluster slot):
//!
//! | name | type | holds |
//! |---|---|---|
//! | `{prefix:queue:<n>}:requests` | stream, group `appliers` | partition `n`'s requests not yet answered |
//! | `{prefix:queue:<n>}:lease` | string, TTL = lease | the owner token of the instance applying partition `n` |
//! | `{prefix:queue:<n>}:fence` | string (integer) | the last tenure's fencing token |
//! | `{prefix:queue:<n>}:request:<id>` | hash, TTL | a request's `owner`, `many`, and once applied its `outcome` (JSON) |
//! | `{prefix:queue}:partitions` | string | the partition count every instance must agree on |
//! | `{prefix:queue}:replies:<instance>` | pub/sub channel | `<request id> <outcome>` for that instance's waiters |
//!
//! A request is submitted with one script call (the request's hash and the
//! stream entry, atomically) and answered on the submitting instance's
//! reply channel; the outcome also stays in the request's hash for polling
//! and for redeliveries. A batch of requests is answered, acknowledged and
//! deleted with one script call. A partition is chosen by hashing the
//! schedule, so every seat of a schedule (and every batch) lands in one
//! partition; every script touches one partition's keys only (one Redis
//! Cluster slot).

mod consumers;
mod replies;
mod scripts;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use concert_domain::{
    Appliers, Failure, QueuedRequest, RequestId, RequestState, ScheduleId, SeatQueue, Submitted,
    UserId,
};
use deadpool_redis::redis::{self, Client};
use tokio::time::Instant;

pub use consumers::Consumers;

use crate::connection::Connection;
use crate::keys::Prefix;
use crate::settings::RedisLockSettings;
use replies::{Board, Listener};

/// The consumer group every instance's partition consumers share.
pub(crate) const GROUP: &str = "appliers";

/// How often a waiter reads its request's outcome while replies may be
/// missed (the reply listener is down or reconnected).
const POLL: Duration = Duration::from_millis(100);

/// Tuning of a [`RedisQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Partitions (streams). Every instance on one prefix must use the
    /// same number; [`RedisQueue::connect`] refuses another.
    pub partitions: u32,
    /// A partition lease: a holder that dies is replaced this long after
    /// its last renewal (renewed every third of it).
    pub lease: Duration,
    /// Requests read (and applied) per batch.
    pub batch: usize,
    /// How long one stream read waits for new requests.
    pub block: Duration,
    /// How long a request's hash (its owner, then its outcome) stays
    /// readable after it was submitted.
    pub result_ttl: Duration,
    /// Connection timeouts (the rest is unused here).
    pub redis: RedisLockSettings,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            partitions: 8,
            lease: Duration::from_secs(3),
            batch: 1024,
            block: Duration::from_millis(500),
            result_ttl: Duration::from_secs(15 * 60),
            redis: RedisLockSettings::default(),
        }
    }
}

/// Key and channel names of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    prefix: Prefix,
}

impl QueueKeys {
    fn partition(&self, n: u32) -> String {
        self.prefix.tag(&format!("queue:{n}"))
    }

    pub fn stream(&self, n: u32) -> String {
        format!("{}:requests", self.partition(n))
    }

    pub fn lease(&self, n: u32) -> String {
        format!("{}:lease", self.partition(n))
    }

    pub fn fence(&self, n: u32) -> String {
        format!("{}:fence", self.partition(n))
    }

    /// The hash of request `id`, queued in partition `n`.
    pub fn request(&self, n: u32, id: &str) -> String {
        format!("{}:request:{id}", self.partition(n))
    }

    fn partitions(&self) -> String {
        format!("{}:partitions", self.prefix.tag("queue"))
    }

    fn replies(&self, instance: &str) -> String {
        format!("{}:replies:{instance}", self.prefix.tag("queue"))
    }
}

/// The partition of `schedule` among `partitions`: FNV-1a of the id, so
/// every instance (and every build) agrees.
pub(crate) fn partition_of(schedule: ScheduleId, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schedule.get().to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// The queue of seat requests on Redis Streams. Cheap to clone.
#[derive(Clone)]
pub struct RedisQueue {
    pub(crate) core: Arc<QueueCore>,
}

pub(crate) struct QueueCore {
    pub conn: Connection,
    pub client: Client,
    pub keys: QueueKeys,
    pub settings: QueueSettings,
    /// This process's name as a consumer, and in its reply channel.
    pub instance: String,
    channel: String,
    board: Arc<Board>,
    _listener: Listener,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("instance", &self.core.instance)
            .field("settings", &self.core.settings)
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Connects and checks that the prefix's queue has
    /// `settings.partitions` partitions (recording it if it is the first).
    /// Fails with [`Failure::Unavailable`] when Redis does not answer, and
    /// [`Failure::Unknown`] for an invalid URL or prefix, or another
    /// partition count.
    pub async fn connect(
        url: &str,
        prefix: &str,
        settings: QueueSettings,
    ) -> Result<RedisQueue, Failure> {
        let queue = Self::connect_lazy(url, prefix, settings)?;
        queue.check_partitions().await?;
        Ok(queue)
    }

    /// Like [`RedisQueue::connect`] without contacting Redis (the partition
    /// count is then checked by the consumers before they take a lease).
    pub fn connect_lazy(
        url: &str,
        prefix: &str,
        settings: QueueSettings,
    ) -> Result<RedisQueue, Failure> {
        if settings.partitions == 0 {
            return Err(Failure::unknown(anyhow!(
                "the queue needs at least one partition"
            )));
        }
        let keys = QueueKeys {
            prefix: Prefix::new(prefix)?,
        };
        let instance = format!("{:016x}", fastrand::u64(..));
        let channel = keys.replies(&instance);
        let board = Arc::new(Board::default());
        let listener = Listener::start(url, channel.clone(), board.clone(), settings.redis)?;
        Ok(RedisQueue {
            core: Arc::new(QueueCore {
                conn: Connection::new(url, &settings.redis)?,
                client: Client::open(url)
                    .context("invalid Redis URL")
                    .map_err(Failure::unknown)?,
                keys,
                settings,
                instance,
                channel,
                board,
                _listener: listener,
            }),
        })
    }

    /// Records the partition count if none is recorded yet, and refuses
    /// ([`Failure::Unknown`]) a different one: requests would be queued
    /// where no consumer reads.
    pub async fn check_partitions(&self) -> Result<(), Failure> {
        let core = &self.core;
        let key = core.keys.partitions();
        let wanted = core.settings.partitions;
        let recorded: Option<u32> = core
            .conn
            .run(|mut conn| {
                let key = key.clone();
                async move {
                    redis::pipe()
                        .cmd("SET")
                        .arg(&key)
                        .arg(wanted)
                        .arg("NX")
                        .ignore()
                        .cmd("GET")
                        .arg(&key)
                        .query_async::<(Option<u32>,)>(&mut conn)
                        .await
                        .map(|(n,)| n)
                }
            })
            .await?;
        match recorded {
            Some(n) if n == wanted => Ok(()),
            other => Err(Failure::unknown(anyhow!(
                "the queue on this Redis prefix has {} partitions, this instance is configured \
                 with {wanted} (APP_QUEUE_PARTITIONS): every instance must use the same count; \
                 change it only after draining the queue (then delete {key})",
                other.map_or("an unreadable number of".to_owned(), |n| n.to_string())
            ))),
        }
    }

    /// The partition `schedule`'s requests go to.
    pub fn partition_of(&self, schedule: ScheduleId) -> u32 {
        partition_of(schedule, self.core.settings.partitions)
    }

    /// This instance's consumer name.
    pub fn instance(&self) -> &str {
        &self.core.instance
    }

    /// Starts this instance's partition consumers: every third of a lease
    /// they take whichever partition leases are free, and apply each held
    /// partition's requests through `appliers` until its lease is lost.
    pub fn start_consumers(&self, appliers: Arc<dyn Appliers>) -> Consumers {
        Consumers::start(self.core.clone(), appliers)
    }

    /// Whether request `id` is recorded (queued) in `partition`, and its
    /// outcome if any.
    async fn look(&self, partition: u32, id: &str) -> Result<(bool, Option<String>), Failure> {
        let key = self.core.keys.request(partition, id);
        let (owner, outcome): (Option<String>, Option<String>) = self
            .core
            .conn
            .run(|mut conn| {
                let key = key.clone();
                async move {
                    redis::cmd("HMGET")
                        .arg(&key)
                        .arg("owner")
                        .arg("outcome")
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok((owner.is_some(), outcome))
    }

    /// The outcome recorded for request `id` of `partition`, if any.
    async fn recorded_outcome(&self, partition: u32, id: &str) -> Result<Option<String>, Failure> {
        let key = self.core.keys.request(partition, id);
        self.core
            .conn
            .run(|mut conn| {
                let key = key.clone();
                async move {
                    redis::cmd("HGET")
                        .arg(&key)
                        .arg("outcome")
                        .query_async(&mut conn)
                        .await
                }
            })
            .await
    }
}

fn decoded(json: &str) -> Result<Submitted, Failure> {
    wire::decode_outcome(json)
        .map(Submitted::Done)
        .map_err(|e| Failure::unknown(e.context("reading a queued request's outcome")))
}

#[async_trait]
impl SeatQueue for RedisQueue {
    /// One script call queues it (the request's hash with its owner and
    /// the stream entry, atomically); then the reply is awaited on this
    /// instance's channel. When that call fails after it was sent (a
    /// timeout), the request may still have been queued: the reply is
    /// awaited all the same, and at the end the request's hash tells:
    /// queued (pending) or not (unavailable). A later command on the same
    /// connection runs after it, so that look cannot miss it. A call
    /// retried after a broken connection may queue the request twice: the
    /// second copy finds the first one's outcome recorded and answers it.
    async fn submit(&self, request: &QueuedRequest, wait: Duration) -> Result<Submitted, Failure> {
        let core = &self.core;
        let id = request.id.as_str();
        let deadline = Instant::now() + wait;
        let mut registration = core.board.register(id);
        let partition = self.partition_of(request.request.schedule());
        let call = scripts::submit(
            &core.keys.request(partition, id),
            &core.keys.stream(partition),
            request.request.user().get(),
            request.request.is_many(),
            core.settings.result_ttl,
            (wire::FIELD, wire::entry(request, &core.channel)),
        );
        let (queued, sent) = core
            .conn
            .invoke_noting::<String>(&scripts::SUBMIT, &call)
            .await;
        // `Some(failure)`: perhaps queued, perhaps not
        let doubt = match queued {
            Ok(_) => None,
            Err(failure @ Failure::Unavailable(_)) if sent => Some(failure),
            Err(failure) => return Err(failure),
        };
        if doubt.is_none() && wait.is_zero() {
            // no budget: always answered later
            return Ok(Submitted::Pending);
        }
        loop {
            tokio::select! {
                reply = &mut registration.rx => match reply {
                    Ok(json) => return decoded(&json),
                    Err(_) => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = tokio::time::sleep(POLL), if registration.may_have_missed() => {
                    if let Ok(Some(json)) = self.recorded_outcome(partition, id).await {
                        return decoded(&json);
                    }
                }
            }
        }
        // The budget is spent: one last look, in case the reply was on its
        // way (and, in doubt, to learn whether it was queued at all).
        let look = self.look(partition, id).await;
        match (look, doubt) {
            (Ok((_, Some(json))), _) => decoded(&json),
            (Ok((true, None)), _) => Ok(Submitted::Pending),
            (Ok((false, None)), Some(failure)) => Err(failure),
            // queued for sure: it will be applied, and polling finds it
            (_, None) => Ok(Submitted::Pending),
            (Err(_), Some(failure)) => Err(failure),
        }
    }

    /// Looks in every partition (one pipelined round trip): the id does
    /// not say where its request was queued.
    async fn state(&self, id: &RequestId) -> Result<Option<RequestState>, Failure> {
        let core = &self.core;
        let keys: Vec<String> = (0..core.settings.partitions)
            .map(|n| core.keys.request(n, id.as_str()))
            .collect();
        let found: Vec<HashMap<String, String>> = core
            .conn
            .run(|mut conn| {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("HGETALL").arg(key);
                }
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let Some(fields) = found.into_iter().find(|f| f.contains_key("owner")) else {
            return Ok(None);
        };
        let owner = &fields["owner"];
        let owner = owner
            .parse::<u64>()
            .map(UserId::from)
            .map_err(|e| Failure::unknown(anyhow!("request {id}: bad owner {owner:?}: {e}")))?;
        let outcome = match fields.get("outcome") {
            Some(json) => Some(
                wire::decode_outcome(json)
                    .map_err(|e| Failure::unknown(e.context(format!("request {id}"))))?,
            ),
            None => None,
        };
        Ok(Some(RequestState {
            owner,
            many: fields.get("many").is_some_and(|m| m == "1"),
            outcome,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_tag_per_partition_and_live_under_the_prefix() {
        let keys = QueueKeys {
            prefix: Prefix::new("t1").unwrap(),
        };
        assert_eq!(keys.stream(3), "{t1:queue:3}:requests");
        assert_eq!(keys.lease(3), "{t1:queue:3}:lease");
        assert_eq!(keys.fence(3), "{t1:queue:3}:fence");
        assert_eq!(keys.request(3, "ab"), "{t1:queue:3}:request:ab");
        assert_eq!(keys.partitions(), "{t1:queue}:partitions");
        assert_eq!(keys.replies("i1"), "{t1:queue}:replies:i1");
        // the purge pattern of the prefix covers them all
        let pattern = Prefix::new("t1").unwrap().key_pattern();
        assert_eq!(pattern, "{t1:*");
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let of = |s: u64| partition_of(ScheduleId::from(s), 8);
        assert_eq!(of(1), of(1));
        assert!((1..=1000).all(|s| of(s) < 8));
        let used: std::collections::HashSet<u32> = (1..=64).map(of).collect();
        assert_eq!(used.len(), 8, "64 schedules use every partition");
        assert_eq!(partition_of(ScheduleId::from(5), 1), 0);
    }
}
