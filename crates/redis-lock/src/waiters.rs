//! The process-wide waiter registry of the pub/sub lock: a FIFO of waiters
//! per release channel, fed by the one subscriber connection's dispatcher.
//! A release wakes one waiter (the first not already woken), not all of
//! them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::stats::Counters;

/// Whom a release message wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WakePolicy {
    /// The first waiter of the key not already woken (the default).
    #[default]
    One,
    /// Every waiter of the key (the thundering herd; for the lab's
    /// comparison only).
    All,
}

struct Slot {
    id: u64,
    notify: Notify,
    /// Woken and not yet back to waiting: the next release goes to someone
    /// else.
    woken: AtomicBool,
}

pub(crate) struct Waiters {
    queues: Mutex<HashMap<String, VecDeque<Arc<Slot>>>>,
    next_id: AtomicU64,
    policy: WakePolicy,
    counters: Arc<Counters>,
}

impl Waiters {
    pub fn new(policy: WakePolicy, counters: Arc<Counters>) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            policy,
            counters,
        }
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Arc<Slot>>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single push, remove or scan).
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the end of `channel`'s queue. From now on every release
    /// published on `channel` reaches this process's queue, so a retry made
    /// after this call cannot miss one.
    pub fn register(self: &Arc<Self>, channel: &str) -> Ticket {
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            notify: Notify::new(),
            woken: AtomicBool::new(false),
        });
        self.queues()
            .entry(channel.to_owned())
            .or_default()
            .push_back(slot.clone());
        Ticket {
            waiters: self.clone(),
            channel: channel.to_owned(),
            slot,
        }
    }

    /// A release was published on `channel`: wake one waiter (or all, under
    /// [`WakePolicy::All`]).
    pub fn released(&self, channel: &str) {
        let queues = self.queues();
        let Some(queue) = queues.get(channel) else {
            return;
        };
        match self.policy {
            WakePolicy::One => {
                // The first waiter not already woken; if every waiter is
                // retrying already, leave a permit with the first so its
                // retry is followed by one more.
                let chosen = queue
                    .iter()
                    .find(|s| !s.woken.load(Ordering::Acquire))
                    .or_else(|| queue.front());
                if let Some(slot) = chosen {
                    self.wake(slot);
                }
            }
            WakePolicy::All => queue.iter().for_each(|slot| self.wake(slot)),
        }
    }

    /// The subscriber reconnected and may have missed releases: wake the
    /// first waiter of every key.
    pub fn resync(&self) {
        let queues = self.queues();
        for slot in queues.values().filter_map(VecDeque::front) {
            self.wake(slot);
        }
    }

    fn wake(&self, slot: &Slot) {
        slot.woken.store(true, Ordering::Release);
        slot.notify.notify_one();
        self.counters.wakeup();
    }

    fn remove(&self, channel: &str, id: u64) {
        let mut queues = self.queues();
        if let Some(queue) = queues.get_mut(channel) {
            queue.retain(|s| s.id != id);
            if queue.is_empty() {
                queues.remove(channel);
            }
        }
    }

    #[cfg(test)]
    fn len(&self, channel: &str) -> usize {
        self.queues().get(channel).map_or(0, VecDeque::len)
    }
}

/// One waiter's place in its key's queue. Dropping it leaves the queue; if
/// it had been woken and had not acted on it (its task was cancelled, or it
/// gave up), the wake passes to the next waiter.
pub(crate) struct Ticket {
    waiters: Arc<Waiters>,
    channel: String,
    slot: Arc<Slot>,
}

impl Ticket {
    /// Call after a failed attempt: this waiter is eligible for the next
    /// release again.
    pub fn rearm(&self) {
        self.slot.woken.store(false, Ordering::Release);
    }

    /// Waits for a wake at most `timeout`. True when woken.
    pub async fn wait(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.slot.notify.notified())
            .await
            .is_ok()
    }

    /// Leaves the queue after acquiring: the wake (if any) was used.
    pub fn done(self) {
        self.slot.woken.store(false, Ordering::Release);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiters.remove(&self.channel, self.slot.id);
        if self.slot.woken.load(Ordering::Acquire) {
            self.waiters.released(&self.channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiters(policy: WakePolicy) -> Arc<Waiters> {
        Arc::new(Waiters::new(policy, Arc::default()))
    }

    async fn woken(t: &Ticket) -> bool {
        t.wait(Duration::from_millis(20)).await
    }

    #[tokio::test]
    async fn a_release_wakes_the_first_waiter_only_in_fifo_order() {
        let w = waiters(WakePolicy::One);
        let (a, b, c) = (w.register("k"), w.register("k"), w.register("k"));
        w.released("k");
        assert!(woken(&a).await);
        assert!(!woken(&b).await && !woken(&c).await);
        // a is retrying: the next release goes to b
        w.released("k");
        assert!(woken(&b).await);
        assert!(!woken(&c).await);
        a.done();
        assert_eq!(w.len("k"), 2);
        // b fails its retry and waits again: it is first in line again
        b.rearm();
        w.released("k");
        assert!(woken(&b).await);
        assert!(!woken(&c).await);
        assert_eq!(w.counters.snapshot().wakeups, 3);
    }

    #[tokio::test]
    async fn a_cancelled_woken_waiter_passes_the_wake_on() {
        let w = waiters(WakePolicy::One);
        let (a, b) = (w.register("k"), w.register("k"));
        w.released("k");
        drop(a);
        assert!(woken(&b).await);
        drop(b);
        assert_eq!(w.len("k"), 0);
    }

    #[tokio::test]
    async fn a_released_waiter_does_not_pass_the_wake_on() {
        let w = waiters(WakePolicy::One);
        let (a, b) = (w.register("k"), w.register("k"));
        w.released("k");
        assert!(woken(&a).await);
        a.done();
        assert!(!woken(&b).await);
    }

    #[tokio::test]
    async fn wake_all_wakes_everyone_and_keys_are_independent() {
        let w = waiters(WakePolicy::All);
        let (a, b, other) = (w.register("k"), w.register("k"), w.register("j"));
        w.released("k");
        assert!(woken(&a).await && woken(&b).await);
        assert!(!woken(&other).await);
        w.released("nobody-waits");
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept() {
        let w = waiters(WakePolicy::One);
        let a = w.register("k");
        w.released("k");
        // the waiter was busy retrying when the release came
        a.rearm();
        assert!(woken(&a).await);
    }
}
