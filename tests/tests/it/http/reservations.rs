//! Seat holds over HTTP, against the real reservation use cases.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::{StatusCode, header};
use actix_web::test::TestRequest;
use concert_domain::{
    Control, Failure, MockWaitingRoom, Policy, ReservationStatus, RoomRules, SeatNumber, SeatState,
    UserId,
};
use serde_json::json;

use super::{World, assert_problem, bearer, call, service};

fn reserve(user: u64, schedule: u64, seat: u64) -> TestRequest {
    TestRequest::post()
        .uri("/api/v1/reservations")
        .insert_header(bearer(user))
        .set_json(json!({"scheduleId": schedule, "seatNumber": seat}))
}

fn batch(user: u64, schedule: u64, seats: &[u64]) -> TestRequest {
    TestRequest::post()
        .uri("/api/v1/reservations/batch")
        .insert_header(bearer(user))
        .set_json(json!({"scheduleId": schedule, "seatNumbers": seats}))
}

#[actix_web::test]
async fn reserving_answers_201_with_location_and_holds_the_seat() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    let (status, headers, body) = call!(svc, reserve(5, schedule.get(), 7));
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_u64().unwrap();
    assert_eq!(
        headers.get(header::LOCATION).unwrap(),
        format!("/api/v1/reservations/{id}").as_str()
    );
    assert_eq!(
        body,
        json!({
            "id": id, "scheduleId": schedule.get(), "seatNumber": 7, "userId": 5, "price": 500,
            "status": "HELD", "expiresAt": "2030-03-17T17:51:40Z"
        })
    );
    let seat = world
        .store
        .seat(schedule, SeatNumber::new(7).unwrap())
        .unwrap();
    assert!(matches!(seat.state, SeatState::Held { by, .. } if by == UserId::from(5)));
}

#[actix_web::test]
async fn a_taken_seat_is_409_naming_the_seat_and_the_callers_own_hold() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    let (_, _, mine) = call!(svc, reserve(5, schedule.get(), 7));

    let theirs = call!(svc, reserve(6, schedule.get(), 7));
    assert_problem(&theirs, 409, "seat-unavailable");
    assert_eq!(theirs.2["unavailableSeats"], json!([7]));
    assert_eq!(theirs.2["detail"], "seat 7 is already held or sold");

    let again = call!(svc, reserve(5, schedule.get(), 7));
    assert_problem(&again, 409, "seat-unavailable");
    assert_eq!(again.2["unavailableSeats"], json!([7]));
    assert_eq!(
        again.2["detail"],
        format!("you already hold seat 7 (reservation {})", mine["id"])
    );
    assert_eq!(world.store.reservations().len(), 1);
}

#[actix_web::test]
async fn unknown_schedules_are_404_and_the_hold_limit_409() {
    let world = World::with(
        Control::pessimistic("pessimistic"),
        Policy {
            max_holds_per_user: 1,
            ..Policy::default()
        },
    );
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    assert_problem(&call!(svc, reserve(5, 999, 7)), 404, "not-found");
    let (status, _, _) = call!(svc, reserve(5, schedule.get(), 1));
    assert_eq!(status, StatusCode::CREATED);
    let outcome = call!(svc, reserve(5, schedule.get(), 2));
    assert_problem(&outcome, 409, "hold-limit");
    assert_eq!(
        outcome.2["detail"],
        "at most 1 live holds per user and schedule"
    );
}

#[actix_web::test]
async fn failures_of_the_write_map_to_their_codes_and_write_nothing() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    let cases = [
        (Failure::Conflict, 409, "concurrent-update", None),
        (Failure::LockTimeout, 409, "lock-timeout", Some("1")),
        (Failure::LockLost, 409, "concurrent-update", None),
        (
            Failure::unavailable(anyhow::anyhow!("connection refused")),
            503,
            "unavailable",
            Some("1"),
        ),
        (
            Failure::unknown(anyhow::anyhow!("secret cause")),
            500,
            "internal",
            None,
        ),
    ];
    for (failure, status, code, retry_after) in cases {
        world.store.fail_next_commit(failure);
        let outcome = call!(svc, reserve(5, schedule.get(), 7));
        assert_problem(&outcome, status, code);
        assert_eq!(
            outcome
                .1
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap()),
            retry_after,
            "{code}"
        );
        assert!(world.store.reservations().is_empty(), "{code}");
    }
    let internal = call!(svc, {
        world
            .store
            .fail_next_commit(Failure::unknown(anyhow::anyhow!("secret cause")));
        reserve(5, schedule.get(), 7)
    });
    assert_eq!(
        internal.2["detail"],
        "an unexpected error occurred; it has been logged"
    );
    let lost = call!(svc, {
        world.store.fail_next_commit(Failure::LockLost);
        reserve(5, schedule.get(), 7)
    });
    assert!(
        lost.2["detail"].as_str().unwrap().contains("retry"),
        "{}",
        lost.2
    );
}

#[actix_web::test]
async fn a_batch_holds_every_seat_in_seat_order_or_none() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    let (status, headers, body) = call!(svc, batch(5, schedule.get(), &[9, 2, 5]));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(headers.get(header::LOCATION).is_none());
    let held = body.as_array().unwrap();
    let seats: Vec<_> = held
        .iter()
        .map(|r| r["seatNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(seats, [2, 5, 9]);
    for r in held {
        assert_eq!(
            (&r["status"], &r["userId"], &r["expiresAt"]),
            (&json!("HELD"), &json!(5), &json!("2030-03-17T17:51:40Z"))
        );
    }

    let outcome = call!(svc, batch(6, schedule.get(), &[1, 5, 9, 10]));
    assert_problem(&outcome, 409, "seat-unavailable");
    assert_eq!(outcome.2["unavailableSeats"], json!([5, 9]));
    assert_eq!(outcome.2["detail"], "seats 5, 9 are already held or sold");
    assert_eq!(world.store.reservations().len(), 3, "nothing of the second");

    assert_problem(&call!(svc, batch(6, 999, &[1])), 404, "not-found");
}

#[actix_web::test]
async fn a_batch_is_one_to_max_distinct_valid_seats() {
    let world = World::with(
        Control::pessimistic("pessimistic"),
        Policy {
            max_seats_per_request: 2,
            ..Policy::default()
        },
    );
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    for seats in [&[][..], &[1, 2, 3], &[4, 4], &[0], &[51]] {
        let outcome = call!(svc, batch(5, schedule.get(), seats));
        assert_problem(&outcome, 400, "validation");
        assert!(
            outcome.2["detail"]
                .as_str()
                .unwrap()
                .starts_with("seatNumbers:"),
            "{}",
            outcome.2
        );
    }
    let (status, _, _) = call!(svc, batch(5, schedule.get(), &[1, 2]));
    assert_eq!(status, StatusCode::CREATED);
    assert!(world.store.reservations().len() == 2);
}

#[actix_web::test]
async fn the_caller_lists_and_reads_only_their_own_reservations() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    let (_, _, first) = call!(svc, reserve(5, schedule.get(), 1));
    world.clock.advance(chrono::Duration::minutes(4));
    let (_, _, second) = call!(svc, reserve(5, schedule.get(), 2));
    call!(svc, reserve(6, schedule.get(), 3));

    let list = |query: &str| {
        TestRequest::get()
            .uri(&format!("/api/v1/reservations{query}"))
            .insert_header(bearer(5))
    };
    let (status, _, body) = call!(svc, list(""));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([second.clone(), first.clone()]), "newest first");

    // the first hold ends: it is EXPIRED now, without an end time
    world.clock.advance(chrono::Duration::minutes(1));
    let (_, _, body) = call!(svc, list("?status=HELD"));
    assert_eq!(body, json!([second.clone()]));
    let (_, _, body) = call!(svc, list("?status=EXPIRED"));
    assert_eq!(body[0]["id"], first["id"]);
    assert_eq!(body[0]["status"], "EXPIRED");
    assert_eq!(body[0]["expiresAt"], json!(null));
    let (_, _, body) = call!(svc, list("?status=CONFIRMED"));
    assert_eq!(body, json!([]));
    assert_problem(&call!(svc, list("?status=PAID")), 400, "validation");
    assert_problem(&call!(svc, list("?status=")), 400, "validation");

    let get = |user: u64, id: &serde_json::Value| {
        TestRequest::get()
            .uri(&format!("/api/v1/reservations/{id}"))
            .insert_header(bearer(user))
    };
    let (status, _, body) = call!(svc, get(5, &second["id"]));
    assert_eq!((status, &body), (StatusCode::OK, &second));
    // somebody else's reservation does not exist
    let outcome = call!(svc, get(6, &second["id"]));
    assert_problem(&outcome, 404, "not-found");
    assert_problem(&call!(svc, get(5, &json!(999))), 404, "not-found");
}

#[actix_web::test]
async fn cancelling_frees_the_seat_once_and_refuses_paid_and_ended_holds() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(5), 10_000);
    let svc = service!(world);
    let (_, _, held) = call!(svc, reserve(5, schedule.get(), 1));
    let cancel = |user: u64, id: &serde_json::Value| {
        TestRequest::delete()
            .uri(&format!("/api/v1/reservations/{id}"))
            .insert_header(bearer(user))
    };
    assert_problem(&call!(svc, cancel(6, &held["id"])), 404, "not-found");
    let (status, _, body) = call!(svc, cancel(5, &held["id"]));
    assert_eq!(status, StatusCode::OK);
    let mut expected = held.clone();
    expected["status"] = json!("CANCELLED");
    expected["expiresAt"] = json!(null);
    assert_eq!(body, expected);
    assert_eq!(
        world
            .store
            .seat(schedule, SeatNumber::new(1).unwrap())
            .unwrap()
            .state,
        SeatState::Available
    );
    // again: nothing changes
    let (status, _, body) = call!(svc, cancel(5, &held["id"]));
    assert_eq!((status, body), (StatusCode::OK, expected));

    // a paid reservation is refunded, not cancelled
    let (_, _, paid) = call!(svc, reserve(5, schedule.get(), 2));
    let (status, _, _) = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/payments")
            .insert_header(bearer(5))
            .set_json(json!({"reservationId": paid["id"]}))
    );
    assert_eq!(status, StatusCode::CREATED);
    assert_problem(&call!(svc, cancel(5, &paid["id"])), 409, "already-paid");

    // an ended hold is gone already
    let (_, _, lapsed) = call!(svc, reserve(5, schedule.get(), 3));
    world.clock.advance(chrono::Duration::minutes(5));
    assert_problem(
        &call!(svc, cancel(5, &lapsed["id"])),
        410,
        "reservation-expired",
    );
    let statuses: Vec<_> = world
        .store
        .reservations()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [
            ReservationStatus::Cancelled,
            ReservationStatus::Confirmed,
            ReservationStatus::Held
        ]
    );
}

#[actix_web::test]
async fn the_waiting_room_gate_answers_403_not_admitted() {
    let admitted = Arc::new(AtomicBool::new(true));
    let mut room = MockWaitingRoom::new();
    let gate = admitted.clone();
    room.expect_is_admitted()
        .returning(move |_, user, _| Ok(user == UserId::from(1) && gate.load(Ordering::SeqCst)));
    let mut world = World::new();
    world.services = world
        .services
        .clone()
        .with_waiting_room(Arc::new(room), RoomRules::default());
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(1), 10_000);
    let svc = service!(world);

    let (status, _, held) = call!(svc, reserve(1, schedule.get(), 1));
    assert_eq!(status, StatusCode::CREATED);
    let outcome = call!(svc, reserve(2, schedule.get(), 2));
    assert_problem(&outcome, 403, "not-admitted");
    assert_problem(
        &call!(svc, batch(2, schedule.get(), &[3])),
        403,
        "not-admitted",
    );

    // the admission ends before the payment
    admitted.store(false, Ordering::SeqCst);
    let pay = TestRequest::post()
        .uri("/api/v1/payments")
        .insert_header(bearer(1))
        .set_json(json!({"reservationId": held["id"]}));
    assert_problem(&call!(svc, pay), 403, "not-admitted");
    assert!(world.store.payments().is_empty());
}
