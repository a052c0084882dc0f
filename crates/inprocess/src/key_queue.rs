//! [`KeyQueue`]: a process-local queue per key in front of a shared lock,
//! which hands the shared lock from one local holder to the next.
//!
//! When many requests of one process want the same key (a crowd on one
//! seat, one user's concurrent payments), sending each of them to the
//! shared lock service is wasted work: only one can hold the lock. Behind a
//! `KeyQueue`, requests of one process queue per key in memory (FIFO, each
//! within its own wait budget); the first acquires the shared lock, and
//! when it releases, the shared lock is **handed to the next local request
//! in memory**, without a round trip to the lock service. A hot key then
//! costs the lock service one acquisition and one release per *streak* of
//! local holders instead of per request, and each hand-over costs a task
//! wake-up instead of a network round trip.
//!
//! Guarantees, across processes exactly those of the shared lock:
//!
//! - at most one local request holds or waits for the shared lock per key,
//!   and at most one local request holds the key: the hand-over happens
//!   when the previous holder released (committed or rolled back), or
//!   passed the key on early ([`PassingHeld::pass_on`]: its writes are applied
//!   and locked by storage, only its `COMMIT` is left, see
//!   `concert_domain::Fences::hand_over`);
//! - the shared lock goes back to the lock service only after every local
//!   holder of its streak has ended (committed or rolled back), those that
//!   passed it on early included: towards the lock service the order
//!   stays acquire → begin → decide → commit → release;
//! - a streak ends after [`MAX_STREAK`] hand-overs or [`MAX_STREAK_AGE`],
//!   whichever comes first: the shared lock is then released to the lock
//!   service, so requests of other processes waiting there get their turn
//!   (the Redis pub/sub lock hands it to its oldest waiter);
//! - a hand-over passes the acquisition with its fencing token: the local
//!   holders of one streak write under the token the process acquired, in
//!   turn, which storage accepts (equal tokens); a lease lost during a
//!   streak is seen by the next holder (its fence says so) and the shared
//!   lock is acquired anew, with a new token;
//! - a guard dropped without release (a cancelled request) does not hand
//!   over: its shared lock is released (in the background) and the next
//!   local request acquires anew;
//! - a local holder whose lease ran out (paused, or leaked like a crashed
//!   holder) blocks the local queue no longer than the shared lock: the
//!   first waiter notices the lost fence within [`STALE_CHECK`] and goes
//!   to the shared lock itself (which the lease's end has freed);
//! - the wait budget covers the local queue and the shared lock together.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use concert_domain::{DistributedLock, Failure, Fence, HeldLock, LockKey, LockOptions};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use concert_locking::lease::later;
use concert_locking::ordered::{Passed, Passing, PassingHeld};

/// Hand-overs in one streak before the shared lock goes back to the lock
/// service.
pub const MAX_STREAK: u32 = 32;
/// The longest a streak keeps the shared lock from other processes.
pub const MAX_STREAK_AGE: Duration = Duration::from_millis(250);
/// How often a local waiter checks whether the local holder's lease ran
/// out.
pub const STALE_CHECK: Duration = Duration::from_millis(50);

/// A [`DistributedLock`] that queues locally per key in front of `shared`
/// and hands `shared`'s acquisitions from one local holder to the next.
pub struct KeyQueue<L> {
    shared: L,
    slots: Arc<Slots>,
}

impl<L: fmt::Debug> fmt::Debug for KeyQueue<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyQueue")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<L: Clone> Clone for KeyQueue<L> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            slots: self.slots.clone(),
        }
    }
}

impl<L> KeyQueue<L> {
    pub fn new(shared: L) -> Self {
        Self {
            shared,
            slots: Arc::default(),
        }
    }

    /// The shared lock behind the queue.
    pub fn shared(&self) -> &L {
        &self.shared
    }
}

/// The local queues, per key. A key is present while a local request holds
/// it or acquires it from the shared lock; its queue lists the others.
#[derive(Default)]
struct Slots {
    by_key: Mutex<HashMap<LockKey, Slot>>,
}

#[derive(Default)]
struct Slot {
    next_id: u64,
    queue: VecDeque<Waiter>,
    /// The fence of the local holder, while one holds the key.
    holder: Option<Fence>,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Baton>,
}

/// A shared acquisition on its way along a streak.
struct Streak {
    held: Box<dyn HeldLock>,
    /// Hand-overs so far.
    length: u32,
    started: Instant,
    /// Holders that passed the streak on before their unit of work ended.
    unended: Arc<Unended>,
}

/// The holders of one streak that passed it on before their unit of work
/// ended ([`PassingHeld::pass_on`]): the shared lock goes back to the lock
/// service only after they have all ended.
#[derive(Default)]
struct Unended {
    count: Mutex<usize>,
    ended: Notify,
}

impl Unended {
    fn count(&self) -> MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more holder passed on before it ended; dropping the returned
    /// [`Passed`] says it has.
    fn enter(self: &Arc<Self>) -> Passed {
        *self.count() += 1;
        let unended = self.clone();
        Passed::new(move || unended.leave())
    }

    /// A holder that passed on before it ended has ended.
    fn leave(&self) {
        let mut count = self.count();
        *count = count.saturating_sub(1);
        if *count == 0 {
            drop(count);
            self.ended.notify_waiters();
        }
    }

    /// Returns once every holder counted has ended.
    async fn wait(&self) {
        loop {
            let ended = self.ended.notified();
            if *self.count() == 0 {
                return;
            }
            ended.await;
        }
    }

    fn none(&self) -> bool {
        *self.count() == 0
    }
}

impl Streak {
    /// Drops the streak, which releases the shared lock in the background,
    /// once the holders that passed it on before their end have ended.
    fn retire(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !self.unended.none() => {
                runtime.spawn(async move {
                    self.unended.wait().await;
                    drop(self);
                });
            }
            _ => drop(self),
        }
    }

    fn may_continue(&self) -> bool {
        self.length < MAX_STREAK
            && self.started.elapsed() < MAX_STREAK_AGE
            && !self.held.fence().is_lost()
    }
}

/// The right to the key: with the shared lock (handed over), or only the
/// turn to acquire it. Dropped while still armed (never received, or its
/// holder gave up), it passes itself on, so a turn is never lost.
struct Baton {
    slots: Arc<Slots>,
    key: LockKey,
    streak: Option<Streak>,
    armed: bool,
}

impl Baton {
    fn disarm(mut self) -> Option<Streak> {
        self.armed = false;
        self.streak.take()
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            let streak = self.streak.take();
            self.slots.pass(&self.key, streak);
        }
    }
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, HashMap<LockKey, Slot>> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the key to the next live local waiter, with `streak` if given
    /// (a hand-over), else the turn to acquire the shared lock; frees the
    /// key when nobody waits (dropping `streak`: its guard releases the
    /// shared lock in the background).
    fn pass(self: &Arc<Self>, key: &LockKey, mut streak: Option<Streak>) {
        loop {
            let waiter = {
                let mut slots = self.lock();
                let Some(slot) = slots.get_mut(key) else {
                    drop(slots);
                    if let Some(streak) = streak {
                        streak.retire();
                    }
                    return;
                };
                slot.holder = None;
                match slot.queue.pop_front() {
                    Some(waiter) => waiter,
                    None => {
                        slots.remove(key);
                        drop(slots);
                        if let Some(streak) = streak {
                            streak.retire();
                        }
                        return;
                    }
                }
            };
            let baton = Baton {
                slots: self.clone(),
                key: key.clone(),
                streak: streak.take(),
                armed: true,
            };
            match waiter.tx.send(baton) {
                Ok(()) => return,
                // That waiter gave up meanwhile: the next one.
                Err(baton) => streak = baton.disarm(),
            }
        }
    }

    /// Removes a waiter that gave up (if it is still queued).
    fn forget(&self, key: &LockKey, id: u64) {
        if let Some(slot) = self.lock().get_mut(key) {
            slot.queue.retain(|w| w.id != id);
        }
    }

    /// Records the local holder of `key`.
    fn hold(&self, key: &LockKey, fence: &Fence) {
        if let Some(slot) = self.lock().get_mut(key) {
            slot.holder = Some(fence.clone());
        }
    }

    /// True (and waiter `id` leaves the queue, to acquire the shared lock
    /// itself) when `id` is the first waiter and the local holder's lease
    /// ran out.
    fn bypass_stale_holder(&self, key: &LockKey, id: u64) -> bool {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(key) else {
            return false;
        };
        let stale = slot.holder.as_ref().is_some_and(Fence::is_lost);
        if stale && slot.queue.front().is_some_and(|w| w.id == id) {
            slot.queue.pop_front();
            slot.holder = None;
            return true;
        }
        false
    }
}

/// An acquisition through a [`KeyQueue`]: the baton with the streak, until
/// released or passed on; its fence stays readable after that.
struct QueuedHeld {
    baton: Baton,
    fence: Fence,
}

impl QueuedHeld {
    fn new(baton: Baton, fence: &Fence) -> Self {
        Self {
            baton,
            fence: fence.clone(),
        }
    }
}

impl fmt::Debug for QueuedHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedHeld")
            .field("key", &self.baton.key)
            .field("fence", &self.fence)
            .field("held", &self.baton.streak.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for QueuedHeld {
    fn drop(&mut self) {
        // Dropped without release (a cancelled request): do not hand over
        // what it may have left half done; the shared lock is released in
        // the background (once the holders before, that passed it on
        // before their end, have ended) and the next local request
        // acquires anew.
        if self.baton.armed
            && let Some(streak) = self.baton.streak.take()
        {
            streak.retire();
        }
    }
}

#[async_trait]
impl HeldLock for QueuedHeld {
    fn key(&self) -> &LockKey {
        &self.baton.key
    }

    fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Hands the shared acquisition to the next local waiter, or releases
    /// it to the lock service (streak over, nobody waiting, lease lost) and
    /// passes the turn on.
    async fn release(mut self: Box<Self>) -> Result<(), Failure> {
        let Some(mut streak) = self.baton.streak.take() else {
            return Ok(());
        };
        self.baton.armed = false;
        let slots = self.baton.slots.clone();
        let key = self.baton.key.clone();
        if streak.may_continue() && slots.has_waiters(&key) {
            streak.length += 1;
            slots.pass(&key, Some(streak));
            return Ok(());
        }
        // the holders before that passed the streak on early must have
        // ended before the lock service sees a release
        streak.unended.wait().await;
        let released = streak.held.release().await;
        slots.pass(&key, None);
        released
    }
}

#[async_trait]
impl PassingHeld for QueuedHeld {
    /// A local request waits for the key and the streak may go on: a
    /// release now hands the shared acquisition to it in memory.
    fn waited_for_here(&self) -> bool {
        self.baton.streak.as_ref().is_some_and(Streak::may_continue)
            && self.baton.slots.has_waiters(&self.baton.key)
    }

    /// Hands the shared acquisition to the next local waiter now, before
    /// this holder's unit of work has ended; the streak then does not go
    /// back to the lock service before that unit has ended (the
    /// [`Passed`] returned is dropped).
    async fn pass_on(&mut self) -> Option<Passed> {
        if !self.waited_for_here() {
            return None;
        }
        let mut streak = self.baton.streak.take()?;
        self.baton.armed = false;
        let passed = streak.unended.enter();
        streak.length += 1;
        self.baton.slots.pass(&self.baton.key, Some(streak));
        Some(passed)
    }
}

impl Slots {
    fn has_waiters(&self, key: &LockKey) -> bool {
        self.lock().get(key).is_some_and(|s| !s.queue.is_empty())
    }
}

#[async_trait]
impl<L: DistributedLock> DistributedLock for KeyQueue<L> {
    async fn acquire(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn HeldLock>, Failure> {
        Ok(Box::new(self.take(key, options).await?))
    }
}

/// Under [`concert_locking::ordered::Ordered`], a unit of work passes the
/// key on to the next local request before its commit.
#[async_trait]
impl<L: DistributedLock> Passing for KeyQueue<L> {
    async fn acquire_passing(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn PassingHeld>, Failure> {
        Ok(Box::new(self.take(key, options).await?))
    }
}

impl<L: DistributedLock> KeyQueue<L> {
    /// The key from the local queue, with the shared lock.
    async fn take(&self, key: &LockKey, options: LockOptions) -> Result<QueuedHeld, Failure> {
        let deadline = later(Instant::now(), options.wait);
        let queued = {
            let mut slots = self.slots.lock();
            match slots.get_mut(key) {
                None => {
                    slots.insert(key.clone(), Slot::default());
                    None
                }
                Some(slot) => {
                    let (tx, rx) = oneshot::channel();
                    let id = slot.next_id;
                    slot.next_id += 1;
                    slot.queue.push_back(Waiter { id, tx });
                    Some((id, rx))
                }
            }
        };
        let mut baton = match queued {
            None => Baton {
                slots: self.slots.clone(),
                key: key.clone(),
                streak: None,
                armed: true,
            },
            Some((id, mut rx)) => loop {
                let check = later(Instant::now(), STALE_CHECK).min(deadline);
                tokio::select! {
                    received = &mut rx => match received {
                        Ok(baton) => break baton,
                        Err(_) => {
                            return Err(Failure::unknown(anyhow::anyhow!(
                                "the local lock queue of {key} was dropped"
                            )));
                        }
                    },
                    () = tokio::time::sleep_until(check) => {
                        if Instant::now() >= deadline {
                            // A baton sent meanwhile drops with the
                            // receiver and passes itself on.
                            self.slots.forget(key, id);
                            return Err(Failure::LockTimeout);
                        }
                        if self.slots.bypass_stale_holder(key, id) {
                            break Baton {
                                slots: self.slots.clone(),
                                key: key.clone(),
                                streak: None,
                                armed: true,
                            };
                        }
                    }
                }
            },
        };
        if let Some(streak) = baton.streak.take() {
            if !streak.held.fence().is_lost() {
                let fence = streak.held.fence().clone();
                self.slots.hold(key, &fence);
                baton.streak = Some(streak);
                return Ok(QueuedHeld::new(baton, &fence));
            }
            // The lease ran out during the streak: give it up, acquire anew.
            streak.unended.wait().await;
            if let Err(e) = streak.held.release().await {
                tracing::debug!(error = %e, %key, "a lock handed along the local queue had already expired");
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        // On failure the baton drops and passes the turn on.
        let held = self
            .shared
            .acquire(key, LockOptions { wait, ..options })
            .await?;
        let fence = held.fence().clone();
        self.slots.hold(key, &fence);
        baton.streak = Some(Streak {
            held,
            length: 0,
            started: Instant::now(),
            unended: Arc::default(),
        });
        Ok(QueuedHeld::new(baton, &fence))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::LocalLock;

    fn options(wait_ms: u64) -> LockOptions {
        LockOptions {
            lease: Duration::from_secs(10),
            wait: Duration::from_millis(wait_ms),
            watchdog: true,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_at_a_time_and_hand_overs_skip_the_shared_lock() {
        let shared = LocalLock::new();
        let queue = Arc::new(KeyQueue::new(shared.clone()));
        let key = LockKey::new("seat:1:1");
        let value = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (queue, key, value) = (queue.clone(), key.clone(), value.clone());
                tokio::spawn(async move {
                    let guard = queue.acquire(&key, options(30_000)).await.unwrap();
                    let seen = value.load(Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    value.store(seen + 1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(value.load(Ordering::SeqCst), 50);
        // Nobody ever waited in the shared lock (one local request at a
        // time reaches it), and hand-overs spared most acquisitions: at
        // least one per streak of MAX_STREAK + 1 holders, at most 50.
        let stats = shared.stats();
        assert_eq!(stats.waits, 0, "{stats:?}");
        assert!(
            (2..50).contains(&stats.attempts),
            "{stats:?}: every holder acquired the shared lock itself"
        );
        assert!(queue.slots.lock().is_empty(), "the key was freed");
    }

    #[tokio::test]
    async fn a_streak_carries_its_token_and_ends_after_max_streak() {
        let shared = LocalLock::new();
        let queue = KeyQueue::new(shared.clone());
        let key = LockKey::new("k");
        let first = queue.acquire_passing(&key, options(0)).await.unwrap();
        let token = first.fence().token();
        // MAX_STREAK + 1 holders queue behind the first one.
        let mut waiting = Vec::new();
        for _ in 0..=MAX_STREAK {
            let queue = queue.clone();
            let key = key.clone();
            waiting.push(tokio::spawn(async move {
                queue.acquire_passing(&key, options(30_000)).await.unwrap()
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(first.waited_for_here());
        first.release().await.unwrap();
        let mut tokens = Vec::new();
        let mut waited_for = Vec::new();
        for task in waiting {
            let guard = task.await.unwrap();
            tokens.push(guard.fence().token());
            waited_for.push(guard.waited_for_here());
            guard.release().await.unwrap();
        }
        // A release hands over here while the streak may go on and someone
        // waits: not the streak's last holder, not the last one of all.
        let mut expected = vec![true; MAX_STREAK as usize - 1];
        expected.extend([false, false]);
        assert_eq!(waited_for, expected);
        // The first MAX_STREAK were handed the same acquisition; the last
        // acquired anew, with a newer token.
        let (streak, last) = tokens.split_at(MAX_STREAK as usize);
        assert!(streak.iter().all(|t| *t == token), "{tokens:?}");
        assert!(last[0] > token, "{tokens:?}");
        assert_eq!(shared.stats().attempts, 2);
    }

    /// A holder passes the streak on before its unit has ended: the next
    /// local request holds at once, with the same token; the shared lock
    /// goes back to the lock service only after the first unit has ended,
    /// whether the streak ends with a release or a dropped guard.
    #[tokio::test]
    async fn a_streak_passed_on_early_goes_back_only_after_every_unit_ended() {
        for drop_last in [false, true] {
            let shared = LocalLock::new();
            let queue = KeyQueue::new(shared.clone());
            let key = LockKey::new("k");
            let mut first = queue.acquire_passing(&key, options(0)).await.unwrap();
            assert!(first.pass_on().await.is_none(), "nobody waits");
            let next = {
                let (queue, key) = (queue.clone(), key.clone());
                tokio::spawn(async move { queue.acquire(&key, options(5_000)).await.unwrap() })
            };
            tokio::time::timeout(Duration::from_secs(5), async {
                while !first.waited_for_here() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("the next request queues behind the first");
            let ending = first.pass_on().await.expect("passed on");
            let next = next.await.unwrap();
            assert_eq!(next.fence().token(), first.fence().token());
            // spent: releasing it changes nothing
            first.release().await.unwrap();
            // the last holder ends the streak while the first unit has not
            let last = tokio::spawn(async move {
                if drop_last {
                    drop(next);
                } else {
                    next.release().await.unwrap();
                }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                matches!(
                    shared.acquire(&key, options(0)).await,
                    Err(Failure::LockTimeout)
                ),
                "still held for the unit that has not ended"
            );
            drop(ending);
            last.await.unwrap();
            let again = shared.acquire(&key, options(2_000)).await.unwrap();
            again.release().await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_budget_covers_the_local_queue_and_a_timeout_loses_no_turn() {
        let shared = LocalLock::new();
        let queue = KeyQueue::new(shared.clone());
        let key = LockKey::new("k");
        let holder = queue.acquire(&key, options(0)).await.unwrap();
        assert!(matches!(
            queue.acquire(&key, options(20)).await,
            Err(Failure::LockTimeout)
        ));
        // The lock is busy in the shared lock too: a request of another
        // process (straight to the shared lock) times out.
        assert!(matches!(
            shared.acquire(&key, options(0)).await,
            Err(Failure::LockTimeout)
        ));
        holder.release().await.unwrap();
        // Nobody waited: released to the shared lock, the key is free.
        let outside = shared.acquire(&key, options(0)).await.unwrap();
        assert!(matches!(
            queue.acquire(&key, options(20)).await,
            Err(Failure::LockTimeout)
        ));
        outside.release().await.unwrap();
        let again = queue.acquire(&key, options(0)).await.unwrap();
        again.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_guard_does_not_hand_over_and_frees_the_key() {
        let shared = LocalLock::new();
        let queue = KeyQueue::new(shared.clone());
        let key = LockKey::new("k");
        let first = queue.acquire(&key, options(0)).await.unwrap();
        let token = first.fence().token();
        let next = {
            let (queue, key) = (queue.clone(), key.clone());
            tokio::spawn(async move { queue.acquire(&key, options(5_000)).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let next = next.await.unwrap();
        assert!(next.fence().token() > token, "acquired anew");
        next.release().await.unwrap();
        drop(queue.acquire(&key, options(0)).await.unwrap());
        // the background release of the dropped guard frees the shared lock
        let again = queue.acquire(&key, options(1_000)).await.unwrap();
        again.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_holder_whose_lease_ran_out_does_not_block_the_local_queue() {
        let shared = LocalLock::new();
        let queue = KeyQueue::new(shared.clone());
        let key = LockKey::new("k");
        let short = LockOptions {
            lease: Duration::from_millis(100),
            wait: Duration::ZERO,
            watchdog: false,
        };
        let crashed = queue.acquire(&key, short).await.unwrap();
        let token = crashed.fence().token();
        std::mem::forget(crashed);
        let paused = {
            let other = LockKey::new("k2");
            queue.acquire(&other, short).await.unwrap()
        };
        let next = queue.acquire(&key, options(2_000)).await.unwrap();
        assert!(next.fence().token() > token);
        next.release().await.unwrap();
        // the paused holder of k2 learns on release that it lost its lease
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(matches!(paused.release().await, Err(Failure::LockLost)));
        let again = queue
            .acquire(&LockKey::new("k2"), options(0))
            .await
            .unwrap();
        again.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_shared_acquisition_passes_the_turn_on() {
        let shared = LocalLock::new();
        let queue = KeyQueue::new(shared.clone());
        let key = LockKey::new("k");
        let outside = shared.acquire(&key, options(0)).await.unwrap();
        let a = {
            let (queue, key) = (queue.clone(), key.clone());
            tokio::spawn(async move { queue.acquire(&key, options(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = {
            let (queue, key) = (queue.clone(), key.clone());
            tokio::spawn(async move { queue.acquire(&key, options(5_000)).await })
        };
        // a reaches the shared lock and times out there; b, queued behind
        // it, gets the turn and acquires once the outside holder releases
        assert!(matches!(a.await.unwrap(), Err(Failure::LockTimeout)));
        outside.release().await.unwrap();
        let b = b.await.unwrap().unwrap();
        b.release().await.unwrap();
    }
}
