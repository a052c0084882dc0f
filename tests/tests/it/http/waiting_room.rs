//! The waiting room over HTTP: entering, polling, leaving, the gate of
//! reservation and payment, and the room off. Over the real use cases with
//! the in-process room (its rules are the contract suite's business; here
//! the HTTP shape).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::test::TestRequest;
use concert_domain::{Failure, MockWaitingRoom, RoomRules, UserId};
use concert_inprocess::LocalWaitingRoom;
use serde_json::json;

use super::{World, assert_problem, bearer, call, service};

fn rules(limit: u32) -> RoomRules {
    RoomRules {
        active_limit: limit,
        admission: Duration::from_secs(600),
        idle: Duration::from_secs(60),
    }
}

/// A world whose waiting room is on, with `limit` places.
fn world_with_room(limit: u32) -> World {
    let mut world = World::new();
    world.services = world
        .services
        .clone()
        .with_waiting_room(Arc::new(LocalWaitingRoom::new(rules(limit))), rules(limit));
    world
}

fn room(method: &str, user: u64, concert: u64) -> TestRequest {
    let request = match method {
        "POST" => TestRequest::post(),
        "GET" => TestRequest::get(),
        _ => TestRequest::delete(),
    };
    request
        .uri(&format!("/api/v1/concerts/{concert}/waiting-room"))
        .insert_header(bearer(user))
}

#[actix_web::test]
async fn entering_polling_and_leaving_answer_the_entry_with_retry_after() {
    let world = world_with_room(1);
    let (concert, _) = world.schedule();
    let c = concert.get();
    let svc = service!(world);

    let (status, headers, body) = call!(svc, room("POST", 1, c));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "concertId": c, "userId": 1, "status": "ADMITTED", "position": null,
            "estimatedWaitSeconds": null, "pollAfterSeconds": 30,
            "admittedUntil": "2030-03-17T17:56:40Z"
        })
    );
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "30");

    // one admission observed in the last 10 s: 0.1 per second, so the
    // first in line waits about 10 s and polls in 5
    let (status, headers, body) = call!(svc, room("POST", 2, c));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "concertId": c, "userId": 2, "status": "WAITING", "position": 1,
            "estimatedWaitSeconds": 10, "pollAfterSeconds": 5, "admittedUntil": null
        })
    );
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "5");
    let (_, _, again) = call!(svc, room("POST", 2, c));
    assert_eq!(again, body, "entering twice returns the same entry");
    let (_, _, third) = call!(svc, room("POST", 3, c));
    assert_eq!(third["position"], 2);

    let (status, headers, polled) = call!(svc, room("GET", 2, c));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(polled, body);
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "5");
    assert_problem(&call!(svc, room("GET", 9, c)), 404, "not-found");

    // the admitted user leaves: the first in line is admitted at once
    let (status, _, empty) = call!(svc, room("DELETE", 1, c));
    assert_eq!((status, empty), (StatusCode::NO_CONTENT, json!(null)));
    assert_problem(&call!(svc, room("GET", 1, c)), 404, "not-found");
    let (_, _, admitted) = call!(svc, room("GET", 2, c));
    assert_eq!(admitted["status"], "ADMITTED");
    let (_, _, next) = call!(svc, room("GET", 3, c));
    assert_eq!(
        (next["status"].clone(), next["position"].clone()),
        (json!("WAITING"), json!(1))
    );
    // leaving without an entry changes nothing
    let (status, _, _) = call!(svc, room("DELETE", 9, c));
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[actix_web::test]
async fn unknown_concerts_bad_ids_and_missing_tokens_are_refused() {
    let world = world_with_room(1);
    let svc = service!(world);
    for method in ["POST", "GET", "DELETE"] {
        assert_problem(&call!(svc, room(method, 1, 999)), 404, "not-found");
        let bad = TestRequest::default()
            .method(method.parse().unwrap())
            .uri("/api/v1/concerts/0/waiting-room")
            .insert_header(bearer(1));
        assert_problem(&call!(svc, bad), 400, "validation");
        let anonymous = TestRequest::default()
            .method(method.parse().unwrap())
            .uri("/api/v1/concerts/1/waiting-room");
        assert_problem(&call!(svc, anonymous), 401, "unauthorized");
    }
    let put = TestRequest::put()
        .uri("/api/v1/concerts/1/waiting-room")
        .insert_header(bearer(1));
    let outcome = call!(svc, put);
    assert_problem(&outcome, 405, "method-not-allowed");
    assert_eq!(outcome.1.get(header::ALLOW).unwrap(), "GET, POST, DELETE");
}

#[actix_web::test]
async fn reserve_and_pay_need_an_admission_and_a_payment_ends_it() {
    let world = world_with_room(1);
    let (concert, schedule) = world.schedule();
    let c = concert.get();
    world.store.set_balance(UserId::from(1), 1_000);
    let svc = service!(world);
    let reserve = |user: u64, seat: u64| {
        TestRequest::post()
            .uri("/api/v1/reservations")
            .insert_header(bearer(user))
            .set_json(json!({"scheduleId": schedule.get(), "seatNumber": seat}))
    };
    assert_problem(&call!(svc, reserve(1, 1)), 403, "not-admitted");
    call!(svc, room("POST", 1, c));
    call!(svc, room("POST", 2, c));
    assert_problem(&call!(svc, reserve(2, 2)), 403, "not-admitted");
    let (status, _, held) = call!(svc, reserve(1, 1));
    assert_eq!(status, StatusCode::CREATED);
    let pay = TestRequest::post()
        .uri("/api/v1/payments")
        .insert_header(bearer(1))
        .set_json(json!({"reservationId": held["id"]}));
    let (status, _, _) = call!(svc, pay);
    assert_eq!(status, StatusCode::CREATED);
    // the payment ended user 1's admission and admitted user 2
    assert_problem(&call!(svc, room("GET", 1, c)), 404, "not-found");
    assert_problem(&call!(svc, reserve(1, 3)), 403, "not-admitted");
    let (_, _, next) = call!(svc, room("GET", 2, c));
    assert_eq!(next["status"], "ADMITTED");
    let (status, _, _) = call!(svc, reserve(2, 2));
    assert_eq!(status, StatusCode::CREATED);
}

#[actix_web::test]
async fn with_the_room_off_everyone_is_admitted_without_end() {
    let world = World::new();
    let (concert, schedule) = world.schedule();
    let c = concert.get();
    let svc = service!(world);
    let (status, headers, body) = call!(svc, room("POST", 4, c));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "concertId": c, "userId": 4, "status": "ADMITTED", "position": null,
            "estimatedWaitSeconds": null, "pollAfterSeconds": 30, "admittedUntil": null
        })
    );
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "30");
    // no entry is kept: a poll answers like a poll without an entry
    assert_problem(&call!(svc, room("GET", 4, c)), 404, "not-found");
    for method in ["POST", "GET"] {
        assert_problem(&call!(svc, room(method, 4, 999)), 404, "not-found");
    }
    let (status, _, _) = call!(svc, room("DELETE", 4, c));
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_problem(&call!(svc, room("DELETE", 4, 999)), 404, "not-found");
    // and reserving needs no entry
    let reserve = TestRequest::post()
        .uri("/api/v1/reservations")
        .insert_header(bearer(5))
        .set_json(json!({"scheduleId": schedule.get(), "seatNumber": 1}));
    assert_eq!(call!(svc, reserve).0, StatusCode::CREATED);
}

#[actix_web::test]
async fn a_room_that_does_not_answer_is_503_and_changes_nothing() {
    let mut room_port = MockWaitingRoom::new();
    let down = || Failure::unavailable(anyhow::anyhow!("connection refused"));
    room_port
        .expect_enter()
        .returning(move |_, _, _| Err(down()));
    room_port
        .expect_poll()
        .returning(move |_, _, _| Err(down()));
    room_port
        .expect_leave()
        .returning(move |_, _, _| Err(down()));
    room_port
        .expect_is_admitted()
        .returning(move |_, _, _| Err(down()));
    let mut world = World::new();
    world.services = world
        .services
        .clone()
        .with_waiting_room(Arc::new(room_port), rules(1));
    let (concert, schedule) = world.schedule();
    let svc = service!(world);
    for method in ["POST", "GET", "DELETE"] {
        let outcome = call!(svc, room(method, 1, concert.get()));
        assert_problem(&outcome, 503, "unavailable");
        assert_eq!(outcome.1.get(header::RETRY_AFTER).unwrap(), "1");
    }
    let reserve = TestRequest::post()
        .uri("/api/v1/reservations")
        .insert_header(bearer(1))
        .set_json(json!({"scheduleId": schedule.get(), "seatNumber": 1}));
    assert_problem(&call!(svc, reserve), 503, "unavailable");
    assert!(world.store.reservations().is_empty());
}
