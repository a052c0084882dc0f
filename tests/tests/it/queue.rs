//! The `queue` seat strategy on real MariaDB and Redis: app instances
//! submit to the partition streams, one fenced consumer per partition
//! applies them; exactly one winner across instances, a killed holder
//! replaced mid-stream without double booking, 202 and polling when the
//! reply budget is short, requests visible to their owner only, and
//! partition tokens that outrank the seat locks' tokens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use concert_domain::{Control, LockOptions, ReserveSeat, SeatNumber, UserId};
use concert_locking::Ordered;
use concert_redis::{RedisLockSettings, RedisLocks};
use concert_tests::app::redis_url;
use concert_tests::db::concurrently;
use concert_tests::queue::{Gate, Instance, QueueWorld};
use reqwest::header;
use serde_json::{Value, json};

fn seat(n: u8) -> SeatNumber {
    SeatNumber::new(i64::from(n)).unwrap()
}

/// Waits until `consumers` hold every partition (the default 8).
async fn holding_all(consumers: &concert_redis::Consumers) {
    for _ in 0..200 {
        if consumers.held().len() == 8 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the consumers hold {:?}", consumers.held());
}

/// A 202: returns the request's Location, after checking the body and
/// headers.
async fn accepted(response: reqwest::Response) -> String {
    assert_eq!(response.status().as_u16(), 202);
    let location = response
        .headers()
        .get(header::LOCATION)
        .expect("a Location")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["requestId"].as_str().unwrap();
    assert_eq!(body, json!({"requestId": id, "status": "PENDING"}));
    assert_eq!(location, format!("/api/v1/reservation-requests/{id}"));
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_among_1000_racers_across_two_instances() {
    let world = QueueWorld::new(Duration::from_secs(3)).await;
    let schedule = world.db.schedule(500).await;
    let a = Arc::new(world.instance(Duration::from_secs(60)).await);
    let b = Arc::new(world.instance(Duration::from_secs(60)).await);
    let outcomes = concurrently(1000, |i| {
        let instance: Arc<Instance> = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            let response = instance.reserve(i as u64 + 1, schedule.get(), 1).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["code"].as_str().unwrap_or("created").to_owned();
            (status, code, i % 2)
        }
    })
    .await;
    let mut by: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for (status, code, _) in &outcomes {
        *by.entry((*status, code.clone())).or_default() += 1;
    }
    assert_eq!(
        by,
        BTreeMap::from([
            ((201, "created".to_owned()), 1),
            ((409, "seat-unavailable".to_owned()), 999),
        ])
    );
    // both instances answered their half
    for half in [0, 1] {
        assert_eq!(outcomes.iter().filter(|o| o.2 == half).count(), 500);
    }
    let sql = &world.db.sql;
    assert_eq!(sql.live_reservations(schedule, seat(1)).await.unwrap(), 1);
    assert_eq!(
        sql.reservations_of_seat(schedule, seat(1))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_partition_holder_is_replaced_mid_stream_without_double_booking() {
    let world = QueueWorld::new(Duration::from_millis(1000)).await;
    let schedule = world.db.schedule(500).await;
    // The doomed consumer takes every partition first; it will decide nine
    // requests and die inside the batch holding the ninth (user 105's
    // request for seat 5: a hold committed, never answered).
    let gate = Arc::new(Gate::new(world.applier(), 9));
    let doomed = world.consumers(gate.clone()).await;
    holding_all(&doomed).await;
    // An instance that answers every request 202 (reply budget 0), so the
    // arrival order is the order the requests are sent in.
    let app = world.instance(Duration::ZERO).await;
    let mut requests = Vec::new();
    for n in 1..=20u8 {
        for user in [100 + u64::from(n), 200 + u64::from(n)] {
            let location = accepted(app.reserve(user, schedule.get(), n).await).await;
            requests.push((user, n, location));
        }
    }
    tokio::time::timeout(Duration::from_secs(30), gate.reached.notified())
        .await
        .expect("the doomed consumer decided nine requests");
    doomed.kill();

    // Its lease runs out, the app's consumers take the partition over and
    // decide everything, the hold decided but never answered included,
    // once: user 105 gets the hold the dead holder made for it.
    let mut winners = BTreeMap::new();
    for (user, n, location) in &requests {
        let body = app
            .poll_done(*user, location, Duration::from_secs(30))
            .await;
        if *user < 200 {
            let r = &body["reservation"];
            assert_eq!(
                (
                    r["userId"].as_u64(),
                    r["seatNumber"].as_u64(),
                    r["status"].as_str()
                ),
                (Some(*user), Some(u64::from(*n)), Some("HELD")),
                "{body}"
            );
            winners.insert(*n, r["id"].as_u64().unwrap());
        } else {
            let problem = &body["problem"];
            assert_eq!(
                (&problem["code"], &problem["unavailableSeats"]),
                (&json!("seat-unavailable"), &json!([n])),
                "{body}"
            );
        }
    }
    let sql = &world.db.sql;
    let mut tokens = Vec::new();
    for n in 1..=20u8 {
        let stored = sql.reservations_of_seat(schedule, seat(n)).await.unwrap();
        assert_eq!(stored.len(), 1, "seat {n}: one reservation, never two");
        assert_eq!(stored[0].id.get(), winners[&n], "seat {n}");
        assert_eq!(stored[0].user, UserId::from(100 + u64::from(n)));
        assert_eq!(sql.live_reservations(schedule, seat(n)).await.unwrap(), 1);
        tokens.push(sql.seat_fence_token(schedule, seat(n)).await.unwrap());
    }
    // seats 1-5 were written by the dead holder's tenure, 6-20 by its
    // successor, whose token is larger
    let (dead, successor) = tokens.split_at(5);
    assert!(dead.iter().all(|t| *t == dead[0]), "{tokens:?}");
    assert!(successor.iter().all(|t| *t == successor[0]), "{tokens:?}");
    assert!(successor[0] > dead[0], "{tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_reply_budget_answers_202_and_only_the_owner_polls_the_outcome() {
    let world = QueueWorld::new(Duration::from_millis(1000)).await;
    let schedule = world.db.schedule(500).await;
    // Consumers that hold every partition and apply nothing, for now.
    let gate = Arc::new(Gate::new(world.applier(), 0));
    let blocker = world.consumers(gate.clone()).await;
    holding_all(&blocker).await;
    let app = world.instance(Duration::from_millis(300)).await;
    let s = schedule.get();

    let first = accepted(app.reserve(5, s, 7).await).await;
    let response = app.get_as(5, &first).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    for (user, path) in [
        (6, first.clone()),
        (
            5,
            "/api/v1/reservation-requests/0123456789abcdef0123456789abcdef".to_owned(),
        ),
        (5, "/api/v1/reservation-requests/nope".to_owned()),
    ] {
        let response = app.get_as(user, &path).await;
        assert_eq!(response.status().as_u16(), 404, "{user} {path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "not-found");
    }
    let batch = accepted(
        app.post_as(
            6,
            "/api/v1/reservations/batch",
            &json!({"scheduleId": s, "seatNumbers": [8, 7]}),
        )
        .await,
    )
    .await;
    let third = accepted(app.reserve(7, s, 9).await).await;
    assert!(
        world
            .db
            .sql
            .reservations_of_seat(schedule, seat(7))
            .await
            .unwrap()
            .is_empty()
    );

    // The blocking consumers stop (releasing their leases); the app's own
    // take over and apply the three requests in arrival order.
    blocker.stop().await;
    let within = Duration::from_secs(30);
    let done = app.poll_done(5, &first, within).await;
    assert_eq!(
        (
            &done["reservation"]["userId"],
            &done["reservation"]["seatNumber"]
        ),
        (&json!(5), &json!(7))
    );
    let refused = app.poll_done(6, &batch, within).await;
    assert_eq!(
        (
            &refused["problem"]["status"],
            &refused["problem"]["code"],
            &refused["problem"]["unavailableSeats"]
        ),
        (&json!(409), &json!("seat-unavailable"), &json!([7]))
    );
    let held = app.poll_done(7, &third, within).await;
    assert_eq!(held["reservation"]["seatNumber"], 9);
    let sql = &world.db.sql;
    for (n, expected) in [(7, 1), (8, 0), (9, 1)] {
        let stored = sql.reservations_of_seat(schedule, seat(n)).await.unwrap();
        assert_eq!(stored.len(), expected, "seat {n}");
    }
    // still the owner's only
    let response = app.get_as(6, &first).await;
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_tokens_outrank_the_tokens_of_the_seat_locks() {
    let world = QueueWorld::new(Duration::from_secs(3)).await;
    let schedule = world.db.schedule(500).await;
    // The seat is held first under the Redis pub/sub lock (as under
    // APP_SEAT_STRATEGY=redis-pubsub), which records its lock's token.
    let locks = RedisLocks::connect(&redis_url(), &world.prefix, RedisLockSettings::default())
        .await
        .unwrap();
    let control = Control::locked(
        "redis-pubsub",
        Arc::new(Ordered::plain(locks.pubsub())),
        LockOptions::default(),
    );
    let locked = world.db.seat_services(control, world.clock.clone());
    locked
        .reservations
        .reserve(ReserveSeat {
            user: UserId::from(1),
            schedule,
            seat: seat(3),
        })
        .await
        .unwrap();
    let lock_token = world
        .db
        .sql
        .seat_fence_token(schedule, seat(3))
        .await
        .unwrap();
    assert!(lock_token > 0);
    // The hold ends; the deployment switches to the queue.
    world.clock.advance(Duration::from_secs(300));
    let app = world.instance(Duration::from_secs(30)).await;
    let response = app.reserve(2, schedule.get(), 3).await;
    assert_eq!(response.status().as_u16(), 201);
    let queue_token = world
        .db
        .sql
        .seat_fence_token(schedule, seat(3))
        .await
        .unwrap();
    assert!(queue_token > lock_token, "{queue_token} > {lock_token}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_partition_count_refuses_to_start() {
    let world = QueueWorld::new(Duration::from_secs(3)).await;
    let _first = world.instance(Duration::from_secs(2)).await;
    let mut vars = world.vars(Duration::from_secs(2));
    vars.insert("APP_QUEUE_PARTITIONS", "4".to_owned());
    let refused = Instance::start(vars, &world.secret, world.clock.clone()).await;
    let message = format!("{:#}", refused.err().expect("a second count is refused"));
    assert!(
        message.contains("has 8 partitions") && message.contains("APP_QUEUE_PARTITIONS"),
        "{message}"
    );
}
