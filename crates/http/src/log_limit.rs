//! A log limiter for failures that come in storms (a database that is down
//! fails every request at once): the first failure after a quiet period is
//! logged in full, then at most one summary line per interval, carrying the
//! number of failures not logged since the previous line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What [`LogLimiter::admit`] decided for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log this failure; `suppressed` earlier ones were not logged since
    /// the previous line (0: it is the first after a quiet period).
    Log { suppressed: u64 },
    /// Count it, do not log it.
    Suppress,
}

/// Admits at most one log line per `interval`. Thread-safe; cheap when it
/// suppresses (one uncontended lock, no allocation).
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_line: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                last_line: None,
                suppressed: 0,
            }),
        }
    }

    /// Decides for a failure that happened at `now`.
    pub fn admit(&self, now: Instant) -> Admit {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = state
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            let suppressed = std::mem::take(&mut state.suppressed);
            state.last_line = Some(now);
            Admit::Log { suppressed }
        } else {
            state.suppressed += 1;
            Admit::Suppress
        }
    }
}

/// How often a storm of 503s may write a line.
pub const UNAVAILABLE_INTERVAL: Duration = Duration::from_secs(5);

static UNAVAILABLE: LogLimiter = LogLimiter::new(UNAVAILABLE_INTERVAL);

/// Logs a dependency failure that answers 503, rate-limited: the first one
/// after a quiet period with its cause chain, then at most one line per
/// [`UNAVAILABLE_INTERVAL`] with the count of those not logged.
pub fn unavailable(cause: &anyhow::Error) {
    match UNAVAILABLE.admit(Instant::now()) {
        Admit::Log { suppressed: 0 } => {
            tracing::warn!(error = %format_args!("{cause:#}"), "dependency unavailable");
        }
        Admit::Log { suppressed } => tracing::warn!(
            error = %format_args!("{cause:#}"),
            suppressed,
            "dependency still unavailable ({suppressed} more failures since the last report)"
        ),
        Admit::Suppress => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_one_summary_per_interval() {
        let limiter = LogLimiter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        assert_eq!(limiter.admit(at(0)), Admit::Log { suppressed: 0 });
        assert_eq!(limiter.admit(at(1)), Admit::Suppress);
        assert_eq!(limiter.admit(at(4_999)), Admit::Suppress);
        assert_eq!(limiter.admit(at(5_000)), Admit::Log { suppressed: 2 });
        assert_eq!(limiter.admit(at(6_000)), Admit::Suppress);
        // after a quiet period the next one is logged in full again
        assert_eq!(limiter.admit(at(60_000)), Admit::Log { suppressed: 1 });
        assert_eq!(limiter.admit(at(70_000)), Admit::Log { suppressed: 0 });
    }
}
