//! The waiting-room scenarios, over HTTP against app instances the lab
//! starts (see [`instances`]):
//!
//! - `waiting-room` ([`waiting`]): the `/health/live` rate of the same
//!   instances (the HTTP ceiling of this machine in this run), then N users
//!   enter one room and poll until admitted (and leave, freeing the place),
//!   with the exactness checks: one position per user, FIFO admission,
//!   positions that never grow, the admitted count never above the limit
//!   (sampled throughout), every user answered; and Redis round trips and
//!   commands per request, counted on the lab's own Redis.
//! - `on-sale` ([`on_sale`]): N users, one concert with 3 schedules of 50
//!   seats: everyone enters, waits as told (`pollAfterSeconds`), reserves a
//!   random free seat and pays; exactly the 150 seats sold, none twice,
//!   every user answered (paid or sold out).

mod instances;
mod on_sale;
mod waiting;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use concert_domain::{ConcertId, UserId, WaitingRoom};
use serde_json::Value;

pub use instances::Instances;

use crate::config::{LabConfig, Scenario};
use crate::row::{Rep, Row};

/// Runs one waiting-room scenario on fresh instances.
pub async fn run(config: &LabConfig, scenario: Scenario) -> anyhow::Result<Vec<Row>> {
    let instances = Instances::start(config).await?;
    if instances.own_redis.is_none() {
        eprintln!("lab: Redis command counts include other clients of REDIS_URL");
    }
    let result = match scenario {
        Scenario::WaitingRoom => waiting::run(&instances, config).await,
        Scenario::OnSale => on_sale::run(&instances, config).await,
        other => Err(anyhow::anyhow!(
            "{} is not a waiting-room scenario",
            other.as_str()
        )),
    };
    instances.stop().await;
    result.with_context(|| format!("scenario {}", scenario.as_str()))
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
    pub ms: f64,
}

impl Answer {
    /// `200`, or `404 not-found` for a problem.
    pub fn code(&self) -> String {
        match self.body.get("code").and_then(Value::as_str) {
            Some(code) => format!("{} {code}", self.status),
            None => self.status.to_string(),
        }
    }

    pub fn room_status(&self) -> &str {
        self.body
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn position(&self) -> Option<u64> {
        self.body.get("position").and_then(Value::as_u64)
    }
}

/// An HTTP client of the instances with pre-issued tokens for users
/// `first_user .. first_user + users`.
pub(crate) struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    tokens: Vec<String>,
}

impl Client {
    pub fn new(
        instances: &Instances,
        connections: usize,
        first_user: u64,
        users: usize,
    ) -> anyhow::Result<Self> {
        let tokens = (0..users as u64)
            .map(|i| instances.token(UserId::from(first_user + i)))
            .collect();
        Ok(Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(connections)
                .timeout(Duration::from_secs(60))
                .build()?,
            urls: instances.urls.clone(),
            tokens,
        })
    }

    pub fn instances(&self) -> usize {
        self.urls.len()
    }

    /// Sends `method path` to instance `instance` as user `index` (no
    /// token for `None`), with an optional JSON body.
    pub async fn send(
        &self,
        instance: usize,
        method: reqwest::Method,
        path: &str,
        user: Option<usize>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.urls[instance % self.urls.len()]);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(user) = user {
            request = request.bearer_auth(&self.tokens[user]);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if method == reqwest::Method::POST && crate::http::needs_key(path) {
            // charges and payments always carry a key (docs/reliability.md)
            request = request.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        }
        let started = Instant::now();
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body, ms })
    }

    pub async fn live(&self, instance: usize) -> anyhow::Result<Answer> {
        self.send(instance, reqwest::Method::GET, "/health/live", None, None)
            .await
    }

    pub async fn room(
        &self,
        instance: usize,
        method: reqwest::Method,
        concert: ConcertId,
        user: usize,
    ) -> anyhow::Result<Answer> {
        let path = format!("/api/v1/concerts/{concert}/waiting-room");
        self.send(instance, method, &path, Some(user), None).await
    }
}

/// Runs `count` jobs on `workers` concurrent workers (each job one request
/// or more); returns the answers in job order and the wall time (ms).
pub(crate) async fn phase<F, Fut>(
    workers: usize,
    count: usize,
    job: F,
) -> anyhow::Result<(Vec<Answer>, f64)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Answer>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..workers.min(count).max(1))
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    done.push((i, job(i).await?));
                }
                Ok::<_, anyhow::Error>(done)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(count);
    for handle in handles {
        answers.extend(handle.await.context("a client worker panicked")??);
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    answers.sort_by_key(|(i, _)| *i);
    Ok((answers.into_iter().map(|(_, a)| a).collect(), ms))
}

/// Watches a room's admitted count from the start until stopped.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<(u64, u64)>>,
    round_trips: Arc<AtomicU64>,
}

impl Sampler {
    /// Samples every `every` (one `sizes` script per sample).
    pub fn start(
        room: concert_redis::RedisWaitingRoom,
        concert: ConcertId,
        every: Duration,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let round_trips = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, round_trips) = (stop.clone(), round_trips.clone());
            tokio::spawn(async move {
                let (mut max, mut samples) = (0u64, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    let (_, admitted) = room.sizes(concert, chrono::Utc::now()).await?;
                    round_trips.store(room.round_trips(), Ordering::SeqCst);
                    max = max.max(admitted);
                    samples += 1;
                    tokio::time::sleep(every).await;
                }
                Ok((max, samples))
            })
        };
        Sampler {
            stop,
            task,
            round_trips,
        }
    }

    /// Round trips (= `sizes` scripts) made so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }

    /// Stops; returns the largest admitted count seen and the samples.
    pub async fn finish(self) -> anyhow::Result<(u64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.context("the sampler panicked")?
    }
}

/// Redis calls counted between two snapshots of the lab's own Redis.
pub(crate) struct RedisCount {
    /// Round trips: scripts called (`EVALSHA`, `EVAL`); the room sends
    /// nothing else.
    pub round_trips: u64,
    /// Every command, those run inside scripts included (`INFO` excluded).
    pub commands: u64,
}

pub(crate) fn redis_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> RedisCount {
    let delta = |name: &str| {
        after
            .get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(name).copied().unwrap_or(0))
    };
    let commands = after
        .keys()
        .filter(|name| name.as_str() != "info")
        .map(|name| delta(name))
        .sum();
    RedisCount {
        round_trips: delta("evalsha") + delta("eval"),
        commands,
    }
}

/// One row of HTTP answers.
pub(crate) fn http_row(
    scenario: &str,
    label: &str,
    answers: &[Answer],
    ms: f64,
    successes: u64,
    violations: Vec<String>,
) -> Row {
    let mut statuses = BTreeMap::new();
    let mut failures = BTreeMap::new();
    for a in answers {
        let code = a.code();
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
            final_balance: None,
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

/// Rounds to two decimals.
pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Requests per second.
pub(crate) fn rate(requests: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        requests as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_deltas_count_scripts_as_round_trips_and_every_command() {
        let before = BTreeMap::from([
            ("evalsha".to_owned(), 10),
            ("zadd".to_owned(), 5),
            ("info".to_owned(), 3),
        ]);
        let after = BTreeMap::from([
            ("evalsha".to_owned(), 110),
            ("eval".to_owned(), 1),
            ("zadd".to_owned(), 205),
            ("info".to_owned(), 4),
        ]);
        let d = redis_delta(&before, &after);
        assert_eq!((d.round_trips, d.commands), (101, 301));
    }
}
