//! The outbox relay on real MariaDB and Redis: a relay killed between
//! publish and mark, a stale relay fenced off, two relays at once, rolled
//! back units, pruning, and streams that lost their data.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_app::events::{RELAY_LEASE_KEY, RelayOptions, RelayStats, run_relay};
use concert_domain::{
    Backlog, Clock, DistributedLock, Event, EventPublisher, Failure, Fence, LockKey, LockOptions,
    OutboxEvent, OutboxFeed, OutboxRelay, PointChange, Points, Protection, Published, RelayStep,
    Stream, Transactions, UserId,
};
use concert_mysql::MysqlStore;
use concert_redis::streams::StreamEntry;
use concert_redis::{RedisLockSettings, RedisLocks, RedisStreams};
use concert_tests::events::Deployment;
use concert_tests::redis::redis_url;
use tokio::sync::{Notify, Semaphore};

struct Env {
    d: Deployment,
    store: MysqlStore,
}

async fn env() -> Env {
    let d = Deployment::new().await;
    let store = MysqlStore::new(d.db.db.clone());
    Env { d, store }
}

/// A charge of 1 point to `user`, numbered `seq` (its `balanceAfter`).
fn charged(user: u64, seq: u64, at: DateTime<Utc>) -> Event {
    Event::points(
        UserId::from(user),
        PointChange::Charge(Points::new(1).unwrap()),
        seq,
        None,
        at,
    )
}

impl Env {
    fn relay(&self, feed: Arc<dyn OutboxFeed>, publisher: Arc<dyn EventPublisher>) -> OutboxRelay {
        OutboxRelay::new(feed, publisher, Arc::new(self.d.clock.clone()), 100)
    }

    fn plain_relay(&self) -> OutboxRelay {
        self.relay(
            Arc::new(self.store.clone()),
            Arc::new(self.d.streams.clone()),
        )
    }

    /// Commits one unit recording `events`.
    async fn commit(&self, events: &[Event]) {
        let mut uow = self.store.begin(Protection::Optimistic).await.unwrap();
        uow.outbox().record(events).await.unwrap();
        uow.commit().await.unwrap();
    }

    /// Commits `count` charges of `user`, numbered `from..`, one unit each.
    async fn charges(&self, user: u64, from: u64, count: u64) {
        let now = self.d.clock.now();
        for seq in from..from + count {
            self.commit(&[charged(user, seq, now)]).await;
        }
    }

    async fn points_stream(&self) -> Vec<StreamEntry> {
        self.d.streams.range(Stream::Points).await.unwrap()
    }
}

/// Steps `relay` until nothing is waiting; returns how many it published.
async fn drain(relay: &OutboxRelay, fence: &Fence) -> usize {
    let mut total = 0;
    loop {
        match relay.step(fence).await.unwrap() {
            RelayStep::Idle => return total,
            RelayStep::Published { count, .. } => total += count,
            RelayStep::Replayed { .. } => {}
        }
    }
}

fn field(entry: &StreamEntry, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&entry.payload).unwrap()[name].clone()
}

/// What a de-duplicating consumer sees: every outbox event exactly once,
/// and per user in commit order. Returns how many duplicates it dropped.
async fn check_deduplicated(env: &Env) -> usize {
    let outbox = env.d.db.sql.outbox().await.unwrap();
    let entries = env.points_stream().await;
    let mut first: HashMap<String, &StreamEntry> = HashMap::new();
    let mut seen_order: Vec<&StreamEntry> = Vec::new();
    for entry in &entries {
        match first.get(&entry.id) {
            Some(earlier) => {
                // a duplicate is the same event: same type and payload
                assert_eq!(
                    (&earlier.kind, &earlier.payload),
                    (&entry.kind, &entry.payload)
                );
            }
            None => {
                first.insert(entry.id.clone(), entry);
                seen_order.push(entry);
            }
        }
    }
    let published: BTreeSet<&str> = first.keys().map(String::as_str).collect();
    let recorded: BTreeSet<&str> = outbox.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(published, recorded, "every recorded event, nothing else");
    // per user, first deliveries in commit order (the outbox order)
    let mut by_user: HashMap<u64, Vec<u64>> = HashMap::new();
    for entry in &seen_order {
        by_user
            .entry(field(entry, "userId").as_u64().unwrap())
            .or_default()
            .push(field(entry, "balanceAfter").as_u64().unwrap());
    }
    let mut expected: HashMap<u64, Vec<u64>> = HashMap::new();
    for row in &outbox {
        let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
        expected
            .entry(payload["userId"].as_u64().unwrap())
            .or_default()
            .push(payload["balanceAfter"].as_u64().unwrap());
    }
    assert_eq!(by_user, expected);
    for seqs in by_user.values() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
    entries.len() - seen_order.len()
}

/// The outbox seen through a relay that dies right after the broker took
/// a batch: its mark never happens.
struct DiesBeforeMark {
    inner: MysqlStore,
    published: Arc<Notify>,
}

#[async_trait]
impl OutboxFeed for DiesBeforeMark {
    async fn unpublished(&self, limit: u32) -> Result<Vec<OutboxEvent>, Failure> {
        self.inner.unpublished(limit).await
    }
    async fn mark_published(&self, _: &[u64], _: DateTime<Utc>) -> Result<u64, Failure> {
        self.published.notify_one();
        std::future::pending().await
    }
    async fn any_published(&self) -> Result<bool, Failure> {
        self.inner.any_published().await
    }
    async fn republish(&self, since: Option<DateTime<Utc>>) -> Result<u64, Failure> {
        self.inner.republish(since).await
    }
    async fn prune(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, Failure> {
        self.inner.prune(before, limit).await
    }
    async fn backlog(&self) -> Result<Backlog, Failure> {
        self.inner.backlog().await
    }
    async fn retained(&self) -> Result<u64, Failure> {
        self.inner.retained().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_mark_makes_duplicates_never_a_gap() {
    let env = env().await;
    for user in 1..=5 {
        env.charges(user, 1, 1).await;
    }
    let published = Arc::new(Notify::new());
    let dying = env.relay(
        Arc::new(DiesBeforeMark {
            inner: env.store.clone(),
            published: published.clone(),
        }),
        Arc::new(env.d.streams.clone()),
    );
    let killed = tokio::spawn(async move { dying.step(&Fence::new(10)).await });
    published.notified().await;
    killed.abort();
    assert!(killed.await.unwrap_err().is_cancelled());
    // the broker has the batch, the outbox still says unpublished
    assert_eq!(env.points_stream().await.len(), 5);
    assert!(
        env.d
            .db
            .sql
            .outbox()
            .await
            .unwrap()
            .iter()
            .all(|r| r.published_at.is_none())
    );

    env.charges(1, 2, 1).await;
    env.charges(6, 1, 1).await;
    let next = env.plain_relay();
    assert_eq!(drain(&next, &Fence::new(11)).await, 7);
    let outbox = env.d.db.sql.outbox().await.unwrap();
    assert!(outbox.iter().all(|r| r.published_at.is_some()));
    let entries = env.points_stream().await;
    assert_eq!(entries.len(), 12);
    // the five of the killed batch twice, under the same ids, the rest once
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in &entries {
        *count.entry(e.id.as_str()).or_default() += 1;
    }
    for (i, row) in outbox.iter().enumerate() {
        let expected = if i < 5 { 2 } else { 1 };
        assert_eq!(count[row.event_id.as_str()], expected, "event {i}");
    }
    assert_eq!(check_deduplicated(&env).await, 5);
}

/// The broker side of a relay that pauses inside `publish` until let go.
struct Paused {
    inner: RedisStreams,
    entered: Arc<Notify>,
    go: Arc<Semaphore>,
}

#[async_trait]
impl EventPublisher for Paused {
    async fn publish(
        &self,
        events: &[OutboxEvent],
        fence: u64,
        published_before: bool,
    ) -> Result<Published, Failure> {
        self.entered.notify_one();
        self.go.acquire().await.unwrap().forget();
        self.inner.publish(events, fence, published_before).await
    }
}

/// A relay that paused past its lease while a newer relay took over and
/// published: when it resumes, the broker refuses its batch (fencing
/// token), so nothing is appended twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_lost_its_lease_is_fenced_off() {
    let env = env().await;
    let locks = RedisLocks::connect(&redis_url(), &env.d.prefix, RedisLockSettings::default())
        .await
        .unwrap();
    let key = LockKey::new(RELAY_LEASE_KEY);
    for user in 1..=5 {
        env.charges(user, 1, 1).await;
    }
    let short = LockOptions {
        lease: Duration::from_millis(300),
        wait: Duration::ZERO,
        watchdog: false,
    };
    let held_a = locks.simple().acquire(&key, short).await.unwrap();
    let fence_a = held_a.fence().clone();
    let (entered, go) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let stale = env.relay(
        Arc::new(env.store.clone()),
        Arc::new(Paused {
            inner: env.d.streams.clone(),
            entered: entered.clone(),
            go: go.clone(),
        }),
    );
    let paused = tokio::spawn(async move { stale.step(&fence_a).await });
    entered.notified().await;

    // the lease runs out (Redis time); another relay takes it
    let long = LockOptions {
        lease: Duration::from_secs(30),
        ..short
    };
    let held_b = loop {
        match locks.simple().acquire(&key, long).await {
            Ok(held) => break held,
            Err(Failure::LockTimeout) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(held_b.fence().token() > held_a.fence().token());
    env.charges(1, 2, 3).await;
    let newer = env.plain_relay();
    assert_eq!(drain(&newer, held_b.fence()).await, 8);

    go.add_permits(1);
    assert!(matches!(paused.await.unwrap(), Err(Failure::LockLost)));
    let entries = env.points_stream().await;
    assert_eq!(entries.len(), 8, "the stale batch was not appended");
    assert_eq!(check_deduplicated(&env).await, 0);
    drop(held_a);
    held_b.release().await.unwrap();
}

/// Even two relays publishing at once under the same token (as if the
/// lease had failed entirely) give a de-duplicating consumer every event
/// once, in commit order per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_at_once_never_break_order_or_lose_an_event() {
    let env = Arc::new(env().await);
    let writers: Vec<_> = (1..=8)
        .map(|user| {
            let env = env.clone();
            tokio::spawn(async move { env.charges(user, 1, 25).await })
        })
        .collect();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move {
                let relay = OutboxRelay::new(
                    Arc::new(env.store.clone()),
                    Arc::new(env.d.streams.clone()),
                    Arc::new(env.d.clock.clone()),
                    7,
                );
                let fence = Fence::new(5);
                loop {
                    if relay.step(&fence).await.unwrap() == RelayStep::Idle {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    env.d.published(200).await;
    for relay in relays {
        relay.abort();
    }
    let duplicates = check_deduplicated(&env).await;
    eprintln!("two unfenced relays: {duplicates} duplicate(s) dropped by de-duplication");
}

/// Two instances' relay loops under the lease, turns handed back and
/// forth while writers commit: every event published, in order per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_of_two_instances_share_the_lease() {
    let env = Arc::new(env().await);
    let options = RelayOptions {
        poll: Duration::from_millis(5),
        turn: Duration::from_millis(30),
        rest: Duration::from_millis(10),
        standby: Duration::from_millis(10),
        ..RelayOptions::default()
    };
    let mut stats = Vec::new();
    let mut loops = Vec::new();
    for _ in 0..2 {
        let locks = RedisLocks::connect(&redis_url(), &env.d.prefix, RedisLockSettings::default())
            .await
            .unwrap();
        let relay = OutboxRelay::new(
            Arc::new(env.store.clone()),
            Arc::new(env.d.streams.clone()),
            Arc::new(env.d.clock.clone()),
            20,
        );
        let s = Arc::new(RelayStats::default());
        stats.push(s.clone());
        loops.push(tokio::spawn(run_relay(
            relay,
            Arc::new(locks.simple()) as Arc<dyn DistributedLock>,
            Arc::new(Notify::new()),
            Arc::new(env.d.clock.clone()),
            options,
            s,
        )));
    }
    let writers: Vec<_> = (1..=6)
        .map(|user| {
            let env = env.clone();
            tokio::spawn(async move { env.charges(user, 1, 30).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    env.d.published(180).await;
    for l in loops {
        l.abort();
    }
    let duplicates = check_deduplicated(&env).await;
    // the counters trail the marks (a loop aborted between its mark and its
    // count), never lead them
    let published: u64 = stats.iter().map(|s| s.snapshot().published).sum();
    assert!(published as usize <= 180 + duplicates, "{published}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_unit_publishes_nothing() {
    let env = env().await;
    let now = env.d.clock.now();
    let mut uow = env.store.begin(Protection::Optimistic).await.unwrap();
    uow.outbox().record(&[charged(1, 1, now)]).await.unwrap();
    uow.rollback().await;
    let mut uow = env.store.begin(Protection::Pessimistic).await.unwrap();
    uow.outbox().record(&[charged(1, 2, now)]).await.unwrap();
    drop(uow); // a cancelled request: never committed
    env.commit(&[charged(1, 3, now)]).await;
    assert_eq!(drain(&env.plain_relay(), &Fence::new(1)).await, 1);
    let entries = env.points_stream().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(field(&entries[0], "balanceAfter"), 3);
    assert!(
        env.d
            .streams
            .range(Stream::Reservations)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_pruned_after_the_retention_only() {
    let env = env().await;
    let day = Duration::from_secs(24 * 3600);
    env.charges(1, 1, 2).await;
    let relay = env.plain_relay();
    assert_eq!(drain(&relay, &Fence::new(1)).await, 2);
    env.d.clock.advance(day + Duration::from_secs(1));
    env.charges(1, 3, 1).await; // recorded now, not published yet
    assert_eq!(relay.prune(day).await.unwrap(), 2);
    let left = env.d.db.sql.outbox().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].published_at, None);
    // published now: younger than the retention, kept
    assert_eq!(drain(&relay, &Fence::new(1)).await, 1);
    assert_eq!(relay.prune(day).await.unwrap(), 0);
    assert_eq!(env.d.db.sql.outbox_count().await.unwrap(), 1);
    // the stream keeps what it was given
    assert_eq!(env.points_stream().await.len(), 3);
}

/// Redis restarted without persistence (its keys are gone): the relay
/// notices on its next publication and publishes every kept event again,
/// then the new ones, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_lost_their_data_get_the_kept_events_again() {
    let env = env().await;
    env.charges(1, 1, 3).await;
    let relay = env.plain_relay();
    assert_eq!(drain(&relay, &Fence::new(1)).await, 3);
    assert!(env.d.streams.purge().await.unwrap() > 0);
    env.charges(1, 4, 1).await;
    assert_eq!(
        relay.step(&Fence::new(1)).await.unwrap(),
        RelayStep::Replayed { count: 3 }
    );
    assert_eq!(drain(&relay, &Fence::new(1)).await, 4);
    let entries = env.points_stream().await;
    let seqs: Vec<u64> = entries
        .iter()
        .map(|e| field(e, "balanceAfter").as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(check_deduplicated(&env).await, 0);
    // and a relay that starts afresh (not knowing anything was published)
    // on streams that are intact publishes on normally
    env.charges(1, 5, 1).await;
    assert_eq!(drain(&env.plain_relay(), &Fence::new(1)).await, 1);
    assert_eq!(env.points_stream().await.len(), 5);
}
