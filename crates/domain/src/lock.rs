//! The lock ports: [`DistributedLock`], exclusive locks per key, possibly
//! shared by many processes, each acquisition with a fencing token; and
//! [`Locks`], the locks on a unit of work's keys as a [`crate::Control`]
//! takes them before the unit and releases them after it. How the keys are
//! ordered and locks are passed on lives in `concert-locking`, over any
//! [`DistributedLock`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Failure;
use crate::ids::{ScheduleId, SeatNumber, UserId};

/// What a lock protects, as a plain name (`seat:3:7`, `wallet:42`). Adapters
/// add their own prefix and layout around it. Keys order by name, and a
/// [`Locks`] takes several keys in that order.
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

/// The locks a [`crate::Control`] runs a unit of work under, taken for all
/// of the unit's keys at once.
#[async_trait]
pub trait Locks: Send + Sync {
    /// Acquires the locks on `keys` (in key order, each once), all of them
    /// within `options.wait`.
    ///
    /// MUST hold none of them when it fails (with the failure of the
    /// acquisition that failed: [`Failure::LockTimeout`],
    /// [`Failure::Unavailable`], ...).
    async fn lock(
        &self,
        keys: &[LockKey],
        options: LockOptions,
    ) -> Result<Box<dyn LockSet>, Failure>;
}

/// Locks taken by [`Locks::lock`], held until [`LockSet::release`].
#[async_trait]
pub trait LockSet: Send + Sync {
    /// The fences to run the unit of work under (with the hand-over, if
    /// these locks can be passed on, see [`Fences::hand_over`]).
    fn fences(&self) -> Fences;

    /// Gives every lock back, once the unit of work has ended (committed,
    /// rolled back, or panicked), those passed on before its end included.
    /// A release that reports the lease lost does not change the unit's
    /// result (storage already checked the fence): it is logged, not
    /// returned.
    async fn release(self: Box<Self>);
}

/// Passing the locks of a unit of work on to the request of this process
/// that waits for them, before the unit has ended: what [`Fences`] carry
/// under locks that can do that (see [`Fences::hand_over`]).
#[async_trait]
pub trait HandOver: Send + Sync {
    /// True while a request of this process waits for one of the locks.
    fn waited_for_here(&self) -> bool;

    /// Passes the locks waited for here on now; the others stay held. The
    /// lock service gets none of them back before the unit has ended.
    async fn hand_over(&self);
}

/// The fences of the locks a unit of work runs under, by key; and, under
/// locks that can be passed on, their [`HandOver`], so that the unit can
/// pass them on to the next request of this process once its writes are
/// in storage's hands ([`Fences::hand_over`]).
#[derive(Clone, Default)]
pub struct Fences {
    fences: Arc<[(LockKey, Fence)]>,
    hand_over: Option<Arc<dyn HandOver>>,
}

impl fmt::Debug for Fences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fences")
            .field("fences", &self.fences)
            .field("hand_over", &self.hand_over.is_some())
            .finish()
    }
}

impl Fences {
    pub fn new(fences: Vec<(LockKey, Fence)>) -> Self {
        Self {
            fences: fences.into(),
            hand_over: None,
        }
    }

    /// Fences whose locks `hand_over` can pass on.
    pub fn handing_over(fences: Vec<(LockKey, Fence)>, hand_over: Arc<dyn HandOver>) -> Self {
        Self {
            hand_over: Some(hand_over),
            ..Self::new(fences)
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
    /// waits for ([`HandOver::waited_for_here`]): then ending the work in
    /// three steps (writes, [`Fences::hand_over`], commit) lets that
    /// request start while the commit is being made durable.
    pub fn waited_for_here(&self) -> bool {
        self.hand_over.as_ref().is_some_and(|h| h.waited_for_here())
    }

    /// Passes the locks that a request of this process waits for on to it
    /// now, before the work has ended ([`HandOver::hand_over`]); the others
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
        if let Some(hand_over) = &self.hand_over {
            hand_over.hand_over().await;
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

#[cfg(any(test, feature = "mock"))]
impl MockDistributedLock {
    /// A mock lock that grants every key, handing out fences `first`,
    /// `first + 1`, ... and logging `acquire <key>` / `release <key>`.
    pub fn granting(first: u64, log: Arc<std::sync::Mutex<Vec<String>>>) -> Self {
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
            }))
        });
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_built_without_a_hand_over_hand_nothing_over() {
        let fences = Fences::new(vec![(LockKey::new("k"), Fence::new(1))]);
        assert!(!fences.waited_for_here());
        assert_eq!(fences.get(&LockKey::new("k")).map(Fence::token), Some(1));
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
