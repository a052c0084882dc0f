//! No Redis key outlives the test (or app) that made it: an app's lock,
//! fence and queue keys are removed when it is dropped, contended or not.

use std::sync::Arc;

use concert_redis::{RedisLockSettings, RedisLocks};
use concert_tests::app::{AppConfig, json_ok, spawn_app_with};
use concert_tests::db::concurrently;
use concert_tests::redis::redis_url;

/// The strategies whose lock lives in Redis, from the app's registry.
fn redis_locks() -> impl Iterator<Item = &'static str> {
    concert_app::strategies::locks()
        .filter(|s| s.lock_at() == Some(concert_app::strategies::LockAt::Redis))
        .map(|s| s.as_str())
}

/// How many keys `prefix` still has (deleting them, so a failure does not
/// leave them either).
async fn remaining(prefix: &str) -> u64 {
    let locks = RedisLocks::connect(&redis_url(), prefix, RedisLockSettings::default())
        .await
        .expect("redis");
    locks.purge().await.expect("scanned")
}

async fn leaves_nothing(strategy: &'static str) {
    let config = AppConfig {
        use_strategy: strategy,
        charge_strategy: strategy,
        ..AppConfig::seats(strategy)
    };
    let app = Arc::new(spawn_app_with(config).await);
    let prefix = app.redis_prefix.clone();
    let (_, schedule) = app.seed_schedule(100).await;
    concurrently(60, |i| {
        let app = app.clone();
        async move {
            let user = i as u64 % 6 + 1;
            let seats = [1 + (i % 10) as u8, 2 + (i % 10) as u8];
            let _ = app.reserve_batch(user, schedule, &seats).await;
            let _ = app.charge(user, 100).await;
        }
    })
    .await;
    json_ok(app.charge(1, 5).await).await;
    drop(app);
    assert_eq!(
        remaining(&prefix).await,
        0,
        "{strategy}: keys left under {prefix}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_app_leaves_no_redis_key() {
    for strategy in redis_locks() {
        leaves_nothing(strategy).await;
    }
}

/// The keys under `prefix` whose name mentions `fragment` (by `SCAN`).
async fn keys_with(prefix: &str, fragment: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let pattern = format!("*{prefix}*{fragment}*");
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// Issue 12: a hold of a seat that does not exist (an unknown schedule)
/// under a Redis lock is refused before any lock is taken: it leaves no
/// lock, fence or queue key behind, however often it is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_of_unknown_seats_touch_no_redis_key() {
    for strategy in redis_locks() {
        let app = spawn_app_with(AppConfig::seats(strategy)).await;
        let (_, known) = app.seed_schedule(100).await;
        for attempt in 0..20u64 {
            let unknown = concert_domain::ScheduleId::from(900_000 + attempt);
            let (status, code) =
                concert_tests::app::problem(app.reserve(1, unknown, 7).await).await;
            assert_eq!((status, code.as_str()), (404, "not-found"), "{strategy}");
        }
        assert_eq!(
            keys_with(&app.redis_prefix, "seat:900").await,
            Vec::<String>::new(),
            "{strategy}"
        );
        // a known seat does take its lock (and keeps its fence counter)
        json_ok(app.reserve(1, known, 7).await).await;
        assert!(
            !keys_with(&app.redis_prefix, &format!("seat:{}:07", known.get()))
                .await
                .is_empty(),
            "{strategy}"
        );
    }
}
