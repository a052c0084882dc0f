//! The lock port: exclusive locks per key, possibly shared by many
//! processes, each acquisition with a fencing token; and [`with_locks`], the
//! one helper that orders locks and the transaction correctly.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::Failure;
use crate::ids::{ScheduleId, SeatNumber, UserId};

/// What a lock protects, as a plain name (`seat:3:7`, `wallet:42`). Adapters
/// add their own prefix and layout around it. Keys order by name, and
/// [`with_locks`] takes several keys in that order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockKey(String);

impl LockKey {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The lock on one seat of one schedule. Seat numbers are zero-padded so
    /// that the keys of one schedule sort like the seat numbers.
    pub fn seat(schedule: ScheduleId, seat: SeatNumber) -> Self {
        Self(format!("seat:{schedule}:{:02}", seat.get()))
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
    /// The wait budget: past it, acquisition fails with
    /// [`Failure::LockTimeout`].
    pub wait: Duration,
    /// Renew the lease every third of it while the lock is held.
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
/// acquisition of the key, and a flag the adapter raises when it learns
/// that the lease was lost. Storage refuses a write whose token is lower
/// than one it has already accepted, and a unit of work does not commit
/// under a lost lease.
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

    /// Called by the adapter (its watchdog) when the lock turned out gone.
    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
    }
}

/// One acquisition, as the adapter that made it keeps it (its owner token,
/// its lease keep-alive). Dropping it without [`HeldLock::release`] releases
/// the lock in the background; leaking it (`std::mem::forget`) behaves like
/// a crashed holder, whose lease runs out.
#[async_trait]
pub trait HeldLock: Send + Sync + fmt::Debug {
    fn key(&self) -> &LockKey;

    fn fence(&self) -> &Fence;

    /// True when [`HeldLock::pass_on`] would pass the lock to a request of
    /// this process that waits for it. Adapters without such waiters keep
    /// the default.
    fn waited_for_here(&self) -> bool {
        false
    }

    /// Passes the lock to the request of this process that waits for it
    /// **before this holder's unit of work has ended** (see
    /// [`Fences::hand_over`]); `None` (and still held) when nobody waits
    /// here. The lock service's lock itself stays held until the returned
    /// [`Passed`] is dropped, which [`with_locks`] does once the work has
    /// ended: the lock service never sees a release before the commit.
    /// Passed on, this acquisition is spent: releasing or dropping it does
    /// nothing.
    async fn pass_on(&mut self) -> Option<Passed> {
        None
    }

    /// Releases the lock if this acquisition still owns it.
    ///
    /// MUST NOT delete a lock that another acquisition owns now, and MUST
    /// return [`Failure::LockLost`] in that case (the lease had run out).
    async fn release(self: Box<Self>) -> Result<(), Failure>;
}

/// A mutual-exclusion lock per key.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait DistributedLock: Send + Sync {
    /// Acquires the lock on `key` for `options.lease`, waiting at most
    /// `options.wait`. The acquisition carries a fencing token greater than
    /// every earlier acquisition's for this key.
    ///
    /// MUST return [`Failure::LockTimeout`] when the wait budget runs out and
    /// [`Failure::Unavailable`] when the lock service cannot be reached; it
    /// MUST NOT wait longer than the budget (plus one round trip).
    async fn acquire(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn HeldLock>, Failure>;
}

#[async_trait]
impl<T: DistributedLock + ?Sized> DistributedLock for Arc<T> {
    async fn acquire(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn HeldLock>, Failure> {
        (**self).acquire(key, options).await
    }
}

/// A lock passed on before its holder's unit of work ended
/// ([`HeldLock::pass_on`]); dropped when the unit has ended.
pub type Passed = Box<dyn Any + Send + Sync>;

/// The fences of the locks a unit of work runs under, by key; and, under
/// [`with_locks`], the locks themselves, so that the unit can pass them on
/// to the next request of this process once its writes are in storage's
/// hands ([`Fences::hand_over`]).
#[derive(Debug, Clone, Default)]
pub struct Fences {
    fences: Arc<[(LockKey, Fence)]>,
    held: Option<Arc<Held>>,
}

/// The locks [`with_locks`] holds for its work: those still held, and
/// those passed on before the work ended.
#[derive(Default)]
struct Held(std::sync::Mutex<HeldState>);

#[derive(Default)]
struct HeldState {
    locks: Vec<Box<dyn HeldLock>>,
    passed: Vec<Passed>,
}

impl Held {
    fn state(&self) -> std::sync::MutexGuard<'_, HeldState> {
        // Only moves of whole values under the lock: a panic cannot leave
        // it half-updated.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Held")
    }
}

impl Fences {
    pub fn new(fences: Vec<(LockKey, Fence)>) -> Self {
        Self {
            fences: fences.into(),
            held: None,
        }
    }

    /// The fence of the lock on `key`, if the work holds that lock.
    pub fn get(&self, key: &LockKey) -> Option<&Fence> {
        self.fences.iter().find(|(k, _)| k == key).map(|(_, f)| f)
    }

    /// True when any of the locks was lost: the work must not commit.
    pub fn any_lost(&self) -> bool {
        self.fences.iter().any(|(_, f)| f.is_lost())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LockKey, &Fence)> {
        self.fences.iter().map(|(k, f)| (k, f))
    }

    /// True while the work holds a lock that a request of this process
    /// waits for ([`HeldLock::waited_for_here`]): then ending the work in
    /// three steps (writes, [`Fences::hand_over`], commit) lets that
    /// request start while the commit is being made durable.
    pub fn waited_for_here(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.state().locks.iter().any(|l| l.waited_for_here()))
    }

    /// Passes the locks that a request of this process waits for on to it
    /// now, before the work has ended ([`HeldLock::pass_on`]); the others
    /// stay held until the work has ended, like every lock's hold on the
    /// lock service.
    ///
    /// For a unit of work whose writes are applied, checked and locked by
    /// storage itself, and only wait for their `COMMIT`
    /// ([`crate::UnitOfWork::write`]). The next local holder may then read
    /// what the unit wrote before it is durable, or (from storage) the
    /// state before it; either way its own writes of those rows wait in
    /// storage for this unit's end, and their version check refuses what it
    /// decided if the state it read is not the one committed by then. The
    /// brief's order (acquire → begin → decide → commit → release) still
    /// holds for the lock service: its lock goes back to it only after
    /// every unit that ran under it has ended.
    pub async fn hand_over(&self) {
        let Some(held) = &self.held else {
            return;
        };
        let locks = std::mem::take(&mut held.state().locks);
        let mut kept = Vec::with_capacity(locks.len());
        let mut passed = Vec::new();
        for mut lock in locks {
            let passed_on = if lock.waited_for_here() {
                lock.pass_on().await
            } else {
                None
            };
            match passed_on {
                Some(p) => passed.push(p),
                None => kept.push(lock),
            }
        }
        let mut state = held.state();
        state.locks.extend(kept);
        state.passed.extend(passed);
    }
}

/// Runs `work` under the locks on `keys`, in the only safe order:
/// **acquire (every key, in key order) -> begin transaction -> decide ->
/// commit -> release**.
///
/// Keys are taken sorted and de-duplicated, so two callers that need
/// overlapping sets can never each hold a part and wait for the other;
/// `options.wait` is the budget for all of them together. `work` receives
/// the acquisitions' [`Fences`] and must run (and finish) its whole
/// transaction before it returns. The locks are released after that future
/// has completed, whether it returned `Ok`, `Err`, or panicked (the panic is
/// re-raised after the release). A release that reports the lease lost does
/// not change the work's result (storage already checked the fence); it is
/// logged. A lock the work passed on to a waiting request of this process
/// ([`Fences::hand_over`]) goes back to the lock service at the same point:
/// after the work has completed.
pub async fn with_locks<T, E, F, Fut>(
    lock: &dyn DistributedLock,
    keys: &[LockKey],
    options: LockOptions,
    work: F,
) -> Result<T, E>
where
    F: FnOnce(Fences) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<Failure>,
{
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let started = Instant::now();
    let mut held: Vec<Box<dyn HeldLock>> = Vec::with_capacity(keys.len());
    for key in &keys {
        let wait = options.wait.saturating_sub(started.elapsed());
        match lock.acquire(key, LockOptions { wait, ..options }).await {
            Ok(h) => held.push(h),
            Err(e) => {
                release_all(held).await;
                return Err(e.into());
            }
        }
    }
    let mut fences = Fences::new(
        held.iter()
            .map(|h| (h.key().clone(), h.fence().clone()))
            .collect(),
    );
    let held_here = Arc::new(Held::default());
    held_here.state().locks = held;
    fences.held = Some(held_here.clone());
    let outcome = CatchUnwind(Box::pin(work(fences))).await;
    let HeldState { locks, passed } = std::mem::take(&mut *held_here.state());
    // the work has ended: what was passed on may go back to the lock
    // service now
    drop(passed);
    release_all(locks).await;
    match outcome {
        Ok(result) => result,
        Err(panic) => resume_unwind(panic),
    }
}

async fn release_all(held: Vec<Box<dyn HeldLock>>) {
    for h in held.into_iter().rev() {
        let key = h.key().clone();
        if let Err(e) = h.release().await {
            tracing::warn!(%key, error = %e, "lock release failed after the work finished");
        }
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

/// A [`HeldLock`] for tests of code that takes locks: it records its
/// release in a shared log and can be told to report the lease lost.
#[cfg(any(test, feature = "mock"))]
#[derive(Debug, Clone)]
pub struct TestHeldLock {
    pub key: LockKey,
    pub fence: Fence,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    pub lost_on_release: bool,
    /// What [`HeldLock::waited_for_here`] answers.
    pub waited_for_here: bool,
}

#[cfg(any(test, feature = "mock"))]
#[async_trait]
impl HeldLock for TestHeldLock {
    fn key(&self) -> &LockKey {
        &self.key
    }

    fn fence(&self) -> &Fence {
        &self.fence
    }

    fn waited_for_here(&self) -> bool {
        self.waited_for_here
    }

    /// Logs `pass <key>` now and `release <key>` when the [`Passed`] drops.
    async fn pass_on(&mut self) -> Option<Passed> {
        if !self.waited_for_here {
            return None;
        }
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("pass {}", self.key));
        Some(Box::new(LoggedRelease {
            key: self.key.clone(),
            log: self.log.clone(),
        }))
    }

    async fn release(self: Box<Self>) -> Result<(), Failure> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("release {}", self.key));
        if self.lost_on_release {
            Err(Failure::LockLost)
        } else {
            Ok(())
        }
    }
}

/// What a [`TestHeldLock`] passed on leaves behind: logs `release <key>`
/// when dropped.
#[cfg(any(test, feature = "mock"))]
struct LoggedRelease {
    key: LockKey,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

#[cfg(any(test, feature = "mock"))]
impl Drop for LoggedRelease {
    fn drop(&mut self) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("release {}", self.key));
    }
}

#[cfg(any(test, feature = "mock"))]
impl MockDistributedLock {
    /// A mock lock that grants every key, handing out fences `first`,
    /// `first + 1`, ... and logging `acquire <key>` / `release <key>`.
    pub fn granting(first: u64, log: Arc<std::sync::Mutex<Vec<String>>>) -> Self {
        Self::granting_contended(first, log, false)
    }

    /// [`MockDistributedLock::granting`], its acquisitions answering
    /// `waited_for_here` to [`HeldLock::waited_for_here`].
    pub fn granting_contended(
        first: u64,
        log: Arc<std::sync::Mutex<Vec<String>>>,
        waited_for_here: bool,
    ) -> Self {
        let next = Arc::new(std::sync::atomic::AtomicU64::new(first));
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire().returning(move |key, _| {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("acquire {key}"));
            Ok(Box::new(TestHeldLock {
                key: key.clone(),
                fence: Fence::new(next.fetch_add(1, Ordering::SeqCst)),
                log: log.clone(),
                lost_on_release: false,
                waited_for_here,
            }))
        });
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn log() -> Arc<Mutex<Vec<String>>> {
        Arc::new(Mutex::new(Vec::new()))
    }

    #[tokio::test]
    async fn releases_after_the_work_and_passes_the_fences() {
        let log = log();
        let lock = MockDistributedLock::granting(41, log.clone());
        let work_log = log.clone();
        let key = LockKey::new("seat:1:01");
        let keys = [key.clone()];
        let out: Result<u64, Failure> =
            with_locks(&lock, &keys, LockOptions::default(), |fences| async move {
                work_log.lock().unwrap().push("begin-commit".into());
                Ok(fences.get(&key).map(Fence::token).unwrap_or_default())
            })
            .await;
        assert_eq!(out.unwrap(), 41);
        assert_eq!(
            *log.lock().unwrap(),
            ["acquire seat:1:01", "begin-commit", "release seat:1:01"]
        );
    }

    /// A lock waited for here is passed on when the work hands over, and
    /// goes back to the lock service only once the work has ended; a lock
    /// nobody waits for here stays held until then.
    #[tokio::test]
    async fn the_work_passes_on_what_is_waited_for_and_the_lock_service_waits_for_its_end() {
        let log = log();
        let work_log = log.clone();
        let waited = TestHeldLock {
            key: LockKey::new("seat:1:01"),
            fence: Fence::new(5),
            log: log.clone(),
            lost_on_release: false,
            waited_for_here: true,
        };
        let alone = TestHeldLock {
            key: LockKey::new("seat:1:02"),
            waited_for_here: false,
            ..waited.clone()
        };
        let grants = std::sync::Mutex::new(vec![alone, waited]);
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire().returning(move |_, _| {
            let held: Box<dyn HeldLock> = Box::new(grants.lock().unwrap().pop().unwrap());
            Ok(held)
        });
        let keys = [LockKey::new("seat:1:02"), LockKey::new("seat:1:01")];
        let out: Result<(bool, bool, u64), Failure> =
            with_locks(&lock, &keys, LockOptions::default(), |fences| async move {
                let before = fences.waited_for_here();
                fences.hand_over().await;
                // a copy of the fences shares the hand-over: nothing more
                fences.clone().hand_over().await;
                work_log.lock().unwrap().push("commit".into());
                let token = fences.get(&LockKey::new("seat:1:02")).map(Fence::token);
                Ok((before, fences.waited_for_here(), token.unwrap_or_default()))
            })
            .await;
        // the fences stay the work's after the hand-over
        assert_eq!(out.unwrap(), (true, false, 5));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "pass seat:1:01",
                "commit",
                "release seat:1:01",
                "release seat:1:02"
            ]
        );
    }

    #[test]
    fn fences_built_outside_with_locks_hand_nothing_over() {
        let fences = Fences::new(vec![(LockKey::new("k"), Fence::new(1))]);
        assert!(!fences.waited_for_here());
        assert_eq!(fences.get(&LockKey::new("k")).map(Fence::token), Some(1));
    }

    #[tokio::test]
    async fn several_keys_are_taken_sorted_once_and_released_in_reverse() {
        let log = log();
        let lock = MockDistributedLock::granting(1, log.clone());
        let keys = [
            LockKey::new("seat:1:09"),
            LockKey::new("seat:1:02"),
            LockKey::new("seat:1:09"),
        ];
        let out: Result<usize, Failure> =
            with_locks(&lock, &keys, LockOptions::default(), |fences| async move {
                Ok(fences.iter().count())
            })
            .await;
        assert_eq!(out.unwrap(), 2);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "acquire seat:1:02",
                "acquire seat:1:09",
                "release seat:1:09",
                "release seat:1:02"
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_acquisition_releases_what_was_taken_and_skips_the_work() {
        let log = log();
        let granted = log.clone();
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire().returning(move |key, _| {
            if key.as_str().ends_with("02") {
                Ok(Box::new(TestHeldLock {
                    key: key.clone(),
                    fence: Fence::new(1),
                    log: granted.clone(),
                    lost_on_release: false,
                    waited_for_here: false,
                }))
            } else {
                Err(Failure::LockTimeout)
            }
        });
        let ran = AtomicBool::new(false);
        let out: Result<(), Failure> = with_locks(
            &lock,
            &[LockKey::new("seat:1:02"), LockKey::new("seat:1:03")],
            LockOptions::default(),
            |_| async {
                ran.store(true, Ordering::SeqCst);
                Ok(())
            },
        )
        .await;
        assert!(matches!(out, Err(Failure::LockTimeout)));
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(*log.lock().unwrap(), ["release seat:1:02"]);
    }

    #[tokio::test]
    async fn releases_when_the_work_fails_or_panics() {
        let log = log();
        let lock = MockDistributedLock::granting(1, log.clone());
        let out: Result<(), Failure> = with_locks(
            &lock,
            &[LockKey::new("wallet:9")],
            LockOptions::default(),
            |_| async { Err(Failure::Conflict) },
        )
        .await;
        assert!(matches!(out, Err(Failure::Conflict)));

        let lock = Arc::new(lock);
        let task_lock = lock.clone();
        let joined = tokio::spawn(async move {
            let _: Result<(), Failure> = with_locks(
                &*task_lock,
                &[LockKey::new("seat:2:02")],
                LockOptions::default(),
                |_| async { panic!("bug in the closure") },
            )
            .await;
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(
            *log.lock().unwrap(),
            [
                "acquire wallet:9",
                "release wallet:9",
                "acquire seat:2:02",
                "release seat:2:02"
            ]
        );
    }

    #[tokio::test]
    async fn a_lost_lease_on_release_keeps_the_committed_result() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire().returning(|key, _| {
            Ok(Box::new(TestHeldLock {
                key: key.clone(),
                fence: Fence::new(3),
                log: Arc::default(),
                lost_on_release: true,
                waited_for_here: false,
            }))
        });
        let out: Result<u8, Failure> = with_locks(
            &lock,
            &[LockKey::new("k")],
            LockOptions::default(),
            |_| async { Ok(7) },
        )
        .await;
        assert_eq!(out.unwrap(), 7);
    }

    #[test]
    fn fence_flags_loss_for_every_clone() {
        let fence = Fence::new(5);
        let fences = Fences::new(vec![(LockKey::new("k"), fence.clone())]);
        assert!(!fences.any_lost());
        fence.mark_lost();
        assert!(fences.any_lost());
        assert_eq!(fences.get(&LockKey::new("k")).unwrap().token(), 5);
        assert!(fences.get(&LockKey::new("other")).is_none());
    }

    #[test]
    fn keys_name_what_they_protect_and_sort_by_seat() {
        let seat = |n| LockKey::seat(ScheduleId::from(3), SeatNumber::new(n).unwrap());
        assert_eq!(seat(7).as_str(), "seat:3:07");
        assert!(seat(9) < seat(10));
        assert_eq!(LockKey::wallet(UserId::from(42)).to_string(), "wallet:42");
    }
}
