//! Payments over MySQL through the domain's `PaymentService`: one
//! transaction moves the points, confirms the reservation, sells the seat
//! and records the payment; every refusal changes nothing anywhere.

use std::sync::Arc;
use std::time::Duration;

use concert_domain::{
    IdempotencyKey, PayError, PayReservation, Payment, PaymentService, PointKind, Queries,
    Reservation, ReservationId, ReservationStatus, ReserveSeat, ScheduleId, SeatNumber, SeatState,
    Services, UserId,
};
use concert_tests::audit::assert_consistent;
use concert_tests::clock::ManualClock;
use concert_tests::db::{TestDb, concurrently, lock_free};

const DEFAULT_HOLD: Duration = Duration::from_secs(300);

/// `pay(user, reservation, key)` in the shape the old tests used.
trait PayAs {
    async fn pay_as(
        &self,
        user: UserId,
        reservation: ReservationId,
        key: Option<IdempotencyKey>,
    ) -> Result<Payment, PayError>;
}

impl PayAs for PaymentService {
    async fn pay_as(
        &self,
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Payment, PayError> {
        self.pay(PayReservation {
            user,
            reservation,
            idempotency,
        })
        .await
    }
}

fn user(id: u64) -> UserId {
    UserId::from(id)
}

fn seat(n: i64) -> SeatNumber {
    SeatNumber::new(n).unwrap()
}

async fn hold(svc: &Services, who: u64, schedule: ScheduleId, n: i64) -> Reservation {
    svc.reservations
        .reserve(ReserveSeat {
            user: user(who),
            schedule,
            seat: seat(n),
        })
        .await
        .unwrap()
}

/// Everything a payment could touch, to compare before and after.
#[derive(Debug, PartialEq)]
struct Snapshot {
    balance: u64,
    history: u64,
    reservation: ReservationStatus,
    seat: SeatState,
    payments: u64,
}

async fn snapshot(db: &TestDb, payer: UserId, r: &Reservation) -> Snapshot {
    let stored = db
        .sql
        .reservations_of_seat(r.schedule, r.seat_number)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.id == r.id)
        .unwrap();
    Snapshot {
        balance: db
            .store()
            .wallet(payer)
            .await
            .unwrap()
            .map_or(0, |w| w.balance),
        history: db.sql.history_count(payer).await.unwrap(),
        reservation: stored.status,
        seat: db
            .sql
            .seat(r.schedule, r.seat_number)
            .await
            .unwrap()
            .unwrap()
            .state,
        payments: db.sql.payment_count().await.unwrap(),
    }
}

#[tokio::test]
async fn paying_moves_points_confirms_and_sells_at_once() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let schedule = db.schedule(700).await;
        let clock = ManualClock::new();
        let svc = db.services(strategy, clock.clone());
        db.sql.set_balance(user(1), 1_000).await.unwrap();
        let r = hold(&svc, 1, schedule, 4).await;
        clock.advance(Duration::from_secs(30));

        let p = svc.payments.pay_as(user(1), r.id, None).await.unwrap();

        assert_eq!(
            (p.reservation, p.user, p.amount.get()),
            (r.id, user(1), 700)
        );
        assert_eq!(p.paid_at, concert_domain::Clock::now(&clock));
        assert_eq!(
            db.sql.payments_of_reservation(r.id).await.unwrap(),
            vec![p.clone()],
            "{strategy}"
        );
        let after = snapshot(&db, user(1), &r).await;
        assert_eq!(
            after,
            Snapshot {
                balance: 300,
                history: 2,
                reservation: ReservationStatus::Confirmed,
                seat: SeatState::Sold,
                payments: 1,
            },
            "{strategy}"
        );
        let h = svc.points.history(user(1)).await.unwrap();
        assert_eq!(
            (h[0].kind, h[0].amount, h[0].balance_after),
            (PointKind::Use, 700, 300)
        );
        assert_eq!(
            svc.reservations.get(user(1), r.id).await.unwrap().status,
            ReservationStatus::Confirmed
        );
        // a sold seat cannot be held again
        assert!(matches!(
            svc.reservations
                .reserve(ReserveSeat {
                    user: user(2),
                    schedule,
                    seat: seat(4)
                })
                .await,
            Err(concert_domain::ReserveError::SeatUnavailable { .. })
        ));
        // and does not expire
        clock.advance(DEFAULT_HOLD * 2);
        assert_eq!(svc.reservations.expire_stale().await.unwrap(), 0);
        assert_eq!(snapshot(&db, user(1), &r).await, after);
    }
}

#[tokio::test]
async fn paying_twice_is_already_paid_and_changes_nothing() {
    let db = TestDb::new().await;
    let schedule = db.schedule(500).await;
    let svc = db.services("pessimistic", ManualClock::new());
    db.sql.set_balance(user(1), 5_000).await.unwrap();
    let r = hold(&svc, 1, schedule, 1).await;
    svc.payments.pay_as(user(1), r.id, None).await.unwrap();
    let before = snapshot(&db, user(1), &r).await;

    let again = svc.payments.pay_as(user(1), r.id, None).await;

    assert!(matches!(again.unwrap_err(), PayError::AlreadyPaid));
    assert_eq!(snapshot(&db, user(1), &r).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_payment_returns_the_first_payment() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let schedule = db.schedule(500).await;
        let svc = Arc::new(db.services(strategy, ManualClock::new()));
        db.sql.set_balance(user(1), 5_000).await.unwrap();
        let r = hold(&svc, 1, schedule, 1).await;
        let key = IdempotencyKey::new("pay-1").unwrap();

        let first = svc
            .payments
            .pay_as(user(1), r.id, Some(key.clone()))
            .await
            .unwrap();
        let again = svc
            .payments
            .pay_as(user(1), r.id, Some(key.clone()))
            .await
            .unwrap();
        assert_eq!(again, first, "{strategy}");
        let before = snapshot(&db, user(1), &r).await;
        assert_eq!((before.balance, before.payments), (4_500, 1));

        // concurrent repeats of another key on another seat: one payment
        let r2 = hold(&svc, 1, schedule, 2).await;
        let outcomes = concurrently(10, |_| {
            let svc = svc.clone();
            async move {
                svc.payments
                    .pay_as(user(1), r2.id, Some(IdempotencyKey::new("pay-2").unwrap()))
                    .await
            }
        })
        .await;
        let payments: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
        assert!(payments.windows(2).all(|w| w[0] == w[1]), "{strategy}");
        assert_eq!(payments[0].reservation, r2.id);
        let after = snapshot(&db, user(1), &r2).await;
        assert_eq!((after.balance, after.payments), (4_000, 2), "{strategy}");
        assert_consistent(&db.db).await;
    }
}

#[tokio::test]
async fn refused_payments_change_nothing_anywhere() {
    let db = TestDb::new().await;
    let schedule = db.schedule(500).await;
    let clock = ManualClock::new();
    let svc = db.services("pessimistic", clock.clone());
    db.sql.set_balance(user(1), 5_000).await.unwrap();
    db.sql.set_balance(user(2), 400).await.unwrap();

    // someone else's hold: NotFound
    let others = hold(&svc, 1, schedule, 1).await;
    let before = snapshot(&db, user(2), &others).await;
    assert!(matches!(
        svc.payments
            .pay_as(user(2), others.id, None)
            .await
            .unwrap_err(),
        PayError::NotFound
    ));
    assert_eq!(snapshot(&db, user(2), &others).await, before);
    assert_eq!(snapshot(&db, user(1), &others).await.balance, 5_000);

    // an unknown reservation: NotFound
    assert!(matches!(
        svc.payments
            .pay_as(user(2), ReservationId::from(others.id.get() + 1_000), None)
            .await
            .unwrap_err(),
        PayError::NotFound
    ));

    // too few points: InsufficientPoints with the real numbers
    let poor = hold(&svc, 2, schedule, 2).await;
    let before = snapshot(&db, user(2), &poor).await;
    assert!(matches!(
        svc.payments
            .pay_as(user(2), poor.id, None)
            .await
            .unwrap_err(),
        PayError::InsufficientPoints {
            balance: 400,
            needed: 500
        }
    ));
    assert_eq!(snapshot(&db, user(2), &poor).await, before);
    assert_eq!(before.reservation, ReservationStatus::Held);

    // no wallet at all: InsufficientPoints from 0
    let broke = hold(&svc, 3, schedule, 3).await;
    let before = snapshot(&db, user(3), &broke).await;
    assert!(matches!(
        svc.payments
            .pay_as(user(3), broke.id, None)
            .await
            .unwrap_err(),
        PayError::InsufficientPoints {
            balance: 0,
            needed: 500
        }
    ));
    assert_eq!(snapshot(&db, user(3), &broke).await, before);

    // an expired hold (the 410 case), before and after the sweeper
    let late = hold(&svc, 1, schedule, 4).await;
    clock.advance(DEFAULT_HOLD);
    let before = snapshot(&db, user(1), &late).await;
    assert!(matches!(
        svc.payments
            .pay_as(user(1), late.id, None)
            .await
            .unwrap_err(),
        PayError::Expired
    ));
    assert_eq!(snapshot(&db, user(1), &late).await, before);
    svc.reservations.expire_stale().await.unwrap();
    let swept = snapshot(&db, user(1), &late).await;
    assert_eq!(swept.reservation, ReservationStatus::Expired);
    assert!(matches!(
        svc.payments
            .pay_as(user(1), late.id, None)
            .await
            .unwrap_err(),
        PayError::Expired
    ));
    assert_eq!(snapshot(&db, user(1), &late).await, swept);

    // an expired hold taken over by someone else: still Expired for its owner
    let taken = hold(&svc, 2, schedule, 5).await;
    clock.advance(DEFAULT_HOLD);
    let winner = hold(&svc, 1, schedule, 5).await;
    assert!(matches!(
        svc.payments
            .pay_as(user(2), taken.id, None)
            .await
            .unwrap_err(),
        PayError::Expired
    ));
    // and the new holder pays normally
    svc.payments.pay_as(user(1), winner.id, None).await.unwrap();
    assert_eq!(db.sql.payment_count().await.unwrap(), 1);
    assert_eq!(db.sql.sold_seats_without_payment().await.unwrap(), 0);
}

/// One user holds `seats` seats at 500 each and pays them all at once.
async fn pay_all_concurrently(
    strategy: &str,
    balance: u64,
    seats: usize,
) -> (TestDb, Vec<Result<concert_domain::Payment, PayError>>) {
    let db = TestDb::new().await;
    let concert = db.sql.create_concert("Many seats").await.unwrap();
    let svc = Arc::new(db.services(strategy, ManualClock::new()));
    let mut held = Vec::new();
    for s in 0..seats.div_ceil(50) {
        let schedule = db
            .sql
            .create_schedule(
                concert,
                chrono::Utc::now() + chrono::Duration::days(10 + s as i64),
                |_| 500,
            )
            .await
            .unwrap();
        for n in 1..=50.min(seats - 50 * s) {
            held.push(hold(&svc, 1, schedule, n as i64).await.id);
        }
    }
    db.sql.set_balance(user(1), balance).await.unwrap();
    let held = Arc::new(held);
    let outcomes = concurrently(seats, |i| {
        let svc = svc.clone();
        let held = held.clone();
        async move { svc.payments.pay_as(user(1), held[i], None).await }
    })
    .await;
    (db, outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_payments_all_succeed_while_the_balance_covers_them() {
    let (db, outcomes) = pay_all_concurrently("pessimistic", 100_000, 100).await;

    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let balance = concert_domain::Queries::wallet(&db.store(), user(1))
        .await
        .unwrap()
        .expect("a wallet")
        .balance;
    assert_eq!(balance, 50_000);
    assert_eq!(db.sql.payment_count().await.unwrap(), 100);
    assert_eq!(db.sql.history_count(user(1)).await.unwrap(), 101);
    assert_eq!(db.sql.sold_seats_without_payment().await.unwrap(), 0);
    assert_consistent(&db.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_stop_exactly_when_the_points_run_out() {
    for strategy in ["pessimistic", "atomic"] {
        let (db, outcomes) = pay_all_concurrently(strategy, 10_000, 100).await;

        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        let refused = outcomes
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Err(PayError::InsufficientPoints {
                        balance: 0,
                        needed: 500
                    })
                )
            })
            .count();
        assert_eq!((ok, refused), (20, 80), "{strategy}: {outcomes:?}");
        let balance = concert_domain::Queries::wallet(&db.store(), user(1))
            .await
            .unwrap()
            .expect("a wallet")
            .balance;
        assert_eq!(balance, 0);
        assert_eq!(db.sql.payment_count().await.unwrap(), 20);
        assert_eq!(db.sql.history_count(user(1)).await.unwrap(), 21);
        assert_eq!(db.sql.sold_seats_without_payment().await.unwrap(), 0);
        assert_consistent(&db.db).await;
    }
}
