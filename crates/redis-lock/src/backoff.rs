//! Exponential backoff with full jitter for the spin lock.

use std::time::Duration;

/// Spin-lock retry pacing: before retry `n` (1-based) sleep a uniformly
/// random time in `[0, min(max, base * 2^(n-1))]` ("full jitter"), so
/// contenders spread out instead of retrying in lockstep. With
/// `jitter: false` the sleep is the ceiling itself (for comparison in the
/// lab only: it puts waiters in lockstep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinBackoff {
    pub base: Duration,
    pub max: Duration,
    pub jitter: bool,
}

impl Default for SpinBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(1),
            max: Duration::from_millis(32),
            jitter: true,
        }
    }
}

impl SpinBackoff {
    /// The ceiling before retry `retry` (1-based): `min(max, base * 2^(retry-1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max)
    }

    /// The sleep before retry `retry`: never above [`SpinBackoff::ceiling`].
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        if !self.jitter {
            return ceiling;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = SpinBackoff::default();
        assert_eq!(b.ceiling(1), Duration::from_millis(1));
        assert_eq!(b.ceiling(2), Duration::from_millis(2));
        assert_eq!(b.ceiling(6), Duration::from_millis(32));
        assert_eq!(b.ceiling(7), Duration::from_millis(32));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(32));
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_are_spread() {
        let b = SpinBackoff::default();
        for retry in 1..50 {
            for _ in 0..20 {
                assert!(b.delay(retry) <= b.ceiling(retry));
            }
        }
        let distinct: std::collections::HashSet<_> = (0..100).map(|_| b.delay(6)).collect();
        assert!(distinct.len() > 50, "full jitter must spread the delays");
        let fixed = SpinBackoff { jitter: false, ..b };
        assert_eq!(fixed.delay(3), Duration::from_millis(4));
    }
}
