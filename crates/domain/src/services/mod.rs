//! Use cases. Each service is generic over the ports it drives, so handlers
//! can be tested with a mocked service and services with mocked ports.

pub mod catalogue;
pub mod payment;
pub mod points;
pub mod reservation;

#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, Utc};

    use crate::clock::MockClock;

    pub fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).expect("valid timestamp")
    }

    /// A clock frozen at `t0()` whose sleeps return at once.
    pub fn frozen_clock() -> MockClock {
        let mut clock = MockClock::new();
        clock.expect_now().returning(t0);
        clock.expect_sleep().returning(|_| ());
        clock
    }
}
