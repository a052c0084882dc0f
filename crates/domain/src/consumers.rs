//! Consuming the event streams: what a consumer does with an event. The
//! runtime that delivers events (consumer groups, de-duplication by event
//! id, taking over what a dead consumer left, dead letters) is an adapter;
//! a handler only decides what one event means to it.

use async_trait::async_trait;

use crate::error::Failure;
use crate::events::{EventType, Stream};

/// One event as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The unique event id (the de-duplication key).
    pub id: String,
    pub stream: Stream,
    pub kind: EventType,
    /// The JSON payload, as published.
    pub payload: String,
    /// How many times the event has been delivered to this consumer group,
    /// this delivery included.
    pub deliveries: u32,
}

/// What a consumer does with the events of its streams.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles one event. The runtime calls it at most once per event id
    /// and consumer group as long as it remembers the id, but a handler
    /// that fails, or a consumer that stops before acknowledging, gets the
    /// event again: handling must be safe to repeat.
    ///
    /// An error leaves the event pending: it is delivered again later, and
    /// set aside as a dead letter after the runtime's maximum of attempts.
    async fn handle(&self, event: &ReceivedEvent) -> Result<(), Failure>;

    /// Told when deliveries start (`true`: the consumer is connected and
    /// from now on receives every new event) and when they may have been
    /// interrupted (`false`: events may be missed until the next `true`).
    fn delivering(&self, live: bool) {
        let _ = live;
    }
}
