//! `lab chaos`: faults against several real app processes, with an
//! independent check of the invariants after each.
//!
//! The suite starts its own `mariadbd` and `redis-server` on free ports
//! (see [`concert_testkit::servers`]), a delay proxy in front of each, and
//! N instances of the `app` binary sharing them; drives a mixed load
//! through the HTTP API; and injects one fault at a time: Redis killed and
//! restarted empty, Redis paused longer than the lock lease, MariaDB paused,
//! MariaDB killed and restarted, an instance killed mid-request and
//! restarted, the network to Redis or MariaDB slowed down, several at once;
//! and, on a cluster of three Redis masters under `redis-redlock`, one and
//! then two masters down. After each scenario:
//!
//! - no response was a 500 (any 5xx but 503), no request outlived its
//!   budget;
//! - every instance answers normally (a reservation of a free seat
//!   succeeds) within 5 s of the dependency returning (the recovery time is
//!   measured by probing every instance every 100 ms);
//! - `app audit` passes on the database (no seat held or sold twice, no
//!   point created or lost, every confirmed reservation paid once).
//!
//! `--short` (one pass of each fault, about two minutes) runs in
//! `make test`; `make chaos` runs the long one and prints the table.

mod cluster;
mod load;
mod proxy;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use concert_app::StrategyName;
use concert_domain::UserId;
use serde::Serialize;
use serde_json::json;
use tokio::time::{Instant, sleep};

use cluster::{Cluster, ClusterConfig};
use load::{Load, LoadConfig, Tally};

pub const USAGE: &str =
    "usage: lab chaos [--short] [--instances N] [--users N] [--app PATH] [--only a,b] [--out DIR]

  --short        one short pass of each fault (about two minutes; make test)
  --instances N  app instances (default 3)
  --users N      virtual users (default 24 short, 96 long)
  --app PATH     the app binary (default: next to this lab binary)
  --only a,b     run only these scenarios (names as in the table)
  --out DIR      logs and chaos.json (default target/chaos)";

/// One fault the suite can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    RedisRestart,
    RedisPause,
    MariadbPause,
    MariadbRestart,
    AppKill,
    RedisSlow,
    MariadbSlow,
    Combined,
    /// RedLock cluster: one of three masters down.
    RedlockOneDown,
    /// RedLock cluster: two of three masters down.
    RedlockTwoDown,
}

impl Fault {
    pub const SINGLE_REDIS: [Fault; 8] = [
        Fault::RedisRestart,
        Fault::RedisPause,
        Fault::MariadbPause,
        Fault::MariadbRestart,
        Fault::AppKill,
        Fault::RedisSlow,
        Fault::MariadbSlow,
        Fault::Combined,
    ];
    pub const REDLOCK: [Fault; 2] = [Fault::RedlockOneDown, Fault::RedlockTwoDown];

    pub fn name(self) -> &'static str {
        match self {
            Fault::RedisRestart => "redis-killed-restarted-empty",
            Fault::RedisPause => "redis-paused-past-lease",
            Fault::MariadbPause => "mariadb-paused",
            Fault::MariadbRestart => "mariadb-killed-restarted",
            Fault::AppKill => "instance-killed-restarted",
            Fault::RedisSlow => "redis-network-slow",
            Fault::MariadbSlow => "mariadb-network-slow",
            Fault::Combined => "combined",
            Fault::RedlockOneDown => "redlock-1-of-3-down",
            Fault::RedlockTwoDown => "redlock-2-of-3-down",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub short: bool,
    pub instances: usize,
    pub users: usize,
    pub app_bin: PathBuf,
    pub only: Vec<String>,
    pub out: PathBuf,
}

impl ChaosConfig {
    pub fn from_args(args: &[String]) -> anyhow::Result<ChaosConfig> {
        let short = args.iter().any(|a| a == "--short");
        let here = std::env::current_exe().context("the lab's own path")?;
        let mut c = ChaosConfig {
            short,
            instances: 3,
            users: if short { 24 } else { 96 },
            app_bin: here.with_file_name("app"),
            only: Vec::new(),
            out: PathBuf::from("target/chaos"),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
            };
            match flag.as_str() {
                "--short" => {}
                "--instances" => c.instances = value()?.parse().context("--instances")?,
                "--users" => c.users = value()?.parse().context("--users")?,
                "--app" => c.app_bin = PathBuf::from(value()?),
                "--only" => c.only = value()?.split(',').map(str::to_owned).collect(),
                "--out" => c.out = PathBuf::from(value()?),
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        if c.instances == 0 || c.users == 0 {
            bail!("--instances and --users must be at least 1");
        }
        Ok(c)
    }

    fn wanted(&self, fault: Fault) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == fault.name())
    }

    /// How long a fault lasts, the load before it and after recovery.
    fn timing(&self) -> Timing {
        if self.short {
            Timing {
                warm: Duration::from_millis(1500),
                fault: Duration::from_secs(3),
                after: Duration::from_millis(1500),
            }
        } else {
            Timing {
                warm: Duration::from_secs(5),
                fault: Duration::from_secs(10),
                after: Duration::from_secs(5),
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    warm: Duration,
    fault: Duration,
    after: Duration,
}

/// What one scenario found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub scenario: String,
    pub requests: u64,
    pub statuses: std::collections::BTreeMap<String, u64>,
    pub server_errors: u64,
    pub hung: u64,
    pub unreachable: u64,
    /// Seconds from the dependency's return until every instance served a
    /// reservation again (`None`: not within the patience).
    pub recovery_seconds: Option<f64>,
    pub audit_passed: bool,
    /// What went wrong (empty: the scenario passed).
    pub violations: Vec<String>,
    pub notes: Vec<String>,
}

/// The longest recovery the suite accepts.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);
/// The request budget: a request with no answer by then counts as hung.
const BUDGET: Duration = Duration::from_secs(15);

/// Runs every wanted scenario; returns one outcome each.
pub async fn run(config: &ChaosConfig) -> anyhow::Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    let single: Vec<Fault> = Fault::SINGLE_REDIS
        .into_iter()
        .filter(|f| config.wanted(*f))
        .collect();
    if !single.is_empty() {
        let mut cluster =
            Cluster::start(cluster_config(config, StrategyName::named("redis-pubsub"))).await?;
        let result = run_faults(config, &mut cluster, &single).await;
        cluster.stop().await;
        outcomes.extend(result?);
    }
    let redlock: Vec<Fault> = Fault::REDLOCK
        .into_iter()
        .filter(|f| config.wanted(*f))
        .collect();
    if !redlock.is_empty() {
        let mut cluster =
            Cluster::start(cluster_config(config, StrategyName::named("redis-redlock"))).await?;
        let result = run_faults(config, &mut cluster, &redlock).await;
        cluster.stop().await;
        outcomes.extend(result?);
    }
    Ok(outcomes)
}

fn cluster_config(config: &ChaosConfig, strategy: StrategyName) -> ClusterConfig {
    ClusterConfig {
        app_bin: config.app_bin.clone(),
        instances: config.instances,
        seat_strategy: strategy,
        lease: Duration::from_secs(2),
        lock_wait: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(2),
        schedules: 16,
        log_dir: config.out.join(strategy.as_str()),
        env: vec![
            // holds end soon, so the load keeps finding free seats
            ("APP_HOLD_SECONDS".to_owned(), "10".to_owned()),
            ("APP_WAITING_ROOM".to_owned(), "on".to_owned()),
            (
                "APP_WAITING_ROOM_ACTIVE_LIMIT".to_owned(),
                "100000".to_owned(),
            ),
        ],
    }
}

async fn run_faults(
    config: &ChaosConfig,
    cluster: &mut Cluster,
    faults: &[Fault],
) -> anyhow::Result<Vec<Outcome>> {
    let timing = config.timing();
    let mut outcomes = Vec::new();
    for (round, fault) in faults.iter().enumerate() {
        let load = Load::start(LoadConfig {
            bases: cluster.apps.iter().map(|a| a.base_url()).collect(),
            users: config.users,
            first_user: 1_000 * (round as u64 + 1),
            schedules: cluster.schedules.clone(),
            budget: BUDGET,
            concert: 1,
        });
        sleep(timing.warm).await;
        let mut notes = Vec::new();
        let healed = inject(cluster, *fault, timing, &mut notes).await?;
        let recovery = recovery_after(cluster, healed).await;
        sleep(timing.after).await;
        let tally = load.stop().await;
        let (audit_passed, audit) = cluster.app_command(&["audit"]).await?;
        outcomes.push(judge(*fault, tally, recovery, audit_passed, &audit, notes));
    }
    Ok(outcomes)
}

/// Injects `fault`, holds it for the fault time, heals it; returns when
/// the dependency is back (the instant recovery is measured from).
async fn inject(
    cluster: &mut Cluster,
    fault: Fault,
    timing: Timing,
    notes: &mut Vec<String>,
) -> anyhow::Result<Instant> {
    match fault {
        Fault::RedisRestart => {
            cluster.redis[0].kill();
            sleep(timing.fault).await;
            cluster.redis[0].restart().await?;
        }
        Fault::RedisPause => {
            cluster.redis[0].pause();
            // longer than the 2 s lock lease
            sleep(timing.fault.max(Duration::from_secs(3))).await;
            cluster.redis[0].resume();
        }
        Fault::MariadbPause => {
            cluster.maria.pause();
            sleep(timing.fault).await;
            cluster.maria.resume();
        }
        Fault::MariadbRestart => {
            cluster.maria.kill();
            sleep(timing.fault).await;
            cluster.maria.restart().await?;
        }
        Fault::AppKill => {
            cluster.kill_app(1 % cluster.apps.len()).await;
            sleep(timing.fault).await;
            cluster.restart_app(1 % cluster.apps.len()).await?;
        }
        Fault::RedisSlow => {
            cluster.redis_proxies[0].set_delay(Duration::from_millis(200));
            sleep(timing.fault).await;
            cluster.redis_proxies[0].heal();
        }
        Fault::MariadbSlow => {
            cluster.maria_proxy.set_delay(Duration::from_millis(200));
            sleep(timing.fault).await;
            cluster.maria_proxy.heal();
        }
        Fault::Combined => {
            cluster.redis[0].pause();
            cluster.maria_proxy.set_delay(Duration::from_millis(100));
            cluster.kill_app(0).await;
            sleep(timing.fault.max(Duration::from_secs(3))).await;
            cluster.redis[0].resume();
            cluster.maria_proxy.heal();
            cluster.restart_app(0).await?;
        }
        Fault::RedlockOneDown => {
            cluster.redis[0].kill();
            // with a majority left, reservations keep succeeding
            let served = probe_all(cluster, Duration::from_secs(5)).await;
            if served.is_none() {
                notes.push("one master down: reservations stopped".to_owned());
            }
            sleep(timing.fault).await;
            cluster.redis[0].restart().await?;
        }
        Fault::RedlockTwoDown => {
            cluster.redis[0].kill();
            cluster.redis[1].kill();
            // no majority: a reservation answers 503 within the lock wait
            // budget
            let started = Instant::now();
            let answer = probe_once(cluster, 0).await;
            let took = started.elapsed();
            notes.push(format!(
                "two masters down: a reservation answered {} in {:.2} s",
                answer.map_or("nothing".to_owned(), |s| s.to_string()),
                took.as_secs_f64()
            ));
            if answer != Some(503) || took > cluster.config.lock_wait + Duration::from_secs(1) {
                notes.push("VIOLATION: expected 503 within the wait budget".to_owned());
            }
            sleep(timing.fault).await;
            cluster.redis[0].restart().await?;
            cluster.redis[1].restart().await?;
        }
    }
    Ok(Instant::now())
}

/// Seconds from `healed` until every instance served a probe reservation
/// (at most 30 s of patience).
async fn recovery_after(cluster: &Cluster, healed: Instant) -> Option<f64> {
    probe_all(cluster, Duration::from_secs(30))
        .await
        .map(|at| at.saturating_duration_since(healed).as_secs_f64())
}

/// Probes every instance every 100 ms until each has answered 201 to a
/// reservation; returns when the last one did.
async fn probe_all(cluster: &Cluster, patience: Duration) -> Option<Instant> {
    let deadline = Instant::now() + patience;
    let mut pending: Vec<usize> = (0..cluster.apps.len()).collect();
    while Instant::now() < deadline {
        let mut still = Vec::new();
        for index in pending {
            if probe_once(cluster, index).await != Some(201) {
                still.push(index);
            }
        }
        if still.is_empty() {
            return Some(Instant::now());
        }
        pending = still;
        sleep(Duration::from_millis(100)).await;
    }
    None
}

/// One probe: the probe user holds a free seat of the probe schedule on
/// instance `index` and cancels it; returns the reservation's status.
async fn probe_once(cluster: &Cluster, index: usize) -> Option<u16> {
    let http = load::client(Duration::from_secs(5));
    let auth = load::auth();
    let user = UserId::from(999_999);
    let token = auth.issue(user, Duration::from_secs(600), false);
    let base = cluster.apps[index].base_url();
    let seat = fastrand::u8(1..=50);
    let enter = format!("{base}/api/v1/concerts/1/waiting-room");
    let _ = http.post(&enter).bearer_auth(&token).send().await;
    let response = http
        .post(format!("{base}/api/v1/reservations"))
        .bearer_auth(&token)
        .json(&json!({"scheduleId": cluster.probe_schedule.get(), "seatNumber": seat}))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    if status == 201 {
        let body: serde_json::Value = response.json().await.ok()?;
        if let Some(id) = body["id"].as_u64() {
            let _ = http
                .delete(format!("{base}/api/v1/reservations/{id}"))
                .bearer_auth(&token)
                .send()
                .await;
        }
    }
    Some(status)
}

fn judge(
    fault: Fault,
    tally: Tally,
    recovery: Option<f64>,
    audit_passed: bool,
    audit: &str,
    mut notes: Vec<String>,
) -> Outcome {
    let mut violations = Vec::new();
    if tally.server_errors > 0 {
        violations.push(format!(
            "{} responses 5xx other than 503: {:?}",
            tally.server_errors, tally.examples
        ));
    }
    if tally.hung > 0 {
        violations.push(format!(
            "{} requests got no answer within {} s",
            tally.hung,
            BUDGET.as_secs()
        ));
    }
    match recovery {
        Some(s) if s <= RECOVERY_LIMIT.as_secs_f64() => {}
        Some(s) => violations.push(format!("recovered in {s:.1} s (limit 5 s)")),
        None => violations.push("did not recover within 30 s".to_owned()),
    }
    if !audit_passed {
        violations.push(format!("app audit failed:\n{audit}"));
    }
    violations.extend(notes.iter().filter(|n| n.starts_with("VIOLATION")).cloned());
    notes.retain(|n| !n.starts_with("VIOLATION"));
    Outcome {
        scenario: fault.name().to_owned(),
        requests: tally.requests,
        statuses: tally.by_status,
        server_errors: tally.server_errors,
        hung: tally.hung,
        unreachable: tally.unreachable,
        recovery_seconds: recovery,
        audit_passed,
        violations,
        notes,
    }
}

/// The outcomes as a markdown table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | requests | 2xx | 4xx | 503 | 500 | hung | unreachable | recovery s | audit | result |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for o in outcomes {
        let sum = |prefix: &str| -> u64 {
            o.statuses
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v)
                .sum()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            o.scenario,
            o.requests,
            sum("2"),
            sum("4"),
            sum("503"),
            o.server_errors,
            o.hung,
            o.unreachable,
            o.recovery_seconds
                .map_or("-".to_owned(), |s| format!("{s:.2}")),
            if o.audit_passed { "pass" } else { "FAIL" },
            if o.violations.is_empty() {
                "ok"
            } else {
                "FAIL"
            },
        ));
    }
    out
}

/// Runs the suite as `lab chaos` does: prints the table, writes
/// `chaos.json`, fails when any scenario failed.
pub async fn main(args: &[String]) -> anyhow::Result<()> {
    let config = ChaosConfig::from_args(args)?;
    std::fs::create_dir_all(&config.out)?;
    eprintln!(
        "chaos: {} pass, {} instances of {}, {} users",
        if config.short { "short" } else { "long" },
        config.instances,
        config.app_bin.display(),
        config.users
    );
    let started = Instant::now();
    let outcomes = run(&config).await?;
    println!("{}", table(&outcomes));
    let path = config.out.join("chaos.json");
    std::fs::write(&path, serde_json::to_string_pretty(&outcomes)?)?;
    eprintln!(
        "chaos: {} scenarios in {:.0} s; wrote {}",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .collect();
    for o in &failed {
        eprintln!("FAILED {}:", o.scenario);
        for v in &o.violations {
            eprintln!("  - {v}");
        }
    }
    for o in &outcomes {
        for n in &o.notes {
            eprintln!("note {}: {n}", o.scenario);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} of {} chaos scenarios failed",
            failed.len(),
            outcomes.len()
        )
    }
}
