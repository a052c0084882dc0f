//! The lab's own world: a fresh database next to `DATABASE_URL`'s, a fresh
//! Redis key prefix, and use cases wired the way the app wires them (the
//! app's strategy registry), with counters on every control.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use concert_app::strategies::LockAt;
use concert_app::{
    Adapters, Infrastructure, Overrides, QueueAdapter, Settings, Strategies, StrategyName,
};
use concert_domain::{
    ApplierOptions, Controls, LockOptions, Observer, Operation, SeatRequestApplier, Services,
};
use concert_inprocess::LocalLock;
use concert_locking::LockStats;
use concert_mysql::{DatabaseUrl, Db};
use concert_redis::{Consumers, QueueSettings, RedLock, RedisLockSettings, RedisLocks, RedisQueue};
use concert_testkit::Sql;
use secrecy::{ExposeSecret, SecretString};

use crate::config::LabConfig;

/// The attempt and conflict counters of one (operation, strategy).
type Slot = (Arc<AtomicU64>, Arc<AtomicU64>);

/// Counts what the controls report, per operation and strategy.
#[derive(Debug, Default)]
pub struct Counts {
    by: Mutex<HashMap<(Operation, String), Slot>>,
}

/// Attempts and optimistic conflicts of one (operation, strategy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    pub attempts: u64,
    pub conflicts: u64,
}

impl Counts {
    fn slot(&self, op: Operation, strategy: &str) -> Slot {
        self.by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((op, strategy.to_owned()))
            .or_default()
            .clone()
    }

    pub fn get(&self, op: Operation, strategy: &str) -> Attempts {
        let (attempts, conflicts) = self.slot(op, strategy);
        Attempts {
            attempts: attempts.load(Ordering::Relaxed),
            conflicts: conflicts.load(Ordering::Relaxed),
        }
    }
}

impl Observer for Counts {
    fn attempt(&self, op: Operation, strategy: &str) {
        self.slot(op, strategy).0.fetch_add(1, Ordering::Relaxed);
    }

    fn conflict(&self, op: Operation, strategy: &str) {
        self.slot(op, strategy).1.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct LabEnv {
    pub url: DatabaseUrl,
    pub db: Db,
    /// Direct SQL: set-up, inspection, and the raw baselines (a pool as
    /// large as the service's, so both compete on equal terms).
    pub sql: Sql,
    pub redis: RedisLocks,
    pub local: LocalLock,
    pub counts: Arc<Counts>,
    /// Use cases used only to read balances and history for the exactness
    /// checks.
    pub checker: Services,
    infra: Infrastructure,
    adapters: Adapters,
    settings: Settings,
    /// The queue's partition consumers, when `queue` is measured.
    consumers: Option<Consumers>,
}

impl LabEnv {
    pub async fn create(config: &LabConfig) -> anyhow::Result<LabEnv> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let url = DatabaseUrl::parse(&config.database_url)
            .context("invalid DATABASE_URL")?
            .with_database(&format!("lab_{}", &id[..12]))?;
        concert_mysql::run_migrations(&url)
            .await
            .with_context(|| format!("creating the lab database {}", url.redacted()))?;
        let mut settings = Settings::from_lookup(|_| None)?;
        settings.database.url = url.clone();
        settings.database.pool_size = config.db_pool_size;
        settings.redis.url = SecretString::from(config.redis_url.clone());
        settings.redis.prefix = format!("lab-{}", &id[..12]);
        settings.locks.wait = Duration::from_secs(30);
        settings.locks.local_queue = config.local_queue;
        let infra = Infrastructure::connect(&settings, &Overrides::default()).await?;
        warm_up(&infra.db, config.db_pool_size).await?;
        let redis = RedisLocks::connect(
            &config.redis_url,
            &settings.redis.prefix,
            RedisLockSettings::default(),
        )
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis_url))?;
        let sql = Sql::connect_with(url.as_str(), config.db_pool_size).await?;
        let local = LocalLock::new();
        // `redis-redlock` over three logical masters: databases 1-3 of the
        // lab's Redis (its cost is three parallel round trips and a floor
        // write per acquisition; fault behaviour is tested on three
        // separate servers).
        let redlock = RedLock::new(
            &redlock_urls(&config.redis_url),
            &settings.redis.prefix,
            RedisLockSettings::default(),
        )?;
        let counts: Arc<Counts> = Arc::default();
        // The queue strategy: this process submits and also holds every
        // partition's lease (one instance), its applier reporting to the
        // lab's counters.
        let (queue, consumers) = if config.strategies.iter().any(|s| s.seats_only()) {
            let queue = RedisQueue::connect(
                &config.redis_url,
                &settings.redis.prefix,
                QueueSettings::default(),
            )
            .await
            .with_context(|| format!("connecting the seat queue at {}", config.redis_url))?;
            let applier = SeatRequestApplier::new(infra.ports(), settings.policy)
                .with_options(ApplierOptions::default())
                .with_observer(concert_app::strategies::QUEUE, counts.clone());
            let consumers = queue.start_consumers(Arc::new(applier));
            let adapter = QueueAdapter {
                queue: Arc::new(queue),
                reply: Duration::from_secs(60),
            };
            (Some(adapter), Some(consumers))
        } else {
            (None, None)
        };
        let adapters = Adapters {
            local: local.clone(),
            redis: Some(redis.clone()),
            redlock: Some(redlock.clone()),
            relay: config.local_queue,
            lock_options: LockOptions {
                lease: settings.locks.lease,
                wait: settings.locks.wait,
                watchdog: true,
            },
            queue,
        };
        let checker = services_for(
            &infra,
            &adapters,
            &settings,
            StrategyName::named("atomic"),
            None,
        )?;
        Ok(LabEnv {
            url,
            db: infra.db.clone(),
            sql,
            redis,
            local,
            counts,
            checker,
            infra,
            adapters,
            settings,
            consumers,
        })
    }

    /// Use cases whose every operation runs under `strategy`, reporting to
    /// [`LabEnv::counts`].
    pub fn services(&self, strategy: StrategyName) -> anyhow::Result<Services> {
        services_for(
            &self.infra,
            &self.adapters,
            &self.settings,
            strategy,
            Some(self.counts.clone()),
        )
    }

    /// The lab's wiring (store, event ports), as the app builds it.
    pub fn infra(&self) -> &Infrastructure {
        &self.infra
    }

    /// The settings the lab's services run with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counters of the lock adapter `strategy` uses, if it takes one.
    pub fn lock_stats(&self, strategy: StrategyName) -> Option<LockStats> {
        match strategy.lock_at()? {
            LockAt::Process => Some(self.local.stats()),
            LockAt::Redis => Some(self.redis.stats()),
            LockAt::RedLock => self.adapters.redlock.as_ref().map(RedLock::stats),
        }
    }

    /// The Redis key prefix of this run.
    pub fn redis_prefix(&self) -> String {
        self.redis.prefix()
    }

    /// Drops the lab database and the lab's Redis keys.
    pub async fn destroy(self) {
        if let Some(consumers) = self.consumers {
            consumers.stop().await;
        }
        self.sql.close();
        self.db.close();
        // guards dropped or given up during the run are cleaned up in the
        // background: let that finish first, so nothing comes back after
        // the purge
        if !self.redis.settle(Duration::from_secs(5)).await {
            tracing::warn!("the lock clean-up was still busy after 5 s");
        }
        if let Err(e) = self.redis.purge().await {
            tracing::warn!(error = %e, "could not delete the lab's Redis keys");
        }
        if let Some(redlock) = &self.adapters.redlock
            && let Err(e) = redlock.purge().await
        {
            tracing::warn!(error = %e, "could not delete the lab's RedLock keys");
        }
        // the event streams of the relay and seat-map experiments
        let prefix = &self.settings.redis.prefix;
        for prefix in [prefix.clone(), format!("{prefix}-http")] {
            let streams = concert_redis::RedisStreams::new(
                self.settings.redis.url.expose_secret(),
                &prefix,
                concert_redis::StreamSettings::default(),
            );
            if let Ok(streams) = streams
                && let Err(e) = streams.purge().await
            {
                tracing::warn!(error = %e, "could not delete the lab's event streams");
            }
            if prefix != self.settings.redis.prefix
                && let Ok(locks) = RedisLocks::connect_lazy(
                    self.settings.redis.url.expose_secret(),
                    &prefix,
                    RedisLockSettings::default(),
                )
                .await
                && let Err(e) = locks.purge().await
            {
                tracing::warn!(error = %e, "could not delete the lab servers' Redis keys");
            }
        }
        if let Err(e) = concert_mysql::drop_database(&self.url).await {
            tracing::warn!(error = %e, "could not drop the lab database");
        }
    }
}

fn services_for(
    infra: &Infrastructure,
    adapters: &Adapters,
    settings: &Settings,
    strategy: StrategyName,
    counts: Option<Arc<Counts>>,
) -> anyhow::Result<Services> {
    let control = |op_strategy: StrategyName| -> anyhow::Result<concert_domain::Control> {
        let control = op_strategy.build(adapters)?;
        Ok(match &counts {
            Some(c) => control.with_observer(c.clone()),
            None => control,
        })
    };
    // A seat-only strategy (`queue`) leaves the point operations to the
    // shipped defaults.
    let defaults = Strategies::default();
    let or_default = |default: StrategyName| {
        if strategy.seats_only() {
            default
        } else {
            strategy
        }
    };
    Ok(Services::new(
        infra.ports(),
        Controls {
            seats: control(strategy)?,
            charge: control(or_default(defaults.charge))?,
            spend: control(or_default(defaults.spend))?,
        },
        settings.policy,
    ))
}

/// Opens every pooled connection before anything is timed, so the first
/// measured row does not pay for connection set-up.
async fn warm_up(db: &Db, connections: usize) -> anyhow::Result<()> {
    let pings: Vec<_> = (0..connections)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.ping().await })
        })
        .collect();
    for ping in pings {
        ping.await.context("warm-up task panicked")??;
    }
    Ok(())
}

/// Databases 1, 2 and 3 of the Redis at `url` (whose own database, if it
/// names one, is replaced).
pub fn redlock_urls(url: &str) -> Vec<String> {
    let base = url.trim_end_matches('/');
    let base = match base.rsplit_once('/') {
        Some((head, db))
            if !db.is_empty() && db.chars().all(|c| c.is_ascii_digit()) && !head.ends_with('/') =>
        {
            head
        }
        _ => base,
    };
    (1..=3).map(|db| format!("{base}/{db}")).collect()
}

#[cfg(test)]
mod tests {
    use super::redlock_urls;

    #[test]
    fn redlock_urls_are_databases_one_to_three() {
        assert_eq!(
            redlock_urls("redis://127.0.0.1:6379"),
            [
                "redis://127.0.0.1:6379/1",
                "redis://127.0.0.1:6379/2",
                "redis://127.0.0.1:6379/3"
            ]
        );
        assert_eq!(redlock_urls("redis://h:1/0")[2], "redis://h:1/3");
        assert_eq!(redlock_urls("redis://h:1/")[0], "redis://h:1/1");
    }
}
