//! The seat-map consumer: every instance reads the reservations stream in
//! a consumer group of its own and invalidates the seat maps the events
//! name, so another instance's hold, expiry, cancel, sale or refund shows
//! in this instance's cached seat map as soon as it is consumed.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use concert_domain::{EventHandler, Failure, ReceivedEvent, ScheduleId};
use concert_inprocess::SeatMapCache;
use serde::Deserialize;

/// Feeds a [`SeatMapCache`] from the reservations stream.
pub struct SeatMapFeed {
    cache: Arc<SeatMapCache>,
}

impl SeatMapFeed {
    pub fn new(cache: Arc<SeatMapCache>) -> Self {
        Self { cache }
    }
}

/// The part of a reservation event's payload the seat map needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ids {
    schedule_id: Option<u64>,
}

#[async_trait]
impl EventHandler for SeatMapFeed {
    async fn handle(&self, event: &ReceivedEvent) -> Result<(), Failure> {
        let ids: Ids = serde_json::from_str(&event.payload)
            .with_context(|| format!("reading the payload of {} {}", event.kind, event.id))
            .map_err(Failure::unknown)?;
        match ids.schedule_id {
            Some(schedule) => self.cache.invalidate(ScheduleId::from(schedule)),
            // every reservation event names its schedule; be safe anyway
            None => self.cache.invalidate_all(),
        }
        Ok(())
    }

    /// Not live: every read goes to storage until events flow again, and
    /// nothing cached before an interruption is kept.
    fn delivering(&self, live: bool) {
        self.cache.set_live(live);
    }
}
