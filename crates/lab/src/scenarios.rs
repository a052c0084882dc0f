//! The experiments. Each repetition runs on fresh rows (a new user or a new
//! schedule), checks its invariants, and returns what it measured.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use concert_domain::{
    ChargePoints, IdempotencyKey, PointKind, Points, ReserveSeat, ScheduleId, SeatNumber, Strategy,
    UsePoints, UserId,
};
use concert_mysql::{admin, raw};

use crate::config::{LabConfig, Scenario};
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
        db: &concert_mysql::Db,
        user: UserId,
        amount: u64,
    ) -> anyhow::Result<bool> {
        match self {
            Raw::Conditional => raw::use_conditional(db, user.get(), amount).await,
            Raw::ForUpdate => raw::use_for_update(db, user.get(), amount).await,
        }
    }
}

/// Who a row measures: a raw baseline or a service strategy.
#[derive(Debug, Clone, Copy)]
enum Subject {
    Raw(Raw),
    Service(Strategy),
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
        match scenario {
            Scenario::PointUse => {
                plan.extend(raw_rows.iter().map(|r| (*scenario, *r, None)));
                plan.extend(service_rows.map(|s| (*scenario, s, None)));
            }
            Scenario::PointCharge => plan.extend(
                [Strategy::Optimistic, Strategy::Pessimistic]
                    .into_iter()
                    .map(|s| (*scenario, Subject::Service(s), None)),
            ),
            Scenario::SeatRace => plan.extend(service_rows.map(|s| (*scenario, s, None))),
            Scenario::Sustained => {
                for target in ["hot-row", "distinct-rows"] {
                    plan.extend(raw_rows.iter().map(|r| (*scenario, *r, Some(target))));
                    plan.extend(
                        strategies
                            .iter()
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
                Scenario::Sustained => {
                    sustained(env, config, subject, target == Some("hot-row"), next_id).await
                }
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
        .collect();
    Ok(rows)
}

/// The failure's variant name (`Conflict`, `SeatUnavailable`, ...).
fn kind<E: std::fmt::Debug>(e: &E) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("Unknown")
        .to_owned()
}

/// Spawns `tasks` tasks that start together and returns each outcome and the
/// wall time from the first spawn to the last completion.
async fn race<F, Fut>(tasks: usize, make: F) -> anyhow::Result<(Vec<Result<(), String>>, f64)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
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

fn tally(outcomes: &[Result<(), String>]) -> (u64, BTreeMap<String, u64>) {
    let mut failures = BTreeMap::new();
    let mut successes = 0;
    for outcome in outcomes {
        match outcome {
            Ok(()) => successes += 1,
            Err(kind) => *failures.entry(kind.clone()).or_insert(0) += 1,
        }
    }
    (successes, failures)
}

fn attempts_since(
    env: &LabEnv,
    strategy: Strategy,
    before: Option<concert_redis_lock::LockStats>,
    repository_attempts: u64,
) -> u64 {
    match (before, env.lock_stats(strategy)) {
        (Some(b), Some(a)) => a.attempts - b.attempts,
        _ => repository_attempts,
    }
}

/// Balance and history agree: `initial` plus `delta` per success, and the
/// newest `successes` history entries step by exactly `delta`.
async fn check_wallet(
    env: &LabEnv,
    user: UserId,
    initial: u64,
    delta: i64,
    successes: u64,
    history_before: usize,
    kind: PointKind,
) -> anyhow::Result<u64> {
    let services = &env.checker;
    let balance = services.points.balance(user).await?.balance;
    let expected = initial as i64 + delta * successes as i64;
    ensure!(
        balance as i64 == expected,
        "EXACTNESS VIOLATED: balance {balance}, expected {expected} ({successes} successes)"
    );
    let history = services.points.history(user).await?;
    let new = history.len() - history_before.min(history.len());
    ensure!(
        new as u64 == successes,
        "EXACTNESS VIOLATED: {new} new history entries for {successes} successes"
    );
    let mut afters: Vec<i64> = history[..new]
        .iter()
        .map(|h| {
            ensure!(
                h.kind == kind,
                "EXACTNESS VIOLATED: unexpected {:?} entry",
                h.kind
            );
            Ok(h.balance_after as i64)
        })
        .collect::<anyhow::Result<_>>()?;
    afters.sort_unstable();
    let mut wanted: Vec<i64> = (1..=successes as i64)
        .map(|k| initial as i64 + delta * k)
        .collect();
    wanted.sort_unstable();
    ensure!(
        afters == wanted,
        "EXACTNESS VIOLATED: history balance_after values do not step by {delta}"
    );
    Ok(balance)
}

async fn fund(env: &LabEnv, user: UserId, balance: u64) -> anyhow::Result<usize> {
    admin::set_balance(&env.db, user, balance).await?;
    let services = &env.checker;
    Ok(services.points.history(user).await?.len())
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
            let env_db = Arc::new(env.db.clone());
            let (outcomes, ms) = race(c.use_tasks, |_| {
                let db = env_db.clone();
                async move {
                    match raw.use_points(&db, user, amount.get()).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("InsufficientPoints".to_owned()),
                        Err(e) => Err(format!("Error: {e:#}")),
                    }
                }
            })
            .await?;
            (outcomes, ms, c.use_tasks as u64, 0)
        }
        Subject::Service(strategy) => {
            let services = Arc::new(env.services(strategy)?);
            let before = env.lock_stats(strategy);
            let (outcomes, ms) = race(c.use_tasks, |_| {
                let services = services.clone();
                async move {
                    services
                        .points
                        .use_points(UsePoints { user, amount })
                        .await
                        .map(drop)
                        .map_err(|e| kind(&e))
                }
            })
            .await?;
            let stats = services.points.use_stats();
            let attempts = attempts_since(env, strategy, before, stats.attempts());
            (outcomes, ms, attempts, stats.retries())
        }
    };
    let (successes, failures) = tally(&outcomes);
    let balance = check_wallet(
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
    let before = env.lock_stats(strategy);
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
                .map_err(|e| kind(&e))
        }
    })
    .await?;
    let stats = services.points.charge_stats();
    let (successes, failures) = tally(&outcomes);
    let balance = check_wallet(
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
        attempts: attempts_since(env, strategy, before, stats.attempts()),
        retries: stats.retries(),
        ms,
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
    let concert = admin::create_concert(&env.db, "Lab race").await?;
    let schedule: ScheduleId = admin::create_schedule(
        &env.db,
        concert,
        Utc::now() + chrono::Duration::days(30),
        |_| 500,
    )
    .await?;
    let seat = SeatNumber::new(1)?;
    let services = Arc::new(env.services(strategy)?);
    let before = env.lock_stats(strategy);
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
                .map_err(|e| kind(&e))
        }
    })
    .await?;
    let (successes, failures) = tally(&outcomes);
    let live = admin::live_reservations(&env.db, schedule, seat).await?;
    ensure!(
        successes == 1 && live == 1,
        "EXACTNESS VIOLATED: {successes} winners and {live} live reservations for one seat"
    );
    let answered: u64 = successes + failures.values().sum::<u64>();
    ensure!(answered == c.seat_users as u64, "a racer was not answered");
    let stats = services.reservations.stats();
    Ok(Rep {
        tasks: c.seat_users as u64,
        successes,
        failures,
        final_balance: None,
        attempts: attempts_since(env, strategy, before, stats.attempts()),
        retries: stats.retries(),
        ms,
        ..Rep::default()
    })
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
    let lock_before = match subject {
        Subject::Service(s) => env.lock_stats(s),
        Subject::Raw(_) => None,
    };
    let env_db = Arc::new(env.db.clone());
    let users_for_tasks = users.clone();
    let task_services = services.clone();
    let (outcomes, ms) = race(workers, move |w| {
        let user = users_for_tasks[if hot { 0 } else { w }];
        let services = task_services.clone();
        let db = env_db.clone();
        async move {
            let mut failures = 0u64;
            for _ in 0..per_worker {
                let ok = match (&services, subject) {
                    (Some(s), _) => s
                        .points
                        .use_points(UsePoints { user, amount: one })
                        .await
                        .is_ok(),
                    (None, Subject::Raw(raw)) => {
                        matches!(raw.use_points(&db, user, 1).await, Ok(true))
                    }
                    (None, Subject::Service(_)) => false,
                };
                failures += u64::from(!ok);
            }
            if failures == 0 {
                Ok(())
            } else {
                Err(failures.to_string())
            }
        }
    })
    .await?;
    let failed: u64 = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .map(|n| n.parse::<u64>().unwrap_or(0))
        .sum();
    let successes = ops as u64 - failed;
    // exactness: every success took exactly one point, once
    let mut balance_sum = 0;
    let mut taken = 0;
    for (user, before) in users.iter().zip(before_history) {
        let services = &env.checker;
        let balance = services.points.balance(*user).await?.balance;
        let history = services.points.history(*user).await?;
        let entries = (history.len() - before) as u64;
        ensure!(
            entries == initial - balance,
            "EXACTNESS VIOLATED: {entries} history entries for {} points taken",
            initial - balance
        );
        balance_sum += balance;
        taken += initial - balance;
    }
    ensure!(
        taken == successes,
        "EXACTNESS VIOLATED: {taken} points taken for {successes} successful operations"
    );
    let (attempts, retries) = match (subject, &services) {
        (Subject::Service(strategy), Some(s)) => {
            let stats = s.points.use_stats();
            (
                attempts_since(env, strategy, lock_before, stats.attempts()),
                stats.retries(),
            )
        }
        _ => (ops as u64, 0),
    };
    let mut failures = BTreeMap::new();
    if failed > 0 {
        failures.insert("Failed".to_owned(), failed);
    }
    Ok(Rep {
        tasks: ops as u64,
        successes,
        failures,
        final_balance: Some(balance_sum),
        attempts,
        retries,
        ms,
        ..Rep::default()
    })
}
