//! The API's edges end to end ("Reading one's own things, and key reuse"):
//! one's reservations, one concert, 405 with Allow, a reused or overlong
//! Idempotency-Key, re-holding one's own seat, and the `expiresAt` of what
//! is no longer held.

use std::time::Duration;

use concert_tests::app::{AppConfig, json_ok, spawn_app, spawn_app_with};
use concert_tests::audit::assert_consistent;
use concert_tests::calls::Answer;
use reqwest::Method;
use serde_json::{Value, json};

async fn answer(response: reqwest::Response) -> Answer {
    Answer::read(response).await
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn my_reservations_newest_first_filtered_by_status() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let a = app.hold(2, schedule, 1).await;
    let (b, _) = app.bought(2, schedule, 2, 500).await;
    let c = app.hold(2, schedule, 3).await;
    assert_eq!(answer(app.cancel(2, c).await).await.status, 200);
    let d = app.hold(2, schedule, 4).await;
    app.hold(3, schedule, 5).await;

    let all = app.read_as(2, "/api/v1/reservations").await;
    assert_eq!(ids(&all), [d, c, b, a]);
    let statuses: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!("HELD"),
            json!("CANCELLED"),
            json!("CONFIRMED"),
            json!("HELD")
        ]
    );
    for (status, expected) in [
        ("HELD", vec![d, a]),
        ("CONFIRMED", vec![b]),
        ("CANCELLED", vec![c]),
        ("EXPIRED", vec![]),
        ("REFUNDED", vec![]),
    ] {
        let listed = app
            .read_as(2, &format!("/api/v1/reservations?status={status}"))
            .await;
        assert_eq!(ids(&listed), expected, "{status}");
    }
    // the status as it is now: an ended hold lists as EXPIRED
    app.advance(Duration::from_secs(300));
    let expired = app.read_as(2, "/api/v1/reservations?status=EXPIRED").await;
    assert_eq!(ids(&expired), [d, a]);
    assert!(expired[0]["expiresAt"].is_null(), "{expired}");
    // nobody else's, a bad filter, no token
    assert_eq!(
        ids(&app.read_as(9, "/api/v1/reservations").await),
        Vec::<u64>::new()
    );
    let bad = app
        .get_as(2, "/api/v1/reservations?status=LOST")
        .send()
        .await
        .unwrap();
    assert_eq!(answer(bad).await.outcome(), (400, "validation"));
    let anonymous = app.get("/api/v1/reservations").send().await.unwrap();
    assert_eq!(answer(anonymous).await.outcome(), (401, "unauthorized"));
}

#[tokio::test]
async fn one_concert_by_id() {
    let app = spawn_app().await;
    let (concert, _) = app.seed_schedule(500).await;
    let read = json_ok(
        app.get(&format!("/api/v1/concerts/{concert}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(read, json!({"id": concert.get(), "title": "Test concert"}));
    let missing = app.get("/api/v1/concerts/999999").send().await.unwrap();
    assert_eq!(answer(missing).await.outcome(), (404, "not-found"));
    let bad = app.get("/api/v1/concerts/zero").send().await.unwrap();
    assert_eq!(answer(bad).await.outcome(), (400, "validation"));
}

#[tokio::test]
async fn an_unsupported_method_is_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::PUT, "/api/v1/reservations/1", "GET, DELETE"),
        (Method::PATCH, "/api/v1/concerts", "GET"),
        (Method::DELETE, "/api/v1/points/charge", "POST"),
        (Method::GET, "/api/v1/payments/1/refund", "POST"),
        (Method::GET, "/api/v1/reservations/batch", "POST"),
        (Method::POST, "/health/live", "GET"),
    ] {
        let response = app.call_as(1, method.clone(), path).send().await.unwrap();
        let allowed = response.headers()["allow"].to_str().unwrap().to_owned();
        assert_eq!(allowed, allow, "{method} {path}");
        let a = answer(response).await;
        assert_eq!(a.outcome(), (405, "method-not-allowed"), "{method} {path}");
        assert!(
            a.body["detail"].as_str().unwrap().contains(allow),
            "{}",
            a.body
        );
    }
}

#[tokio::test]
async fn a_reused_idempotency_key_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let charge = |amount: i64, key: &str| {
        app.post_as(5, "/api/v1/points/charge", &json!({ "amount": amount }))
            .header("Idempotency-Key", key)
            .send()
    };
    assert_eq!(
        json_ok(charge(1000, "k-1").await.unwrap()).await["balance"],
        1000
    );
    assert_eq!(
        json_ok(charge(1000, "k-1").await.unwrap()).await["balance"],
        1000
    );
    let reused = answer(charge(2000, "k-1").await.unwrap()).await;
    assert_eq!(reused.outcome(), (422, "idempotency-key-reused"));
    assert_eq!(app.balance(5).await, 1000);

    let first = app.hold(5, schedule, 1).await;
    let second = app.hold(5, schedule, 2).await;
    let pay = |reservation: u64, key: &str| {
        app.post_as(
            5,
            "/api/v1/payments",
            &json!({ "reservationId": reservation }),
        )
        .header("Idempotency-Key", key)
        .send()
    };
    assert_eq!(pay(first, "p-1").await.unwrap().status(), 201);
    let reused = answer(pay(second, "p-1").await.unwrap()).await;
    assert_eq!(reused.outcome(), (422, "idempotency-key-reused"));
    // a charge key and a payment key live apart
    assert_eq!(pay(second, "k-1").await.unwrap().status(), 201);
    assert_eq!(app.balance(5).await, 0);

    // 255 bytes is the longest key
    let longest = "k".repeat(255);
    assert_eq!(charge(10, &longest).await.unwrap().status(), 200);
    let too_long = answer(charge(10, &"k".repeat(256)).await.unwrap()).await;
    assert_eq!(too_long.outcome(), (400, "validation"));
    let too_long = answer(pay(first, &"p".repeat(256)).await.unwrap()).await;
    assert_eq!(too_long.outcome(), (400, "validation"));
    assert_eq!(app.balance(5).await, 10);
    assert_consistent(&app.db.db).await;
}

/// Re-holding one's own seat names the caller's reservation, under every
/// kind of seat strategy.
async fn rehold(strategy: &'static str) {
    let app = spawn_app_with(AppConfig::seats(strategy)).await;
    let (_, schedule) = app.seed_schedule(500).await;
    let mine = app.hold(4, schedule, 7).await;
    let again = answer(app.reserve(4, schedule, 7).await).await;
    assert_eq!(again.outcome(), (409, "seat-unavailable"), "{strategy}");
    let detail = again.body["detail"].as_str().unwrap();
    assert_eq!(
        detail,
        format!("you already hold seat 7 (reservation {mine})"),
        "{strategy}"
    );
    assert_eq!(again.body["unavailableSeats"], json!([7]));
    let theirs = answer(app.reserve(5, schedule, 7).await).await;
    assert_eq!(
        theirs.body["detail"], "seat 7 is already held or sold",
        "{strategy}"
    );
}

#[tokio::test]
async fn re_holding_ones_own_seat_names_the_reservation() {
    for strategy in ["optimistic", "pessimistic", "atomic", "redis-pubsub"] {
        rehold(strategy).await;
    }
}

#[tokio::test]
async fn a_browser_front_end_of_a_listed_origin_may_call() {
    let app = spawn_app_with(AppConfig {
        extra: vec![("APP_CORS_ORIGINS", "https://shop.example".to_owned())],
        ..AppConfig::default()
    })
    .await;
    let preflight = |origin: &str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/v1/reservations"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(answer(refused).await.outcome(), (403, "forbidden"));

    let read = app
        .get("/api/v1/concerts")
        .header("Origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        read.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    let other = app
        .get("/api/v1/concerts")
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
