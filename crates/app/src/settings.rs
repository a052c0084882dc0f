//! Typed settings from the environment (the operating contract is in
//! README.md). Every value has a default; a value that does not parse stops
//! start-up with a message naming the variable. Secrets are
//! [`SecretString`]s: they never print.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use concert_domain::Policy;
use concert_mysql::DatabaseUrl;
use secrecy::{ExposeSecret, SecretString};

use crate::room::RoomSettings;
use crate::strategies::StrategyName;

/// The development JWT secret used when `APP_JWT_SECRET` is not set (only
/// allowed on a loopback address).
const DEV_JWT_SECRET: &str = "concert-dev-secret-do-not-use-in-production";

/// Shortest secret accepted on a non-loopback address.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub strategies: Strategies,
    pub locks: LockSettings,
    pub queue: QueueSettings,
    pub policy: Policy,
    /// `APP_WAITING_ROOM*` (see [`crate::room`]).
    pub waiting_room: RoomSettings,
    /// `APP_SWEEP_SECONDS`: how often stale holds are expired (0 disables).
    pub sweep_interval: Duration,
    /// `APP_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// The outbox relay, the event consumers, the seat-map cache.
    pub events: crate::events::EventSettings,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `APP_HOST`
    pub host: String,
    /// `APP_PORT` (0 picks a free port)
    pub port: u16,
    /// `APP_WORKERS`: worker threads (default: one per core).
    pub workers: Option<usize>,
    /// `APP_CORS_ORIGINS`: comma-separated origins a browser front end may
    /// call from (empty: no CORS).
    pub cors_origins: Vec<String>,
    /// `APP_SHUTDOWN_SECONDS`: how long a stop waits for accepted requests.
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL` (its password never prints: see [`DatabaseUrl`]).
    pub url: DatabaseUrl,
    /// `APP_DB_POOL_SIZE`
    pub pool_size: usize,
    /// `APP_DB_WAIT_MS`: how long a request waits for a pooled connection.
    pub wait: Duration,
    /// `APP_DB_STATEMENT_TIMEOUT_MS`: the server-side limit of every
    /// statement (and row-lock wait).
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `REDIS_URL` (used only when something configured needs Redis).
    pub url: SecretString,
    /// `APP_REDIS_PREFIX`: namespace of every Redis key this instance uses.
    pub prefix: String,
    /// `APP_REDLOCK_URLS`: comma-separated URLs of the independent Redis
    /// masters of `redis-redlock` (at least 3; empty: no RedLock).
    pub redlock_urls: Vec<SecretString>,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `APP_JWT_SECRET`
    pub secret: SecretString,
    /// True when `APP_JWT_SECRET` was not set and the development secret is
    /// used.
    pub secret_is_default: bool,
    /// `APP_JWT_ISSUER`: required `iss` when set.
    pub issuer: Option<String>,
    /// `APP_JWT_AUDIENCE`: required `aud` when set.
    pub audience: Option<String>,
}

/// The strategy of each contended operation.
#[derive(Debug, Clone, Copy)]
pub struct Strategies {
    /// `APP_SEAT_STRATEGY`
    pub seats: StrategyName,
    /// `APP_CHARGE_STRATEGY`
    pub charge: StrategyName,
    /// `APP_USE_STRATEGY` (point use, payment, refund)
    pub spend: StrategyName,
}

impl Default for Strategies {
    /// The shipped defaults.
    fn default() -> Self {
        Self {
            seats: StrategyName::named("redis-pubsub"),
            charge: StrategyName::named("optimistic"),
            spend: StrategyName::named("pessimistic"),
        }
    }
}

impl Strategies {
    pub fn all(&self) -> [StrategyName; 3] {
        [self.seats, self.charge, self.spend]
    }

    /// True when a configured strategy needs Redis.
    pub fn need_redis(&self) -> bool {
        self.all().iter().any(|s| s.needs_redis())
    }

    /// True when seat holds go through the queue (its consumers then run
    /// in this instance).
    pub fn need_queue(&self) -> bool {
        self.seats.seats_only()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LockSettings {
    /// `APP_LOCK_LEASE_MS`: lock lease (renewed by the watchdog while held).
    pub lease: Duration,
    /// `APP_LOCK_WAIT_MS`: lock wait budget, past which `lock-timeout`
    /// answers.
    pub wait: Duration,
    /// `APP_LOCK_LOCAL_QUEUE`: queue a process's own requests for a key in
    /// memory, so only one of them at a time contends in Redis, and hand
    /// the Redis lock from one to the next without a round trip.
    pub local_queue: bool,
}

/// The `queue` seat strategy's settings.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    /// `APP_QUEUE_REPLY_MS`: how long a seat request waits for its outcome
    /// before answering 202 with its request id (0: always 202).
    pub reply: Duration,
    /// `APP_QUEUE_PARTITIONS`: partition streams (the same on every
    /// instance).
    pub partitions: u32,
    /// `APP_QUEUE_LEASE_MS`: a partition lease; a dead holder is replaced
    /// within it.
    pub lease: Duration,
    /// `APP_QUEUE_MEMORY_MS`: how long a partition's applier answers "seat
    /// taken" from its snapshot of a schedule before reading it again.
    pub memory: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; valid: text, json")),
        }
    }
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
        let var = Vars(&get);
        let defaults = Strategies::default();
        let secret = get("APP_JWT_SECRET");
        let database_url =
            get("DATABASE_URL").unwrap_or_else(|| "mysql://root@127.0.0.1:3306/concert".into());
        let settings = Settings {
            http: HttpSettings {
                host: get("APP_HOST").unwrap_or_else(|| "127.0.0.1".into()),
                port: var.parse("APP_PORT", 8080)?,
                workers: get("APP_WORKERS")
                    .map(|_| var.parse("APP_WORKERS", 1usize))
                    .transpose()?,
                cors_origins: get("APP_CORS_ORIGINS")
                    .map(|raw| {
                        raw.split(',')
                            .map(|o| o.trim().trim_end_matches('/').to_owned())
                            .filter(|o| !o.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                shutdown_timeout: Duration::from_secs(var.parse("APP_SHUTDOWN_SECONDS", 10)?),
            },
            database: DatabaseSettings {
                url: DatabaseUrl::parse(&database_url).context("invalid DATABASE_URL")?,
                pool_size: var.parse("APP_DB_POOL_SIZE", 32)?,
                wait: var.millis("APP_DB_WAIT_MS", 2_000)?,
                statement_timeout: var.millis("APP_DB_STATEMENT_TIMEOUT_MS", 5_000)?,
            },
            redis: RedisSettings {
                url: SecretString::from(
                    get("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
                ),
                prefix: get("APP_REDIS_PREFIX").unwrap_or_else(|| "concert".into()),
                redlock_urls: get("APP_REDLOCK_URLS")
                    .map(|raw| {
                        raw.split(',')
                            .map(str::trim)
                            .filter(|u| !u.is_empty())
                            .map(|u| SecretString::from(u.to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            auth: AuthSettings {
                secret_is_default: secret.is_none(),
                secret: SecretString::from(secret.unwrap_or_else(|| DEV_JWT_SECRET.into())),
                issuer: get("APP_JWT_ISSUER"),
                audience: get("APP_JWT_AUDIENCE"),
            },
            strategies: Strategies {
                seats: var.parse("APP_SEAT_STRATEGY", defaults.seats)?,
                charge: var.parse("APP_CHARGE_STRATEGY", defaults.charge)?,
                spend: var.parse("APP_USE_STRATEGY", defaults.spend)?,
            },
            locks: LockSettings {
                lease: var.millis("APP_LOCK_LEASE_MS", 10_000)?,
                wait: var.millis("APP_LOCK_WAIT_MS", 5_000)?,
                local_queue: var.parse("APP_LOCK_LOCAL_QUEUE", true)?,
            },
            queue: QueueSettings {
                reply: var.millis("APP_QUEUE_REPLY_MS", 2_000)?,
                partitions: var.parse("APP_QUEUE_PARTITIONS", 8)?,
                lease: var.millis("APP_QUEUE_LEASE_MS", 3_000)?,
                memory: var.millis("APP_QUEUE_MEMORY_MS", 1_000)?,
            },
            policy: Policy {
                hold: Duration::from_secs(var.parse("APP_HOLD_SECONDS", 300)?),
                max_holds_per_user: var.parse("APP_MAX_HOLDS_PER_USER", 0)?,
                max_seats_per_request: var.parse("APP_MAX_SEATS_PER_REQUEST", 4)?,
                refund_cutoff: Duration::from_secs(
                    3600 * var.parse::<u64>("APP_REFUND_CUTOFF_HOURS", 24)?,
                ),
            },
            waiting_room: RoomSettings::from_lookup(&get)?,
            sweep_interval: Duration::from_secs(var.parse("APP_SWEEP_SECONDS", 30)?),
            log_format: var.parse("APP_LOG_FORMAT", LogFormat::Text)?,
            events: crate::events::EventSettings::from_lookup(&get)?,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.policy.hold.is_zero() {
            bail!("APP_HOLD_SECONDS must be at least 1");
        }
        if self.policy.max_seats_per_request == 0 {
            bail!("APP_MAX_SEATS_PER_REQUEST must be at least 1");
        }
        if self.database.pool_size == 0 {
            bail!("APP_DB_POOL_SIZE must be at least 1");
        }
        if self.database.statement_timeout < Duration::from_secs(1) {
            bail!("APP_DB_STATEMENT_TIMEOUT_MS must be at least 1000");
        }
        if self.locks.lease.is_zero() {
            bail!("APP_LOCK_LEASE_MS must be at least 1");
        }
        if self.http.workers == Some(0) {
            bail!("APP_WORKERS must be at least 1");
        }
        if !(1..=1024).contains(&self.queue.partitions) {
            bail!("APP_QUEUE_PARTITIONS must be between 1 and 1024");
        }
        if self.queue.lease < Duration::from_millis(100) {
            bail!("APP_QUEUE_LEASE_MS must be at least 100");
        }
        for (name, strategy) in [
            ("APP_CHARGE_STRATEGY", self.strategies.charge),
            ("APP_USE_STRATEGY", self.strategies.spend),
        ] {
            if strategy.seats_only() {
                bail!(
                    "{name}={strategy}: {strategy} applies to seat reservation only (APP_SEAT_STRATEGY)"
                );
            }
        }
        if self.redis.prefix.contains(['{', '}']) {
            bail!("APP_REDIS_PREFIX must not contain '{{' or '}}'");
        }
        Ok(())
    }

    /// The checks that only apply to a server about to listen: on an
    /// address other than loopback, a real secret of at least
    /// [`MIN_SECRET_BYTES`] is required.
    pub fn check_serving(&self) -> anyhow::Result<()> {
        if self.http.binds_loopback() {
            return Ok(());
        }
        let secret = self.auth.secret.expose_secret();
        if self.auth.secret_is_default || secret.len() < MIN_SECRET_BYTES {
            bail!(
                "refusing to listen on {} with {}: set APP_JWT_SECRET to a random secret of at \
                 least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), or bind \
                 APP_HOST=127.0.0.1 for local use",
                self.http.host,
                if self.auth.secret_is_default {
                    "the development JWT secret".to_owned()
                } else {
                    format!("a {}-byte JWT secret", secret.len())
                }
            );
        }
        Ok(())
    }
}

impl HttpSettings {
    /// True when the host is a loopback address (or `localhost`).
    pub fn binds_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Reads typed values, naming the variable in every error.
struct Vars<'a, G: Fn(&str) -> Option<String>>(&'a G);

impl<G: Fn(&str) -> Option<String>> Vars<'_, G> {
    fn parse<T>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match (self.0)(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("invalid {name}={raw:?}")),
        }
    }

    fn millis(&self, name: &str, default: u64) -> anyhow::Result<Duration> {
        Ok(Duration::from_millis(self.parse(name, default)?))
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
        assert_eq!(s.database.url.name(), "concert");
        assert_eq!(
            s.database.url.redacted(),
            "mysql://root@127.0.0.1:3306/concert"
        );
        assert_eq!(s.redis.url.expose_secret(), "redis://127.0.0.1:6379");
        assert_eq!((s.http.host.as_str(), s.http.port), ("127.0.0.1", 8080));
        assert_eq!(s.policy.hold, Duration::from_secs(300));
        assert_eq!(s.policy.max_holds_per_user, 0);
        assert_eq!(s.policy.max_seats_per_request, 4);
        assert_eq!(s.policy.refund_cutoff, Duration::from_secs(24 * 3600));
        assert_eq!(s.strategies.seats.as_str(), "redis-pubsub");
        assert_eq!(s.strategies.charge.as_str(), "optimistic");
        assert_eq!(s.strategies.spend.as_str(), "pessimistic");
        assert!(s.auth.secret_is_default);
        assert!(s.strategies.need_redis());
        assert!(s.locks.local_queue);
        assert!(s.http.cors_origins.is_empty());
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn values_override_defaults_and_secrets_never_print() {
        let s = from(&[
            ("APP_PORT", "0"),
            ("APP_JWT_SECRET", "s3cret"),
            ("DATABASE_URL", "mysql://app:pa55word@db:3306/shop"),
            ("REDIS_URL", "redis://:hunter2@cache:6379"),
            ("APP_SEAT_STRATEGY", "pessimistic"),
            ("APP_USE_STRATEGY", "atomic"),
            ("APP_HOLD_SECONDS", "2"),
            ("APP_WORKERS", "2"),
            ("APP_MAX_HOLDS_PER_USER", "4"),
            ("APP_CORS_ORIGINS", "https://a.example, https://b.example/"),
            ("APP_LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(s.http.port, 0);
        assert_eq!(s.auth.secret.expose_secret(), "s3cret");
        assert!(!s.auth.secret_is_default);
        assert_eq!(s.policy.hold, Duration::from_secs(2));
        assert_eq!(s.http.workers, Some(2));
        assert_eq!(s.policy.max_holds_per_user, 4);
        assert!(!s.strategies.need_redis());
        assert_eq!(
            s.http.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(s.log_format, LogFormat::Json);
        let printed = format!("{s:?}");
        for secret in ["s3cret", "pa55word", "hunter2"] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
    }

    #[test]
    fn the_queue_applies_to_seats_only_and_its_settings_parse() {
        let s = from(&[]).unwrap();
        assert_eq!(
            (
                s.queue.reply,
                s.queue.partitions,
                s.queue.lease,
                s.queue.memory
            ),
            (
                Duration::from_millis(2_000),
                8,
                Duration::from_millis(3_000),
                Duration::from_millis(1_000)
            )
        );
        assert!(!s.strategies.need_queue());
        let s = from(&[
            ("APP_SEAT_STRATEGY", "queue"),
            ("APP_QUEUE_REPLY_MS", "0"),
            ("APP_QUEUE_PARTITIONS", "16"),
        ])
        .unwrap();
        assert!(s.strategies.need_queue() && s.strategies.need_redis());
        assert_eq!((s.queue.reply, s.queue.partitions), (Duration::ZERO, 16));
        for (name, value) in [
            ("APP_CHARGE_STRATEGY", "queue"),
            ("APP_USE_STRATEGY", "queue"),
            ("APP_QUEUE_PARTITIONS", "0"),
            ("APP_QUEUE_LEASE_MS", "10"),
            ("APP_QUEUE_REPLY_MS", "soon"),
        ] {
            let err = from(&[(name, value)]).unwrap_err();
            assert!(format!("{err:#}").contains(name), "{name}: {err:#}");
        }
    }

    #[test]
    fn an_unknown_strategy_lists_the_valid_ones() {
        let err = from(&[("APP_SEAT_STRATEGY", "redlock")]).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("APP_SEAT_STRATEGY"), "{message}");
        for s in crate::strategies::REGISTRY {
            assert!(message.contains(s.name), "{message}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = from(&[("APP_PORT", "eighty")]).unwrap_err();
        assert!(format!("{err:#}").contains("APP_PORT"));
        assert!(from(&[("APP_HOLD_SECONDS", "0")]).is_err());
        assert!(from(&[("APP_WORKERS", "0")]).is_err());
        assert!(from(&[("APP_LOCK_LOCAL_QUEUE", "maybe")]).is_err());
        assert!(from(&[("APP_LOG_FORMAT", "xml")]).is_err());
        assert!(from(&[("APP_REDIS_PREFIX", "a{b")]).is_err());
        assert!(from(&[("DATABASE_URL", "postgres://h/db")]).is_err());
        assert!(
            !from(&[("APP_LOCK_LOCAL_QUEUE", "false")])
                .unwrap()
                .locks
                .local_queue
        );
    }

    #[test]
    fn a_public_address_needs_a_real_secret() {
        assert!(from(&[]).unwrap().check_serving().is_ok());
        assert!(
            from(&[("APP_HOST", "::1")])
                .unwrap()
                .check_serving()
                .is_ok()
        );
        let err = from(&[("APP_HOST", "0.0.0.0")])
            .unwrap()
            .check_serving()
            .unwrap_err();
        assert!(err.to_string().contains("APP_JWT_SECRET"), "{err}");
        assert!(
            from(&[("APP_HOST", "0.0.0.0"), ("APP_JWT_SECRET", "short")])
                .unwrap()
                .check_serving()
                .is_err()
        );
        let long = "k".repeat(MIN_SECRET_BYTES);
        assert!(
            from(&[("APP_HOST", "0.0.0.0"), ("APP_JWT_SECRET", &long)])
                .unwrap()
                .check_serving()
                .is_ok()
        );
    }
}
