//! A fresh Redis key prefix per test, and the lock adapters on it.

use concert_redis::{RedLock, RedisLockSettings, RedisLocks};

/// `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses.
pub fn test_prefix() -> String {
    format!("it-{}", uuid::Uuid::new_v4().simple())
}

/// The Redis lock adapters of one test, on its own key prefix. Every key
/// under the prefix is deleted when it is dropped.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
    pub locks: RedisLocks,
}

impl TestRedis {
    /// Connects with the default settings on a fresh prefix.
    pub async fn new() -> Self {
        Self::with_settings(RedisLockSettings::default()).await
    }

    pub async fn with_settings(settings: RedisLockSettings) -> Self {
        let url = redis_url();
        let prefix = test_prefix();
        let locks = RedisLocks::connect(&url, &prefix, settings)
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} must be running for this test: {e:#}"));
        Self { url, prefix, locks }
    }
}

/// Deletes every key under `prefix` (locks and event streams; for tests and
/// apps that used it).
pub fn purge_prefix(url: &str, prefix: &str) {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    // Runs on its own thread and runtime: Drop cannot await, and the
    // test's runtime may be shutting down.
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async {
                let settings = RedisLockSettings::default();
                if let Ok(locks) = RedisLocks::connect_lazy(&url, &prefix, settings).await {
                    let _ = locks.purge().await;
                }
                // the event streams (`<prefix>:events:*`)
                let streams = concert_redis::RedisStreams::new(
                    &url,
                    &prefix,
                    concert_redis::StreamSettings::default(),
                );
                if let Ok(streams) = streams {
                    let _ = streams.purge().await;
                }
            });
        }
    });
    let _ = cleanup.join();
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        purge_prefix(&self.url, &self.prefix);
    }
}

/// A RedLock over three logical masters: databases 1, 2 and 3 of the test
/// Redis (independent key spaces; the fault tests of `concert-redis` use
/// three separate servers), on a fresh prefix purged from all three when
/// dropped.
pub struct TestRedLock {
    pub urls: Vec<String>,
    pub prefix: String,
    pub lock: RedLock,
}

impl TestRedLock {
    pub fn new() -> Self {
        let urls = concert_lab::env::redlock_urls(&redis_url());
        let prefix = test_prefix();
        let lock = RedLock::new(&urls, &prefix, RedisLockSettings::default())
            .unwrap_or_else(|e| panic!("a RedLock over {urls:?}: {e:#}"));
        Self { urls, prefix, lock }
    }
}

impl Default for TestRedLock {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedLock {
    fn drop(&mut self) {
        for url in &self.urls {
            purge_prefix(url, &self.prefix);
        }
    }
}
