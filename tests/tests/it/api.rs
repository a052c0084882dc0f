//! The HTTP API end to end: the real app on port 0 over a fresh database and
//! Redis prefix, driven with reqwest. Every status and problem `code` of the
//! contract is produced here at least once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use concert_app::strategies::LockAt;
use concert_domain::{DistributedLock, LockKey, LockOptions, MAX_BALANCE, ScheduleId, SeatNumber};
use concert_tests::app::{
    AppConfig, TcpProxy, TestApp, json_ok, problem, redis_url, spawn_app, spawn_app_with,
};
use concert_tests::audit::assert_consistent;
use concert_tests::db::concurrently;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn seats(app: &TestApp, schedule: ScheduleId, filter: &str) -> Vec<Value> {
    let path = format!("/api/v1/schedules/{schedule}/seats{filter}");
    let body = json_ok(app.get(&path).send().await.unwrap()).await;
    body.as_array().expect("an array").clone()
}

async fn seat_status(app: &TestApp, schedule: ScheduleId, number: u64) -> String {
    let all = seats(app, schedule, "").await;
    all.iter()
        .find(|s| s["number"] == number)
        .and_then(|s| s["status"].as_str())
        .expect("seat listed")
        .to_owned()
}

async fn reserved(app: &TestApp, user: u64, schedule: ScheduleId, seat: u8) -> Value {
    let response = app.reserve(user, schedule, seat).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

// ---- happy paths -------------------------------------------------------------

#[tokio::test]
async fn catalogue_lists_concerts_dates_and_seats() {
    let app = spawn_app().await;
    let (concert, schedule) = app.seed_schedule(700).await;

    let concerts = json_ok(app.get("/api/v1/concerts").send().await.unwrap()).await;
    assert_eq!(
        concerts,
        json!([{"id": concert.get(), "title": "Test concert"}])
    );

    let path = format!("/api/v1/concerts/{concert}/schedules");
    let schedules = json_ok(app.get(&path).send().await.unwrap()).await;
    let schedules = schedules.as_array().unwrap();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0]["id"], schedule.get());
    assert_eq!(schedules[0]["concertId"], concert.get());
    assert_eq!(schedules[0]["availableSeats"], 50);
    let starts_at = schedules[0]["startsAt"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(starts_at).is_ok() && starts_at.ends_with('Z'),
        "{starts_at}"
    );

    let all = seats(&app, schedule, "").await;
    assert_eq!(all.len(), 50);
    for (i, seat) in all.iter().enumerate() {
        assert_eq!(
            seat,
            &json!({"number": i + 1, "price": 700, "status": "AVAILABLE"})
        );
    }

    reserved(&app, 1, schedule, 7).await;
    assert_eq!(seats(&app, schedule, "?status=AVAILABLE").await.len(), 49);
    let held = seats(&app, schedule, "?status=HELD").await;
    assert_eq!(held, [json!({"number": 7, "price": 700, "status": "HELD"})]);
    assert!(seats(&app, schedule, "?status=SOLD").await.is_empty());
    let schedules = json_ok(app.get(&path).send().await.unwrap()).await;
    assert_eq!(schedules[0]["availableSeats"], 49);
}

#[tokio::test]
async fn reserve_charge_pay_and_read_back() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let user = 42;

    // a user never charged has 0
    let balance = json_ok(app.get_as(user, "/api/v1/points").send().await.unwrap()).await;
    assert_eq!(balance, json!({"userId": user, "balance": 0}));
    let charged = json_ok(app.charge(user, 1200).await).await;
    assert_eq!(charged, json!({"userId": user, "balance": 1200}));

    let response = app.reserve(user, schedule, 7).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let reservation: Value = response.json().await.unwrap();
    let id = reservation["id"].as_u64().expect("an id");
    assert_eq!(reservation["scheduleId"], schedule.get());
    assert_eq!(reservation["seatNumber"], 7);
    assert_eq!(reservation["userId"], user);
    assert_eq!(reservation["price"], 500);
    assert_eq!(reservation["status"], "HELD");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(reservation["expiresAt"].as_str().expect("expiresAt"))
            .unwrap();
    let hold = expires_at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(hold > chrono::Duration::seconds(250) && hold <= chrono::Duration::seconds(301));
    assert_eq!(seat_status(&app, schedule, 7).await, "HELD");

    let path = format!("/api/v1/reservations/{id}");
    let read = json_ok(app.get_as(user, &path).send().await.unwrap()).await;
    assert_eq!(read, reservation);

    let response = app.pay(user, id).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let payment: Value = response.json().await.unwrap();
    assert!(payment["id"].as_u64().is_some());
    assert_eq!(payment["reservationId"], id);
    assert_eq!(payment["userId"], user);
    assert_eq!(payment["amount"], 500);
    assert!(chrono::DateTime::parse_from_rfc3339(payment["paidAt"].as_str().unwrap()).is_ok());

    let read = json_ok(app.get_as(user, &path).send().await.unwrap()).await;
    assert_eq!(read["status"], "CONFIRMED");
    assert_eq!(seat_status(&app, schedule, 7).await, "SOLD");
    assert_eq!(app.balance(user).await, 700);

    let history = json_ok(
        app.get_as(user, "/api/v1/points/history")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    let kinds: Vec<_> = history
        .iter()
        .map(|h| {
            (
                h["kind"].clone(),
                h["amount"].clone(),
                h["balanceAfter"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (json!("USE"), json!(500), json!(700)),
            (json!("CHARGE"), json!(1200), json!(1200))
        ]
    );
    for entry in history {
        assert!(entry["id"].as_u64().is_some());
        assert!(chrono::DateTime::parse_from_rfc3339(entry["createdAt"].as_str().unwrap()).is_ok());
    }

    // paying again is refused and changes nothing
    assert_eq!(
        problem(app.pay(user, id).await).await,
        (409, "already-paid".into())
    );
    assert_eq!(app.balance(user).await, 700);
    // a sold seat cannot be held
    assert_eq!(
        problem(app.reserve(7, schedule, 7).await).await,
        (409, "seat-unavailable".into())
    );
}

#[tokio::test]
async fn someone_elses_reservation_does_not_exist() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    app.set_balance(2, 10_000).await;
    let id = reserved(&app, 1, schedule, 3).await["id"].as_u64().unwrap();
    let path = format!("/api/v1/reservations/{id}");
    assert_eq!(
        problem(app.get_as(2, &path).send().await.unwrap()).await,
        (404, "not-found".into())
    );
    assert_eq!(
        problem(app.pay(2, id).await).await,
        (404, "not-found".into())
    );
    assert_eq!(app.balance(2).await, 10_000);
    assert_eq!(seat_status(&app, schedule, 3).await, "HELD");
    // a held seat is unavailable to others
    assert_eq!(
        problem(app.reserve(2, schedule, 3).await).await,
        (409, "seat-unavailable".into())
    );
}

#[tokio::test]
async fn health_docs_and_request_ids() {
    let app = spawn_app().await;
    let live = app.get("/health/live").send().await.unwrap();
    assert!(live.headers().contains_key("x-request-id"));
    assert_eq!(json_ok(live).await["status"], "ok");
    let ready = json_ok(app.get("/health/ready").send().await.unwrap()).await;
    assert_eq!(ready["status"], "ok");

    let doc = json_ok(app.get("/api-docs/openapi.json").send().await.unwrap()).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/v1/concerts", "get"),
        ("/api/v1/concerts/{concertId}/schedules", "get"),
        ("/api/v1/schedules/{scheduleId}/seats", "get"),
        ("/api/v1/reservations", "post"),
        ("/api/v1/reservations/{reservationId}", "get"),
        ("/api/v1/points", "get"),
        ("/api/v1/points/charge", "post"),
        ("/api/v1/points/history", "get"),
        ("/api/v1/payments", "post"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let ui = app.get("/swagger-ui/").send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger-ui"));
    let bundle = app
        .get("/swagger-ui/swagger-ui-bundle.js")
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
}

// ---- client errors ----------------------------------------------------------

#[tokio::test]
async fn invalid_requests_are_400_validation() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let s = schedule.get();
    let raw = |path: &str, body: &str| {
        app.client
            .post(app.url(path))
            .bearer_auth(app.token_for(1))
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    let cases = [
        raw("/api/v1/reservations", "{\"scheduleId\": "),
        raw("/api/v1/reservations", &format!("{{\"scheduleId\": {s}}}")),
        raw(
            "/api/v1/reservations",
            &format!("{{\"scheduleId\": {s}, \"seatNumber\": \"one\"}}"),
        ),
        raw(
            "/api/v1/reservations",
            &format!("{{\"scheduleId\": {s}, \"seatNumber\": 0}}"),
        ),
        raw(
            "/api/v1/reservations",
            &format!("{{\"scheduleId\": {s}, \"seatNumber\": 51}}"),
        ),
        raw(
            "/api/v1/reservations",
            "{\"scheduleId\": -1, \"seatNumber\": 1}",
        ),
        raw("/api/v1/points/charge", "{\"amount\": 0}"),
        raw("/api/v1/points/charge", "{\"amount\": -100}"),
        raw("/api/v1/points/charge", "{\"amount\": 1000001}"),
        raw("/api/v1/points/charge", "{\"amount\": 1e30}"),
        raw("/api/v1/points/charge", "{\"amount\": \"100\"}"),
        raw("/api/v1/points/charge", "{}"),
        raw("/api/v1/payments", "{\"reservationId\": \"x\"}"),
        raw("/api/v1/payments", "not json"),
        raw("/api/v1/points/charge", "{\"amount\": 100}").header("Idempotency-Key", ""),
        app.client
            .post(app.url("/api/v1/points/charge"))
            .bearer_auth(app.token_for(1))
            .header("content-type", "text/plain")
            .body("{\"amount\": 100}"),
    ];
    for request in cases {
        assert_eq!(
            problem(request.send().await.unwrap()).await,
            (400, "validation".into())
        );
    }
    for path in [
        "/api/v1/concerts/abc/schedules",
        &format!("/api/v1/schedules/{s}/seats?status=FREE"),
    ] {
        let response = app.get(path).send().await.unwrap();
        assert_eq!(
            problem(response).await,
            (400, "validation".into()),
            "{path}"
        );
    }
    // nothing was written
    assert_eq!(app.balance(1).await, 0);
    assert_eq!(seats(&app, schedule, "?status=AVAILABLE").await.len(), 50);
}

#[tokio::test]
async fn unknown_ids_and_routes_are_404() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let missing = [
        app.get("/api/v1/concerts/999999/schedules"),
        app.get("/api/v1/schedules/999999/seats"),
        app.get_as(1, "/api/v1/reservations/999999"),
        app.get("/api/v1/no-such-thing"),
    ];
    for request in missing {
        assert_eq!(
            problem(request.send().await.unwrap()).await,
            (404, "not-found".into())
        );
    }
    assert_eq!(
        problem(app.reserve(1, ScheduleId::from(999_999), 1).await).await,
        (404, "not-found".into())
    );
    assert_eq!(
        problem(app.pay(1, 999_999).await).await,
        (404, "not-found".into())
    );
    assert_eq!(seats(&app, schedule, "?status=AVAILABLE").await.len(), 50);
}

#[tokio::test]
async fn missing_expired_and_forged_tokens_are_401() {
    let app = spawn_app().await;
    let tokens = [
        None,
        Some(app.expired_token_for(1)),
        Some(app.forged_token_for(1)),
        Some("garbage".to_owned()),
    ];
    for token in tokens {
        for (method, path) in [
            ("GET", "/api/v1/points"),
            ("GET", "/api/v1/points/history"),
            ("POST", "/api/v1/points/charge"),
            ("POST", "/api/v1/reservations"),
            ("GET", "/api/v1/reservations/1"),
            ("POST", "/api/v1/payments"),
        ] {
            let mut request = match method {
                "GET" => app.client.get(app.url(path)),
                _ => app.client.post(app.url(path)).json(&json!({"amount": 5})),
            };
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer"),
                "{method} {path}: {challenge:?}"
            );
            assert_eq!(problem(response).await, (401, "unauthorized".into()));
        }
    }
    // catalogue reads need no token
    json_ok(app.get("/api/v1/concerts").send().await.unwrap()).await;
}

#[tokio::test]
async fn insufficient_points_and_balance_limit() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    app.set_balance(1, 499).await;
    let id = reserved(&app, 1, schedule, 1).await["id"].as_u64().unwrap();
    assert_eq!(
        problem(app.pay(1, id).await).await,
        (409, "insufficient-points".into())
    );
    assert_eq!(app.balance(1).await, 499);
    assert_eq!(seat_status(&app, schedule, 1).await, "HELD");

    app.set_balance(2, MAX_BALANCE - 10).await;
    assert_eq!(
        problem(app.charge(2, 11).await).await,
        (422, "balance-limit".into())
    );
    assert_eq!(app.balance(2).await, MAX_BALANCE - 10);
    let topped = json_ok(app.charge(2, 10).await).await;
    assert_eq!(topped["balance"], MAX_BALANCE);
}

#[tokio::test]
async fn an_expired_hold_frees_the_seat_and_cannot_be_paid() {
    let app = spawn_app_with(AppConfig {
        hold_seconds: 1,
        ..AppConfig::default()
    })
    .await;
    let (_, schedule) = app.seed_schedule(500).await;
    app.set_balance(1, 5_000).await;
    let id = reserved(&app, 1, schedule, 9).await["id"].as_u64().unwrap();
    // the hold ends: move the app's clock past it
    app.clock
        .as_ref()
        .expect("a manual clock")
        .advance(Duration::from_secs(1));

    assert_eq!(seat_status(&app, schedule, 9).await, "AVAILABLE");
    let path = format!("/api/v1/reservations/{id}");
    let read = json_ok(app.get_as(1, &path).send().await.unwrap()).await;
    assert_eq!(read["status"], "EXPIRED");
    assert_eq!(
        problem(app.pay(1, id).await).await,
        (410, "reservation-expired".into())
    );
    assert_eq!(app.balance(1).await, 5_000);

    // bookable again, by someone else, even with no sweeper running
    let again = reserved(&app, 2, schedule, 9).await;
    assert_ne!(again["id"], id);
    assert_eq!(
        problem(app.pay(1, id).await).await,
        (410, "reservation-expired".into())
    );
}

// ---- idempotency ------------------------------------------------------------

#[tokio::test]
async fn idempotent_charge_and_payment_act_once() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let user = 5;
    let charge = || {
        app.post_as(user, "/api/v1/points/charge", &json!({"amount": 1000}))
            .header("Idempotency-Key", "charge-1")
    };
    let first = json_ok(charge().send().await.unwrap()).await;
    assert_eq!(first, json!({"userId": user, "balance": 1000}));
    let repeat = json_ok(charge().send().await.unwrap()).await;
    assert_eq!(repeat, first);
    assert_eq!(app.balance(user).await, 1000);

    let id = reserved(&app, user, schedule, 4).await["id"]
        .as_u64()
        .unwrap();
    let pay = || {
        app.post_as(user, "/api/v1/payments", &json!({"reservationId": id}))
            .header("Idempotency-Key", "pay-1")
    };
    let first = pay().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let repeat = pay().send().await.unwrap();
    assert_eq!(repeat.status(), StatusCode::CREATED);
    assert_eq!(repeat.json::<Value>().await.unwrap(), first);
    assert_eq!(app.balance(user).await, 500);

    let history = json_ok(
        app.get_as(user, "/api/v1/points/history")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    // without the key, paying again is refused
    assert_eq!(
        problem(app.pay(user, id).await).await,
        (409, "already-paid".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_of_one_charge_move_points_once() {
    let app = Arc::new(spawn_app().await);
    let outcomes = concurrently(20, |_| {
        let request = app
            .post_as(9, "/api/v1/points/charge", &json!({"amount": 300}))
            .header("Idempotency-Key", "same-key");
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    })
    .await;
    for (status, body) in &outcomes {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body, &json!({"userId": 9, "balance": 300}));
    }
    assert_eq!(app.balance(9).await, 300);
    assert_consistent(&app.db.db).await;
}

// ---- lock timeout and unavailable ---------------------------------------------

#[tokio::test]
async fn a_seat_locked_elsewhere_is_lock_timeout() {
    let app = spawn_app_with(AppConfig::seats("redis-simple")).await;
    let (_, schedule) = app.seed_schedule(500).await;
    let locks = concert_redis::RedisLocks::connect(
        &redis_url(),
        &app.redis_prefix,
        concert_redis::RedisLockSettings::default(),
    )
    .await
    .expect("redis");
    let lock = locks.simple();
    let key = LockKey::seat(schedule, SeatNumber::new(3).unwrap());
    let options = LockOptions {
        lease: Duration::from_secs(30),
        wait: Duration::from_millis(100),
        watchdog: false,
    };
    let guard = lock.acquire(&key, options).await.expect("lock taken");
    assert_eq!(
        problem(app.reserve(1, schedule, 3).await).await,
        (409, "lock-timeout".into())
    );
    assert_eq!(seat_status(&app, schedule, 3).await, "AVAILABLE");
    guard.release().await.expect("released");
    reserved(&app, 1, schedule, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_unavailable() {
    let redis = redis_url();
    let server = redis
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    let proxy = TcpProxy::start(server).await;
    let app = spawn_app_with(AppConfig {
        redis_url: format!("redis://{}", proxy.addr),
        ..AppConfig::seats("redis-pubsub")
    })
    .await;
    let (_, schedule) = app.seed_schedule(500).await;
    reserved(&app, 1, schedule, 1).await;
    json_ok(app.get("/health/ready").send().await.unwrap()).await;

    proxy.shutdown().await;
    assert_eq!(
        problem(app.reserve(1, schedule, 2).await).await,
        (503, "unavailable".into())
    );
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(problem(ready).await, (503, "unavailable".into()));
    // what needs only MySQL keeps working
    assert_eq!(seat_status(&app, schedule, 2).await, "AVAILABLE");
    // the app's own clean-up goes through the (closed) proxy: clean up
    // directly, so no key of this test outlives it
    concert_tests::redis::purge_prefix(&redis, &app.redis_prefix);
}

/// An instance whose Redis is down at start still starts: it serves what
/// needs only MySQL, answers 503 for what needs the lock, and reports not
/// ready, instead of refusing to boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_redis_is_down_and_reports_not_ready() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app_with(AppConfig {
        redis_url: format!("redis://127.0.0.1:{port}"),
        ..AppConfig::seats("redis-spin")
    })
    .await;
    let (_, schedule) = app.seed_schedule(500).await;
    assert_eq!(
        problem(app.reserve(1, schedule, 3).await).await,
        (503, "unavailable".into())
    );
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(problem(ready).await, (503, "unavailable".into()));
    assert_eq!(seat_status(&app, schedule, 3).await, "AVAILABLE");
    assert_eq!(seats(&app, schedule, "").await.len(), 50);
}

// ---- contention ---------------------------------------------------------------

/// 200 users reserve one seat at once: exactly one 201, every other answer
/// a 409 with a contract code, and one live reservation in the database.
async fn one_seat_two_hundred_users(strategy: &'static str) {
    let app = Arc::new(spawn_app_with(AppConfig::seats(strategy)).await);
    let (_, schedule) = app.seed_schedule(500).await;
    let outcomes = concurrently(200, |i| {
        let app = app.clone();
        async move {
            let user = i as u64 + 1;
            let response = app.reserve(user, schedule, 1).await;
            if response.status() == StatusCode::CREATED {
                let body: Value = response.json().await.unwrap();
                (201, format!("{user}:{}", body["id"]))
            } else {
                problem(response).await
            }
        }
    })
    .await;
    let mut by_code: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for (status, code) in &outcomes {
        let code = if *status == 201 {
            "created".to_owned()
        } else {
            code.clone()
        };
        *by_code.entry((*status, code)).or_default() += 1;
    }
    eprintln!("{strategy}: {by_code:?}");
    let winners: Vec<_> = outcomes.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(winners.len(), 1, "{strategy}: {by_code:?}");
    let allowed: HashSet<&str> = ["seat-unavailable", "lock-timeout", "concurrent-update"].into();
    for (status, code) in outcomes.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{strategy}: {by_code:?}");
        assert!(allowed.contains(code.as_str()), "{strategy}: {by_code:?}");
    }

    let (user, id) = winners[0].1.split_once(':').unwrap();
    let user: u64 = user.parse().unwrap();
    let path = format!("/api/v1/reservations/{id}");
    let read = json_ok(app.get_as(user, &path).send().await.unwrap()).await;
    assert_eq!(
        (read["status"].as_str(), read["userId"].as_u64()),
        (Some("HELD"), Some(user))
    );
    assert_eq!(seat_status(&app, schedule, 1).await, "HELD");
    assert_eq!(
        app.db
            .sql
            .live_reservations(schedule, SeatNumber::new(1).unwrap())
            .await
            .unwrap(),
        1,
        "{strategy}"
    );
    assert_consistent(&app.db.db).await;
}

/// Under every strategy the test app runs on its one Redis: all of the
/// registry but RedLock (its own masters) and the queue (`queue.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seat_200_users() {
    let strategies = concert_app::strategies::all()
        .filter(|s| !s.seats_only() && s.lock_at() != Some(LockAt::RedLock));
    for strategy in strategies {
        one_seat_two_hundred_users(strategy.as_str()).await;
    }
}

/// One user holds 100 seats of 500 (two schedules of 50) and pays them all
/// at once from `balance`. Returns the app, the schedules and the answers.
async fn pay_100_seats_at_once(
    balance: u64,
) -> (Arc<TestApp>, [ScheduleId; 2], Vec<(u16, String)>) {
    let app = Arc::new(spawn_app().await);
    let (_, first) = app.seed_schedule(500).await;
    let (_, second) = app.seed_schedule(500).await;
    let user = 77;
    app.set_balance(user, balance).await;
    let mut ids = Vec::new();
    for schedule in [first, second] {
        for seat in 1..=50 {
            ids.push(
                reserved(&app, user, schedule, seat).await["id"]
                    .as_u64()
                    .unwrap(),
            );
        }
    }
    let outcomes = concurrently(ids.len(), |i| {
        let app = app.clone();
        let id = ids[i];
        async move {
            let response = app.pay(user, id).await;
            if response.status() == StatusCode::CREATED {
                let body: Value = response.json().await.unwrap();
                assert_eq!(
                    (body["reservationId"].as_u64(), body["amount"].as_u64()),
                    (Some(id), Some(500))
                );
                (201, String::new())
            } else {
                problem(response).await
            }
        }
    })
    .await;
    (app, [first, second], outcomes)
}

async fn sold_seats(app: &TestApp, schedules: [ScheduleId; 2]) -> usize {
    let mut sold = 0;
    for schedule in schedules {
        sold += seats(app, schedule, "?status=SOLD").await.len();
    }
    sold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_pays_100_seats_concurrently() {
    let (app, schedules, outcomes) = pay_100_seats_at_once(100_000).await;
    assert!(outcomes.iter().all(|(s, _)| *s == 201), "{outcomes:?}");
    assert_eq!(app.balance(77).await, 50_000);
    assert_eq!(sold_seats(&app, schedules).await, 100);
    let db = &app.db.sql;
    assert_eq!(db.payment_count().await.unwrap(), 100);
    assert_eq!(db.sold_seats_without_payment().await.unwrap(), 0);
    let history = json_ok(
        app.get_as(77, "/api/v1/points/history")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let uses: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "USE")
        .map(|h| h["balanceAfter"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (0..100).map(|i| 50_000 + 500 * i).collect();
    assert_eq!(
        uses, expected,
        "newest first, one per payment, running balance"
    );
    assert_consistent(&app.db.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_stop_exactly_when_the_points_run_out() {
    let (app, schedules, outcomes) = pay_100_seats_at_once(10_000).await;
    let paid = outcomes.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(paid, 20, "{outcomes:?}");
    for (status, code) in outcomes.iter().filter(|(s, _)| *s != 201) {
        assert_eq!((*status, code.as_str()), (409, "insufficient-points"));
    }
    assert_eq!(app.balance(77).await, 0);
    // no seat sold without a payment
    assert_eq!(sold_seats(&app, schedules).await, 20);
    let db = &app.db.sql;
    assert_eq!(db.payment_count().await.unwrap(), 20);
    assert_eq!(db.sold_seats_without_payment().await.unwrap(), 0);
    let history = json_ok(
        app.get_as(77, "/api/v1/points/history")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let uses = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "USE")
        .count();
    assert_eq!(uses, 20);
    assert_consistent(&app.db.db).await;
}
