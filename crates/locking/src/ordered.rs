//! [`Ordered`]: the domain's [`Locks`] over a lock of one key at a time.
//! The keys are taken sorted and de-duplicated, so two units that need
//! overlapping sets can never each hold a part and wait for the other;
//! `options.wait` is the budget for all of them together. Over a
//! [`Passing`] lock (the in-process key queue), the locks a request of this
//! process waits for are passed on to it before the unit has ended
//! ([`Fences::hand_over`]), and go back to the lock service only once the
//! unit has ended; over any other [`DistributedLock`] ([`Plain`]) nothing
//! is passed on.
//!
//! The order around the unit of work (acquire → begin → decide → commit →
//! release, the release after a panic too) is the domain's
//! `Control::run`'s.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use concert_domain::{
    DistributedLock, Failure, Fence, Fences, HandOver, HeldLock, LockKey, LockOptions, LockSet,
    Locks,
};

/// What a lock passed on before its holder's unit of work ended leaves
/// behind ([`PassingHeld::pass_on`]): dropping it says that the unit has
/// ended, and the lock service may get the lock back.
#[must_use = "dropping it says that the unit of work has ended"]
pub struct Passed(Option<Box<dyn FnOnce() + Send>>);

impl Passed {
    /// Runs `ended` when dropped.
    pub fn new(ended: impl FnOnce() + Send + 'static) -> Self {
        Self(Some(Box::new(ended)))
    }
}

impl Drop for Passed {
    fn drop(&mut self) {
        if let Some(ended) = self.0.take() {
            ended();
        }
    }
}

impl fmt::Debug for Passed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passed")
    }
}

/// An acquisition that can be passed on to a request of this process that
/// waits for the same key.
#[async_trait]
pub trait PassingHeld: HeldLock {
    /// True when [`PassingHeld::pass_on`] would pass the lock to a request
    /// of this process that waits for it.
    fn waited_for_here(&self) -> bool;

    /// Passes the lock to the request of this process that waits for it
    /// **before this holder's unit of work has ended** (see
    /// [`Fences::hand_over`]); `None` (and still held) when nobody waits
    /// here. The lock service's lock itself stays held until the returned
    /// [`Passed`] is dropped, which [`Ordered`] does once the work has
    /// ended: the lock service never sees a release before the commit.
    /// Passed on, this acquisition is spent: releasing or dropping it does
    /// nothing.
    async fn pass_on(&mut self) -> Option<Passed>;
}

/// A lock whose acquisitions can be passed on ([`PassingHeld`]).
#[async_trait]
pub trait Passing: Send + Sync {
    /// [`DistributedLock::acquire`], the acquisition able to be passed on.
    async fn acquire_passing(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn PassingHeld>, Failure>;
}

/// A [`DistributedLock`] whose acquisitions are never passed on.
#[derive(Debug, Clone)]
pub struct Plain<L>(pub L);

/// An acquisition of a [`Plain`] lock.
#[derive(Debug)]
struct PlainHeld(Box<dyn HeldLock>);

#[async_trait]
impl HeldLock for PlainHeld {
    fn key(&self) -> &LockKey {
        self.0.key()
    }

    fn fence(&self) -> &Fence {
        self.0.fence()
    }

    async fn release(self: Box<Self>) -> Result<(), Failure> {
        self.0.release().await
    }
}

#[async_trait]
impl PassingHeld for PlainHeld {
    fn waited_for_here(&self) -> bool {
        false
    }

    async fn pass_on(&mut self) -> Option<Passed> {
        None
    }
}

#[async_trait]
impl<L: DistributedLock> Passing for Plain<L> {
    async fn acquire_passing(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn PassingHeld>, Failure> {
        Ok(Box::new(PlainHeld(self.0.acquire(key, options).await?)))
    }
}

/// The domain's [`Locks`] over `P`: see the module.
#[derive(Debug, Clone)]
pub struct Ordered<P>(P);

impl<P: Passing> Ordered<P> {
    pub fn new(lock: P) -> Self {
        Self(lock)
    }
}

impl<L: DistributedLock> Ordered<Plain<L>> {
    /// Over `lock`, nothing passed on.
    pub fn plain(lock: L) -> Self {
        Self(Plain(lock))
    }
}

#[async_trait]
impl<P: Passing> Locks for Ordered<P> {
    async fn lock(
        &self,
        keys: &[LockKey],
        options: LockOptions,
    ) -> Result<Box<dyn LockSet>, Failure> {
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let started = Instant::now();
        let mut locks: Vec<Box<dyn PassingHeld>> = Vec::with_capacity(keys.len());
        for key in &keys {
            let wait = options.wait.saturating_sub(started.elapsed());
            match self
                .0
                .acquire_passing(key, LockOptions { wait, ..options })
                .await
            {
                Ok(held) => locks.push(held),
                Err(e) => {
                    release_all(locks).await;
                    return Err(e);
                }
            }
        }
        let fences = locks
            .iter()
            .map(|h| (h.key().clone(), h.fence().clone()))
            .collect();
        let held = Arc::new(Held(Mutex::new(HeldState {
            locks,
            passed: Vec::new(),
        })));
        Ok(Box::new(Taken {
            fences: Fences::handing_over(fences, held.clone()),
            held,
        }))
    }
}

/// The locks [`Ordered`] took for a unit of work: those still held, and
/// those passed on before the unit ended.
struct Held(Mutex<HeldState>);

struct HeldState {
    locks: Vec<Box<dyn PassingHeld>>,
    passed: Vec<Passed>,
}

impl Held {
    fn state(&self) -> MutexGuard<'_, HeldState> {
        // Only moves of whole values under the lock: a panic cannot leave
        // it half-updated.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl HandOver for Held {
    fn waited_for_here(&self) -> bool {
        self.state().locks.iter().any(|l| l.waited_for_here())
    }

    async fn hand_over(&self) {
        let locks = std::mem::take(&mut self.state().locks);
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
        let mut state = self.state();
        state.locks.extend(kept);
        state.passed.extend(passed);
    }
}

/// [`Ordered`]'s [`LockSet`].
struct Taken {
    fences: Fences,
    held: Arc<Held>,
}

#[async_trait]
impl LockSet for Taken {
    fn fences(&self) -> Fences {
        self.fences.clone()
    }

    async fn release(self: Box<Self>) {
        let (locks, passed) = {
            let mut state = self.held.state();
            (
                std::mem::take(&mut state.locks),
                std::mem::take(&mut state.passed),
            )
        };
        // the work has ended: what was passed on may go back to the lock
        // service now
        drop(passed);
        release_all(locks).await;
    }
}

async fn release_all(held: Vec<Box<dyn PassingHeld>>) {
    for h in held.into_iter().rev() {
        let key = h.key().clone();
        if let Err(e) = h.release().await {
            tracing::warn!(%key, error = %e, "lock release failed after the work finished");
        }
    }
}

/// Test doubles of [`Passing`] locks.
#[cfg(any(test, feature = "mock"))]
pub mod testing {
    use super::*;

    type Log = Arc<Mutex<Vec<String>>>;

    /// A [`Passing`] lock over `lock` (e.g.
    /// `MockDistributedLock::granting`) whose acquisitions of the keys
    /// `waited_for_here` picks answer that a request of this process waits
    /// for them; passed on, they log `pass <key>`, and `release <key>` once
    /// the unit that passed them on has ended.
    pub struct Contended<L> {
        lock: L,
        log: Log,
        waited_for_here: Box<dyn Fn(&LockKey) -> bool + Send + Sync>,
    }

    impl<L: DistributedLock> Contended<L> {
        pub fn new(
            lock: L,
            log: Log,
            waited_for_here: impl Fn(&LockKey) -> bool + Send + Sync + 'static,
        ) -> Self {
            Self {
                lock,
                log,
                waited_for_here: Box::new(waited_for_here),
            }
        }
    }

    #[derive(Debug)]
    struct ContendedHeld {
        held: PlainHeld,
        log: Log,
        waited_for_here: bool,
    }

    #[async_trait]
    impl HeldLock for ContendedHeld {
        fn key(&self) -> &LockKey {
            self.held.key()
        }

        fn fence(&self) -> &Fence {
            self.held.fence()
        }

        async fn release(self: Box<Self>) -> Result<(), Failure> {
            Box::new(self.held).release().await
        }
    }

    #[async_trait]
    impl PassingHeld for ContendedHeld {
        fn waited_for_here(&self) -> bool {
            self.waited_for_here
        }

        async fn pass_on(&mut self) -> Option<Passed> {
            if !self.waited_for_here {
                return None;
            }
            self.waited_for_here = false;
            let (key, log) = (self.key().clone(), self.log.clone());
            let push = move |line: String| log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            push(format!("pass {key}"));
            Some(Passed::new(move || push(format!("release {key}"))))
        }
    }

    #[async_trait]
    impl<L: DistributedLock> Passing for Contended<L> {
        async fn acquire_passing(
            &self,
            key: &LockKey,
            options: LockOptions,
        ) -> Result<Box<dyn PassingHeld>, Failure> {
            let held = PlainHeld(self.lock.acquire(key, options).await?);
            Ok(Box::new(ContendedHeld {
                held,
                log: self.log.clone(),
                waited_for_here: (self.waited_for_here)(key),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, Ordering};

    use concert_domain::{MockDistributedLock, TestHeldLock};

    use super::testing::Contended;
    use super::*;

    fn log() -> Arc<Mutex<Vec<String>>> {
        Arc::new(Mutex::new(Vec::new()))
    }

    /// Runs `work` under `locks` on `keys` as a control does (without its
    /// panic handling).
    async fn with_locks<T, Fut>(
        locks: &dyn Locks,
        keys: &[LockKey],
        work: impl FnOnce(Fences) -> Fut,
    ) -> Result<T, Failure>
    where
        Fut: Future<Output = T>,
    {
        let set = locks.lock(keys, LockOptions::default()).await?;
        let out = work(set.fences()).await;
        set.release().await;
        Ok(out)
    }

    #[tokio::test]
    async fn releases_after_the_work_and_passes_the_fences() {
        let log = log();
        let locks = Ordered::plain(MockDistributedLock::granting(41, log.clone()));
        let work_log = log.clone();
        let key = LockKey::new("seat:1:01");
        let keys = [key.clone()];
        let out = with_locks(&locks, &keys, |fences| async move {
            work_log.lock().unwrap().push("begin-commit".into());
            assert!(!fences.waited_for_here());
            fences.get(&key).map(Fence::token)
        })
        .await;
        assert_eq!(out.unwrap(), Some(41));
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
        let locks = Ordered::new(Contended::new(
            MockDistributedLock::granting(5, log.clone()),
            log.clone(),
            |key| key.as_str() == "seat:1:01",
        ));
        let keys = [LockKey::new("seat:1:02"), LockKey::new("seat:1:01")];
        let out = with_locks(&locks, &keys, |fences| async move {
            let before = fences.waited_for_here();
            fences.hand_over().await;
            // a copy of the fences shares the hand-over: nothing more
            fences.clone().hand_over().await;
            work_log.lock().unwrap().push("commit".into());
            let token = fences.get(&LockKey::new("seat:1:02")).map(Fence::token);
            (before, fences.waited_for_here(), token.unwrap_or_default())
        })
        .await;
        // the fences stay the work's after the hand-over
        assert_eq!(out.unwrap(), (true, false, 6));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "acquire seat:1:01",
                "acquire seat:1:02",
                "pass seat:1:01",
                "commit",
                "release seat:1:01",
                "release seat:1:02"
            ]
        );
    }

    #[tokio::test]
    async fn several_keys_are_taken_sorted_once_and_released_in_reverse() {
        let log = log();
        let locks = Ordered::plain(MockDistributedLock::granting(1, log.clone()));
        let keys = [
            LockKey::new("seat:1:09"),
            LockKey::new("seat:1:02"),
            LockKey::new("seat:1:09"),
        ];
        let out = with_locks(&locks, &keys, |fences| async move { fences.iter().count() }).await;
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
                }))
            } else {
                Err(Failure::LockTimeout)
            }
        });
        let ran = AtomicBool::new(false);
        let out = with_locks(
            &Ordered::plain(lock),
            &[LockKey::new("seat:1:02"), LockKey::new("seat:1:03")],
            |_| async { ran.store(true, Ordering::SeqCst) },
        )
        .await;
        assert!(matches!(out, Err(Failure::LockTimeout)));
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(*log.lock().unwrap(), ["release seat:1:02"]);
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
            }))
        });
        let out = with_locks(&Ordered::plain(lock), &[LockKey::new("k")], |_| async { 7 }).await;
        assert_eq!(out.unwrap(), 7);
    }
}
