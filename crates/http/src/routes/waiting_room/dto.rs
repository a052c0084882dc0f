//! Bodies of the waiting-room routes.

use chrono::{DateTime, Utc};
use concert_domain::{RoomEntry, RoomStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a user stands in a concert's waiting room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = WaitingRoomStatus)]
pub enum RoomStatusDto {
    Waiting,
    Admitted,
    SoldOut,
}

/// The caller's entry in a concert's waiting room.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WaitingRoomEntry)]
pub struct RoomEntryResponse {
    #[schema(example = 1)]
    pub concert_id: u64,
    #[schema(example = 42)]
    pub user_id: u64,
    pub status: RoomStatusDto,
    /// While WAITING: 1 for the next user to be admitted, 2 for the one
    /// after, ...; null otherwise. Only ever decreases while the caller
    /// keeps polling.
    #[schema(example = 17, required = true)]
    pub position: Option<u64>,
    /// While WAITING: the expected wait, from the admission rate the room
    /// observed lately (before any was observed, the bound the room's
    /// rules give); null otherwise.
    #[schema(example = 9, required = true)]
    pub estimated_wait_seconds: Option<u64>,
    /// When to poll next (also sent as Retry-After). A waiting entry not
    /// polled for the idle time loses its place.
    #[schema(example = 5)]
    pub poll_after_seconds: u64,
    /// While ADMITTED: when the admission ends; null otherwise (and null
    /// when the service runs without a waiting room: everyone is admitted,
    /// without end).
    #[schema(example = "2030-03-17T17:56:40Z", required = true)]
    pub admitted_until: Option<DateTime<Utc>>,
}

impl From<RoomEntry> for RoomEntryResponse {
    fn from(e: RoomEntry) -> Self {
        let (status, position, admitted_until) = match e.status {
            RoomStatus::Waiting { position } => (RoomStatusDto::Waiting, Some(position), None),
            RoomStatus::Admitted { until } => (RoomStatusDto::Admitted, None, Some(until)),
            RoomStatus::SoldOut => (RoomStatusDto::SoldOut, None, None),
            RoomStatus::Unrestricted => (RoomStatusDto::Admitted, None, None),
        };
        Self {
            concert_id: e.concert.get(),
            user_id: e.user.get(),
            status,
            position,
            estimated_wait_seconds: e.estimated_wait.map(|w| whole_seconds(w, false)),
            poll_after_seconds: whole_seconds(e.poll_after, true),
            admitted_until,
        }
    }
}

/// A duration in whole seconds, rounded up (at least 1 when `at_least_one`).
fn whole_seconds(d: std::time::Duration, at_least_one: bool) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if at_least_one { s.max(1) } else { s }
}
