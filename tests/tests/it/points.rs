//! Points over MySQL through the domain's `PointService`: the brief's
//! experiment per strategy, overdraft, concurrent charges, limits,
//! idempotency, history. Exact outcomes only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use concert_domain::{
    ChargeError, ChargePoints, Controls, Failure, HistoryEntry, IdempotencyKey, MAX_BALANCE,
    Observer, Operation, PointKind, Points, Policy, QueryError, Services, UseError, UsePoints,
    UserId,
};
use concert_tests::audit::assert_consistent;
use concert_tests::clock::ManualClock;
use concert_tests::db::{TestDb, concurrently, control, lock_free};
use concert_tests::locks::FixedFenceLock;

/// Counts what a control reports.
#[derive(Default)]
struct Attempts {
    attempts: AtomicU64,
    conflicts: AtomicU64,
}

impl Observer for Attempts {
    fn attempt(&self, _: Operation, _: &str) {
        self.attempts.fetch_add(1, Ordering::SeqCst);
    }
    fn conflict(&self, _: Operation, _: &str) {
        self.conflicts.fetch_add(1, Ordering::SeqCst);
    }
}

fn pts(v: u64) -> Points {
    Points::new(v as i64).unwrap()
}

fn user(id: u64) -> UserId {
    UserId::from(id)
}

fn services(db: &TestDb, strategy: &str) -> Arc<Services> {
    Arc::new(db.services(strategy, ManualClock::new()))
}

/// 100 concurrent uses of 500 from one wallet; returns the outcomes.
async fn use_concurrently(
    svc: &Arc<Services>,
    who: UserId,
    tasks: usize,
    amount: u64,
) -> Vec<Result<u64, UseError>> {
    concurrently(tasks, |_| {
        let svc = svc.clone();
        async move {
            svc.points
                .use_points(UsePoints {
                    user: who,
                    amount: pts(amount),
                })
                .await
                .map(|b| b.balance)
        }
    })
    .await
}

async fn balance(svc: &Services, who: UserId) -> u64 {
    svc.points.balance(who).await.unwrap().balance
}

async fn history(svc: &Services, who: UserId) -> Vec<HistoryEntry> {
    svc.points.history(who).await.unwrap()
}

/// The history of `uses` successful uses of `amount` after a start
/// balance of `start`, newest first, is exactly the serial sequence.
fn assert_serial_uses(history: &[HistoryEntry], start: u64, amount: u64, uses: u64) {
    let used: Vec<_> = history
        .iter()
        .filter(|e| e.kind == PointKind::Use)
        .collect();
    assert_eq!(used.len() as u64, uses);
    let after: Vec<u64> = used.iter().map(|e| e.balance_after).collect();
    let expected: Vec<u64> = (1..=uses).rev().map(|k| start - amount * k).collect();
    assert_eq!(after, expected, "balance_after, newest first");
    assert!(used.iter().all(|e| e.amount == amount));
    // ids are newest first, strictly
    assert!(history.windows(2).all(|w| w[0].id > w[1].id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pessimistic_use_serialises_all_100() {
    let db = TestDb::new().await;
    let svc = services(&db, "pessimistic");
    db.sql.set_balance(user(1), 100_000).await.unwrap();

    let outcomes = use_concurrently(&svc, user(1), 100, 500).await;

    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(balance(&svc, user(1)).await, 50_000);
    let h = history(&svc, user(1)).await;
    assert_eq!(h.len(), 101);
    assert_serial_uses(&h, 100_000, 500, 100);
    // every success answered a distinct balance, 99500 down to 50000
    let mut answered: Vec<u64> = outcomes.into_iter().map(Result::unwrap).collect();
    answered.sort_unstable();
    assert_eq!(
        answered,
        (0..100).map(|k| 50_000 + 500 * k).collect::<Vec<_>>()
    );
    // the set-up charge is the oldest entry
    let first = h.last().unwrap();
    assert_eq!(
        (first.kind, first.balance_after),
        (PointKind::Charge, 100_000)
    );
    assert_consistent(&db.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_use_lets_some_win_and_reports_conflicts() {
    let db = TestDb::new().await;
    let attempts = Arc::new(Attempts::default());
    let spend = control("optimistic").with_observer(attempts.clone());
    let svc = Arc::new(db.services_over(
        Controls {
            seats: control("optimistic"),
            charge: control("optimistic"),
            spend,
        },
        Policy::default(),
        ManualClock::new(),
    ));
    db.sql.set_balance(user(1), 100_000).await.unwrap();

    let outcomes = use_concurrently(&svc, user(1), 100, 500).await;

    let s = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
    assert!(s >= 1);
    for o in &outcomes {
        assert!(
            matches!(o, Ok(_) | Err(UseError::Failed(Failure::Conflict))),
            "only typed conflicts may fail: {o:?}"
        );
    }
    assert_eq!(balance(&svc, user(1)).await, 100_000 - 500 * s);
    let h = history(&svc, user(1)).await;
    assert_eq!(h.len() as u64, s + 1);
    assert_serial_uses(&h, 100_000, 500, s);
    // one attempt each, and every failure was reported as a conflict
    assert_eq!(attempts.attempts.load(Ordering::SeqCst), 100);
    assert_eq!(attempts.conflicts.load(Ordering::SeqCst), 100 - s);
    assert_consistent(&db.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_retry_and_atomic_use_all_succeed() {
    for strategy in ["optimistic-retry", "atomic"] {
        let db = TestDb::new().await;
        let svc = services(&db, strategy);
        db.sql.set_balance(user(1), 100_000).await.unwrap();

        let outcomes = use_concurrently(&svc, user(1), 100, 500).await;

        assert!(
            outcomes.iter().all(Result::is_ok),
            "{strategy}: {outcomes:?}"
        );
        assert_eq!(balance(&svc, user(1)).await, 50_000, "{strategy}");
        let h = history(&svc, user(1)).await;
        assert_eq!(h.len(), 101, "{strategy}");
        assert_serial_uses(&h, 100_000, 500, 100);
        assert_consistent(&db.db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdraft_stops_at_zero() {
    for strategy in ["pessimistic", "atomic"] {
        let db = TestDb::new().await;
        let svc = services(&db, strategy);
        db.sql.set_balance(user(1), 10_000).await.unwrap();

        let outcomes = use_concurrently(&svc, user(1), 100, 500).await;

        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        let refused = outcomes
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Err(UseError::InsufficientPoints {
                        balance: 0,
                        needed: 500
                    })
                )
            })
            .count();
        assert_eq!((ok, refused), (20, 80), "{strategy}: {outcomes:?}");
        assert_eq!(balance(&svc, user(1)).await, 0, "{strategy}");
        let h = history(&svc, user(1)).await;
        assert_serial_uses(&h, 10_000, 500, 20);
        assert_consistent(&db.db).await;
    }
}

async fn charge_concurrently(
    svc: &Arc<Services>,
    who: UserId,
    tasks: usize,
    amount: u64,
    key: Option<&str>,
) -> Vec<Result<u64, ChargeError>> {
    let key = key.map(|k| IdempotencyKey::new(k).unwrap());
    concurrently(tasks, |_| {
        let svc = svc.clone();
        let key = key.clone();
        async move {
            svc.points
                .charge(ChargePoints {
                    user: who,
                    amount: pts(amount),
                    idempotency: key,
                })
                .await
                .map(|b| b.balance)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_charges_keep_every_success_and_nothing_else() {
    let db = TestDb::new().await;
    let svc = services(&db, "optimistic");
    db.sql.set_balance(user(1), 100_000).await.unwrap();

    let outcomes = charge_concurrently(&svc, user(1), 100, 1_000, None).await;

    let s = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
    assert!(s >= 1);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(_) | Err(ChargeError::Failed(Failure::Conflict)))),
        "{outcomes:?}"
    );
    assert_eq!(balance(&svc, user(1)).await, 100_000 + 1_000 * s);
    let charges = history(&svc, user(1))
        .await
        .iter()
        .filter(|e| e.kind == PointKind::Charge)
        .count() as u64;
    assert_eq!(charges, s + 1);
    assert_consistent(&db.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pessimistic_and_atomic_charges_all_succeed() {
    for strategy in ["pessimistic", "atomic"] {
        let db = TestDb::new().await;
        let svc = services(&db, strategy);
        db.sql.set_balance(user(1), 100_000).await.unwrap();

        let outcomes = charge_concurrently(&svc, user(1), 100, 1_000, None).await;

        assert!(
            outcomes.iter().all(Result::is_ok),
            "{strategy}: {outcomes:?}"
        );
        assert_eq!(balance(&svc, user(1)).await, 200_000, "{strategy}");
        let h = history(&svc, user(1)).await;
        assert_eq!(h.len(), 101);
        let after: Vec<u64> = h.iter().map(|e| e.balance_after).collect();
        let expected: Vec<u64> = (0..=100).rev().map(|k| 100_000 + 1_000 * k).collect();
        assert_eq!(after, expected, "{strategy}");
        assert_consistent(&db.db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_charges_of_a_new_user_create_one_wallet() {
    for strategy in ["pessimistic", "atomic", "optimistic-retry"] {
        let db = TestDb::new().await;
        let svc = services(&db, strategy);

        let outcomes = charge_concurrently(&svc, user(9), 50, 1_000, None).await;

        assert!(
            outcomes.iter().all(Result::is_ok),
            "{strategy}: {outcomes:?}"
        );
        assert_eq!(balance(&svc, user(9)).await, 50_000, "{strategy}");
        assert_eq!(history(&svc, user(9)).await.len(), 50, "{strategy}");
        assert_consistent(&db.db).await;
    }
}

#[tokio::test]
async fn charge_never_exceeds_the_maximum_balance() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let svc = services(&db, strategy);
        db.sql
            .set_balance(user(1), MAX_BALANCE - 500)
            .await
            .unwrap();
        let charge = |amount| ChargePoints {
            user: user(1),
            amount: pts(amount),
            idempotency: None,
        };

        let err = svc.points.charge(charge(501)).await.unwrap_err();
        assert!(
            matches!(
                err,
                ChargeError::BalanceLimit {
                    balance,
                    amount: 501,
                    max: MAX_BALANCE
                } if balance == MAX_BALANCE - 500
            ),
            "{strategy}: {err:?}"
        );
        assert_eq!(history(&svc, user(1)).await.len(), 1, "nothing written");

        let ok = svc.points.charge(charge(500)).await.unwrap();
        assert_eq!(ok.balance, MAX_BALANCE, "{strategy}");
        assert_eq!(balance(&svc, user(1)).await, MAX_BALANCE);
    }
}

#[tokio::test]
async fn a_repeated_charge_key_changes_nothing() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let svc = services(&db, strategy);
        let charge = |who, key: &str| ChargePoints {
            user: user(who),
            amount: pts(1_000),
            idempotency: Some(IdempotencyKey::new(key).unwrap()),
        };

        let first = svc.points.charge(charge(1, "order-1")).await.unwrap();
        assert_eq!(first.balance, 1_000);
        let again = svc.points.charge(charge(1, "order-1")).await.unwrap();
        assert_eq!(again, first, "{strategy}");
        assert_eq!(balance(&svc, user(1)).await, 1_000);
        assert_eq!(history(&svc, user(1)).await.len(), 1);

        // keys are per user and case-sensitive
        assert_eq!(
            svc.points
                .charge(charge(2, "order-1"))
                .await
                .unwrap()
                .balance,
            1_000
        );
        assert_eq!(
            svc.points
                .charge(charge(1, "ORDER-1"))
                .await
                .unwrap()
                .balance,
            2_000
        );
        // a later charge answers the balance of its own time
        assert_eq!(
            svc.points
                .charge(charge(1, "order-2"))
                .await
                .unwrap()
                .balance,
            3_000
        );
        assert_eq!(
            svc.points
                .charge(charge(1, "order-1"))
                .await
                .unwrap()
                .balance,
            1_000
        );
        assert_eq!(balance(&svc, user(1)).await, 3_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_of_a_charge_key_charge_once() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let svc = services(&db, strategy);
        db.sql.set_balance(user(1), 5_000).await.unwrap();

        let outcomes = charge_concurrently(&svc, user(1), 20, 1_000, Some("double-click")).await;

        assert!(
            outcomes.iter().all(|o| matches!(o, Ok(6_000))),
            "{strategy}: {outcomes:?}"
        );
        assert_eq!(balance(&svc, user(1)).await, 6_000);
        assert_eq!(history(&svc, user(1)).await.len(), 2);

        // the same for a user whose wallet the first charge creates
        let outcomes = charge_concurrently(&svc, user(2), 20, 1_000, Some("double-click")).await;
        assert!(
            outcomes.iter().all(|o| matches!(o, Ok(1_000))),
            "{strategy}: {outcomes:?}"
        );
        assert_eq!(balance(&svc, user(2)).await, 1_000);
        assert_eq!(history(&svc, user(2)).await.len(), 1);
        assert_consistent(&db.db).await;
    }
}

#[tokio::test]
async fn a_user_never_charged_has_nothing() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let svc = services(&db, strategy);
        assert_eq!(balance(&svc, user(7)).await, 0);
        assert!(history(&svc, user(7)).await.is_empty());
        let err = svc
            .points
            .use_points(UsePoints {
                user: user(7),
                amount: pts(500),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UseError::InsufficientPoints {
                    balance: 0,
                    needed: 500
                }
            ),
            "{strategy}: {err:?}"
        );
        assert_eq!(balance(&svc, user(7)).await, 0);
        assert!(history(&svc, user(7)).await.is_empty());
    }
}

#[tokio::test]
async fn history_is_newest_first_and_consistent() {
    let db = TestDb::new().await;
    let clock = ManualClock::new();
    let svc = db.services_with("pessimistic", "optimistic", "pessimistic", clock.clone());
    let start = concert_domain::Clock::now(&clock);
    svc.points
        .charge(ChargePoints {
            user: user(1),
            amount: pts(1_000),
            idempotency: None,
        })
        .await
        .unwrap();
    clock.advance(std::time::Duration::from_secs(60));
    svc.points
        .use_points(UsePoints {
            user: user(1),
            amount: pts(300),
        })
        .await
        .unwrap();
    clock.advance(std::time::Duration::from_secs(60));
    svc.points
        .charge(ChargePoints {
            user: user(1),
            amount: pts(200),
            idempotency: None,
        })
        .await
        .unwrap();

    let h = svc.points.history(user(1)).await.unwrap();
    let lines: Vec<_> = h
        .iter()
        .map(|e| (e.kind, e.amount, e.balance_after))
        .collect();
    assert_eq!(
        lines,
        [
            (PointKind::Charge, 200, 900),
            (PointKind::Use, 300, 700),
            (PointKind::Charge, 1_000, 1_000),
        ]
    );
    let minutes: Vec<i64> = h
        .iter()
        .map(|e| (e.created_at - start).num_minutes())
        .collect();
    assert_eq!(minutes, [2, 1, 0], "created_at is the service clock's time");
    assert_eq!(svc.points.balance(user(1)).await.unwrap().balance, 900);
}

/// The point use case under a lock whose fencing token is `lock`'s, for
/// charges and uses alike.
fn fenced(db: &TestDb, lock: FixedFenceLock) -> Services {
    db.services_over(
        Controls {
            seats: control("optimistic"),
            charge: lock.clone().control(),
            spend: lock.control(),
        },
        Policy::default(),
        ManualClock::new(),
    )
}

#[tokio::test]
async fn a_stale_or_lost_fence_writes_nothing() {
    let db = TestDb::new().await;
    db.sql.set_balance(user(1), 10_000).await.unwrap();
    db.sql.set_wallet_fence_token(user(1), 10).await.unwrap();
    let spend = |svc: Services| async move {
        svc.points
            .use_points(UsePoints {
                user: user(1),
                amount: pts(500),
            })
            .await
    };
    let charge = |svc: Services| async move {
        svc.points
            .charge(ChargePoints {
                user: user(1),
                amount: pts(500),
                idempotency: None,
            })
            .await
    };

    let stale = spend(fenced(&db, FixedFenceLock::new(9))).await;
    assert!(
        matches!(stale, Err(UseError::Failed(Failure::LockLost))),
        "{stale:?}"
    );
    let stale = charge(fenced(&db, FixedFenceLock::new(9))).await;
    assert!(
        matches!(stale, Err(ChargeError::Failed(Failure::LockLost))),
        "{stale:?}"
    );
    let lost = spend(fenced(&db, FixedFenceLock::lost(50))).await;
    assert!(
        matches!(lost, Err(UseError::Failed(Failure::LockLost))),
        "{lost:?}"
    );
    let svc = services(&db, "pessimistic");
    assert_eq!(balance(&svc, user(1)).await, 10_000);
    assert_eq!(db.sql.history_count(user(1)).await.unwrap(), 1);
    assert_eq!(db.sql.wallet_fence_token(user(1)).await.unwrap(), 10);
    assert_eq!(db.sql.outbox_count().await.unwrap(), 0, "no event either");

    // equal and newer tokens write, and the newest is recorded
    let ok = spend(fenced(&db, FixedFenceLock::new(10))).await.unwrap();
    assert_eq!(ok.balance, 9_500);
    let ok = spend(fenced(&db, FixedFenceLock::new(12))).await.unwrap();
    assert_eq!(ok.balance, 9_000);
    assert_eq!(db.sql.wallet_fence_token(user(1)).await.unwrap(), 12);
    // a write without a fence leaves the token alone
    spend(services(&db, "pessimistic").as_ref().clone())
        .await
        .unwrap();
    assert_eq!(db.sql.wallet_fence_token(user(1)).await.unwrap(), 12);
    assert_eq!(balance(&svc, user(1)).await, 8_500);
}

/// Under one lock acquisition (one fencing token, as the in-process relay
/// hands it from holder to holder), a holder reads the wallet the previous
/// holder committed from memory. A writer of the same process that takes
/// no lock makes it read again; one elsewhere is caught by the version
/// check, and the use is run once more under the still-held lock, reading
/// afresh: every operation succeeds once, balance and history exact.
#[tokio::test]
async fn holders_of_one_token_read_what_the_last_committed_and_recover_from_writers_without_a_lock()
{
    let db = TestDb::new().await;
    db.sql.set_balance(user(1), 10_000).await.unwrap();
    let attempts = Arc::new(Attempts::default());
    let svc = db.services_over(
        Controls {
            seats: control("optimistic"),
            charge: control("atomic"),
            spend: FixedFenceLock::new(7)
                .control()
                .with_observer(attempts.clone()),
        },
        Policy::default(),
        ManualClock::new(),
    );
    let spend = || {
        svc.points.use_points(UsePoints {
            user: user(1),
            amount: pts(500),
        })
    };
    let counts = || {
        (
            attempts.attempts.load(Ordering::SeqCst),
            attempts.conflicts.load(Ordering::SeqCst),
        )
    };
    assert_eq!(spend().await.unwrap().balance, 9_500);
    assert_eq!(spend().await.unwrap().balance, 9_000);
    assert_eq!(counts(), (2, 0));
    // an atomic charge: no lock, no fence
    let charged = svc
        .points
        .charge(ChargePoints {
            user: user(1),
            amount: pts(2_000),
            idempotency: None,
        })
        .await
        .unwrap();
    assert_eq!(charged.balance, 11_000);
    // a writer of this process forgets what the memory held: the next
    // holder reads the wallet
    assert_eq!(spend().await.unwrap().balance, 10_500);
    assert_eq!(counts(), (3, 0));
    // and the one after from memory
    assert_eq!(spend().await.unwrap().balance, 10_000);
    assert_eq!(counts(), (4, 0));
    // a writer elsewhere (here SQL of its own pool; it bumps the version as
    // every writer does): the read from memory (10000) is out of date, the
    // write is refused, and the use runs once more, reading 3000
    db.sql.set_balance(user(1), 3_000).await.unwrap();
    assert_eq!(spend().await.unwrap().balance, 2_500);
    assert_eq!(counts(), (6, 1));
    assert_eq!(balance(&svc, user(1)).await, 2_500);
    let lines = history(&svc, user(1)).await;
    let balances: Vec<u64> = lines.iter().map(|h| h.balance_after).collect();
    assert_eq!(
        balances,
        [2_500, 3_000, 10_000, 10_500, 11_000, 9_000, 9_500, 10_000]
    );
    assert_consistent(&db.db).await;
}

#[tokio::test]
async fn a_killed_connection_is_unavailable_once_then_replaced() {
    let db = TestDb::new().await;
    let svc = services(&db, "pessimistic");
    db.sql.set_balance(user(1), 1_040).await.unwrap();
    // warm both pools (units of work, and reads): several connections open
    // and idle in each
    let warm = concurrently(4, |_| {
        let svc = svc.clone();
        async move {
            svc.points
                .use_points(UsePoints {
                    user: user(1),
                    amount: pts(10),
                })
                .await
                .map(|b| b.balance)
        }
    })
    .await;
    assert!(warm.iter().all(Result::is_ok), "{warm:?}");
    let warm = concurrently(4, |_| {
        let svc = svc.clone();
        async move { svc.points.balance(user(1)).await.map(|b| b.balance) }
    })
    .await;
    assert!(warm.iter().all(|b| matches!(b, Ok(1_000))));

    let killed = db.sql.kill_other_connections().await.unwrap();
    assert!(killed >= 1);

    // Each dead pooled connection fails one request as Unavailable (never a
    // panic, never Unknown) and is discarded; fresh ones take over. Uses go
    // through the units' pool, balance reads through the other one.
    let mut unavailable = 0;
    let mut succeeded = 0;
    let mut read = 0;
    for _ in 0..20 {
        match svc
            .points
            .use_points(UsePoints {
                user: user(1),
                amount: pts(10),
            })
            .await
        {
            Ok(_) => succeeded += 1,
            Err(UseError::Failed(Failure::Unavailable(_))) => unavailable += 1,
            Err(other) => panic!("a lost connection must be Unavailable: {other:?}"),
        }
        match svc.points.balance(user(1)).await {
            Ok(_) => read += 1,
            Err(QueryError::Failed(Failure::Unavailable(_))) => unavailable += 1,
            Err(other) => panic!("a lost connection must be Unavailable: {other:?}"),
        }
    }
    assert!(
        (1..=killed as usize).contains(&unavailable),
        "{unavailable} failures for {killed} killed connections"
    );
    assert_eq!(unavailable + succeeded + read, 40);
    assert_eq!(balance(&svc, user(1)).await, 1_000 - 10 * succeeded as u64);
    assert_eq!(
        db.sql.history_count(user(1)).await.unwrap(),
        1 + 4 + succeeded as u64
    );
    db.db.ping().await.unwrap();
}
