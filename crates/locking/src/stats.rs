//! Counters of a lock adapter, as the lab reads them.
//!
//! [`LockCounters`] is what an adapter records into (shared by its handles,
//! its watchdogs and its waiter registry); [`LockStats`] is a snapshot of
//! it.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of one lock adapter's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Acquisition attempts: one per acquire-script call in Redis (or, for
    /// the in-process lock, one per look at the key), successful or not.
    pub attempts: u64,
    /// Times a contender went to sleep before its next attempt (a backoff,
    /// or a wait for a release or a hand-over).
    pub waits: u64,
    /// Release notifications and hand-overs delivered to a waiter.
    pub wakeups: u64,
    /// Releases that passed the lock straight to the next waiter (counted
    /// by the releaser).
    pub handovers: u64,
    /// Lease renewals the watchdog made.
    pub renewals: u64,
    /// Leases found lost while the guard was still held (a renewal found
    /// the lock gone, or the lease ran out un-renewed).
    pub lost: u64,
    /// Background clean-ups completed: an acquisition given up while its
    /// request was in doubt or its place queued, or a guard dropped without
    /// release, cleaned up once the lock service answered.
    pub cleanups: u64,
}

impl LockStats {
    /// What happened between `before` and `self` (counters never go down;
    /// a counter that did, being from another adapter, counts as 0).
    pub fn since(&self, before: &LockStats) -> LockStats {
        LockStats {
            attempts: self.attempts.saturating_sub(before.attempts),
            waits: self.waits.saturating_sub(before.waits),
            wakeups: self.wakeups.saturating_sub(before.wakeups),
            handovers: self.handovers.saturating_sub(before.handovers),
            renewals: self.renewals.saturating_sub(before.renewals),
            lost: self.lost.saturating_sub(before.lost),
            cleanups: self.cleanups.saturating_sub(before.cleanups),
        }
    }
}

/// The live counters an adapter records into; see [`LockStats`] for what
/// each counts.
#[derive(Debug, Default)]
pub struct LockCounters {
    attempts: AtomicU64,
    waits: AtomicU64,
    wakeups: AtomicU64,
    handovers: AtomicU64,
    renewals: AtomicU64,
    lost: AtomicU64,
    cleanups: AtomicU64,
}

impl LockCounters {
    pub fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn wakeup(&self) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn handover(&self) {
        self.handovers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn renewal(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cleanup(&self) {
        self.cleanups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LockStats {
        LockStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            wakeups: self.wakeups.load(Ordering::Relaxed),
            handovers: self.handovers.load(Ordering::Relaxed),
            renewals: self.renewals.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            cleanups: self.cleanups.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_count_and_subtract() {
        let c = LockCounters::default();
        c.attempt();
        c.attempt();
        c.wait();
        let before = c.snapshot();
        c.attempt();
        c.handover();
        c.cleanup();
        let delta = c.snapshot().since(&before);
        assert_eq!(
            delta,
            LockStats {
                attempts: 1,
                handovers: 1,
                cleanups: 1,
                ..LockStats::default()
            }
        );
        assert_eq!(before.attempts, 2);
        assert_eq!(before.waits, 1);
        assert_eq!(LockStats::default().since(&before), LockStats::default());
    }
}
