//! Bad input answers 400 (or 413, 408), unknown routes 404, wrong methods
//! 405, always as problem+json, and nothing is written.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, Service};
use actix_web::error::PayloadError;
use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use actix_web::web::Bytes;
use concert_domain::UserId;
use serde_json::json;

use super::{World, assert_problem, bearer, call, service};

fn json_post(uri: &str, body: &str) -> TestRequest {
    TestRequest::post()
        .uri(uri)
        .insert_header(bearer(1))
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_owned())
}

#[actix_web::test]
async fn malformed_bodies_are_400_validation() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    world.store.set_balance(UserId::from(1), 10_000);
    let svc = service!(world);
    let s = schedule.get();
    let cases = [
        json_post("/api/v1/reservations", "{not json"),
        json_post("/api/v1/reservations", &format!(r#"{{"scheduleId": {s}}}"#)),
        json_post(
            "/api/v1/reservations",
            &format!(r#"{{"scheduleId": {s}, "seatNumber": "7"}}"#),
        ),
        json_post(
            "/api/v1/reservations",
            &format!(r#"{{"scheduleId": {s}, "seatNumber": 0}}"#),
        ),
        json_post(
            "/api/v1/reservations",
            &format!(r#"{{"scheduleId": {s}, "seatNumber": 51}}"#),
        ),
        json_post(
            "/api/v1/reservations",
            &format!(r#"{{"scheduleId": {s}, "seatNumber": 7.5}}"#),
        ),
        json_post(
            "/api/v1/reservations",
            r#"{"scheduleId": 0, "seatNumber": 5}"#,
        ),
        json_post(
            "/api/v1/reservations",
            r#"{"scheduleId": 1e99, "seatNumber": 5}"#,
        ),
        // an array is not read as the struct's fields
        json_post("/api/v1/reservations", &format!("[{s}, 9]")),
        json_post("/api/v1/reservations/batch", &format!("[{s}, [9]]")),
        json_post(
            "/api/v1/reservations/batch",
            &format!(r#"{{"scheduleId": {s}, "seatNumbers": 9}}"#),
        ),
        json_post("/api/v1/points/charge", r#"{"amount": 0}"#),
        json_post("/api/v1/points/charge", r#"{"amount": -500}"#),
        json_post("/api/v1/points/charge", r#"{"amount": 1000001}"#),
        json_post(
            "/api/v1/points/charge",
            r#"{"amount": 99999999999999999999999}"#,
        ),
        json_post("/api/v1/points/charge", r#"{"amount": 1.5}"#),
        json_post("/api/v1/points/charge", r#"{"amount": 500} trailing"#),
        json_post("/api/v1/points/charge", "[500]"),
        json_post("/api/v1/points/charge", "[]"),
        json_post("/api/v1/points/charge", ""),
        json_post("/api/v1/payments", r#"{"reservationId": -1}"#),
        json_post("/api/v1/payments", r#"{"reservation": 1}"#),
        json_post("/api/v1/payments", "null"),
        // wrong content type
        TestRequest::post()
            .uri("/api/v1/points/charge")
            .insert_header(bearer(1))
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload(r#"{"amount": 5}"#),
        // no content type
        TestRequest::post()
            .uri("/api/v1/points/charge")
            .insert_header(bearer(1))
            .set_payload(r#"{"amount": 5}"#),
        // bad idempotency keys
        json_post("/api/v1/points/charge", r#"{"amount": 5}"#)
            .insert_header(("Idempotency-Key", "has space")),
        json_post("/api/v1/points/charge", r#"{"amount": 5}"#)
            .insert_header(("Idempotency-Key", "k".repeat(256))),
        json_post("/api/v1/payments", r#"{"reservationId": 5}"#)
            .insert_header(("Idempotency-Key", "k".repeat(256))),
        json_post("/api/v1/payments", r#"{"reservationId": 5}"#)
            .insert_header(("Idempotency-Key", "")),
    ];
    for req in cases {
        assert_problem(&call!(svc, req), 400, "validation");
    }
    assert!(world.store.reservations().is_empty());
    assert!(world.store.payments().is_empty());
    assert_eq!(world.store.balance(UserId::from(1)), 10_000);
    assert!(world.store.events().is_empty());

    // a JSON subtype is JSON, and a key of 255 characters is a key
    let (status, _, body) = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/points/charge")
            .insert_header(bearer(1))
            .insert_header((header::CONTENT_TYPE, "application/merge-patch+json"))
            .insert_header(("Idempotency-Key", "k".repeat(255)))
            .set_payload(r#"{"amount": 5}"#)
    );
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"userId": 1, "balance": 10_005}))
    );
}

#[actix_web::test]
async fn bad_paths_and_queries_are_400_validation() {
    let world = World::new();
    let svc = service!(world);
    for uri in [
        "/api/v1/concerts/abc",
        "/api/v1/concerts/0",
        "/api/v1/concerts/abc/schedules",
        "/api/v1/concerts/0/schedules",
        "/api/v1/concerts/99999999999999999999/schedules",
        "/api/v1/schedules/-4/seats",
        "/api/v1/schedules/1/seats?status=FREE",
        "/api/v1/schedules/1/seats?status=",
    ] {
        assert_problem(&call!(svc, TestRequest::get().uri(uri)), 400, "validation");
    }
    for req in [
        TestRequest::get().uri("/api/v1/reservations/x"),
        TestRequest::get().uri("/api/v1/reservations/0"),
        TestRequest::delete().uri("/api/v1/reservations/-1"),
        TestRequest::get().uri("/api/v1/reservations?status=FREE"),
        TestRequest::get().uri("/api/v1/payments/1.5"),
        TestRequest::post().uri("/api/v1/payments/0/refund"),
    ] {
        assert_problem(&call!(svc, req.insert_header(bearer(1))), 400, "validation");
    }
}

#[actix_web::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let world = World::new();
    let svc = service!(world);
    assert_problem(
        &call!(svc, TestRequest::get().uri("/api/v1/nothing")),
        404,
        "not-found",
    );
    for (req, allow) in [
        (TestRequest::delete().uri("/api/v1/concerts"), "GET"),
        (
            TestRequest::put().uri("/api/v1/reservations/5"),
            "GET, DELETE",
        ),
        (
            TestRequest::patch().uri("/api/v1/reservations"),
            "GET, POST",
        ),
        (TestRequest::get().uri("/api/v1/points/charge"), "POST"),
        (TestRequest::get().uri("/api/v1/payments/4/refund"), "POST"),
        // a literal route beside a templated one: not a bad id
        (TestRequest::get().uri("/api/v1/reservations/batch"), "POST"),
        (
            TestRequest::delete().uri("/api/v1/reservations/batch"),
            "POST",
        ),
        (TestRequest::post().uri("/health/live"), "GET"),
        (TestRequest::delete().uri("/api-docs/openapi.json"), "GET"),
        (
            TestRequest::default()
                .method(actix_web::http::Method::OPTIONS)
                .uri("/api/v1/concerts"),
            "GET",
        ),
    ] {
        let outcome = call!(svc, req);
        assert_problem(&outcome, 405, "method-not-allowed");
        assert_eq!(
            outcome.1.get(header::ALLOW).unwrap(),
            allow,
            "{}",
            outcome.2
        );
    }
}

#[actix_web::test]
async fn bodies_over_the_limit_are_413() {
    let mut world = World::new();
    world.options.json_limit = 64;
    let svc = service!(world);
    let big = format!(r#"{{"amount": 5, "pad": "{}"}}"#, "x".repeat(100));
    assert_problem(
        &call!(svc, json_post("/api/v1/points/charge", &big)),
        413,
        "payload-too-large",
    );
    // without an announced length, the body is cut at the limit
    let mut req = json_post("/api/v1/points/charge", "").to_request();
    req.headers_mut().remove(header::CONTENT_LENGTH);
    let (req, _) = req.replace_payload(Payload::from(Bytes::from(big)));
    let response = svc.call(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = call!(svc, json_post("/api/v1/points/charge", r#"{"amount": 5}"#));
    assert_eq!(status, StatusCode::OK);
}

/// A body that sends its first bytes, then nothing more.
struct Stalled(Option<Bytes>);

impl futures_core::Stream for Stalled {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.take() {
            Some(bytes) => Poll::Ready(Some(Ok(bytes))),
            None => Poll::Pending,
        }
    }
}

#[actix_web::test]
async fn a_body_slower_than_the_client_timeout_is_408() {
    let mut world = World::new();
    world.options.client_timeout = Duration::from_millis(50);
    let svc = service!(world);
    let mut req = json_post("/api/v1/points/charge", "").to_request();
    req.headers_mut().remove(header::CONTENT_LENGTH);
    let stream: Pin<Box<dyn futures_core::Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(Stalled(Some(Bytes::from_static(b"{\"amount\": "))));
    let (req, _) = req.replace_payload(Payload::from(stream));
    let response = svc.call(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    let body: serde_json::Value = serde_json::from_slice(&test::read_body(response).await).unwrap();
    assert_eq!(body["code"], "request-timeout");
    assert_eq!(world.store.balance(UserId::from(1)), 0);
}
