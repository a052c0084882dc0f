//! Publishing the outbox: the relay's ports and its one step.
//!
//! Every unit of work records its events in the outbox with the change they
//! describe (see [`crate::ports::Outbox`]). The relay moves them to the
//! event streams:
//!
//! 1. read the oldest unpublished events, by position ([`OutboxFeed`]);
//! 2. append them to their streams, in that order, under the relay's
//!    fencing token ([`EventPublisher`]);
//! 3. mark them published.
//!
//! **At least once.** An event is marked only after the broker took it, so
//! a relay that stops between 2 and 3 leaves it unpublished and the next
//! step appends it again, under the same event id: a duplicate, never a
//! loss. Consumers de-duplicate by event id.
//!
//! **Order.** Positions grow with every recorded event, and the events of
//! one reservation or one wallet are recorded while that aggregate is
//! locked, so they are positioned in commit order. A step publishes a
//! *prefix* of the unpublished events (every unpublished event below the
//! last one it read), in position order; so when an event is first
//! appended, every earlier event of its aggregate has already been
//! appended, by this relay or an earlier one. That holds even for two
//! relays running at once (a paused one that lost its lease): the worst
//! they do is append duplicates, which de-duplication removes, never an
//! event ahead of an earlier one of the same aggregate.
//!
//! **One relay at a time.** The app runs the step under an exclusive lease
//! (a [`crate::DistributedLock`] acquisition) so that duplicates stay rare;
//! the broker refuses a batch whose fencing token is older than one it has
//! already accepted, so a relay that lost its lease stops appending.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::error::Failure;
use crate::events::{EventType, Stream};
use crate::lock::Fence;

/// An event as the outbox keeps it and the streams carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Its place in the outbox: grows with every recorded event; the events
    /// of one aggregate are positioned in commit order.
    pub position: u64,
    /// The unique event id (consumers de-duplicate by it).
    pub id: String,
    pub stream: Stream,
    pub kind: EventType,
    /// `reservation:<id>` or `user:<id>` (see [`Event::aggregate`]).
    pub aggregate: String,
    /// The JSON payload.
    pub payload: String,
    /// When the event occurred (recorded).
    pub created_at: DateTime<Utc>,
}

/// How far publishing is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Events recorded and not yet published.
    pub unpublished: u64,
    /// When the oldest of them was recorded.
    pub oldest_unpublished: Option<DateTime<Utc>>,
    /// When the last event was marked published.
    pub last_published: Option<DateTime<Utc>>,
}

impl Backlog {
    /// How long the oldest unpublished event has waited at `now` (zero
    /// without backlog).
    pub fn lag(&self, now: DateTime<Utc>) -> Duration {
        self.oldest_unpublished
            .and_then(|oldest| (now - oldest).to_std().ok())
            .unwrap_or_default()
    }
}

/// The outbox, seen from the relay (outside any unit of work).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait OutboxFeed: Send + Sync {
    /// Up to `limit` unpublished events, by ascending position: every
    /// unpublished event committed below the last one returned is returned.
    async fn unpublished(&self, limit: u32) -> Result<Vec<OutboxEvent>, Failure>;

    /// Marks the events at `positions` published at `at`; an event already
    /// marked keeps its time. Returns how many it was asked to mark.
    async fn mark_published(&self, positions: &[u64], at: DateTime<Utc>) -> Result<u64, Failure>;

    /// True when the outbox still holds an event marked published.
    async fn any_published(&self) -> Result<bool, Failure>;

    /// Marks every kept event published at or after `since` (every kept
    /// event when `None`) unpublished again, so that the relay appends it
    /// once more, under the same id. Returns how many.
    async fn republish(&self, since: Option<DateTime<Utc>>) -> Result<u64, Failure>;

    /// Deletes up to `limit` events published before `before` (never an
    /// unpublished one); returns how many.
    async fn prune(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, Failure>;

    /// How far publishing is behind now.
    async fn backlog(&self) -> Result<Backlog, Failure>;

    /// How many published events are kept (until pruned).
    async fn retained(&self) -> Result<u64, Failure>;
}

/// What the broker did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Every event was appended.
    Appended,
    /// The broker holds no trace of earlier publications although the
    /// outbox says there were some (it restarted without keeping its data,
    /// or was emptied): nothing was appended, and the kept events must be
    /// published again.
    Forgotten,
}

/// The event streams, seen from the relay.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Appends `events` to their streams in the order given, all of them or
    /// none, with their id, type and payload, under the relay's fencing
    /// token `fence`. `published_before` tells whether the outbox holds
    /// events already published to this broker.
    ///
    /// MUST return [`Failure::LockLost`], appending nothing, when a larger
    /// token already published (a newer relay took over); MUST return
    /// [`Published::Forgotten`], appending nothing, when `published_before`
    /// is true but the broker has no trace of any earlier publication; MUST
    /// return [`Failure::Unavailable`] when the broker cannot be reached or
    /// does not answer in time (the batch may then have been appended:
    /// publishing it again makes duplicates, never a loss).
    async fn publish(
        &self,
        events: &[OutboxEvent],
        fence: u64,
        published_before: bool,
    ) -> Result<Published, Failure>;
}

/// What one relay step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayStep {
    /// Nothing was waiting.
    Idle,
    /// `count` events were appended and marked; `oldest` is when the first
    /// of them was recorded, `at` when they were marked.
    Published {
        count: usize,
        oldest: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The broker had forgotten everything: `count` kept events were marked
    /// unpublished again, to be published by the next steps.
    Replayed { count: u64 },
}

/// The relay's use case: one step at a time, under a lease the caller
/// holds (see the module documentation).
pub struct OutboxRelay {
    feed: Arc<dyn OutboxFeed>,
    publisher: Arc<dyn EventPublisher>,
    clock: Arc<dyn Clock>,
    batch: u32,
    /// Whether the outbox holds published events: 0 not known yet, 1 no,
    /// 2 yes.
    published_before: AtomicU8,
}

impl OutboxRelay {
    pub fn new(
        feed: Arc<dyn OutboxFeed>,
        publisher: Arc<dyn EventPublisher>,
        clock: Arc<dyn Clock>,
        batch: u32,
    ) -> Self {
        Self {
            feed,
            publisher,
            clock,
            batch: batch.max(1),
            published_before: AtomicU8::new(0),
        }
    }

    pub fn feed(&self) -> &Arc<dyn OutboxFeed> {
        &self.feed
    }

    /// Publishes the oldest unpublished events (up to a batch) and marks
    /// them, under `fence`. [`Failure::LockLost`] when the fence is lost or
    /// the broker refused it as stale: the caller must stop and take the
    /// lease again.
    pub async fn step(&self, fence: &Fence) -> Result<RelayStep, Failure> {
        let events = self.feed.unpublished(self.batch).await?;
        let Some(first) = events.first() else {
            return Ok(RelayStep::Idle);
        };
        if fence.is_lost() {
            return Err(Failure::LockLost);
        }
        let before = match self.published_before.load(Ordering::Acquire) {
            0 => self.feed.any_published().await?,
            known => known == 2,
        };
        match self
            .publisher
            .publish(&events, fence.token(), before)
            .await?
        {
            Published::Forgotten => {
                let count = self.feed.republish(None).await?;
                self.published_before.store(1, Ordering::Release);
                tracing::warn!(
                    republished = count,
                    "the event streams had forgotten every earlier publication; publishing the \
                     kept events again"
                );
                Ok(RelayStep::Replayed { count })
            }
            Published::Appended => {
                self.published_before.store(2, Ordering::Release);
                let at = self.clock.now();
                let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
                self.feed.mark_published(&positions, at).await?;
                Ok(RelayStep::Published {
                    count: events.len(),
                    oldest: first.created_at,
                    at,
                })
            }
        }
    }

    /// Deletes the events published more than `retention` ago, in batches;
    /// returns how many.
    pub async fn prune(&self, retention: Duration) -> Result<u64, Failure> {
        const BATCH: u32 = 1_000;
        let before = self.clock.now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut total = 0;
        loop {
            let pruned = self.feed.prune(before, BATCH).await?;
            total += pruned;
            if pruned < u64::from(BATCH) {
                return Ok(total);
            }
        }
    }

    /// Marks the events published since `since` unpublished again (the
    /// operator's replay after the streams lost data).
    pub async fn republish(&self, since: DateTime<Utc>) -> Result<u64, Failure> {
        self.feed.republish(Some(since)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::clock::MockClock;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    fn event(position: u64) -> OutboxEvent {
        OutboxEvent {
            position,
            id: format!("e{position}"),
            stream: Stream::Points,
            kind: EventType::PointsCharged,
            aggregate: "user:1".into(),
            payload: "{}".into(),
            created_at: t0(),
        }
    }

    fn clock() -> Arc<MockClock> {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(t0());
        Arc::new(clock)
    }

    #[tokio::test]
    async fn a_step_publishes_a_batch_in_order_then_marks_it() {
        let mut feed = MockOutboxFeed::new();
        feed.expect_unpublished()
            .withf(|limit| *limit == 2)
            .returning(|_| Ok(vec![event(3), event(5)]));
        feed.expect_any_published().times(1).returning(|| Ok(true));
        feed.expect_mark_published()
            .withf(|positions, at| positions == [3, 5] && *at == t0())
            .times(2)
            .returning(|p, _| Ok(p.len() as u64));
        let mut publisher = MockEventPublisher::new();
        publisher
            .expect_publish()
            .withf(|events, fence, before| {
                events.iter().map(|e| e.position).collect::<Vec<_>>() == [3, 5]
                    && *fence == 7
                    && *before
            })
            .times(2)
            .returning(|_, _, _| Ok(Published::Appended));
        let relay = OutboxRelay::new(Arc::new(feed), Arc::new(publisher), clock(), 2);
        let fence = Fence::new(7);
        for _ in 0..2 {
            // the second step asks the feed no more whether events were
            // published before
            assert_eq!(
                relay.step(&fence).await.unwrap(),
                RelayStep::Published {
                    count: 2,
                    oldest: t0(),
                    at: t0()
                }
            );
        }
    }

    #[tokio::test]
    async fn nothing_waiting_is_idle_and_a_lost_fence_publishes_nothing() {
        let mut feed = MockOutboxFeed::new();
        let calls = Arc::new(Mutex::new(0));
        let seen = calls.clone();
        feed.expect_unpublished().returning(move |_| {
            let mut n = seen.lock().unwrap();
            *n += 1;
            Ok(if *n == 1 { vec![] } else { vec![event(1)] })
        });
        let publisher = MockEventPublisher::new();
        let relay = OutboxRelay::new(Arc::new(feed), Arc::new(publisher), clock(), 10);
        let fence = Fence::new(1);
        assert_eq!(relay.step(&fence).await.unwrap(), RelayStep::Idle);
        fence.mark_lost();
        assert!(matches!(relay.step(&fence).await, Err(Failure::LockLost)));
    }

    #[tokio::test]
    async fn a_stale_fence_or_an_unreachable_broker_marks_nothing() {
        for failure in [
            Failure::LockLost,
            Failure::unavailable(anyhow::anyhow!("down")),
        ] {
            let mut feed = MockOutboxFeed::new();
            feed.expect_unpublished().returning(|_| Ok(vec![event(1)]));
            feed.expect_any_published().returning(|| Ok(false));
            feed.expect_mark_published().never();
            let mut publisher = MockEventPublisher::new();
            let mut once = Some(failure);
            publisher
                .expect_publish()
                .returning(move |_, _, _| Err(once.take().unwrap()));
            let relay = OutboxRelay::new(Arc::new(feed), Arc::new(publisher), clock(), 10);
            assert!(relay.step(&Fence::new(1)).await.is_err());
        }
    }

    #[tokio::test]
    async fn a_broker_that_forgot_everything_gets_the_kept_events_again() {
        let mut feed = MockOutboxFeed::new();
        feed.expect_unpublished().returning(|_| Ok(vec![event(9)]));
        feed.expect_any_published().times(1).returning(|| Ok(true));
        feed.expect_republish()
            .withf(|since| since.is_none())
            .times(1)
            .returning(|_| Ok(42));
        feed.expect_mark_published().never();
        let mut publisher = MockEventPublisher::new();
        publisher
            .expect_publish()
            .withf(|_, _, before| *before)
            .times(1)
            .returning(|_, _, _| Ok(Published::Forgotten));
        let relay = OutboxRelay::new(Arc::new(feed), Arc::new(publisher), clock(), 10);
        assert_eq!(
            relay.step(&Fence::new(1)).await.unwrap(),
            RelayStep::Replayed { count: 42 }
        );
        // the next publication tells the broker nothing was published before
        assert_eq!(relay.published_before.load(Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn pruning_goes_on_while_batches_are_full() {
        let mut feed = MockOutboxFeed::new();
        let before = t0() - chrono::Duration::hours(24);
        let mut replies = vec![1_000u64, 1_000, 17].into_iter();
        feed.expect_prune()
            .withf(move |at, limit| *at == before && *limit == 1_000)
            .times(3)
            .returning(move |_, _| Ok(replies.next().unwrap()));
        let relay = OutboxRelay::new(
            Arc::new(feed),
            Arc::new(MockEventPublisher::new()),
            clock(),
            10,
        );
        assert_eq!(
            relay.prune(Duration::from_secs(24 * 3600)).await.unwrap(),
            2_017
        );
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_unpublished_event() {
        let backlog = Backlog {
            unpublished: 2,
            oldest_unpublished: Some(t0()),
            last_published: None,
        };
        assert_eq!(
            backlog.lag(t0() + chrono::Duration::milliseconds(250)),
            Duration::from_millis(250)
        );
        assert_eq!(Backlog::default().lag(t0()), Duration::ZERO);
    }
}
