//! Events in the running service: the settings, how the ports are wrapped
//! (own commits wake the relay and invalidate the seat-map cache at once),
//! and the background work of `app serve`: the outbox relay (under a lease,
//! one instance at a time) and the seat-map consumer (every instance).
//! The operators' commands (`app events tail | status | replay`) are in
//! [`commands`]. See `docs/events.md`.
//!
//! The waiting room's release after a payment is *not* an event consumer:
//! the paying request already releases the payer's admission synchronously
//! (`WaitingRoomService::after_payment`), which is sooner and cannot be
//! lost; a second, event-driven release would only race it.

pub mod commands;
mod notifying;
mod relay;
mod seatmap;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use concert_domain::{CatalogueRepository, Event, OutboxRelay, Stream, Transactions};

use concert_inprocess::SeatMapCache;
use concert_redis::streams::{ConsumerConfig, ConsumerHandle, StartAt};
use concert_redis::{RedisLockSettings, RedisLocks, RedisStreams, StreamSettings};
pub use notifying::{CommitListener, NotifyingTransactions};
use secrecy::ExposeSecret;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::{Infrastructure, Settings};

pub use relay::{RelayOptions, RelayStats, RelayStatus, run_relay};
pub use seatmap::SeatMapFeed;

/// The lock key of the relay's lease.
pub const RELAY_LEASE_KEY: &str = "events:relay";
/// Consumer groups of the per-instance seat-map caches are named
/// `seat-map:<instance>`.
pub const SEAT_MAP_GROUP_PREFIX: &str = "seat-map:";

/// The event settings (see README.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    /// `APP_RELAY` (`on`/`off`, default on): run the outbox relay here.
    pub relay: bool,
    /// `APP_RELAY_BATCH` (500): events per publication.
    pub relay_batch: u32,
    /// `APP_RELAY_POLL_MS` (50): how often an idle relay looks for events
    /// committed by other instances (this instance's own commits wake it
    /// at once).
    pub relay_poll: Duration,
    /// `APP_RELAY_LEASE_MS` (10000): the relay lease; a relay that dies is
    /// replaced by another instance's within it.
    pub relay_lease: Duration,
    /// `APP_OUTBOX_RETENTION_HOURS` (24): published events stay in the
    /// outbox this long (to replay them), then are pruned.
    pub retention: Duration,
    /// `APP_EVENTS_MAXLEN` (100000): each stream keeps about this many
    /// entries (0: all).
    pub max_len: u64,
    /// `APP_SEAT_CACHE` (`on`/`off`, default on): serve seat maps and
    /// dates from memory, kept current by events.
    pub seat_cache: bool,
    /// `APP_SEAT_CACHE_MAX_AGE_MS` (1000): the longest a cached seat map is
    /// served without being loaded again, should events stop flowing.
    pub seat_cache_max_age: Duration,
    /// `APP_CONSUMER_CLAIM_IDLE_MS` (30000): a consumer takes over entries
    /// another consumer of its group left pending this long (and retries
    /// its own failed ones).
    pub claim_idle: Duration,
    /// `APP_CONSUMER_MAX_ATTEMPTS` (5): handling attempts before an event
    /// becomes a dead letter.
    pub max_attempts: u32,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            relay: true,
            relay_batch: 500,
            relay_poll: Duration::from_millis(50),
            relay_lease: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
            max_len: 100_000,
            seat_cache: true,
            seat_cache_max_age: Duration::from_secs(1),
            claim_idle: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

/// `on`/`off` (also `true`/`false`, `1`/`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch(bool);

impl FromStr for Switch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => Ok(Switch(true)),
            "off" | "false" | "0" => Ok(Switch(false)),
            other => Err(format!("{other:?} is neither on nor off")),
        }
    }
}

impl EventSettings {
    /// Reads the `APP_RELAY*`, `APP_OUTBOX_*`, `APP_EVENTS_*`,
    /// `APP_SEAT_CACHE*` and `APP_CONSUMER_*` variables.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        fn parse<T: FromStr>(
            get: &dyn Fn(&str) -> Option<String>,
            name: &str,
            default: T,
        ) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            match get(name) {
                None => Ok(default),
                Some(raw) => raw
                    .trim()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("invalid {name}={raw:?}")),
            }
        }
        let d = Self::default();
        let ms = |name, default: Duration| -> anyhow::Result<Duration> {
            Ok(Duration::from_millis(parse(
                get,
                name,
                default.as_millis() as u64,
            )?))
        };
        let settings = Self {
            relay: parse(get, "APP_RELAY", Switch(d.relay))?.0,
            relay_batch: parse(get, "APP_RELAY_BATCH", d.relay_batch)?,
            relay_poll: ms("APP_RELAY_POLL_MS", d.relay_poll)?,
            relay_lease: ms("APP_RELAY_LEASE_MS", d.relay_lease)?,
            retention: Duration::from_secs(
                3600 * parse::<u64>(get, "APP_OUTBOX_RETENTION_HOURS", 24)?,
            ),
            max_len: parse(get, "APP_EVENTS_MAXLEN", d.max_len)?,
            seat_cache: parse(get, "APP_SEAT_CACHE", Switch(d.seat_cache))?.0,
            seat_cache_max_age: ms("APP_SEAT_CACHE_MAX_AGE_MS", d.seat_cache_max_age)?,
            claim_idle: ms("APP_CONSUMER_CLAIM_IDLE_MS", d.claim_idle)?,
            max_attempts: parse(get, "APP_CONSUMER_MAX_ATTEMPTS", d.max_attempts)?,
        };
        if settings.relay_batch == 0 || settings.relay_batch > 5_000 {
            bail!("APP_RELAY_BATCH must be between 1 and 5000");
        }
        if settings.relay_poll.is_zero() {
            bail!("APP_RELAY_POLL_MS must be at least 1");
        }
        if settings.relay_lease < Duration::from_millis(300) {
            bail!("APP_RELAY_LEASE_MS must be at least 300");
        }
        if settings.max_attempts == 0 {
            bail!("APP_CONSUMER_MAX_ATTEMPTS must be at least 1");
        }
        if settings.claim_idle < Duration::from_millis(10) {
            bail!("APP_CONSUMER_CLAIM_IDLE_MS must be at least 10");
        }
        Ok(settings)
    }
}

/// What wraps the ports of one instance: commits are told to the relay
/// (wake up) and to the seat-map cache (invalidate), and catalogue reads go
/// through the cache when it is on. Built once per instance; cheap to
/// clone.
#[derive(Clone)]
pub struct EventPorts {
    wake: Arc<Notify>,
    cache: Option<Arc<SeatMapCache>>,
    catalogue: Arc<dyn CatalogueRepository>,
}

impl EventPorts {
    /// Wraps `catalogue` (the storage's) in a seat-map cache when
    /// configured.
    pub fn new(settings: &EventSettings, catalogue: Arc<dyn CatalogueRepository>) -> Self {
        let cache = settings.seat_cache.then(|| {
            Arc::new(SeatMapCache::new(
                catalogue.clone(),
                settings.seat_cache_max_age,
            ))
        });
        Self {
            wake: Arc::new(Notify::new()),
            cache,
            catalogue,
        }
    }

    /// `inner`, telling this instance about what each unit commits.
    pub fn transactions(&self, inner: Arc<dyn Transactions>) -> Arc<dyn Transactions> {
        let listener = Arc::new(Listener {
            wake: self.wake.clone(),
            cache: self.cache.clone(),
        });
        Arc::new(NotifyingTransactions::new(inner, listener))
    }

    /// The catalogue the use cases read: the cache, or storage.
    pub fn catalogue(&self) -> Arc<dyn CatalogueRepository> {
        match &self.cache {
            Some(cache) => cache.clone(),
            None => self.catalogue.clone(),
        }
    }

    /// The seat-map cache, when on.
    pub fn seat_cache(&self) -> Option<&Arc<SeatMapCache>> {
        self.cache.as_ref()
    }

    /// Signalled after every commit with events.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// Wakes the relay and invalidates the seat maps a commit changed.
struct Listener {
    wake: Arc<Notify>,
    cache: Option<Arc<SeatMapCache>>,
}

impl CommitListener for Listener {
    fn committed(&self, events: &[Event]) {
        self.wake.notify_one();
        if let Some(cache) = &self.cache {
            for event in events {
                if event.stream() == Stream::Reservations
                    && let Some(schedule) = event.payload.schedule_id
                {
                    cache.invalidate(schedule);
                }
            }
        }
    }
}

/// The event streams of these settings (nothing is contacted yet).
pub fn streams(settings: &Settings) -> anyhow::Result<RedisStreams> {
    RedisStreams::new(
        settings.redis.url.expose_secret(),
        &settings.redis.prefix,
        StreamSettings {
            max_len: settings.events.max_len,
            ..StreamSettings::default()
        },
    )
    .context("configuring the event streams")
}

/// The background event work of one serving instance. Dropped, it aborts
/// everything at once (as a crash would); [`EventsRuntime::stop`] stops
/// cleanly.
#[derive(Default)]
pub struct EventsRuntime {
    relay: Option<JoinHandle<()>>,
    relay_stats: Option<Arc<RelayStats>>,
    seat_cache: Option<Arc<SeatMapCache>>,
    consumers: Vec<ConsumerHandle>,
    housekeeping: Vec<JoinHandle<()>>,
}

impl EventsRuntime {
    /// Starts the relay (unless `APP_RELAY=off`) and the seat-map consumer
    /// (when the cache is on). Redis is contacted lazily: an instance whose
    /// Redis is down serves anyway, publishes once Redis answers (the
    /// outbox keeps the events), and reads seat maps from storage
    /// meanwhile.
    pub async fn start(settings: &Settings, infra: &Infrastructure) -> anyhow::Result<Self> {
        let events = &settings.events;
        let mut runtime = EventsRuntime::default();
        if !events.relay && infra.events.seat_cache().is_none() {
            return Ok(runtime);
        }
        let streams = streams(settings)?;
        let instance = concert_locking::lease::owner_token()[..12].to_owned();
        if events.relay {
            let locks = match &infra.redis {
                Some(locks) => locks.clone(),
                None => RedisLocks::connect_lazy(
                    settings.redis.url.expose_secret(),
                    &settings.redis.prefix,
                    RedisLockSettings::default(),
                )
                .await
                .context("configuring the relay's lease")?,
            };
            let relay = OutboxRelay::new(
                Arc::new(infra.store.clone()),
                Arc::new(streams.clone()),
                infra.clock.clone(),
                events.relay_batch,
            );
            let stats = Arc::new(RelayStats::default());
            let options = RelayOptions {
                poll: events.relay_poll,
                lease: events.relay_lease,
                retention: events.retention,
                ..RelayOptions::default()
            };
            runtime.relay = Some(tokio::spawn(run_relay(
                relay,
                Arc::new(locks.simple()),
                infra.events.wake(),
                infra.clock.clone(),
                options,
                stats.clone(),
            )));
            runtime.relay_stats = Some(stats);
        }
        if let Some(cache) = infra.events.seat_cache() {
            runtime.seat_cache = Some(cache.clone());
            let group = format!("{SEAT_MAP_GROUP_PREFIX}{instance}");
            let config = ConsumerConfig {
                start: StartAt::New,
                claim_idle: events.claim_idle,
                max_attempts: events.max_attempts,
                // invalidating twice is harmless: no de-duplication marks
                // (they would cost a write per event and instance)
                remember: Duration::ZERO,
                ephemeral: true,
                block: Duration::from_secs(1),
                ..ConsumerConfig::new(group.clone(), instance.clone(), &[Stream::Reservations])
            };
            let handler = Arc::new(SeatMapFeed::new(cache.clone()));
            runtime
                .consumers
                .push(streams.consumer(config, handler).spawn());
            // groups of instances that died without destroying theirs
            runtime.housekeeping.push(tokio::spawn(async move {
                let idle = Duration::from_secs(3600);
                match streams
                    .destroy_idle_groups(Stream::Reservations, SEAT_MAP_GROUP_PREFIX, &group, idle)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(groups = n, "removed abandoned seat-map groups"),
                    Err(e) => tracing::debug!(error = %e, "could not look for abandoned groups"),
                }
            }));
        }
        Ok(runtime)
    }

    /// The seat-map cache, when on.
    pub fn seat_cache(&self) -> Option<&Arc<SeatMapCache>> {
        self.seat_cache.as_ref()
    }

    /// What the relay of this instance did, if it runs one.
    pub fn relay_stats(&self) -> Option<RelayStatus> {
        self.relay_stats.as_ref().map(|s| s.snapshot())
    }

    /// True when every consumer of this instance is connected.
    pub fn consumers_live(&self) -> bool {
        self.consumers.iter().all(ConsumerHandle::is_live)
    }

    /// Stops the consumers (their per-instance groups are destroyed) and
    /// the relay (its lease then lapses).
    pub async fn stop(mut self) {
        for consumer in std::mem::take(&mut self.consumers) {
            consumer.stop(Duration::from_secs(2)).await;
        }
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
    }
}

impl Drop for EventsRuntime {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
        for task in self.housekeeping.drain(..) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> anyhow::Result<EventSettings> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EventSettings::from_lookup(&|name| map.get(name).cloned())
    }

    #[test]
    fn the_relay_and_the_cache_are_on_by_default() {
        let s = from(&[]).unwrap();
        assert_eq!(s, EventSettings::default());
        assert!(s.relay && s.seat_cache);
        assert_eq!(s.retention, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn switches_and_numbers_parse_and_bad_values_name_the_variable() {
        let s = from(&[
            ("APP_RELAY", "off"),
            ("APP_SEAT_CACHE", "false"),
            ("APP_RELAY_POLL_MS", "5"),
            ("APP_OUTBOX_RETENTION_HOURS", "2"),
            ("APP_CONSUMER_MAX_ATTEMPTS", "3"),
        ])
        .unwrap();
        assert!(!s.relay && !s.seat_cache);
        assert_eq!(s.relay_poll, Duration::from_millis(5));
        assert_eq!(s.retention, Duration::from_secs(7200));
        assert_eq!(s.max_attempts, 3);
        let err = from(&[("APP_RELAY", "maybe")]).unwrap_err();
        assert!(format!("{err:#}").contains("APP_RELAY"), "{err:#}");
        assert!(from(&[("APP_RELAY_BATCH", "0")]).is_err());
        assert!(from(&[("APP_RELAY_LEASE_MS", "10")]).is_err());
        assert!(from(&[("APP_CONSUMER_MAX_ATTEMPTS", "0")]).is_err());
    }
}
