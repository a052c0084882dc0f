//! Lab settings from the command line.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, bail};
use concert_app::StrategyName;
use concert_app::strategies::{self, LockAt};

/// The experiments the lab knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    PointUse,
    PointCharge,
    SeatRace,
    BatchRace,
    Sustained,
    /// The waiting room over HTTP on two app instances (see `crate::room`).
    WaitingRoom,
    /// An on-sale through the waiting room (see `crate::room`).
    OnSale,
    /// The outbox relay's publish lag under the sustained load.
    Relay,
    /// Seat-map reads over HTTP against `/health/live`.
    SeatMap,
}

impl Scenario {
    /// The scenarios a plain `lab` runs.
    pub const ALL: [Scenario; 7] = [
        Scenario::PointUse,
        Scenario::PointCharge,
        Scenario::SeatRace,
        Scenario::BatchRace,
        Scenario::Sustained,
        Scenario::Relay,
        Scenario::SeatMap,
    ];

    /// The waiting-room scenarios: they start their own app instances (and
    /// Redis), so they run only when asked for (`--scenarios`).
    pub const ROOM: [Scenario; 2] = [Scenario::WaitingRoom, Scenario::OnSale];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::PointUse => "point-use",
            Scenario::PointCharge => "point-charge",
            Scenario::SeatRace => "seat-race",
            Scenario::BatchRace => "batch-race",
            Scenario::Sustained => "sustained",
            Scenario::WaitingRoom => "waiting-room",
            Scenario::OnSale => "on-sale",
            Scenario::Relay => "relay",
            Scenario::SeatMap => "seat-map",
        }
    }

    /// True for the waiting-room scenarios.
    pub fn is_room(self) -> bool {
        Scenario::ROOM.contains(&self)
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .chain(Scenario::ROOM)
            .find(|x| x.as_str() == s)
            .with_context(|| {
                format!(
                    "unknown scenario {s:?}; valid: {}, {}",
                    Scenario::ALL.map(Scenario::as_str).join(", "),
                    Scenario::ROOM.map(Scenario::as_str).join(", ")
                )
            })
    }
}

/// Seats each batch-race user asks for at once.
pub const BATCH_SEATS: usize = 4;

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
    /// batch-race: users racing for overlapping groups of
    /// [`BATCH_SEATS`] seats of one schedule
    pub batch_users: usize,
    /// sustained: operations and workers
    pub sustained_ops: usize,
    pub sustained_workers: usize,
    /// seat-map: requests per endpoint and repetition (over 64 connections)
    pub read_requests: usize,
    /// Where results.json and the charts go.
    pub out_dir: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    pub db_pool_size: usize,
    pub progress: bool,
    /// Lock strategies queue per key in the in-process relay first (as the app does by
    /// default); `--no-local-queue` measures the bare locks.
    pub local_queue: bool,
    /// The waiting-room scenarios (see [`RoomLabConfig`]).
    pub room: RoomLabConfig,
}

/// Settings of the `waiting-room` and `on-sale` scenarios.
#[derive(Debug, Clone)]
pub struct RoomLabConfig {
    /// waiting-room: users who enter and poll until admitted.
    pub users: usize,
    /// on-sale: users who enter, wait, reserve a random free seat and pay.
    pub on_sale_users: usize,
    /// Concurrent HTTP requests (connections) of the clients.
    pub connections: usize,
    /// `/health/live` requests of the baseline.
    pub live_requests: usize,
    /// `APP_WAITING_ROOM_ACTIVE_LIMIT` of the instances.
    pub limit: u32,
    /// `APP_WAITING_ROOM_IDLE_SECONDS` of the instances.
    pub idle_secs: u64,
    /// on-sale clients wait at most this long between polls (`None`: as
    /// long as the server's `pollAfterSeconds` says).
    pub max_poll: Option<std::time::Duration>,
    /// App instances sharing the room.
    pub instances: usize,
    /// Use `REDIS_URL` instead of a `redis-server` of the lab's own (whose
    /// command counts are exact).
    pub shared_redis: bool,
}

impl Default for RoomLabConfig {
    fn default() -> Self {
        Self {
            users: 10_000,
            on_sale_users: 5_000,
            connections: 64,
            live_requests: 20_000,
            limit: 100,
            idle_secs: 300,
            max_poll: None,
            instances: 2,
            shared_redis: false,
        }
    }
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            scenarios: Scenario::ALL.to_vec(),
            strategies: strategies::all().collect(),
            reps: 5,
            use_tasks: 100,
            use_amount: 500,
            use_initial: 100_000,
            charge_tasks: 100,
            charge_amount: 1_000,
            charge_initial: 100_000,
            seat_users: 1_000,
            batch_users: 200,
            sustained_ops: 1_000,
            sustained_workers: 16,
            read_requests: 32_000,
            out_dir: PathBuf::from("target/lab"),
            database_url: "mysql://root@127.0.0.1:3306/concert".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            db_pool_size: 32,
            progress: true,
            local_queue: true,
            room: RoomLabConfig::default(),
        }
    }
}

const USAGE_HEAD: &str = "usage: lab [options]            run experiments on a fresh database
       lab http --base-url URL   drive a running server through its API

options:
  --scenarios a,b     point-use, point-charge, seat-race, batch-race, sustained,
                      relay, seat-map (default: all); waiting-room, on-sale
                      (below)
";

const USAGE_TAIL: &str =
    "  --reps N            repetitions per row (default 5); rows report median, min, max
  --tasks N           point-use tasks (default 100)
  --amount N          points each task uses (default 500)
  --initial N         starting balance (default 100000)
  --charge-tasks N    point-charge tasks (default 100)
  --users N           seat-race users (default 1000)
  --batch-users N     batch-race users, each asking for 4 seats (default 200)
  --ops N             sustained operations (default 1000)
  --workers N         sustained workers (default 16; also the relay load's)
  --reads N           seat-map requests per endpoint and repetition (default 32000)
  --pool N            MySQL pool size (default 32)
  --out DIR           output directory (default target/lab)
  --no-progress       no progress line
  --no-local-queue    locks without the in-process relay per key

waiting-room and on-sale (HTTP, on app instances the lab starts in process,
sharing a redis-server the lab starts on a free port; run only when named):
  --room-users N      waiting-room users (default 10000)
  --on-sale-users N   on-sale users (default 5000)
  --connections N     concurrent client requests (default 64)
  --live-requests N   /health/live baseline requests (default 20000)
  --room-limit N      admitted at once (default 100)
  --room-idle N       idle seconds of a waiting entry (default 300)
  --max-poll-ms N     on-sale clients poll at least this often (default: as told)
  --instances N       app instances (default 2)
  --shared-redis      use REDIS_URL instead of an own redis-server
DATABASE_URL and REDIS_URL (environment or .env) name the servers; the lab
creates its own database next to DATABASE_URL's and drops it afterwards.";

/// The lab's `--help` (its `--strategies` line lists the registry).
pub fn usage() -> String {
    format!("{USAGE_HEAD}{}\n{USAGE_TAIL}", strategies_usage())
}

/// `--strategies`: every registered name, wrapped under the option column.
fn strategies_usage() -> String {
    let notes: String = strategies::locks()
        .filter(|s| s.lock_at() == Some(LockAt::RedLock))
        .map(|s| format!("; {s} runs over databases 1-3 of REDIS_URL"))
        .collect();
    let names: Vec<String> = strategies::all()
        .map(|s| {
            if s.seats_only() {
                format!("{s} (seat and batch races only)")
            } else {
                s.to_string()
            }
        })
        .collect();
    let text = format!("{} (default: all{notes})", names.join(", "));
    // each word after a space, lines of at most 80 columns
    let mut out = String::new();
    let mut line = String::from("  --strategies a,b   ");
    for word in text.split(' ') {
        if line.len() + 1 + word.len() > 80 {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(21);
        }
        line.push(' ');
        line.push_str(word);
    }
    out + &line
}

impl LabConfig {
    /// The parameters of a run, as recorded in `results.json` (no server
    /// address or credential).
    pub fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "scenarios": self.scenarios.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "strategies": self.strategies.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "reps": self.reps,
            "pointUse": {"tasks": self.use_tasks, "amount": self.use_amount, "initial": self.use_initial},
            "pointCharge": {"tasks": self.charge_tasks, "amount": self.charge_amount, "initial": self.charge_initial},
            "seatRace": {"users": self.seat_users},
            "batchRace": {"users": self.batch_users, "seatsEach": BATCH_SEATS},
            "sustained": {"ops": self.sustained_ops, "workers": self.sustained_workers},
            "dbPoolSize": self.db_pool_size,
            "localQueue": self.local_queue,
        })
    }

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
                "--batch-users" => c.batch_users = number(flag, &value()?)?,
                "--ops" => c.sustained_ops = number(flag, &value()?)?,
                "--workers" => c.sustained_workers = number(flag, &value()?)?,
                "--reads" => c.read_requests = number(flag, &value()?)?,
                "--pool" => c.db_pool_size = number(flag, &value()?)?,
                "--out" => c.out_dir = PathBuf::from(value()?),
                "--no-progress" => c.progress = false,
                "--no-local-queue" => c.local_queue = false,
                "--room-users" => c.room.users = number(flag, &value()?)?,
                "--on-sale-users" => c.room.on_sale_users = number(flag, &value()?)?,
                "--connections" => c.room.connections = number(flag, &value()?)?,
                "--live-requests" => c.room.live_requests = number(flag, &value()?)?,
                "--room-limit" => c.room.limit = number(flag, &value()?)?,
                "--room-idle" => c.room.idle_secs = number(flag, &value()?)?,
                "--max-poll-ms" => {
                    c.room.max_poll =
                        Some(std::time::Duration::from_millis(number(flag, &value()?)?));
                }
                "--instances" => c.room.instances = number(flag, &value()?)?,
                "--shared-redis" => c.room.shared_redis = true,
                other => bail!("unknown option {other:?}\n\n{}", usage()),
            }
        }
        if c.reps == 0
            || c.use_tasks == 0
            || c.seat_users == 0
            || c.batch_users == 0
            || c.sustained_workers == 0
        {
            bail!("--reps, --tasks, --users, --batch-users and --workers must be at least 1");
        }
        let room = &c.room;
        if room.users == 0
            || room.on_sale_users == 0
            || room.connections == 0
            || room.limit == 0
            || room.instances == 0
        {
            bail!(
                "--room-users, --on-sale-users, --connections, --room-limit and --instances \
                 must be at least 1"
            );
        }
        if room.idle_secs < 2 {
            bail!("--room-idle must be at least 2");
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
    fn usage_lists_every_strategy_within_80_columns() {
        let usage = usage();
        for s in strategies::all() {
            assert!(usage.contains(s.as_str()), "{s}");
        }
        let first = usage.find("  --strategies").unwrap();
        let last = usage.find("  --reps").unwrap();
        for line in usage[first..last].lines() {
            assert!(line.len() <= 80, "{line:?}");
        }
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
        assert_eq!(c.batch_users, 200);
        assert_eq!(c.scenarios.len(), 7);
        assert_eq!(c.strategies.len(), concert_app::REGISTRY.len());
    }

    #[test]
    fn flags_override() {
        let c = LabConfig::from_args(&args(
            "--scenarios point-use,seat-race,batch-race --strategies atomic,redis-pubsub --reps 2 --tasks 10 --users 50 --batch-users 30",
        ))
        .unwrap();
        assert_eq!(
            c.scenarios,
            [Scenario::PointUse, Scenario::SeatRace, Scenario::BatchRace]
        );
        assert_eq!(c.batch_users, 30);
        assert_eq!(
            c.strategies,
            [
                StrategyName::named("atomic"),
                StrategyName::named("redis-pubsub")
            ]
        );
        assert_eq!((c.reps, c.use_tasks, c.seat_users), (2, 10, 50));
        let room = LabConfig::from_args(&args(
            "--scenarios waiting-room,on-sale --room-users 300 --on-sale-users 200 --connections 8 --room-limit 10 --max-poll-ms 500 --shared-redis",
        ))
        .unwrap();
        assert_eq!(room.scenarios, Scenario::ROOM);
        assert_eq!(
            (
                room.room.users,
                room.room.on_sale_users,
                room.room.connections,
                room.room.limit
            ),
            (300, 200, 8, 10)
        );
        assert_eq!(
            room.room.max_poll,
            Some(std::time::Duration::from_millis(500))
        );
        assert!(room.room.shared_redis);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(LabConfig::from_args(&args("--reps")).is_err());
        assert!(LabConfig::from_args(&args("--reps x")).is_err());
        assert!(LabConfig::from_args(&args("--scenarios nope")).is_err());
        assert!(LabConfig::from_args(&args("--strategies redlock")).is_err());
        assert!(LabConfig::from_args(&args("--bogus")).is_err());
        assert!(LabConfig::from_args(&args("--amount 0")).is_err());
        assert!(LabConfig::from_args(&args("--room-limit 0")).is_err());
        assert!(LabConfig::from_args(&args("--connections 0")).is_err());
    }
}
