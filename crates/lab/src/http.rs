//! `lab http`: drives a running server through its real API and measures
//! latency percentiles, throughput and status codes, checking exactness.
//!
//! The lab mints its own tokens (with `APP_JWT_SECRET`, as the server) and
//! creates fresh schedules for its runs in the server's database
//! (`DATABASE_URL`), so it never competes with the demo data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use concert_domain::{ScheduleId, UserId};
use concert_http::{Auth, AuthOptions};
use concert_mysql::DatabaseUrl;
use concert_testkit::Sql;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::row::{Rep, Row};

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub base_url: String,
    /// The server's database, where the runs' schedules are created.
    pub database_url: DatabaseUrl,
    /// The server's token settings: the lab signs tokens it accepts.
    pub jwt_secret: String,
    pub jwt: AuthOptions,
    /// Clients racing for one seat.
    pub race_users: usize,
    /// Holds one user pays concurrently.
    pub storm_seats: usize,
    /// Reserve-and-pay operations in the steady load, and its concurrency.
    pub steady_ops: usize,
    pub steady_workers: usize,
    /// What to call the server's strategy in the rows.
    pub label: String,
}

pub const USAGE: &str = "usage: lab http --base-url URL [--users N] [--storm N] [--steady N] [--workers N] [--label TEXT] [--out DIR]";

impl HttpConfig {
    pub fn from_args(args: &[String]) -> anyhow::Result<(HttpConfig, std::path::PathBuf)> {
        let settings = concert_app::Settings::from_env()?;
        let mut c = HttpConfig {
            base_url: String::new(),
            database_url: settings.database.url.clone(),
            jwt_secret: settings.auth.secret.expose_secret().to_owned(),
            jwt: AuthOptions {
                issuer: settings.auth.issuer.clone(),
                audience: settings.auth.audience.clone(),
            },
            race_users: 1000,
            storm_seats: 100,
            steady_ops: 200,
            steady_workers: 16,
            label: "server-configured".into(),
        };
        let mut out = std::path::PathBuf::from("target/lab");
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value"))
            };
            let num = |v: String| {
                v.parse::<usize>()
                    .with_context(|| format!("{flag}: not a number"))
            };
            match flag.as_str() {
                "--base-url" => c.base_url = value()?.trim_end_matches('/').to_owned(),
                "--users" => c.race_users = num(value()?)?,
                "--storm" => c.storm_seats = num(value()?)?,
                "--steady" => c.steady_ops = num(value()?)?,
                "--workers" => c.steady_workers = num(value()?)?,
                "--label" => c.label = value()?,
                "--out" => out = value()?.into(),
                other => bail!("unknown option {other:?}\n{USAGE}"),
            }
        }
        ensure!(!c.base_url.is_empty(), "--base-url is required\n{USAGE}");
        ensure!(
            c.race_users > 0 && c.steady_workers > 0,
            "--users and --workers must be at least 1"
        );
        Ok((c, out))
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

struct Answer {
    status: u16,
    body: Value,
    ms: f64,
}

impl Client {
    fn token(&self, user: UserId) -> String {
        self.auth.issue(user, Duration::from_secs(3600), false)
    }

    /// POSTs `body`. Every charge and payment carries a fresh
    /// `Idempotency-Key`: a client that retries after an ambiguous answer
    /// (a 503 whose commit may have happened) must not act twice
    /// (`docs/reliability.md`).
    async fn post(&self, user: UserId, path: &str, body: Value) -> anyhow::Result<Answer> {
        let started = Instant::now();
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token(user))
            .json(&body);
        if needs_key(path) {
            request = request.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    async fn get(&self, user: UserId, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token(user))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        ensure!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }
}

/// The requests that move points: charges and payments.
pub(crate) fn needs_key(path: &str) -> bool {
    path == "/api/v1/points/charge" || path == "/api/v1/payments"
}

fn code_of(answer: &Answer) -> String {
    match answer.body.get("code").and_then(Value::as_str) {
        Some(code) => format!("{} {code}", answer.status),
        None => answer.status.to_string(),
    }
}

async fn fresh_schedules(db: &Sql, count: usize, price: u64) -> anyhow::Result<Vec<ScheduleId>> {
    let concert = db.create_concert("Lab HTTP run").await?;
    let mut schedules = Vec::with_capacity(count);
    for i in 0..count {
        let starts = Utc::now() + chrono::Duration::days(60 + i as i64);
        schedules.push(db.create_schedule(concert, starts, |_| price).await?);
    }
    Ok(schedules)
}

/// Runs the seat race, the payment storm and the steady load.
pub async fn run(c: &HttpConfig) -> anyhow::Result<Vec<Row>> {
    let db = Sql::connect(c.database_url.as_str()).await?;
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(c.race_users.max(64))
            .timeout(Duration::from_secs(60))
            .build()?,
        base: c.base_url.clone(),
        auth: Auth::new(c.jwt_secret.as_bytes(), c.jwt.clone()),
    });
    let user_base = 10_000_000 + (Utc::now().timestamp() as u64 % 1_000_000) * 1_000;
    let mut rows = Vec::new();

    // 1. seat race: many clients, one seat, exactly one 201
    let schedule = fresh_schedules(&db, 1, 500).await?[0];
    let started = Instant::now();
    let answers = join_all((0..c.race_users).map(|i| {
        let client = client.clone();
        async move {
            client
                .post(
                    UserId::from(user_base + i as u64),
                    "/api/v1/reservations",
                    json!({"scheduleId": schedule.get(), "seatNumber": 1}),
                )
                .await
        }
    }))
    .await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let refused = answers.iter().filter(|a| a.status == 409).count();
    let mut violations = Vec::new();
    if created != 1 || refused != c.race_users - 1 {
        violations.push(format!(
            "seat race answered {created} x 201 and {refused} x 409 of {}",
            c.race_users
        ));
    }
    rows.push(row(
        "seat-race",
        &c.label,
        &answers,
        ms,
        created as u64,
        None,
        violations,
    ));

    // 2. payment storm: one user pays many holds concurrently
    let payer = UserId::from(user_base + 999);
    let seats_needed = c.storm_seats;
    let storm_schedules = fresh_schedules(&db, seats_needed.div_ceil(50).max(1), 500).await?;
    let total = 500 * seats_needed as u64;
    let charge = client
        .post(payer, "/api/v1/points/charge", json!({"amount": total}))
        .await?;
    ensure!(
        charge.status == 200,
        "charging the payer failed: {}",
        code_of(&charge)
    );
    let mut holds = Vec::with_capacity(seats_needed);
    for i in 0..seats_needed {
        let schedule = storm_schedules[i / 50];
        let answer = client
            .post(
                payer,
                "/api/v1/reservations",
                json!({"scheduleId": schedule.get(), "seatNumber": i % 50 + 1}),
            )
            .await?;
        ensure!(
            answer.status == 201,
            "holding storm seat {i} failed: {}",
            code_of(&answer)
        );
        holds.push(answer.body["id"].as_u64().context("reservation id")?);
    }
    let started = Instant::now();
    let answers = join_all(holds.iter().map(|id| {
        let client = client.clone();
        let id = *id;
        async move {
            client
                .post(payer, "/api/v1/payments", json!({"reservationId": id}))
                .await
        }
    }))
    .await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let paid = answers.iter().filter(|a| a.status == 201).count();
    let balance = client.get(payer, "/api/v1/points").await?["balance"]
        .as_u64()
        .context("balance")?;
    let mut violations = Vec::new();
    if paid != seats_needed || balance != 0 {
        violations.push(format!(
            "payment storm paid {paid} of {seats_needed}, balance {balance}"
        ));
    }
    rows.push(row(
        "point-use",
        &c.label,
        &answers,
        ms,
        paid as u64,
        Some(balance),
        violations,
    ));

    // 3. steady load: reserve and pay distinct seats with a fixed concurrency
    let steady_schedules = fresh_schedules(&db, c.steady_ops.div_ceil(50).max(1), 500).await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let per_worker = join_all((0..c.steady_workers).map(|w| {
        let client = client.clone();
        let next = next.clone();
        let schedules = steady_schedules.clone();
        let ops = c.steady_ops;
        async move {
            let mut answers = Vec::new();
            let user = UserId::from(user_base + 2_000 + w as u64);
            let funded = client
                .post(
                    user,
                    "/api/v1/points/charge",
                    json!({"amount": 500 * ops.min(2_000)}),
                )
                .await?;
            ensure!(
                funded.status == 200,
                "funding a steady worker failed: {}",
                code_of(&funded)
            );
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let held = client
                    .post(
                        user,
                        "/api/v1/reservations",
                        json!({"scheduleId": schedules[i / 50].get(), "seatNumber": i % 50 + 1}),
                    )
                    .await?;
                let id = held.body["id"].as_u64();
                answers.push(held);
                if let Some(id) = id {
                    answers.push(
                        client
                            .post(user, "/api/v1/payments", json!({"reservationId": id}))
                            .await?,
                    );
                }
            }
            Ok::<_, anyhow::Error>(answers)
        }
    }))
    .await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut answers = Vec::new();
    for worker in per_worker {
        answers.extend(worker);
    }
    let created = answers.iter().filter(|a| a.status == 201).count();
    let mut violations = Vec::new();
    if created != 2 * c.steady_ops {
        violations.push(format!(
            "steady load got {created} x 201 for {} reserve+pay pairs",
            c.steady_ops
        ));
    }
    rows.push(row(
        "sustained",
        &c.label,
        &answers,
        ms,
        created as u64,
        None,
        violations,
    ));
    Ok(rows)
}

async fn join_all<F, T>(futures: impl Iterator<Item = F>) -> anyhow::Result<Vec<T>>
where
    F: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.context("a client task panicked")??);
    }
    Ok(out)
}

fn row(
    scenario: &str,
    label: &str,
    answers: &[Answer],
    ms: f64,
    successes: u64,
    final_balance: Option<u64>,
    violations: Vec<String>,
) -> Row {
    let mut statuses = BTreeMap::new();
    let mut failures = BTreeMap::new();
    for a in answers {
        let code = code_of(a);
        *statuses.entry(code.clone()).or_insert(0) += 1;
        if a.status >= 300 {
            *failures.entry(code).or_insert(0) += 1;
        }
    }
    Row::summarise(
        scenario,
        label,
        "http",
        None,
        vec![Rep {
            tasks: answers.len() as u64,
            successes,
            failures,
            final_balance,
            attempts: answers.len() as u64,
            retries: 0,
            ms,
            latencies: answers.iter().map(|a| a.ms).collect(),
            statuses,
            violations,
            held_twice: None,
        }],
    )
}
