//! No Redis key outlives the test (or app) that made it: an app's lock,
//! fence and queue keys are removed when it is dropped, contended or not.

use std::sync::Arc;

use concert_redis::{RedisLockSettings, RedisLocks};
use concert_tests::app::{AppConfig, json_ok, spawn_app_with};
use concert_tests::db::concurrently;
use concert_tests::redis::redis_url;

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
    for strategy in ["redis-pubsub", "redis-spin", "redis-simple"] {
        leaves_nothing(strategy).await;
    }
}
