//! Redis-backed tests of what only this adapter does: the key layout's
//! expiry, the waiter queue and hand-over, the clean-up after failures, and
//! faults (a Redis paused or restarted: each such test starts its own
//! `redis-server` on a free port in a temporary directory, and kills only
//! that process). The lock port's contract itself is the shared suite
//! (`tests/contract.rs`).

use std::time::Duration;

use concert_domain::{DistributedLock, Failure, LockKey, LockOptions};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, Client};
use tokio::time::{Instant, timeout};

use crate::keys::Keys;
use crate::lock::scripts::{Attempt, Queue, Released};
use crate::scripts;
use crate::{RedisLockSettings, RedisLocks};
use concert_testkit::OwnRedis;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn opts(lease_ms: u64, wait_ms: u64) -> LockOptions {
    LockOptions {
        lease: Duration::from_millis(lease_ms),
        wait: Duration::from_millis(wait_ms),
        watchdog: false,
    }
}

/// Lock adapters on a fresh prefix `it-<uuid>` of a Redis, a raw
/// connection to look at the keys, and a purge of the prefix at the end.
struct Fixture {
    locks: RedisLocks,
    raw: MultiplexedConnection,
}

impl Fixture {
    async fn new() -> Self {
        Self::on(&redis_url(), RedisLockSettings::default()).await
    }

    async fn on(url: &str, settings: RedisLockSettings) -> Self {
        let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
        let locks = RedisLocks::connect(url, &prefix, settings)
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} must be running for this test: {e:#}"));
        let raw = Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self { locks, raw }
    }

    fn keys(&self, key: &LockKey) -> Keys {
        self.locks.inner.core.prefix.keys(key)
    }

    async fn ttl(&mut self, key: &str) -> i64 {
        redis::cmd("TTL")
            .arg(key)
            .query_async(&mut self.raw)
            .await
            .unwrap()
    }

    async fn cmd<T: redis::FromRedisValue>(&mut self, cmd: &mut redis::Cmd) -> T {
        cmd.query_async(&mut self.raw).await.unwrap()
    }

    async fn queued(&mut self, keys: &Keys) -> (u64, u64) {
        let queue = self.cmd(redis::cmd("ZCARD").arg(&keys.queue)).await;
        let waiters = self.cmd(redis::cmd("HLEN").arg(&keys.waiters)).await;
        (queue, waiters)
    }

    async fn purge(self) {
        self.locks.purge().await.unwrap();
    }
}

/// Polls `check` every 10 ms until it holds, for at most `patience`.
async fn eventually<F, Fut>(patience: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------- expiry of bookkeeping

/// The fence counter and the waiter queue expire a day after their last
/// use (unknown keys cannot pile up), the lock with its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_keys_expire() {
    let mut f = Fixture::new().await;
    let key = LockKey::new("seat:5:1");
    let keys = f.keys(&key);
    let holder = f
        .locks
        .pubsub()
        .acquire(&key, opts(60_000, 0))
        .await
        .unwrap();
    let waiter = {
        let lock = f.locks.pubsub();
        let key = key.clone();
        tokio::spawn(async move { lock.acquire(&key, opts(60_000, 30_000)).await })
    };
    while f.locks.stats().waits < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let day = scripts::KEEP.as_secs() as i64;
    for name in [&keys.fence, &keys.queue, &keys.waiters] {
        let ttl = f.ttl(name).await;
        assert!(ttl > day - 60 && ttl <= day, "{name}: {ttl}");
    }
    let lock_ttl = f.ttl(&keys.lock).await;
    assert!(lock_ttl > 0 && lock_ttl <= 60, "{lock_ttl}");
    holder.release().await.unwrap();
    waiter.await.unwrap().unwrap().release().await.unwrap();
    f.purge().await;
}

/// A fence counter that expired (or was lost) is seeded again from Redis'
/// clock: the next token is still greater.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_fence_counter_stays_monotonic() {
    let mut f = Fixture::new().await;
    let key = LockKey::new("seat:5:2");
    let keys = f.keys(&key);
    let lock = f.locks.simple();
    let first = lock.acquire(&key, opts(10_000, 0)).await.unwrap();
    let token = first.fence().token();
    first.release().await.unwrap();
    let deleted: u64 = f.cmd(redis::cmd("DEL").arg(&keys.fence)).await;
    assert_eq!(deleted, 1);
    let second = lock.acquire(&key, opts(10_000, 0)).await.unwrap();
    assert!(second.fence().token() > token);
    second.release().await.unwrap();
    f.purge().await;
}

/// A leaked guard with the watchdog on behaves like a crashed holder: the
/// renewals stop after the maximum hold time and the lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_guard_is_renewed_only_up_to_the_maximum_hold() {
    let settings = RedisLockSettings {
        max_hold: Duration::from_millis(400),
        ..RedisLockSettings::default()
    };
    let f = Fixture::on(&redis_url(), settings).await;
    let key = LockKey::new("seat:5:3");
    let watched = LockOptions {
        watchdog: true,
        ..opts(300, 0)
    };
    let leaked = f.locks.pubsub().acquire(&key, watched).await.unwrap();
    let (fence, token) = (leaked.fence().clone(), leaked.fence().token());
    std::mem::forget(leaked);
    let next = f
        .locks
        .pubsub()
        .acquire(&key, opts(60_000, 10_000))
        .await
        .unwrap();
    assert!(next.fence().token() > token);
    assert!(fence.is_lost());
    let stats = f.locks.stats();
    assert!(stats.renewals >= 1 && stats.lost == 1, "{stats:?}");
    next.release().await.unwrap();
    f.purge().await;
}

// ------------------------------------------------------------ hand-over

/// Queue entries whose waiter's budget has run out (a crashed process's)
/// are skipped by the release, which then frees the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_skips_waiters_whose_budget_ran_out() {
    let mut f = Fixture::new().await;
    let key = LockKey::new("seat:6:1");
    let keys = f.keys(&key);
    let holder = f
        .locks
        .pubsub()
        .acquire(&key, opts(60_000, 0))
        .await
        .unwrap();
    for ghost in ["ghost1", "ghost2"] {
        let _: () = f
            .cmd(redis::cmd("ZADD").arg(&keys.queue).arg(1).arg(ghost))
            .await;
        let _: () = f
            .cmd(
                redis::cmd("HSET")
                    .arg(&keys.waiters)
                    .arg(ghost)
                    .arg("60000 1"),
            )
            .await;
    }
    holder.release().await.unwrap();
    assert_eq!(f.queued(&keys).await, (0, 0));
    assert_eq!(f.locks.stats().handovers, 0);
    let next = f
        .locks
        .simple()
        .acquire(&key, opts(60_000, 0))
        .await
        .unwrap();
    next.release().await.unwrap();
    f.purge().await;
}

/// A hand-over to a waiter that is gone (crashed before its budget ran
/// out) lasts only that waiter's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_to_a_departed_waiter_expires_with_its_lease() {
    let mut f = Fixture::new().await;
    let key = LockKey::new("seat:6:2");
    let keys = f.keys(&key);
    let holder = f
        .locks
        .pubsub()
        .acquire(&key, opts(60_000, 0))
        .await
        .unwrap();
    let token = holder.fence().token();
    let _: () = f
        .cmd(redis::cmd("ZADD").arg(&keys.queue).arg(1).arg("ghost"))
        .await;
    let _: () = f
        .cmd(
            redis::cmd("HSET")
                .arg(&keys.waiters)
                .arg("ghost")
                .arg("300 99999999999999"),
        )
        .await;
    holder.release().await.unwrap();
    assert_eq!(f.locks.stats().handovers, 1);
    let owner: String = f.cmd(redis::cmd("GET").arg(&keys.lock)).await;
    assert_eq!(owner, "ghost");
    assert!(matches!(
        f.locks.simple().acquire(&key, opts(60_000, 0)).await,
        Err(Failure::LockTimeout)
    ));
    let next = f
        .locks
        .pubsub()
        .acquire(&key, opts(60_000, 10_000))
        .await
        .unwrap();
    assert!(
        next.fence().token() > token + 1,
        "the ghost's token came between"
    );
    next.release().await.unwrap();
    f.purge().await;
}

/// A waiter whose budget runs out leaves the queue in its last attempt;
/// the release then frees the lock instead of handing it to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_leaves_the_queue() {
    let mut f = Fixture::new().await;
    let key = LockKey::new("seat:6:3");
    let keys = f.keys(&key);
    let holder = f
        .locks
        .pubsub()
        .acquire(&key, opts(60_000, 0))
        .await
        .unwrap();
    assert!(matches!(
        f.locks.pubsub().acquire(&key, opts(60_000, 100)).await,
        Err(Failure::LockTimeout)
    ));
    assert_eq!(f.queued(&keys).await, (0, 0));
    holder.release().await.unwrap();
    assert_eq!(f.locks.stats().handovers, 0);
    let next = f
        .locks
        .simple()
        .acquire(&key, opts(60_000, 0))
        .await
        .unwrap();
    next.release().await.unwrap();
    f.purge().await;
}

/// A waiter cancelled while queued is taken out of the queue in the
/// background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_is_removed_from_the_queue() {
    let mut f = Fixture::new().await;
    let key = LockKey::new("seat:6:4");
    let keys = f.keys(&key);
    let holder = f
        .locks
        .pubsub()
        .acquire(&key, opts(60_000, 0))
        .await
        .unwrap();
    let waiter = {
        let lock = f.locks.pubsub();
        let key = key.clone();
        tokio::spawn(async move { lock.acquire(&key, opts(60_000, 30_000)).await })
    };
    while f.locks.stats().waits < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.queued(&keys).await, (1, 1));
    waiter.abort();
    let _ = waiter.await;
    let locks = f.locks.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            locks.stats().cleanups >= 1
        })
        .await
    );
    assert_eq!(f.queued(&keys).await, (0, 0));
    holder.release().await.unwrap();
    assert_eq!(f.locks.stats().handovers, 0);
    f.purge().await;
}

/// A copy of an acquire attempt that reaches Redis after its acquisition
/// gave up (and left its tombstone) does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_attempt_of_an_abandoned_acquisition_does_nothing() {
    let mut f = Fixture::new().await;
    let key = LockKey::new("seat:6:5");
    let keys = f.keys(&key);
    let core = f.locks.inner.core.clone();
    let left = core
        .leave(&keys, "late", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(left, Released::NotHeld);
    let (attempt, _) = core
        .attempt(
            &keys,
            "late",
            Duration::from_secs(60),
            Queue::Join,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(attempt.unwrap(), Attempt::Abandoned);
    let exists: u64 = f.cmd(redis::cmd("EXISTS").arg(&keys.lock)).await;
    assert_eq!(exists, 0);
    assert_eq!(f.queued(&keys).await, (0, 0));
    let ttl = f.ttl(&keys.gone("late")).await;
    assert!(ttl > 0 && ttl <= 60, "{ttl}");
    f.purge().await;
}

/// An attempt repeated after a lost reply (same owner) is harmless: it
/// finds its own lock and the same fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_attempt_finds_its_own_lock() {
    let f = Fixture::new().await;
    let key = LockKey::new("seat:6:6");
    let keys = f.keys(&key);
    let core = f.locks.inner.core.clone();
    let lease = Duration::from_secs(60);
    let wait = Duration::from_secs(1);
    let (first, _) = core.attempt(&keys, "me", lease, Queue::Never, wait).await;
    let (again, _) = core.attempt(&keys, "me", lease, Queue::Join, wait).await;
    let Attempt::Acquired(token) = first.unwrap() else {
        panic!("not acquired")
    };
    assert_eq!(again.unwrap(), Attempt::Acquired(token));
    assert_eq!(core.release(&keys, "me").await.unwrap(), Released::Freed);
    assert_eq!(core.release(&keys, "me").await.unwrap(), Released::NotHeld);
    f.purge().await;
}

// --------------------------------------------------------------- faults

fn quick() -> RedisLockSettings {
    RedisLockSettings {
        connect_timeout: Duration::from_millis(300),
        response_timeout: Duration::from_millis(300),
        ..RedisLockSettings::default()
    }
}

/// Issue 12: an acquisition that gave up while Redis was paused must not
/// leave a lock nobody holds when Redis resumes (its attempt is applied
/// then). The acquirer cleans it up in the background as soon as Redis
/// answers: the key frees long before the two-minute lease would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquisition_given_up_during_a_redis_stall_leaves_no_orphan_lock() {
    let server = OwnRedis::start().await.expect("own redis-server");
    let f = Fixture::on(&server.url(), quick()).await;
    let observer = RedisLocks::connect(&server.url(), &f.locks.prefix(), quick())
        .await
        .unwrap();
    let lease = 120_000;
    let kinds = [("pubsub", f.locks.pubsub()), ("simple", f.locks.simple())];
    for (done, (name, lock)) in kinds.into_iter().enumerate() {
        let key = LockKey::new(format!("seat:7:{name}"));
        // scripts loaded, as in a running service (a fresh Redis would
        // refuse the stalled EVALSHA with NOSCRIPT)
        let warm = lock
            .acquire(&LockKey::new("warm"), opts(lease, 0))
            .await
            .unwrap();
        warm.release().await.unwrap();
        server.pause();
        let gave_up = lock.acquire(&key, opts(lease, 200)).await;
        assert!(
            matches!(gave_up, Err(Failure::Unavailable(_))),
            "{name}: {gave_up:?}"
        );
        server.resume();
        let cleaned = done as u64 + 1;
        // the clean-up ran once Redis answered: the attempt was either
        // applied before it (and undone) or is refused by its tombstone
        let locks = f.locks.clone();
        let ran = eventually(Duration::from_secs(30), || async {
            locks.stats().cleanups >= cleaned
        })
        .await;
        assert!(ran, "{name}: no clean-up after Redis resumed");
        // measured by polling: the key frees, well within the lease
        let freed = eventually(Duration::from_secs(30), || {
            let (observer, key) = (observer.clone(), key.clone());
            async move {
                match observer.simple().acquire(&key, opts(lease, 0)).await {
                    Ok(guard) => guard.release().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(freed, "{name}: the key stayed locked after Redis resumed");
    }
}

/// Issue 12: after a Redis restart, the first command through the cached
/// connection must not fail: a broken connection is replaced and the
/// command retried once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_acquisition_after_a_redis_restart_succeeds() {
    let mut server = OwnRedis::start().await.expect("own redis-server");
    let f = Fixture::on(&server.url(), quick()).await;
    let key = LockKey::new("seat:8:1");
    for lock in [f.locks.simple(), f.locks.spin(), f.locks.pubsub()] {
        let warm = lock.acquire(&key, opts(60_000, 0)).await.unwrap();
        warm.release().await.unwrap();
        server.restart().await.expect("restarted");
        let first = lock.acquire(&key, opts(60_000, 0)).await;
        let guard = first.unwrap_or_else(|e| panic!("{lock:?}: {e:?}"));
        guard.release().await.unwrap();
    }
}

/// A lock lost in a Redis restart (Redis came back empty) is reported lost
/// on release, not unavailable; while Redis is down, a release answers
/// `Unavailable` and an acquisition too, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_across_a_redis_restart_and_outage() {
    let mut server = OwnRedis::start().await.expect("own redis-server");
    let f = Fixture::on(&server.url(), quick()).await;
    let key = LockKey::new("seat:8:2");
    let lock = f.locks.pubsub();
    let guard = lock.acquire(&key, opts(60_000, 0)).await.unwrap();
    server.restart().await.expect("restarted");
    assert!(matches!(guard.release().await, Err(Failure::LockLost)));

    let guard = lock.acquire(&key, opts(60_000, 0)).await.unwrap();
    server.kill();
    let prompt = Duration::from_secs(5);
    let released = timeout(prompt, guard.release())
        .await
        .expect("release hung");
    assert!(
        matches!(released, Err(Failure::Unavailable(_))),
        "{released:?}"
    );
    let acquired = timeout(prompt, lock.acquire(&key, opts(60_000, 1_000)))
        .await
        .expect("acquire hung");
    assert!(
        matches!(acquired, Err(Failure::Unavailable(_))),
        "{acquired:?}"
    );
}

// --------------------------------------------------------------- RedLock

/// Three masters of this test's own, and a RedLock over them.
async fn redlock_on_three() -> ([OwnRedis; 3], crate::RedLock) {
    let masters = [
        OwnRedis::start().await.expect("own redis-server"),
        OwnRedis::start().await.expect("own redis-server"),
        OwnRedis::start().await.expect("own redis-server"),
    ];
    let urls: Vec<String> = masters.iter().map(OwnRedis::url).collect();
    let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
    let lock = crate::RedLock::new(&urls, &prefix, quick()).unwrap();
    (masters, lock)
}

/// Issue 12: with one master of three down the lock works (exclusion and
/// growing tokens); with two down, acquisitions fail with `Unavailable`
/// (503) within the wait budget, and work again once a master returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_needs_a_majority_of_its_masters() {
    let (mut masters, lock) = redlock_on_three().await;
    assert_eq!(lock.quorum(), 2);
    let key = LockKey::new("seat:9:1");
    let first = lock.acquire(&key, opts(10_000, 0)).await.unwrap();
    assert!(matches!(
        lock.acquire(&key, opts(10_000, 100)).await,
        Err(Failure::LockTimeout)
    ));
    let token = first.fence().token();
    first.release().await.unwrap();

    masters[0].kill();
    lock.ping().await.expect("two of three answer");
    let second = lock.acquire(&key, opts(10_000, 1_000)).await.unwrap();
    assert!(second.fence().token() > token, "tokens grow");
    assert!(matches!(
        lock.acquire(&key, opts(10_000, 100)).await,
        Err(Failure::LockTimeout)
    ));
    let token = second.fence().token();
    second.release().await.unwrap();

    masters[1].kill();
    assert!(lock.ping().await.is_err());
    let budget = Duration::from_secs(2);
    let started = Instant::now();
    let refused = lock
        .acquire(&key, opts(10_000, budget.as_millis() as u64))
        .await;
    assert!(
        matches!(refused, Err(Failure::Unavailable(_))),
        "{refused:?}"
    );
    assert!(started.elapsed() < budget, "503 within the wait budget");

    // A master returns empty: a majority again, and the token still grows
    // (the surviving master kept its counter; the returned one re-seeds).
    masters[0].restart().await.expect("restarted");
    let third = lock.acquire(&key, opts(10_000, 1_000)).await.unwrap();
    assert!(third.fence().token() > token, "tokens grow across restarts");
    third.release().await.unwrap();
}

/// The fencing token grows even when consecutive acquisitions are granted
/// by different majorities whose counters differ: the floor written back
/// on a majority carries the largest token forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_tokens_grow_across_different_majorities() {
    let (masters, lock) = redlock_on_three().await;
    let key = LockKey::new("seat:9:2");
    let mut last = 0;
    for round in 0..6 {
        // one master out of each acquisition in turn
        let paused = &masters[round % 3];
        paused.pause();
        let guard = lock.acquire(&key, opts(10_000, 3_000)).await.unwrap();
        paused.resume();
        assert!(guard.fence().token() > last, "round {round}");
        last = guard.fence().token();
        guard.release().await.unwrap();
    }
}
