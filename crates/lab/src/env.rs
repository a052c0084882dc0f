//! The lab's own world: a fresh database next to `DATABASE_URL`'s, a fresh
//! Redis key prefix, and services wired exactly as the app wires them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use concert_app::{Locks, Services, Settings};
use concert_domain::Strategy;
use concert_mysql::Db;
use concert_redis_lock::{LocalLock, LockStats, RedisLocks};

use crate::config::LabConfig;

pub struct LabEnv {
    pub db: Db,
    pub database_url: String,
    pub locks: Locks,
    pub redis: RedisLocks,
    pub local: Arc<LocalLock>,
    /// Services used only to read balances and history for the exactness
    /// checks (built once).
    pub checker: Services,
    settings: Settings,
}

impl LabEnv {
    pub async fn create(config: &LabConfig) -> anyhow::Result<LabEnv> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database_url = with_database(&config.database_url, &format!("lab_{}", &id[..12]))?;
        concert_mysql::run_migrations(&database_url)
            .await
            .with_context(|| format!("creating the lab database at {database_url}"))?;
        let mut settings = Settings::from_lookup(|_| None)?;
        settings.database_url = database_url.clone();
        settings.redis_url = config.redis_url.clone();
        settings.redis_prefix = format!("lab:{}", &id[..12]);
        settings.db_pool_size = config.db_pool_size;
        settings.lock_wait = Duration::from_secs(30);
        let db = Db::connect(&database_url, concert_app::pool_options(&settings)).await?;
        warm_up(&db, config.db_pool_size).await?;
        let redis = RedisLocks::connect(&settings.redis_url, &settings.redis_prefix)
            .await
            .with_context(|| format!("connecting to Redis at {}", settings.redis_url))?;
        let local = Arc::new(LocalLock::new());
        let locks = Locks::new(local.clone(), Some(redis.clone()), config.local_queue);
        Ok(LabEnv {
            checker: services_for(&settings, Strategy::Atomic, &db, &locks)?,
            db,
            database_url,
            locks,
            redis,
            local,
            settings,
        })
    }

    /// Services whose every operation runs under `strategy`.
    pub fn services(&self, strategy: Strategy) -> anyhow::Result<Services> {
        services_for(&self.settings, strategy, &self.db, &self.locks)
    }

    /// The counters of the lock adapter `strategy` uses.
    pub fn lock_stats(&self, strategy: Strategy) -> Option<LockStats> {
        match strategy.lock_kind()? {
            concert_domain::LockKind::Local => Some(self.local.stats()),
            _ => Some(self.redis.stats()),
        }
    }

    /// Drops the lab database.
    pub async fn destroy(self) {
        if let Err(e) = concert_mysql::drop_database(&self.database_url).await {
            tracing::warn!(error = %e, "could not drop the lab database");
        }
    }
}

fn services_for(
    settings: &Settings,
    strategy: Strategy,
    db: &Db,
    locks: &Locks,
) -> anyhow::Result<Services> {
    let mut settings = settings.clone();
    settings.seat_strategy = strategy;
    settings.charge_strategy = strategy;
    settings.use_strategy = strategy;
    Services::build(&settings, db, locks)
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

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let scheme = url.find("://").context("DATABASE_URL has no scheme")? + 3;
    let base = match url[scheme..].find('/') {
        Some(slash) => &url[..scheme + slash],
        None => url.split('?').next().unwrap_or(url),
    };
    Ok(format!("{base}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/concert", "lab_x").unwrap(),
            "mysql://root@127.0.0.1:3306/lab_x"
        );
        assert_eq!(
            with_database("mysql://u:p@h:1", "lab_x").unwrap(),
            "mysql://u:p@h:1/lab_x"
        );
        assert!(with_database("nonsense", "x").is_err());
    }
}
