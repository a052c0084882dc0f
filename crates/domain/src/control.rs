//! Concurrency control: how a use case's unit of work is protected against
//! concurrent writers of the same rows.
//!
//! The domain knows the protections of the brief, never a technology:
//!
//! - [`Protection::Optimistic`]: plain reads; every write checks the
//!   version it read and fails with [`Failure::Conflict`] if it changed.
//! - [`Protection::Pessimistic`]: reads lock the rows until the unit ends;
//!   others wait.
//! - [`Protection::Atomic`]: the contended write is one conditional write
//!   that encodes the rule (the use case calls the ports' atomic methods).
//! - [`Protection::Fenced`]: under exclusive locks taken before the unit of
//!   work began; writes check the version (second line of defence) and the
//!   locks' fencing tokens, and a unit whose lock was lost does not commit.
//!
//! A [`Control`] is one operation's choice, made at wiring from
//! configuration: run once under a protection, retry optimistic conflicts,
//! run under locks (a [`Locks`], over any lock adapter), or (seat holds only)
//! send the request to the one applier of its partition ([`SeatQueue`]),
//! which applies it fenced by the partition's lease.
//!
//! [`SeatQueue`]: crate::queue::SeatQueue

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::clock::Clock;
use crate::error::{Failure, OperationError};
use crate::lock::{LockKey, LockOptions, Locks};
pub use crate::protection::Protection;
use crate::queue::SeatQueue;

/// The write operations a control runs (labels for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Reserve,
    Charge,
    UsePoints,
    Pay,
    Cancel,
    Refund,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Reserve => "reserve",
            Operation::Charge => "charge",
            Operation::UsePoints => "use",
            Operation::Pay => "pay",
            Operation::Cancel => "cancel",
            Operation::Refund => "refund",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a control reports while it runs. The app turns these into metrics;
/// the lab counts them. Every method defaults to doing nothing.
pub trait Observer: Send + Sync {
    /// One unit of work is about to run (a retry is another attempt).
    fn attempt(&self, _op: Operation, _strategy: &str) {}
    /// An attempt ended in [`Failure::Conflict`].
    fn conflict(&self, _op: Operation, _strategy: &str) {}
    /// The locks were acquired after waiting `waited`.
    fn lock_acquired(&self, _op: Operation, _strategy: &str, _waited: Duration) {}
    /// The locks were not acquired within the wait budget.
    fn lock_timeout(&self, _op: Operation, _strategy: &str) {}
}

/// An observer that observes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl Observer for Unobserved {}

/// Bounded retries with exponential backoff and full jitter, for
/// optimistic conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff ceiling; it doubles per retry up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1_000,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(32),
        }
    }
}

impl RetryPolicy {
    /// The sleep before retry number `retry` (1-based): uniform in
    /// `[0, min(max, base * 2^(retry-1))]`, so contenders spread out instead
    /// of colliding again in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[derive(Clone)]
enum Kind {
    Once(Protection),
    Retry(RetryPolicy),
    Locked {
        locks: Arc<dyn Locks>,
        options: LockOptions,
    },
    Queued {
        queue: Arc<dyn SeatQueue>,
        reply: Duration,
    },
}

/// One operation's concurrency control, chosen at wiring.
#[derive(Clone)]
pub struct Control {
    kind: Kind,
    name: String,
    observer: Arc<dyn Observer>,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("strategy", &self.name)
            .finish_non_exhaustive()
    }
}

impl Control {
    fn new(name: &str, kind: Kind) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            observer: Arc::new(Unobserved),
        }
    }

    /// One attempt, optimistic: a conflict reaches the caller.
    pub fn optimistic(name: &str) -> Self {
        Self::new(name, Kind::Once(Protection::Optimistic))
    }

    /// One attempt, rows locked on read: others wait.
    pub fn pessimistic(name: &str) -> Self {
        Self::new(name, Kind::Once(Protection::Pessimistic))
    }

    /// One attempt, the contended write one conditional write.
    pub fn atomic(name: &str) -> Self {
        Self::new(name, Kind::Once(Protection::Atomic))
    }

    /// Optimistic, conflicts retried under `policy`.
    pub fn retrying(name: &str, policy: RetryPolicy) -> Self {
        Self::new(name, Kind::Retry(policy))
    }

    /// Under the exclusive locks of `locks`, fenced, with the optimistic
    /// version check as the second line of defence. A conflict under the
    /// locks (a writer that takes no lock changed a row between the unit's
    /// read and its write, or storage served a read it keeps for the
    /// lock's holders and it was out of date) is run once more while the
    /// locks are still held: the second unit reads afresh.
    pub fn locked(name: &str, locks: Arc<dyn Locks>, options: LockOptions) -> Self {
        Self::new(name, Kind::Locked { locks, options })
    }

    /// Seat holds through `queue`: the request is applied by the holder of
    /// its partition's lease, fenced by that lease, in arrival order; the
    /// caller waits up to `reply` for the outcome. No other operation can
    /// run under it ([`Control::run`] refuses).
    pub fn queued(name: &str, queue: Arc<dyn SeatQueue>, reply: Duration) -> Self {
        Self::new(name, Kind::Queued { queue, reply })
    }

    /// True for a control that takes locks before its unit of work.
    pub fn locks(&self) -> bool {
        matches!(self.kind, Kind::Locked { .. })
    }

    /// The queue and reply budget of a [`Control::queued`] control.
    pub fn queue(&self) -> Option<(&Arc<dyn SeatQueue>, Duration)> {
        match &self.kind {
            Kind::Queued { queue, reply } => Some((queue, *reply)),
            _ => None,
        }
    }

    /// The observer this control reports to.
    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The strategy's configuration name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `work` (one whole unit of work, begun with the protection it is
    /// given and committed before it returns) under this control. Under
    /// locks, in the only safe order: **acquire (every key, see
    /// [`Locks::lock`]) -> begin transaction -> decide -> commit ->
    /// release**; the locks are released after the work has completed,
    /// whether it returned `Ok`, `Err`, or panicked (the panic is re-raised
    /// after the release). Optimistic retries call `work` again after a
    /// backoff.
    pub async fn run<T, E, F, Fut>(
        &self,
        op: Operation,
        keys: &[LockKey],
        clock: &dyn Clock,
        work: F,
    ) -> Result<T, E>
    where
        E: OperationError,
        F: Fn(Protection) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let name = self.name.as_str();
        match &self.kind {
            Kind::Once(protection) => self.attempt(op, work(protection.clone())).await,
            Kind::Retry(policy) => {
                let mut attempt = 1;
                loop {
                    match self.attempt(op, work(Protection::Optimistic)).await {
                        Err(e) if e.is_conflict() && attempt < policy.max_attempts => {
                            clock.sleep(policy.backoff(attempt)).await;
                            attempt += 1;
                        }
                        outcome => return outcome,
                    }
                }
            }
            Kind::Locked { locks, options } => {
                let started = Instant::now();
                let outcome = match locks.lock(keys, *options).await {
                    Err(e) => Err(e.into()),
                    Ok(set) => {
                        self.observer.lock_acquired(op, name, started.elapsed());
                        let fences = set.fences();
                        let under_locks = async {
                            match self
                                .attempt(op, work(Protection::Fenced(fences.clone())))
                                .await
                            {
                                Err(e) if e.is_conflict() => {
                                    self.attempt(op, work(Protection::Fenced(fences))).await
                                }
                                outcome => outcome,
                            }
                        };
                        let outcome = AssertUnwindSafe(under_locks).catch_unwind().await;
                        set.release().await;
                        outcome.unwrap_or_else(|panic| resume_unwind(panic))
                    }
                };
                if matches!(&outcome, Err(e) if matches!(e.failure(), Some(Failure::LockTimeout))) {
                    self.observer.lock_timeout(op, name);
                }
                outcome
            }
            // Queued work is applied where the partition's lease is held,
            // not here; the wiring only builds it for seat holds, which
            // submit instead of running (see `ReservationService`).
            Kind::Queued { .. } => Err(Failure::unknown(anyhow::anyhow!(
                "the {name} strategy applies seat holds only; {op} cannot run under it"
            ))
            .into()),
        }
    }

    async fn attempt<T, E: OperationError>(
        &self,
        op: Operation,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.observer.attempt(op, &self.name);
        let outcome = work.await;
        if matches!(&outcome, Err(e) if e.is_conflict()) {
            self.observer.conflict(op, &self.name);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::MockClock;
    use crate::error::ReserveError;
    use crate::lock::{Fence, Fences, LockSet};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    type Log = Arc<Mutex<Vec<String>>>;

    /// Locks that grant every key in the order given (ordering them is
    /// `concert-locking`'s), with fences `first`, `first + 1`, ..., logging
    /// `acquire <key>` and `release <key>`; or that time out.
    struct TestLocks {
        next: AtomicU64,
        log: Log,
        times_out: bool,
    }

    impl TestLocks {
        fn granting(first: u64, log: Log) -> Arc<Self> {
            Arc::new(Self {
                next: AtomicU64::new(first),
                log,
                times_out: false,
            })
        }

        fn timing_out() -> Arc<Self> {
            Arc::new(Self {
                next: AtomicU64::new(1),
                log: Log::default(),
                times_out: true,
            })
        }
    }

    struct TestSet {
        fences: Fences,
        log: Log,
    }

    #[async_trait::async_trait]
    impl Locks for TestLocks {
        async fn lock(
            &self,
            keys: &[LockKey],
            _: LockOptions,
        ) -> Result<Box<dyn LockSet>, Failure> {
            if self.times_out {
                return Err(Failure::LockTimeout);
            }
            let mut fences = Vec::new();
            for key in keys {
                self.log.lock().unwrap().push(format!("acquire {key}"));
                let token = self.next.fetch_add(1, Ordering::SeqCst);
                fences.push((key.clone(), Fence::new(token)));
            }
            Ok(Box::new(TestSet {
                fences: Fences::new(fences),
                log: self.log.clone(),
            }))
        }
    }

    #[async_trait::async_trait]
    impl LockSet for TestSet {
        fn fences(&self) -> Fences {
            self.fences.clone()
        }

        async fn release(self: Box<Self>) {
            let mut log = self.log.lock().unwrap();
            for (key, _) in self.fences.iter().collect::<Vec<_>>().into_iter().rev() {
                log.push(format!("release {key}"));
            }
        }
    }

    fn no_sleep_clock() -> MockClock {
        let mut clock = MockClock::new();
        clock.expect_sleep().returning(|_| ());
        clock
    }

    /// Counts what a control reports.
    #[derive(Default)]
    struct Counts {
        attempts: AtomicU64,
        conflicts: AtomicU64,
        acquired: AtomicU64,
        timeouts: AtomicU64,
    }

    impl Observer for Counts {
        fn attempt(&self, _: Operation, _: &str) {
            self.attempts.fetch_add(1, Ordering::SeqCst);
        }
        fn conflict(&self, _: Operation, _: &str) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        fn lock_acquired(&self, _: Operation, _: &str, _: Duration) {
            self.acquired.fetch_add(1, Ordering::SeqCst);
        }
        fn lock_timeout(&self, _: Operation, _: &str) {
            self.timeouts.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Counts {
        fn get(&self) -> [u64; 4] {
            [
                self.attempts.load(Ordering::SeqCst),
                self.conflicts.load(Ordering::SeqCst),
                self.acquired.load(Ordering::SeqCst),
                self.timeouts.load(Ordering::SeqCst),
            ]
        }
    }

    fn kind(p: &Protection) -> &'static str {
        match p {
            Protection::Optimistic => "optimistic",
            Protection::Pessimistic => "pessimistic",
            Protection::Atomic => "atomic",
            Protection::Fenced(_) => "fenced",
        }
    }

    #[tokio::test]
    async fn plain_controls_run_once_with_their_protection() {
        for (control, expected) in [
            (Control::optimistic("optimistic"), "optimistic"),
            (Control::pessimistic("pessimistic"), "pessimistic"),
            (Control::atomic("atomic"), "atomic"),
        ] {
            let counts = Arc::new(Counts::default());
            let control = control.with_observer(counts.clone());
            let seen = Mutex::new(Vec::new());
            let out: Result<(), ReserveError> = control
                .run(
                    Operation::Reserve,
                    &[LockKey::new("k")],
                    &no_sleep_clock(),
                    |p| {
                        seen.lock().unwrap().push(kind(&p));
                        async { Err(Failure::Conflict.into()) }
                    },
                )
                .await;
            assert!(out.unwrap_err().is_conflict());
            assert_eq!(*seen.lock().unwrap(), [expected]);
            assert_eq!(counts.get(), [1, 1, 0, 0]);
            assert_eq!(control.name(), expected);
        }
    }

    #[tokio::test]
    async fn retrying_retries_conflicts_only() {
        let counts = Arc::new(Counts::default());
        let control = Control::retrying("optimistic-retry", RetryPolicy::default())
            .with_observer(counts.clone());
        let calls = AtomicU64::new(0);
        let out: Result<u64, ReserveError> = control
            .run(Operation::Reserve, &[], &no_sleep_clock(), |p| {
                assert!(matches!(p, Protection::Optimistic));
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n < 4 {
                        Err(Failure::Conflict.into())
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 4);
        assert_eq!(counts.get(), [4, 3, 0, 0]);

        let out: Result<(), ReserveError> = control
            .run(Operation::Reserve, &[], &no_sleep_clock(), |_| async {
                Err(ReserveError::SeatNotFound)
            })
            .await;
        assert!(matches!(out, Err(ReserveError::SeatNotFound)));
        assert_eq!(counts.get(), [5, 3, 0, 0]);
    }

    #[tokio::test]
    async fn retrying_gives_up_after_max_attempts() {
        let control = Control::retrying(
            "optimistic-retry",
            RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            },
        );
        let mut clock = MockClock::new();
        clock.expect_sleep().times(2).returning(|_| ());
        let calls = AtomicU64::new(0);
        let out: Result<(), ReserveError> = control
            .run(Operation::Reserve, &[], &clock, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Failure::Conflict.into()) }
            })
            .await;
        assert!(out.unwrap_err().is_conflict());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn locked_runs_fenced_under_every_key_then_releases() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let lock = TestLocks::granting(77, log.clone());
        let counts = Arc::new(Counts::default());
        let control =
            Control::locked("a-lock", lock, LockOptions::default()).with_observer(counts.clone());
        let keys = [LockKey::new("seat:1:01"), LockKey::new("seat:1:02")];
        let work_log = log.clone();
        let out: Result<Vec<u64>, ReserveError> = control
            .run(Operation::Reserve, &keys, &no_sleep_clock(), |p| {
                let work_log = work_log.clone();
                async move {
                    work_log.lock().unwrap().push("work".into());
                    let fences = p.fences().expect("fenced");
                    Ok(fences.iter().map(|(_, f)| f.token()).collect())
                }
            })
            .await;
        assert_eq!(out.unwrap(), [77, 78]);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "acquire seat:1:01",
                "acquire seat:1:02",
                "work",
                "release seat:1:02",
                "release seat:1:01"
            ]
        );
        assert_eq!(counts.get(), [1, 0, 1, 0]);
    }

    #[tokio::test]
    async fn a_conflict_under_the_locks_runs_once_more_before_the_release() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let lock = TestLocks::granting(5, log.clone());
        let counts = Arc::new(Counts::default());
        let control =
            Control::locked("a-lock", lock, LockOptions::default()).with_observer(counts.clone());
        let keys = [LockKey::new("wallet:1")];
        // conflicts every time: two units, then the conflict is the answer
        let work_log = log.clone();
        let out: Result<(), ReserveError> = control
            .run(Operation::Reserve, &keys, &no_sleep_clock(), |p| {
                let work_log = work_log.clone();
                async move {
                    let token = p.fences().expect("fenced").iter().next().unwrap().1.token();
                    work_log.lock().unwrap().push(format!("work {token}"));
                    Err(Failure::Conflict.into())
                }
            })
            .await;
        assert!(out.unwrap_err().is_conflict());
        assert_eq!(
            *log.lock().unwrap(),
            ["acquire wallet:1", "work 5", "work 5", "release wallet:1"]
        );
        // attempts, conflicts, lock acquisitions, timeouts
        assert_eq!(counts.get(), [2, 2, 1, 0]);
        // a second unit that succeeds is the answer
        let calls = AtomicU64::new(0);
        let out: Result<u64, ReserveError> = control
            .run(Operation::Reserve, &keys, &no_sleep_clock(), |_| {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if call == 0 {
                        Err(Failure::Conflict.into())
                    } else {
                        Ok(call)
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 1);
        // other failures are answered at once
        let calls = AtomicU64::new(0);
        let out: Result<(), ReserveError> = control
            .run(Operation::Reserve, &keys, &no_sleep_clock(), |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Failure::LockLost.into()) }
            })
            .await;
        assert!(matches!(out, Err(ReserveError::Failed(Failure::LockLost))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lock_timeout_never_runs_the_work() {
        let counts = Arc::new(Counts::default());
        let control = Control::locked("a-lock", TestLocks::timing_out(), LockOptions::default())
            .with_observer(counts.clone());
        let out: Result<(), ReserveError> = control
            .run(
                Operation::Reserve,
                &[LockKey::new("k")],
                &no_sleep_clock(),
                |_| async { panic!("must not run") },
            )
            .await;
        assert!(matches!(
            out,
            Err(ReserveError::Failed(Failure::LockTimeout))
        ));
        assert_eq!(counts.get(), [0, 0, 0, 1]);
    }

    #[tokio::test]
    async fn the_locks_are_released_when_the_work_fails_or_panics() {
        let log = Log::default();
        let control = Control::locked(
            "a-lock",
            TestLocks::granting(1, log.clone()),
            LockOptions::default(),
        );
        let keys = [LockKey::new("wallet:9")];
        let out: Result<(), ReserveError> = control
            .run(Operation::Reserve, &keys, &no_sleep_clock(), |_| async {
                Err(ReserveError::SeatNotFound)
            })
            .await;
        assert!(matches!(out, Err(ReserveError::SeatNotFound)));
        let joined = tokio::spawn(async move {
            let keys = [LockKey::new("seat:2:02")];
            let _: Result<(), ReserveError> = control
                .run(Operation::Reserve, &keys, &no_sleep_clock(), |_| async {
                    panic!("bug in the closure")
                })
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
    async fn a_queued_control_runs_no_work_in_place() {
        let control = Control::queued(
            "queue",
            Arc::new(crate::queue::MockSeatQueue::new()),
            Duration::from_secs(2),
        );
        assert_eq!(
            control.queue().map(|(_, reply)| reply),
            Some(Duration::from_secs(2))
        );
        assert!(Control::optimistic("o").queue().is_none());
        let out: Result<(), ReserveError> = control
            .run(Operation::Charge, &[], &no_sleep_clock(), |_| async {
                panic!("must not run")
            })
            .await;
        assert!(matches!(
            out,
            Err(ReserveError::Failed(Failure::Unknown(_)))
        ));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let policy = RetryPolicy::default();
        for retry in 1..40 {
            let ceiling = Duration::from_millis(1)
                .saturating_mul(1 << (retry - 1).min(16))
                .min(policy.max_backoff);
            assert!(policy.backoff(retry) <= ceiling);
        }
        let samples: std::collections::HashSet<_> = (0..50).map(|_| policy.backoff(10)).collect();
        assert!(samples.len() > 1, "backoff must be jittered");
    }
}
