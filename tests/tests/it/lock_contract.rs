//! The lock port's contract, written once, generic over `DistributedLock`,
//! and run against every adapter: `local`, `redis-simple`, `redis-spin`,
//! `redis-pubsub`, and the pub/sub and spin locks behind the in-process
//! key queue (as the app wires them). Each Redis test runs on its own key
//! prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use concert_domain::{DistributedLock, Failure, HeldLock, LockKey, LockOptions};
use concert_inprocess::{KeyQueue, LocalLock, MAX_STREAK};
use concert_redis::{LockStats, RedLock, RedisLock, RedisLockSettings, RedisLocks};
use concert_tests::redis::{TestRedLock, TestRedis, redis_url, test_prefix};
use tokio::time::{Instant, timeout};

// --------------------------------------------------------------- helpers

/// What a contract needs to know about the adapter under test.
struct Adapter<L> {
    lock: Arc<L>,
    /// `redis-simple` fails at once instead of waiting.
    waits: bool,
    /// Hands one acquisition along a streak of local holders (they share
    /// its fencing token).
    hands_along: bool,
    /// RedLock: an acquisition refused as unavailable (a master slower
    /// than its per-call bound) is retried by `mutual_exclusion`.
    retries_unavailable: bool,
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
async fn acquire_within<L: DistributedLock + ?Sized>(
    lock: &L,
    key: &LockKey,
    lease_ms: u64,
    patience: Duration,
) -> Box<dyn HeldLock> {
    let deadline = Instant::now() + patience;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lock
            .acquire(key, opts(lease_ms, wait.as_millis() as u64, false))
            .await
        {
            Ok(guard) => return guard,
            Err(Failure::LockTimeout) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("not acquired within {patience:?}: {e:?}"),
        }
    }
}

// ------------------------------------------------------------- contracts

/// 100 tasks each do a non-atomic read-modify-write of a shared value under
/// the lock. The value ends exact: 100 for waiting adapters; for
/// `redis-simple`, the number of acquisitions, every failure a
/// `LockTimeout`.
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
                let guard = loop {
                    match lock.acquire(&key, opts(10_000, 30_000, true)).await {
                        // RedLock bounds each master's answer to 200 ms:
                        // on this 2-core machine, under the whole suite's
                        // load, a master can miss that, and the attempt is
                        // refused as unavailable, taking nothing (a client
                        // retries); exclusion is what this contract checks
                        Err(Failure::Unavailable(_)) if a.retries_unavailable => continue,
                        other => break other?,
                    }
                };
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let read = value.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_micros(200)).await;
                value.store(read + 1, Ordering::SeqCst);
                inside.fetch_sub(1, Ordering::SeqCst);
                guard
                    .release()
                    .await
                    .expect("the holder releases its own lock");
                Ok::<(), Failure>(())
            })
        })
        .collect();
    let mut acquired = 0;
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(()) => acquired += 1,
            Err(Failure::LockTimeout) if !a.waits => {}
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
    if a.hands_along {
        // hand-overs in memory spare most acquisitions
        assert!(stats.attempts >= 1, "{stats:?}");
    } else {
        assert!(stats.attempts >= 100, "{stats:?}");
    }
}

/// A holder whose lease ran out, and whose key another holder then took,
/// gets `LockLost` on release, and its release does not delete the new
/// holder's lock.
async fn a_stale_release_is_lost_and_harmless<L: DistributedLock>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:2");
    let stale = a.lock.acquire(&key, opts(100, 1_000, false)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = acquire_within(&*a.lock, &key, 10_000, Duration::from_secs(5)).await;
    assert!(next.fence().token() > stale.fence().token());
    assert!(matches!(stale.release().await, Err(Failure::LockLost)));
    // still held by the new holder
    assert!(matches!(
        a.lock.acquire(&key, opts(10_000, 50, false)).await,
        Err(Failure::LockTimeout)
    ));
    next.release().await.unwrap();
    // and free for the one after
    let after = a
        .lock
        .acquire(&key, opts(10_000, 1_000, false))
        .await
        .unwrap();
    after.release().await.unwrap();
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
        Err(Failure::LockTimeout)
    ));
    let next = acquire_within(&*a.lock, &key, 10_000, Duration::from_secs(10)).await;
    assert!(next.fence().token() > crashed_token);
    next.release().await.unwrap();
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
                    let _ = g.release().await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stolen
        })
    };
    tokio::time::sleep(Duration::from_millis(3 * lease + 200)).await;
    assert!(!guard.fence().is_lost());
    holding.store(false, Ordering::SeqCst);
    guard
        .release()
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

/// Without the watchdog, a section that outlives its lease learns it: the
/// fence is flagged lost and the release answers `LockLost`.
async fn an_outlived_lease_is_flagged_lost<L: DistributedLock>(a: Adapter<L>) {
    let key = LockKey::new("seat:1:5");
    let guard = a.lock.acquire(&key, opts(100, 0, false)).await.unwrap();
    let fence = guard.fence().clone();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(fence.is_lost());
    assert!(matches!(guard.release().await, Err(Failure::LockLost)));
    assert_eq!((a.stats)().lost, 1);
}

/// A waiter behind a lock that is never released gets `LockTimeout` once
/// its budget is spent: not before, and it never hangs.
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
    assert!(matches!(outcome, Err(Failure::LockTimeout)));
    if a.waits {
        assert!(started.elapsed() >= budget, "gave up early");
    }
    holder.release().await.unwrap();
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
        guard.release().await.unwrap();
    }
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (lock, key, order) = (a.lock.clone(), key.clone(), order.clone());
            tokio::spawn(async move {
                let guard = acquire_within(&*lock, &key, 10_000, Duration::from_secs(30)).await;
                order.lock().unwrap().push(guard.fence().token());
                guard.release().await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 20);
    assert!(order[0] > last);
    if a.hands_along {
        // holders of one streak share its token; a new acquisition has a
        // newer one
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "tokens out of acquisition order: {order:?}"
        );
    } else {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "tokens out of acquisition order: {order:?}"
        );
    }
    // another key has its own counter, and does not disturb this one
    let other = a
        .lock
        .acquire(&LockKey::new("seat:9:9"), opts(10_000, 0, false))
        .await
        .unwrap();
    other.release().await.unwrap();
    let again = a.lock.acquire(&key, opts(10_000, 0, false)).await.unwrap();
    assert!(again.fence().token() > order[19]);
    again.release().await.unwrap();
}

/// A guard dropped without release (its request was cancelled) is
/// released in the background, and a cancelled waiter does not hold up
/// the others.
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
        // `abort` only asks: wait until the waiter is really gone, so that
        // the release below cannot hand the lock to it (a task polled at
        // that instant on another worker would finish with the guard, kept
        // in its unawaited handle for the whole lease)
        assert!(cancelled.await.unwrap_err().is_cancelled());
        guard.release().await.unwrap();
        // the holder's lease is a minute: only a release (or a hand-over)
        // gets it in time
        let next = timeout(Duration::from_secs(10), patient)
            .await
            .expect("the remaining waiter was not woken")
            .unwrap()
            .unwrap();
        next.release().await.unwrap();
    } else {
        guard.release().await.unwrap();
    }
}

/// Wake-one: 100 waiters queued on one key take at most 200 acquisition
/// attempts in total, the holder's own not counted (one that fails before
/// the wait, and at most one after; waking all would take about 5,000).
async fn wake_one<L: DistributedLock + 'static>(a: Adapter<L>) {
    let (attempts, _) = hundred_waiters(&a, "seat:2:1").await;
    assert!(attempts <= 200, "{attempts} attempts");
}

/// Runs 100 waiters behind one holder; returns the attempts they made
/// and their fencing tokens in the order they got the lock.
async fn hundred_waiters<L: DistributedLock + 'static>(
    a: &Adapter<L>,
    key: &str,
) -> (u64, Vec<u64>) {
    let key = LockKey::new(key);
    let holder = a.lock.acquire(&key, opts(60_000, 0, true)).await.unwrap();
    let before = (a.stats)();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (lock, key, order) = (a.lock.clone(), key.clone(), order.clone());
            tokio::spawn(async move {
                let guard = lock
                    .acquire(&key, opts(60_000, 50_000, true))
                    .await
                    .unwrap();
                order.lock().unwrap().push(guard.fence().token());
                tokio::task::yield_now().await;
                guard.release().await.unwrap();
            })
        })
        .collect();
    // every waiter has tried once and gone to sleep
    while (a.stats)().waits < before.waits + 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.release().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 100);
    ((a.stats)().attempts - before.attempts, order)
}

/// Hand-over: after the holder releases, each of 100 queued waiters gets
/// the lock from its predecessor's release, in queue order, without
/// another attempt: 100 attempts for 100 waiters, 100 hand-overs, tokens
/// in acquisition order.
async fn hand_over<L: DistributedLock + 'static>(a: Adapter<L>) {
    let before = (a.stats)();
    let (attempts, order) = hundred_waiters(&a, "seat:2:3").await;
    let stats = (a.stats)().since(&before);
    assert_eq!(attempts, 100, "{stats:?}");
    assert_eq!(stats.handovers, 100, "{stats:?}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
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
        Err(Failure::LockTimeout)
    ));
    guard.release().await.unwrap();
    let guard = a.lock.acquire(&key, opts(1_000, 0, false)).await.unwrap();
    guard.release().await.unwrap();
}

// -------------------------------------------------------------- adapters

fn local() -> Adapter<LocalLock> {
    let lock = LocalLock::new();
    let seen = lock.clone();
    Adapter {
        lock: Arc::new(lock),
        waits: true,
        hands_along: false,
        retries_unavailable: false,
        stats: Arc::new(move || seen.stats()),
    }
}

fn redis_adapter<L>(redis: &TestRedis, lock: L, waits: bool) -> Adapter<L> {
    let locks = redis.locks.clone();
    Adapter {
        lock: Arc::new(lock),
        waits,
        hands_along: false,
        retries_unavailable: false,
        stats: Arc::new(move || locks.stats()),
    }
}

async fn simple() -> (Adapter<RedisLock>, TestRedis) {
    let redis = TestRedis::new().await;
    (redis_adapter(&redis, redis.locks.simple(), false), redis)
}

async fn spin() -> (Adapter<RedisLock>, TestRedis) {
    let redis = TestRedis::new().await;
    (redis_adapter(&redis, redis.locks.spin(), true), redis)
}

async fn pubsub() -> (Adapter<RedisLock>, TestRedis) {
    let redis = TestRedis::new().await;
    (redis_adapter(&redis, redis.locks.pubsub(), true), redis)
}

/// The pub/sub lock behind the in-process key queue (`redis-pubsub` as the
/// app wires it).
async fn key_queued() -> (Adapter<KeyQueue<RedisLock>>, TestRedis) {
    let redis = TestRedis::new().await;
    let adapter = Adapter {
        hands_along: true,
        ..redis_adapter(&redis, KeyQueue::new(redis.locks.pubsub()), true)
    };
    (adapter, redis)
}

/// The spin lock behind the in-process key queue (`redis-spin` as the app
/// wires it).
async fn key_queued_spin() -> (Adapter<KeyQueue<RedisLock>>, TestRedis) {
    let redis = TestRedis::new().await;
    let adapter = Adapter {
        hands_along: true,
        ..redis_adapter(&redis, KeyQueue::new(redis.locks.spin()), true)
    };
    (adapter, redis)
}

/// RedLock over three logical masters (`redis-redlock`).
async fn redlock() -> (Adapter<RedLock>, TestRedLock) {
    let redlock = TestRedLock::new();
    let seen = redlock.lock.clone();
    let adapter = Adapter {
        lock: Arc::new(redlock.lock.clone()),
        waits: true,
        hands_along: false,
        retries_unavailable: true,
        stats: Arc::new(move || seen.stats()),
    };
    (adapter, redlock)
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
    (@one $contract:ident $adapter:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $adapter() {
            let (adapter, _redis) = super::$adapter().await;
            tokio::time::timeout(super::LIMIT, super::$contract(adapter))
                .await
                .expect("contract timed out");
        }
    };
}

contract!(mutual_exclusion: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);
contract!(a_stale_release_is_lost_and_harmless: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);
contract!(crashed_holder_expires: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);
contract!(watchdog_keeps_a_long_section_exclusive: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);
contract!(an_outlived_lease_is_flagged_lost: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);
contract!(wait_budget_is_honoured: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);
contract!(fencing_tokens_increase: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);
contract!(dropped_guards_and_cancelled_waiters: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);
contract!(wake_one: local, pubsub);
contract!(hand_over: pubsub);
contract!(extreme_options_are_accepted: local, simple, spin, pubsub, key_queued, key_queued_spin, redlock);

// -------------------------------------------------------- Redis specifics

/// One key's fencing counter is shared by every kind and every process on
/// the same prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_and_instances_share_one_fence_counter_per_key() {
    let redis = TestRedis::new().await;
    let other_process =
        RedisLocks::connect(&redis.url, &redis.prefix, RedisLockSettings::default())
            .await
            .unwrap();
    let key = LockKey::new("seat:3:1");
    let mut last = 0;
    for lock in [
        redis.locks.simple(),
        other_process.pubsub(),
        redis.locks.spin(),
        other_process.simple(),
    ] {
        let guard = lock
            .acquire(&key, opts(10_000, 1_000, false))
            .await
            .unwrap();
        assert!(guard.fence().token() > last);
        last = guard.fence().token();
        guard.release().await.unwrap();
    }
}

/// A pub/sub waiter in one process is handed the lock by a release in
/// another: one attempt (the one that queued it), one hand-over, no retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_hands_the_lock_to_a_waiter_in_another_instance() {
    let redis = TestRedis::new().await;
    let other_process =
        RedisLocks::connect(&redis.url, &redis.prefix, RedisLockSettings::default())
            .await
            .unwrap();
    let key = LockKey::new("seat:3:2");
    let holder = redis
        .locks
        .pubsub()
        .acquire(&key, opts(60_000, 0, true))
        .await
        .unwrap();
    let holder_token = holder.fence().token();
    let waiter = {
        let lock = other_process.pubsub();
        let key = key.clone();
        tokio::spawn(async move { lock.acquire(&key, opts(60_000, 30_000, true)).await })
    };
    while other_process.stats().waits < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holder.release().await.unwrap();
    // the holder's lease is a minute: only the hand-over gets it in time
    let guard = timeout(Duration::from_secs(10), waiter)
        .await
        .expect("not handed the lock")
        .unwrap()
        .unwrap();
    assert!(guard.fence().token() > holder_token);
    assert_eq!(other_process.stats().attempts, 1);
    assert_eq!(other_process.stats().wakeups, 1);
    assert_eq!(redis.locks.stats().handovers, 1);
    guard.release().await.unwrap();
}

/// When the lock disappears under a holder (expired during a stall, or
/// deleted), the watchdog's next renewal flags the fence lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_flags_a_vanished_lock_as_lost() {
    let redis = TestRedis::new().await;
    let guard = redis
        .locks
        .pubsub()
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
    assert!(matches!(guard.release().await, Err(Failure::LockLost)));
}

/// Redis unreachable: `connect` and every acquisition answer `Unavailable`
/// promptly, never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_unavailable_promptly() {
    let dead = "redis://127.0.0.1:1";
    let prompt = Duration::from_secs(5);
    let settings = RedisLockSettings::default();
    let connected = timeout(prompt, RedisLocks::connect(dead, &test_prefix(), settings))
        .await
        .expect("connect hung");
    assert!(matches!(connected, Err(Failure::Unavailable(_))));

    let locks = RedisLocks::connect_lazy(dead, &test_prefix(), settings)
        .await
        .unwrap();
    assert!(
        timeout(prompt, locks.ping())
            .await
            .expect("ping hung")
            .is_err()
    );
    let key = LockKey::new("seat:4:1");
    for lock in [locks.simple(), locks.spin(), locks.pubsub()] {
        let acquired = timeout(prompt, lock.acquire(&key, opts(10_000, 30_000, true)))
            .await
            .expect("acquire hung");
        assert!(
            matches!(acquired, Err(Failure::Unavailable(_))),
            "{lock:?}: {acquired:?}"
        );
    }
    assert!(!locks.is_subscribed());
}

/// A malformed URL or a prefix that would break the hash tag is a
/// configuration error, not an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_is_refused_at_connect() {
    let settings = RedisLockSettings::default();
    assert!(matches!(
        RedisLocks::connect("not-a-url", &test_prefix(), settings).await,
        Err(Failure::Unknown(_))
    ));
    assert!(matches!(
        RedisLocks::connect(&redis_url(), "bad{prefix", settings).await,
        Err(Failure::Unknown(_))
    ));
    assert!(matches!(
        RedisLocks::connect_lazy(&redis_url(), "bad}prefix", settings).await,
        Err(Failure::Unknown(_))
    ));
}

/// 100 requests of one process for one key through the in-process key queue:
/// they never wait in Redis (one local request at a time reaches it) and
/// are handed the lock in memory along streaks of at most MAX_STREAK + 1
/// holders, so Redis sees one acquisition per streak, not per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_queue_hands_a_hot_key_along_in_memory() {
    for (a, _redis) in [key_queued().await, key_queued_spin().await] {
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
                    guard.release().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            timeout(LIMIT, task).await.unwrap().unwrap();
        }
        assert_eq!(counter.load(Ordering::SeqCst), 100);
        let stats = (a.stats)();
        assert_eq!(stats.waits, 0, "{stats:?}");
        let fewest = 100_u64.div_ceil(u64::from(MAX_STREAK) + 1);
        assert!(
            (fewest..100).contains(&stats.attempts),
            "{stats:?}: expected one Redis acquisition per streak"
        );
    }
}
