//! Typed settings from the environment (see the operating contract in
//! README.md). Every value has a default except where noted; a value that
//! does not parse stops start-up with a message naming the variable.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use concert_domain::Strategy;

/// The development JWT secret used when `APP_JWT_SECRET` is not set.
const DEV_JWT_SECRET: &str = "concert-dev-secret-do-not-use-in-production";

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`
    pub database_url: String,
    /// `REDIS_URL` (used only when a Redis strategy is configured)
    pub redis_url: String,
    /// `APP_HOST`
    pub host: String,
    /// `APP_PORT` (0 picks a free port)
    pub port: u16,
    /// `APP_JWT_SECRET`
    pub jwt_secret: Secret,
    /// True when `APP_JWT_SECRET` was not set and the development secret is used.
    pub jwt_secret_is_default: bool,
    /// `APP_HOLD_SECONDS`
    pub hold: Duration,
    /// `APP_SEAT_STRATEGY`
    pub seat_strategy: Strategy,
    /// `APP_CHARGE_STRATEGY`
    pub charge_strategy: Strategy,
    /// `APP_USE_STRATEGY` (point use and payment)
    pub use_strategy: Strategy,
    /// `APP_REDIS_PREFIX`: namespace of every Redis key this instance uses.
    pub redis_prefix: String,
    /// `APP_SWEEP_SECONDS`: how often stale holds are expired (0 disables).
    pub sweep_interval: Duration,
    /// `APP_WORKERS`: HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// `APP_DB_POOL_SIZE`
    pub db_pool_size: usize,
    /// `APP_DB_WAIT_MS`: how long a request waits for a pooled connection.
    pub db_wait: Duration,
    /// `APP_LOCK_LEASE_MS`: lock lease (renewed by the watchdog while held).
    pub lock_lease: Duration,
    /// `APP_LOCK_WAIT_MS`: lock wait budget, past which `lock-timeout` answers.
    pub lock_wait: Duration,
    /// `APP_LOCK_LOCAL_QUEUE`: queue a process's own requests for a key
    /// in memory, so only one of them at a time contends in Redis.
    pub lock_local_queue: bool,
}

impl Settings {
    /// Reads `.env` (if present; real environment variables win), then the
    /// environment.
    pub fn from_env() -> anyhow::Result<Settings> {
        // A missing .env is normal; a malformed one is worth a warning.
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            eprintln!("warning: ignoring .env: {e}");
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let jwt = get("APP_JWT_SECRET");
        let settings = Settings {
            database_url: get("DATABASE_URL")
                .unwrap_or_else(|| "mysql://root@127.0.0.1:3306/concert".into()),
            redis_url: get("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            host: get("APP_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: parse(&get, "APP_PORT", 8080)?,
            jwt_secret_is_default: jwt.is_none(),
            jwt_secret: Secret::new(jwt.unwrap_or_else(|| DEV_JWT_SECRET.into())),
            hold: Duration::from_secs(parse(&get, "APP_HOLD_SECONDS", 300)?),
            seat_strategy: parse(&get, "APP_SEAT_STRATEGY", Strategy::RedisPubSub)?,
            charge_strategy: parse(&get, "APP_CHARGE_STRATEGY", Strategy::Optimistic)?,
            use_strategy: parse(&get, "APP_USE_STRATEGY", Strategy::Pessimistic)?,
            redis_prefix: get("APP_REDIS_PREFIX").unwrap_or_else(|| "concert".into()),
            sweep_interval: Duration::from_secs(parse(&get, "APP_SWEEP_SECONDS", 30)?),
            workers: get("APP_WORKERS")
                .map(|_| parse(&get, "APP_WORKERS", 1usize))
                .transpose()?,
            db_pool_size: parse(&get, "APP_DB_POOL_SIZE", 32)?,
            db_wait: Duration::from_millis(parse(&get, "APP_DB_WAIT_MS", 10_000)?),
            lock_lease: Duration::from_millis(parse(&get, "APP_LOCK_LEASE_MS", 10_000)?),
            lock_wait: Duration::from_millis(parse(&get, "APP_LOCK_WAIT_MS", 5_000)?),
            lock_local_queue: parse(&get, "APP_LOCK_LOCAL_QUEUE", true)?,
        };
        if settings.hold.is_zero() {
            bail!("APP_HOLD_SECONDS must be at least 1");
        }
        if settings.db_pool_size == 0 {
            bail!("APP_DB_POOL_SIZE must be at least 1");
        }
        if settings.lock_lease.is_zero() {
            bail!("APP_LOCK_LEASE_MS must be at least 1");
        }
        if settings.workers == Some(0) {
            bail!("APP_WORKERS must be at least 1");
        }
        Ok(settings)
    }

    /// Strategies of every operation, for wiring and health checks.
    pub fn strategies(&self) -> [Strategy; 3] {
        [self.seat_strategy, self.charge_strategy, self.use_strategy]
    }

    /// True when any operation uses a Redis lock (and so needs Redis).
    pub fn needs_redis(&self) -> bool {
        self.strategies().iter().any(|s| s.uses_redis())
    }
}

fn parse<T>(get: &impl Fn(&str) -> Option<String>, name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: fmt::Display,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_operating_contract() {
        let s = from(&[]).unwrap();
        assert_eq!(s.database_url, "mysql://root@127.0.0.1:3306/concert");
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 8080));
        assert_eq!(s.hold, Duration::from_secs(300));
        assert_eq!(s.seat_strategy, Strategy::RedisPubSub);
        assert_eq!(s.charge_strategy, Strategy::Optimistic);
        assert_eq!(s.use_strategy, Strategy::Pessimistic);
        assert!(s.jwt_secret_is_default);
        assert!(s.needs_redis());
        assert!(s.lock_local_queue);
    }

    #[test]
    fn values_override_defaults() {
        let s = from(&[
            ("APP_PORT", "0"),
            ("APP_JWT_SECRET", "s3cret"),
            ("APP_SEAT_STRATEGY", "pessimistic"),
            ("APP_USE_STRATEGY", "atomic"),
            ("APP_HOLD_SECONDS", "2"),
            ("APP_WORKERS", "2"),
        ])
        .unwrap();
        assert_eq!(s.port, 0);
        assert_eq!(s.jwt_secret.expose(), "s3cret");
        assert!(!s.jwt_secret_is_default);
        assert_eq!(s.hold, Duration::from_secs(2));
        assert_eq!(s.workers, Some(2));
        assert!(!s.needs_redis());
        assert!(!format!("{s:?}").contains("s3cret"), "secrets never print");
    }

    #[test]
    fn unknown_strategy_lists_the_valid_ones() {
        let err = from(&[("APP_SEAT_STRATEGY", "redlock")]).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("APP_SEAT_STRATEGY"), "{message}");
        for s in Strategy::ALL {
            assert!(message.contains(s.as_str()), "{message}");
        }
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = from(&[("APP_PORT", "eighty")]).unwrap_err();
        assert!(format!("{err:#}").contains("APP_PORT"));
        assert!(from(&[("APP_HOLD_SECONDS", "0")]).is_err());
        assert!(from(&[("APP_WORKERS", "0")]).is_err());
        assert!(from(&[("APP_LOCK_LOCAL_QUEUE", "maybe")]).is_err());
        assert!(
            !from(&[("APP_LOCK_LOCAL_QUEUE", "false")])
                .unwrap()
                .lock_local_queue
        );
    }
}
