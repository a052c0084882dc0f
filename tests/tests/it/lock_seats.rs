//! Seat reservation under the lock strategies, on a real database: fencing
//! tokens stop a paused holder, exactly one of many concurrent reservations
//! wins under every lock, also across OS processes.

use std::sync::Arc;
use std::time::Duration;

use concert_app::StrategyName;
use concert_app::strategies::LockAt;
use concert_domain::{
    Control, DistributedLock, Failure, LockKey, LockOptions, ReserveError, ReserveSeat, ScheduleId,
    SeatNumber, SeatState, UserId,
};
use concert_inprocess::SystemClock;
use concert_tests::audit::assert_consistent;
use concert_tests::clock::ManualClock;
use concert_tests::db::{TestDb, adapters, concurrently};
use concert_tests::locks::FixedFenceLock;
use concert_tests::redis::{TestRedLock, TestRedis};

fn seat(n: i64) -> SeatNumber {
    SeatNumber::new(n).unwrap()
}

fn reserve(user: u64, schedule: ScheduleId, number: SeatNumber) -> ReserveSeat {
    ReserveSeat {
        user: UserId::from(user),
        schedule,
        seat: number,
    }
}

/// What a lock strategy's Redis keys live in (purged when dropped).
type Servers = Box<dyn std::any::Any + Send>;

/// The lock adapter of a lock strategy (as the app's registry builds it,
/// without the relay), and the Redis servers it lives on.
async fn lock_for(strategy: &str) -> (Arc<dyn DistributedLock>, Option<Servers>) {
    let strategy = StrategyName::named(strategy);
    let (adapters, servers): (_, Option<Servers>) = match strategy.lock_at() {
        Some(LockAt::Process) => (adapters(None, None), None),
        Some(LockAt::Redis) => {
            let redis = TestRedis::new().await;
            (
                adapters(Some(redis.locks.clone()), None),
                Some(Box::new(redis)),
            )
        }
        Some(LockAt::RedLock) => {
            let redlock = TestRedLock::new();
            (
                adapters(None, Some(redlock.lock.clone())),
                Some(Box::new(redlock)),
            )
        }
        None => panic!("{strategy} is not a lock strategy"),
    };
    let lock = strategy
        .lock(&adapters)
        .expect("a lock strategy has a lock")
        .unwrap_or_else(|e| panic!("{strategy}: {e:#}"));
    (lock, servers)
}

/// Holder A's lease runs out while it is paused; B acquires (a higher
/// fencing token) and holds the seat; A resumes and writes: refused with
/// `LockLost`, both through its own (lost) fence and through a fence that
/// does not know it is lost (only the token comparison in storage stops
/// that one). The seat keeps B's write.
async fn paused_holder_is_fenced_off(strategy: &str) {
    let test_db = TestDb::new().await;
    let schedule = test_db.schedule(500).await;
    let number = seat(7);
    let (lock, _redis) = lock_for(strategy).await;
    let key = LockKey::seat(schedule, number);
    let short = LockOptions {
        lease: Duration::from_millis(300),
        wait: Duration::ZERO,
        watchdog: false,
    };
    // the reservation use case under a holder whose fence is `token`
    let holder = |lock: FixedFenceLock| {
        test_db
            .seat_services(lock.control(), ManualClock::new())
            .reservations
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
    let b_reservation = holder(FixedFenceLock::new(b.fence().token()))
        .reserve(reserve(2, schedule, number))
        .await
        .expect("B holds the seat under its lock");
    b.release().await.unwrap();

    // A resumes and writes, unaware its lease expired: only the token
    // comparison in storage stops it
    assert!(matches!(
        holder(FixedFenceLock::new(a_fence.token()))
            .reserve(reserve(1, schedule, number))
            .await,
        Err(ReserveError::Failed(Failure::LockLost))
    ));
    // and through its own fence, which knows the lease was lost
    assert!(a_fence.is_lost(), "the lease ran out: A's guard knows it");
    assert!(matches!(
        holder(FixedFenceLock::lost(a_fence.token()))
            .reserve(reserve(1, schedule, number))
            .await,
        Err(ReserveError::Failed(Failure::LockLost))
    ));
    assert!(matches!(a.release().await, Err(Failure::LockLost)));

    let stored = test_db.sql.seat(schedule, number).await.unwrap().unwrap();
    assert!(matches!(stored.state, SeatState::Held { by, .. } if by == UserId::from(2)));
    let b_token = test_db
        .sql
        .seat_fence_token(schedule, number)
        .await
        .unwrap();
    assert!(b_token > a_fence.token());
    let reservations = test_db
        .sql
        .reservations_of_seat(schedule, number)
        .await
        .unwrap();
    assert_eq!(reservations.len(), 1);
    assert_eq!(reservations[0].id, b_reservation.id);
    assert_eq!(
        test_db
            .sql
            .live_reservations(schedule, number)
            .await
            .unwrap(),
        1
    );
}

/// 100 concurrent reservations of one seat through the reservation
/// service: exactly one succeeds, every other one is `SeatUnavailable` or
/// `LockTimeout`, and the database holds one live reservation.
async fn one_winner_among_100(strategy: &str) {
    let test_db = TestDb::new().await;
    let schedule = test_db.schedule(500).await;
    let number = seat(1);
    let (lock, _redis) = lock_for(strategy).await;
    let control = Control::locked(
        strategy,
        lock,
        LockOptions {
            lease: Duration::from_secs(10),
            wait: Duration::from_secs(20),
            watchdog: true,
        },
    );
    let service = Arc::new(test_db.seat_services(control, SystemClock).reservations);
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
            Err(ReserveError::SeatUnavailable { .. }) => taken += 1,
            Err(ReserveError::Failed(Failure::LockTimeout)) => timed_out += 1,
            Err(e) => panic!("{strategy}: unexpected outcome {e:?}"),
        }
    }
    assert_eq!(won, 1, "{strategy}");
    assert_eq!(won + taken + timed_out, 100);
    if StrategyName::named(strategy).waits() {
        // waiting locks: everyone got in, saw the seat taken
        assert_eq!(taken, 99, "{strategy}");
    }
    assert_eq!(
        test_db
            .sql
            .live_reservations(schedule, number)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        test_db
            .sql
            .reservations_of_seat(schedule, number)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_consistent(&test_db.db).await;
}

/// `$scenario` under every lock strategy of the registry, one after the
/// other.
macro_rules! per_lock_strategy {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_lock_strategy() {
                for strategy in concert_app::strategies::locks() {
                    super::$scenario(strategy.as_str()).await;
                }
            }
        }
    };
}

per_lock_strategy!(paused_holder_is_fenced_off);
per_lock_strategy!(one_winner_among_100);

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
                    test_db.url.as_str().to_owned(),
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
        test_db
            .sql
            .reservations_of_seat(schedule, number)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        test_db
            .sql
            .live_reservations(schedule, number)
            .await
            .unwrap(),
        1
    );
}
