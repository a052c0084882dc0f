//! The audit (`app audit`) on real MariaDB: every invariant holds after a
//! day of every kind of business, and each one is caught, naming its rows,
//! on a database corrupted on purpose.

use std::collections::BTreeSet;
use std::time::Duration;

use concert_domain::ScheduleId;
use concert_mysql::Invariant;
use concert_tests::app::{TestApp, json_ok, spawn_app};
use concert_tests::audit::{assert_consistent, violations};
use concert_tests::calls::Answer;

/// A database with one of everything: a sale (seat 1, user 1), a hold
/// that has ended unswept (seat 2, user 2), a refunded sale (seat 3, user
/// 3), a cancelled hold (seat 4, user 2), an ended hold taken over (seat 5,
/// users 4 then 5), a live hold (seat 6, user 2), and histories of several
/// lines.
struct World {
    app: TestApp,
    schedule: ScheduleId,
    sold: u64,
    payment: u64,
    held: u64,
}

async fn world() -> World {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let (sold, payment) = app.bought(1, schedule, 1, 800).await;
    json_ok(app.charge(1, 200).await).await;
    app.hold(2, schedule, 2).await;
    let (_, refunded) = app.bought(3, schedule, 3, 500).await;
    assert_eq!(
        Answer::read(app.refund(3, refunded).await).await.status,
        200
    );
    let cancelled = app.hold(2, schedule, 4).await;
    assert_eq!(
        Answer::read(app.cancel(2, cancelled).await).await.status,
        200
    );
    app.hold(4, schedule, 5).await;
    app.advance(Duration::from_secs(200));
    // seat 6's hold outlives seats 2 and 5's
    let held = app.hold(2, schedule, 6).await;
    app.advance(Duration::from_secs(100));
    // seat 5's ended hold is taken over
    app.hold(5, schedule, 5).await;
    World {
        app,
        schedule,
        sold,
        payment,
        held,
    }
}

#[tokio::test]
async fn every_invariant_holds_after_every_kind_of_business() {
    let w = world().await;
    assert_consistent(&w.app.db.db).await;
    // the sweeper expiring ended holds keeps them
    let clock = w.app.clock.clone().expect("a manual clock");
    let services = w.app.db.services("pessimistic", clock);
    w.app.advance(Duration::from_secs(300));
    assert_eq!(services.reservations.expire_stale().await.unwrap(), 3);
    assert_consistent(&w.app.db.db).await;
}

/// Corrupts `w`'s database with `statements` and checks that the audit
/// finds exactly the invariants `broken`, each violation naming `names`.
async fn caught(w: &World, statements: &[String], broken: &[Invariant], names: &str) {
    assert_consistent(&w.app.db.db).await;
    for sql in statements {
        w.app.db.sql.execute(sql).await.unwrap();
    }
    let found = violations(&w.app.db.db).await;
    let invariants: BTreeSet<Invariant> = found.iter().map(|v| v.invariant).collect();
    let expected: BTreeSet<Invariant> = broken.iter().copied().collect();
    assert_eq!(invariants, expected, "{found:#?}");
    assert!(
        found.iter().any(|v| v.detail.contains(names)),
        "no violation names {names:?}: {found:#?}"
    );
}

async fn seat_id(w: &World, number: u8) -> u64 {
    w.app
        .db
        .sql
        .number(&format!(
            "SELECT CAST(id AS SIGNED) AS n FROM seats WHERE schedule_id = {} AND number = {number}",
            w.schedule
        ))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_seat_with_two_live_reservations_is_caught() {
    let w = world().await;
    let statements = [
        "ALTER TABLE reservations DROP INDEX uq_reservations_live_seat".to_owned(),
        format!(
            "INSERT INTO reservations (seat_id, schedule_id, seat_number, user_id, price, status, \
             expires_at, created_at) SELECT seat_id, schedule_id, seat_number, 99, price, 'HELD', \
             expires_at, created_at FROM reservations WHERE id = {}",
            w.held
        ),
    ];
    let seat = seat_id(&w, 6).await;
    caught(
        &w,
        &statements,
        &[
            Invariant::OneLiveReservationPerSeat,
            Invariant::HeldSeatIsHeld,
        ],
        &format!(
            "seat {seat} (schedule {}, number 6) has 2 live reservations",
            w.schedule
        ),
    )
    .await;
}

#[tokio::test]
async fn a_confirmed_reservation_without_its_payment_is_caught() {
    let w = world().await;
    caught(
        &w,
        &[format!("DELETE FROM payments WHERE id = {}", w.payment)],
        &[Invariant::ConfirmedIsPaidAndSold],
        &format!("reservation {} ", w.sold),
    )
    .await;
}

#[tokio::test]
async fn a_balance_that_is_not_its_history_is_caught() {
    let w = world().await;
    caught(
        &w,
        &["UPDATE wallets SET balance = balance + 7 WHERE user_id = 1".to_owned()],
        &[Invariant::BalanceIsHistorySum],
        "wallet of user 1: balance 507, history sums to 500",
    )
    .await;
}

#[tokio::test]
async fn a_broken_history_chain_is_caught() {
    let w = world().await;
    let first = w
        .app
        .db
        .sql
        .number("SELECT CAST(MIN(id) AS SIGNED) AS n FROM point_history WHERE user_id = 1")
        .await
        .unwrap();
    caught(
        &w,
        &[format!(
            "UPDATE point_history SET balance_after = balance_after + 5 WHERE id = {first}"
        )],
        &[Invariant::HistoryChains],
        &format!("history entry {first} of user 1 (CHARGE 800): balanceAfter 805 after 0"),
    )
    .await;
}

#[tokio::test]
async fn a_sold_seat_nobody_bought_is_caught() {
    let w = world().await;
    let seat = seat_id(&w, 10).await;
    caught(
        &w,
        &[format!(
            "UPDATE seats SET status = 'SOLD' WHERE id = {seat}"
        )],
        &[Invariant::SoldSeatIsConfirmed],
        &format!(
            "seat {seat} (schedule {}, number 10) is SOLD with 0",
            w.schedule
        ),
    )
    .await;
}

#[tokio::test]
async fn a_held_seat_without_its_hold_is_caught() {
    let w = world().await;
    let seat = seat_id(&w, 11).await;
    caught(
        &w,
        &[format!(
            "UPDATE seats SET status = 'HELD', held_by = 5, held_until = '2099-01-01' \
             WHERE id = {seat}"
        )],
        &[Invariant::HeldSeatIsHeld],
        &format!(
            "seat {seat} (schedule {}, number 11) is HELD by user 5 with 0",
            w.schedule
        ),
    )
    .await;
}

#[tokio::test]
async fn a_payment_that_does_not_match_its_reservation_is_caught() {
    let w = world().await;
    caught(
        &w,
        &[format!(
            "UPDATE payments SET amount = amount + 1 WHERE id = {}",
            w.payment
        )],
        &[Invariant::PaymentFollowsReservation],
        &format!(
            "payment {} (PAID, 501 points) of reservation {}",
            w.payment, w.sold
        ),
    )
    .await;
}
