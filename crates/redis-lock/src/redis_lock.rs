//! The Redis lock adapter: `redis-simple`, `redis-spin` and `redis-pubsub`
//! over one deadpool-redis pool and one subscriber connection per process.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use concert_domain::{
    DistributedLock, Fence, LockError, LockGuard, LockKey, LockKind, LockOptions,
};
use deadpool_redis::redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, ErrorKind, RedisError, Script, ServerErrorKind, Value,
};
use deadpool_redis::{Manager, Pool, PoolError, Runtime};
use futures_core::Stream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::SpinBackoff;
use crate::keys::{Keys, Prefix};
use crate::lease::{KeepAlive, LeaseOps, later, owner_token};
use crate::stats::{Counters, LockStats};
use crate::waiters::{Ticket, Waiters, WakePolicy};

/// `SET lock owner NX PX lease` and, only if it succeeded, `INCR fence`, in
/// one atomic step. A fence counter that does not exist yet (a new key, or a
/// Redis that lost its data) is first seeded with the server time in
/// microseconds, so tokens keep growing across a Redis restart without
/// persistence. Returns `{1, token}` or `{0, holder's PTTL in ms}`.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
  end
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
",
    )
});

/// Compare-and-delete, then publish the release on the key's channel.
/// Never deletes another owner's lock. Returns 1 if released, 0 if not held.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
",
    )
});

/// Compare-and-extend: 1 if the lease was renewed, 0 if not held.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Tuning of a [`RedisLocks`]. The defaults suit production; the spin and
/// wake settings exist so the lab can compare the alternatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisLockSettings {
    /// Pool size (connections are multiplexed; a few are plenty).
    pub pool_size: usize,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on every command's reply.
    pub response_timeout: Duration,
    /// Pacing of `redis-spin` retries (and of `redis-pubsub` retries while
    /// the subscriber connection is down).
    pub spin: SpinBackoff,
    /// Whom a release wakes under `redis-pubsub`.
    pub wake: WakePolicy,
    /// The watchdog stops renewing a lease held longer than this (a leaked
    /// or stuck guard then behaves like a crashed holder).
    pub max_hold: Duration,
}

impl Default for RedisLockSettings {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            spin: SpinBackoff::default(),
            wake: WakePolicy::One,
            max_hold: Duration::from_secs(60),
        }
    }
}

/// The Redis lock adapters of one process: the connection pool, the one
/// subscriber connection and its dispatcher, the key prefix and the
/// counters. Cheap to clone (shared); the subscriber stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct RedisLocks {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    waiters: Arc<Waiters>,
    subscribed: Arc<AtomicBool>,
    dispatcher: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

/// What the lock operations and the keep-alives share.
struct Core {
    /// Creates connections (with the connect timeout).
    pool: Pool,
    /// The multiplexed connection in use, shared by every operation (it
    /// pipelines concurrent requests on one socket); replaced through the
    /// pool after a connection failure. Taking a fresh pool object per
    /// command would cost a recycling `PING` round trip each time.
    current: Mutex<Option<MultiplexedConnection>>,
    prefix: Prefix,
    counters: Arc<Counters>,
    settings: RedisLockSettings,
}

impl fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocks")
            .field("prefix", &self.inner.core.prefix)
            .field("subscribed", &self.inner.subscribed.load(Ordering::Relaxed))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RedisLocks {
    /// Connects with the default settings. Fails promptly (within the
    /// connect and response timeouts) with [`LockError::Unavailable`] when
    /// Redis does not answer, and with [`LockError::Unknown`] for an invalid
    /// URL or a prefix containing `{` or `}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLocks, LockError> {
        Self::connect_with(url, prefix, RedisLockSettings::default()).await
    }

    /// [`RedisLocks::connect`] with explicit settings.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        settings: RedisLockSettings,
    ) -> Result<RedisLocks, LockError> {
        let (client, pool, prefix) = open(url, prefix, &settings)?;
        let core = Core::new(pool, prefix, settings);
        core.ping().await?;
        let subscription = subscribe(&client, &core.prefix.release_pattern(), &settings)
            .await
            .map_err(|e| LockError::Unavailable(e.context("subscribing to lock releases")))?;
        Ok(Self::assemble(client, core, Some(subscription)))
    }

    /// Like [`RedisLocks::connect`] but without contacting Redis: the
    /// connection opens on first use and the subscriber connects (and
    /// reconnects) in the background. Fails only for an invalid URL or
    /// prefix. Lock calls made while Redis is down fail with
    /// [`LockError::Unavailable`].
    pub async fn connect_lazy(
        url: &str,
        prefix: &str,
        settings: RedisLockSettings,
    ) -> Result<RedisLocks, LockError> {
        let (client, pool, prefix) = open(url, prefix, &settings)?;
        Ok(Self::assemble(
            client,
            Core::new(pool, prefix, settings),
            None,
        ))
    }

    fn assemble(
        client: Client,
        core: Core,
        subscription: Option<(PubSubSink, PubSubStream)>,
    ) -> RedisLocks {
        let settings = core.settings;
        let waiters = Arc::new(Waiters::new(settings.wake, core.counters.clone()));
        let subscribed = Arc::new(AtomicBool::new(subscription.is_some()));
        let dispatcher = tokio::spawn(dispatch(
            client,
            core.prefix.release_pattern(),
            subscription,
            waiters.clone(),
            subscribed.clone(),
            settings,
        ));
        RedisLocks {
            inner: Arc::new(Inner {
                core: Arc::new(core),
                waiters,
                subscribed,
                dispatcher,
            }),
        }
    }

    /// A lock handle of the given kind, sharing this pool, subscriber and
    /// counters. `LockKind::Local` is not a Redis kind: use
    /// [`crate::LocalLock`] for it; given here it yields the pub/sub lock.
    pub fn lock(&self, kind: LockKind) -> RedisLock {
        let mode = match kind {
            LockKind::RedisSimple => Mode::Simple,
            LockKind::RedisSpin => Mode::Spin,
            LockKind::RedisPubSub | LockKind::Local => Mode::PubSub,
        };
        RedisLock {
            locks: self.clone(),
            mode,
        }
    }

    /// The counters of every lock handle of this instance, since it was
    /// created.
    pub fn stats(&self) -> LockStats {
        self.inner.core.counters.snapshot()
    }

    /// True while the subscriber connection is up and subscribed (while it
    /// is down, pub/sub waiters fall back to backoff polling).
    pub fn is_subscribed(&self) -> bool {
        self.inner.subscribed.load(Ordering::Acquire)
    }

    /// Deletes every lock and fencing counter under this prefix and returns
    /// how many keys it deleted. For tests and for retiring a prefix: never
    /// while its locks are in use (holders would lose their locks).
    pub async fn purge(&self) -> Result<u64, LockError> {
        let core = &self.inner.core;
        let pattern = core.prefix.key_pattern();
        let mut conn = core.conn().await?;
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| core.fail(e))?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| core.fail(e))?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// One `PING`, bounded by the response timeout.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.inner.core.ping().await.map_err(anyhow::Error::from)
    }
}

fn open(
    url: &str,
    prefix: &str,
    settings: &RedisLockSettings,
) -> Result<(Client, Pool, Prefix), LockError> {
    let prefix = Prefix::new(prefix)?;
    let client = Client::open(url).context("invalid Redis URL")?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout));
    let manager = Manager::new_with_config(url, config).context("invalid Redis URL")?;
    let pool = Pool::builder(manager)
        .max_size(settings.pool_size.max(1))
        .wait_timeout(Some(settings.connect_timeout + settings.response_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.response_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the Redis pool")?;
    Ok((client, pool, prefix))
}

/// Opens the subscriber connection and subscribes to every release channel
/// of this prefix (one pattern: the subscription is active before any
/// waiter's first attempt, so no release can slip between an attempt and
/// the subscription).
async fn subscribe(
    client: &Client,
    pattern: &str,
    settings: &RedisLockSettings,
) -> anyhow::Result<(PubSubSink, PubSubStream)> {
    let pubsub = tokio::time::timeout(settings.connect_timeout, client.get_async_pubsub())
        .await
        .context("connecting the subscriber timed out")??;
    let (mut sink, stream) = pubsub.split();
    tokio::time::timeout(settings.response_timeout, sink.psubscribe(pattern))
        .await
        .context("PSUBSCRIBE timed out")??;
    Ok((sink, stream))
}

/// The subscriber's dispatcher: hands each release to the waiter registry,
/// pings the connection, and reconnects when it breaks (waking the first
/// waiter of every key, since releases may have been missed meanwhile).
async fn dispatch(
    client: Client,
    pattern: String,
    mut subscription: Option<(PubSubSink, PubSubStream)>,
    waiters: Arc<Waiters>,
    subscribed: Arc<AtomicBool>,
    settings: RedisLockSettings,
) {
    let mut failures = 0u32;
    loop {
        let (mut sink, mut stream) = match subscription.take() {
            Some(s) => s,
            None => match subscribe(&client, &pattern, &settings).await {
                Ok(s) => {
                    waiters.resync();
                    s
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %format!("{e:#}"), "lock subscriber cannot connect; retrying");
                    tokio::time::sleep(reconnect_delay(failures)).await;
                    continue;
                }
            },
        };
        subscribed.store(true, Ordering::Release);
        let mut health = tokio::time::interval(Duration::from_secs(5));
        health.reset();
        loop {
            tokio::select! {
                msg = next_message(&mut stream) => match msg {
                    Some(msg) => waiters.released(msg.get_channel_name()),
                    None => break,
                },
                _ = health.tick() => {
                    let pong = tokio::time::timeout(settings.response_timeout, sink.ping::<Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        subscribed.store(false, Ordering::Release);
        tracing::warn!("lock subscriber connection lost; reconnecting");
        waiters.resync();
        failures = 1;
        tokio::time::sleep(reconnect_delay(failures)).await;
    }
}

fn reconnect_delay(failures: u32) -> Duration {
    SpinBackoff {
        base: Duration::from_millis(50),
        max: Duration::from_secs(2),
        jitter: true,
    }
    .delay(failures)
    .max(Duration::from_millis(10))
}

async fn next_message(stream: &mut PubSubStream) -> Option<redis::Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Redis errors that mean "cannot reach Redis" become `Unavailable`; the
/// rest (script or protocol errors) `Unknown`.
fn redis_error(e: RedisError) -> LockError {
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
    {
        LockError::Unavailable(anyhow::Error::new(e))
    } else {
        LockError::Unknown(anyhow::Error::new(e).context("Redis lock command failed"))
    }
}

fn pool_error(e: PoolError) -> LockError {
    match e {
        PoolError::Backend(e) => redis_error(e),
        other => LockError::Unavailable(anyhow!("Redis pool: {other}")),
    }
}

/// A lease in whole milliseconds for `PX`/`PEXPIRE`: at least 1, at most
/// ten years (Redis refuses expiry times that overflow its clock).
fn millis(d: Duration) -> u64 {
    const MAX: u64 = 10 * 365 * 24 * 3600 * 1000;
    u64::try_from(d.as_millis()).unwrap_or(MAX).clamp(1, MAX)
}

enum Attempt {
    Acquired(u64),
    /// Taken; the holder's remaining lease if it has one.
    Held(Option<Duration>),
}

impl Core {
    fn new(pool: Pool, prefix: Prefix, settings: RedisLockSettings) -> Self {
        Self {
            pool,
            current: Mutex::new(None),
            prefix,
            counters: Arc::default(),
            settings,
        }
    }

    fn current(&self) -> MutexGuard<'_, Option<MultiplexedConnection>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn conn(&self) -> Result<MultiplexedConnection, LockError> {
        if let Some(conn) = self.current().clone() {
            return Ok(conn);
        }
        let fresh = deadpool_redis::Connection::take(self.pool.get().await.map_err(pool_error)?);
        *self.current() = Some(fresh.clone());
        Ok(fresh)
    }

    /// Translates a command's error; a connection failure also drops the
    /// current connection so the next command opens a new one.
    fn fail(&self, e: RedisError) -> LockError {
        let error = redis_error(e);
        if matches!(error, LockError::Unavailable(_)) {
            self.current().take();
        }
        error
    }

    async fn ping(&self) -> Result<(), LockError> {
        let mut conn = self.conn().await?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(LockError::Unknown(anyhow!(
                "unexpected PING reply {pong:?}"
            )))
        }
    }

    async fn try_acquire(
        &self,
        keys: &Keys,
        owner: &str,
        lease: Duration,
    ) -> Result<Attempt, LockError> {
        self.counters.attempt();
        let mut conn = self.conn().await?;
        let (acquired, n): (i64, i64) = ACQUIRE
            .key(&keys.lock)
            .key(&keys.fence)
            .arg(owner)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(match acquired {
            1 => Attempt::Acquired(
                u64::try_from(n).map_err(|_| anyhow!("negative fencing token {n}"))?,
            ),
            _ => Attempt::Held(u64::try_from(n).ok().map(Duration::from_millis)),
        })
    }

    async fn release(&self, key: &LockKey, owner: &str) -> Result<bool, LockError> {
        let keys = self.prefix.keys(key);
        let mut conn = self.conn().await?;
        let released: i64 = RELEASE
            .key(&keys.lock)
            .arg(owner)
            .arg(&keys.channel)
            .arg("released")
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(released == 1)
    }
}

#[async_trait]
impl LeaseOps for Core {
    async fn extend(&self, key: &LockKey, owner: &str, lease: Duration) -> Result<bool, LockError> {
        let keys = self.prefix.keys(key);
        let mut conn = self.conn().await?;
        let extended: i64 = EXTEND
            .key(&keys.lock)
            .arg(owner)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(extended == 1)
    }

    fn release_detached(self: Arc<Self>, key: LockKey, owner: String) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = self.release(&key, &owner).await {
                    tracing::warn!(%key, error = %e, "background lock release failed; the lease will run out");
                }
            });
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Simple,
    Spin,
    PubSub,
}

/// One kind of Redis lock (see [`RedisLocks::lock`]); implements
/// [`DistributedLock`]:
///
/// - `redis-simple`: one attempt; if the key is taken, [`LockError::Timeout`]
///   at once (the wait budget is not used).
/// - `redis-spin`: retries with exponential backoff and full jitter, each
///   sleep also bounded by the holder's remaining lease and the budget.
/// - `redis-pubsub`: joins the key's waiter queue (the process's one
///   subscription is already active), then tries; on failure sleeps until
///   woken by a release (one waiter per release) or until
///   `min(remaining budget, holder's remaining lease)`, then retries.
///
/// Every kind: the guard carries a random owner token and a fencing token
/// one higher than the key's previous one; the lease is renewed every third
/// of it while the guard lives (if `watchdog`); a guard dropped without
/// release is released in the background.
#[derive(Clone)]
pub struct RedisLock {
    locks: RedisLocks,
    mode: Mode,
}

impl fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLock")
            .field("mode", &self.mode)
            .field("prefix", &self.locks.inner.core.prefix)
            .finish()
    }
}

impl RedisLock {
    /// The counters shared by every handle of the same [`RedisLocks`].
    pub fn stats(&self) -> LockStats {
        self.locks.stats()
    }

    fn core(&self) -> &Arc<Core> {
        &self.locks.inner.core
    }

    fn guard(
        &self,
        key: &LockKey,
        owner: String,
        token: u64,
        options: LockOptions,
        started: Instant,
    ) -> LockGuard {
        let core = self.core();
        let guard = LockGuard::new(key.clone(), owner, Fence::new(token));
        KeepAlive::start(
            core.clone(),
            &guard,
            options.lease,
            options.watchdog,
            started,
            core.settings.max_hold,
        )
        .attach(guard)
    }

    /// How long a waiter sleeps before its next attempt.
    fn pause(
        &self,
        retry: u32,
        remaining: Duration,
        holder_lease: Option<Duration>,
        polling: bool,
    ) -> Duration {
        let core = self.core();
        let mut pause = remaining;
        if let Some(lease) = holder_lease {
            pause = pause.min(lease + Duration::from_millis(1));
        }
        if polling {
            pause = pause.min(core.settings.spin.delay(retry));
        }
        pause
    }
}

#[async_trait]
impl DistributedLock for RedisLock {
    async fn acquire(&self, key: &LockKey, options: LockOptions) -> Result<LockGuard, LockError> {
        let core = self.core();
        let keys = core.prefix.keys(key);
        let owner = owner_token();
        let deadline = later(Instant::now(), options.wait);
        let ticket: Option<Ticket> =
            (self.mode == Mode::PubSub).then(|| self.locks.inner.waiters.register(&keys.channel));
        let mut retry = 0u32;
        loop {
            let started = Instant::now();
            let holder_lease = match core.try_acquire(&keys, &owner, options.lease).await? {
                Attempt::Acquired(token) => {
                    if let Some(ticket) = ticket {
                        ticket.done();
                    }
                    return Ok(self.guard(key, owner, token, options, started));
                }
                Attempt::Held(holder_lease) => holder_lease,
            };
            let now = Instant::now();
            if self.mode == Mode::Simple || now >= deadline {
                return Err(LockError::Timeout);
            }
            retry = retry.saturating_add(1);
            core.counters.wait();
            let remaining = deadline - now;
            match &ticket {
                None => {
                    tokio::time::sleep(self.pause(retry, remaining, holder_lease, true)).await;
                }
                Some(ticket) => {
                    ticket.rearm();
                    let polling = !self.locks.is_subscribed();
                    ticket
                        .wait(self.pause(retry, remaining, holder_lease, polling))
                        .await;
                }
            }
        }
    }

    async fn release(&self, mut guard: LockGuard) -> Result<(), LockError> {
        // Stop the watchdog now, but keep the release-on-drop armed until
        // the release below has answered (if this future is cancelled, the
        // lock is still released in the background).
        let keepalive = KeepAlive::take(&mut guard);
        let released = self.core().release(guard.key(), guard.owner()).await;
        if let Some(keepalive) = keepalive {
            keepalive.disarm();
        }
        match released? {
            true => Ok(()),
            false => Err(LockError::NotHeld),
        }
    }
}
