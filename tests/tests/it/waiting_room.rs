//! The waiting room end to end: the real application on MariaDB and Redis
//! (or in process), over HTTP. Room on: reservation and payment need an
//! admission, a paid user's admission ends and the next user is admitted,
//! admissions lapse with the app's clock, selling out closes the room and a
//! refund reopens it. Redis restarting empty: the room starts over (see
//! docs/waiting-room.md). Room off: the round-1 behaviour, which the rest
//! of the suite covers, plus the endpoints answering ADMITTED.

use std::time::Duration;

use chrono::Utc;
use concert_domain::ScheduleId;
use concert_testkit::OwnRedis;
use concert_tests::app::{AppConfig, TestApp, json_ok, problem, spawn_app_with};
use reqwest::Response;
use serde_json::{Value, json};

fn room_on(limit: u32) -> AppConfig {
    AppConfig {
        extra: vec![
            ("APP_WAITING_ROOM", "on".to_owned()),
            ("APP_WAITING_ROOM_ACTIVE_LIMIT", limit.to_string()),
        ],
        ..AppConfig::default()
    }
}

fn room_path(concert: u64) -> String {
    format!("/api/v1/concerts/{concert}/waiting-room")
}

async fn enter(app: &TestApp, user: u64, concert: u64) -> Response {
    app.client
        .post(app.url(&room_path(concert)))
        .bearer_auth(app.token_for(user))
        .send()
        .await
        .expect("sent")
}

async fn poll(app: &TestApp, user: u64, concert: u64) -> Response {
    app.get_as(user, &room_path(concert))
        .send()
        .await
        .expect("sent")
}

async fn leave(app: &TestApp, user: u64, concert: u64) -> Response {
    app.client
        .delete(app.url(&room_path(concert)))
        .bearer_auth(app.token_for(user))
        .send()
        .await
        .expect("sent")
}

/// The entry's status and position.
async fn standing(response: Response) -> (String, Value) {
    let body = json_ok(response).await;
    (
        body["status"].as_str().unwrap_or_default().to_owned(),
        body["position"].clone(),
    )
}

async fn reserve_id(app: &TestApp, user: u64, schedule: ScheduleId, seat: u8) -> u64 {
    json_ok(app.reserve(user, schedule, seat).await).await["id"]
        .as_u64()
        .expect("reservation id")
}

/// A concert with one schedule 30 days ahead (refunds stay open).
async fn far_schedule(app: &TestApp, price: u64) -> (u64, ScheduleId) {
    let (concert, schedule) = app
        .db
        .schedule_at(Utc::now() + chrono::Duration::days(30), price)
        .await;
    (concert.get(), schedule)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_and_pay_need_admission_and_a_payment_admits_the_next() {
    let app = spawn_app_with(room_on(1)).await;
    let (concert, schedule) = far_schedule(&app, 500).await;
    for user in [1, 2, 3] {
        app.set_balance(user, 10_000).await;
    }
    assert_eq!(
        problem(app.reserve(1, schedule, 1).await).await,
        (403, "not-admitted".into())
    );

    let response = enter(&app, 1, concert).await;
    assert_eq!(response.headers()["retry-after"], "30");
    let body = json_ok(response).await;
    assert_eq!(body["status"], "ADMITTED");
    assert!(body["admittedUntil"].is_string(), "{body}");
    let response = enter(&app, 2, concert).await;
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = json_ok(response).await;
    assert_eq!(
        (body["status"].as_str(), body["position"].as_u64()),
        (Some("WAITING"), Some(1))
    );
    assert_eq!(body["pollAfterSeconds"].as_u64(), Some(retry));
    assert!(body["estimatedWaitSeconds"].as_u64().is_some(), "{body}");
    assert_eq!(
        problem(app.reserve(2, schedule, 2).await).await,
        (403, "not-admitted".into())
    );

    // user 1 holds two seats and pays one: still admitted
    let first = reserve_id(&app, 1, schedule, 1).await;
    let second = reserve_id(&app, 1, schedule, 3).await;
    json_ok(app.pay(1, first).await).await;
    assert_eq!(standing(poll(&app, 1, concert).await).await.0, "ADMITTED");
    assert_eq!(
        standing(poll(&app, 2, concert).await).await,
        ("WAITING".into(), json!(1))
    );
    // paying the last live hold ends the admission and admits user 2
    json_ok(app.pay(1, second).await).await;
    assert_eq!(
        problem(poll(&app, 1, concert).await).await,
        (404, "not-found".into())
    );
    assert_eq!(
        problem(app.reserve(1, schedule, 4).await).await,
        (403, "not-admitted".into())
    );
    assert_eq!(standing(poll(&app, 2, concert).await).await.0, "ADMITTED");
    let held = reserve_id(&app, 2, schedule, 2).await;

    // user 3 waits; user 2's admission lapses with the clock: user 2 can
    // no longer pay, user 3 is admitted on the next poll
    assert_eq!(
        standing(enter(&app, 3, concert).await).await,
        ("WAITING".into(), json!(1))
    );
    let clock = app.clock.as_ref().expect("a manual clock");
    for _ in 0..11 {
        // user 3 keeps polling within the idle time (60 s)
        clock.advance(Duration::from_secs(50));
        assert_eq!(standing(poll(&app, 3, concert).await).await.0, "WAITING");
    }
    clock.advance(Duration::from_secs(50)); // 600 s: user 2's admission ends
    assert_eq!(
        problem(app.pay(2, held).await).await,
        (403, "not-admitted".into())
    );
    assert_eq!(standing(poll(&app, 3, concert).await).await.0, "ADMITTED");
    // a repeat of a completed payment needs no admission: it answers the
    // first payment (idempotency), or already-paid
    assert_eq!(
        problem(app.pay(1, first).await).await,
        (409, "already-paid".into())
    );

    assert_eq!(app.db.sql.payment_count().await.unwrap(), 2);
    assert_eq!(app.balance(1).await, 9_000);
    assert_eq!(app.balance(2).await, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_frees_the_place_and_unknown_concerts_are_404() {
    let app = spawn_app_with(room_on(1)).await;
    let (concert, _) = far_schedule(&app, 500).await;
    assert_eq!(standing(enter(&app, 1, concert).await).await.0, "ADMITTED");
    assert_eq!(standing(enter(&app, 2, concert).await).await.1, json!(1));
    assert_eq!(standing(enter(&app, 3, concert).await).await.1, json!(2));
    assert_eq!(
        standing(enter(&app, 2, concert).await).await.1,
        json!(1),
        "re-entering keeps the place"
    );
    assert_eq!(leave(&app, 1, concert).await.status(), 204);
    assert_eq!(standing(poll(&app, 2, concert).await).await.0, "ADMITTED");
    assert_eq!(standing(poll(&app, 3, concert).await).await.1, json!(1));
    for response in [
        enter(&app, 1, concert + 1000).await,
        poll(&app, 1, concert + 1000).await,
        leave(&app, 1, concert + 1000).await,
    ] {
        assert_eq!(problem(response).await, (404, "not-found".into()));
    }
    let anonymous = app.get(&room_path(concert)).send().await.unwrap();
    assert_eq!(problem(anonymous).await, (401, "unauthorized".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selling_out_closes_the_room_and_a_refund_reopens_it() {
    let app = spawn_app_with(room_on(1)).await;
    let (concert, schedule) = far_schedule(&app, 100).await;
    app.set_balance(1, 5_000).await;
    assert_eq!(standing(enter(&app, 1, concert).await).await.0, "ADMITTED");
    assert_eq!(standing(enter(&app, 2, concert).await).await.1, json!(1));
    let mut holds = Vec::new();
    for seat in 1..=50u8 {
        holds.push(reserve_id(&app, 1, schedule, seat).await);
    }
    let mut payments = Vec::new();
    for id in &holds {
        payments.push(json_ok(app.pay(1, *id).await).await["id"].as_u64().unwrap());
    }
    // every seat sold: the waiting user sees SOLD_OUT, newcomers too
    assert_eq!(
        standing(poll(&app, 2, concert).await).await,
        ("SOLD_OUT".into(), Value::Null)
    );
    assert_eq!(standing(enter(&app, 3, concert).await).await.0, "SOLD_OUT");
    // a refund puts a seat back on sale: the first in line is admitted
    let refund = app
        .post_as(
            1,
            &format!("/api/v1/payments/{}/refund", payments[0]),
            &json!({}),
        )
        .send()
        .await
        .unwrap();
    json_ok(refund).await;
    assert_eq!(standing(poll(&app, 2, concert).await).await.0, "ADMITTED");
    assert_eq!(
        standing(poll(&app, 3, concert).await).await,
        ("WAITING".into(), json!(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_redis_strategy_the_room_runs_in_process() {
    let app = spawn_app_with(AppConfig {
        seat_strategy: "pessimistic",
        charge_strategy: "optimistic",
        use_strategy: "pessimistic",
        redis_url: "redis://127.0.0.1:1".into(), // never contacted
        ..room_on(1)
    })
    .await;
    let (concert, schedule) = far_schedule(&app, 500).await;
    app.set_balance(1, 1_000).await;
    assert_eq!(
        problem(app.reserve(1, schedule, 1).await).await,
        (403, "not-admitted".into())
    );
    assert_eq!(standing(enter(&app, 1, concert).await).await.0, "ADMITTED");
    assert_eq!(standing(enter(&app, 2, concert).await).await.1, json!(1));
    let id = reserve_id(&app, 1, schedule, 1).await;
    json_ok(app.pay(1, id).await).await;
    assert_eq!(standing(poll(&app, 2, concert).await).await.0, "ADMITTED");
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(json_ok(ready).await["checked"], json!(["mysql"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_room_off_nothing_needs_admission() {
    let app = spawn_app_with(AppConfig::default()).await;
    let (concert, schedule) = far_schedule(&app, 500).await;
    app.set_balance(1, 1_000).await;
    let body = json_ok(enter(&app, 1, concert).await).await;
    assert_eq!(
        body,
        json!({
            "concertId": concert, "userId": 1, "status": "ADMITTED", "position": null,
            "estimatedWaitSeconds": null, "pollAfterSeconds": 30, "admittedUntil": null
        })
    );
    // user 2 never entered and still reserves and pays
    app.set_balance(2, 1_000).await;
    let id = reserve_id(&app, 2, schedule, 1).await;
    json_ok(app.pay(2, id).await).await;
}

/// Decided behaviour (docs/waiting-room.md): while Redis is down, the room
/// answers 503 and so does the gate (reserve and pay fail closed); when it
/// comes back empty, the room starts over: nobody is admitted, nobody
/// waits, a poll answers 404 (enter again) and entries are admitted again
/// in the order they re-enter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_restarts_empty_the_room_starts_over() {
    let mut redis = OwnRedis::start().await.expect("own redis-server");
    let app = spawn_app_with(AppConfig {
        redis_url: redis.url(),
        ..room_on(1)
    })
    .await;
    let (concert, schedule) = far_schedule(&app, 500).await;
    app.set_balance(1, 1_000).await;
    app.set_balance(2, 1_000).await;
    assert_eq!(standing(enter(&app, 1, concert).await).await.0, "ADMITTED");
    assert_eq!(standing(enter(&app, 2, concert).await).await.1, json!(1));
    let held = reserve_id(&app, 1, schedule, 1).await;

    redis.kill();
    assert_eq!(
        problem(enter(&app, 3, concert).await).await,
        (503, "unavailable".into())
    );
    assert_eq!(
        problem(poll(&app, 2, concert).await).await,
        (503, "unavailable".into())
    );
    assert_eq!(
        problem(app.pay(1, held).await).await,
        (503, "unavailable".into())
    );
    assert_eq!(app.db.sql.payment_count().await.unwrap(), 0);

    redis.restart().await.expect("redis-server restarted");
    // the room is empty: the admitted user must enter again, the waiting
    // user's entry is gone
    assert_eq!(
        problem(app.pay(1, held).await).await,
        (403, "not-admitted".into())
    );
    assert_eq!(
        problem(poll(&app, 2, concert).await).await,
        (404, "not-found".into())
    );
    assert_eq!(standing(enter(&app, 2, concert).await).await.0, "ADMITTED");
    assert_eq!(standing(enter(&app, 1, concert).await).await.1, json!(1));
    // the hold survived in the database: user 1 pays once admitted again
    assert_eq!(leave(&app, 2, concert).await.status(), 204);
    assert_eq!(standing(poll(&app, 1, concert).await).await.0, "ADMITTED");
    json_ok(app.pay(1, held).await).await;
    assert_eq!(app.db.sql.payment_count().await.unwrap(), 1);
}
