//! The relay loop: take the lease, step the [`OutboxRelay`] while holding
//! it (at once after this instance's own commits, else every poll
//! interval), prune, report; hand the lease back after each turn so a
//! stuck holder cannot keep it and so it never outlives the lock adapter's
//! longest hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use concert_domain::{
    Clock, DistributedLock, Failure, HeldLock, LockKey, LockOptions, OutboxRelay, RelayStep,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::RELAY_LEASE_KEY;

/// Pacing of the relay loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// Idle poll interval (own commits wake the relay at once).
    pub poll: Duration,
    /// The lease (renewed by the lock's watchdog while held).
    pub lease: Duration,
    /// How long one turn holds the lease before handing it back.
    pub turn: Duration,
    /// How long to wait after a turn before competing for the lease again
    /// (zero: at once, so publishing pauses only for the hand-back).
    pub rest: Duration,
    /// How often an instance without the lease tries to take it.
    pub standby: Duration,
    /// Published events are pruned after this long.
    pub retention: Duration,
    /// How often pruning runs.
    pub prune_every: Duration,
    /// How often the backlog gauges are refreshed.
    pub report_every: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(50),
            lease: Duration::from_secs(10),
            turn: Duration::from_secs(30),
            rest: Duration::ZERO,
            standby: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            prune_every: Duration::from_secs(60),
            report_every: Duration::from_secs(1),
        }
    }
}

/// What this instance's relay did since it started.
#[derive(Debug, Default)]
pub struct RelayStats {
    leader: AtomicBool,
    published: AtomicU64,
    batches: AtomicU64,
    replays: AtomicU64,
    pruned: AtomicU64,
    failures: AtomicU64,
    /// Publication lag of the last batch's oldest event, in microseconds.
    last_lag_us: AtomicU64,
}

/// A snapshot of [`RelayStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// True while this instance holds the relay lease.
    pub leader: bool,
    pub published: u64,
    pub batches: u64,
    pub replays: u64,
    pub pruned: u64,
    pub failures: u64,
    /// How long the oldest event of the last batch waited.
    pub last_lag: Duration,
}

impl RelayStats {
    pub fn snapshot(&self) -> RelayStatus {
        RelayStatus {
            leader: self.leader.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            replays: self.replays.load(Ordering::Relaxed),
            pruned: self.pruned.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_lag: Duration::from_micros(self.last_lag_us.load(Ordering::Relaxed)),
        }
    }

    fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
        metrics::gauge!("concert_events_relay_leader").set(if leader { 1.0 } else { 0.0 });
    }
}

/// An error with its causes.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Runs the relay until the task is aborted.
pub async fn run_relay(
    relay: OutboxRelay,
    lock: Arc<dyn DistributedLock>,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    options: RelayOptions,
    stats: Arc<RelayStats>,
) {
    let key = LockKey::new(RELAY_LEASE_KEY);
    let lease = LockOptions {
        lease: options.lease,
        wait: Duration::ZERO,
        watchdog: true,
    };
    let mut work = Work {
        relay,
        wake,
        clock,
        options,
        stats,
        next_prune: Instant::now(),
        next_report: Instant::now(),
        failures: 0,
    };
    loop {
        match lock.acquire(&key, lease).await {
            Ok(held) => {
                work.stats.set_leader(true);
                work.turn(held.as_ref()).await;
                work.stats.set_leader(false);
                if let Err(e) = held.release().await {
                    tracing::debug!(error = %e, "the relay lease had already lapsed");
                }
                if !options.rest.is_zero() {
                    tokio::time::sleep(options.rest).await;
                }
            }
            Err(Failure::LockTimeout) => {
                // another instance relays
                work.report().await;
                tokio::time::sleep(options.standby).await;
            }
            Err(e) => {
                work.failed(&e, "could not take the relay lease");
                tokio::time::sleep(work.backoff()).await;
            }
        }
    }
}

struct Work {
    relay: OutboxRelay,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    options: RelayOptions,
    stats: Arc<RelayStats>,
    next_prune: Instant,
    next_report: Instant,
    failures: u32,
}

impl Work {
    /// Steps while the lease lasts and the turn is not over.
    async fn turn(&mut self, held: &dyn HeldLock) {
        let ends = Instant::now() + self.options.turn;
        while Instant::now() < ends && !held.fence().is_lost() {
            if Instant::now() >= self.next_report {
                self.report().await;
            }
            if Instant::now() >= self.next_prune {
                self.prune().await;
            }
            match self.relay.step(held.fence()).await {
                Ok(RelayStep::Published { count, oldest, at }) => {
                    self.recovered();
                    let lag = (at - oldest).to_std().unwrap_or_default();
                    self.stats
                        .published
                        .fetch_add(count as u64, Ordering::Relaxed);
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .last_lag_us
                        .store(lag.as_micros() as u64, Ordering::Relaxed);
                    metrics::counter!("concert_events_published_total").increment(count as u64);
                }
                Ok(RelayStep::Replayed { .. }) => {
                    self.stats.replays.fetch_add(1, Ordering::Relaxed);
                }
                Ok(RelayStep::Idle) => {
                    self.recovered();
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.options.poll) => {}
                    }
                }
                Err(Failure::LockLost) => {
                    tracing::warn!("the relay lost its lease; stepping down");
                    return;
                }
                Err(e) => {
                    self.failed(&e, "relaying events failed; retrying");
                    tokio::time::sleep(self.backoff()).await;
                }
            }
        }
    }

    async fn prune(&mut self) {
        self.next_prune = Instant::now() + self.options.prune_every;
        match self.relay.prune(self.options.retention).await {
            Ok(0) => {}
            Ok(n) => {
                self.stats.pruned.fetch_add(n, Ordering::Relaxed);
                tracing::info!(pruned = n, "pruned published events past retention");
            }
            Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
        }
    }

    /// Refreshes the backlog gauges.
    async fn report(&mut self) {
        self.next_report = Instant::now() + self.options.report_every;
        if let Ok(backlog) = self.relay.feed().backlog().await {
            metrics::gauge!("concert_outbox_backlog_events").set(backlog.unpublished as f64);
            metrics::gauge!("concert_outbox_lag_seconds")
                .set(backlog.lag(self.clock.now()).as_secs_f64());
        }
    }

    fn failed(&mut self, e: &Failure, what: &str) {
        self.failures = self.failures.saturating_add(1);
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        // once per outage, not once per retry
        if self.failures == 1 {
            tracing::warn!(error = %describe(e), "{what}");
        }
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!("the relay publishes again");
            self.failures = 0;
        }
    }

    fn backoff(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(6);
        (Duration::from_millis(100) * 2u32.pow(exp)).min(Duration::from_secs(5))
    }
}
