//! The domain's [`Clock`] over the system clock and the tokio timer.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::Clock;

/// Wall-clock time (UTC) and tokio sleeps. Sleeps need a tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tells_the_time_and_sleeps_on_the_tokio_timer() {
        let before = Utc::now();
        assert!(SystemClock.now() >= before);
        let started = tokio::time::Instant::now();
        SystemClock.sleep(Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
