//! The consumer runtime on real Redis: a dead consumer's pending entries
//! claimed by another, de-duplication by event id, every group seeing every
//! event, retries then dead letters, ephemeral groups.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use concert_domain::{
    EventHandler, EventPublisher, EventType, Failure, OutboxEvent, ReceivedEvent, Stream,
};
use concert_redis::streams::{ConsumerConfig, StartAt};
use concert_redis::{RedisStreams, StreamSettings};
use concert_tests::events::eventually;
use concert_tests::redis::{purge_prefix, redis_url, test_prefix};
use tokio::sync::Notify;

/// A handler that records what it is given; it can hang on every event (a
/// consumer about to die) or refuse some ids.
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<String>>,
    attempts: Mutex<HashMap<String, u32>>,
    refuse: HashSet<String>,
    hang: bool,
    called: Notify,
    live: Mutex<Vec<bool>>,
}

impl Recorder {
    fn handled(&self) -> Vec<String> {
        self.handled.lock().unwrap().clone()
    }

    fn attempts(&self, id: &str) -> u32 {
        self.attempts.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &ReceivedEvent) -> Result<(), Failure> {
        *self
            .attempts
            .lock()
            .unwrap()
            .entry(event.id.clone())
            .or_default() += 1;
        self.called.notify_one();
        if self.hang {
            std::future::pending::<()>().await;
        }
        if self.refuse.contains(&event.id) {
            return Err(Failure::unknown(anyhow::anyhow!("refused {}", event.id)));
        }
        self.handled.lock().unwrap().push(event.id.clone());
        Ok(())
    }

    fn delivering(&self, live: bool) {
        self.live.lock().unwrap().push(live);
    }
}

/// The streams of a fresh prefix (deleted when dropped).
struct Streams {
    streams: RedisStreams,
    prefix: String,
}

impl Streams {
    fn new() -> Self {
        let prefix = test_prefix();
        let streams = RedisStreams::new(&redis_url(), &prefix, StreamSettings::default()).unwrap();
        Self { streams, prefix }
    }

    /// Publishes charges numbered by `ids` to the points stream.
    async fn publish(&self, ids: &[&str]) {
        let events: Vec<OutboxEvent> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| OutboxEvent {
                position: i as u64 + 1,
                id: (*id).to_owned(),
                stream: Stream::Points,
                kind: EventType::PointsCharged,
                aggregate: "user:1".into(),
                payload: format!(r#"{{"userId":1,"amount":1,"balanceAfter":{i}}}"#),
                created_at: Utc::now(),
            })
            .collect();
        self.streams.publish(&events, 1, false).await.unwrap();
    }

    async fn pending(&self, group: &str) -> u64 {
        let status = self.streams.status(Stream::Points).await.unwrap();
        status
            .groups
            .iter()
            .find(|g| g.name == group)
            .map_or(0, |g| g.pending)
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        purge_prefix(&redis_url(), &self.prefix);
    }
}

fn config(group: &str, consumer: &str) -> ConsumerConfig {
    ConsumerConfig {
        block: Duration::from_millis(100),
        claim_idle: Duration::from_millis(300),
        max_attempts: 3,
        ..ConsumerConfig::new(group, consumer, &[Stream::Points])
    }
}

fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("e{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_pending_entries_are_claimed_by_another() {
    let s = Streams::new();
    let six = ids(6);
    s.publish(&six.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let doomed = Arc::new(Recorder {
        hang: true,
        ..Recorder::default()
    });
    let a = s.streams.consumer(config("g", "a"), doomed.clone()).spawn();
    doomed.called.notified().await;
    a.abort(); // dies with all six read, none acknowledged
    assert_eq!(s.pending("g").await, 6);

    let heir = Arc::new(Recorder::default());
    let b = s.streams.consumer(config("g", "b"), heir.clone()).spawn();
    eventually("the six events claimed and handled", || async {
        (heir.handled().len() == 6).then_some(())
    })
    .await;
    assert_eq!(heir.handled(), six);
    assert_eq!(doomed.attempts("e1"), 1);
    assert_eq!(b.stats().claimed, 6);
    assert_eq!(b.stats().handled, 6);
    eventually("every entry acknowledged", || async {
        (s.pending("g").await == 0).then_some(())
    })
    .await;
    assert_eq!(*heir.live.lock().unwrap(), [true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_handles_each_event_once_whatever_the_duplicates() {
    let s = Streams::new();
    s.publish(&["e1", "e2", "e3"]).await;
    s.publish(&["e1", "e2", "e3"]).await; // a relay's retry: same ids
    let first = Arc::new(Recorder::default());
    let second = Arc::new(Recorder::default());
    let c1 = s.streams.consumer(config("g1", "x"), first.clone()).spawn();
    let c2 = s
        .streams
        .consumer(config("g2", "y"), second.clone())
        .spawn();
    for (consumer, recorder) in [(&c1, &first), (&c2, &second)] {
        eventually("three handled, three duplicates", || async {
            (consumer.stats().handled + consumer.stats().duplicates == 6).then_some(())
        })
        .await;
        assert_eq!(recorder.handled(), ["e1", "e2", "e3"]);
        assert_eq!(consumer.stats().duplicates, 3);
    }
    // the same ids published later again: still duplicates
    s.publish(&["e2"]).await;
    eventually("the late duplicate acknowledged", || async {
        (c1.stats().duplicates == 4).then_some(())
    })
    .await;
    assert_eq!(first.handled(), ["e1", "e2", "e3"]);
    eventually("nothing pending", || async {
        (s.pending("g1").await == 0).then_some(())
    })
    .await;
}

/// With no de-duplication marks (`remember` zero, for idempotent
/// handlers), a repeat published after the first copy was handled reaches
/// the handler again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_marks_a_later_repeat_is_handled_again() {
    let s = Streams::new();
    let recorder = Arc::new(Recorder::default());
    let consumer = s
        .streams
        .consumer(
            ConsumerConfig {
                remember: Duration::ZERO,
                ..config("forgetful", "f")
            },
            recorder.clone(),
        )
        .spawn();
    s.publish(&["e1"]).await;
    eventually("the first copy handled", || async {
        (recorder.handled().len() == 1).then_some(())
    })
    .await;
    s.publish(&["e1"]).await;
    eventually("the repeat handled", || async {
        (recorder.handled().len() == 2).then_some(())
    })
    .await;
    assert_eq!(recorder.handled(), ["e1", "e1"]);
    assert_eq!(consumer.stats().duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_retried_then_dead_lettered() {
    let s = Streams::new();
    s.publish(&["e1", "e2", "e3"]).await;
    let recorder = Arc::new(Recorder {
        refuse: HashSet::from(["e2".to_owned()]),
        ..Recorder::default()
    });
    let consumer = s
        .streams
        .consumer(
            ConsumerConfig {
                claim_idle: Duration::from_millis(100),
                block: Duration::from_millis(50),
                ..config("g", "c")
            },
            recorder.clone(),
        )
        .spawn();
    let dead = eventually("a dead letter", || async {
        let dead = s.streams.dead_letters(Stream::Points).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(
        (letter.id.as_str(), letter.kind.as_str()),
        ("e2", "PointsCharged")
    );
    assert_eq!(letter.field("group"), Some("g"));
    assert_eq!(letter.field("attempts"), Some("3"));
    assert!(letter.field("error").unwrap().contains("refused e2"));
    assert_eq!(recorder.attempts("e2"), 3);
    assert_eq!(recorder.handled(), ["e1", "e3"]);
    let stats = consumer.stats();
    assert_eq!(
        (stats.handled, stats.failed, stats.dead_lettered),
        (2, 3, 1)
    );
    eventually("nothing pending", || async {
        (s.pending("g").await == 0).then_some(())
    })
    .await;
    let status = s.streams.status(Stream::Points).await.unwrap();
    assert_eq!(status.dead_letters, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_group_sees_new_events_only_and_goes_with_its_consumer() {
    let s = Streams::new();
    s.publish(&["old"]).await;
    let recorder = Arc::new(Recorder::default());
    let consumer = s
        .streams
        .consumer(
            ConsumerConfig {
                start: StartAt::New,
                ephemeral: true,
                ..config("mine", "me")
            },
            recorder.clone(),
        )
        .spawn();
    eventually("the consumer connected", || async {
        consumer.is_live().then_some(())
    })
    .await;
    s.publish(&["new"]).await;
    eventually("the new event handled", || async {
        (recorder.handled().len() == 1).then_some(())
    })
    .await;
    assert_eq!(recorder.handled(), ["new"]);
    consumer.stop(Duration::from_secs(5)).await;
    let status = s.streams.status(Stream::Points).await.unwrap();
    assert!(status.groups.iter().all(|g| g.name != "mine"));
    assert_eq!(*recorder.live.lock().unwrap(), [true, false]);
}
