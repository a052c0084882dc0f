//! Paying, reading and refunding payments over HTTP.

use actix_web::http::{StatusCode, header};
use actix_web::test::TestRequest;
use concert_domain::{Failure, ReservationStatus, SeatNumber, SeatState, UserId};
use serde_json::{Value, json};

use super::{World, assert_problem, bearer, call, service};

fn reserve(user: u64, schedule: u64, seat: u64) -> TestRequest {
    TestRequest::post()
        .uri("/api/v1/reservations")
        .insert_header(bearer(user))
        .set_json(json!({"scheduleId": schedule, "seatNumber": seat}))
}

fn pay(user: u64, reservation: &Value, key: Option<&str>) -> TestRequest {
    let mut req = TestRequest::post()
        .uri("/api/v1/payments")
        .insert_header(bearer(user))
        .set_json(json!({ "reservationId": reservation }));
    if let Some(key) = key {
        req = req.insert_header(("Idempotency-Key", key));
    }
    req
}

fn refund(user: u64, payment: &Value) -> TestRequest {
    TestRequest::post()
        .uri(&format!("/api/v1/payments/{payment}/refund"))
        .insert_header(bearer(user))
}

#[actix_web::test]
async fn paying_confirms_the_reservation_sells_the_seat_and_takes_the_points() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(5), 1200);
    let svc = service!(world);
    let (_, _, held) = call!(svc, reserve(5, schedule.get(), 7));
    world.clock.advance(chrono::Duration::seconds(30));
    let (status, headers, body) = call!(svc, pay(5, &held["id"], None));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_u64().unwrap();
    assert_eq!(
        headers.get(header::LOCATION).unwrap(),
        format!("/api/v1/payments/{id}").as_str()
    );
    assert_eq!(
        body,
        json!({
            "id": id, "reservationId": held["id"], "userId": 5, "amount": 500,
            "paidAt": "2030-03-17T17:47:10Z", "status": "PAID"
        })
    );
    assert_eq!(world.store.balance(UserId::from(5)), 700);
    assert_eq!(
        world
            .store
            .seat(schedule, SeatNumber::new(7).unwrap())
            .unwrap()
            .state,
        SeatState::Sold
    );
    let (_, _, sold) = call!(
        svc,
        TestRequest::get().uri(&format!("/api/v1/schedules/{schedule}/seats?status=SOLD"))
    );
    assert_eq!(sold, json!([{"number": 7, "price": 500, "status": "SOLD"}]));
    let (_, _, reservation) = call!(
        svc,
        TestRequest::get()
            .uri(&format!("/api/v1/reservations/{}", held["id"]))
            .insert_header(bearer(5))
    );
    assert_eq!(reservation["status"], "CONFIRMED");
    assert_eq!(reservation["expiresAt"], json!(null));

    let read = |user: u64| {
        TestRequest::get()
            .uri(&format!("/api/v1/payments/{id}"))
            .insert_header(bearer(user))
    };
    let (status, _, read_back) = call!(svc, read(5));
    assert_eq!((status, read_back), (StatusCode::OK, body));
    assert_problem(&call!(svc, read(6)), 404, "not-found");

    assert_problem(&call!(svc, pay(5, &held["id"], None)), 409, "already-paid");
}

#[actix_web::test]
async fn payment_refusals_reach_the_client_as_problems() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(5), 400);
    let svc = service!(world);
    let (_, _, held) = call!(svc, reserve(5, schedule.get(), 7));

    // somebody else's reservation does not exist, nor does an unknown one
    assert_problem(&call!(svc, pay(6, &held["id"], None)), 404, "not-found");
    assert_problem(&call!(svc, pay(5, &json!(999), None)), 404, "not-found");

    let short = call!(svc, pay(5, &held["id"], None));
    assert_problem(&short, 409, "insufficient-points");
    assert_eq!(short.2["detail"], "the balance 400 does not cover 500");

    world.store.fail_next_commit(Failure::LockTimeout);
    world.store.set_balance(UserId::from(5), 1000);
    let locked = call!(svc, pay(5, &held["id"], None));
    assert_problem(&locked, 409, "lock-timeout");
    assert_eq!(locked.1.get(header::RETRY_AFTER).unwrap(), "1");

    world.clock.advance(chrono::Duration::minutes(5));
    assert_problem(
        &call!(svc, pay(5, &held["id"], None)),
        410,
        "reservation-expired",
    );
    assert!(world.store.payments().is_empty());
    assert_eq!(world.store.balance(UserId::from(5)), 1000);
}

#[actix_web::test]
async fn a_repeated_key_answers_the_first_payment_and_another_reservation_is_422() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(8), 5000);
    let svc = service!(world);
    let (_, _, first) = call!(svc, reserve(8, schedule.get(), 1));
    let (_, _, second) = call!(svc, reserve(8, schedule.get(), 2));
    let (status, _, paid) = call!(svc, pay(8, &first["id"], Some("pay-1")));
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, again) = call!(svc, pay(8, &first["id"], Some("pay-1")));
    assert_eq!((status, again), (StatusCode::CREATED, paid));
    assert_eq!(world.store.balance(UserId::from(8)), 4500);

    let outcome = call!(svc, pay(8, &second["id"], Some("pay-1")));
    assert_problem(&outcome, 422, "idempotency-key-reused");
    assert_eq!(world.store.balance(UserId::from(8)), 4500);
    assert_eq!(world.store.payments().len(), 1);
}

#[actix_web::test]
async fn a_refund_returns_the_points_and_frees_the_seat_once() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(5), 1000);
    let svc = service!(world);
    let (_, _, held) = call!(svc, reserve(5, schedule.get(), 7));
    let (_, _, paid) = call!(svc, pay(5, &held["id"], None));
    assert_eq!(world.store.balance(UserId::from(5)), 500);

    assert_problem(&call!(svc, refund(6, &paid["id"])), 404, "not-found");
    assert_problem(&call!(svc, refund(5, &json!(999))), 404, "not-found");

    let (status, _, body) = call!(svc, refund(5, &paid["id"]));
    assert_eq!(status, StatusCode::OK);
    let mut expected = paid.clone();
    expected["status"] = json!("REFUNDED");
    assert_eq!(body, expected);
    assert_eq!(world.store.balance(UserId::from(5)), 1000);
    assert_eq!(
        world.store.reservations()[0].status,
        ReservationStatus::Refunded
    );
    assert_eq!(
        world
            .store
            .seat(schedule, SeatNumber::new(7).unwrap())
            .unwrap()
            .state,
        SeatState::Available
    );
    // again: nothing changes
    let (status, _, again) = call!(svc, refund(5, &paid["id"]));
    assert_eq!((status, again), (StatusCode::OK, expected));
    assert_eq!(world.store.balance(UserId::from(5)), 1000);
}

#[actix_web::test]
async fn refunds_close_before_the_show() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(5), 1000);
    let svc = service!(world);
    let (_, _, held) = call!(svc, reserve(5, schedule.get(), 7));
    let (_, _, paid) = call!(svc, pay(5, &held["id"], None));
    // the show is 30 days after t0; refunds close 24 hours before it
    world
        .clock
        .advance(chrono::Duration::days(29) + chrono::Duration::seconds(1));
    let outcome = call!(svc, refund(5, &paid["id"]));
    assert_problem(&outcome, 409, "refund-closed");
    assert_eq!(
        outcome.2["detail"],
        "refunds close 24 hours before the show"
    );
    assert_eq!(world.store.balance(UserId::from(5)), 500);
}
