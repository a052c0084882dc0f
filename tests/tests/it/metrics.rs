//! `GET /metrics` end to end: Prometheus text that parses, counters that
//! move as requests are made, route templates (never ids), and the
//! strategies' own counters.

use std::sync::Arc;
use std::time::Duration;

use concert_domain::{DistributedLock, LockKey, LockOptions, SeatNumber};
use concert_tests::app::{AppConfig, TestApp, json_ok, spawn_app, spawn_app_with};
use concert_tests::calls::Answer;
use concert_tests::db::concurrently;
use concert_tests::prometheus::Exposition;
use concert_tests::redis::redis_url;

/// Scrapes the app: asserts the Prometheus text media type and that the
/// body is well-formed Prometheus text.
async fn scrape(app: &TestApp) -> Exposition {
    let response = app.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    Exposition::parse(&text).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
}

/// The `_count` of histogram `name`'s series with `labels` (0 when absent).
fn histogram_count(scrape: &Exposition, name: &str, labels: &[(&str, &str)]) -> u64 {
    scrape.value(&format!("{name}_count"), labels) as u64
}

fn requests(scrape: &Exposition, method: &str, route: &str, status: &str) -> f64 {
    scrape.value(
        "http_requests_total",
        &[("method", method), ("route", route), ("status", status)],
    )
}

#[tokio::test]
async fn metrics_parse_and_count_requests_by_route_template() {
    let app = spawn_app().await;
    let (_, schedule) = app.seed_schedule(500).await;
    let first = app.hold(1, schedule, 1).await;
    let second = app.hold(1, schedule, 2).await;
    for id in [first, second, first] {
        app.read_as(1, &format!("/api/v1/reservations/{id}")).await;
    }
    let missing = app
        .get_as(1, "/api/v1/reservations/999999")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.get("/api/v1/no-such-thing").send().await.unwrap();

    let before = scrape(&app).await;
    let read = "/api/v1/reservations/{reservationId}";
    assert_eq!(requests(&before, "GET", read, "200"), 3.0);
    assert_eq!(requests(&before, "GET", read, "404"), 1.0);
    assert_eq!(
        requests(&before, "POST", "/api/v1/reservations", "201"),
        2.0
    );
    assert_eq!(requests(&before, "GET", "unmatched", "404"), 1.0);
    assert_eq!(
        histogram_count(
            &before,
            "http_request_duration_seconds",
            &[("method", "GET"), ("route", read), ("status", "200")]
        ),
        3
    );
    // never a raw path: every route label is a template
    for sample in before
        .samples
        .iter()
        .filter(|s| s.name.starts_with("http_"))
    {
        let route = sample.labels.get("route").expect("a route label");
        assert!(
            route == "unmatched" || !route.split('/').any(|part| part.parse::<u64>().is_ok()),
            "a raw path in {sample:?}"
        );
    }
    // the strategies' own counters, the pool and the outbox
    let reserve = [("operation", "reserve"), ("strategy", "redis-pubsub")];
    assert_eq!(before.value("strategy_attempts_total", &reserve), 2.0);
    assert_eq!(histogram_count(&before, "lock_wait_seconds", &reserve), 2);
    assert_eq!(before.value("db_pool_max_connections", &[]), 10.0);
    let in_use = before.value("db_pool_connections_in_use", &[]);
    assert!((0.0..=10.0).contains(&in_use), "{in_use}");
    assert_eq!(before.value("db_pool_waiting_requests", &[]), 0.0);
    assert_eq!(before.find("outbox_backlog_events", &[]).len(), 1);

    // counters move by exactly what was asked
    for _ in 0..3 {
        app.read_as(1, &format!("/api/v1/reservations/{second}"))
            .await;
    }
    let after = scrape(&app).await;
    assert_eq!(requests(&after, "GET", read, "200"), 6.0);
    assert_eq!(requests(&after, "GET", "/metrics", "200"), 1.0);
}

#[tokio::test]
async fn metric_names_follow_prometheus_conventions() {
    let app = spawn_app().await;
    app.get("/api/v1/concerts").send().await.unwrap();
    let scraped = scrape(&app).await;
    let types = &scraped.types;
    assert_eq!(
        types.get("http_requests_total").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        types
            .get("http_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    for (name, kind) in types {
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            _ => assert!(!name.ends_with("_total"), "{name} is a {kind}"),
        }
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{name}"
        );
    }
    for name in types.keys() {
        let help = scraped
            .help
            .get(name)
            .map(String::as_str)
            .unwrap_or_default();
        assert!(!help.trim().is_empty(), "{name} has no help");
    }
}

/// Optimistic charges of one wallet at once: every `concurrent-update`
/// answer is one counted conflict, every request one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_attempts_and_conflicts_match_the_answers() {
    let app = Arc::new(spawn_app().await);
    json_ok(app.charge(3, 1).await).await;
    let answers = concurrently(40, |_| {
        let app = app.clone();
        async move { Answer::read(app.charge(3, 10).await).await }
    })
    .await;
    let conflicts = answers
        .iter()
        .filter(|a| a.outcome() == (409, "concurrent-update"))
        .count();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(ok + conflicts, 40);
    let scraped = scrape(&app).await;
    let charge = [("operation", "charge"), ("strategy", "optimistic")];
    assert_eq!(scraped.value("strategy_attempts_total", &charge), 41.0);
    assert_eq!(
        scraped.value("strategy_conflicts_total", &charge),
        conflicts as f64
    );
    assert_eq!(app.balance(3).await, 1 + 10 * ok as u64);
}

#[tokio::test]
async fn a_lock_timeout_is_counted() {
    let app = spawn_app_with(AppConfig {
        extra: vec![("APP_LOCK_WAIT_MS", "100".to_owned())],
        ..AppConfig::seats("redis-spin")
    })
    .await;
    let (_, schedule) = app.seed_schedule(500).await;
    let locks = concert_redis::RedisLocks::connect(
        &redis_url(),
        &app.redis_prefix,
        concert_redis::RedisLockSettings::default(),
    )
    .await
    .expect("redis");
    let key = LockKey::seat(schedule, SeatNumber::new(3).unwrap());
    let options = LockOptions {
        lease: Duration::from_secs(30),
        wait: Duration::from_millis(100),
        watchdog: false,
    };
    let guard = locks
        .simple()
        .acquire(&key, options)
        .await
        .expect("lock taken");
    let refused = Answer::read(app.reserve(1, schedule, 3).await).await;
    assert_eq!(refused.outcome(), (409, "lock-timeout"));
    guard.release().await.expect("released");
    let scraped = scrape(&app).await;
    let reserve = [("operation", "reserve"), ("strategy", "redis-spin")];
    assert_eq!(scraped.value("lock_timeouts_total", &reserve), 1.0);
    assert_eq!(scraped.value("strategy_attempts_total", &reserve), 0.0);
    assert_eq!(
        requests(&scraped, "POST", "/api/v1/reservations", "409"),
        1.0
    );
}

/// The waiting room's sizes, per concert whose room the instance served:
/// one admitted (the limit) and two waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_room_sizes_are_gauges() {
    let app = spawn_app_with(AppConfig {
        extra: vec![
            ("APP_WAITING_ROOM", "on".to_owned()),
            ("APP_WAITING_ROOM_ACTIVE_LIMIT", "1".to_owned()),
        ],
        ..AppConfig::default()
    })
    .await;
    let (concert, _) = app.seed_schedule(100).await;
    let path = format!("/api/v1/concerts/{}/waiting-room", concert.get());
    for user in 1..=3 {
        json_ok(
            app.post_as(user, &path, &serde_json::json!({}))
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
    let label = concert.get().to_string();
    let s = scrape(&app).await;
    assert_eq!(
        s.value("waiting_room_admitted_users", &[("concert", &label)]),
        1.0
    );
    assert_eq!(
        s.value("waiting_room_waiting_users", &[("concert", &label)]),
        2.0
    );
}
