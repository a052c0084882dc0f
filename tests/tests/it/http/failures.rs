//! What can happen to any operation (conflicts, lock timeouts, storage
//! down) reaches every endpoint as its documented problem, and a failed
//! write leaves nothing behind.

use actix_web::http::{StatusCode, header};
use actix_web::test::TestRequest;
use concert_domain::{Failure, ReservationStatus, UserId};
use serde_json::{Value, json};

use super::{World, admin_bearer, assert_problem, bearer, call, service};

fn post(uri: &str, user: u64, body: Value) -> TestRequest {
    TestRequest::post()
        .uri(uri)
        .insert_header(bearer(user))
        .set_json(body)
}

#[actix_web::test]
async fn every_endpoint_answers_503_with_retry_after_when_storage_is_down() {
    let world = World::down();
    let svc = service!(world);
    let schedule = json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": vec![100; 50]});
    for req in [
        TestRequest::get()
            .uri("/api/v1/reservations")
            .insert_header(bearer(1)),
        TestRequest::get()
            .uri("/api/v1/reservations/1")
            .insert_header(bearer(1)),
        TestRequest::delete()
            .uri("/api/v1/reservations/1")
            .insert_header(bearer(1)),
        post(
            "/api/v1/reservations",
            1,
            json!({"scheduleId": 1, "seatNumber": 1}),
        ),
        post(
            "/api/v1/reservations/batch",
            1,
            json!({"scheduleId": 1, "seatNumbers": [1, 2]}),
        ),
        post("/api/v1/payments", 1, json!({"reservationId": 1})),
        TestRequest::get()
            .uri("/api/v1/payments/1")
            .insert_header(bearer(1)),
        TestRequest::post()
            .uri("/api/v1/payments/1/refund")
            .insert_header(bearer(1)),
        TestRequest::post()
            .uri("/api/v1/admin/concerts/1/schedules")
            .insert_header(admin_bearer(1))
            .set_json(schedule),
    ] {
        let outcome = call!(svc, req);
        assert_problem(&outcome, 503, "unavailable");
        assert_eq!(outcome.1.get(header::RETRY_AFTER).unwrap(), "1");
    }
}

#[actix_web::test]
async fn contended_writes_answer_409_and_change_nothing() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(5), 10_000);
    let svc = service!(world);
    let s = schedule.get();
    let (_, _, held) = call!(
        svc,
        post(
            "/api/v1/reservations",
            5,
            json!({"scheduleId": s, "seatNumber": 1})
        )
    );
    let (_, _, held2) = call!(
        svc,
        post(
            "/api/v1/reservations",
            5,
            json!({"scheduleId": s, "seatNumber": 5})
        )
    );
    let (_, _, to_pay) = call!(
        svc,
        post(
            "/api/v1/reservations",
            5,
            json!({"scheduleId": s, "seatNumber": 2})
        )
    );
    let (_, _, paid) = call!(
        svc,
        post(
            "/api/v1/payments",
            5,
            json!({"reservationId": to_pay["id"]})
        )
    );
    let events = world.store.events().len();
    let writes = || {
        [
            post(
                "/api/v1/reservations/batch",
                5,
                json!({"scheduleId": s, "seatNumbers": [3, 4]}),
            ),
            TestRequest::delete()
                .uri(&format!("/api/v1/reservations/{}", held["id"]))
                .insert_header(bearer(5)),
            post("/api/v1/payments", 5, json!({"reservationId": held2["id"]})),
            TestRequest::post()
                .uri(&format!("/api/v1/payments/{}/refund", paid["id"]))
                .insert_header(bearer(5)),
        ]
    };
    type MakeFailure = fn() -> Failure;
    let failures: [(MakeFailure, &str); 3] = [
        (|| Failure::Conflict, "concurrent-update"),
        (|| Failure::LockTimeout, "lock-timeout"),
        (|| Failure::LockLost, "concurrent-update"),
    ];
    for (failure, code) in failures {
        for req in writes() {
            world.store.fail_next_commit(failure());
            assert_problem(&call!(svc, req), 409, code);
        }
    }
    assert_eq!(world.store.events().len(), events, "nothing was written");
    assert_eq!(world.store.balance(UserId::from(5)), 9_500);
    let statuses: Vec<_> = world
        .store
        .reservations()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [
            ReservationStatus::Held,
            ReservationStatus::Held,
            ReservationStatus::Confirmed
        ]
    );
    // and every one of them succeeds when retried
    for req in writes() {
        let (status, _, body) = call!(svc, req);
        assert!(status.is_success(), "{status} {body}");
    }
    let (status, _, _) = call!(
        svc,
        TestRequest::get()
            .uri(&format!("/api/v1/payments/{}", paid["id"]))
            .insert_header(bearer(5))
    );
    assert_eq!(status, StatusCode::OK);
}
