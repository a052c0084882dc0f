//! `spawn_app()`: the real application on port 0, over its own fresh
//! database and its own Redis key prefix, with a reqwest client and helpers
//! to sign tokens and seed data. Dropping the [`TestApp`] stops the server
//! (forced) and then drops the database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use concert_app::{Application, Overrides, Settings};
use concert_domain::{ConcertId, ScheduleId, SeatNumber, UserId};
use concert_http::{Auth, AuthOptions};
use reqwest::{RequestBuilder, Response};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::clock::ManualClock;
use crate::db::TestDb;
use crate::redis::purge_prefix;

/// The Redis server the tests use (`REDIS_URL`, default local).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// How to start a test application. `Default` is the shipped defaults
/// (the strategies of `concert_app::Strategies::default()`, a 300 s hold)
/// except: no sweeper (so tests prove correctness does not depend on
/// it), two HTTP workers, a small connection pool (many apps share one
/// MariaDB in parallel), and a clock the test moves.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub seat_strategy: &'static str,
    pub charge_strategy: &'static str,
    pub use_strategy: &'static str,
    pub hold_seconds: u64,
    pub redis_url: String,
    /// The clock of the app's use cases: `Some` (the default) is a
    /// [`ManualClock`] the test moves; `None` is the system clock.
    pub clock: Option<ManualClock>,
    /// Any other variable (`APP_LOCK_WAIT_MS`, ...).
    pub extra: Vec<(&'static str, String)>,
}

impl Default for AppConfig {
    fn default() -> Self {
        let strategies = concert_app::Strategies::default();
        Self {
            seat_strategy: strategies.seats.as_str(),
            charge_strategy: strategies.charge.as_str(),
            use_strategy: strategies.spend.as_str(),
            hold_seconds: 300,
            redis_url: redis_url(),
            clock: Some(ManualClock::new()),
            extra: Vec::new(),
        }
    }
}

impl AppConfig {
    /// The defaults with `strategy` for seat reservations.
    pub fn seats(strategy: &'static str) -> Self {
        Self {
            seat_strategy: strategy,
            ..Self::default()
        }
    }
}

/// A running application and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    /// The app's own database (dropped after the app stops).
    pub db: TestDb,
    /// The app's Redis key prefix (its keys are deleted when the app is
    /// dropped).
    pub redis_prefix: String,
    pub redis_url: String,
    /// The app's clock (moved by the test), if it has a manual one.
    pub clock: Option<ManualClock>,
    /// The HS256 secret the app verifies tokens with.
    pub jwt_secret: String,
    auth: Auth,
    server: JoinHandle<()>,
}

/// Starts the application with [`AppConfig::default`].
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppConfig::default()).await
}

/// Starts the application with `config` on a fresh database and a fresh
/// Redis prefix, and returns once it listens.
pub async fn spawn_app_with(config: AppConfig) -> TestApp {
    let db = TestDb::new().await;
    let secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
    let redis_prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", db.url.as_str().to_owned()),
        ("REDIS_URL", config.redis_url.clone()),
        ("APP_HOST", "127.0.0.1".to_owned()),
        ("APP_PORT", "0".to_owned()),
        ("APP_JWT_SECRET", secret.clone()),
        ("APP_HOLD_SECONDS", config.hold_seconds.to_string()),
        ("APP_SEAT_STRATEGY", config.seat_strategy.to_owned()),
        ("APP_CHARGE_STRATEGY", config.charge_strategy.to_owned()),
        ("APP_USE_STRATEGY", config.use_strategy.to_owned()),
        ("APP_REDIS_PREFIX", redis_prefix.clone()),
        ("APP_SWEEP_SECONDS", "0".to_owned()),
        ("APP_WORKERS", "2".to_owned()),
        ("APP_DB_POOL_SIZE", "10".to_owned()),
    ]);
    vars.extend(config.extra.iter().cloned());
    let settings =
        Settings::from_lookup(|name| vars.get(name).cloned()).expect("test settings are valid");
    let overrides = Overrides {
        clock: config
            .clock
            .clone()
            .map(|c| Arc::new(c) as Arc<dyn concert_domain::Clock>),
    };
    let application = Application::build_with(settings, overrides)
        .await
        .expect("the application starts");
    let port = application.port();
    let server = tokio::spawn(async move {
        if let Err(e) = application.run_until_stopped().await {
            eprintln!("test application stopped with an error: {e:#}");
        }
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()
        .expect("a reqwest client");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client,
        db,
        redis_prefix,
        redis_url: config.redis_url.clone(),
        clock: config.clock.clone(),
        auth: Auth::new(secret.as_bytes(), AuthOptions::default()),
        jwt_secret: secret,
        server,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Dropping the server future stops its workers; the database is
        // dropped afterwards by `TestDb`'s own Drop; the app's Redis keys
        // go now.
        self.server.abort();
        purge_prefix(&self.redis_url, &self.redis_prefix);
    }
}

impl TestApp {
    /// A valid bearer token for `user`, signed with this app's secret.
    pub fn token_for(&self, user: u64) -> String {
        self.auth
            .issue(UserId::from(user), Duration::from_secs(3600), false)
    }

    /// A valid bearer token for `user` with the admin role.
    pub fn admin_token_for(&self, user: u64) -> String {
        self.auth
            .issue(UserId::from(user), Duration::from_secs(3600), true)
    }

    /// A token for `user` that expired a minute ago.
    pub fn expired_token_for(&self, user: u64) -> String {
        self.auth.issue_until(
            UserId::from(user),
            Utc::now() - chrono::Duration::minutes(1),
        )
    }

    /// A token for `user` signed with another secret.
    pub fn forged_token_for(&self, user: u64) -> String {
        Auth::new(b"not-the-app-secret", AuthOptions::default()).issue(
            UserId::from(user),
            Duration::from_secs(3600),
            false,
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET path` without a token.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    /// `GET path` as `user`.
    pub fn get_as(&self, user: u64, path: &str) -> RequestBuilder {
        self.get(path).bearer_auth(self.token_for(user))
    }

    /// `POST path` with a JSON body as `user`.
    pub fn post_as(&self, user: u64, path: &str, body: &Value) -> RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(self.token_for(user))
            .json(body)
    }

    /// `POST /api/v1/reservations` as `user`.
    pub async fn reserve(&self, user: u64, schedule: ScheduleId, seat: u8) -> Response {
        let body = serde_json::json!({"scheduleId": schedule.get(), "seatNumber": seat});
        self.post_as(user, "/api/v1/reservations", &body)
            .send()
            .await
            .expect("reservation request sent")
    }

    /// `POST /api/v1/payments` as `user`.
    pub async fn pay(&self, user: u64, reservation: u64) -> Response {
        let body = serde_json::json!({"reservationId": reservation});
        self.post_as(user, "/api/v1/payments", &body)
            .send()
            .await
            .expect("payment request sent")
    }

    /// `POST /api/v1/points/charge` as `user`.
    pub async fn charge(&self, user: u64, amount: i64) -> Response {
        let body = serde_json::json!({ "amount": amount });
        self.post_as(user, "/api/v1/points/charge", &body)
            .send()
            .await
            .expect("charge request sent")
    }

    /// The user's balance as the API reports it.
    pub async fn balance(&self, user: u64) -> u64 {
        let body = json_ok(
            self.get_as(user, "/api/v1/points")
                .send()
                .await
                .expect("sent"),
        )
        .await;
        body["balance"].as_u64().expect("balance is a number")
    }

    /// A concert with one schedule a day from now whose 50 seats all cost
    /// `price`.
    pub async fn seed_schedule(&self, price: u64) -> (ConcertId, ScheduleId) {
        let concert = self
            .db
            .sql
            .create_concert("Test concert")
            .await
            .expect("concert created");
        let starts_at: DateTime<Utc> = Utc::now() + chrono::Duration::days(1);
        let schedule = self
            .db
            .sql
            .create_schedule(concert, starts_at, |_: SeatNumber| price)
            .await
            .expect("schedule created");
        (concert, schedule)
    }

    /// Sets `user`'s balance directly in storage.
    pub async fn set_balance(&self, user: u64, balance: u64) {
        self.db
            .sql
            .set_balance(UserId::from(user), balance)
            .await
            .expect("balance set");
    }
}

/// Asserts a 2xx answer and returns its JSON body.
pub async fn json_ok(response: Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(
        status.is_success(),
        "expected success, got {status}: {body}"
    );
    body
}

/// Reads an error answer: asserts `application/problem+json` with the RFC
/// 9457 members, and returns (status, code).
pub async fn problem(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        content_type, "application/problem+json",
        "status {status}: {body}"
    );
    assert_eq!(body["status"], status, "{body}");
    for member in ["type", "title", "detail", "code"] {
        assert!(body[member].is_string(), "{member} missing: {body}");
    }
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

/// A TCP forwarder to `target` that a test can cut: after
/// [`TcpProxy::shutdown`], open connections are closed and new ones are
/// refused, as when a server goes down.
pub struct TcpProxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards a fresh local port to `target` (`host:port`).
    pub async fn start(target: String) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bound");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = pump_both(client, server).await;
                    }
                });
            }
        });
        TcpProxy { addr, task }
    }

    /// Closes the listener and every forwarded connection (dropping the
    /// accept task drops its `JoinSet`, which aborts the connections).
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Copies bytes both ways until either side closes.
async fn pump_both(a: TcpStream, b: TcpStream) -> std::io::Result<()> {
    let (a_read, a_write) = a.into_split();
    let (b_read, b_write) = b.into_split();
    tokio::select! {
        r = pump(a_read, b_write) => r,
        r = pump(b_read, a_write) => r,
    }
}

async fn pump(
    from: tokio::net::tcp::OwnedReadHalf,
    to: tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut written = 0;
        while written < n {
            to.writable().await?;
            match to.try_write(&buf[written..n]) {
                Ok(k) => written += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
