//! Request-reply: each instance listens on its own reply channel (one
//! subscriber connection per process); a request names that channel, and
//! whichever instance applies it publishes `<request id> <outcome>` there
//! (one line per request, one message per channel and batch).
//! A waiter registers before its request is queued, so no reply can
//! arrive unseen. While the subscriber connection is down (or after it
//! reconnected, when replies may have been missed) waiters read their
//! request's outcome key instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use concert_domain::Failure;
use deadpool_redis::redis::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pubsub::{self, Topic, reconnect_delay};
use crate::queue::wire;
use crate::settings::RedisLockSettings;

type Waiting = HashMap<String, oneshot::Sender<String>>;

/// What the listener and the waiters share.
#[derive(Default)]
pub(crate) struct Board {
    waiting: Mutex<Waiting>,
    subscribed: AtomicBool,
    /// Bumped at every (re)subscription: a waiter registered under an
    /// older one may have missed its reply.
    generation: AtomicU64,
}

impl Board {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        // Only inserted into and removed from: a panic cannot corrupt it.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter for `id`; the registration ends when the
    /// returned guard is dropped.
    pub fn register(self: &Arc<Self>, id: &str) -> Registration {
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(id.to_owned(), tx);
        Registration {
            board: self.clone(),
            id: id.to_owned(),
            rx,
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// Hands each line of a reply message (`<request id> <outcome>`) to
    /// its waiter.
    fn deliver(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            tracing::debug!("ignoring a queue reply that is not UTF-8");
            return;
        };
        let mut waiting = self.waiting();
        for line in text.split('\n') {
            let Some((id, outcome)) = wire::parse_reply(line) else {
                tracing::debug!("ignoring a malformed queue reply");
                continue;
            };
            if let Some(tx) = waiting.remove(id) {
                let _ = tx.send(outcome.to_owned());
            }
        }
    }
}

/// One waiter's registration.
pub(crate) struct Registration {
    board: Arc<Board>,
    id: String,
    pub rx: oneshot::Receiver<String>,
    generation: u64,
}

impl Registration {
    /// True when the reply may have been missed: the listener is down, or
    /// it subscribed again since this waiter registered.
    pub fn may_have_missed(&self) -> bool {
        !self.board.subscribed.load(Ordering::Acquire)
            || self.board.generation.load(Ordering::Acquire) != self.generation
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.board.waiting().remove(&self.id);
    }
}

/// The listener task of one process; stops when dropped.
pub(crate) struct Listener {
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Starts listening on `channel` in the background (connecting, and
    /// reconnecting, as Redis allows). Fails only for an invalid URL.
    pub fn start(
        url: &str,
        channel: String,
        board: Arc<Board>,
        settings: RedisLockSettings,
    ) -> Result<Self, Failure> {
        let client = pubsub::client(url)?;
        Ok(Self {
            task: tokio::spawn(listen(client, channel, board, settings)),
        })
    }
}

async fn listen(client: Client, channel: String, board: Arc<Board>, settings: RedisLockSettings) {
    let mut failures = 0u32;
    loop {
        let topic = Topic::Channel(&channel);
        let live = match pubsub::subscribe(&client, topic, "reply listener", &settings).await {
            Ok(live) => live,
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(error = %format!("{e:#}"), "queue reply listener cannot connect; retrying");
                }
                tokio::time::sleep(reconnect_delay(failures)).await;
                continue;
            }
        };
        if failures > 0 {
            tracing::info!("queue reply listener connected again");
        }
        board.generation.fetch_add(1, Ordering::AcqRel);
        board.subscribed.store(true, Ordering::Release);
        live.receive(&settings, |msg| board.deliver(msg.get_payload_bytes()))
            .await;
        board.subscribed.store(false, Ordering::Release);
        tracing::warn!("queue reply listener connection lost; reconnecting");
        failures = 1;
        tokio::time::sleep(reconnect_delay(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_reaches_its_waiter_only_while_registered() {
        let board = Arc::new(Board::default());
        board.subscribed.store(true, Ordering::Release);
        let mut a = board.register("a");
        let b = board.register("b");
        assert!(!a.may_have_missed());
        board.deliver(b"zzz {}\na {\"kind\":\"notAdmitted\"}\njunk");
        board.deliver(b"\xff");
        assert_eq!((&mut a.rx).await.unwrap(), "{\"kind\":\"notAdmitted\"}");
        // a new subscription: b may have missed its reply
        board.generation.fetch_add(1, Ordering::AcqRel);
        assert!(b.may_have_missed());
        drop(b);
        assert!(board.waiting().is_empty());
    }
}
