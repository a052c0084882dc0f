//! Handler tests: the whole `App` in process, with mockall mocks of the
//! ports behind the real domain services. No database, no network.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{
    Clock, Concert, ConcertId, Control, DistributedLock, MockCatalogueRepository, MockClock,
    MockPaymentRepository, MockSeatRepository, MockWalletRepository, Payment, PaymentId,
    PointBalance, Points as Amount, QueryError, Reservation, ReservationId, ReservationStatus,
    ReserveError, ScheduleId, Seat, SeatId, SeatNumber, SeatState, Strategy, UserId, Wallet,
};
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"unit-test-secret";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

fn clock() -> Arc<dyn Clock> {
    let mut clock = MockClock::new();
    clock.expect_now().returning(t0);
    clock.expect_sleep().returning(|_| ());
    Arc::new(clock)
}

fn control() -> Control<Arc<dyn DistributedLock>> {
    Control::new(Strategy::Pessimistic, None).unwrap()
}

#[derive(Default)]
struct Mocks {
    catalogue: MockCatalogueRepository,
    seats: MockSeatRepository,
    wallets: MockWalletRepository,
    payments: MockPaymentRepository,
    readiness: Vec<Arc<dyn Readiness>>,
}

impl Mocks {
    fn state(self) -> AppState {
        AppState {
            catalogue: CatalogueService::new(Arc::new(self.catalogue), clock()),
            reservations: ReservationService::new(
                Arc::new(self.seats),
                clock(),
                control(),
                Duration::from_secs(300),
            ),
            points: PointService::new(Arc::new(self.wallets), clock(), control(), control()),
            payments: PaymentService::new(Arc::new(self.payments), clock(), control()),
            auth: Auth::new(SECRET),
            readiness: self.readiness,
        }
    }
}

/// The whole app over `mocks`, initialised for `call!`.
macro_rules! service {
    ($mocks:expr) => {
        test::init_service(app(web::Data::new($mocks.state()))).await
    };
}

fn token(user: u64) -> String {
    Auth::new(SECRET).issue(UserId::from(user), Duration::from_secs(600))
}

fn bearer(user: u64) -> (header::HeaderName, String) {
    (header::AUTHORIZATION, format!("Bearer {}", token(user)))
}

/// Sends a `TestRequest` and returns the status, the headers and the JSON
/// body (`Null` when the body is not JSON).
macro_rules! call {
    ($svc:expr, $req:expr $(,)?) => {{
        let response = test::call_service(&$svc, $req.to_request()).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = test::read_body(response).await;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, body)
    }};
}

/// Asserts a problem+json answer with `status` and `code`.
fn assert_problem(outcome: &(StatusCode, header::HeaderMap, Value), status: u16, code: &str) {
    let (got, headers, body) = outcome;
    assert_eq!(got.as_u16(), status, "{body}");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        PROBLEM_JSON,
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["type"], format!("urn:concert:problem:{code}"));
    assert!(body["title"].is_string() && body["detail"].is_string());
}

fn reservation(id: u64, user: u64, status: ReservationStatus) -> Reservation {
    Reservation {
        id: ReservationId::from(id),
        seat: SeatId::from(70),
        schedule: ScheduleId::from(2),
        seat_number: SeatNumber::new(7).unwrap(),
        user: UserId::from(user),
        price: Amount::new(500).unwrap(),
        status,
        expires_at: t0() + chrono::Duration::minutes(5),
    }
}

// ---- auth -------------------------------------------------------------------

fn wallet_of_100() -> Mocks {
    let mut mocks = Mocks::default();
    mocks.wallets.expect_wallet().returning(|user| {
        Ok(Wallet {
            user,
            balance: 100,
            version: 1,
        })
    });
    mocks
}

#[actix_web::test]
async fn a_valid_token_names_the_user() {
    let svc = service!(wallet_of_100());
    let (status, _, body) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/points")
            .insert_header(bearer(42)),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"userId": 42, "balance": 100}));
}

#[actix_web::test]
async fn missing_expired_forged_and_malformed_tokens_are_401() {
    let svc = service!(wallet_of_100());
    let expired =
        Auth::new(SECRET).issue_until(UserId::from(42), Utc::now() - chrono::Duration::seconds(10));
    let forged = Auth::new(b"someone-else").issue(UserId::from(42), Duration::from_secs(600));
    let non_numeric = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": Utc::now().timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let cases = [
        None,
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {forged}")),
        Some(format!("Bearer {non_numeric}")),
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
        assert!(
            challenge.to_str().unwrap().starts_with("Bearer"),
            "{authorization:?}"
        );
    }
}

#[actix_web::test]
async fn authentication_comes_before_body_validation() {
    let svc = service!(Mocks::default());
    let outcome = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/reservations")
            .set_payload("{not json"),
    );
    assert_problem(&outcome, 401, "unauthorized");
}

// ---- validation -------------------------------------------------------------

#[actix_web::test]
async fn malformed_bodies_are_400_validation() {
    let mut mocks = Mocks::default();
    mocks.seats.expect_hold().never();
    mocks.wallets.expect_charge().never();
    mocks.payments.expect_pay().never();
    let svc = service!(mocks);
    let json_post = |uri: &str, body: &str| {
        TestRequest::post()
            .uri(uri)
            .insert_header(bearer(1))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body.to_owned())
    };
    let cases = [
        json_post("/api/v1/reservations", "{not json"),
        json_post("/api/v1/reservations", r#"{"scheduleId": 1}"#),
        json_post(
            "/api/v1/reservations",
            r#"{"scheduleId": 1, "seatNumber": "7"}"#,
        ),
        json_post(
            "/api/v1/reservations",
            r#"{"scheduleId": 1, "seatNumber": 0}"#,
        ),
        json_post(
            "/api/v1/reservations",
            r#"{"scheduleId": 1, "seatNumber": 51}"#,
        ),
        json_post(
            "/api/v1/reservations",
            r#"{"scheduleId": 0, "seatNumber": 5}"#,
        ),
        json_post(
            "/api/v1/reservations",
            r#"{"scheduleId": 1e99, "seatNumber": 5}"#,
        ),
        json_post("/api/v1/points/charge", r#"{"amount": 0}"#),
        json_post("/api/v1/points/charge", r#"{"amount": -500}"#),
        json_post("/api/v1/points/charge", r#"{"amount": 1000001}"#),
        json_post(
            "/api/v1/points/charge",
            r#"{"amount": 99999999999999999999999}"#,
        ),
        json_post("/api/v1/points/charge", r#"{"amount": 1.5}"#),
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
        // bad idempotency key
        json_post("/api/v1/points/charge", r#"{"amount": 5}"#)
            .insert_header(("Idempotency-Key", "has space")),
        json_post("/api/v1/payments", r#"{"reservationId": 5}"#)
            .insert_header(("Idempotency-Key", "k".repeat(101))),
    ];
    for req in cases {
        assert_problem(&call!(svc, req), 400, "validation");
    }
}

#[actix_web::test]
async fn bad_paths_and_queries_are_400_validation() {
    let mut mocks = Mocks::default();
    mocks.catalogue.expect_seats().never();
    mocks.catalogue.expect_schedules().never();
    mocks.seats.expect_reservation().never();
    let svc = service!(mocks);
    for uri in [
        "/api/v1/concerts/abc/schedules",
        "/api/v1/concerts/0/schedules",
        "/api/v1/concerts/99999999999999999999/schedules",
        "/api/v1/schedules/-4/seats",
        "/api/v1/schedules/1/seats?status=FREE",
    ] {
        assert_problem(&call!(svc, TestRequest::get().uri(uri)), 400, "validation");
    }
    let outcome = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/reservations/x")
            .insert_header(bearer(1)),
    );
    assert_problem(&outcome, 400, "validation");
}

#[actix_web::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let svc = service!(Mocks::default());
    assert_problem(
        &call!(svc, TestRequest::get().uri("/api/v1/nothing")),
        404,
        "not-found",
    );
    assert_problem(
        &call!(svc, TestRequest::delete().uri("/api/v1/concerts")),
        405,
        "method-not-allowed",
    );
}

// ---- handlers ---------------------------------------------------------------

#[actix_web::test]
async fn catalogue_reads_need_no_token() {
    let mut mocks = Mocks::default();
    mocks.catalogue.expect_concerts().returning(|| {
        Ok(vec![Concert {
            id: ConcertId::from(1),
            title: "Night".into(),
        }])
    });
    mocks
        .catalogue
        .expect_seats()
        .withf(|schedule| schedule.get() == 3)
        .returning(|schedule| {
            Ok((1..=3)
                .map(|n| Seat {
                    id: SeatId::from(n),
                    schedule,
                    number: SeatNumber::new(n as i64).unwrap(),
                    price: Amount::new(500).unwrap(),
                    state: if n == 2 {
                        SeatState::Sold
                    } else {
                        SeatState::Available
                    },
                    version: 0,
                })
                .collect())
        });
    mocks
        .catalogue
        .expect_schedules()
        .returning(|_, _| Err(QueryError::NotFound("concert")));
    let svc = service!(mocks);

    let (status, _, body) = call!(svc, TestRequest::get().uri("/api/v1/concerts"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([{"id": 1, "title": "Night"}]));

    let (status, _, body) = call!(
        svc,
        TestRequest::get().uri("/api/v1/schedules/3/seats?status=AVAILABLE"),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([
            {"number": 1, "price": 500, "status": "AVAILABLE"},
            {"number": 3, "price": 500, "status": "AVAILABLE"}
        ])
    );

    let outcome = call!(svc, TestRequest::get().uri("/api/v1/concerts/9/schedules"));
    assert_problem(&outcome, 404, "not-found");
}

#[actix_web::test]
async fn reserving_answers_201_with_location() {
    let mut mocks = Mocks::default();
    mocks
        .seats
        .expect_hold()
        .withf(|cmd, _| cmd.user.get() == 5 && cmd.schedule.get() == 2 && cmd.seat.get() == 7)
        .times(1)
        .returning(|cmd, _| {
            Ok(Reservation {
                expires_at: cmd.until,
                ..reservation(31, 5, ReservationStatus::Held)
            })
        });
    let svc = service!(mocks);
    let (status, headers, body) = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/reservations")
            .insert_header(bearer(5))
            .set_json(json!({"scheduleId": 2, "seatNumber": 7})),
    );
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        headers.get(header::LOCATION).unwrap(),
        "/api/v1/reservations/31"
    );
    assert_eq!(
        body,
        json!({
            "id": 31, "scheduleId": 2, "seatNumber": 7, "userId": 5, "price": 500,
            "status": "HELD", "expiresAt": "2030-03-17T17:51:40Z"
        })
    );
}

#[actix_web::test]
async fn domain_refusals_reach_the_client_as_problems() {
    let mut mocks = Mocks::default();
    mocks
        .seats
        .expect_hold()
        .returning(|_, _| Err(ReserveError::SeatUnavailable));
    mocks
        .seats
        .expect_reservation()
        .returning(|id| Ok(Some(reservation(id.get(), 5, ReservationStatus::Held))));
    mocks
        .payments
        .expect_pay()
        .returning(|_, _| Err(concert_domain::PayError::Expired));
    let svc = service!(mocks);

    let reserve = TestRequest::post()
        .uri("/api/v1/reservations")
        .insert_header(bearer(6))
        .set_json(json!({"scheduleId": 2, "seatNumber": 7}));
    assert_problem(&call!(svc, reserve), 409, "seat-unavailable");

    // somebody else's reservation does not exist
    let get = TestRequest::get()
        .uri("/api/v1/reservations/31")
        .insert_header(bearer(6));
    assert_problem(&call!(svc, get), 404, "not-found");
    let (status, _, body) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/reservations/31")
            .insert_header(bearer(5)),
    );
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("HELD")));

    let pay = TestRequest::post()
        .uri("/api/v1/payments")
        .insert_header(bearer(5))
        .set_json(json!({"reservationId": 31}));
    assert_problem(&call!(svc, pay), 410, "reservation-expired");
}

#[actix_web::test]
async fn charge_and_pay_pass_the_idempotency_key() {
    let mut mocks = Mocks::default();
    mocks
        .wallets
        .expect_charge()
        .withf(|cmd, _| {
            cmd.user.get() == 8
                && cmd.change.amount().get() == 700
                && cmd.idempotency.as_ref().map(|k| k.as_str()) == Some("charge-1")
        })
        .times(1)
        .returning(|cmd, _| {
            Ok(PointBalance {
                user: cmd.user,
                balance: 700,
            })
        });
    mocks
        .payments
        .expect_pay()
        .withf(|cmd, _| {
            cmd.user.get() == 8
                && cmd.reservation.get() == 31
                && cmd.idempotency.as_ref().map(|k| k.as_str()) == Some("pay-31")
        })
        .times(1)
        .returning(|cmd, _| {
            Ok(Payment {
                id: PaymentId::from(4),
                reservation: cmd.reservation,
                user: cmd.user,
                amount: Amount::new(500).unwrap(),
                paid_at: cmd.now,
            })
        });
    let svc = service!(mocks);
    let (status, _, body) = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/points/charge")
            .insert_header(bearer(8))
            .insert_header(("Idempotency-Key", "charge-1"))
            .set_json(json!({"amount": 700})),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"userId": 8, "balance": 700}));

    let (status, _, body) = call!(
        svc,
        TestRequest::post()
            .uri("/api/v1/payments")
            .insert_header(bearer(8))
            .insert_header(("Idempotency-Key", "pay-31"))
            .set_json(json!({"reservationId": 31})),
    );
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({"id": 4, "reservationId": 31, "userId": 8, "amount": 500,
               "paidAt": "2030-03-17T17:46:40Z"})
    );
}

#[actix_web::test]
async fn history_is_listed_newest_first_as_stored() {
    let mut mocks = Mocks::default();
    mocks.wallets.expect_history().returning(|_| {
        Ok(vec![
            concert_domain::HistoryEntry {
                id: 2,
                kind: concert_domain::PointKind::Use,
                amount: 500,
                balance_after: 500,
                created_at: t0(),
            },
            concert_domain::HistoryEntry {
                id: 1,
                kind: concert_domain::PointKind::Charge,
                amount: 1000,
                balance_after: 1000,
                created_at: t0(),
            },
        ])
    });
    let svc = service!(mocks);
    let (status, _, body) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/points/history")
            .insert_header(bearer(3)),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["kind"], "USE");
    assert_eq!(body[0]["balanceAfter"], 500);
    assert_eq!(body[1]["kind"], "CHARGE");
    assert_eq!(body[1]["createdAt"], "2030-03-17T17:46:40Z");
}

// ---- health, docs, request ids ------------------------------------------------

struct Dependency(&'static str, bool);

#[async_trait]
impl Readiness for Dependency {
    fn name(&self) -> &'static str {
        self.0
    }
    async fn check(&self) -> anyhow::Result<()> {
        if self.1 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("connection refused"))
        }
    }
}

#[actix_web::test]
async fn readiness_names_what_failed() {
    let healthy = Mocks {
        readiness: vec![Arc::new(Dependency("mysql", true))],
        ..Mocks::default()
    };
    let svc = service!(healthy);
    let (status, _, body) = call!(svc, TestRequest::get().uri("/health/ready"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "checked": ["mysql"]}));
    let (status, _, body) = call!(svc, TestRequest::get().uri("/health/live"));
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let sick = Mocks {
        readiness: vec![
            Arc::new(Dependency("mysql", true)),
            Arc::new(Dependency("redis", false)),
        ],
        ..Mocks::default()
    };
    let svc = service!(sick);
    let outcome = call!(svc, TestRequest::get().uri("/health/ready"));
    assert_problem(&outcome, 503, "unavailable");
    let detail = outcome.2["detail"].as_str().unwrap();
    assert!(
        detail.contains("redis") && !detail.contains("mysql"),
        "{detail}"
    );
}

#[actix_web::test]
async fn every_response_carries_a_request_id() {
    let svc = service!(Mocks::default());
    let mut ids = std::collections::HashSet::new();
    for uri in ["/health/live", "/nowhere"] {
        let (_, headers, _) = call!(svc, TestRequest::get().uri(uri));
        let id = headers.get(REQUEST_ID_HEADER).expect("x-request-id");
        assert_eq!(id.len(), 36, "a UUID");
        ids.insert(id.clone());
    }
    assert_eq!(ids.len(), 2);
}

#[actix_web::test]
async fn openapi_and_swagger_ui_are_served_offline() {
    let svc = service!(Mocks::default());
    let (status, _, doc) = call!(svc, TestRequest::get().uri(OPENAPI_PATH));
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/v1/payments"]["post"].is_object());

    let redirect =
        test::call_service(&svc, TestRequest::get().uri("/swagger-ui").to_request()).await;
    assert_eq!(
        redirect.headers().get(header::LOCATION).unwrap(),
        "/swagger-ui/"
    );

    for (uri, kind) in [
        ("/swagger-ui/", "text/html"),
        ("/swagger-ui/swagger-ui.css", "text/css"),
        ("/swagger-ui/swagger-ui-bundle.js", "javascript"),
        ("/swagger-ui/swagger-initializer.js", "javascript"),
    ] {
        let response = test::call_service(&svc, TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let content_type = response.headers().get(header::CONTENT_TYPE).unwrap();
        assert!(content_type.to_str().unwrap().contains(kind), "{uri}");
        let body = test::read_body(response).await;
        assert!(body.len() > 100, "{uri}");
    }
}
