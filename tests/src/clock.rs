//! A clock the test moves by hand; sleeps are real (tokio).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::Clock;

#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// Starts at the current wall-clock time, truncated to whole seconds
    /// (what MySQL `DATETIME` columns store).
    pub fn new() -> Self {
        let now = Utc::now();
        let whole = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        Self(Arc::new(Mutex::new(whole)))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock poisoned");
        *now += chrono::Duration::from_std(by).expect("duration in range");
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock poisoned")
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
