//! The experiments. Each repetition runs on fresh rows (a new user or a new
//! schedule), checks its invariants, and returns what it measured.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use concert_app::StrategyName;
use concert_domain::{
    ChargeError, ChargePoints, Failure, IdempotencyKey, Operation, PointKind, Points, ReserveError,
    ReserveSeat, ReserveSeats, ScheduleId, SeatNumber, UseError, UsePoints, UserId,
};
use concert_locking::LockStats;

use crate::config::{BATCH_SEATS, LabConfig, Scenario};
use crate::env::LabEnv;
use crate::progress::Progress;
use crate::row::{Rep, Row};

/// The raw SQL baselines, as the strategy names they appear under.
pub const RAW_CONDITIONAL: &str = "raw-conditional-update";
pub const RAW_FOR_UPDATE: &str = "raw-for-update";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Raw {
    Conditional,
    ForUpdate,
}

impl Raw {
    const ALL: [Raw; 2] = [Raw::Conditional, Raw::ForUpdate];

    fn name(self) -> &'static str {
        match self {
            Raw::Conditional => RAW_CONDITIONAL,
            Raw::ForUpdate => RAW_FOR_UPDATE,
        }
    }

    async fn use_points(
        self,
        sql: &concert_testkit::Sql,
        user: UserId,
        amount: u64,
    ) -> anyhow::Result<bool> {
        match self {
            Raw::Conditional => sql.use_conditional(user.get(), amount).await,
            Raw::ForUpdate => sql.use_for_update(user.get(), amount).await,
        }
    }
}

/// Who a row measures: a raw baseline or a service strategy.
#[derive(Debug, Clone, Copy)]
enum Subject {
    Raw(Raw),
    Service(StrategyName),
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Raw(r) => r.name(),
            Subject::Service(s) => s.as_str(),
        }
    }

    fn layer(self) -> &'static str {
        match self {
            Subject::Raw(_) => "raw",
            Subject::Service(_) => "service",
        }
    }
}

pub async fn run_all(env: &LabEnv, config: &LabConfig) -> anyhow::Result<Vec<Row>> {
    let strategies = &config.strategies;
    let mut plan: Vec<(Scenario, Subject, Option<&'static str>)> = Vec::new();
    for scenario in &config.scenarios {
        let raw_rows = Raw::ALL.map(Subject::Raw);
        let service_rows = strategies.iter().map(|s| Subject::Service(*s));
        // point rows only for the strategies that control point use
        let point_strategies = strategies.iter().filter(|s| !s.seats_only());
        match scenario {
            Scenario::PointUse => {
                plan.extend(raw_rows.iter().map(|r| (*scenario, *r, None)));
                plan.extend(point_strategies.map(|s| (*scenario, Subject::Service(*s), None)));
            }
            Scenario::PointCharge => plan.extend(
                ["optimistic", "pessimistic"]
                    .into_iter()
                    .map(|s| (*scenario, Subject::Service(StrategyName::named(s)), None)),
            ),
            Scenario::SeatRace | Scenario::BatchRace => {
                plan.extend(service_rows.map(|s| (*scenario, s, None)))
            }
            // run on app instances of their own (`crate::room`)
            Scenario::WaitingRoom | Scenario::OnSale => {}
            // their own set-up: run after the others
            Scenario::Relay | Scenario::SeatMap => {}
            Scenario::Sustained => {
                for target in ["hot-row", "distinct-rows"] {
                    plan.extend(raw_rows.iter().map(|r| (*scenario, *r, Some(target))));
                    plan.extend(
                        strategies
                            .iter()
                            .filter(|s| !s.seats_only())
                            .map(|s| (*scenario, Subject::Service(*s), Some(target))),
                    );
                }
            }
        }
    }

    // Repetitions are interleaved (every row once, then every row again...)
    // so that a drift in the machine's speed (disk flush latency, a noisy
    // neighbour) spreads over all rows instead of skewing some of them.
    let mut progress = Progress::new(plan.len() * config.reps, config.progress);
    let mut reps: Vec<Vec<Rep>> = vec![Vec::with_capacity(config.reps); plan.len()];
    let mut next_id = 1_000_000u64;
    for rep in 0..config.reps {
        for (row, (scenario, subject, target)) in plan.iter().copied().enumerate() {
            progress.step(&format!(
                "{} {} {} #{}",
                scenario.as_str(),
                target.unwrap_or(""),
                subject.name(),
                rep + 1
            ));
            next_id += 10_000;
            let measured = match scenario {
                Scenario::PointUse => point_use(env, config, subject, UserId::from(next_id)).await,
                Scenario::PointCharge => {
                    point_charge(env, config, subject, UserId::from(next_id)).await
                }
                Scenario::SeatRace => seat_race(env, config, subject, next_id).await,
                Scenario::BatchRace => batch_race(env, config, subject, next_id).await,
                Scenario::Sustained => {
                    sustained(env, config, subject, target == Some("hot-row"), next_id).await
                }
                Scenario::WaitingRoom | Scenario::OnSale => {
                    bail!("{} runs on app instances of its own", scenario.as_str())
                }
                Scenario::Relay | Scenario::SeatMap => continue,
            }
            .with_context(|| {
                format!(
                    "{} {} {} repetition {}",
                    scenario.as_str(),
                    target.unwrap_or(""),
                    subject.name(),
                    rep + 1
                )
            })?;
            reps[row].push(measured);
        }
    }
    let rows = plan
        .into_iter()
        .zip(reps)
        .map(|((scenario, subject, target), reps)| {
            Row::summarise(
                scenario.as_str(),
                subject.name(),
                subject.layer(),
                target,
                reps,
            )
        })
        .collect::<Vec<_>>();
    let mut rows = rows;
    if config.scenarios.contains(&Scenario::Relay) {
        rows.extend(crate::events::relay(env, config).await?);
    }
    if config.scenarios.contains(&Scenario::SeatMap) {
        rows.extend(crate::events::seat_map(env, config).await?);
    }
    Ok(rows)
}

/// How a failed operation is counted in the rows: the variant's name,
/// written once per error type (the compiler checks every variant).
trait Kind {
    fn kind(&self) -> &'static str;
}

impl Kind for Failure {
    fn kind(&self) -> &'static str {
        match self {
            Failure::Conflict => "Conflict",
            Failure::LockTimeout => "LockTimeout",
            Failure::LockLost => "LockLost",
            Failure::Unavailable(_) => "Unavailable",
            Failure::Unknown(_) => "Unknown",
        }
    }
}

impl Kind for UseError {
    fn kind(&self) -> &'static str {
        match self {
            UseError::InsufficientPoints { .. } => "InsufficientPoints",
            UseError::Failed(f) => f.kind(),
        }
    }
}

impl Kind for ChargeError {
    fn kind(&self) -> &'static str {
        match self {
            ChargeError::BalanceLimit { .. } => "BalanceLimit",
            ChargeError::KeyReused => "KeyReused",
            ChargeError::Failed(f) => f.kind(),
        }
    }
}

impl Kind for ReserveError {
    fn kind(&self) -> &'static str {
        match self {
            ReserveError::SeatNotFound => "SeatNotFound",
            ReserveError::SeatUnavailable { .. } => "SeatUnavailable",
            ReserveError::HoldLimit { .. } => "HoldLimit",
            ReserveError::NotAdmitted => "NotAdmitted",
            ReserveError::Failed(f) => f.kind(),
        }
    }
}

/// What one task of a race ended with: `Err` names the failure's kind.
type Outcome = Result<(), &'static str>;

/// Spawns `tasks` tasks that start together and returns each outcome and the
/// wall time from the first spawn to the last completion.
async fn race<T, F, Fut>(tasks: usize, make: F) -> anyhow::Result<(Vec<T>, f64)>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
    let futures: Vec<_> = (0..tasks).map(&make).collect();
    let started = Instant::now();
    let handles: Vec<_> = futures
        .into_iter()
        .map(|fut| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks);
    for handle in handles {
        outcomes.push(handle.await.context("a lab task panicked")?);
    }
    Ok((outcomes, started.elapsed().as_secs_f64() * 1000.0))
}

fn tally(outcomes: &[Outcome]) -> (u64, BTreeMap<String, u64>) {
    let mut failures = BTreeMap::new();
    let mut successes = 0;
    for outcome in outcomes {
        match outcome {
            Ok(()) => successes += 1,
            Err(kind) => *failures.entry((*kind).to_owned()).or_insert(0) += 1,
        }
    }
    (successes, failures)
}

/// Counters read before a service run, to report what the run itself did.
struct Before {
    strategy: StrategyName,
    op: Operation,
    lock: Option<LockStats>,
    units: u64,
}

impl Before {
    fn read(env: &LabEnv, strategy: StrategyName, op: Operation) -> Before {
        Before {
            strategy,
            op,
            lock: env.lock_stats(strategy),
            units: env.counts.get(op, strategy.as_str()).attempts,
        }
    }

    /// (attempts, retries) since: attempts are lock acquisition attempts
    /// for lock strategies and units of work run otherwise; retries are
    /// the units run beyond one per call (optimistic conflicts retried).
    fn since(&self, env: &LabEnv, calls: u64) -> (u64, u64) {
        let units = env
            .counts
            .get(self.op, self.strategy.as_str())
            .attempts
            .saturating_sub(self.units);
        let attempts = match (self.lock, env.lock_stats(self.strategy)) {
            (Some(b), Some(a)) => a.since(&b).attempts,
            _ => units,
        };
        (attempts, units.saturating_sub(calls))
    }
}

/// Balance and history agree: `initial` plus `delta` per success, and the
/// newest `successes` history entries step by exactly `delta`. Returns the
/// balance and what disagreed.
#[allow(clippy::too_many_arguments)]
async fn check_wallet(
    env: &LabEnv,
    user: UserId,
    initial: u64,
    delta: i64,
    successes: u64,
    history_before: usize,
    kind: PointKind,
) -> anyhow::Result<(u64, Vec<String>)> {
    let mut violations = Vec::new();
    let services = &env.checker;
    let balance = services.points.balance(user).await?.balance;
    let expected = initial as i64 + delta * successes as i64;
    if balance as i64 != expected {
        violations.push(format!(
            "user {user}: balance {balance}, expected {expected} ({successes} successes)"
        ));
    }
    let history = services.points.history(user).await?;
    let new = history.len() - history_before.min(history.len());
    if new as u64 != successes {
        violations.push(format!(
            "user {user}: {new} new history entries for {successes} successes"
        ));
    }
    let entries = &history[..new];
    if let Some(other) = entries.iter().find(|h| h.kind != kind) {
        violations.push(format!("user {user}: unexpected {:?} entry", other.kind));
    }
    let mut afters: Vec<i64> = entries.iter().map(|h| h.balance_after as i64).collect();
    afters.sort_unstable();
    let mut wanted: Vec<i64> = (1..=successes as i64)
        .map(|k| initial as i64 + delta * k)
        .collect();
    wanted.sort_unstable();
    if afters != wanted {
        violations.push(format!(
            "user {user}: history balance_after values do not step by {delta}"
        ));
    }
    Ok((balance, violations))
}

async fn fund(env: &LabEnv, user: UserId, balance: u64) -> anyhow::Result<usize> {
    env.sql.set_balance(user, balance).await?;
    Ok(env.checker.points.history(user).await?.len())
}

async fn point_use(
    env: &LabEnv,
    c: &LabConfig,
    subject: Subject,
    user: UserId,
) -> anyhow::Result<Rep> {
    let history_before = fund(env, user, c.use_initial).await?;
    let amount = Points::new(c.use_amount as i64)?;
    let (outcomes, ms, attempts, retries) = match subject {
        Subject::Raw(raw) => {
            let sql = Arc::new(env.sql.clone());
            let (outcomes, ms) = race(c.use_tasks, |_| {
                let sql = sql.clone();
                async move {
                    match raw.use_points(&sql, user, amount.get()).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("InsufficientPoints"),
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "raw baseline failed");
                            Err("Error")
                        }
                    }
                }
            })
            .await?;
            (outcomes, ms, c.use_tasks as u64, 0)
        }
        Subject::Service(strategy) => {
            let services = Arc::new(env.services(strategy)?);
            let before = Before::read(env, strategy, Operation::UsePoints);
            let (outcomes, ms) = race(c.use_tasks, |_| {
                let services = services.clone();
                async move {
                    services
                        .points
                        .use_points(UsePoints { user, amount })
                        .await
                        .map(drop)
                        .map_err(|e| e.kind())
                }
            })
            .await?;
            let (attempts, retries) = before.since(env, c.use_tasks as u64);
            (outcomes, ms, attempts, retries)
        }
    };
    let (successes, failures) = tally(&outcomes);
    let (balance, violations) = check_wallet(
        env,
        user,
        c.use_initial,
        -(c.use_amount as i64),
        successes,
        history_before,
        PointKind::Use,
    )
    .await?;
    Ok(Rep {
        tasks: c.use_tasks as u64,
        successes,
        failures,
        final_balance: Some(balance),
        attempts,
        retries,
        ms,
        violations,
        ..Rep::default()
    })
}

async fn point_charge(
    env: &LabEnv,
    c: &LabConfig,
    subject: Subject,
    user: UserId,
) -> anyhow::Result<Rep> {
    let Subject::Service(strategy) = subject else {
        bail!("point-charge has no raw baseline");
    };
    let history_before = fund(env, user, c.charge_initial).await?;
    let amount = Points::new(c.charge_amount as i64)?;
    let services = Arc::new(env.services(strategy)?);
    let before = Before::read(env, strategy, Operation::Charge);
    let (outcomes, ms) = race(c.charge_tasks, |_| {
        let services = services.clone();
        async move {
            services
                .points
                .charge(ChargePoints {
                    user,
                    amount,
                    idempotency: None::<IdempotencyKey>,
                })
                .await
                .map(drop)
                .map_err(|e| e.kind())
        }
    })
    .await?;
    let (attempts, retries) = before.since(env, c.charge_tasks as u64);
    let (successes, failures) = tally(&outcomes);
    let (balance, violations) = check_wallet(
        env,
        user,
        c.charge_initial,
        c.charge_amount as i64,
        successes,
        history_before,
        PointKind::Charge,
    )
    .await?;
    Ok(Rep {
        tasks: c.charge_tasks as u64,
        successes,
        failures,
        final_balance: Some(balance),
        attempts,
        retries,
        ms,
        violations,
        ..Rep::default()
    })
}

async fn seat_race(
    env: &LabEnv,
    c: &LabConfig,
    subject: Subject,
    first_user: u64,
) -> anyhow::Result<Rep> {
    let Subject::Service(strategy) = subject else {
        bail!("seat-race has no raw baseline");
    };
    let concert = env.sql.create_concert("Lab race").await?;
    let schedule: ScheduleId = env
        .sql
        .create_schedule(concert, Utc::now() + chrono::Duration::days(30), |_| 500)
        .await?;
    let seat = SeatNumber::new(1)?;
    let services = Arc::new(env.services(strategy)?);
    let before = Before::read(env, strategy, Operation::Reserve);
    let (outcomes, ms) = race(c.seat_users, |i| {
        let services = services.clone();
        let user = UserId::from(first_user + i as u64);
        async move {
            services
                .reservations
                .reserve(ReserveSeat {
                    user,
                    schedule,
                    seat,
                })
                .await
                .map(drop)
                .map_err(|e| e.kind())
        }
    })
    .await?;
    let (attempts, retries) = before.since(env, c.seat_users as u64);
    let (successes, failures) = tally(&outcomes);
    let live = env.sql.live_reservations(schedule, seat).await?;
    let mut violations = Vec::new();
    if successes != 1 || live != 1 {
        violations.push(format!(
            "schedule {schedule} seat {seat}: {successes} winners and {live} live reservations"
        ));
    }
    let answered: u64 = successes + failures.values().sum::<u64>();
    ensure!(answered == c.seat_users as u64, "a racer was not answered");
    Ok(Rep {
        tasks: c.seat_users as u64,
        successes,
        failures,
        final_balance: None,
        attempts,
        retries,
        ms,
        violations,
        held_twice: Some(u64::from(successes > 1 || live > 1)),
        ..Rep::default()
    })
}

/// The seats batch-race user `i` asks for: [`BATCH_SEATS`] consecutive
/// seats, starting 7 seats after the previous user's (modulo the map), so
/// that every group overlaps its neighbours'.
pub fn batch_group(i: usize) -> Vec<u8> {
    let span = SeatNumber::MAX as usize - BATCH_SEATS + 1;
    let start = 1 + (i * 7 % span) as u8;
    (start..start + BATCH_SEATS as u8).collect()
}

/// Users race for overlapping groups of seats of one schedule, each
/// asking for the whole group in one request. Exact when no seat went to
/// two winners (in the answers and in storage), every request was all or
/// nothing, and every racer was answered.
async fn batch_race(
    env: &LabEnv,
    c: &LabConfig,
    subject: Subject,
    first_user: u64,
) -> anyhow::Result<Rep> {
    let Subject::Service(strategy) = subject else {
        bail!("batch-race has no raw baseline");
    };
    let concert = env.sql.create_concert("Lab batch race").await?;
    let schedule: ScheduleId = env
        .sql
        .create_schedule(concert, Utc::now() + chrono::Duration::days(30), |_| 500)
        .await?;
    let services = Arc::new(env.services(strategy)?);
    let before = Before::read(env, strategy, Operation::Reserve);
    let (outcomes, ms) = race(c.batch_users, |i| {
        let services = services.clone();
        let user = UserId::from(first_user + i as u64);
        let seats: Vec<SeatNumber> = batch_group(i)
            .into_iter()
            .filter_map(|n| SeatNumber::new(i64::from(n)).ok())
            .collect();
        async move {
            let cmd = ReserveSeats::new(user, schedule, seats, BATCH_SEATS)
                .map_err(|_| "InvalidRequest")?;
            services
                .reservations
                .reserve_many(cmd)
                .await
                .map(|held| {
                    held.iter()
                        .map(|r| r.seat_number.get())
                        .collect::<Vec<u8>>()
                })
                .map_err(|e| e.kind())
        }
    })
    .await?;
    let (attempts, retries) = before.since(env, c.batch_users as u64);
    let plain: Vec<Outcome> = outcomes
        .iter()
        .map(|o| o.as_ref().map(drop).map_err(|e| *e))
        .collect();
    let (successes, failures) = tally(&plain);

    let mut violations = Vec::new();
    // the answers: winners got exactly their group, and no seat twice
    let mut winners_of: BTreeMap<u8, u64> = BTreeMap::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        if let Ok(seats) = outcome {
            if *seats != batch_group(i) {
                violations.push(format!(
                    "user {}: held {seats:?}, asked {:?}",
                    first_user + i as u64,
                    batch_group(i)
                ));
            }
            for seat in seats {
                *winners_of.entry(*seat).or_insert(0) += 1;
            }
        }
    }
    let answered_twice = winners_of.values().filter(|n| **n > 1).count() as u64;
    // storage: one live reservation per held seat, all or nothing per user
    let live = env.sql.live_reservations_by_seat(schedule).await?;
    let stored_twice = live.iter().filter(|(_, n)| *n > 1).count() as u64;
    let live_total: u64 = live.iter().map(|(_, n)| n).sum();
    if live_total != successes * BATCH_SEATS as u64 {
        violations.push(format!(
            "schedule {schedule}: {live_total} live reservations for {successes} winning groups"
        ));
    }
    let stored: BTreeMap<u64, u64> = env
        .sql
        .reservations_by_user(schedule)
        .await?
        .into_iter()
        .map(|(u, n)| (u.get(), n))
        .collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        let user = first_user + i as u64;
        let expected = if outcome.is_ok() {
            BATCH_SEATS as u64
        } else {
            0
        };
        let found = stored.get(&user).copied().unwrap_or(0);
        if found != expected {
            violations.push(format!(
                "user {user}: {found} reservations, not all or nothing"
            ));
        }
    }
    let held_twice = answered_twice + stored_twice;
    if held_twice > 0 {
        violations.push(format!(
            "schedule {schedule}: {held_twice} seats held twice"
        ));
    }
    let answered: u64 = successes + failures.values().sum::<u64>();
    ensure!(answered == c.batch_users as u64, "a racer was not answered");
    Ok(Rep {
        tasks: c.batch_users as u64,
        successes,
        failures,
        final_balance: None,
        attempts,
        retries,
        ms,
        violations,
        held_twice: Some(held_twice),
        ..Rep::default()
    })
}

/// What one sustained worker did: operations that succeeded, failures by
/// kind.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: BTreeMap<&'static str, u64>,
}

async fn sustained(
    env: &LabEnv,
    c: &LabConfig,
    subject: Subject,
    hot: bool,
    first_user: u64,
) -> anyhow::Result<Rep> {
    let workers = c.sustained_workers;
    let per_worker = c.sustained_ops.div_ceil(workers);
    let ops = per_worker * workers;
    let users: Vec<UserId> = if hot {
        vec![UserId::from(first_user)]
    } else {
        (0..workers as u64)
            .map(|w| UserId::from(first_user + w))
            .collect()
    };
    let initial = if hot { ops as u64 } else { per_worker as u64 };
    let mut before_history = Vec::with_capacity(users.len());
    for user in &users {
        before_history.push(fund(env, *user, initial).await?);
    }
    let one = Points::new(1)?;
    let services = match subject {
        Subject::Service(strategy) => Some(Arc::new(env.services(strategy)?)),
        Subject::Raw(_) => None,
    };
    let before = match subject {
        Subject::Service(s) => Some(Before::read(env, s, Operation::UsePoints)),
        Subject::Raw(_) => None,
    };
    let sql = Arc::new(env.sql.clone());
    let users_for_tasks = users.clone();
    let task_services = services.clone();
    let (tallies, ms) = race(workers, move |w| {
        let user = users_for_tasks[if hot { 0 } else { w }];
        let services = task_services.clone();
        let sql = sql.clone();
        async move {
            let mut tally = Tally::default();
            for _ in 0..per_worker {
                let outcome: Outcome = match (&services, subject) {
                    (Some(s), _) => s
                        .points
                        .use_points(UsePoints { user, amount: one })
                        .await
                        .map(drop)
                        .map_err(|e| e.kind()),
                    (None, Subject::Raw(raw)) => match raw.use_points(&sql, user, 1).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("InsufficientPoints"),
                        Err(_) => Err("Error"),
                    },
                    (None, Subject::Service(_)) => Err("Unknown"),
                };
                match outcome {
                    Ok(()) => tally.ok += 1,
                    Err(kind) => *tally.failed.entry(kind).or_insert(0) += 1,
                }
            }
            tally
        }
    })
    .await?;
    let successes: u64 = tallies.iter().map(|t| t.ok).sum();
    let mut failures = BTreeMap::new();
    for tally in &tallies {
        for (kind, n) in &tally.failed {
            *failures.entry((*kind).to_owned()).or_insert(0) += n;
        }
    }
    // exactness: every success took exactly one point, once
    let mut violations = Vec::new();
    let mut balance_sum = 0;
    let mut taken = 0;
    for (user, before) in users.iter().zip(before_history) {
        let balance = env.checker.points.balance(*user).await?.balance;
        let history = env.checker.points.history(*user).await?;
        let entries = history.len().saturating_sub(before) as u64;
        let gone = initial.saturating_sub(balance);
        if entries != gone || balance > initial {
            violations.push(format!(
                "user {user}: {entries} history entries for {gone} points taken (balance {balance})"
            ));
        }
        balance_sum += balance;
        taken += gone;
    }
    if taken != successes {
        violations.push(format!(
            "{taken} points taken for {successes} successful operations"
        ));
    }
    let (attempts, retries) = match &before {
        Some(before) => before.since(env, ops as u64),
        None => (ops as u64, 0),
    };
    Ok(Rep {
        tasks: ops as u64,
        successes,
        failures,
        final_balance: Some(balance_sum),
        attempts,
        retries,
        ms,
        violations,
        ..Rep::default()
    })
}
