//! Events end to end: what the API's state changes publish once the relay
//! runs (exactly, payloads as `docs/events.md` documents them), an
//! instance with the relay off, and `app events tail` / `status`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use concert_app::events::commands;
use concert_domain::Stream;
use concert_testkit::OutboxEvent;
use concert_tests::app::{AppConfig, TestApp, json_ok, problem, spawn_app_with};
use concert_tests::events::Deployment;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn at(t: DateTime<Utc>) -> Value {
    serde_json::to_value(t).unwrap()
}

async fn created(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// The outbox of `app` once every event is published.
async fn published(app: &TestApp, count: usize) -> Vec<OutboxEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = app.db.sql.outbox().await.unwrap();
        if rows.len() >= count && rows.iter().all(|r| r.published_at.is_some()) {
            assert_eq!(rows.len(), count, "more events than the changes made");
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} events published",
            rows.iter().filter(|r| r.published_at.is_some()).count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every API state change publishes exactly its events, with the payloads
/// of the contract; refused requests publish nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_change_publishes_exactly_its_events() {
    let app = spawn_app_with(AppConfig::default()).await;
    let clock = app.clock.clone().unwrap();
    let t0 = concert_domain::Clock::now(&clock);
    let concert = app.db.sql.create_concert("Events").await.unwrap();
    let schedule = app
        .db
        .sql
        .create_schedule(concert, Utc::now() + chrono::Duration::days(10), |_| 500)
        .await
        .unwrap();
    let s = schedule.get();

    // user 1 charges, holds seat 1, pays
    json_ok(app.charge(1, 1_000).await).await;
    let r1 = created(app.reserve(1, schedule, 1).await).await["id"].clone();
    let p1 = created(app.pay(1, r1.as_u64().unwrap()).await).await["id"].clone();
    // refused: nothing published
    assert_eq!(problem(app.reserve(2, schedule, 1).await).await.0, 409);
    assert_eq!(problem(app.pay(2, r1.as_u64().unwrap()).await).await.0, 404);
    // user 2 holds seats 2 and 3, cancels 2, cannot pay 3
    let batch: Value = created(
        app.post_as(
            2,
            "/api/v1/reservations/batch",
            &json!({"scheduleId": s, "seatNumbers": [2, 3]}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let (r2, r3) = (batch[0]["id"].clone(), batch[1]["id"].clone());
    let cancel = app
        .client
        .delete(app.url(&format!("/api/v1/reservations/{r2}")))
        .bearer_auth(app.token_for(2))
        .send()
        .await
        .unwrap();
    json_ok(cancel).await;
    assert_eq!(
        problem(app.pay(2, r3.as_u64().unwrap()).await).await,
        (409, "insufficient-points".into())
    );
    // user 2's hold on seat 3 ends; user 3 takes the seat over
    clock.advance(Duration::from_secs(301));
    let t1 = t0 + chrono::Duration::seconds(301);
    let r4 = created(app.reserve(3, schedule, 3).await).await["id"].clone();
    // user 1 is refunded
    json_ok(
        app.post_as(1, &format!("/api/v1/payments/{p1}/refund"), &json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    let held = |r: &Value, seat: u8, user: u64, when: DateTime<Utc>| {
        json!({
            "reservationId": r, "scheduleId": s, "seatNumber": seat, "userId": user,
            "amount": 500, "expiresAt": at(when + chrono::Duration::seconds(300)),
            "occurredAt": at(when),
        })
    };
    let of_reservation = |r: &Value, seat: u8, user: u64, when: DateTime<Utc>| {
        json!({
            "reservationId": r, "scheduleId": s, "seatNumber": seat, "userId": user,
            "occurredAt": at(when),
        })
    };
    let paid = |when: DateTime<Utc>| {
        json!({
            "reservationId": r1, "scheduleId": s, "seatNumber": 1, "userId": 1,
            "paymentId": p1, "amount": 500, "occurredAt": at(when),
        })
    };
    let points = |amount: u64, balance: u64, payment: Option<&Value>, when: DateTime<Utc>| {
        let mut p = json!({
            "userId": 1, "amount": amount, "balanceAfter": balance, "occurredAt": at(when),
        });
        if let Some(payment) = payment {
            p["paymentId"] = payment.clone();
        }
        p
    };
    let expected: Vec<(Stream, &str, Value)> = vec![
        (Stream::Reservations, "SeatHeld", held(&r1, 1, 1, t0)),
        (Stream::Reservations, "ReservationConfirmed", paid(t0)),
        (Stream::Reservations, "SeatHeld", held(&r2, 2, 2, t0)),
        (Stream::Reservations, "SeatHeld", held(&r3, 3, 2, t0)),
        (
            Stream::Reservations,
            "HoldCancelled",
            of_reservation(&r2, 2, 2, t0),
        ),
        (
            Stream::Reservations,
            "HoldExpired",
            of_reservation(&r3, 3, 2, t1),
        ),
        (Stream::Reservations, "SeatHeld", held(&r4, 3, 3, t1)),
        (Stream::Reservations, "ReservationRefunded", paid(t1)),
        (
            Stream::Points,
            "PointsCharged",
            points(1_000, 1_000, None, t0),
        ),
        (
            Stream::Points,
            "PointsUsed",
            points(500, 500, Some(&p1), t0),
        ),
        (
            Stream::Points,
            "PointsRefunded",
            points(500, 1_000, Some(&p1), t1),
        ),
        (Stream::Payments, "PaymentCompleted", paid(t0)),
        (Stream::Payments, "PaymentRefunded", paid(t1)),
    ];

    let outbox = published(&app, expected.len()).await;
    let streams = concert_redis::RedisStreams::new(
        &app.redis_url,
        &app.redis_prefix,
        concert_redis::StreamSettings::default(),
    )
    .unwrap();
    let mut got = Vec::new();
    for stream in Stream::ALL {
        for entry in streams.range(stream).await.unwrap() {
            let payload: Value = serde_json::from_str(&entry.payload).unwrap();
            got.push((entry.stream, entry.kind.clone(), payload, entry.id.clone()));
        }
    }
    let shape: Vec<(Stream, &str, Value)> = got
        .iter()
        .map(|(s, k, p, _)| (*s, k.as_str(), p.clone()))
        .collect();
    assert_eq!(shape, expected);
    // one entry per outbox event, under its id, ids unique
    let ids: BTreeSet<&str> = got.iter().map(|(_, _, _, id)| id.as_str()).collect();
    assert_eq!(ids.len(), expected.len());
    let outbox_ids: BTreeSet<&str> = outbox.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, outbox_ids);
}

/// With `APP_RELAY=off` an instance records events but runs no relay; an
/// instance with the relay on publishes them (the outbox kept them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_the_relay_off_publishes_nothing_another_one_does() {
    let deployment = Deployment::new().await;
    let quiet = deployment.instance(&[("APP_RELAY", "off")]).await;
    assert!(!quiet.relays);
    let response = quiet
        .post(1, "/api/v1/points/charge", json!({"amount": 700}))
        .send()
        .await
        .unwrap();
    json_ok(response).await;
    let rows = deployment.db.sql.outbox().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].published_at, None);
    let settings = deployment.settings(&[]);
    let status = commands::status(&settings).await.unwrap();
    assert_eq!(status.backlog.unpublished, 1);
    assert_eq!(status.retained, 0);
    let printed = status.to_string();
    assert!(printed.contains("unpublished      1"), "{printed}");

    let relaying = deployment.instance(&[]).await;
    assert!(relaying.relays);
    let rows = deployment.published(1).await;
    let entries = deployment.entries().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].id.as_str(), entries[0].kind.as_str()),
        (rows[0].event_id.as_str(), "PointsCharged")
    );
    let status = commands::status(&settings).await.unwrap();
    assert_eq!((status.backlog.unpublished, status.retained), (0, 1));
    let points = status
        .streams
        .unwrap()
        .into_iter()
        .find(|s| s.stream == Stream::Points)
        .unwrap();
    assert_eq!(points.length, 1);
}

/// `app events tail` prints each published event as one JSON line, in
/// order per stream, and `--stream` keeps to one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_events_as_json_lines() {
    let deployment = Deployment::new().await;
    let app = deployment.instance(&[]).await;
    let settings = deployment.settings(&[]);
    let all = tokio::spawn({
        let settings = settings.clone();
        async move {
            let mut out = Vec::new();
            commands::tail(&settings, &Stream::ALL, true, Some(3), &mut out)
                .await
                .unwrap();
            String::from_utf8(out).unwrap()
        }
    });
    let points_only = tokio::spawn({
        let settings = settings.clone();
        async move {
            let mut out = Vec::new();
            commands::tail(&settings, &[Stream::Points], true, Some(2), &mut out)
                .await
                .unwrap();
            String::from_utf8(out).unwrap()
        }
    });
    let concert = deployment.db.sql.create_concert("Tail").await.unwrap();
    let schedule = deployment
        .db
        .sql
        .create_schedule(concert, Utc::now() + chrono::Duration::days(3), |_| 100)
        .await
        .unwrap();
    for amount in [300, 400] {
        let response = app
            .post(5, "/api/v1/points/charge", json!({"amount": amount}))
            .send()
            .await
            .unwrap();
        json_ok(response).await;
    }
    let response = app
        .post(
            5,
            "/api/v1/reservations",
            json!({"scheduleId": schedule.get(), "seatNumber": 4}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let within = Duration::from_secs(30);
    let all = tokio::time::timeout(within, all).await.unwrap().unwrap();
    let points_only = tokio::time::timeout(within, points_only)
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut kinds: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_owned(),
                l["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("points".to_owned(), "PointsCharged".to_owned()),
            ("points".to_owned(), "PointsCharged".to_owned()),
            ("reservations".to_owned(), "SeatHeld".to_owned()),
        ]
    );
    let charged: Vec<u64> = lines
        .iter()
        .filter(|l| l["stream"] == "points")
        .map(|l| l["payload"]["amount"].as_u64().unwrap())
        .collect();
    assert_eq!(charged, [300, 400]);
    let points: Vec<Value> = points_only
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(points.len(), 2);
    assert!(points.iter().all(|l| l["stream"] == "points"));
    assert_eq!(points[1]["payload"]["balanceAfter"], 700);
    // the lines name the events the outbox recorded
    let outbox = deployment.published(3).await;
    let ids: BTreeSet<&str> = outbox.iter().map(|r| r.event_id.as_str()).collect();
    for line in &lines {
        assert!(ids.contains(line["id"].as_str().unwrap()));
    }
}
