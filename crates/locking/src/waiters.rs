//! A process-wide registry of the acquisitions waiting for locks, shared by
//! the in-process lock and the Redis pub/sub lock.
//!
//! Waiters queue per channel (one channel per lock key) in FIFO order and
//! are reachable by their owner token:
//!
//! - [`Waiters::released`]: a lock was freed; wake **one** waiter of that
//!   channel (the first not already woken), so n waiters cost about 2n
//!   attempts instead of the n(n+1)/2 of waking them all;
//! - [`Waiters::handed`]: the lock was handed straight to the waiter with
//!   this owner token, with its fencing token; the waiter owns it without
//!   another attempt;
//! - [`Waiters::resync`]: notifications may have been missed (a subscriber
//!   reconnected); wake every waiter so each looks again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::stats::LockCounters;

struct Slot {
    id: u64,
    owner: String,
    notify: Notify,
    /// Woken and not yet back to waiting: the next release goes to someone
    /// else.
    woken: AtomicBool,
    /// The fencing token of a hand-over to this waiter.
    handed: Mutex<Option<u64>>,
}

impl Slot {
    fn handed(&self) -> Option<u64> {
        *self.handed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<Arc<Slot>>>,
    by_owner: HashMap<String, Arc<Slot>>,
}

/// The registry. Share it in an `Arc`.
pub struct Waiters {
    state: Mutex<State>,
    next_id: AtomicU64,
    counters: Arc<LockCounters>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("waiting", &self.state().by_owner.len())
            .finish()
    }
}

/// How a [`Ticket::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The lock was handed to this waiter, with this fencing token.
    Handed(u64),
    /// A release (or a resync) woke this waiter: it should try again.
    Notified,
    /// Nothing came within the timeout.
    TimedOut,
}

impl Waiters {
    /// Wake-ups and hand-overs are counted in `counters.wakeups`.
    pub fn new(counters: Arc<LockCounters>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(0),
            counters,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a single push, remove, lookup or scan:
        // a panic cannot leave the maps inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the end of `channel`'s queue as `owner`. From this call on,
    /// every release or hand-over delivered for `channel` or `owner`
    /// reaches the ticket, so an attempt made after it cannot miss one.
    pub fn register(self: &Arc<Self>, channel: &str, owner: &str) -> Ticket {
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            owner: owner.to_owned(),
            notify: Notify::new(),
            woken: AtomicBool::new(false),
            handed: Mutex::new(None),
        });
        let mut state = self.state();
        state
            .queues
            .entry(channel.to_owned())
            .or_default()
            .push_back(slot.clone());
        state.by_owner.insert(owner.to_owned(), slot.clone());
        Ticket {
            waiters: self.clone(),
            channel: channel.to_owned(),
            slot,
        }
    }

    /// A lock on `channel` was freed: wake its first waiter not already
    /// woken; if every waiter is already retrying, leave a wake with the
    /// first, so its retry is followed by one more.
    pub fn released(&self, channel: &str) {
        let state = self.state();
        let Some(queue) = state.queues.get(channel) else {
            return;
        };
        let chosen = queue
            .iter()
            .find(|s| !s.woken.load(Ordering::Acquire))
            .or_else(|| queue.front());
        if let Some(slot) = chosen {
            self.wake(slot);
        }
    }

    /// The lock was handed to the waiter `owner` with fencing token
    /// `token`. False when no waiter of this registry has that owner token
    /// (it belongs to another process, or it left).
    pub fn handed(&self, owner: &str, token: u64) -> bool {
        let state = self.state();
        let Some(slot) = state.by_owner.get(owner) else {
            return false;
        };
        *slot.handed.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        self.wake(slot);
        true
    }

    /// Notifications may have been missed: wake every waiter.
    pub fn resync(&self) {
        let state = self.state();
        for slot in state.by_owner.values() {
            self.wake(slot);
        }
    }

    /// How many waiters are registered (all channels).
    pub fn len(&self) -> usize {
        self.state().by_owner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wake(&self, slot: &Slot) {
        slot.woken.store(true, Ordering::Release);
        slot.notify.notify_one();
        self.counters.wakeup();
    }

    fn remove(&self, channel: &str, slot: &Slot) {
        let mut state = self.state();
        if let Some(queue) = state.queues.get_mut(channel) {
            queue.retain(|s| s.id != slot.id);
            if queue.is_empty() {
                state.queues.remove(channel);
            }
        }
        if state
            .by_owner
            .get(&slot.owner)
            .is_some_and(|s| s.id == slot.id)
        {
            state.by_owner.remove(&slot.owner);
        }
    }
}

/// One waiter's place. Dropping it leaves the registry; if it had been
/// woken by a release and had not acted on it (its task was cancelled, or
/// it gave up), the wake passes to the next waiter of the channel.
pub struct Ticket {
    waiters: Arc<Waiters>,
    channel: String,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("channel", &self.channel)
            .field("handed", &self.slot.handed())
            .finish()
    }
}

impl Ticket {
    /// Call after a failed attempt: this waiter is eligible for the next
    /// release again.
    pub fn rearm(&self) {
        self.slot.woken.store(false, Ordering::Release);
    }

    /// The fencing token of a hand-over to this waiter, if one arrived.
    pub fn handed(&self) -> Option<u64> {
        self.slot.handed()
    }

    /// Waits at most `timeout` for a release or a hand-over. A notification
    /// that arrived since the last wait is not lost: it ends this wait at
    /// once.
    pub async fn wait(&self, timeout: Duration) -> Wake {
        if let Some(token) = self.handed() {
            return Wake::Handed(token);
        }
        let woken = tokio::time::timeout(timeout, self.slot.notify.notified())
            .await
            .is_ok();
        match (self.handed(), woken) {
            (Some(token), _) => Wake::Handed(token),
            (None, true) => Wake::Notified,
            (None, false) => Wake::TimedOut,
        }
    }

    /// Leaves after acquiring: any wake this waiter received was used.
    pub fn done(self) {
        self.slot.woken.store(false, Ordering::Release);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiters.remove(&self.channel, &self.slot);
        if self.slot.woken.load(Ordering::Acquire) && self.slot.handed().is_none() {
            self.waiters.released(&self.channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiters() -> Arc<Waiters> {
        Arc::new(Waiters::new(Arc::default()))
    }

    async fn woken(t: &Ticket) -> bool {
        t.wait(Duration::from_millis(20)).await == Wake::Notified
    }

    #[tokio::test]
    async fn a_release_wakes_the_first_waiter_only_in_fifo_order() {
        let w = waiters();
        let (a, b, c) = (
            w.register("k", "a"),
            w.register("k", "b"),
            w.register("k", "c"),
        );
        w.released("k");
        assert!(woken(&a).await);
        assert!(!woken(&b).await && !woken(&c).await);
        // a is retrying: the next release goes to b
        w.released("k");
        assert!(woken(&b).await);
        assert!(!woken(&c).await);
        a.done();
        assert_eq!(w.len(), 2);
        // b fails its retry and waits again: it is first in line again
        b.rearm();
        w.released("k");
        assert!(woken(&b).await);
        assert!(!woken(&c).await);
        assert_eq!(w.counters.snapshot().wakeups, 3);
    }

    #[tokio::test]
    async fn a_cancelled_woken_waiter_passes_the_wake_on() {
        let w = waiters();
        let (a, b) = (w.register("k", "a"), w.register("k", "b"));
        w.released("k");
        drop(a);
        assert!(woken(&b).await);
        drop(b);
        assert!(w.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_that_acquired_does_not_pass_the_wake_on() {
        let w = waiters();
        let (a, b) = (w.register("k", "a"), w.register("k", "b"));
        w.released("k");
        assert!(woken(&a).await);
        a.done();
        assert!(!woken(&b).await);
    }

    #[tokio::test]
    async fn keys_are_independent_and_unknown_channels_are_ignored() {
        let w = waiters();
        let (a, other) = (w.register("k", "a"), w.register("j", "o"));
        w.released("k");
        assert!(woken(&a).await);
        assert!(!woken(&other).await);
        w.released("nobody-waits");
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept() {
        let w = waiters();
        let a = w.register("k", "a");
        w.released("k");
        // the waiter was busy retrying when the release came
        a.rearm();
        assert!(woken(&a).await);
    }

    #[tokio::test]
    async fn a_hand_over_reaches_its_owner_only_and_carries_the_token() {
        let w = waiters();
        let (a, b) = (w.register("k", "a"), w.register("k", "b"));
        assert!(w.handed("b", 42));
        assert!(!w.handed("somebody-else", 43));
        assert_eq!(b.wait(Duration::from_millis(20)).await, Wake::Handed(42));
        assert_eq!(b.handed(), Some(42));
        assert_eq!(a.wait(Duration::from_millis(20)).await, Wake::TimedOut);
        // a handed waiter is not chosen for a plain release
        w.released("k");
        assert!(woken(&a).await);
        // dropping a handed ticket does not pass a wake on
        drop(b);
        a.rearm();
        assert!(!woken(&a).await);
        assert_eq!(w.len(), 1);
    }

    #[tokio::test]
    async fn resync_wakes_every_waiter() {
        let w = waiters();
        let (a, b, c) = (
            w.register("k", "a"),
            w.register("k", "b"),
            w.register("j", "c"),
        );
        w.resync();
        assert!(woken(&a).await && woken(&b).await && woken(&c).await);
    }
}
