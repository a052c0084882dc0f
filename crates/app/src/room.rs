//! The waiting room's settings and wiring: which adapter keeps the rooms.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `APP_WAITING_ROOM` | `off` | `on`: reservation and payment need an admission to the concert's room |
//! | `APP_WAITING_ROOM_ACTIVE_LIMIT` | `100` | users admitted at once per concert |
//! | `APP_WAITING_ROOM_ADMISSION_SECONDS` | `600` | how long an admission lasts |
//! | `APP_WAITING_ROOM_IDLE_SECONDS` | `60` | a waiting entry not polled this long loses its place |
//! | `APP_WAITING_ROOM_STORE` | `auto` | `redis`, `local` (in process), or `auto`: Redis when a Redis strategy is configured, else in process |
//!
//! `auto` follows the deployment the strategies describe: a Redis strategy
//! means Redis is there (and usually several instances), so the room lives
//! in Redis and is shared; without one, the service is one instance that
//! never talks to Redis, and the room lives in its process (a warning is
//! logged: several such instances would each admit their own `limit`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use concert_domain::{RoomRules, WaitingRoom};
use concert_http::Readiness;
use concert_inprocess::LocalWaitingRoom;
use concert_redis::{RedisLockSettings, RedisWaitingRoom};
use secrecy::ExposeSecret;

use crate::Settings;

/// Where the rooms are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomStore {
    /// Redis when a Redis strategy is configured, else in process.
    Auto,
    Redis,
    Local,
}

/// The waiting room settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    /// `APP_WAITING_ROOM`
    pub on: bool,
    /// `APP_WAITING_ROOM_STORE`
    pub store: RoomStore,
    /// `APP_WAITING_ROOM_ACTIVE_LIMIT`, `APP_WAITING_ROOM_ADMISSION_SECONDS`,
    /// `APP_WAITING_ROOM_IDLE_SECONDS`
    pub rules: RoomRules,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            on: false,
            store: RoomStore::Auto,
            rules: RoomRules::default(),
        }
    }
}

impl RoomSettings {
    /// Reads the `APP_WAITING_ROOM*` variables (an empty value counts as
    /// unset), naming the variable in every error.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let defaults = RoomRules::default();
        let number = |name: &str, default: u64| -> anyhow::Result<u64> {
            match get(name) {
                None => Ok(default),
                Some(raw) => {
                    let value: u64 = raw
                        .trim()
                        .parse()
                        .with_context(|| format!("invalid {name}={raw:?}: not a whole number"))?;
                    if value == 0 {
                        bail!("{name} must be at least 1");
                    }
                    Ok(value)
                }
            }
        };
        let on = match get("APP_WAITING_ROOM").map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "on" => true,
            Some(v) if v == "off" => false,
            Some(v) => bail!("invalid APP_WAITING_ROOM={v:?}; valid: on, off"),
        };
        let store = match get("APP_WAITING_ROOM_STORE").map(|v| v.trim().to_ascii_lowercase()) {
            None => RoomStore::Auto,
            Some(v) if v == "auto" => RoomStore::Auto,
            Some(v) if v == "redis" => RoomStore::Redis,
            Some(v) if v == "local" => RoomStore::Local,
            Some(v) => bail!("invalid APP_WAITING_ROOM_STORE={v:?}; valid: auto, redis, local"),
        };
        let limit = number(
            "APP_WAITING_ROOM_ACTIVE_LIMIT",
            u64::from(defaults.active_limit),
        )?;
        let rules = RoomRules {
            active_limit: u32::try_from(limit)
                .context("APP_WAITING_ROOM_ACTIVE_LIMIT is too large")?,
            admission: Duration::from_secs(number(
                "APP_WAITING_ROOM_ADMISSION_SECONDS",
                defaults.admission.as_secs(),
            )?),
            idle: Duration::from_secs(number(
                "APP_WAITING_ROOM_IDLE_SECONDS",
                defaults.idle.as_secs(),
            )?),
        };
        if rules.idle < Duration::from_secs(2) {
            // clients are told to poll at least every second, and at most
            // every half of the idle time
            bail!("APP_WAITING_ROOM_IDLE_SECONDS must be at least 2");
        }
        Ok(Self { on, store, rules })
    }

    /// True when the room is on and kept in Redis with these strategies.
    pub fn uses_redis(&self, redis_strategy: bool) -> bool {
        self.on
            && match self.store {
                RoomStore::Auto => redis_strategy,
                RoomStore::Redis => true,
                RoomStore::Local => false,
            }
    }
}

/// The waiting room adapter of one instance.
#[derive(Clone, Debug)]
pub enum Room {
    Redis(RedisWaitingRoom),
    Local(LocalWaitingRoom),
}

impl Room {
    /// The configured room, `None` when it is off. The Redis room connects
    /// lazily (a Redis that is down makes room calls 503, not the start
    /// fail).
    pub fn build(settings: &Settings) -> anyhow::Result<Option<Room>> {
        let room = &settings.waiting_room;
        if !room.on {
            return Ok(None);
        }
        if room.uses_redis(settings.strategies.need_redis()) {
            let adapter = RedisWaitingRoom::new(
                settings.redis.url.expose_secret(),
                &settings.redis.prefix,
                room.rules,
                RedisLockSettings::default(),
            )
            .context("configuring the Redis waiting room")?;
            return Ok(Some(Room::Redis(adapter)));
        }
        if room.store == RoomStore::Auto {
            tracing::warn!(
                "the waiting room is kept in this process (no Redis strategy is configured): \
                 run one instance only, or set APP_WAITING_ROOM_STORE=redis"
            );
        }
        Ok(Some(Room::Local(LocalWaitingRoom::new(room.rules))))
    }

    /// The port.
    pub fn port(&self) -> Arc<dyn WaitingRoom> {
        match self {
            Room::Redis(r) => Arc::new(r.clone()),
            Room::Local(r) => Arc::new(r.clone()),
        }
    }

    /// `redis` or `local`, for logs.
    pub fn store_name(&self) -> &'static str {
        match self {
            Room::Redis(_) => "redis",
            Room::Local(_) => "local",
        }
    }
}

/// Readiness of the Redis room (when no Redis strategy already checks
/// Redis).
pub struct RoomReady(pub RedisWaitingRoom);

#[async_trait]
impl Readiness for RoomReady {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.0.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> anyhow::Result<RoomSettings> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RoomSettings::from_lookup(&|name| map.get(name).cloned())
    }

    #[test]
    fn off_by_default_with_the_contract_defaults() {
        let s = parse(&[]).unwrap();
        assert_eq!(s, RoomSettings::default());
        assert!(!s.on);
        assert_eq!(s.rules.active_limit, 100);
        assert_eq!(s.rules.admission, Duration::from_secs(600));
        assert_eq!(s.rules.idle, Duration::from_secs(60));
        assert!(!s.uses_redis(true));
    }

    #[test]
    fn values_override_and_the_store_follows_the_strategies() {
        let s = parse(&[
            ("APP_WAITING_ROOM", "ON"),
            ("APP_WAITING_ROOM_ACTIVE_LIMIT", "3"),
            ("APP_WAITING_ROOM_ADMISSION_SECONDS", "30"),
            ("APP_WAITING_ROOM_IDLE_SECONDS", "10"),
        ])
        .unwrap();
        assert!(s.on);
        assert_eq!(
            s.rules,
            RoomRules {
                active_limit: 3,
                admission: Duration::from_secs(30),
                idle: Duration::from_secs(10),
            }
        );
        assert!(s.uses_redis(true));
        assert!(!s.uses_redis(false));
        let forced = parse(&[
            ("APP_WAITING_ROOM", "on"),
            ("APP_WAITING_ROOM_STORE", "redis"),
        ])
        .unwrap();
        assert!(forced.uses_redis(false));
        let local = parse(&[
            ("APP_WAITING_ROOM", "on"),
            ("APP_WAITING_ROOM_STORE", "local"),
        ])
        .unwrap();
        assert!(!local.uses_redis(true));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("APP_WAITING_ROOM", "yes"),
            ("APP_WAITING_ROOM_STORE", "memcached"),
            ("APP_WAITING_ROOM_ACTIVE_LIMIT", "0"),
            ("APP_WAITING_ROOM_ACTIVE_LIMIT", "ten"),
            ("APP_WAITING_ROOM_ACTIVE_LIMIT", "99999999999"),
            ("APP_WAITING_ROOM_ADMISSION_SECONDS", "0"),
            ("APP_WAITING_ROOM_IDLE_SECONDS", "-5"),
            ("APP_WAITING_ROOM_IDLE_SECONDS", "1"),
        ] {
            let err = parse(&[(name, value)]).unwrap_err();
            assert!(format!("{err:#}").contains(name), "{name}={value}: {err:#}");
        }
    }
}
