//! The event-fed seat map across instances: instance A takes the writes,
//! instance B (no relay, cache entries that never age out) serves seat
//! maps from memory, and follows A's holds, cancels, sales and refunds
//! through the events; expiry needs no event; storage stays the truth for
//! writes.

use std::time::Duration;

use chrono::Utc;
use concert_domain::{ScheduleId, SeatNumber};
use concert_tests::app::{json_ok, problem};
use concert_tests::events::{Deployment, Instance, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn seat_statuses(instance: &Instance, schedule: ScheduleId) -> Vec<String> {
    let response = instance
        .get(&format!("/api/v1/schedules/{schedule}/seats"))
        .send()
        .await
        .unwrap();
    json_ok(response)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn status_of(instance: &Instance, schedule: ScheduleId, seat: usize) -> String {
    seat_statuses(instance, schedule).await[seat - 1].clone()
}

/// Waits until `instance` shows `seat` as `wanted`.
async fn shows(instance: &Instance, schedule: ScheduleId, seat: usize, wanted: &str) {
    eventually(&format!("seat {seat} {wanted}"), || async {
        (status_of(instance, schedule, seat).await == wanted).then_some(())
    })
    .await;
}

async fn available_seats(instance: &Instance, concert: u64) -> u64 {
    let response = instance
        .get(&format!("/api/v1/concerts/{concert}/schedules"))
        .send()
        .await
        .unwrap();
    json_ok(response).await[0]["availableSeats"]
        .as_u64()
        .unwrap()
}

async fn created(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seat_map_follows_events_across_instances() {
    let d = Deployment::new().await;
    let never_ages = [("APP_SEAT_CACHE_MAX_AGE_MS", "3600000")];
    let a = d.instance(&never_ages).await;
    let b = d
        .instance(&[
            ("APP_SEAT_CACHE_MAX_AGE_MS", "3600000"),
            ("APP_RELAY", "off"),
        ])
        .await;
    assert!(a.relays && !b.relays);
    let concert = d.db.sql.create_concert("Seat map").await.unwrap();
    let schedule =
        d.db.sql
            .create_schedule(concert, Utc::now() + chrono::Duration::days(10), |_| 500)
            .await
            .unwrap();
    a.cache_live().await;
    let cache = b.cache_live().await;

    // B serves the map from memory: one load, then hits only
    assert_eq!(seat_statuses(&b, schedule).await, vec!["AVAILABLE"; 50]);
    let warm = cache.stats();
    for _ in 0..20 {
        assert_eq!(status_of(&b, schedule, 7).await, "AVAILABLE");
    }
    let after = cache.stats();
    assert_eq!(after.loads, warm.loads, "no storage read for a warm map");
    assert_eq!(after.hits, warm.hits + 20);
    assert_eq!(available_seats(&b, concert.get()).await, 50);

    // a hold on A: A shows it at once (its own commit), B once the event
    // arrives
    let hold = |user: u64, seat: u8| {
        a.post(
            user,
            "/api/v1/reservations",
            json!({"scheduleId": schedule.get(), "seatNumber": seat}),
        )
        .send()
    };
    let r7 = created(hold(1, 7).await.unwrap()).await["id"].clone();
    assert_eq!(status_of(&a, schedule, 7).await, "HELD");
    shows(&b, schedule, 7, "HELD").await;
    assert_eq!(available_seats(&b, concert.get()).await, 49);

    // a cancel
    let cancelled = a
        .delete(1, &format!("/api/v1/reservations/{r7}"))
        .send()
        .await
        .unwrap();
    json_ok(cancelled).await;
    shows(&b, schedule, 7, "AVAILABLE").await;

    // a sale
    json_ok(
        a.post(2, "/api/v1/points/charge", json!({"amount": 500}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let r8 = created(hold(2, 8).await.unwrap()).await["id"].clone();
    let payment = created(
        a.post(2, "/api/v1/payments", json!({"reservationId": r8}))
            .send()
            .await
            .unwrap(),
    )
    .await["id"]
        .clone();
    shows(&b, schedule, 8, "SOLD").await;

    // an expiry shows without any event: the hold's end is in the map
    created(hold(3, 9).await.unwrap()).await;
    shows(&b, schedule, 9, "HELD").await;
    d.clock.advance(Duration::from_secs(301));
    assert_eq!(status_of(&b, schedule, 9).await, "AVAILABLE");

    // a refund
    json_ok(
        a.post(2, &format!("/api/v1/payments/{payment}/refund"), json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    shows(&b, schedule, 8, "AVAILABLE").await;

    // B consumed all six reservation events (its only invalidations: it
    // made no write itself), and was live throughout
    eventually("B consumed every event", || async {
        (cache.stats().invalidations >= 6).then_some(())
    })
    .await;
    assert!(cache.is_live());
    assert_eq!(status_of(&b, schedule, 20).await, "AVAILABLE");

    // storage stays the truth for writes: a seat sold behind the cache's
    // back (no event) still reads AVAILABLE on B, but B refuses to hold it
    d.db.sql
        .set_seat_status(schedule, SeatNumber::new(20).unwrap(), "SOLD")
        .await
        .unwrap();
    assert_eq!(status_of(&b, schedule, 20).await, "AVAILABLE");
    let refused = b
        .post(
            4,
            "/api/v1/reservations",
            json!({"scheduleId": schedule.get(), "seatNumber": 20}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(problem(refused).await, (409, "seat-unavailable".into()));
}

/// Without the cache (`APP_SEAT_CACHE=off`) every read goes to storage, as
/// before: a change made behind the service's back shows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_reads_go_to_storage() {
    let d = Deployment::new().await;
    let app = d.instance(&[("APP_SEAT_CACHE", "off")]).await;
    assert!(app.seat_cache.is_none());
    let concert = d.db.sql.create_concert("No cache").await.unwrap();
    let schedule =
        d.db.sql
            .create_schedule(concert, Utc::now() + chrono::Duration::days(10), |_| 500)
            .await
            .unwrap();
    assert_eq!(status_of(&app, schedule, 20).await, "AVAILABLE");
    d.db.sql
        .set_seat_status(schedule, SeatNumber::new(20).unwrap(), "SOLD")
        .await
        .unwrap();
    assert_eq!(status_of(&app, schedule, 20).await, "SOLD");
}
