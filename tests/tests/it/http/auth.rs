//! Bearer tokens at the edge.

use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::test::TestRequest;
use chrono::Utc;
use concert_domain::UserId;
use serde_json::json;

use super::{SECRET, World, admin_bearer, assert_problem, bearer, call, service, token};
use concert_http::{Auth, AuthOptions};

fn signed(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

#[actix_web::test]
async fn a_valid_token_names_the_user() {
    let world = World::new();
    world.store.set_balance(UserId::from(42), 100);
    let svc = service!(world);
    let (status, _, body) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/points")
            .insert_header(bearer(42)),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"userId": 42, "balance": 100}));
    // an admin token is a user token too
    let (status, _, body) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/points")
            .insert_header(admin_bearer(42)),
    );
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"userId": 42, "balance": 100}))
    );
}

#[actix_web::test]
async fn missing_expired_forged_early_and_malformed_tokens_are_401() {
    let world = World::new();
    let svc = service!(world);
    let auth = Auth::new(SECRET, AuthOptions::default());
    let expired = auth.issue_until(UserId::from(42), Utc::now() - chrono::Duration::seconds(10));
    let forged = Auth::new(b"someone-else", AuthOptions::default()).issue(
        UserId::from(42),
        Duration::from_secs(600),
        true,
    );
    let later = Utc::now().timestamp() + 600;
    let early = signed(json!({"sub": "42", "exp": later, "nbf": Utc::now().timestamp() + 60}));
    let cases = [
        None,
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {forged}")),
        Some(format!("Bearer {early}")),
        Some(format!(
            "Bearer {}",
            signed(json!({"sub": "alice", "exp": later}))
        )),
        Some(format!(
            "Bearer {}",
            signed(json!({"sub": "+8101", "exp": later}))
        )),
        Some(format!(
            "Bearer {}",
            signed(json!({"sub": "08101", "exp": later}))
        )),
        Some(format!(
            "Bearer {}",
            signed(json!({"sub": "0", "exp": later}))
        )),
        Some(format!("Bearer {}", signed(json!({"sub": "42"})))),
        Some("Bearer not.a.jwt".to_owned()),
        Some(format!("Basic {}", token(42))),
        Some("Bearer".to_owned()),
    ];
    for authorization in cases {
        let mut req = TestRequest::get().uri("/api/v1/points");
        if let Some(value) = &authorization {
            req = req.insert_header((header::AUTHORIZATION, value.as_str()));
        }
        let outcome = call!(svc, req);
        assert_problem(&outcome, 401, "unauthorized");
        let challenge = outcome.1.get(header::WWW_AUTHENTICATE).unwrap();
        let expected = if authorization.is_none() {
            "Bearer"
        } else {
            "Bearer error=\"invalid_token\""
        };
        assert_eq!(challenge, expected, "{authorization:?}");
    }
    // a canonical subject is accepted
    let ok = signed(json!({"sub": "8101", "exp": later}));
    let (status, _, body) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/points")
            .insert_header((header::AUTHORIZATION, format!("Bearer {ok}")))
    );
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"userId": 8101, "balance": 0}))
    );
}

#[actix_web::test]
async fn every_owned_resource_needs_a_token() {
    let world = World::new();
    let svc = service!(world);
    for req in [
        TestRequest::get().uri("/api/v1/points"),
        TestRequest::get().uri("/api/v1/points/history"),
        TestRequest::post().uri("/api/v1/points/charge"),
        TestRequest::get().uri("/api/v1/reservations"),
        TestRequest::post().uri("/api/v1/reservations"),
        TestRequest::post().uri("/api/v1/reservations/batch"),
        TestRequest::get().uri("/api/v1/reservations/1"),
        TestRequest::delete().uri("/api/v1/reservations/1"),
        TestRequest::post().uri("/api/v1/payments"),
        TestRequest::get().uri("/api/v1/payments/1"),
        TestRequest::post().uri("/api/v1/payments/1/refund"),
        TestRequest::post().uri("/api/v1/admin/concerts"),
        TestRequest::post().uri("/api/v1/admin/concerts/1/schedules"),
    ] {
        assert_problem(&call!(svc, req), 401, "unauthorized");
    }
}

#[actix_web::test]
async fn authentication_comes_before_body_validation() {
    let world = World::new();
    let svc = service!(world);
    let outcome = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/reservations")
            .set_payload("{not json"),
    );
    assert_problem(&outcome, 401, "unauthorized");
}
