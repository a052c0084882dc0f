//! Retry pacing for the spin lock (and for pub/sub waiters and the
//! background workers while Redis is unreachable).

use std::time::Duration;

use concert_domain::RetryPolicy;

/// Exponential backoff with full jitter: before retry `n` (1-based) sleep a
/// uniformly random time in `[0, min(max, base * 2^(n-1))]`, so contenders
/// spread out instead of retrying in lockstep (the same rule as the
/// domain's [`RetryPolicy`], which draws the delays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinBackoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for SpinBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(1),
            max: Duration::from_millis(32),
        }
    }
}

impl SpinBackoff {
    /// The sleep before retry `retry` (1-based): never above
    /// `min(max, base * 2^(retry-1))`.
    pub fn delay(&self, retry: u32) -> Duration {
        RetryPolicy {
            max_attempts: u32::MAX,
            base_backoff: self.base,
            max_backoff: self.max,
        }
        .backoff(retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_are_spread() {
        let b = SpinBackoff::default();
        let ceiling = |retry: u32| match retry {
            1 => Duration::from_millis(1),
            2 => Duration::from_millis(2),
            _ => Duration::from_millis(32),
        };
        for retry in [1, 2, 6, 7, 50, u32::MAX] {
            for _ in 0..50 {
                assert!(b.delay(retry) <= ceiling(retry), "retry {retry}");
            }
        }
        let distinct: std::collections::HashSet<_> = (0..100).map(|_| b.delay(6)).collect();
        assert!(distinct.len() > 50, "full jitter must spread the delays");
        let capped = SpinBackoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(60),
        };
        assert!((0..50).all(|_| capped.delay(5) <= Duration::from_millis(60)));
    }
}
