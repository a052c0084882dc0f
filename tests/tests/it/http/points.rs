//! Balance, charge and history over HTTP.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use concert_domain::{Failure, MAX_BALANCE, UserId};
use serde_json::json;

use super::{World, assert_problem, bearer, call, service};

fn charge(user: u64, amount: i64, key: Option<&str>) -> TestRequest {
    let mut req = TestRequest::post()
        .uri("/api/v1/points/charge")
        .insert_header(bearer(user))
        .set_json(json!({ "amount": amount }));
    if let Some(key) = key {
        req = req.insert_header(("Idempotency-Key", key));
    }
    req
}

fn get(uri: &str, user: u64) -> TestRequest {
    TestRequest::get().uri(uri).insert_header(bearer(user))
}

#[actix_web::test]
async fn a_user_never_charged_has_zero_and_a_charge_adds_up() {
    let world = World::new();
    let svc = service!(world);
    let (status, _, body) = call!(svc, get("/api/v1/points", 42));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"userId": 42, "balance": 0}));

    let (status, _, body) = call!(svc, charge(42, 700, None));
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"userId": 42, "balance": 700}))
    );
    let (_, _, body) = call!(svc, charge(42, 300, None));
    assert_eq!(body, json!({"userId": 42, "balance": 1000}));
    let (_, _, body) = call!(svc, get("/api/v1/points", 42));
    assert_eq!(body, json!({"userId": 42, "balance": 1000}));
    assert_eq!(world.store.balance(UserId::from(42)), 1000);
}

#[actix_web::test]
async fn a_repeated_key_answers_the_first_charge_and_another_body_is_422() {
    let world = World::new();
    let svc = service!(world);
    let (status, _, first) = call!(svc, charge(8, 700, Some("charge-1")));
    assert_eq!(
        (status, &first),
        (StatusCode::OK, &json!({"userId": 8, "balance": 700}))
    );
    let (status, _, again) = call!(svc, charge(8, 700, Some("charge-1")));
    assert_eq!((status, again), (StatusCode::OK, first));
    assert_eq!(world.store.balance(UserId::from(8)), 700);

    let outcome = call!(svc, charge(8, 900, Some("charge-1")));
    assert_problem(&outcome, 422, "idempotency-key-reused");
    assert_eq!(world.store.balance(UserId::from(8)), 700);
    assert_eq!(world.store.history_of(UserId::from(8)).len(), 1);

    // the same key is another user's own key
    let (status, _, body) = call!(svc, charge(9, 900, Some("charge-1")));
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"userId": 9, "balance": 900}))
    );
}

#[actix_web::test]
async fn a_charge_past_the_maximum_balance_is_422() {
    let world = World::new();
    world.store.set_balance(UserId::from(3), MAX_BALANCE - 10);
    let svc = service!(world);
    let outcome = call!(svc, charge(3, 11, None));
    assert_problem(&outcome, 422, "balance-limit");
    assert_eq!(
        outcome.2["detail"],
        format!(
            "balance {} + 11 would exceed the maximum balance {MAX_BALANCE}",
            MAX_BALANCE - 10
        )
    );
    let (status, _, _) = call!(svc, charge(3, 10, None));
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn charge_failures_map_to_their_codes() {
    let world = World::new();
    let svc = service!(world);
    for (failure, status, code) in [
        (Failure::Conflict, 409, "concurrent-update"),
        (Failure::LockTimeout, 409, "lock-timeout"),
        (
            Failure::unavailable(anyhow::anyhow!("pool timed out")),
            503,
            "unavailable",
        ),
    ] {
        world.store.fail_next_commit(failure);
        assert_problem(&call!(svc, charge(3, 100, None)), status, code);
    }
    assert_eq!(world.store.balance(UserId::from(3)), 0);
    let down = World::down();
    let svc = service!(down);
    for req in [
        get("/api/v1/points", 3),
        get("/api/v1/points/history", 3),
        charge(3, 100, None),
    ] {
        assert_problem(&call!(svc, req), 503, "unavailable");
    }
}

#[actix_web::test]
async fn history_is_listed_newest_first_with_every_kind() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    call!(svc, charge(3, 1000, None));
    let (_, _, held) = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/reservations")
            .insert_header(bearer(3))
            .set_json(json!({"scheduleId": schedule.get(), "seatNumber": 4}))
    );
    let (_, _, payment) = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/payments")
            .insert_header(bearer(3))
            .set_json(json!({"reservationId": held["id"]}))
    );
    world.clock.advance(chrono::Duration::minutes(1));
    let (status, _, _) = call!(
        svc,
        TestRequest::post()
            .uri(&format!("/api/v1/payments/{}/refund", payment["id"]))
            .insert_header(bearer(3))
    );
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) = call!(svc, get("/api/v1/points/history", 3));
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].clone(),
                e["amount"].clone(),
                e["balanceAfter"].clone(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (json!("REFUND"), json!(500), json!(1000)),
            (json!("USE"), json!(500), json!(500)),
            (json!("CHARGE"), json!(1000), json!(1000)),
        ]
    );
    assert_eq!(body[0]["createdAt"], "2030-03-17T17:47:40Z");
    assert_eq!(body[2]["createdAt"], "2030-03-17T17:46:40Z");
    assert!(body[0]["id"].as_u64().is_some());
    // nobody else's
    let (_, _, other) = call!(svc, get("/api/v1/points/history", 4));
    assert_eq!(other, json!([]));
}
