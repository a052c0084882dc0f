//! Time as a port: services ask a clock for "now" and for sleeps, so tests
//! can control both and the domain needs no runtime.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time, UTC.
    fn now(&self) -> DateTime<Utc>;
    /// Suspends the calling task for `duration` (used between retries).
    async fn sleep(&self, duration: Duration);
}

#[async_trait]
impl<T: Clock + ?Sized> Clock for std::sync::Arc<T> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }

    async fn sleep(&self, duration: Duration) {
        (**self).sleep(duration).await
    }
}
