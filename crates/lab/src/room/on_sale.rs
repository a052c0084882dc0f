//! `on-sale`: N users, one concert with 3 schedules of 50 seats, the room
//! on. Every user enters, waits as the room says (`pollAfterSeconds`, at
//! most `--max-poll-ms` if given), and once admitted charges the price,
//! picks a random AVAILABLE seat, holds it and pays; a seat taken under
//! them is retried; an admitted user who finds no free seat leaves and
//! queues again (the held seats may yet come back). A user is answered
//! when paid, or when the room says SOLD_OUT. Requests go through
//! `connections` concurrent slots, users spread over the instances.
//!
//! Checks: seats sold = min(150, users) and every one paid once (no double
//! sale), every user answered, no 5xx, the admitted count never above the
//! limit (sampled).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use concert_domain::{ConcertId, ScheduleId};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{Answer, Client, Instances, Sampler, http_row, round2};
use crate::config::LabConfig;
use crate::row::Row;

const SCENARIO: &str = "on-sale";
const SCHEDULES: usize = 3;
const SEATS: usize = 50;
const PRICE: u64 = 100;
/// A run that has not answered everyone by then has stalled.
const STALL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Paid(Instant),
    SoldOut,
}

struct Journey {
    end: anyhow::Result<End>,
    answers: Vec<Answer>,
}

struct Shopper {
    client: Arc<Client>,
    slots: Arc<Semaphore>,
    concert: ConcertId,
    schedules: Vec<ScheduleId>,
    max_poll: Option<Duration>,
}

impl Shopper {
    async fn send(
        &self,
        answers: &mut Vec<Answer>,
        instance: usize,
        method: Method,
        path: &str,
        user: Option<usize>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let _slot = self.slots.acquire().await?;
        let answer = self.client.send(instance, method, path, user, body).await?;
        answers.push(answer.clone());
        Ok(answer)
    }

    /// A waiting-room request of `user` to instance `instance`.
    async fn room(
        &self,
        answers: &mut Vec<Answer>,
        instance: usize,
        user: usize,
        method: Method,
    ) -> anyhow::Result<Answer> {
        let path = format!("/api/v1/concerts/{}/waiting-room", self.concert);
        self.send(answers, instance, method, &path, Some(user), None)
            .await
    }

    async fn journey(&self, user: usize) -> Journey {
        let mut answers = Vec::new();
        let end = self.shop(user, &mut answers).await;
        Journey { end, answers }
    }

    async fn shop(&self, user: usize, answers: &mut Vec<Answer>) -> anyhow::Result<End> {
        let mut charged = false;
        let mut entry = self.room(answers, user, user, Method::POST).await?;
        loop {
            match (entry.status, entry.room_status()) {
                (200, "SOLD_OUT") => return Ok(End::SoldOut),
                (200, "WAITING") => {
                    let told = entry
                        .body
                        .get("pollAfterSeconds")
                        .and_then(Value::as_u64)
                        .unwrap_or(1);
                    let wait = Duration::from_secs(told);
                    tokio::time::sleep(self.max_poll.map_or(wait, |m| wait.min(m))).await;
                    entry = self.room(answers, user + 1, user, Method::GET).await?;
                }
                (404, _) => entry = self.room(answers, user, user, Method::POST).await?,
                (200, "ADMITTED") => {
                    if !charged {
                        let charge = self
                            .send(
                                answers,
                                user,
                                Method::POST,
                                "/api/v1/points/charge",
                                Some(user),
                                Some(json!({ "amount": PRICE })),
                            )
                            .await?;
                        anyhow::ensure!(charge.status == 200, "charge: {}", charge.code());
                        charged = true;
                    }
                    match self.buy(user, answers).await? {
                        Some(end) => return Ok(end),
                        None => {
                            // nothing free now: queue again, held seats may
                            // come back
                            self.room(answers, user, user, Method::DELETE).await?;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            entry = self.room(answers, user, user, Method::POST).await?;
                        }
                    }
                }
                _ => anyhow::bail!("the room answered {}", entry.code()),
            }
        }
    }

    /// Holds a random free seat and pays it. `None` when no seat is free
    /// (or the admission ended: queue again).
    async fn buy(&self, user: usize, answers: &mut Vec<Answer>) -> anyhow::Result<Option<End>> {
        loop {
            let mut order = self.schedules.clone();
            fastrand::shuffle(&mut order);
            let mut pick = None;
            for schedule in order {
                let path = format!("/api/v1/schedules/{schedule}/seats?status=AVAILABLE");
                let seats = self
                    .send(answers, user, Method::GET, &path, None, None)
                    .await?;
                anyhow::ensure!(seats.status == 200, "seat map: {}", seats.code());
                let free: Vec<u64> = seats
                    .body
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.get("number").and_then(Value::as_u64))
                    .collect();
                if !free.is_empty() {
                    pick = Some((schedule, free[fastrand::usize(..free.len())]));
                    break;
                }
            }
            let Some((schedule, seat)) = pick else {
                return Ok(None);
            };
            let held = self
                .send(
                    answers,
                    user,
                    Method::POST,
                    "/api/v1/reservations",
                    Some(user),
                    Some(json!({"scheduleId": schedule.get(), "seatNumber": seat})),
                )
                .await?;
            match (held.status, held.body.get("code").and_then(Value::as_str)) {
                (201, _) => {}
                (409, Some("seat-unavailable")) => continue,
                (403, Some("not-admitted")) => return Ok(None),
                _ => anyhow::bail!("reserve: {}", held.code()),
            }
            let id = held.body["id"].as_u64().context("reservation id")?;
            let paid = self
                .send(
                    answers,
                    user,
                    Method::POST,
                    "/api/v1/payments",
                    Some(user),
                    Some(json!({ "reservationId": id })),
                )
                .await?;
            anyhow::ensure!(paid.status == 201, "pay: {}", paid.code());
            return Ok(Some(End::Paid(Instant::now())));
        }
    }
}

pub(super) async fn run(inst: &Instances, config: &LabConfig) -> anyhow::Result<Vec<Row>> {
    let c = &config.room;
    let users = c.on_sale_users;
    let concert = inst.sql.create_concert("Lab on-sale").await?;
    let mut schedules = Vec::new();
    for day in 0..SCHEDULES {
        let starts = Utc::now() + chrono::Duration::days(60 + day as i64);
        schedules.push(inst.sql.create_schedule(concert, starts, |_| PRICE).await?);
    }
    let client = Arc::new(Client::new(inst, c.connections, 30_000_000, users)?);
    for i in 0..client.instances() {
        client.live(i).await?;
    }
    let shopper = Arc::new(Shopper {
        client,
        slots: Arc::new(Semaphore::new(c.connections)),
        concert,
        schedules,
        max_poll: c.max_poll,
    });
    let sampler = Sampler::start(inst.room()?, concert, Duration::from_millis(10));
    let started = Instant::now();
    let tasks: Vec<_> = (0..users)
        .map(|user| {
            let shopper = shopper.clone();
            tokio::spawn(async move { shopper.journey(user).await })
        })
        .collect();
    let mut journeys = Vec::with_capacity(users);
    for task in tasks {
        match tokio::time::timeout_at((started + STALL).into(), task).await {
            Ok(journey) => journeys.push(journey.context("a shopper panicked")?),
            Err(_) => anyhow::bail!("on-sale stalled: not every user answered in {STALL:?}"),
        }
    }
    let all_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (max_admitted, samples) = sampler.finish().await?;

    let mut violations = Vec::new();
    let mut paid = 0u64;
    let mut sold_out = 0u64;
    let mut last_sale = None;
    for (user, journey) in journeys.iter().enumerate() {
        match &journey.end {
            Ok(End::Paid(at)) => {
                paid += 1;
                last_sale = last_sale.max(Some(*at));
            }
            Ok(End::SoldOut) => sold_out += 1,
            Err(e) => violations.push(format!("user {user} unanswered: {e:#}")),
        }
    }
    let answers: Vec<Answer> = journeys.into_iter().flat_map(|j| j.answers).collect();
    let server_errors = answers.iter().filter(|a| a.status >= 500).count();
    let seats = (SCHEDULES * SEATS) as u64;
    let expected = seats.min(users as u64);
    let sold = inst.sql.sold_seats_of_concert(concert).await?;
    let double = inst.sql.double_sales().await?;
    let payments = inst.sql.payment_count().await?;
    if sold != expected || paid != expected || payments != expected {
        violations.push(format!(
            "{sold} seats sold, {paid} users paid, {payments} payments; expected {expected}"
        ));
    }
    if double != 0 {
        violations.push(format!("{double} seats sold twice"));
    }
    if paid + sold_out != users as u64 {
        violations.push(format!("{} of {users} users answered", paid + sold_out));
    }
    if server_errors > 0 {
        violations.push(format!("{server_errors} answers were 5xx"));
    }
    if max_admitted > u64::from(c.limit) {
        violations.push(format!(
            "{max_admitted} admitted at once (limit {})",
            c.limit
        ));
    }
    let sell_out_ms = last_sale.map_or(all_ms, |t| (t - started).as_secs_f64() * 1000.0);
    let mut row = http_row(SCENARIO, "room-on", &answers, sell_out_ms, sold, violations);
    row.tasks = users as u64;
    let f = &mut row.figures;
    f.insert("seconds_to_sell_out".into(), round2(sell_out_ms / 1000.0));
    f.insert("seconds_until_all_answered".into(), round2(all_ms / 1000.0));
    f.insert("seats_sold".into(), sold as f64);
    f.insert("double_sales".into(), double as f64);
    f.insert("users_paid".into(), paid as f64);
    f.insert("users_sold_out".into(), sold_out as f64);
    f.insert("users_answered".into(), (paid + sold_out) as f64);
    f.insert("requests".into(), answers.len() as f64);
    f.insert("max_admitted_sampled".into(), max_admitted as f64);
    f.insert("limit".into(), f64::from(c.limit));
    f.insert("admitted_count_samples".into(), samples as f64);
    Ok(vec![row])
}
