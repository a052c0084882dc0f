//! `waiting-room`: the HTTP ceiling (`/health/live`), then N users enter
//! one room (`enter` row) and poll until admitted, leaving at once to free
//! the place (`poll` row), over `connections` concurrent requests spread
//! over the instances (a user polls the instance it did not enter on).
//!
//! Each poller polls its own users in their order of entry, the first one
//! until it is admitted (as clients told `pollAfterSeconds` by position
//! would poll the head most), without sleeping: the phase measures what
//! the room serves, not how long clients wait. The instances run with a
//! long idle time (`--room-idle`, 300 s) so that users far back, not
//! polled until near the head in this order, keep their places.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use concert_domain::WaitingRoom;
use reqwest::Method;

use super::{Answer, Client, Instances, Sampler, http_row, phase, rate, redis_delta, round2};
use crate::config::LabConfig;
use crate::row::Row;

const SCENARIO: &str = "waiting-room";

pub(super) async fn run(inst: &Instances, config: &LabConfig) -> anyhow::Result<Vec<Row>> {
    let c = &config.room;
    let users = c.users;
    let limit = c.limit as usize;
    let concert = inst.sql.create_concert("Lab waiting room").await?;
    inst.sql
        .create_schedule(concert, Utc::now() + chrono::Duration::days(60), |_| 500)
        .await?;
    // users 0..users; user `users` warms up (outside every measurement)
    let client = Arc::new(Client::new(inst, c.connections, 20_000_000, users + 1)?);
    let n = client.instances();
    for i in 0..n {
        client.live(i).await?;
        client.room(i, Method::POST, concert, users).await?;
        client.room(i, Method::GET, concert, users).await?;
        client.room(i, Method::DELETE, concert, users).await?;
    }

    // 1. the HTTP ceiling of these instances in this run (measured again
    // at the end: the baseline is both halves together, so that a drift of
    // the machine's speed during the run weighs on both sides)
    let (mut live, mut live_ms) = live_phase(&client, c.connections, c.live_requests / 2).await?;

    // 2. everyone enters
    let sampler = Sampler::start(inst.room()?, concert, Duration::from_millis(10));
    let calls_before = inst.redis_calls().await;
    let (entered, enter_ms) = {
        let client = client.clone();
        phase(c.connections, users, move |user| {
            let client = client.clone();
            async move { client.room(user % n, Method::POST, concert, user).await }
        })
        .await?
    };
    let calls_entered = inst.redis_calls().await;
    let sampled_after_enter = sampler.round_trips();
    let mut violations = Vec::new();
    let ok = entered.iter().filter(|a| a.status == 200).count();
    if ok != users {
        violations.push(format!("{} entries were not 200", users - ok));
    }
    let admitted_at_entry = entered
        .iter()
        .filter(|a| a.room_status() == "ADMITTED")
        .count();
    let expected_admitted = limit.min(users);
    if admitted_at_entry != expected_admitted {
        violations.push(format!(
            "{admitted_at_entry} admitted at entry, expected {expected_admitted}"
        ));
    }
    let positions: Vec<u64> = entered.iter().filter_map(Answer::position).collect();
    let distinct: BTreeSet<u64> = positions.iter().copied().collect();
    let expected: BTreeSet<u64> = (1..=(users - expected_admitted) as u64).collect();
    if positions.len() != distinct.len() {
        violations.push(format!(
            "{} users shared a position",
            positions.len() - distinct.len()
        ));
    }
    if distinct != expected {
        violations.push("the positions handed out are not 1..=waiting".into());
    }
    let mut enter_row = http_row(SCENARIO, "enter", &entered, enter_ms, ok as u64, violations);
    let enter_rate = rate(entered.len(), enter_ms);
    if let (Some(before), Some(after)) = (&calls_before, &calls_entered) {
        let d = redis_delta(before, after);
        let sampler_calls = sampled_after_enter;
        let requests = users as f64;
        enter_row.figures.insert(
            "redis_round_trips_per_request".into(),
            round2(d.round_trips.saturating_sub(sampler_calls) as f64 / requests),
        );
        // each sample is one script running two ZCOUNTs
        enter_row.figures.insert(
            "redis_commands_per_request".into(),
            round2(d.commands.saturating_sub(3 * sampler_calls) as f64 / requests),
        );
    }

    // 3. poll until admitted, then leave
    let entry_until: Vec<Option<DateTime<Utc>>> = entered.iter().map(admitted_until).collect();
    let start_positions: Vec<Option<u64>> = entered.iter().map(Answer::position).collect();
    let calls_before = inst.redis_calls().await;
    let sampled_before = sampler.round_trips();
    let started = Instant::now();
    let workers: Vec<_> = (0..c.connections.min(users).max(1))
        .map(|w| {
            let client = client.clone();
            let mine: Vec<usize> = (w..users)
                .step_by(c.connections.min(users).max(1))
                .collect();
            let starts: Vec<(usize, Option<u64>)> =
                mine.iter().map(|u| (*u, start_positions[*u])).collect();
            tokio::spawn(poll_until_admitted(client, concert, starts))
        })
        .collect();
    let mut outcome = Polled::default();
    for worker in workers {
        outcome.merge(worker.await.context("a poller panicked")??);
    }
    let poll_ms = started.elapsed().as_secs_f64() * 1000.0;
    let calls_polled = inst.redis_calls().await;
    let sampled_polling = sampler.round_trips() - sampled_before;
    let (max_admitted, samples) = sampler.finish().await?;
    let (waiting_left, admitted_left) = inst.room()?.sizes(concert, Utc::now()).await?;

    let mut violations = outcome.violations.clone();
    if max_admitted > limit as u64 {
        violations.push(format!("{max_admitted} admitted at once (limit {limit})"));
    }
    if samples == 0 {
        violations.push("the admitted count was never sampled".into());
    }
    if (waiting_left, admitted_left) != (0, 0) {
        violations.push(format!(
            "{waiting_left} waiting and {admitted_left} admitted after everyone left"
        ));
    }
    // FIFO: in order of first entry, admissions end no earlier (the room's
    // time never goes back and every admission lasts the same). Those
    // admitted at entry came first, in the order of their admissions;
    // the others in the order of the positions they were given.
    let mut by_entry: Vec<(u64, Option<DateTime<Utc>>)> = (0..users)
        .map(|u| {
            let until = entry_until[u].or_else(|| outcome.until.get(&u).copied());
            (start_positions[u].unwrap_or(0), until)
        })
        .collect();
    by_entry.sort();
    let mut out_of_order = 0;
    let mut previous: Option<DateTime<Utc>> = None;
    for (_, until) in by_entry {
        match (previous, until) {
            (_, None) => {}
            (Some(p), Some(u)) if u < p => out_of_order += 1,
            (_, Some(u)) => previous = Some(u),
        }
    }
    if out_of_order > 0 {
        violations.push(format!(
            "{out_of_order} users admitted before an earlier entrant"
        ));
    }
    let answered = outcome.until.len() + entry_until.iter().filter(|u| u.is_some()).count();
    if answered != users {
        violations.push(format!("{answered} of {users} users were admitted"));
    }
    let requests: Vec<Answer> = outcome
        .polls
        .iter()
        .chain(outcome.leaves.iter())
        .cloned()
        .collect();
    let ok = requests.iter().filter(|a| a.status < 300).count();
    let (again, again_ms) = live_phase(
        &client,
        c.connections,
        c.live_requests - c.live_requests / 2,
    )
    .await?;
    live.extend(again);
    live_ms += again_ms;
    let live_ok = live.iter().filter(|a| a.status == 200).count();
    let live_rate = rate(live.len(), live_ms);
    let mut live_violations = Vec::new();
    if live_ok != live.len() {
        live_violations.push(format!(
            "{} /health/live answers were not 200",
            live.len() - live_ok
        ));
    }
    let mut live_row = http_row(
        SCENARIO,
        "health-live",
        &live,
        live_ms,
        live_ok as u64,
        live_violations,
    );
    live_row
        .figures
        .insert("requests_per_sec".into(), round2(live_rate));
    enter_row
        .figures
        .insert("vs_health_live".into(), round2(enter_rate / live_rate));

    let mut poll_row = http_row(SCENARIO, "poll", &requests, poll_ms, ok as u64, violations);
    let poll_rate = rate(requests.len(), poll_ms);
    let f = &mut poll_row.figures;
    f.insert("vs_health_live".into(), round2(poll_rate / live_rate));
    f.insert("polls".into(), outcome.polls.len() as f64);
    f.insert("leaves".into(), outcome.leaves.len() as f64);
    f.insert("max_admitted_sampled".into(), max_admitted as f64);
    f.insert("limit".into(), limit as f64);
    f.insert("admitted_count_samples".into(), samples as f64);
    let mut poll_ms_sorted: Vec<f64> = outcome.polls.iter().map(|a| a.ms).collect();
    poll_ms_sorted.sort_by(f64::total_cmp);
    if let Some(p99) = crate::row::percentile(&poll_ms_sorted, 0.99) {
        f.insert("poll_only_p99_ms".into(), p99);
    }
    if let (Some(before), Some(after)) = (&calls_before, &calls_polled) {
        let d = redis_delta(before, after);
        let n = requests.len() as f64;
        f.insert(
            "redis_round_trips_per_request".into(),
            round2(d.round_trips.saturating_sub(sampled_polling) as f64 / n),
        );
        f.insert(
            "redis_commands_per_request".into(),
            round2(d.commands.saturating_sub(3 * sampled_polling) as f64 / n),
        );
    }
    Ok(vec![live_row, enter_row, poll_row])
}

/// `requests` `/health/live` requests over the instances.
async fn live_phase(
    client: &Arc<Client>,
    connections: usize,
    requests: usize,
) -> anyhow::Result<(Vec<Answer>, f64)> {
    let client = client.clone();
    let n = client.instances();
    phase(connections, requests.max(1), move |i| {
        let client = client.clone();
        async move { client.live(i % n).await }
    })
    .await
}

fn admitted_until(answer: &Answer) -> Option<DateTime<Utc>> {
    if answer.room_status() != "ADMITTED" {
        return None;
    }
    answer
        .body
        .get("admittedUntil")
        .and_then(|v| v.as_str())
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What one poller saw.
#[derive(Default)]
struct Polled {
    polls: Vec<Answer>,
    leaves: Vec<Answer>,
    /// The end of each admission found by polling, by user.
    until: HashMap<usize, DateTime<Utc>>,
    violations: Vec<String>,
}

impl Polled {
    fn merge(&mut self, other: Polled) {
        self.polls.extend(other.polls);
        self.leaves.extend(other.leaves);
        self.until.extend(other.until);
        self.violations.extend(other.violations);
    }
}

/// Polls this worker's waiting users in their order of entry (the order
/// the room admits them in), the first until it is admitted; every admitted
/// user (also those admitted at entry) leaves at once.
async fn poll_until_admitted(
    client: Arc<Client>,
    concert: concert_domain::ConcertId,
    users: Vec<(usize, Option<u64>)>,
) -> anyhow::Result<Polled> {
    let n = client.instances();
    let mut out = Polled::default();
    let mut line = Vec::new();
    for (user, position) in users {
        match position {
            Some(p) => line.push((p, user)),
            None => out
                .leaves
                .push(client.room(user + n, Method::DELETE, concert, user).await?),
        }
    }
    line.sort();
    for (entered_at, user) in line {
        let mut last = entered_at;
        loop {
            // the instance the user did not enter on
            let answer = client.room(user + 1, Method::GET, concert, user).await?;
            let status = answer.room_status().to_owned();
            out.polls.push(answer.clone());
            match (answer.status, status.as_str()) {
                (200, "WAITING") => {
                    let position = answer.position().unwrap_or(u64::MAX);
                    if position > last {
                        out.violations
                            .push(format!("user {user}: position {last} -> {position}"));
                    }
                    last = position;
                }
                (200, "ADMITTED") => {
                    if let Some(until) = admitted_until(&answer) {
                        out.until.insert(user, until);
                    }
                    out.leaves
                        .push(client.room(user + n, Method::DELETE, concert, user).await?);
                    break;
                }
                _ => {
                    out.violations
                        .push(format!("user {user}: poll answered {}", answer.code()));
                    break;
                }
            }
        }
    }
    Ok(out)
}
