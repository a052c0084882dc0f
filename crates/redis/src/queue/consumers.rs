//! The partition consumers of one instance.
//!
//! A supervisor tries, every third of a lease, to take the lease of each
//! partition this instance does not hold (a fenced lease: a string with a
//! TTL and a fencing token that grows with every tenure). For each lease
//! it takes, a tenure:
//!
//! 1. renews the lease every third of it (the shared lease keep-alive of
//!    `concert_locking::lease`, which flags the [`Fence`] lost when a
//!    renewal finds the lease gone or cannot renew before it runs out);
//! 2. claims the entries earlier holders read but never acknowledged
//!    (`XAUTOCLAIM … 0 … JUSTID`: the lease says they are gone or fenced
//!    off), and applies this consumer's pending entries first, in stream
//!    order, as redeliveries;
//! 3. then reads new entries (`XREADGROUP … >`) in batches, applies each
//!    batch through its [`PartitionApplier`] (opened with the tenure's
//!    fence), records and publishes each outcome, and acknowledges and
//!    deletes the entries, in one round trip per batch.
//!
//! A tenure ends when its fence is lost (or on any Redis error): its
//! unanswered entries stay pending for the next holder. A stream read
//! blocks at most `block`, so a lost tenure stops reading within that.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use concert_domain::{Applied, Appliers, Delivery, Failure, Fence, LockKey};
use concert_locking::lease::{KeepAlive, Lease, LeaseOps, owner_token};
use concert_locking::stats::LockCounters;
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, AsyncConnectionConfig, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::scripts::{self, ACQUIRE, ANSWER, Answer};
use super::{GROUP, QueueCore, RedisQueue, wire};
use crate::scripts::{DELETE, EXTEND, delete, extend};

/// The partition consumers of one instance (see the module docs).
/// Dropping it stops them and releases their leases in the background.
pub struct Consumers {
    supervisor: JoinHandle<()>,
    state: Arc<State>,
}

struct State {
    core: Arc<QueueCore>,
    appliers: Arc<dyn Appliers>,
    /// Set by [`Consumers::kill`]: nothing is released any more.
    killed: AtomicBool,
    tenures: Mutex<HashMap<u32, JoinHandle<()>>>,
    releases: Mutex<Vec<JoinHandle<()>>>,
    counters: LockCounters,
}

impl State {
    fn tenures(&self) -> MutexGuard<'_, HashMap<u32, JoinHandle<()>>> {
        self.tenures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn releases(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.releases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn abort_all(&self) {
        for (_, tenure) in self.tenures().drain() {
            tenure.abort();
        }
    }
}

impl Drop for Consumers {
    fn drop(&mut self) {
        self.supervisor.abort();
        self.state.abort_all();
    }
}

impl Consumers {
    pub(super) fn start(core: Arc<QueueCore>, appliers: Arc<dyn Appliers>) -> Self {
        let state = Arc::new(State {
            core,
            appliers,
            killed: AtomicBool::new(false),
            tenures: Mutex::default(),
            releases: Mutex::default(),
            counters: LockCounters::default(),
        });
        Self {
            supervisor: tokio::spawn(supervise(state.clone())),
            state,
        }
    }

    /// The partitions this instance applies now, ascending.
    pub fn held(&self) -> Vec<u32> {
        let mut held: Vec<u32> = self
            .state
            .tenures()
            .iter()
            .filter(|(_, t)| !t.is_finished())
            .map(|(p, _)| *p)
            .collect();
        held.sort_unstable();
        held
    }

    /// Stops consuming and releases the held leases (waiting up to a
    /// second for the releases), so other instances take over at once.
    pub async fn stop(self) {
        self.supervisor.abort();
        let tenures: Vec<JoinHandle<()>> = self.state.tenures().drain().map(|(_, t)| t).collect();
        for tenure in tenures {
            tenure.abort();
            let _ = tenure.await;
        }
        let releases: Vec<JoinHandle<()>> = self.state.releases().drain(..).collect();
        for release in releases {
            let _ = tokio::time::timeout(Duration::from_secs(1), release).await;
        }
    }

    /// Stops at once and releases nothing, like a killed process: the
    /// leases run out and other instances take over then. For fault tests.
    pub fn kill(self) {
        self.state.killed.store(true, Ordering::Release);
        self.supervisor.abort();
        self.state.abort_all();
    }
}

/// Takes free leases every third of a lease, and starts a tenure for each.
async fn supervise(state: Arc<State>) {
    let core = &state.core;
    let every = (core.settings.lease / 3).max(Duration::from_millis(10));
    let queue = RedisQueue { core: core.clone() };
    let mut checked = false;
    loop {
        if !checked {
            match queue.check_partitions().await {
                Ok(()) => checked = true,
                Err(Failure::Unknown(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "queue consumers not started");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "queue consumers wait for Redis"),
            }
        }
        if checked {
            for partition in 0..core.settings.partitions {
                let running = state
                    .tenures()
                    .get(&partition)
                    .is_some_and(|t| !t.is_finished());
                if !running {
                    take(&state, partition).await;
                }
            }
        }
        let jitter = Duration::from_millis(fastrand::u64(0..=every.as_millis() as u64 / 4));
        tokio::time::sleep(every + jitter).await;
    }
}

/// Tries to take `partition`'s lease; starts its tenure if taken.
async fn take(state: &Arc<State>, partition: u32) {
    let core = &state.core;
    let owner = owner_token();
    let started = Instant::now();
    let call = scripts::acquire(
        &core.keys.lease(partition),
        &core.keys.fence(partition),
        &owner,
        core.settings.lease,
    );
    match core.conn.invoke::<(i64, i64)>(&ACQUIRE, &call).await {
        Ok((1, token)) => {
            let Ok(token) = u64::try_from(token) else {
                tracing::error!(token, "negative partition fencing token");
                return;
            };
            let tenure = tokio::spawn(tenure(state.clone(), partition, owner, token, started));
            if let Some(old) = state.tenures().insert(partition, tenure) {
                old.abort();
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(partition, error = %e, "taking a partition lease failed"),
    }
}

/// The lease operations of the partition leases, for the keep-alive.
struct Leases(Arc<State>);

#[async_trait]
impl LeaseOps for Leases {
    async fn extend(&self, key: &LockKey, owner: &str, lease: Duration) -> Result<bool, Failure> {
        let call = extend(key.as_str(), owner, lease);
        let extended: i64 = self.0.core.conn.invoke(&EXTEND, &call).await?;
        Ok(extended == 1)
    }

    fn release_detached(self: Arc<Self>, key: LockKey, owner: String) {
        if self.0.killed.load(Ordering::Acquire) {
            return;
        }
        let core = self.0.core.clone();
        let release = tokio::spawn(async move {
            let call = delete(key.as_str(), &owner);
            if let Err(e) = core.conn.invoke::<i64>(&DELETE, &call).await {
                tracing::warn!(%key, error = %e, "releasing a partition lease failed; it runs out");
            }
        });
        let mut releases = self.0.releases();
        releases.retain(|r| !r.is_finished());
        releases.push(release);
    }

    fn counters(&self) -> &LockCounters {
        &self.0.counters
    }
}

async fn tenure(state: Arc<State>, partition: u32, owner: String, token: u64, started: Instant) {
    let core = &state.core;
    let fence = Fence::new(token);
    let _keep_alive = KeepAlive::start(
        Arc::new(Leases(state.clone())),
        Lease {
            key: LockKey::new(core.keys.lease(partition)),
            owner,
            fence: fence.clone(),
            lease: core.settings.lease,
            watchdog: true,
            started,
            max_hold: Duration::MAX,
        },
    );
    tracing::info!(partition, token, "applying a queue partition");
    match consume(&state, partition, &fence).await {
        Ok(()) => tracing::info!(partition, token, "queue partition lease lost"),
        Err(e) => {
            tracing::warn!(partition, error = %format!("{e:#}"), "queue partition consumer stopped")
        }
    }
}

/// A stream entry: its id and its request field (`None` when the entry
/// was deleted or has no such field).
type Entry = (String, Option<String>);

async fn consume(state: &State, partition: u32, fence: &Fence) -> anyhow::Result<()> {
    let core = &state.core;
    let settings = &core.settings;
    let stream = core.keys.stream(partition);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.redis.connect_timeout))
        .set_response_timeout(Some(settings.block + settings.redis.response_timeout));
    let mut conn = core
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("opening a consumer connection")?;
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(e).context("creating the consumer group");
    }
    let mut applier = state.appliers.open(fence.clone());

    // Entries earlier holders read and never answered become this
    // consumer's own pending entries...
    let mut cursor = "0-0".to_owned();
    loop {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&stream)
            .arg(GROUP)
            .arg(&core.instance)
            .arg(0)
            .arg(&cursor)
            .arg("COUNT")
            .arg(settings.batch)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await
            .context("claiming pending requests")?;
        cursor = match &reply {
            Value::Array(parts) => parts.first().and_then(text),
            _ => None,
        }
        .context("an XAUTOCLAIM reply without a cursor")?;
        if cursor == "0-0" {
            break;
        }
    }
    // ... applied first, in stream order.
    loop {
        if fence.is_lost() {
            return Ok(());
        }
        let batch = read(&mut conn, core, &stream, "0", None).await?;
        if batch.is_empty() {
            break;
        }
        if !process(&mut conn, core, partition, &mut *applier, batch, true).await? {
            return Ok(());
        }
    }
    loop {
        if fence.is_lost() {
            return Ok(());
        }
        let batch = read(&mut conn, core, &stream, ">", Some(settings.block)).await?;
        if !batch.is_empty()
            && !process(&mut conn, core, partition, &mut *applier, batch, false).await?
        {
            return Ok(());
        }
    }
}

async fn read(
    conn: &mut MultiplexedConnection,
    core: &QueueCore,
    stream: &str,
    from: &str,
    block: Option<Duration>,
) -> anyhow::Result<Vec<Entry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(&core.instance)
        .arg("COUNT")
        .arg(core.settings.batch);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(crate::scripts::millis(block));
    }
    cmd.arg("STREAMS").arg(stream).arg(from);
    let reply: Value = cmd
        .query_async(conn)
        .await
        .context("reading queued requests")?;
    entries(reply)
}

/// Applies one batch and answers it. False when the tenure's lease was
/// lost (the abandoned entries stay pending).
async fn process(
    conn: &mut MultiplexedConnection,
    core: &QueueCore,
    partition: u32,
    applier: &mut dyn concert_domain::PartitionApplier,
    batch: Vec<Entry>,
    redelivered: bool,
) -> anyhow::Result<bool> {
    let mut done: Vec<String> = Vec::new();
    let mut deliveries = Vec::new();
    let mut seen = HashSet::new();
    for (entry, fields) in batch {
        match fields.as_deref().map(wire::parse_entry) {
            Some(Ok((request, reply))) => {
                if seen.insert(request.id.clone()) {
                    deliveries.push((entry, request, reply));
                } else {
                    // the same request queued twice: answered once
                    done.push(entry);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(entry, error = %format!("{e:#}"), "dropping a malformed queued request");
                done.push(entry);
            }
            None => done.push(entry),
        }
    }
    // A redelivered request may have been answered before: its recorded
    // outcome is answered again instead of applying it twice.
    let mut recorded: Vec<Option<String>> = vec![None; deliveries.len()];
    if redelivered && !deliveries.is_empty() {
        let mut pipe = redis::pipe();
        for (_, request, _) in &deliveries {
            pipe.cmd("HGET")
                .arg(core.keys.request(partition, request.id.as_str()))
                .arg("outcome");
        }
        recorded = pipe
            .query_async(conn)
            .await
            .context("reading recorded outcomes")?;
    }
    let mut to_apply = Vec::new();
    let mut slots = Vec::new();
    for (i, ((_, request, _), known)) in deliveries.iter().zip(&recorded).enumerate() {
        if known.is_none() {
            to_apply.push(Delivery {
                request: request.clone(),
                redelivered,
            });
            slots.push(i);
        }
    }
    let applied = if to_apply.is_empty() {
        Vec::new()
    } else {
        applier.apply(to_apply).await
    };
    let mut outcomes: Vec<Option<String>> = recorded;
    let mut abandoned = false;
    for (slot, applied) in slots.into_iter().zip(applied) {
        match applied {
            Applied::Done(outcome) => outcomes[slot] = Some(wire::encode_outcome(&outcome)),
            Applied::Abandoned => abandoned = true,
        }
    }

    let mut answers = Vec::new();
    for ((entry, request, reply), outcome) in deliveries.iter().zip(&outcomes) {
        let Some(outcome) = outcome else { continue };
        answers.push(Answer {
            key: core.keys.request(partition, request.id.as_str()),
            outcome,
            channel: reply,
            id: request.id.as_str(),
        });
        done.push(entry.clone());
    }
    if !done.is_empty() {
        let call = scripts::answer(&core.keys.stream(partition), GROUP, &answers, &done);
        call.invocation(&ANSWER)
            .invoke_async::<i64>(conn)
            .await
            .context("answering applied requests")?;
    }
    Ok(!abandoned)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The entries of an `XREADGROUP` reply (one stream): RESP2 arrays or
/// RESP3 maps, `Nil` when nothing came.
fn entries(reply: Value) -> anyhow::Result<Vec<Entry>> {
    let streams: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop().unwrap_or(Value::Nil);
                    let name = pair.pop().unwrap_or(Value::Nil);
                    Ok((name, entries))
                }
                other => Err(anyhow!("unexpected stream in XREADGROUP reply: {other:?}")),
            })
            .collect::<anyhow::Result<_>>()?,
        other => return Err(anyhow!("unexpected XREADGROUP reply: {other:?}")),
    };
    let mut out = Vec::new();
    for (_, list) in streams {
        let Value::Array(list) = list else {
            continue;
        };
        for item in list {
            let Value::Array(parts) = item else {
                return Err(anyhow!("unexpected stream entry: {item:?}"));
            };
            let mut parts = parts.into_iter();
            let id = parts
                .next()
                .as_ref()
                .and_then(text)
                .context("a stream entry without an id")?;
            let is_request = |k: &Value| text(k).as_deref() == Some(wire::FIELD);
            let request = match parts.next() {
                Some(Value::Array(flat)) => flat
                    .chunks_exact(2)
                    .find(|kv| is_request(&kv[0]))
                    .and_then(|kv| text(&kv[1])),
                Some(Value::Map(pairs)) => pairs
                    .iter()
                    .find(|(k, _)| is_request(k))
                    .and_then(|(_, v)| text(v)),
                _ => None,
            };
            out.push((id, request));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_replies_parse_into_entries() {
        assert!(entries(Value::Nil).unwrap().is_empty());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("x"), bulk("other"), bulk("r"), bulk("a b")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        assert_eq!(
            entries(reply).unwrap(),
            [
                ("1-0".to_owned(), Some("a b".to_owned())),
                ("2-0".to_owned(), None)
            ]
        );
        let resp3 = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Map(vec![(bulk("r"), bulk("y"))]),
            ])]),
        )]);
        assert_eq!(entries(resp3).unwrap()[0].1.as_deref(), Some("y"));
        assert!(entries(Value::Int(3)).is_err());
    }
}
