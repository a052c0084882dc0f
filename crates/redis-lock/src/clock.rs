//! The system clock on the tokio runtime.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::Clock;

/// Wall-clock time and tokio sleeps.
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
