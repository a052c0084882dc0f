//! The lock port's contract, written once, generic over `DistributedLock`,
//! and run against every adapter: `local`, `redis-simple`, `redis-spin`,
//! `redis-pubsub` (each Redis test on its own key prefix).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use concert_domain::{
    DistributedLock, Fence, LockError, LockGuard, LockKey, LockKind, LockOptions,
};
use concert_redis_lock::{LocalLock, LockStats, Queued, RedisLockSettings, RedisLocks};
use concert_tests::redis::{TestRedis, redis_url, test_prefix};
use tokio::time::{Instant, timeout};

/// What a contract needs to know about the adapter under test.
struct Adapter<L> {
    lock: Arc<L>,
    /// `redis-simple` fails at once instead of waiting.
    waits: bool,
    stats: Arc<dyn Fn() -> LockStats + Send + Sync>,
}

fn opts(lease_ms: u64, wait_ms: u64, watchdog: bool) -> LockOptions {
    LockOptions {
        lease: Duration::from_millis(lease_ms),
        wait: Duration::from_millis(wait_ms),
        watchdog,
    }
}

/// No contract may take this long: a hang fails the test instead of
/// blocking the suite.
const LIMIT: Duration = Duration::from_secs(60);

/// Acquires within `patience`: waiting adapters wait, `redis-simple` is
/// retried every few milliseconds (it fails at once by contract).
async fn acquire_within<L: DistributedLock>(
    lock: &L,
    key: &LockKey,
    lease_ms: u64,
    patience: Duration,
) -> LockGuard {
    let deadline = Instant::now() + patience;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lock
            .acquire(key, opts(lease_ms, wait.as_millis() as u64, false))
            .await
        {
            Ok(guard) => return guard,
            Err(LockError::Timeout) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("not acquired within {patience:?}: {e:?}"),
        }
    }
}

// ---------------------------------------------------------------- contracts

/// 100 tasks each do a non-atomic read-modify-write of a shared value under
/// the lock. The value ends exact: 100 for waiting adapters; for
/// `redis-simple`, the number of acquisitions, every failure a `Timeout`.
async fn mutual_exclusion<L: DistributedLock + 'static>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:1");
    let value = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (lock, key) = (a.lock.clone(), key.clone());
            let (value, inside, overlaps) = (value.clone(), inside.clone(), overlaps.clone());
            tokio::spawn(async move {
                let guard = lock.acquire(&key, opts(10_000, 30_000, true)).await?;
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let read = value.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_micros(200)).await;
                value.store(read + 1, Ordering::SeqCst);
                inside.fetch_sub(1, Ordering::SeqCst);
                lock.release(guard)
                    .await
                    .expect("the holder releases its own lock");
                Ok::<(), LockError>(())
            })
        })
        .collect();
    let mut acquired = 0;
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(()) => acquired += 1,
            Err(LockError::Timeout) if !a.waits => {}
            Err(e) => panic!("unexpected failure: {e:?}"),
        }
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    assert_eq!(value.load(Ordering::SeqCst), acquired);
    if a.waits {
        assert_eq!(acquired, 100);
    } else {
        assert!(acquired >= 1);
    }
    let stats = (a.stats)();
    assert!(stats.attempts >= 100, "{stats:?}");
}

/// A release by someone who does not hold the lock deletes nothing and is
/// reported as `NotHeld`; so is a second release by the former holder.
async fn release_by_non_owner<L: DistributedLock>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:2");
    let guard = a
        .lock
        .acquire(&key, opts(10_000, 1_000, false))
        .await
        .unwrap();
    let intruder = LockGuard::new(key.clone(), "intruder", Fence::new(guard.fence().token()));
    assert!(matches!(
        a.lock.release(intruder).await,
        Err(LockError::NotHeld)
    ));
    // still held by its owner
    assert!(matches!(
        a.lock.acquire(&key, opts(10_000, 50, false)).await,
        Err(LockError::Timeout)
    ));
    let owner = guard.owner().to_owned();
    let token = guard.fence().token();
    a.lock.release(guard).await.unwrap();
    let stale = LockGuard::new(key.clone(), owner, Fence::new(token));
    assert!(matches!(
        a.lock.release(stale).await,
        Err(LockError::NotHeld)
    ));
    // and free for the next one
    let next = a
        .lock
        .acquire(&key, opts(10_000, 1_000, false))
        .await
        .unwrap();
    a.lock.release(next).await.unwrap();
}

/// A holder that crashes (guard leaked, no watchdog) blocks others only
/// until its lease runs out.
async fn crashed_holder_expires<L: DistributedLock>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:3");
    let crashed = a.lock.acquire(&key, opts(1_500, 0, false)).await.unwrap();
    let crashed_token = crashed.fence().token();
    std::mem::forget(crashed);
    assert!(matches!(
        a.lock.acquire(&key, opts(10_000, 20, false)).await,
        Err(LockError::Timeout)
    ));
    let next = acquire_within(&*a.lock, &key, 10_000, Duration::from_secs(10)).await;
    assert!(next.fence().token() > crashed_token);
    a.lock.release(next).await.unwrap();
}

/// The watchdog keeps a critical section that lasts three leases
/// exclusive, and the guard is not flagged lost.
async fn watchdog_keeps_a_long_section_exclusive<L: DistributedLock + 'static>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:4");
    let lease = 600;
    let guard = a.lock.acquire(&key, opts(lease, 0, true)).await.unwrap();
    let holding = Arc::new(AtomicBool::new(true));
    let rival = {
        let (lock, key, holding) = (a.lock.clone(), key.clone(), holding.clone());
        tokio::spawn(async move {
            let mut stolen = 0;
            while holding.load(Ordering::SeqCst) {
                if let Ok(g) = lock.acquire(&key, opts(lease, 100, false)).await {
                    if holding.load(Ordering::SeqCst) {
                        stolen += 1;
                    }
                    let _ = lock.release(g).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stolen
        })
    };
    tokio::time::sleep(Duration::from_millis(3 * lease + 200)).await;
    assert!(!guard.fence().is_lost());
    holding.store(false, Ordering::SeqCst);
    a.lock
        .release(guard)
        .await
        .expect("still held thanks to the watchdog");
    assert_eq!(
        rival.await.unwrap(),
        0,
        "the lock was taken during the section"
    );
    let stats = (a.stats)();
    assert!(stats.renewals >= 3, "{stats:?}");
    assert_eq!(stats.lost, 0, "{stats:?}");
}

/// Without the watchdog, a section that outlives its lease learns it:
/// the fence is flagged lost and the release answers `NotHeld`.
async fn an_outlived_lease_is_flagged_lost<L: DistributedLock>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:5");
    let guard = a.lock.acquire(&key, opts(100, 0, false)).await.unwrap();
    let fence = guard.fence().clone();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(fence.is_lost());
    assert!(matches!(
        a.lock.release(guard).await,
        Err(LockError::NotHeld)
    ));
    assert_eq!((a.stats)().lost, 1);
}

/// A waiter behind a lock that is never released gets `Timeout` once its
/// budget is spent: not before, and it never hangs.
async fn wait_budget_is_honoured<L: DistributedLock>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:6");
    let holder = a.lock.acquire(&key, opts(60_000, 0, true)).await.unwrap();
    let budget = Duration::from_millis(400);
    let started = Instant::now();
    let outcome = timeout(
        budget + Duration::from_secs(5),
        a.lock
            .acquire(&key, opts(10_000, budget.as_millis() as u64, true)),
    )
    .await
    .expect("a waiter must not outlive its budget");
    assert!(matches!(outcome, Err(LockError::Timeout)));
    if a.waits {
        assert!(started.elapsed() >= budget, "gave up early");
    }
    a.lock.release(holder).await.unwrap();
}

/// Fencing tokens strictly increase per key, in acquisition order, also
/// when acquisitions contend.
async fn fencing_tokens_increase<L: DistributedLock + 'static>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:7");
    let mut last = 0;
    for _ in 0..10 {
        let guard = a
            .lock
            .acquire(&key, opts(10_000, 1_000, false))
            .await
            .unwrap();
        assert!(guard.fence().token() > last);
        last = guard.fence().token();
        a.lock.release(guard).await.unwrap();
    }
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (lock, key, order) = (a.lock.clone(), key.clone(), order.clone());
            tokio::spawn(async move {
                let guard = acquire_within(&*lock, &key, 10_000, Duration::from_secs(30)).await;
                order.lock().unwrap().push(guard.fence().token());
                lock.release(guard).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 20);
    assert!(order[0] > last);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "tokens out of acquisition order: {order:?}"
    );
    // another key has its own counter, and does not disturb this one
    let other = a
        .lock
        .acquire(&LockKey::new("seat:9:9"), opts(10_000, 0, false))
        .await
        .unwrap();
    a.lock.release(other).await.unwrap();
    let again = a.lock.acquire(&key, opts(10_000, 0, false)).await.unwrap();
    assert!(again.fence().token() > order[19]);
    a.lock.release(again).await.unwrap();
}

/// A guard dropped without release (its request was cancelled) is
/// released in the background, and a cancelled waiter does not hold up the
/// others.
async fn dropped_guards_and_cancelled_waiters<L: DistributedLock + 'static>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:8");
    drop(a.lock.acquire(&key, opts(60_000, 0, true)).await.unwrap());
    let guard = acquire_within(&*a.lock, &key, 60_000, Duration::from_secs(5)).await;
    if a.waits {
        let cancelled = {
            let (lock, key) = (a.lock.clone(), key.clone());
            tokio::spawn(async move { lock.acquire(&key, opts(60_000, 30_000, true)).await })
        };
        let patient = {
            let (lock, key) = (a.lock.clone(), key.clone());
            tokio::spawn(async move { lock.acquire(&key, opts(60_000, 30_000, true)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancelled.abort();
        a.lock.release(guard).await.unwrap();
        // the holder's lease is a minute: only a release wake gets it in time
        let next = timeout(Duration::from_secs(10), patient)
            .await
            .expect("the remaining waiter was not woken")
            .unwrap()
            .unwrap();
        a.lock.release(next).await.unwrap();
    } else {
        a.lock.release(guard).await.unwrap();
    }
}

/// Wake-one: 100 waiters queued on one key take at most 200 acquisition
/// attempts in total, the holder's own not counted (one that fails before
/// the wait, one after the wake; all-wake would take about 5,000).
async fn wake_one<L: DistributedLock + 'static>(a: Adapter<L>) {
    let key = LockKey::new("seat:2:1");
    let holder = a.lock.acquire(&key, opts(60_000, 0, true)).await.unwrap();
    let holder_attempts = (a.stats)().attempts;
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (lock, key, done) = (a.lock.clone(), key.clone(), done.clone());
            tokio::spawn(async move {
                let guard = lock
                    .acquire(&key, opts(60_000, 50_000, true))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                done.fetch_add(1, Ordering::SeqCst);
                lock.release(guard).await.unwrap();
            })
        })
        .collect();
    // every waiter has tried once and gone to sleep
    while (a.stats)().waits < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.lock.release(holder).await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 100);
    let stats = (a.stats)();
    assert!(stats.attempts - holder_attempts <= 200, "{stats:?}");
}

/// Extreme options are accepted: an unbounded lease and budget, and a
/// zero budget (one attempt).
async fn extreme_options_are_accepted<L: DistributedLock>(a: Adapter<L>) {
    let key = LockKey::new("seat:2:2");
    let unbounded = LockOptions {
        lease: Duration::MAX,
        wait: Duration::MAX,
        watchdog: true,
    };
    let guard = a.lock.acquire(&key, unbounded).await.unwrap();
    assert!(matches!(
        a.lock.acquire(&key, opts(1_000, 0, false)).await,
        Err(LockError::Timeout)
    ));
    a.lock.release(guard).await.unwrap();
    let guard = a.lock.acquire(&key, opts(1_000, 0, false)).await.unwrap();
    a.lock.release(guard).await.unwrap();
}

// ---------------------------------------------------------------- adapters

fn local() -> Adapter<LocalLock> {
    let lock = LocalLock::new();
    let seen = lock.clone();
    Adapter {
        lock: Arc::new(lock),
        waits: true,
        stats: Arc::new(move || seen.stats()),
    }
}

async fn redis(kind: LockKind) -> (Adapter<concert_redis_lock::RedisLock>, TestRedis) {
    let redis = TestRedis::new().await;
    let locks = redis.locks.clone();
    let adapter = Adapter {
        lock: Arc::new(redis.lock(kind)),
        waits: kind != LockKind::RedisSimple,
        stats: Arc::new(move || locks.stats()),
    };
    (adapter, redis)
}

/// The pub/sub lock behind an in-process queue per key, as the app wires
/// the Redis strategies by default.
async fn queued() -> (Adapter<Queued<concert_redis_lock::RedisLock>>, TestRedis) {
    let redis = TestRedis::new().await;
    let locks = redis.locks.clone();
    let adapter = Adapter {
        lock: Arc::new(Queued::new(
            LocalLock::new(),
            redis.lock(LockKind::RedisPubSub),
        )),
        waits: true,
        stats: Arc::new(move || locks.stats()),
    };
    (adapter, redis)
}

/// One test per adapter for a contract.
macro_rules! contract {
    ($contract:ident: $($adapter:ident),+) => {
        mod $contract {
            $(contract!(@one $contract $adapter);)+
        }
    };
    (@one $contract:ident local) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn local() {
            tokio::time::timeout(super::LIMIT, super::$contract(super::local()))
                .await
                .expect("contract timed out");
        }
    };
    (@one $contract:ident queued) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn queued() {
            let (adapter, _redis) = super::queued().await;
            tokio::time::timeout(super::LIMIT, super::$contract(adapter))
                .await
                .expect("contract timed out");
        }
    };
    (@one $contract:ident $kind:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[allow(non_snake_case)]
        async fn $kind() {
            let (adapter, _redis) = super::redis(concert_domain::LockKind::$kind).await;
            tokio::time::timeout(super::LIMIT, super::$contract(adapter))
                .await
                .expect("contract timed out");
        }
    };
}

contract!(mutual_exclusion: local, RedisSimple, RedisSpin, RedisPubSub, queued);
contract!(release_by_non_owner: local, RedisSimple, RedisSpin, RedisPubSub, queued);
contract!(crashed_holder_expires: local, RedisSimple, RedisSpin, RedisPubSub, queued);
contract!(watchdog_keeps_a_long_section_exclusive: local, RedisSimple, RedisSpin, RedisPubSub, queued);
contract!(an_outlived_lease_is_flagged_lost: local, RedisSimple, RedisSpin, RedisPubSub, queued);
contract!(wait_budget_is_honoured: local, RedisSimple, RedisSpin, RedisPubSub, queued);
contract!(fencing_tokens_increase: local, RedisSimple, RedisSpin, RedisPubSub, queued);
contract!(dropped_guards_and_cancelled_waiters: local, RedisSimple, RedisSpin, RedisPubSub, queued);
contract!(wake_one: local, RedisPubSub);
contract!(extreme_options_are_accepted: local, RedisSimple, RedisSpin, RedisPubSub, queued);

// ------------------------------------------------------- Redis specifics

/// One key's fencing counter is shared by every kind and every process on
/// the same prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_and_instances_share_one_fence_counter_per_key() {
    let redis = TestRedis::new().await;
    let other_process = RedisLocks::connect(&redis.url, &redis.prefix)
        .await
        .unwrap();
    let key = LockKey::new("seat:3:1");
    let mut last = 0;
    for lock in [
        redis.lock(LockKind::RedisSimple),
        other_process.lock(LockKind::RedisPubSub),
        redis.lock(LockKind::RedisSpin),
        other_process.lock(LockKind::RedisSimple),
    ] {
        let guard = lock
            .acquire(&key, opts(10_000, 1_000, false))
            .await
            .unwrap();
        assert!(guard.fence().token() > last);
        last = guard.fence().token();
        lock.release(guard).await.unwrap();
    }
}

/// A pub/sub waiter in one process is woken by a release in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_waiter_in_another_instance() {
    let redis = TestRedis::new().await;
    let other_process = RedisLocks::connect(&redis.url, &redis.prefix)
        .await
        .unwrap();
    let key = LockKey::new("seat:3:2");
    let here = redis.lock(LockKind::RedisPubSub);
    let holder = here.acquire(&key, opts(60_000, 0, true)).await.unwrap();
    let waiter = {
        let lock = other_process.lock(LockKind::RedisPubSub);
        let key = key.clone();
        tokio::spawn(async move { lock.acquire(&key, opts(60_000, 30_000, true)).await })
    };
    while other_process.stats().waits < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    here.release(holder).await.unwrap();
    // the holder's lease is a minute: only the published release gets it in
    let guard = timeout(Duration::from_secs(10), waiter)
        .await
        .expect("not woken by the release")
        .unwrap()
        .unwrap();
    assert_eq!(other_process.stats().attempts, 2);
    assert_eq!(other_process.stats().wakeups, 1);
    other_process
        .lock(LockKind::RedisPubSub)
        .release(guard)
        .await
        .unwrap();
}

/// When the lock disappears under a holder (expired during a stall, or
/// deleted), the watchdog's next renewal flags the fence lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_flags_a_vanished_lock_as_lost() {
    let redis = TestRedis::new().await;
    let lock = redis.lock(LockKind::RedisPubSub);
    let guard = lock
        .acquire(&LockKey::new("seat:3:3"), opts(300, 0, true))
        .await
        .unwrap();
    redis.locks.purge().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !guard.fence().is_lost() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(guard.fence().is_lost());
    assert_eq!(redis.locks.stats().lost, 1);
    assert!(matches!(lock.release(guard).await, Err(LockError::NotHeld)));
}

/// Redis unreachable: `connect` and every lock call answer `Unavailable`
/// promptly, never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_unavailable_promptly() {
    let dead = "redis://127.0.0.1:1";
    let prompt = Duration::from_secs(5);
    let connected = timeout(prompt, RedisLocks::connect(dead, &test_prefix()))
        .await
        .expect("connect hung");
    assert!(matches!(connected, Err(LockError::Unavailable(_))));

    let locks = RedisLocks::connect_lazy(dead, &test_prefix(), RedisLockSettings::default())
        .await
        .unwrap();
    assert!(
        timeout(prompt, locks.ping())
            .await
            .expect("ping hung")
            .is_err()
    );
    let key = LockKey::new("seat:4:1");
    for kind in [
        LockKind::RedisSimple,
        LockKind::RedisSpin,
        LockKind::RedisPubSub,
    ] {
        let lock = locks.lock(kind);
        let acquired = timeout(prompt, lock.acquire(&key, opts(10_000, 30_000, true)))
            .await
            .expect("acquire hung");
        assert!(
            matches!(acquired, Err(LockError::Unavailable(_))),
            "{kind:?}: {acquired:?}"
        );
        let released = timeout(
            prompt,
            lock.release(LockGuard::new(key.clone(), "someone", Fence::new(1))),
        )
        .await
        .expect("release hung");
        assert!(
            matches!(released, Err(LockError::Unavailable(_))),
            "{kind:?}"
        );
    }
    assert!(!locks.is_subscribed());
}

/// A malformed URL or a prefix that would break the hash tag is a
/// configuration error, not an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_is_refused_at_connect() {
    assert!(matches!(
        RedisLocks::connect("not-a-url", &test_prefix()).await,
        Err(LockError::Unknown(_))
    ));
    assert!(matches!(
        RedisLocks::connect(&redis_url(), "bad{prefix").await,
        Err(LockError::Unknown(_))
    ));
}

/// Behind the in-process queue, 100 requests of one process for one key
/// reach Redis one at a time: about one Redis attempt each, never the
/// failed attempt + wake + retry of the bare pub/sub lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_queue_sends_one_request_at_a_time_to_redis() {
    let (a, _redis) = queued().await;
    let key = LockKey::new("seat:3:1");
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (lock, key, counter) = (a.lock.clone(), key.clone(), counter.clone());
            tokio::spawn(async move {
                let guard = lock
                    .acquire(&key, opts(10_000, 30_000, true))
                    .await
                    .unwrap();
                let seen = counter.load(Ordering::SeqCst);
                tokio::task::yield_now().await;
                counter.store(seen + 1, Ordering::SeqCst);
                lock.release(guard).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        timeout(LIMIT, task).await.unwrap().unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 100);
    let stats = (a.stats)();
    assert_eq!(stats.attempts, 100, "{stats:?}");
    assert_eq!(stats.waits, 0, "{stats:?}");
}
