//! The lock port, its guard and fencing token, and [`with_lock`], the one
//! helper that orders lock and transaction correctly.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::{ScheduleId, SeatNumber, UserId};

/// What a lock protects, as a plain name (`seat:3:7`, `wallet:42`). Adapters
/// add their own prefix and layout around it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockKey(String);

impl LockKey {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The lock on one seat of one schedule.
    pub fn seat(schedule: ScheduleId, seat: SeatNumber) -> Self {
        Self(format!("seat:{schedule}:{seat}"))
    }

    /// The lock on one user's wallet (point use and payment).
    pub fn wallet(user: UserId) -> Self {
        Self(format!("wallet:{user}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a lock may be held without renewal, and how long to wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// The lease (TTL): a holder that vanishes blocks others at most this long.
    pub lease: Duration,
    /// The wait budget: past it, acquisition fails with [`LockError::Timeout`].
    pub wait: Duration,
    /// Renew the lease every third of it while the guard is held.
    pub watchdog: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            wait: Duration::from_secs(5),
            watchdog: true,
        }
    }
}

/// The fencing token of one acquisition: a number that grows with every
/// acquisition of the key, and a flag the watchdog raises when the lease
/// turned out to be lost. Storage refuses a write whose token is lower than
/// one it has already accepted, and a repository does not commit under a
/// lost lease.
#[derive(Debug, Clone)]
pub struct Fence {
    token: u64,
    lost: Arc<AtomicBool>,
}

impl Fence {
    pub fn new(token: u64) -> Self {
        Self {
            token,
            lost: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    /// True once the holder learnt that its lease expired or was taken.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Called by the adapter's watchdog when a renewal finds the lock gone.
    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
    }
}

/// Proof of one acquisition. Hand it back to [`DistributedLock::release`].
/// The adapter may attach a keep-alive (its watchdog, a release-on-drop
/// hook) that lives exactly as long as the guard.
pub struct LockGuard {
    key: LockKey,
    owner: String,
    fence: Fence,
    keepalive: Option<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("owner", &self.owner)
            .field("fence", &self.fence.token)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    pub fn new(key: LockKey, owner: impl Into<String>, fence: Fence) -> Self {
        Self {
            key,
            owner: owner.into(),
            fence,
            keepalive: None,
        }
    }

    /// Attaches the adapter's keep-alive (dropped with the guard).
    pub fn with_keepalive(mut self, keepalive: Box<dyn Any + Send + Sync>) -> Self {
        self.keepalive = Some(keepalive);
        self
    }

    /// Takes the keep-alive back, e.g. to stop a watchdog on release.
    pub fn take_keepalive(&mut self) -> Option<Box<dyn Any + Send + Sync>> {
        self.keepalive.take()
    }

    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// The random owner token of this acquisition.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Not acquired within the wait budget.
    #[error("lock not acquired within the wait budget")]
    Timeout,
    /// Released or renewed by someone who no longer owns the lock (its lease
    /// ran out and, possibly, another holder took it).
    #[error("the lock is not held by this owner any more")]
    NotHeld,
    /// The lock service cannot be reached.
    #[error("lock service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// A mutual-exclusion lock per key, possibly shared by many processes.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait DistributedLock: Send + Sync {
    /// Acquires the lock on `key` for `options.lease`, waiting at most
    /// `options.wait`. The guard carries a random owner token and a fencing
    /// token greater than every earlier acquisition's for this key.
    ///
    /// MUST return [`LockError::Timeout`] when the wait budget runs out and
    /// [`LockError::Unavailable`] when the lock service cannot be reached;
    /// it MUST NOT wait longer than the budget (plus one round trip).
    async fn acquire(&self, key: &LockKey, options: LockOptions) -> Result<LockGuard, LockError>;

    /// Releases the lock if `guard` still owns it, and stops its watchdog.
    ///
    /// MUST NOT delete a lock owned by another token, and MUST return
    /// [`LockError::NotHeld`] in that case (the lease had run out).
    async fn release(&self, guard: LockGuard) -> Result<(), LockError>;
}

#[async_trait]
impl<T: DistributedLock + ?Sized> DistributedLock for Arc<T> {
    async fn acquire(&self, key: &LockKey, options: LockOptions) -> Result<LockGuard, LockError> {
        (**self).acquire(key, options).await
    }

    async fn release(&self, guard: LockGuard) -> Result<(), LockError> {
        (**self).release(guard).await
    }
}

/// Runs `work` under the lock on `key`, in the only safe order:
/// **acquire -> begin transaction -> decide -> commit -> release**.
///
/// `work` receives the acquisition's [`Fence`] and must run (and finish) its
/// whole transaction before it returns; the lock is released only after that
/// future has completed, whether it returned `Ok`, `Err`, or panicked (the
/// panic is re-raised after the release). If the release reports that the
/// lease was lost, the work's result stands (storage already checked the
/// fence); the loss is logged.
pub async fn with_lock<L, T, E, F, Fut>(
    lock: &L,
    key: &LockKey,
    options: LockOptions,
    work: F,
) -> Result<T, E>
where
    L: DistributedLock + ?Sized,
    F: FnOnce(Fence) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<LockError>,
{
    let guard = lock.acquire(key, options).await?;
    let fence = guard.fence().clone();
    let outcome = CatchUnwind(Box::pin(work(fence))).await;
    if let Err(e) = lock.release(guard).await {
        tracing::warn!(%key, error = %e, "lock release failed after the work finished");
    }
    match outcome {
        Ok(result) => result,
        Err(panic) => resume_unwind(panic),
    }
}

/// Polls a future, turning a panic inside it into an `Err` so the caller can
/// clean up before re-raising it.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the order of lock events.
    fn recording_lock(log: Arc<Mutex<Vec<String>>>, fence: u64) -> MockDistributedLock {
        let mut lock = MockDistributedLock::new();
        let acquire_log = log.clone();
        lock.expect_acquire().times(1).returning(move |key, _| {
            acquire_log.lock().unwrap().push(format!("acquire {key}"));
            Ok(LockGuard::new(key.clone(), "owner-1", Fence::new(fence)))
        });
        lock.expect_release().times(1).returning(move |guard| {
            log.lock()
                .unwrap()
                .push(format!("release {} {}", guard.key(), guard.owner()));
            Ok(())
        });
        lock
    }

    #[tokio::test]
    async fn releases_after_the_work_and_passes_the_fence() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let lock = recording_lock(log.clone(), 41);
        let key = LockKey::new("seat:1:1");
        let work_log = log.clone();
        let out: Result<u64, LockError> =
            with_lock(&lock, &key, LockOptions::default(), |fence| async move {
                work_log.lock().unwrap().push("begin-commit".into());
                Ok(fence.token())
            })
            .await;
        assert_eq!(out.unwrap(), 41);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "acquire seat:1:1",
                "begin-commit",
                "release seat:1:1 owner-1"
            ]
        );
    }

    #[tokio::test]
    async fn releases_when_the_work_fails() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let lock = recording_lock(log.clone(), 1);
        let key = LockKey::new("wallet:9");
        let out: Result<(), LockError> =
            with_lock(&lock, &key, LockOptions::default(), |_| async {
                Err(LockError::Unknown(anyhow::anyhow!("rolled back")))
            })
            .await;
        assert!(matches!(out, Err(LockError::Unknown(_))));
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn releases_when_the_work_panics_then_re_raises() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let lock = Arc::new(recording_lock(log.clone(), 1));
        let task_lock = lock.clone();
        let joined = tokio::spawn(async move {
            let key = LockKey::new("seat:2:2");
            let _: Result<(), LockError> =
                with_lock(&*task_lock, &key, LockOptions::default(), |_| async {
                    panic!("bug in the closure")
                })
                .await;
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(
            *log.lock().unwrap(),
            ["acquire seat:2:2", "release seat:2:2 owner-1"]
        );
    }

    #[tokio::test]
    async fn no_work_without_the_lock() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .returning(|_, _| Err(LockError::Timeout));
        lock.expect_release().never();
        let ran = AtomicBool::new(false);
        let out: Result<(), LockError> = with_lock(
            &lock,
            &LockKey::new("k"),
            LockOptions::default(),
            |_| async {
                ran.store(true, Ordering::SeqCst);
                Ok(())
            },
        )
        .await;
        assert!(matches!(out, Err(LockError::Timeout)));
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_failed_release_keeps_the_committed_result() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .returning(|key, _| Ok(LockGuard::new(key.clone(), "o", Fence::new(3))));
        lock.expect_release().returning(|_| Err(LockError::NotHeld));
        let out: Result<u8, LockError> = with_lock(
            &lock,
            &LockKey::new("k"),
            LockOptions::default(),
            |_| async { Ok(7) },
        )
        .await;
        assert_eq!(out.unwrap(), 7);
    }

    #[test]
    fn fence_flags_loss_for_every_clone() {
        let fence = Fence::new(5);
        let seen_by_repository = fence.clone();
        assert!(!seen_by_repository.is_lost());
        fence.mark_lost();
        assert!(seen_by_repository.is_lost());
        assert_eq!(seen_by_repository.token(), 5);
    }

    #[test]
    fn keys_name_what_they_protect() {
        let seat = LockKey::seat(ScheduleId::from(3), SeatNumber::new(7).unwrap());
        assert_eq!(seat.as_str(), "seat:3:7");
        assert_eq!(LockKey::wallet(UserId::from(42)).to_string(), "wallet:42");
    }
}
