//! The chaos suite's mixed load: virtual users spread over the instances,
//! each looping over what ticket buyers do (hold one or two seats, pay,
//! cancel, refund, top up, look at seats and balances), recording every
//! answer. Every request has a budget; one that outlives it counts as hung.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concert_domain::{ScheduleId, UserId};
use concert_http::{Auth, AuthOptions};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// What the answers were, per scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Answers by status code (`"201"`, `"409 seat-unavailable"`, ...).
    pub by_status: BTreeMap<String, u64>,
    pub requests: u64,
    /// 5xx other than 503: bugs.
    pub server_errors: u64,
    /// No answer within the request budget.
    pub hung: u64,
    /// The instance could not be reached (it was killed): not an answer.
    pub unreachable: u64,
    /// One example of each server error, for the report.
    pub examples: Vec<String>,
}

impl Tally {
    fn record(&mut self, status: u16, code: Option<&str>) {
        self.requests += 1;
        let key = match code {
            Some(code) => format!("{status} {code}"),
            None => status.to_string(),
        };
        *self.by_status.entry(key).or_default() += 1;
        if status >= 500 && status != 503 {
            self.server_errors += 1;
        }
    }
}

/// The shared view of the load: the instances' addresses and the tally.
pub struct Load {
    pub tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    users: Vec<JoinHandle<()>>,
}

/// How the load is shaped.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub bases: Vec<String>,
    pub users: usize,
    pub first_user: u64,
    pub schedules: Vec<ScheduleId>,
    /// The request budget: no answer within it counts as hung.
    pub budget: Duration,
    /// Enter the concert's waiting room when refused `not-admitted`.
    pub concert: u64,
}

pub fn auth() -> Auth {
    Auth::new(super::cluster::SECRET.as_bytes(), AuthOptions::default())
}

pub fn client(budget: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(budget)
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(256)
        .build()
        .expect("an HTTP client")
}

impl Load {
    pub fn start(config: LoadConfig) -> Load {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let http = client(config.budget);
        let auth = Arc::new(auth());
        let users = (0..config.users)
            .map(|i| {
                let user = User {
                    id: UserId::from(config.first_user + i as u64),
                    base: config.bases[i % config.bases.len()].clone(),
                    http: http.clone(),
                    auth: auth.clone(),
                    tally: tally.clone(),
                    schedules: config.schedules.clone(),
                    concert: config.concert,
                    held: Vec::new(),
                    paid: Vec::new(),
                };
                let stop = stop.clone();
                tokio::spawn(user.run(stop))
            })
            .collect();
        Load { tally, stop, users }
    }

    /// Stops every user after its current request.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for user in self.users {
            let _ = user.await;
        }
        let tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.clone()
    }
}

struct User {
    id: UserId,
    base: String,
    http: reqwest::Client,
    auth: Arc<Auth>,
    tally: Arc<Mutex<Tally>>,
    schedules: Vec<ScheduleId>,
    concert: u64,
    held: Vec<u64>,
    paid: Vec<u64>,
}

/// One answer: status, problem code, body.
struct Answer {
    status: u16,
    code: Option<String>,
    body: Value,
}

impl User {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        self.send(
            "POST",
            "/api/v1/points/charge",
            Some(json!({"amount": 1_000_000})),
            true,
        )
        .await;
        while !stop.load(Ordering::SeqCst) {
            let roll = fastrand::u32(0..100);
            match roll {
                0..35 => self.reserve(1).await,
                35..45 => self.reserve(2).await,
                45..65 => self.pay().await,
                65..73 => self.cancel().await,
                73..78 => self.refund().await,
                78..88 => {
                    self.send(
                        "POST",
                        "/api/v1/points/charge",
                        Some(json!({"amount": 1_000})),
                        true,
                    )
                    .await;
                }
                88..94 => {
                    let schedule = self.schedule();
                    self.send(
                        "GET",
                        &format!("/api/v1/schedules/{schedule}/seats"),
                        None,
                        false,
                    )
                    .await;
                }
                _ => {
                    self.send("GET", "/api/v1/points", None, false).await;
                }
            }
        }
    }

    fn schedule(&self) -> u64 {
        self.schedules[fastrand::usize(0..self.schedules.len())].get()
    }

    async fn reserve(&mut self, seats: u8) {
        let schedule = self.schedule();
        let first = fastrand::u8(1..=(51 - seats));
        let answer = if seats == 1 {
            self.admitted_send(
                "POST",
                "/api/v1/reservations",
                json!({"scheduleId": schedule, "seatNumber": first}),
            )
            .await
        } else {
            let numbers: Vec<u8> = (first..first + seats).collect();
            self.admitted_send(
                "POST",
                "/api/v1/reservations/batch",
                json!({"scheduleId": schedule, "seatNumbers": numbers}),
            )
            .await
        };
        if let Some(answer) = answer
            && answer.status == 201
        {
            match &answer.body {
                Value::Array(items) => {
                    self.held
                        .extend(items.iter().filter_map(|r| r["id"].as_u64()));
                }
                one => self.held.extend(one["id"].as_u64()),
            }
        }
    }

    async fn pay(&mut self) {
        let Some(id) = self.held.pop() else {
            return self.reserve(1).await;
        };
        if let Some(answer) = self
            .admitted_send("POST", "/api/v1/payments", json!({"reservationId": id}))
            .await
            && answer.status == 201
            && let Some(payment) = answer.body["id"].as_u64()
        {
            self.paid.push(payment);
        }
    }

    async fn cancel(&mut self) {
        if let Some(id) = self.held.pop() {
            self.send("DELETE", &format!("/api/v1/reservations/{id}"), None, false)
                .await;
        }
    }

    async fn refund(&mut self) {
        if let Some(id) = self.paid.pop() {
            self.send(
                "POST",
                &format!("/api/v1/payments/{id}/refund"),
                None,
                false,
            )
            .await;
        }
    }

    /// Sends; when the waiting room refuses (`not-admitted`), enters the
    /// room and tries once more.
    async fn admitted_send(&mut self, method: &str, path: &str, body: Value) -> Option<Answer> {
        let answer = self
            .send(method, path, Some(body.clone()), path.ends_with("payments"))
            .await?;
        if answer.status == 403 && answer.code.as_deref() == Some("not-admitted") {
            let room = format!("/api/v1/concerts/{}/waiting-room", self.concert);
            self.send("POST", &room, None, false).await;
            return self
                .send(method, path, Some(body), path.ends_with("payments"))
                .await;
        }
        Some(answer)
    }

    /// One request; `None` when it got no answer (instance down or hung).
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotent: bool,
    ) -> Option<Answer> {
        let url = format!("{}{path}", self.base);
        let token = self.auth.issue(self.id, Duration::from_secs(3600), false);
        let mut request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url),
        }
        .bearer_auth(token);
        if idempotent {
            // Every charge and payment carries a key (the ambiguous-commit
            // rule: a retry must not act twice).
            request = request.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let code = body["code"].as_str().map(str::to_owned);
                {
                    let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
                    tally.record(status, code.as_deref());
                    if status >= 500 && status != 503 && tally.examples.len() < 5 {
                        tally
                            .examples
                            .push(format!("{method} {path} -> {status} {body}"));
                    }
                }
                Some(Answer { status, code, body })
            }
            Err(e) => {
                {
                    let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
                    if e.is_timeout() {
                        tally.hung += 1;
                        if tally.examples.len() < 5 {
                            tally.examples.push(format!("{method} {path} hung: {e}"));
                        }
                    } else {
                        tally.unreachable += 1;
                    }
                }
                // An instance that is down: do not spin on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
        }
    }
}
