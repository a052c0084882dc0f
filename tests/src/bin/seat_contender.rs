//! One OS process contending for one seat through Redis: used by the
//! cross-process test (`lock_seats::processes_contend_through_redis`).
//!
//! ```text
//! seat_contender <database-url> <redis-prefix> <schedule-id> <seat-number>
//!                <lock-kind> <first-user-id> <tasks> <start-at-unix-ms>
//! ```
//!
//! Waits until `start-at-unix-ms`, then runs `tasks` concurrent reservations
//! of the seat (users `first-user-id..`) through `ReservationService` under
//! the given lock kind (`redis-simple`, `redis-spin`, `redis-pubsub`), and
//! prints one line `ok=N unavailable=N timeout=N other=N`. `REDIS_URL`
//! selects Redis (default `redis://127.0.0.1:6379`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use concert_app::StrategyName;
use concert_app::strategies::LockAt;
use concert_domain::{
    Control, DistributedLock, Failure, LockOptions, ReserveError, ReserveSeat, ScheduleId,
    SeatNumber, UserId,
};
use concert_mysql::{DatabaseUrl, Db, PoolOptions};
use concert_redis::{RedisLockSettings, RedisLocks};
use concert_tests::db::{adapters, with_default_points};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seat_contender: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [
        db_url,
        prefix,
        schedule,
        seat,
        kind,
        first_user,
        tasks,
        start_at,
    ] = args.as_slice()
    else {
        bail!(
            "usage: seat_contender <database-url> <redis-prefix> <schedule-id> <seat-number> \
             <lock-kind> <first-user-id> <tasks> <start-at-unix-ms>"
        );
    };
    let schedule = ScheduleId::from(schedule.parse::<u64>().context("schedule id")?);
    let seat = SeatNumber::new(seat.parse().context("seat number")?)?;
    let first_user: u64 = first_user.parse().context("first user id")?;
    let tasks: u64 = tasks.parse().context("tasks")?;
    let start_at: u64 = start_at.parse().context("start time")?;

    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let locks = RedisLocks::connect(&redis_url, prefix, RedisLockSettings::default()).await?;
    let strategy: StrategyName = kind.parse()?;
    if strategy.lock_at() != Some(LockAt::Redis) {
        bail!("{kind} is not a Redis lock strategy");
    }
    let lock: Arc<dyn DistributedLock> = strategy
        .lock(&adapters(Some(locks), None))
        .context("a lock strategy has a lock")??;
    let db = Db::connect(
        &DatabaseUrl::parse(db_url)?,
        PoolOptions {
            max_size: 10,
            wait_timeout: Duration::from_secs(30),
            ..PoolOptions::default()
        },
    )
    .await?;
    let seats = Control::locked(
        kind,
        lock,
        LockOptions {
            lease: Duration::from_secs(10),
            wait: Duration::from_secs(10),
            watchdog: true,
        },
    );
    let store = concert_mysql::MysqlStore::new(db.clone());
    let ports = concert_domain::Ports {
        transactions: Arc::new(store.clone()),
        queries: Arc::new(store.clone()),
        catalogue: Arc::new(store),
        clock: Arc::new(concert_inprocess::SystemClock),
    };
    let service = Arc::new(
        concert_domain::Services::new(
            ports,
            with_default_points(seats),
            concert_domain::Policy::default(),
        )
        .reservations,
    );

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    tokio::time::sleep(Duration::from_millis(start_at.saturating_sub(now_ms))).await;

    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .reserve(ReserveSeat {
                        user: UserId::from(first_user + i),
                        schedule,
                        seat,
                    })
                    .await
            })
        })
        .collect();
    let (mut ok, mut unavailable, mut timeout, mut other) = (0, 0, 0, 0);
    for handle in handles {
        match handle.await? {
            Ok(_) => ok += 1,
            Err(ReserveError::SeatUnavailable { .. }) => unavailable += 1,
            Err(ReserveError::Failed(Failure::LockTimeout)) => timeout += 1,
            Err(e) => {
                eprintln!("seat_contender: unexpected outcome: {e:#}");
                other += 1;
            }
        }
    }
    db.close();
    Ok(format!(
        "ok={ok} unavailable={unavailable} timeout={timeout} other={other}"
    ))
}
