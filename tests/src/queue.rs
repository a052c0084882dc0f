//! Support for the queue strategy's tests: a world (database, Redis prefix,
//! secret, clock) that several app instances and stand-alone partition
//! consumers share, app instances on it, and an applier that stops dead
//! after a given number of requests (a consumer to kill mid-stream).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use concert_app::{Application, Overrides, Settings};
use concert_domain::{
    Applied, Appliers, Delivery, Fence, PartitionApplier, Policy, SeatRequestApplier, UserId,
};
use concert_http::{Auth, AuthOptions};
use concert_redis::{Consumers, QueueSettings, RedisQueue};
use reqwest::Response;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::app::redis_url;
use crate::clock::ManualClock;
use crate::db::TestDb;
use crate::redis::{purge_prefix, test_prefix};

/// What every instance of one test shares. Dropping it deletes the Redis
/// keys (the database goes with its [`TestDb`]).
pub struct QueueWorld {
    pub db: TestDb,
    pub prefix: String,
    pub secret: String,
    pub clock: ManualClock,
    /// Partition lease of every instance and consumer (short, so that a
    /// killed holder is replaced quickly).
    pub lease: Duration,
}

impl QueueWorld {
    pub async fn new(lease: Duration) -> QueueWorld {
        QueueWorld {
            db: TestDb::new().await,
            prefix: test_prefix(),
            secret: format!("secret-{}", uuid::Uuid::new_v4().simple()),
            clock: ManualClock::new(),
            lease,
        }
    }

    /// The queue settings every instance of this world uses.
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            lease: self.lease,
            ..QueueSettings::default()
        }
    }

    /// The domain's applier over this world's database and clock.
    pub fn applier(&self) -> SeatRequestApplier {
        let store = self.db.store();
        let ports = concert_domain::Ports {
            transactions: Arc::new(store.clone()),
            queries: Arc::new(store.clone()),
            catalogue: Arc::new(store),
            clock: Arc::new(self.clock.clone()),
        };
        SeatRequestApplier::new(ports, Policy::default())
    }

    /// Stand-alone partition consumers applying through `appliers`.
    pub async fn consumers(&self, appliers: Arc<dyn Appliers>) -> Consumers {
        let queue = RedisQueue::connect(&redis_url(), &self.prefix, self.queue_settings())
            .await
            .expect("the seat queue connects");
        queue.start_consumers(appliers)
    }

    /// An app instance with the `queue` seat strategy, its reply budget
    /// `reply`.
    pub async fn instance(&self, reply: Duration) -> Instance {
        Instance::start(self.vars(reply), &self.secret, self.clock.clone())
            .await
            .expect("the application starts")
    }

    /// The settings of [`QueueWorld::instance`], to adjust.
    pub fn vars(&self, reply: Duration) -> HashMap<&'static str, String> {
        HashMap::from([
            ("DATABASE_URL", self.db.url.as_str().to_owned()),
            ("REDIS_URL", redis_url()),
            ("APP_HOST", "127.0.0.1".to_owned()),
            ("APP_PORT", "0".to_owned()),
            ("APP_JWT_SECRET", self.secret.clone()),
            ("APP_SEAT_STRATEGY", "queue".to_owned()),
            ("APP_QUEUE_REPLY_MS", reply.as_millis().to_string()),
            ("APP_QUEUE_LEASE_MS", self.lease.as_millis().to_string()),
            ("APP_REDIS_PREFIX", self.prefix.clone()),
            ("APP_SWEEP_SECONDS", "0".to_owned()),
            ("APP_WORKERS", "2".to_owned()),
            ("APP_DB_POOL_SIZE", "10".to_owned()),
        ])
    }
}

impl Drop for QueueWorld {
    fn drop(&mut self) {
        purge_prefix(&redis_url(), &self.prefix);
    }
}

/// One running app instance (stopped when dropped).
pub struct Instance {
    pub address: String,
    pub client: reqwest::Client,
    auth: Auth,
    server: JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Instance {
    /// Starts the application with exactly `vars`; returns once it
    /// listens, or why it did not start.
    pub async fn start(
        vars: HashMap<&str, String>,
        secret: &str,
        clock: ManualClock,
    ) -> anyhow::Result<Instance> {
        let settings = Settings::from_lookup(|name| vars.get(name).cloned())?;
        let overrides = Overrides {
            clock: Some(Arc::new(clock)),
        };
        let application = Application::build_with(settings, overrides).await?;
        let port = application.port();
        let server = tokio::spawn(async move {
            if let Err(e) = application.run_until_stopped().await {
                eprintln!("test instance stopped with an error: {e:#}");
            }
        });
        Ok(Instance {
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(1024)
                .build()?,
            auth: Auth::new(secret.as_bytes(), AuthOptions::default()),
            server,
        })
    }

    pub fn token_for(&self, user: u64) -> String {
        self.auth
            .issue(UserId::from(user), Duration::from_secs(3600), false)
    }

    /// `POST /api/v1/reservations` as `user`.
    pub async fn reserve(&self, user: u64, schedule: u64, seat: u8) -> Response {
        let body = serde_json::json!({"scheduleId": schedule, "seatNumber": seat});
        self.post_as(user, "/api/v1/reservations", &body).await
    }

    pub async fn post_as(&self, user: u64, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(self.token_for(user))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_as(&self, user: u64, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(self.token_for(user))
            .send()
            .await
            .expect("request sent")
    }

    /// Polls a queued request (its `Location`) as `user` until it is DONE
    /// (at most `within`); returns its final body.
    pub async fn poll_done(&self, user: u64, location: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let response = self.get_as(user, location).await;
            assert_eq!(response.status().as_u16(), 200, "polling {location}");
            let body: Value = response.json().await.expect("a JSON body");
            if body["status"] == "DONE" {
                return body;
            }
            assert_eq!(body["status"], "PENDING", "{body}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{location} still pending after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An [`Appliers`] that applies `limit` requests one at a time through the
/// real applier and then stops dead inside that batch, never answering it
/// (with `limit` 0: at its first request): a consumer caught by a crash
/// after deciding requests it did not answer.
pub struct Gate {
    inner: SeatRequestApplier,
    limit: usize,
    applied: Arc<AtomicUsize>,
    pub reached: Arc<Notify>,
}

impl Gate {
    pub fn new(inner: SeatRequestApplier, limit: usize) -> Self {
        Self {
            inner,
            limit,
            applied: Arc::default(),
            reached: Arc::new(Notify::new()),
        }
    }
}

impl Appliers for Gate {
    fn open(&self, fence: Fence) -> Box<dyn PartitionApplier> {
        Box::new(GateTenure {
            inner: self.inner.open(fence),
            limit: self.limit,
            applied: self.applied.clone(),
            reached: self.reached.clone(),
        })
    }
}

struct GateTenure {
    inner: Box<dyn PartitionApplier>,
    limit: usize,
    applied: Arc<AtomicUsize>,
    reached: Arc<Notify>,
}

async fn stop_dead(reached: &Notify) {
    reached.notify_one();
    std::future::pending::<()>().await;
}

#[async_trait]
impl PartitionApplier for GateTenure {
    async fn apply(&mut self, batch: Vec<Delivery>) -> Vec<Applied> {
        let mut out = Vec::with_capacity(batch.len());
        for delivery in batch {
            if self.limit == 0 {
                stop_dead(&self.reached).await;
            }
            out.extend(self.inner.apply(vec![delivery]).await);
            if self.applied.fetch_add(1, Ordering::SeqCst) + 1 >= self.limit {
                stop_dead(&self.reached).await;
            }
        }
        out
    }
}
