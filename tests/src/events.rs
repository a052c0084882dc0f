//! Helpers for the event tests: app instances sharing one database and one
//! Redis prefix (as several instances of one deployment do), the event
//! streams of a prefix, and waiting for the relay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use concert_app::{Application, Overrides, Settings};
use concert_domain::{Clock, Stream, UserId};
use concert_http::{Auth, AuthOptions};
use concert_inprocess::SeatMapCache;
use concert_redis::streams::StreamEntry;
use concert_redis::{RedisStreams, StreamSettings};
use concert_testkit::OutboxEvent;
use tokio::task::JoinHandle;

use crate::clock::ManualClock;
use crate::db::TestDb;
use crate::redis::{purge_prefix, redis_url, test_prefix};

/// What several instances of one deployment share: a database, a Redis
/// prefix, a JWT secret and (in tests) a clock. Dropping it deletes the
/// prefix's keys; the database goes with its [`TestDb`].
pub struct Deployment {
    pub db: TestDb,
    pub prefix: String,
    pub secret: String,
    pub clock: ManualClock,
    pub streams: RedisStreams,
}

impl Deployment {
    pub async fn new() -> Deployment {
        let prefix = test_prefix();
        let streams = RedisStreams::new(&redis_url(), &prefix, StreamSettings::default())
            .expect("stream settings are valid");
        Deployment {
            db: TestDb::new().await,
            prefix,
            secret: format!("secret-{}", uuid::Uuid::new_v4().simple()),
            clock: ManualClock::new(),
            streams,
        }
    }

    /// The settings of one instance: the test defaults (see
    /// `app::spawn_app_with`) plus `extra`.
    pub fn settings(&self, extra: &[(&str, &str)]) -> Settings {
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", self.db.url.as_str().to_owned()),
            ("REDIS_URL", redis_url()),
            ("APP_HOST", "127.0.0.1".to_owned()),
            ("APP_PORT", "0".to_owned()),
            ("APP_JWT_SECRET", self.secret.clone()),
            ("APP_REDIS_PREFIX", self.prefix.clone()),
            ("APP_SWEEP_SECONDS", "0".to_owned()),
            ("APP_WORKERS", "2".to_owned()),
            ("APP_DB_POOL_SIZE", "10".to_owned()),
            ("APP_RELAY_POLL_MS", "10".to_owned()),
        ]);
        vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Settings::from_lookup(|name| vars.get(name).cloned()).expect("test settings are valid")
    }

    /// Starts one more instance with `extra` settings, on the shared clock.
    pub async fn instance(&self, extra: &[(&str, &str)]) -> Instance {
        let settings = self.settings(extra);
        let overrides = Overrides {
            clock: Some(Arc::new(self.clock.clone()) as Arc<dyn Clock>),
        };
        let application = Application::build_with(settings, overrides)
            .await
            .expect("the instance starts");
        let port = application.port();
        let seat_cache = application.events().seat_cache().cloned();
        let relays = application.events().relay_stats().is_some();
        let task = tokio::spawn(async move {
            if let Err(e) = application.run_until_stopped().await {
                eprintln!("test instance stopped with an error: {e:#}");
            }
        });
        Instance {
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            auth: Auth::new(self.secret.as_bytes(), AuthOptions::default()),
            seat_cache,
            relays,
            task,
        }
    }

    /// Waits (at most 30 s) until the outbox holds `count` events, all
    /// published, and returns them in outbox order.
    pub async fn published(&self, count: usize) -> Vec<OutboxEvent> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.db.sql.outbox().await.expect("outbox read");
            if rows.len() == count && rows.iter().all(|r| r.published_at.is_some()) {
                return rows;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} published events, the outbox holds {} ({} unpublished)",
                rows.len(),
                rows.iter().filter(|r| r.published_at.is_none()).count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every entry of every stream, stream by stream.
    pub async fn entries(&self) -> Vec<StreamEntry> {
        let mut all = Vec::new();
        for stream in Stream::ALL {
            all.extend(self.streams.range(stream).await.expect("stream read"));
        }
        all
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        purge_prefix(&redis_url(), &self.prefix);
    }
}

/// One running instance. Dropping it stops it at once.
pub struct Instance {
    pub address: String,
    pub client: reqwest::Client,
    pub auth: Auth,
    pub seat_cache: Option<Arc<SeatMapCache>>,
    /// True when this instance runs a relay.
    pub relays: bool,
    task: JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Instance {
    pub fn token(&self, user: u64) -> String {
        self.auth
            .issue(UserId::from(user), Duration::from_secs(3600), false)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.address))
    }

    pub fn post(&self, user: u64, path: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(self.token(user))
            .json(&body)
    }

    pub fn delete(&self, user: u64, path: &str) -> reqwest::RequestBuilder {
        self.client
            .delete(format!("{}{path}", self.address))
            .bearer_auth(self.token(user))
    }

    /// Waits (at most 10 s) until the seat-map cache is fed by events.
    pub async fn cache_live(&self) -> Arc<SeatMapCache> {
        let cache = self.seat_cache.clone().expect("the seat cache is on");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cache.is_live() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the seat-map consumer did not connect"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cache
    }
}

/// Polls `probe` (every 10 ms, at most 10 s) until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
