//! Seat reservation under the lock strategies, on a real database: fencing
//! tokens stop a paused holder, exactly one of many concurrent reservations
//! wins under every lock, also across OS processes.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use concert_domain::services::reservation::DEFAULT_HOLD;
use concert_domain::{
    Control, DistributedLock, Fence, HoldSeat, LockKey, LockKind, LockOptions, ReservationService,
    ReserveError, ReserveSeat, ScheduleId, SeatNumber, SeatRepository, SeatState, Strategy, UserId,
    WriteMode,
};
use concert_mysql::{MysqlSeats, admin};
use concert_redis_lock::{LocalLock, SystemClock};
use concert_tests::db::{TestDb, concurrently};
use concert_tests::redis::TestRedis;

fn seat(n: i64) -> SeatNumber {
    SeatNumber::new(n).unwrap()
}

fn hold(user: u64, schedule: ScheduleId, number: SeatNumber, fence: Fence) -> HoldSeat {
    let now = Utc::now();
    HoldSeat {
        user: UserId::from(user),
        schedule,
        seat: number,
        now,
        until: now + chrono::Duration::minutes(5),
        fence: Some(fence),
    }
}

/// The lock adapter of each strategy, and the Redis prefix it lives on.
async fn lock_for(strategy: Strategy) -> (Arc<dyn DistributedLock>, Option<TestRedis>) {
    match strategy.lock_kind() {
        Some(LockKind::Local) => (Arc::new(LocalLock::new()), None),
        Some(kind) => {
            let redis = TestRedis::new().await;
            (Arc::new(redis.lock(kind)), Some(redis))
        }
        None => panic!("{strategy} is not a lock strategy"),
    }
}

const LOCK_STRATEGIES: [Strategy; 4] = [
    Strategy::Local,
    Strategy::RedisSimple,
    Strategy::RedisSpin,
    Strategy::RedisPubSub,
];

/// Holder A's lease runs out while it is paused; B acquires (a higher
/// fencing token) and holds the seat; A resumes and writes: refused with
/// `LockLost`, both through its own (lost) fence and through a fence that
/// does not know it is lost (only the token comparison in storage stops
/// that one). The seat keeps B's write.
async fn paused_holder_is_fenced_off(strategy: Strategy) {
    let test_db = TestDb::new().await;
    let schedule = test_db.schedule(500).await;
    let number = seat(7);
    let seats = MysqlSeats::new(test_db.db.clone());
    let (lock, _redis) = lock_for(strategy).await;
    let key = LockKey::seat(schedule, number);
    let short = LockOptions {
        lease: Duration::from_millis(300),
        wait: Duration::ZERO,
        watchdog: false,
    };

    let a = lock.acquire(&key, short).await.unwrap();
    let a_fence = a.fence().clone();
    // A pauses (a GC pause, a stalled VM) past its lease
    tokio::time::sleep(Duration::from_millis(700)).await;

    let b = lock
        .acquire(
            &key,
            LockOptions {
                wait: Duration::from_secs(5),
                ..short
            },
        )
        .await
        .unwrap();
    assert!(b.fence().token() > a_fence.token());
    let b_reservation = seats
        .hold(
            hold(2, schedule, number, b.fence().clone()),
            WriteMode::Optimistic,
        )
        .await
        .expect("B holds the seat under its lock");
    lock.release(b).await.unwrap();

    // A resumes and writes, unaware its lease expired
    let unaware = Fence::new(a_fence.token());
    assert!(!unaware.is_lost());
    assert!(matches!(
        seats
            .hold(hold(1, schedule, number, unaware), WriteMode::Optimistic)
            .await,
        Err(ReserveError::LockLost)
    ));
    assert!(a_fence.is_lost(), "the lease ran out: A's guard knows it");
    assert!(matches!(
        seats
            .hold(
                hold(1, schedule, number, a_fence.clone()),
                WriteMode::Optimistic
            )
            .await,
        Err(ReserveError::LockLost)
    ));
    assert!(matches!(
        lock.release(a).await,
        Err(concert_domain::LockError::NotHeld)
    ));

    let stored = admin::seat(&test_db.db, schedule, number)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(stored.state, SeatState::Held { by, .. } if by == UserId::from(2)));
    let b_token = admin::seat_fence_token(&test_db.db, schedule, number)
        .await
        .unwrap();
    assert!(b_token > a_fence.token());
    let reservations = admin::reservations_of_seat(&test_db.db, schedule, number)
        .await
        .unwrap();
    assert_eq!(reservations.len(), 1);
    assert_eq!(reservations[0].id, b_reservation.id);
    assert_eq!(
        admin::live_reservations(&test_db.db, schedule, number)
            .await
            .unwrap(),
        1
    );
}

/// 100 concurrent reservations of one seat through the reservation
/// service: exactly one succeeds, every other one is `SeatUnavailable` or
/// `LockTimeout`, and the database holds one live reservation.
async fn one_winner_among_100(strategy: Strategy) {
    let test_db = TestDb::new().await;
    let schedule = test_db.schedule(500).await;
    let number = seat(1);
    let (lock, _redis) = lock_for(strategy).await;
    let control = Control::new(strategy, Some(lock))
        .unwrap()
        .with_lock_options(LockOptions {
            lease: Duration::from_secs(10),
            wait: Duration::from_secs(20),
            watchdog: true,
        });
    let service = Arc::new(ReservationService::new(
        MysqlSeats::new(test_db.db.clone()),
        SystemClock,
        control,
        DEFAULT_HOLD,
    ));
    let outcomes = concurrently(100, |i| {
        let service = service.clone();
        async move {
            service
                .reserve(ReserveSeat {
                    user: UserId::from(1000 + i as u64),
                    schedule,
                    seat: number,
                })
                .await
        }
    })
    .await;
    let mut won = 0;
    let mut taken = 0;
    let mut timed_out = 0;
    for outcome in outcomes {
        match outcome {
            Ok(_) => won += 1,
            Err(ReserveError::SeatUnavailable) => taken += 1,
            Err(ReserveError::LockTimeout) => timed_out += 1,
            Err(e) => panic!("{strategy}: unexpected outcome {e:?}"),
        }
    }
    assert_eq!(won, 1, "{strategy}");
    assert_eq!(won + taken + timed_out, 100);
    if strategy != Strategy::RedisSimple {
        // waiting locks: everyone got in, saw the seat taken
        assert_eq!(taken, 99, "{strategy}");
    }
    assert_eq!(
        admin::live_reservations(&test_db.db, schedule, number)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        admin::reservations_of_seat(&test_db.db, schedule, number)
            .await
            .unwrap()
            .len(),
        1
    );
}

macro_rules! per_strategy {
    ($scenario:ident) => {
        mod $scenario {
            use concert_domain::Strategy;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$scenario(Strategy::Local).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_simple() {
                super::$scenario(Strategy::RedisSimple).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_spin() {
                super::$scenario(Strategy::RedisSpin).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_pubsub() {
                super::$scenario(Strategy::RedisPubSub).await;
            }
        }
    };
}

per_strategy!(paused_holder_is_fenced_off);
per_strategy!(one_winner_among_100);

#[test]
fn every_lock_strategy_is_covered() {
    for strategy in Strategy::ALL {
        assert_eq!(
            strategy.lock_kind().is_some(),
            LOCK_STRATEGIES.contains(&strategy),
            "{strategy}"
        );
    }
}

/// Four OS processes (two pub/sub, one spin, one simple, 25 tasks each)
/// contend for one seat through Redis: exactly one reservation in total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_contend_through_redis() {
    let test_db = TestDb::new().await;
    let schedule = test_db.schedule(500).await;
    let number = seat(9);
    let redis = TestRedis::new().await;
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 1_500;
    let kinds = ["redis-pubsub", "redis-pubsub", "redis-spin", "redis-simple"];
    let children: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_seat_contender"))
                .args([
                    test_db.url.clone(),
                    redis.prefix.clone(),
                    schedule.get().to_string(),
                    number.get().to_string(),
                    kind.to_string(),
                    (10_000 * (i + 1)).to_string(),
                    "25".to_owned(),
                    start_at.to_string(),
                ])
                .env("REDIS_URL", &redis.url)
                .kill_on_drop(true)
                .output()
        })
        .collect();
    let mut ok = 0;
    for (child, kind) in children.into_iter().zip(kinds) {
        let output = tokio::time::timeout(Duration::from_secs(120), child)
            .await
            .expect("contender process hung")
            .expect("contender process started");
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("{kind} process: {}", stdout.trim());
        assert!(
            output.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let counts: Vec<u64> = stdout
            .split_whitespace()
            .map(|field| field.split_once('=').unwrap().1.parse().unwrap())
            .collect();
        let [won, unavailable, timed_out, other] = counts[..] else {
            panic!("{kind}: unexpected output {stdout:?}");
        };
        assert_eq!(other, 0, "{kind}: {stdout}");
        assert_eq!(won + unavailable + timed_out, 25, "{kind}: {stdout}");
        ok += won;
    }
    assert_eq!(ok, 1);
    assert_eq!(
        admin::reservations_of_seat(&test_db.db, schedule, number)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        admin::live_reservations(&test_db.db, schedule, number)
            .await
            .unwrap(),
        1
    );
}
