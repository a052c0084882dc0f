//! Changing one's mind and buying together, end to end on real MariaDB and
//! Redis: cancelling a hold, several seats in one request, the hold limit;
//! each with its races, and the audit after every race.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use concert_domain::{ScheduleId, SeatNumber, UserId};
use concert_tests::app::{AppConfig, TestApp, json_ok, spawn_app, spawn_app_with};
use concert_tests::audit::assert_consistent;
use concert_tests::calls::Answer;
use concert_tests::db::concurrently;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn answer(response: reqwest::Response) -> Answer {
    Answer::read(response).await
}

/// How many events of `kind` the outbox holds.
async fn events(app: &TestApp, kind: &str) -> usize {
    let all = app.db.sql.outbox().await.expect("outbox");
    all.iter().filter(|e| e.event_type == kind).count()
}

fn seat(n: u8) -> SeatNumber {
    SeatNumber::new(i64::from(n)).unwrap()
}

// ---- cancel ----------------------------------------------------------------

#[tokio::test]
async fn a_cancelled_hold_frees_the_seat_at_once_and_repeats_change_nothing() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let id = app.hold(3, schedule, 7).await;

    let cancelled = answer(app.cancel(3, id).await).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let body = cancelled.body;
    assert_eq!(body["id"], id);
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(body["seatNumber"], 7);
    assert_eq!(body["userId"], 3);
    assert!(body["expiresAt"].is_null(), "{body}");
    assert_eq!(app.seat_status_of(schedule, 7).await, "AVAILABLE");
    // deleted: no longer a resource of its own (404, as after any DELETE),
    // but in the owner's list as CANCELLED
    let gone = answer(
        app.get_as(3, &format!("/api/v1/reservations/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (gone.status, gone.body["code"].as_str()),
        (404, Some("not-found"))
    );
    let listed = app
        .read_as(3, "/api/v1/reservations?status=CANCELLED")
        .await;
    assert_eq!(listed, json!([body.clone()]));

    // again: the same answer, nothing moves
    let again = answer(app.cancel(3, id).await).await;
    assert_eq!((again.status, &again.body), (200, &body));
    assert_eq!(events(&app, "HoldCancelled").await, 1);

    // somebody else takes the seat at once
    let theirs = app.hold(4, schedule, 7).await;
    assert_eq!(app.seat_status_of(schedule, 7).await, "HELD");
    // and the old reservation stays cancelled
    let again = answer(app.cancel(3, id).await).await;
    assert_eq!((again.status, &again.body), (200, &body));
    assert_eq!(
        app.db
            .sql
            .live_reservations(schedule, seat(7))
            .await
            .unwrap(),
        1
    );
    assert_ne!(theirs, id);
    assert_consistent(&app.db.db).await;
}

#[tokio::test]
async fn cancel_answers_every_error_of_the_contract_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let held = app.hold(3, schedule, 1).await;
    let (paid, _) = app.bought(3, schedule, 2, 500).await;

    // somebody else's, or unknown: 404 (never revealed)
    assert_eq!(
        answer(app.cancel(4, held).await).await.outcome(),
        (404, "not-found")
    );
    assert_eq!(
        answer(app.cancel(3, 999_999).await).await.outcome(),
        (404, "not-found")
    );
    // no token: 401
    let anonymous = app
        .client
        .delete(app.url(&format!("/api/v1/reservations/{held}")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(anonymous).await.outcome(), (401, "unauthorized"));
    // a bad id: 400
    for bad in ["0", "-1", "abc"] {
        let response = app
            .call_as(3, Method::DELETE, &format!("/api/v1/reservations/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer(response).await.outcome(),
            (400, "validation"),
            "{bad}"
        );
    }
    // paid: refund instead
    assert_eq!(
        answer(app.cancel(3, paid).await).await.outcome(),
        (409, "already-paid")
    );
    assert_eq!(app.seat_status_of(schedule, 2).await, "SOLD");
    assert_eq!(app.balance(3).await, 0);
    // ended: 410
    app.advance(Duration::from_secs(300));
    assert_eq!(
        answer(app.cancel(3, held).await).await.outcome(),
        (410, "reservation-expired")
    );
    assert_eq!(events(&app, "HoldCancelled").await, 0);
    let read = app
        .read_as(3, &format!("/api/v1/reservations/{held}"))
        .await;
    assert_eq!(read["status"], "EXPIRED");
    assert_consistent(&app.db.db).await;
}

/// 100 concurrent cancels of one hold: every answer is the cancelled
/// reservation, and exactly one state change happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_cancels_change_the_hold_once() {
    let app = Arc::new(spawn_app().await);
    let (_, schedule) = app.seed_schedule(500).await;
    let id = app.hold(8, schedule, 20).await;
    let answers = concurrently(100, |_| {
        let app = app.clone();
        async move { answer(app.cancel(8, id).await).await }
    })
    .await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["status"], "CANCELLED");
        assert_eq!(a.body, answers[0].body);
    }
    assert_eq!(events(&app, "HoldCancelled").await, 1);
    assert_eq!(app.seat_status_of(schedule, 20).await, "AVAILABLE");
    assert_eq!(
        app.db
            .sql
            .live_reservations(schedule, seat(20))
            .await
            .unwrap(),
        0
    );
    assert_consistent(&app.db.db).await;
}

/// Paying and cancelling one hold at once: exactly one of them wins, and
/// the balance says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_and_cancelling_at_once_change_the_hold_once() {
    let app = Arc::new(spawn_app().await);
    let (_, schedule) = app.seed_schedule(700).await;
    json_ok(app.charge(5, 1000).await).await;
    let id = app.hold(5, schedule, 9).await;
    let answers = concurrently(100, |i| {
        let app = app.clone();
        async move {
            if i % 2 == 0 {
                ("pay", answer(app.pay(5, id).await).await)
            } else {
                ("cancel", answer(app.cancel(5, id).await).await)
            }
        }
    })
    .await;
    let mut tally: BTreeMap<(&str, u16, String), usize> = BTreeMap::new();
    for (what, a) in &answers {
        *tally.entry((what, a.status, a.code.clone())).or_default() += 1;
    }
    let paid = tally
        .get(&("pay", 201, String::new()))
        .copied()
        .unwrap_or(0);
    let cancelled = tally
        .get(&("cancel", 200, String::new()))
        .copied()
        .unwrap_or(0);
    // every other answer is one of the contract's refusals
    for (what, status, code) in tally.keys() {
        let allowed = matches!(
            (*what, *status, code.as_str()),
            ("pay", 201, "")
                | ("pay", 409, "already-paid")
                | ("cancel", 200, "")
                | ("cancel", 409, "already-paid")
        );
        assert!(allowed, "{what} answered {status} {code}: {tally:?}");
    }
    let mine = app.read_as(5, "/api/v1/reservations").await;
    let read = mine
        .as_array()
        .and_then(|all| all.iter().find(|r| r["id"] == json!(id)))
        .cloned()
        .expect("the reservation is in the owner's list");
    if paid == 1 {
        assert_eq!(cancelled, 0, "{tally:?}");
        assert_eq!(read["status"], "CONFIRMED");
        assert_eq!(app.balance(5).await, 300);
        assert_eq!(app.seat_status_of(schedule, 9).await, "SOLD");
    } else {
        assert_eq!(paid, 0, "{tally:?}");
        assert!(cancelled >= 1, "{tally:?}");
        assert_eq!(read["status"], "CANCELLED");
        assert_eq!(app.balance(5).await, 1000);
        assert_eq!(app.seat_status_of(schedule, 9).await, "AVAILABLE");
    }
    assert_eq!(
        events(&app, "ReservationConfirmed").await + events(&app, "HoldCancelled").await,
        1
    );
    assert_consistent(&app.db.db).await;
}

// ---- several seats ----------------------------------------------------------

#[tokio::test]
async fn a_batch_holds_every_seat_in_seat_order() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let response = app.reserve_batch(6, schedule, &[9, 2, 5]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let held: Value = response.json().await.unwrap();
    let held = held.as_array().expect("a list");
    let numbers: Vec<_> = held
        .iter()
        .map(|r| r["seatNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 5, 9]);
    for r in held {
        assert_eq!(r["status"], "HELD");
        assert_eq!(r["userId"], 6);
        assert_eq!(r["scheduleId"], schedule.get());
        assert_eq!(r["price"], 500);
        assert!(r["expiresAt"].is_string());
        let read = app
            .read_as(6, &format!("/api/v1/reservations/{}", r["id"]))
            .await;
        assert_eq!(&read, r);
    }
    for n in [2, 5, 9] {
        assert_eq!(app.seat_status_of(schedule, n).await, "HELD");
    }
    assert_eq!(events(&app, "SeatHeld").await, 3);
    // each one pays and cancels on its own
    json_ok(app.charge(6, 500).await).await;
    app.paid(6, held[0]["id"].as_u64().unwrap()).await;
    assert_eq!(
        answer(app.cancel(6, held[1]["id"].as_u64().unwrap()).await)
            .await
            .status,
        200
    );
    assert_consistent(&app.db.db).await;
}

#[tokio::test]
async fn a_batch_answers_every_error_of_the_contract_and_holds_nothing() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    app.hold(1, schedule, 5).await;
    app.bought(2, schedule, 9, 500).await;
    let before = app.db.sql.outbox_count().await.unwrap();

    // taken seats: 409 naming them, nothing held
    let taken = answer(app.reserve_batch(3, schedule, &[4, 5, 9, 10]).await).await;
    assert_eq!(taken.outcome(), (409, "seat-unavailable"));
    assert_eq!(taken.body["unavailableSeats"], json!([5, 9]));
    // invalid lists: 400
    let s = schedule.get();
    let invalid = [
        json!({"scheduleId": s, "seatNumbers": []}),
        json!({"scheduleId": s, "seatNumbers": [1, 2, 3, 4, 6]}),
        json!({"scheduleId": s, "seatNumbers": [1, 1]}),
        json!({"scheduleId": s, "seatNumbers": [0, 1]}),
        json!({"scheduleId": s, "seatNumbers": [1, 51]}),
        json!({"scheduleId": s, "seatNumbers": ["1"]}),
        json!({"scheduleId": s}),
        json!({"seatNumbers": [1]}),
        json!({"scheduleId": 0, "seatNumbers": [1]}),
    ];
    for body in invalid {
        let response = app
            .post_as(3, "/api/v1/reservations/batch", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer(response).await.outcome(),
            (400, "validation"),
            "{body}"
        );
    }
    // unknown schedule: 404
    assert_eq!(
        answer(app.reserve_batch(3, ScheduleId::from(999_999), &[1]).await)
            .await
            .outcome(),
        (404, "not-found")
    );
    // no token: 401
    let anonymous = app
        .client
        .post(app.url("/api/v1/reservations/batch"))
        .json(&json!({"scheduleId": s, "seatNumbers": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(anonymous).await.outcome(), (401, "unauthorized"));

    assert_eq!(
        app.db
            .sql
            .reservations_of_user(UserId::from(3))
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.db.sql.outbox_count().await.unwrap(), before);
    for n in [4, 10, 1] {
        assert_eq!(app.seat_status_of(schedule, n).await, "AVAILABLE");
    }
    assert_consistent(&app.db.db).await;
}

/// The group of 4 consecutive seats user `i` asks for: neighbours overlap.
fn group(i: usize) -> [u8; 4] {
    let start = 1 + (i * 7 % 47) as u8;
    [start, start + 1, start + 2, start + 3]
}

/// 200 users race for overlapping groups of 4 seats of one schedule: no
/// seat is held twice, every request is all or nothing, and no deadlock
/// (or anything else) surfaces as a 5xx.
async fn batch_race(strategy: &'static str) {
    let app = Arc::new(spawn_app_with(AppConfig::seats(strategy)).await);
    let (_, schedule) = app.seed_schedule(500).await;
    let answers = concurrently(200, |i| {
        let app = app.clone();
        async move {
            let user = i as u64 + 1;
            (
                user,
                answer(app.reserve_batch(user, schedule, &group(i)).await).await,
            )
        }
    })
    .await;

    let mut winners = Vec::new();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (user, a)) in answers.iter().enumerate() {
        let asked = group(i);
        match a.outcome() {
            (201, _) => {
                let held = a.body.as_array().expect("a list");
                let numbers: Vec<u8> = held
                    .iter()
                    .map(|r| r["seatNumber"].as_u64().unwrap() as u8)
                    .collect();
                assert_eq!(numbers, asked, "{strategy}: user {user}");
                assert!(
                    held.iter()
                        .all(|r| r["userId"] == *user && r["status"] == "HELD")
                );
                winners.push((*user, asked));
            }
            (409, "seat-unavailable") => {
                let named: Vec<u8> = a.body["unavailableSeats"]
                    .as_array()
                    .expect("unavailableSeats")
                    .iter()
                    .map(|n| n.as_u64().unwrap() as u8)
                    .collect();
                assert!(!named.is_empty(), "{strategy}: {}", a.body);
                assert!(
                    named.iter().all(|n| asked.contains(n)),
                    "{strategy}: {}",
                    a.body
                );
                *refusals.entry("seat-unavailable".into()).or_default() += 1;
            }
            (409, code @ ("concurrent-update" | "lock-timeout")) => {
                *refusals.entry(code.to_owned()).or_default() += 1;
            }
            other => panic!("{strategy}: user {user} answered {other:?}: {}", a.body),
        }
    }
    assert!(!winners.is_empty(), "{strategy}: nobody won: {refusals:?}");
    // no seat held twice: the winners' groups are disjoint ...
    let mut taken = BTreeSet::new();
    for (user, seats) in &winners {
        for n in seats {
            assert!(
                taken.insert(*n),
                "{strategy}: seat {n} won twice (user {user})"
            );
        }
    }
    // ... and storage agrees, seat by seat and user by user
    for n in 1..=50u8 {
        let live = app
            .db
            .sql
            .live_reservations(schedule, seat(n))
            .await
            .unwrap();
        assert_eq!(live, u64::from(taken.contains(&n)), "{strategy}: seat {n}");
        let stored = app.db.sql.seat(schedule, seat(n)).await.unwrap().unwrap();
        let holder = winners
            .iter()
            .find(|(_, seats)| seats.contains(&n))
            .map(|(u, _)| UserId::from(*u));
        match stored.state {
            concert_domain::SeatState::Held { by, .. } => {
                assert_eq!(Some(by), holder, "{strategy}: seat {n}")
            }
            concert_domain::SeatState::Available => assert_eq!(holder, None),
            other => panic!("{strategy}: seat {n} is {other:?}"),
        }
    }
    for (user, a) in &answers {
        let stored = app
            .db
            .sql
            .reservations_of_user(UserId::from(*user))
            .await
            .unwrap();
        let expected = if a.status == 201 { 4 } else { 0 };
        assert_eq!(
            stored, expected,
            "{strategy}: user {user} is not all or nothing"
        );
    }
    assert_eq!(events(&app, "SeatHeld").await, 4 * winners.len());
    eprintln!(
        "batch race {strategy}: {} winners, refusals {refusals:?}",
        winners.len()
    );
    assert_consistent(&app.db.db).await;
}

macro_rules! batch_races {
    ($($name:ident: $strategy:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            batch_race($strategy).await;
        }
    )*};
}

batch_races! {
    batch_race_pessimistic: "pessimistic",
    batch_race_atomic: "atomic",
    batch_race_redis_pubsub: "redis-pubsub",
}

// ---- hold limit --------------------------------------------------------------

fn limited(strategy: &'static str, limit: u32) -> AppConfig {
    AppConfig {
        extra: vec![("APP_MAX_HOLDS_PER_USER", limit.to_string())],
        ..AppConfig::seats(strategy)
    }
}

/// 20 concurrent holds of one user, limit 4: exactly 4 succeed.
async fn hold_limit_race(strategy: &'static str) {
    let app = Arc::new(spawn_app_with(limited(strategy, 4)).await);
    let (_, schedule) = app.seed_schedule(500).await;
    let answers = concurrently(20, |i| {
        let app = app.clone();
        async move { answer(app.reserve(7, schedule, i as u8 + 1).await).await }
    })
    .await;
    let mut tally: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for a in &answers {
        *tally.entry((a.status, a.code.clone())).or_default() += 1;
    }
    let expected = BTreeMap::from([((201, String::new()), 4), ((409, "hold-limit".into()), 16)]);
    assert_eq!(tally, expected, "{strategy}");
    assert_eq!(
        app.db
            .sql
            .reservations_of_user(UserId::from(7))
            .await
            .unwrap(),
        4
    );
    let held = app.read_as(7, "/api/v1/reservations?status=HELD").await;
    assert_eq!(held.as_array().unwrap().len(), 4, "{strategy}");
    assert_consistent(&app.db.db).await;
}

macro_rules! hold_limit_races {
    ($($name:ident: $strategy:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            hold_limit_race($strategy).await;
        }
    )*};
}

hold_limit_races! {
    hold_limit_race_pessimistic: "pessimistic",
    hold_limit_race_atomic: "atomic",
    hold_limit_race_optimistic: "optimistic",
    hold_limit_race_redis_pubsub: "redis-pubsub",
}

#[tokio::test]
async fn the_hold_limit_counts_live_holds_per_schedule_and_batches_whole() {
    let app = spawn_app_with(limited("redis-pubsub", 4)).await;
    let (concert, schedule) = app.seed_schedule(500).await;
    let other = app
        .db
        .sql
        .create_schedule(concert, app.now() + chrono::Duration::days(2), |_| 500)
        .await
        .unwrap();
    let first = app.hold(1, schedule, 1).await;
    app.hold(1, schedule, 2).await;
    // a batch that would pass the limit: refused whole
    assert_eq!(
        answer(app.reserve_batch(1, schedule, &[3, 4, 5]).await)
            .await
            .outcome(),
        (409, "hold-limit")
    );
    for n in [3, 4, 5] {
        assert_eq!(app.seat_status_of(schedule, n).await, "AVAILABLE");
    }
    // one that reaches it exactly: held
    assert_eq!(app.reserve_batch(1, schedule, &[3, 4]).await.status(), 201);
    assert_eq!(
        answer(app.reserve(1, schedule, 6).await).await.outcome(),
        (409, "hold-limit")
    );
    // another schedule has its own count, another user too
    app.hold(1, other, 6).await;
    app.hold(2, schedule, 6).await;
    // a cancelled hold no longer counts, nor a paid one
    assert_eq!(answer(app.cancel(1, first).await).await.status, 200);
    let fifth = app.hold(1, schedule, 7).await;
    json_ok(app.charge(1, 500).await).await;
    app.paid(1, fifth).await;
    app.hold(1, schedule, 8).await;
    // nor an ended one
    app.advance(Duration::from_secs(300));
    let batch = app.reserve_batch(1, schedule, &[10, 11, 12, 13]).await;
    assert_eq!(batch.status(), 201);
    assert_consistent(&app.db.db).await;
}
