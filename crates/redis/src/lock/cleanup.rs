//! Background clean-up: what an acquisition or a guard could not finish
//! because Redis did not answer (or because its task was cancelled) is done
//! by one worker per [`crate::RedisLocks`] as soon as Redis answers again.
//!
//! Two kinds of jobs, both one `LEAVE` script call (see `lock/scripts.rs`):
//!
//! - **an acquisition given up in doubt**: its attempt timed out or its
//!   connection dropped (the script may still run when Redis resumes), it
//!   was cancelled mid-attempt, or it left while queued. The job leaves the
//!   waiter queue, sets a tombstone so that a late copy of the attempt does
//!   nothing, and releases (or hands on) the lock if the attempt had taken
//!   it: an orphan lock lives about one round trip after Redis returns
//!   instead of a whole lease;
//! - **a guard dropped without release**, or whose release failed: a
//!   compare-and-release.
//!
//! A job is retried (with a short jittered backoff; each try is bounded by
//! the response timeout) until Redis answers, for at most the clean-up
//! horizon; at most [`CAPACITY`] jobs wait, the oldest dropped beyond (its
//! lock then lasts until its lease runs out). Jobs still waiting when the
//! last handle of the `RedisLocks` is dropped are dropped too (their locks
//! expire with their leases, their queue places are skipped once their
//! budgets have run out).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use concert_domain::Failure;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::SpinBackoff;
use crate::keys::Keys;

/// Jobs waiting at most.
pub(crate) const CAPACITY: usize = 10_000;

pub(crate) struct Job {
    pub keys: Keys,
    pub owner: String,
    /// `Some` for a given-up acquisition: how long its tombstone lives.
    pub tombstone: Option<Duration>,
    /// Give up on the job after this.
    pub until: Instant,
}

/// The job queue.
#[derive(Default)]
pub(crate) struct Cleanup {
    jobs: Mutex<VecDeque<Job>>,
    ready: Notify,
    dropped: Mutex<u64>,
    /// Jobs pushed and not yet done (queued or running).
    pending: AtomicUsize,
}

impl Cleanup {
    fn jobs(&self) -> MutexGuard<'_, VecDeque<Job>> {
        // Only pushes and pops under the lock: a panic cannot corrupt it.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, job: Job) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let overflow = {
            let mut jobs = self.jobs();
            jobs.push_back(job);
            (jobs.len() > CAPACITY).then(|| jobs.pop_front()).flatten()
        };
        if let Some(lost) = overflow {
            self.done();
            let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
            *dropped += 1;
            if *dropped % 1000 == 1 {
                tracing::warn!(key = %lost.keys.lock, dropped = *dropped, "lock clean-up queue full: dropping the oldest jobs (their locks expire with their leases)");
            }
        }
        self.ready.notify_one();
    }

    /// A job ended (done, abandoned or dropped).
    fn done(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// True when no job is queued or running.
    pub fn is_idle(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    fn pop(&self) -> Option<Job> {
        self.jobs().pop_front()
    }

    fn retry_first(&self, job: Job) {
        self.jobs().push_front(job);
    }
}

/// What the worker runs its jobs against (the lock's shared core): its job
/// queue and the one `LEAVE` call of a job.
pub(crate) trait Cleaner: Send + Sync {
    fn jobs(&self) -> &Cleanup;

    /// Runs the job once; a job that succeeded is counted as a clean-up.
    fn clean(&self, job: &Job) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// The worker: runs until aborted (when its `RedisLocks` is dropped).
pub(crate) async fn run(cleaner: impl Cleaner) {
    let pacing = SpinBackoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(250),
    };
    let queue = cleaner.jobs();
    let mut failures = 0u32;
    loop {
        let Some(job) = queue.pop() else {
            queue.ready.notified().await;
            continue;
        };
        if Instant::now() >= job.until {
            tracing::warn!(key = %job.keys.lock, "lock clean-up abandoned: Redis did not answer within the horizon");
            queue.done();
            continue;
        }
        match cleaner.clean(&job).await {
            Ok(()) => {
                queue.done();
                failures = 0;
            }
            Err(Failure::Unavailable(_)) => {
                queue.retry_first(job);
                failures = failures.saturating_add(1);
                tokio::time::sleep(pacing.delay(failures)).await;
            }
            Err(e) => {
                tracing::warn!(key = %job.keys.lock, error = %format!("{e:#}"), "lock clean-up failed");
                queue.done();
            }
        }
    }
}
