//! Lock contention benchmark: N tasks contend for one key, each holding it
//! for a short critical section; prints wall time and the adapters'
//! counters per lock kind. The numbers in `docs/locking.md` come from:
//!
//! ```text
//! cargo run --release -p concert-redis-lock --example lock_bench -- [contenders] [hold_us] [runs]
//! ```
//!
//! (defaults 100 contenders, 1000 µs hold, 5 runs; median run reported),
//! then the uncontended cost of one acquire + release per kind.
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`) with a fresh key
//! prefix, deleted afterwards.

use std::sync::Arc;
use std::time::Duration;

use concert_domain::{DistributedLock, LockError, LockKey, LockKind, LockOptions};
use concert_redis_lock::{
    LocalLock, LockStats, RedisLockSettings, RedisLocks, SpinBackoff, WakePolicy,
};
use tokio::time::Instant;

struct Outcome {
    elapsed: Duration,
    acquired: usize,
    stats: LockStats,
}

async fn contend<L: DistributedLock + 'static>(
    lock: Arc<L>,
    contenders: usize,
    hold: Duration,
    stats: impl Fn() -> LockStats,
) -> Outcome {
    let key = LockKey::new(format!("bench:{}", fastrand_key()));
    let before = stats();
    let options = LockOptions {
        lease: Duration::from_secs(10),
        wait: Duration::from_secs(60),
        watchdog: true,
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..contenders)
        .map(|_| {
            let (lock, key) = (lock.clone(), key.clone());
            tokio::spawn(async move {
                let guard = lock.acquire(&key, options).await?;
                if !hold.is_zero() {
                    tokio::time::sleep(hold).await;
                }
                lock.release(guard).await
            })
        })
        .collect();
    let mut acquired = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => acquired += 1,
            Ok(Err(LockError::Timeout)) => {}
            Ok(Err(e)) => eprintln!("contender failed: {e}"),
            Err(e) => eprintln!("contender panicked: {e}"),
        }
    }
    let elapsed = started.elapsed();
    let after = stats();
    Outcome {
        elapsed,
        acquired,
        stats: LockStats {
            attempts: after.attempts - before.attempts,
            waits: after.waits - before.waits,
            wakeups: after.wakeups - before.wakeups,
            renewals: after.renewals - before.renewals,
            lost: after.lost - before.lost,
        },
    }
}

fn fastrand_key() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn redis_locks(url: &str, prefix: &str, settings: RedisLockSettings) -> RedisLocks {
    RedisLocks::connect_with(url, prefix, settings)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url}: {e:#}"))
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let contenders = args.first().copied().unwrap_or(100) as usize;
    let hold = Duration::from_micros(args.get(1).copied().unwrap_or(1000));
    let runs = args.get(2).copied().unwrap_or(5).max(1) as usize;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench:{}", fastrand_key());

    let default = RedisLockSettings::default();
    let fixed_spin = RedisLockSettings {
        spin: SpinBackoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(10),
            jitter: false,
        },
        ..default
    };
    let wake_all = RedisLockSettings {
        wake: WakePolicy::All,
        ..default
    };
    let cases: Vec<(&str, Option<(LockKind, RedisLockSettings)>)> = vec![
        ("local (wake-one)", None),
        ("redis-simple", Some((LockKind::RedisSimple, default))),
        (
            "redis-spin, fixed 10 ms",
            Some((LockKind::RedisSpin, fixed_spin)),
        ),
        (
            "redis-spin, jitter 1-32 ms",
            Some((LockKind::RedisSpin, default)),
        ),
        (
            "redis-pubsub, wake-all",
            Some((LockKind::RedisPubSub, wake_all)),
        ),
        (
            "redis-pubsub, wake-one",
            Some((LockKind::RedisPubSub, default)),
        ),
    ];

    println!(
        "{contenders} contenders on one key, hold {} µs, median of {runs} runs\n",
        hold.as_micros()
    );
    println!(
        "| lock | acquired | time (ms) | attempts | attempts/acquisition | waits | wake-ups |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, case) in cases {
        let mut outcomes = Vec::new();
        for _ in 0..runs {
            let outcome = match case {
                None => {
                    let lock = LocalLock::new();
                    let seen = lock.clone();
                    contend(Arc::new(lock), contenders, hold, move || seen.stats()).await
                }
                Some((kind, settings)) => {
                    let locks = redis_locks(&url, &prefix, settings).await;
                    let seen = locks.clone();
                    contend(Arc::new(locks.lock(kind)), contenders, hold, move || {
                        seen.stats()
                    })
                    .await
                }
            };
            outcomes.push(outcome);
        }
        outcomes.sort_by_key(|o| o.elapsed);
        let o = &outcomes[outcomes.len() / 2];
        println!(
            "| {name} | {} / {contenders} | {:.1} | {} | {:.2} | {} | {} |",
            o.acquired,
            o.elapsed.as_secs_f64() * 1000.0,
            o.stats.attempts,
            o.stats.attempts as f64 / o.acquired.max(1) as f64,
            o.stats.waits,
            o.stats.wakeups,
        );
    }

    println!("\nuncontended: 2000 sequential acquire + release on one key\n");
    println!("| lock | µs per acquire + release |");
    println!("|---|---|");
    let rounds = 2000;
    let local = LocalLock::new();
    println!("| local | {:.1} |", sequential(&local, rounds).await);
    let locks = redis_locks(&url, &prefix, default).await;
    for (name, kind) in [
        ("redis-simple", LockKind::RedisSimple),
        ("redis-spin", LockKind::RedisSpin),
        ("redis-pubsub", LockKind::RedisPubSub),
    ] {
        println!(
            "| {name} | {:.1} |",
            sequential(&locks.lock(kind), rounds).await
        );
    }
    let _ = locks.purge().await;
}

/// Mean microseconds per acquire + release, one at a time.
async fn sequential<L: DistributedLock>(lock: &L, rounds: u32) -> f64 {
    let key = LockKey::new(format!("bench:seq:{}", fastrand_key()));
    let options = LockOptions {
        lease: Duration::from_secs(10),
        wait: Duration::from_secs(1),
        watchdog: true,
    };
    let started = Instant::now();
    for _ in 0..rounds {
        let guard = lock
            .acquire(&key, options)
            .await
            .expect("uncontended acquire");
        lock.release(guard).await.expect("release");
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}
