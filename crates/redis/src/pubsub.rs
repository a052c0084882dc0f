//! What the crate's two pub/sub listeners share (the lock's subscriber,
//! `lock/subscriber.rs`, and the queue's reply listener,
//! `queue/replies.rs`): opening the connection and subscribing within the
//! timeouts, receiving with a health check, and the pace of reconnections.

use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use concert_domain::Failure;
use deadpool_redis::redis::aio::{PubSubSink, PubSubStream};
use deadpool_redis::redis::{self, Client, Value};
use futures_core::Stream;

use crate::backoff::SpinBackoff;
use crate::settings::RedisLockSettings;

/// How often a listener checks that its connection answers.
const HEALTH_CHECK: Duration = Duration::from_secs(5);

/// What a listener subscribes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Topic<'a> {
    /// `PSUBSCRIBE`: every channel matching the pattern.
    Pattern(&'a str),
    /// `SUBSCRIBE`: one channel.
    Channel(&'a str),
}

/// A connection subscribed to its topic.
pub(crate) struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
}

/// The client of a listener; fails only for an invalid URL.
pub(crate) fn client(url: &str) -> Result<Client, Failure> {
    Client::open(url)
        .context("invalid Redis URL")
        .map_err(Failure::unknown)
}

/// Opens the connection (within the connect timeout) and subscribes to
/// `topic` (within the response timeout). `who` names the listener in the
/// error.
pub(crate) async fn subscribe(
    client: &Client,
    topic: Topic<'_>,
    who: &str,
    settings: &RedisLockSettings,
) -> anyhow::Result<Subscription> {
    let pubsub = tokio::time::timeout(settings.connect_timeout, client.get_async_pubsub())
        .await
        .with_context(|| format!("connecting the {who} timed out"))??;
    let (mut sink, stream) = pubsub.split();
    let within = settings.response_timeout;
    match topic {
        Topic::Pattern(pattern) => tokio::time::timeout(within, sink.psubscribe(pattern))
            .await
            .context("PSUBSCRIBE timed out")??,
        Topic::Channel(channel) => tokio::time::timeout(within, sink.subscribe(channel))
            .await
            .context("SUBSCRIBE timed out")??,
    }
    Ok(Subscription { sink, stream })
}

impl Subscription {
    /// Hands every message to `deliver` until the connection breaks: the
    /// stream ends, or a `PING` (every [`HEALTH_CHECK`]) gets no answer
    /// within the response timeout.
    pub async fn receive(self, settings: &RedisLockSettings, mut deliver: impl FnMut(&redis::Msg)) {
        let Subscription {
            mut sink,
            mut stream,
        } = self;
        let mut health = tokio::time::interval(HEALTH_CHECK);
        health.reset();
        loop {
            tokio::select! {
                msg = next_message(&mut stream) => match msg {
                    Some(msg) => deliver(&msg),
                    None => return,
                },
                _ = health.tick() => {
                    let pong = tokio::time::timeout(settings.response_timeout, sink.ping::<Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}

/// The pause before the `failures`-th reconnection attempt in a row.
pub(crate) fn reconnect_delay(failures: u32) -> Duration {
    SpinBackoff {
        base: Duration::from_millis(50),
        max: Duration::from_secs(2),
    }
    .delay(failures)
    .max(Duration::from_millis(10))
}

async fn next_message(stream: &mut PubSubStream) -> Option<redis::Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}
