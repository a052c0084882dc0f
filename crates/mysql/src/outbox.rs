//! [`Outbox`] on a unit of work.
//!
//! Events are kept in the unit and written by its commit: one multi-row
//! `INSERT` sent with the `COMMIT` in one round trip (`INSERT ...; COMMIT`,
//! see [`crate::commit`]), so recording events adds no round trip to the
//! unit, and none inside the critical section of a hot row. A unit that
//! rolls back (or does not commit) writes none.

use async_trait::async_trait;
use concert_domain::{Event, Failure, Outbox};

use crate::error::corrupt;
use crate::rows::NewOutboxRow;
use crate::store::MysqlUnit;

#[async_trait]
impl Outbox for MysqlUnit {
    /// Keeps the events (in order, each under a fresh UUID v4 event id) for
    /// the commit to write.
    async fn record(&mut self, events: &[Event]) -> Result<(), Failure> {
        for event in events {
            let row = NewOutboxRow::of(event).map_err(|e| corrupt(e, "recording events"))?;
            self.events.push(row);
        }
        Ok(())
    }
}
