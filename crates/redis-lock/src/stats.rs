//! Counters the lab reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of one lock adapter's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Acquisition attempts: one per `SET NX` script call (or, for the local
    /// lock, one per look at the key), successful or not.
    pub attempts: u64,
    /// Times a contender went to sleep before retrying (a backoff, or a wait
    /// for a release).
    pub waits: u64,
    /// Release notifications handed to a waiter.
    pub wakeups: u64,
    /// Lease renewals the watchdog made.
    pub renewals: u64,
    /// Leases found lost while the guard was still held (renewal found the
    /// lock gone, or the lease ran out un-renewed).
    pub lost: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    attempts: AtomicU64,
    waits: AtomicU64,
    wakeups: AtomicU64,
    renewals: AtomicU64,
    lost: AtomicU64,
}

impl Counters {
    pub fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }
    pub fn wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn wakeup(&self) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
    }
    pub fn renewal(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }
    pub fn lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LockStats {
        LockStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            wakeups: self.wakeups.load(Ordering::Relaxed),
            renewals: self.renewals.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}
