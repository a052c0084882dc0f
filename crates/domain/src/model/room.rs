//! The waiting room of an on-sale: who may reserve and pay for a concert
//! now, and how long the others should expect to wait.
//!
//! At most `active_limit` users of a concert are admitted at once, in order
//! of first entry. An admission lapses after `admission`, when the user
//! leaves, or when their payment completes and they hold nothing else of
//! that concert; the freed place goes to the next waiting user. A waiting
//! user who does not poll for `idle` loses the place. When every seat of
//! every future schedule is sold, the room is sold out: nobody more is
//! admitted.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::{ConcertId, UserId};

/// The room's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRules {
    /// Users admitted at once per concert.
    pub active_limit: u32,
    /// How long an admission lasts.
    pub admission: Duration,
    /// How long a waiting entry lives without a poll.
    pub idle: Duration,
}

impl Default for RoomRules {
    fn default() -> Self {
        Self {
            active_limit: 100,
            admission: Duration::from_secs(600),
            idle: Duration::from_secs(60),
        }
    }
}

/// Where a user stands in a concert's room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomStatus {
    /// In line: `position` 1 is the next to be admitted.
    Waiting { position: u64 },
    /// May reserve and pay until `until`.
    Admitted { until: DateTime<Utc> },
    /// Everything is sold; nobody more is admitted.
    SoldOut,
    /// The service runs without a waiting room: everyone may reserve and
    /// pay, without end (shown as admitted).
    Unrestricted,
}

/// What the room adapter reports for one user, with what the service needs
/// to estimate the wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomView {
    pub status: RoomStatus,
    /// Admissions per second the room has observed lately (0 when unknown).
    pub admission_rate: f64,
}

/// A user's entry as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomEntry {
    pub concert: ConcertId,
    pub user: UserId,
    pub status: RoomStatus,
    /// While waiting: the expected wait, from the observed admission rate.
    pub estimated_wait: Option<Duration>,
    /// When to poll next.
    pub poll_after: Duration,
}

/// Polls never come faster than this...
pub const MIN_POLL: Duration = Duration::from_secs(1);
/// ... nor slower than this (an idle entry must stay alive: see
/// [`RoomEntry::from_view`]).
pub const MAX_POLL: Duration = Duration::from_secs(30);

impl RoomEntry {
    /// The entry for `view`. A waiting user is told to poll about when the
    /// users ahead will have been admitted at the observed rate, at least
    /// every [`MIN_POLL`], at most every [`MAX_POLL`] and always well within
    /// the idle time (half of it), so that polling keeps the place. Admitted
    /// users poll at the maximum pace (their admission has a known end).
    ///
    /// The wait is `position / rate`. Before any admission was observed,
    /// it is the bound the rules give: each of the `active_limit` places
    /// frees at the latest when its admission lapses, so the user at
    /// `position` is admitted within `ceil(position / limit)` admissions.
    pub fn from_view(concert: ConcertId, user: UserId, view: RoomView, rules: RoomRules) -> Self {
        let ceiling = MAX_POLL.min(rules.idle / 2).max(MIN_POLL);
        let (estimated_wait, poll_after) = match view.status {
            RoomStatus::Waiting { position } => {
                let observed = (view.admission_rate > 0.0).then(|| {
                    Duration::try_from_secs_f64(position as f64 / view.admission_rate)
                        .unwrap_or(Duration::MAX)
                });
                let poll = observed
                    .map(|w| (w / 2).clamp(MIN_POLL, ceiling))
                    .unwrap_or(ceiling.min(Duration::from_secs(5)).max(MIN_POLL));
                let bound = || {
                    let rounds = position.div_ceil(u64::from(rules.active_limit.max(1)));
                    rules
                        .admission
                        .checked_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
                        .unwrap_or(Duration::MAX)
                };
                (Some(observed.unwrap_or_else(bound)), poll)
            }
            RoomStatus::Admitted { .. } | RoomStatus::SoldOut | RoomStatus::Unrestricted => {
                (None, ceiling)
            }
        };
        Self {
            concert,
            user,
            status: view.status,
            estimated_wait,
            poll_after,
        }
    }

    /// The entry of a service that runs without a waiting room: everyone
    /// is admitted, with no end, and has no reason to poll soon.
    pub fn unrestricted(concert: ConcertId, user: UserId) -> Self {
        Self {
            concert,
            user,
            status: RoomStatus::Unrestricted,
            estimated_wait: None,
            poll_after: MAX_POLL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: RoomStatus, rate: f64) -> RoomEntry {
        RoomEntry::from_view(
            ConcertId::from(1),
            UserId::from(2),
            RoomView {
                status,
                admission_rate: rate,
            },
            RoomRules::default(),
        )
    }

    #[test]
    fn the_wait_follows_the_observed_rate_and_polls_stay_bounded() {
        let e = entry(RoomStatus::Waiting { position: 100 }, 10.0);
        assert_eq!(e.estimated_wait, Some(Duration::from_secs(10)));
        assert_eq!(e.poll_after, Duration::from_secs(5));
        let near = entry(RoomStatus::Waiting { position: 1 }, 10.0);
        assert_eq!(near.poll_after, MIN_POLL);
        let far = entry(RoomStatus::Waiting { position: 100_000 }, 1.0);
        assert_eq!(far.poll_after, MAX_POLL);
        let unknown = entry(RoomStatus::Waiting { position: 3 }, 0.0);
        assert_eq!(unknown.poll_after, Duration::from_secs(5));
        // no rate yet: bounded by one admission time per `limit` users ahead
        assert_eq!(unknown.estimated_wait, Some(Duration::from_secs(600)));
        let behind = entry(RoomStatus::Waiting { position: 201 }, 0.0);
        assert_eq!(behind.estimated_wait, Some(Duration::from_secs(1800)));
        let tiny = entry(RoomStatus::Waiting { position: u64::MAX }, 1e-300);
        assert_eq!(tiny.estimated_wait, Some(Duration::MAX));
        assert_eq!(tiny.poll_after, MAX_POLL);
    }

    #[test]
    fn polls_keep_an_entry_alive_even_with_a_short_idle_time() {
        let rules = RoomRules {
            idle: Duration::from_secs(4),
            ..RoomRules::default()
        };
        let e = RoomEntry::from_view(
            ConcertId::from(1),
            UserId::from(2),
            RoomView {
                status: RoomStatus::Waiting { position: 10_000 },
                admission_rate: 1.0,
            },
            rules,
        );
        assert_eq!(e.poll_after, Duration::from_secs(2));
    }

    #[test]
    fn admitted_and_sold_out_have_no_wait() {
        let until = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        assert_eq!(
            entry(RoomStatus::Admitted { until }, 3.0).estimated_wait,
            None
        );
        assert_eq!(entry(RoomStatus::SoldOut, 3.0).estimated_wait, None);
    }
}
