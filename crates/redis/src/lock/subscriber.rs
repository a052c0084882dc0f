//! The one pub/sub connection per process: it subscribes to every release
//! channel of the prefix with one pattern, and its dispatcher hands each
//! notice to the waiter registry (a plain release wakes one waiter of the
//! key, a hand-over reaches the waiter it names). It pings the connection,
//! reconnects when it breaks, and then wakes every waiter, since notices
//! may have been missed meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use concert_domain::Failure;
use concert_locking::waiters::Waiters;
use deadpool_redis::redis::{self, Client};
use tokio::task::JoinHandle;

use crate::lock::scripts::Notice;
use crate::pubsub::{self, Subscription, Topic, reconnect_delay};
use crate::settings::RedisLockSettings;

/// The subscriber of one [`crate::RedisLocks`]; its task stops when this is
/// dropped.
pub(crate) struct Subscriber {
    subscribed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Subscribes now: fails (`Unavailable`) when Redis does not answer
    /// within the connect and response timeouts.
    pub async fn connect(
        url: &str,
        pattern: String,
        waiters: Arc<Waiters>,
        settings: RedisLockSettings,
    ) -> Result<Self, Failure> {
        let client = pubsub::client(url)?;
        let subscription = subscribe(&client, &pattern, &settings)
            .await
            .map_err(|e| Failure::Unavailable(e.context("subscribing to lock releases")))?;
        Ok(Self::start(
            client,
            pattern,
            Some(subscription),
            waiters,
            settings,
        ))
    }

    /// Subscribes in the background (and keeps retrying while Redis is
    /// down). Fails only for an invalid URL.
    pub fn lazy(
        url: &str,
        pattern: String,
        waiters: Arc<Waiters>,
        settings: RedisLockSettings,
    ) -> Result<Self, Failure> {
        let client = pubsub::client(url)?;
        Ok(Self::start(client, pattern, None, waiters, settings))
    }

    fn start(
        client: Client,
        pattern: String,
        subscription: Option<Subscription>,
        waiters: Arc<Waiters>,
        settings: RedisLockSettings,
    ) -> Self {
        let subscribed = Arc::new(AtomicBool::new(subscription.is_some()));
        let task = tokio::spawn(dispatch(
            client,
            pattern,
            subscription,
            waiters,
            subscribed.clone(),
            settings,
        ));
        Self { subscribed, task }
    }

    /// True while the connection is up and subscribed.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }
}

/// Opens the connection and subscribes to `pattern`. The subscription is
/// active before any waiter's first attempt, so no notice can slip between
/// an attempt and the subscription.
async fn subscribe(
    client: &Client,
    pattern: &str,
    settings: &RedisLockSettings,
) -> anyhow::Result<Subscription> {
    pubsub::subscribe(client, Topic::Pattern(pattern), "subscriber", settings).await
}

async fn dispatch(
    client: Client,
    pattern: String,
    mut subscription: Option<Subscription>,
    waiters: Arc<Waiters>,
    subscribed: Arc<AtomicBool>,
    settings: RedisLockSettings,
) {
    let mut failures = 0u32;
    loop {
        // A subscription made at connect time missed nothing; one made
        // here may have missed notices: every waiter then looks again.
        let (live, missed) = match subscription.take() {
            Some(live) => (live, false),
            None => match subscribe(&client, &pattern, &settings).await {
                Ok(live) => {
                    if failures > 0 {
                        tracing::info!("lock subscriber connected again");
                    }
                    (live, true)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        tracing::warn!(error = %format!("{e:#}"), "lock subscriber cannot connect; retrying");
                    }
                    tokio::time::sleep(reconnect_delay(failures)).await;
                    continue;
                }
            },
        };
        subscribed.store(true, Ordering::Release);
        if missed {
            waiters.resync();
        }
        live.receive(&settings, |msg| deliver(&waiters, msg)).await;
        subscribed.store(false, Ordering::Release);
        tracing::warn!("lock subscriber connection lost; reconnecting");
        waiters.resync();
        failures = 1;
        tokio::time::sleep(reconnect_delay(failures)).await;
    }
}

fn deliver(waiters: &Waiters, msg: &redis::Msg) {
    match Notice::parse(msg.get_payload_bytes()) {
        Some(Notice::Freed) => waiters.released(msg.get_channel_name()),
        Some(Notice::Handed { owner, token }) => {
            waiters.handed(owner, token);
        }
        None => tracing::debug!(
            channel = msg.get_channel_name(),
            "ignoring an unknown lock notice"
        ),
    }
}
