//! The points use cases over the in-memory store (moved from the domain
//! crate, which cannot depend on an adapter).

use std::sync::Arc;

use super::{Log, every_control, logged_services, services};
use concert_domain::events::EventType;
use concert_domain::ids::IdempotencyKey;
use concert_domain::lock::{LockOptions, MockDistributedLock};
use concert_domain::model::wallet::Points;
use concert_domain::model::wallet::{MAX_BALANCE, PointKind};
use concert_domain::services::Policy;
use concert_domain::services::Services;
use concert_domain::*;
use concert_locking::Ordered;
use concert_locking::ordered::testing::Contended;
use concert_memory::MemoryStore;

fn user() -> UserId {
    UserId::from(3)
}

fn pts(v: i64) -> Points {
    Points::new(v).unwrap()
}

fn charge(amount: i64, key: Option<&str>) -> ChargePoints {
    ChargePoints {
        user: user(),
        amount: pts(amount),
        idempotency: key.map(|k| IdempotencyKey::new(k).unwrap()),
    }
}

#[tokio::test]
async fn charges_and_uses_move_the_balance_with_history_and_events() {
    for control in every_control() {
        let name = control.name().to_owned();
        let (svc, store, _) = services(control, Policy::default());
        assert_eq!(svc.points.balance(user()).await.unwrap().balance, 0);
        let b = svc.points.charge(charge(1_000, None)).await.unwrap();
        assert_eq!(b.balance, 1_000, "{name}");
        let b = svc
            .points
            .use_points(UsePoints {
                user: user(),
                amount: pts(300),
            })
            .await
            .unwrap();
        assert_eq!(b.balance, 700, "{name}");
        let history = svc.points.history(user()).await.unwrap();
        let lines: Vec<_> = history
            .iter()
            .map(|h| (h.kind, h.amount, h.balance_after))
            .collect();
        assert_eq!(
            lines,
            [
                (PointKind::Use, 300, 700),
                (PointKind::Charge, 1_000, 1_000)
            ],
            "{name}"
        );
        let events: Vec<_> = store
            .events()
            .iter()
            .map(|e| (e.kind, e.payload.balance_after))
            .collect();
        assert_eq!(
            events,
            [
                (EventType::PointsCharged, Some(1_000)),
                (EventType::PointsUsed, Some(700))
            ],
            "{name}"
        );
    }
}

#[tokio::test]
async fn refusals_change_nothing() {
    for control in every_control() {
        let name = control.name().to_owned();
        let (svc, store, _) = services(control, Policy::default());
        let out = svc
            .points
            .use_points(UsePoints {
                user: user(),
                amount: pts(1),
            })
            .await;
        assert!(
            matches!(
                out,
                Err(UseError::InsufficientPoints {
                    balance: 0,
                    needed: 1
                })
            ),
            "{name}: {out:?}"
        );
        store.set_balance(user(), MAX_BALANCE - 5);
        let out = svc.points.charge(charge(6, None)).await;
        assert!(
            matches!(out, Err(ChargeError::BalanceLimit { amount: 6, .. })),
            "{name}: {out:?}"
        );
        assert_eq!(store.balance(user()), MAX_BALANCE - 5, "{name}");
        assert!(store.events().is_empty(), "{name}");
        assert!(store.history_of(user()).is_empty(), "{name}");
    }
}

#[tokio::test]
async fn a_charge_key_answers_repeats_and_refuses_another_amount() {
    for control in every_control() {
        let name = control.name().to_owned();
        let (svc, store, _) = services(control, Policy::default());
        let first = svc.points.charge(charge(500, Some("k1"))).await.unwrap();
        let again = svc.points.charge(charge(500, Some("k1"))).await.unwrap();
        assert_eq!((first.balance, again.balance), (500, 500), "{name}");
        assert!(
            matches!(
                svc.points.charge(charge(999, Some("k1"))).await,
                Err(ChargeError::KeyReused)
            ),
            "{name}"
        );
        let other = svc.points.charge(charge(500, Some("k2"))).await.unwrap();
        assert_eq!(other.balance, 1_000, "{name}");
        assert_eq!(store.history_of(user()).len(), 2, "{name}");
        assert_eq!(store.events().len(), 2, "{name}");
    }
}

#[tokio::test]
async fn a_failed_commit_writes_nothing_and_frees_the_key() {
    let (svc, store, _) = services(Control::pessimistic("pessimistic"), Policy::default());
    store.fail_next_commit(Failure::unavailable(anyhow::anyhow!("db went away")));
    assert!(matches!(
        svc.points.charge(charge(500, Some("k"))).await,
        Err(ChargeError::Failed(Failure::Unavailable(_)))
    ));
    assert_eq!(store.balance(user()), 0);
    let b = svc.points.charge(charge(500, Some("k"))).await.unwrap();
    assert_eq!(b.balance, 500);
}

fn use_300() -> UsePoints {
    UsePoints {
        user: user(),
        amount: pts(300),
    }
}

/// The services under a mock lock whose acquisitions answer
/// `waited_for_here`, locks and units of work logging to one log; the
/// user's balance set to `balance`.
fn under_logged_lock(waited_for_here: bool, balance: u64) -> (Services, MemoryStore, Log) {
    let log = Log::default();
    let lock = MockDistributedLock::granting(1, log.clone());
    let lock = Contended::new(lock, log.clone(), move |_| waited_for_here);
    let control = Control::locked(
        "local",
        Arc::new(Ordered::new(lock)),
        LockOptions::default(),
    );
    let (svc, store) = logged_services(control, log.clone());
    store.set_balance(user(), balance);
    (svc, store, log)
}

/// Under a lock another request of this process waits for, a use's
/// writes are applied, the lock is passed on to that request, the unit
/// is committed, and only then is the lock service's lock released;
/// under a lock nobody waits for here, the unit commits first and
/// releases after (one round trip fewer).
#[tokio::test]
async fn a_lock_waited_for_here_is_handed_over_between_the_writes_and_the_commit() {
    for (waited_for_here, expected) in [
        (
            true,
            vec![
                "acquire wallet:3",
                "write",
                "pass wallet:3",
                "commit",
                "release wallet:3",
            ],
        ),
        (
            false,
            vec!["acquire wallet:3", "commit", "release wallet:3"],
        ),
    ] {
        let (svc, store, log) = under_logged_lock(waited_for_here, 1_000);
        let b = svc.points.use_points(use_300()).await.unwrap();
        assert_eq!(b.balance, 700);
        assert_eq!(store.balance(user()), 700);
        assert_eq!(store.history_of(user()).len(), 1);
        assert_eq!(*log.lock().unwrap(), expected, "{waited_for_here}");
    }
}

/// A write refused before the hand-over (here a conflict) rolls the
/// unit back and keeps the lock: the use runs once more under it, and
/// only its successful writes pass the lock on.
#[tokio::test]
async fn a_refused_write_keeps_the_lock_for_the_second_run() {
    let (svc, store, log) = under_logged_lock(true, 1_000);
    store.fail_next_commit(Failure::Conflict);
    let b = svc.points.use_points(use_300()).await.unwrap();
    assert_eq!(b.balance, 700);
    assert_eq!(store.balance(user()), 700);
    assert_eq!(store.history_of(user()).len(), 1);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "acquire wallet:3",
            "write",
            "rollback",
            "write",
            "pass wallet:3",
            "commit",
            "release wallet:3"
        ]
    );
}

/// A use the rules refuse writes nothing and hands nothing over early.
#[tokio::test]
async fn a_refused_use_rolls_back_before_the_release() {
    let (svc, store, log) = under_logged_lock(true, 100);
    assert!(matches!(
        svc.points.use_points(use_300()).await,
        Err(UseError::InsufficientPoints {
            balance: 100,
            needed: 300
        })
    ));
    assert_eq!(store.balance(user()), 100);
    assert_eq!(
        *log.lock().unwrap(),
        ["acquire wallet:3", "rollback", "release wallet:3"]
    );
}
