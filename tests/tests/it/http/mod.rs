//! Handler tests: the whole `App` in process, over the real use cases
//! (`concert_domain::Services`) on the in-memory store (`concert-memory`) and a clock
//! the tests move. No database, no network (except the graceful-stop test,
//! which serves on a local port).

mod admin;
mod auth;
mod catalogue;
mod docs;
mod failures;
mod operations;
mod payments;
mod points;
mod queue;
mod reservations;
mod validation;
mod waiting_room;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::web;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{
    CatalogueRepository, Concert, ConcertId, Control, Controls, Failure, HistoryEntry, NewSchedule,
    Payment, PaymentId, Policy, Ports, Protection, Queries, Reservation, ReservationId, Schedule,
    ScheduleId, ScheduleSummary, Seat, Services, Title, Transactions, UnitOfWork, UserId, Wallet,
};
use concert_memory::MemoryStore;
use serde_json::Value;

use concert_http::{AppState, Auth, AuthOptions, HttpOptions, PROBLEM_JSON, Readiness};

pub const SECRET: &[u8] = b"unit-test-secret";

pub use crate::services::{TestClock, t0};

/// With `TEST_LOG` set, the tests log to stderr (`RUST_LOG` filters).
fn init_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TEST_LOG").is_some() {
        INIT.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        });
    }
}

/// Real services over an in-memory store, and how the app around them is
/// set up.
pub struct World {
    pub store: MemoryStore,
    pub clock: TestClock,
    pub services: Services,
    pub readiness: Vec<Arc<dyn Readiness>>,
    pub options: HttpOptions,
}

impl World {
    /// Every operation pessimistic, the default policy.
    pub fn new() -> Self {
        Self::with(Control::pessimistic("pessimistic"), Policy::default())
    }

    pub fn with(control: Control, policy: Policy) -> Self {
        init_logs();
        let store = MemoryStore::new();
        let clock = TestClock::new();
        let ports = store.ports(Arc::new(clock.clone()));
        Self::over(store, clock, ports, control, policy)
    }

    /// The services over `ports` (the store stays for set-up).
    pub fn over(
        store: MemoryStore,
        clock: TestClock,
        ports: Ports,
        control: Control,
        policy: Policy,
    ) -> Self {
        let controls = Controls {
            seats: control.clone(),
            charge: control.clone(),
            spend: control,
        };
        Self {
            store,
            clock,
            services: Services::new(ports, controls, policy),
            readiness: Vec::new(),
            options: HttpOptions::default(),
        }
    }

    /// Storage that answers nothing (every read and write is unavailable).
    pub fn down() -> Self {
        init_logs();
        let store = MemoryStore::new();
        let clock = TestClock::new();
        let ports = Ports {
            transactions: Arc::new(Down),
            queries: Arc::new(Down),
            catalogue: Arc::new(Down),
            clock: Arc::new(clock.clone()),
        };
        Self::over(
            store,
            clock,
            ports,
            Control::pessimistic("pessimistic"),
            Policy::default(),
        )
    }

    pub fn state(&self) -> web::Data<AppState> {
        web::Data::new(AppState {
            services: self.services.clone(),
            auth: Auth::new(SECRET, AuthOptions::default()),
            readiness: self.readiness.clone(),
        })
    }

    /// A concert with one schedule starting 30 days after `t0`, every seat
    /// at 500 points.
    pub fn schedule(&self) -> (ConcertId, ScheduleId) {
        self.store
            .add_schedule(t0() + chrono::Duration::days(30), 500)
    }
}

/// The whole app of a [`World`], initialised for [`call!`].
macro_rules! service {
    ($world:expr) => {
        actix_web::test::init_service(concert_http::app_with(
            $world.state(),
            $world.options.clone(),
        ))
        .await
    };
}
pub(crate) use service;

pub fn token(user: u64) -> String {
    Auth::new(SECRET, AuthOptions::default()).issue(
        UserId::from(user),
        Duration::from_secs(600),
        false,
    )
}

pub fn admin_token(user: u64) -> String {
    Auth::new(SECRET, AuthOptions::default()).issue(
        UserId::from(user),
        Duration::from_secs(600),
        true,
    )
}

pub fn bearer(user: u64) -> (header::HeaderName, String) {
    (header::AUTHORIZATION, format!("Bearer {}", token(user)))
}

pub fn admin_bearer(user: u64) -> (header::HeaderName, String) {
    (
        header::AUTHORIZATION,
        format!("Bearer {}", admin_token(user)),
    )
}

/// A status, the headers and the JSON body (`Null` when not JSON).
pub type Outcome = (StatusCode, header::HeaderMap, Value);

/// Sends a `TestRequest` and returns its [`Outcome`].
macro_rules! call {
    ($svc:expr, $req:expr $(,)?) => {{
        let response = actix_web::test::call_service(&$svc, $req.to_request()).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = actix_web::test::read_body(response).await;
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, body)
    }};
}
pub(crate) use call;

/// Asserts a problem+json answer with `status` and `code`, and the exact
/// problem members.
pub fn assert_problem(outcome: &Outcome, status: u16, code: &str) {
    let (got, headers, body) = outcome;
    assert_eq!(got.as_u16(), status, "{body}");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        PROBLEM_JSON,
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["type"], format!("urn:concert:problem:{code}"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    let members: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let extra: Vec<&&str> = members
        .iter()
        .filter(|m| !["type", "title", "status", "detail", "code"].contains(m))
        .collect();
    if code == "seat-unavailable" {
        assert_eq!(extra, [&"unavailableSeats"], "{body}");
        assert!(body["unavailableSeats"].is_array(), "{body}");
    } else {
        assert!(extra.is_empty(), "{body}");
    }
}

/// Storage that cannot be reached.
pub struct Down;

fn down() -> Failure {
    Failure::unavailable(anyhow::anyhow!("connection refused").context("database pool"))
}

#[async_trait]
impl Transactions for Down {
    async fn begin(&self, _: Protection) -> Result<Box<dyn UnitOfWork>, Failure> {
        Err(down())
    }
}

#[async_trait]
impl Queries for Down {
    async fn reservation(&self, _: ReservationId) -> Result<Option<Reservation>, Failure> {
        Err(down())
    }
    async fn reservations_of(&self, _: UserId) -> Result<Vec<Reservation>, Failure> {
        Err(down())
    }
    async fn wallet(&self, _: UserId) -> Result<Option<Wallet>, Failure> {
        Err(down())
    }
    async fn history(&self, _: UserId) -> Result<Vec<HistoryEntry>, Failure> {
        Err(down())
    }
    async fn payment(&self, _: PaymentId) -> Result<Option<Payment>, Failure> {
        Err(down())
    }
}

#[async_trait]
impl CatalogueRepository for Down {
    async fn concerts(&self) -> Result<Vec<Concert>, Failure> {
        Err(down())
    }
    async fn concert(&self, _: ConcertId) -> Result<Option<Concert>, Failure> {
        Err(down())
    }
    async fn schedule(&self, _: ScheduleId) -> Result<Option<Schedule>, Failure> {
        Err(down())
    }
    async fn schedules(
        &self,
        _: ConcertId,
        _: DateTime<Utc>,
    ) -> Result<Option<Vec<ScheduleSummary>>, Failure> {
        Err(down())
    }
    async fn seats(&self, _: ScheduleId) -> Result<Option<Vec<Seat>>, Failure> {
        Err(down())
    }
    async fn create_concert(&self, _: &Title) -> Result<Concert, Failure> {
        Err(down())
    }
    async fn create_schedule(&self, _: &NewSchedule) -> Result<Option<Schedule>, Failure> {
        Err(down())
    }
}
