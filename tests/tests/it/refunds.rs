//! Reading and refunding payments end to end on real MariaDB and Redis:
//! the happy path, every error of the contract, 100 concurrent refunds
//! under each point-use strategy, and a refunded seat sold again.

use std::sync::Arc;
use std::time::Duration;

use concert_domain::SeatNumber;
use concert_tests::app::{AppConfig, TestApp, spawn_app, spawn_app_with};
use concert_tests::audit::assert_consistent;
use concert_tests::calls::Answer;
use concert_tests::db::concurrently;
use reqwest::Method;
use serde_json::json;

async fn answer(response: reqwest::Response) -> Answer {
    Answer::read(response).await
}

async fn events(app: &TestApp, kind: &str) -> usize {
    let all = app.db.sql.outbox().await.expect("outbox");
    all.iter().filter(|e| e.event_type == kind).count()
}

/// (kind, amount, balanceAfter) of the user's history, newest first.
async fn history(app: &TestApp, user: u64) -> Vec<(String, u64, u64)> {
    let history = app.read_as(user, "/api/v1/points/history").await;
    history
        .as_array()
        .expect("a list")
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().to_owned(),
                h["amount"].as_u64().unwrap(),
                h["balanceAfter"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn entry(kind: &str, amount: u64, after: u64) -> (String, u64, u64) {
    (kind.to_owned(), amount, after)
}

#[tokio::test]
async fn a_payment_reads_back_and_a_refund_undoes_it_once() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(600).await;
    let (reservation, payment) = app.bought(4, schedule, 12, 1000).await;

    let read = app.read_as(4, &format!("/api/v1/payments/{payment}")).await;
    assert_eq!(read["id"], payment);
    assert_eq!(read["reservationId"], reservation);
    assert_eq!(read["userId"], 4);
    assert_eq!(read["amount"], 600);
    assert_eq!(read["status"], "PAID");
    assert!(read["paidAt"].is_string());
    let confirmed = app
        .read_as(4, &format!("/api/v1/reservations/{reservation}"))
        .await;
    assert_eq!(confirmed["status"], "CONFIRMED");
    assert!(confirmed["expiresAt"].is_null(), "{confirmed}");

    let refunded = answer(app.refund(4, payment).await).await;
    assert_eq!(refunded.status, 200, "{}", refunded.body);
    let mut expected = read.clone();
    expected["status"] = json!("REFUNDED");
    assert_eq!(refunded.body, expected);
    assert_eq!(app.balance(4).await, 1000);
    assert_eq!(
        history(&app, 4).await,
        [
            entry("REFUND", 600, 1000),
            entry("USE", 600, 400),
            entry("CHARGE", 1000, 1000)
        ]
    );
    let reservation_now = app
        .read_as(4, &format!("/api/v1/reservations/{reservation}"))
        .await;
    assert_eq!(reservation_now["status"], "REFUNDED");
    assert!(reservation_now["expiresAt"].is_null());
    assert_eq!(
        app.read_as(4, &format!("/api/v1/payments/{payment}")).await,
        expected
    );
    assert_eq!(app.seat_status_of(schedule, 12).await, "AVAILABLE");
    let listed = app.read_as(4, "/api/v1/reservations?status=REFUNDED").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // again: the same answer, nothing moves
    let again = answer(app.refund(4, payment).await).await;
    assert_eq!((again.status, &again.body), (200, &expected));
    assert_eq!(app.balance(4).await, 1000);
    assert_eq!(history(&app, 4).await.len(), 3);
    for kind in ["PaymentRefunded", "ReservationRefunded", "PointsRefunded"] {
        assert_eq!(events(&app, kind).await, 1, "{kind}");
    }
    // a refunded reservation cannot be cancelled or paid
    assert_eq!(
        answer(app.cancel(4, reservation).await).await.outcome(),
        (409, "already-paid")
    );
    assert_eq!(
        answer(app.pay(4, reservation).await).await.outcome(),
        (409, "already-paid")
    );
    assert_consistent(&app.db.db).await;
}

#[tokio::test]
async fn payments_and_refunds_answer_every_error_of_the_contract() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let (_, payment) = app.bought(4, schedule, 1, 500).await;

    for path in [
        format!("/api/v1/payments/{payment}"),
        "/api/v1/payments/999999".to_owned(),
    ] {
        let response = app.get_as(5, &path).send().await.unwrap();
        assert_eq!(
            answer(response).await.outcome(),
            (404, "not-found"),
            "{path}"
        );
    }
    assert_eq!(
        answer(app.refund(5, payment).await).await.outcome(),
        (404, "not-found")
    );
    assert_eq!(
        answer(app.refund(4, 999_999).await).await.outcome(),
        (404, "not-found")
    );
    for bad in ["0", "x"] {
        let read = app
            .get_as(4, &format!("/api/v1/payments/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer(read).await.outcome(), (400, "validation"));
        let refund = app
            .call_as(4, Method::POST, &format!("/api/v1/payments/{bad}/refund"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer(refund).await.outcome(), (400, "validation"));
    }
    for request in [
        app.client
            .get(app.url(&format!("/api/v1/payments/{payment}"))),
        app.client
            .post(app.url(&format!("/api/v1/payments/{payment}/refund"))),
    ] {
        assert_eq!(
            answer(request.send().await.unwrap()).await.outcome(),
            (401, "unauthorized")
        );
    }
    assert_eq!(app.balance(4).await, 0);
    assert_eq!(app.seat_status_of(schedule, 1).await, "SOLD");
    assert_consistent(&app.db.db).await;
}

#[tokio::test]
async fn refunds_close_a_day_before_the_show() {
    let app = spawn_app().await;
    // 25 hours ahead: refundable now, not in two hours
    let (_, schedule) = app
        .schedule_at(app.now() + chrono::Duration::hours(25), 500)
        .await;
    let (_, early) = app.bought(4, schedule, 1, 500).await;
    let (reservation, late) = app.bought(4, schedule, 2, 500).await;
    assert_eq!(answer(app.refund(4, early).await).await.status, 200);
    app.advance(Duration::from_secs(2 * 3600));
    let closed = answer(app.refund(4, late).await).await;
    assert_eq!(closed.outcome(), (409, "refund-closed"));
    assert!(
        closed.body["detail"].as_str().unwrap().contains("24 hours"),
        "{}",
        closed.body
    );
    // nothing moved
    assert_eq!(app.balance(4).await, 500);
    let payment = app.read_as(4, &format!("/api/v1/payments/{late}")).await;
    assert_eq!(payment["status"], "PAID");
    let read = app
        .read_as(4, &format!("/api/v1/reservations/{reservation}"))
        .await;
    assert_eq!(read["status"], "CONFIRMED");
    assert_eq!(app.seat_status_of(schedule, 2).await, "SOLD");
    assert_eq!(events(&app, "PaymentRefunded").await, 1);
    assert_consistent(&app.db.db).await;
}

/// 100 concurrent refunds of one payment: every answer is the refunded
/// payment, the price comes back exactly once.
async fn hundred_refunds(use_strategy: &'static str) {
    let app = Arc::new(
        spawn_app_with(AppConfig {
            use_strategy,
            ..AppConfig::default()
        })
        .await,
    );
    let (_, schedule) = app.seed_schedule(700).await;
    let (reservation, payment) = app.bought(9, schedule, 30, 2000).await;
    let answers = concurrently(100, |_| {
        let app = app.clone();
        async move { answer(app.refund(9, payment).await).await }
    })
    .await;
    for a in &answers {
        assert_eq!(a.status, 200, "{use_strategy}: {}", a.body);
        assert_eq!(a.body["status"], "REFUNDED");
        assert_eq!(a.body, answers[0].body);
    }
    assert_eq!(app.balance(9).await, 2000, "{use_strategy}");
    assert_eq!(
        history(&app, 9).await,
        [
            entry("REFUND", 700, 2000),
            entry("USE", 700, 1300),
            entry("CHARGE", 2000, 2000)
        ],
        "{use_strategy}"
    );
    for kind in ["PaymentRefunded", "ReservationRefunded", "PointsRefunded"] {
        assert_eq!(events(&app, kind).await, 1, "{use_strategy}: {kind}");
    }
    let read = app
        .read_as(9, &format!("/api/v1/reservations/{reservation}"))
        .await;
    assert_eq!(read["status"], "REFUNDED");
    assert_eq!(app.seat_status_of(schedule, 30).await, "AVAILABLE");
    assert_consistent(&app.db.db).await;
}

macro_rules! refund_races {
    ($($name:ident: $strategy:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            hundred_refunds($strategy).await;
        }
    )*};
}

refund_races! {
    hundred_refunds_pessimistic: "pessimistic",
    hundred_refunds_atomic: "atomic",
    hundred_refunds_optimistic: "optimistic",
    hundred_refunds_redis_pubsub: "redis-pubsub",
}

#[tokio::test]
async fn a_refunded_seat_is_sold_again() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(800).await;
    let (first_reservation, first) = app.bought(1, schedule, 7, 800).await;
    assert_eq!(answer(app.refund(1, first).await).await.status, 200);

    let (second_reservation, second) = app.bought(2, schedule, 7, 1000).await;
    assert_eq!(app.seat_status_of(schedule, 7).await, "SOLD");
    assert_eq!(app.balance(1).await, 800);
    assert_eq!(app.balance(2).await, 200);
    let old = app
        .read_as(1, &format!("/api/v1/reservations/{first_reservation}"))
        .await;
    assert_eq!(old["status"], "REFUNDED");
    let new = app
        .read_as(2, &format!("/api/v1/reservations/{second_reservation}"))
        .await;
    assert_eq!(new["status"], "CONFIRMED");
    let sold = app
        .db
        .sql
        .seat(schedule, SeatNumber::new(7).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sold.state, concert_domain::SeatState::Sold);
    // and again: the second buyer refunds, a third buys
    assert_eq!(answer(app.refund(2, second).await).await.status, 200);
    app.bought(3, schedule, 7, 800).await;
    assert_eq!(app.balance(2).await, 1000);
    assert_eq!(
        app.db
            .sql
            .live_reservations(schedule, SeatNumber::new(7).unwrap())
            .await
            .unwrap(),
        1
    );
    assert_eq!(app.db.sql.payment_count().await.unwrap(), 3);
    assert_consistent(&app.db.db).await;
}
