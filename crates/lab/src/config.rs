//! Lab settings from the command line.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, bail};
use concert_app::StrategyName;

/// The experiments the lab knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    PointUse,
    PointCharge,
    SeatRace,
    Sustained,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::PointUse,
        Scenario::PointCharge,
        Scenario::SeatRace,
        Scenario::Sustained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::PointUse => "point-use",
            Scenario::PointCharge => "point-charge",
            Scenario::SeatRace => "seat-race",
            Scenario::Sustained => "sustained",
        }
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .with_context(|| {
                format!(
                    "unknown scenario {s:?}; valid: {}",
                    Scenario::ALL.map(Scenario::as_str).join(", ")
                )
            })
    }
}

#[derive(Debug, Clone)]
pub struct LabConfig {
    pub scenarios: Vec<Scenario>,
    pub strategies: Vec<StrategyName>,
    pub reps: usize,
    /// point-use: tasks, amount each, starting balance
    pub use_tasks: usize,
    pub use_amount: u64,
    pub use_initial: u64,
    /// point-charge: tasks, amount each, starting balance
    pub charge_tasks: usize,
    pub charge_amount: u64,
    pub charge_initial: u64,
    /// seat-race: users racing for one seat
    pub seat_users: usize,
    /// sustained: operations and workers
    pub sustained_ops: usize,
    pub sustained_workers: usize,
    /// Where results.json and the charts go.
    pub out_dir: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    pub db_pool_size: usize,
    pub progress: bool,
    /// Redis strategies queue per key in the in-process relay first (as the app does by
    /// default); `--no-local-queue` measures the bare Redis locks.
    pub local_queue: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            scenarios: Scenario::ALL.to_vec(),
            strategies: concert_app::REGISTRY
                .iter()
                .map(|s| StrategyName::named(s.name))
                .collect(),
            reps: 5,
            use_tasks: 100,
            use_amount: 500,
            use_initial: 100_000,
            charge_tasks: 100,
            charge_amount: 1_000,
            charge_initial: 100_000,
            seat_users: 1_000,
            sustained_ops: 1_000,
            sustained_workers: 16,
            out_dir: PathBuf::from("target/lab"),
            database_url: "mysql://root@127.0.0.1:3306/concert".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            db_pool_size: 32,
            progress: true,
            local_queue: true,
        }
    }
}

pub const USAGE: &str = "usage: lab [options]            run experiments on a fresh database
       lab http --base-url URL   drive a running server through its API

options:
  --scenarios a,b     point-use, point-charge, seat-race, sustained (default: all)
  --strategies a,b    optimistic, optimistic-retry, pessimistic, atomic, local,
                      redis-simple, redis-spin, redis-pubsub, queue (seat-race
                      only) (default: all)
  --reps N            repetitions per row (default 5); rows report median, min, max
  --tasks N           point-use tasks (default 100)
  --amount N          points each task uses (default 500)
  --initial N         starting balance (default 100000)
  --charge-tasks N    point-charge tasks (default 100)
  --users N           seat-race users (default 1000)
  --ops N             sustained operations (default 1000)
  --workers N         sustained workers (default 16)
  --pool N            MySQL pool size (default 32)
  --out DIR           output directory (default target/lab)
  --no-progress       no progress line
  --no-local-queue    Redis locks without the in-process relay per key
DATABASE_URL and REDIS_URL (environment or .env) name the servers; the lab
creates its own database next to DATABASE_URL's and drops it afterwards.";

impl LabConfig {
    /// Parses `args` (without the program name) over the defaults, with the
    /// servers taken from the environment.
    pub fn from_args(args: &[String]) -> anyhow::Result<LabConfig> {
        let mut c = LabConfig::default();
        if let Ok(url) = std::env::var("DATABASE_URL") {
            c.database_url = url;
        }
        if let Ok(url) = std::env::var("REDIS_URL") {
            c.redis_url = url;
        }
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--scenarios" => {
                    c.scenarios = list(&value()?)?;
                }
                "--strategies" => {
                    c.strategies = list(&value()?)?;
                }
                "--reps" => c.reps = number(flag, &value()?)?,
                "--tasks" => c.use_tasks = number(flag, &value()?)?,
                "--amount" => c.use_amount = number(flag, &value()?)?,
                "--initial" => c.use_initial = number(flag, &value()?)?,
                "--charge-tasks" => c.charge_tasks = number(flag, &value()?)?,
                "--users" => c.seat_users = number(flag, &value()?)?,
                "--ops" => c.sustained_ops = number(flag, &value()?)?,
                "--workers" => c.sustained_workers = number(flag, &value()?)?,
                "--pool" => c.db_pool_size = number(flag, &value()?)?,
                "--out" => c.out_dir = PathBuf::from(value()?),
                "--no-progress" => c.progress = false,
                "--no-local-queue" => c.local_queue = false,
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        if c.reps == 0 || c.use_tasks == 0 || c.seat_users == 0 || c.sustained_workers == 0 {
            bail!("--reps, --tasks, --users and --workers must be at least 1");
        }
        if c.use_amount == 0 || c.use_amount > concert_domain::MAX_AMOUNT {
            bail!(
                "--amount must be between 1 and {}",
                concert_domain::MAX_AMOUNT
            );
        }
        if c.use_initial > concert_domain::MAX_BALANCE {
            bail!("--initial must be at most {}", concert_domain::MAX_BALANCE);
        }
        Ok(c)
    }
}

fn number<T: FromStr>(flag: &str, raw: &str) -> anyhow::Result<T> {
    raw.parse()
        .ok()
        .with_context(|| format!("{flag} takes a non-negative integer, not {raw:?}"))
}

fn list<T>(raw: &str) -> anyhow::Result<Vec<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    raw.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<T>().map_err(|e| anyhow::anyhow!("{e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_are_the_brief() {
        let c = LabConfig::from_args(&[]).unwrap();
        assert_eq!(
            (c.use_tasks, c.use_amount, c.use_initial),
            (100, 500, 100_000)
        );
        assert_eq!(c.reps, 5);
        assert_eq!(c.seat_users, 1000);
        assert_eq!(c.scenarios.len(), 4);
        assert_eq!(c.strategies.len(), concert_app::REGISTRY.len());
    }

    #[test]
    fn flags_override() {
        let c = LabConfig::from_args(&args(
            "--scenarios point-use,seat-race --strategies atomic,redis-pubsub --reps 2 --tasks 10 --users 50",
        ))
        .unwrap();
        assert_eq!(c.scenarios, [Scenario::PointUse, Scenario::SeatRace]);
        assert_eq!(
            c.strategies,
            [
                StrategyName::named("atomic"),
                StrategyName::named("redis-pubsub")
            ]
        );
        assert_eq!((c.reps, c.use_tasks, c.seat_users), (2, 10, 50));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(LabConfig::from_args(&args("--reps")).is_err());
        assert!(LabConfig::from_args(&args("--reps x")).is_err());
        assert!(LabConfig::from_args(&args("--scenarios nope")).is_err());
        assert!(LabConfig::from_args(&args("--strategies redlock")).is_err());
        assert!(LabConfig::from_args(&args("--bogus")).is_err());
        assert!(LabConfig::from_args(&args("--amount 0")).is_err());
    }
}
