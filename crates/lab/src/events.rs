//! The event experiments:
//!
//! - `relay`: the sustained point-use load (distinct wallets, the lab's
//!   workers) with the outbox relay running as `app serve` runs it, plus
//!   refused uses (rolled back); measures each event's publish lag
//!   (`published_at - created_at`) and checks that every committed event
//!   reached the stream once de-duplicated (0 lost) and that no refused
//!   use published anything.
//! - `seat-map`: `GET /schedules/{id}/seats` over HTTP at 64 keep-alive
//!   connections against the same server's `GET /health/live`, with the
//!   seat-map cache on (and off, for comparison), both servers started in
//!   this process on the lab's database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use concert_app::events::{RelayOptions, RelayStats, run_relay};
use concert_app::{Application, Overrides, Settings, Strategies, StrategyName};
use concert_domain::{
    Clock, DistributedLock, Event, OutboxRelay, PointChange, Points, Protection, Stream,
    Transactions, UseError, UsePoints, UserId,
};
use concert_inprocess::SystemClock;
use concert_redis::{RedisStreams, StreamSettings};
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::LabConfig;
use crate::env::LabEnv;
use crate::progress::Progress;
use crate::row::{Rep, Row};

/// Connections of the seat-map read figure.
pub const READ_CONNECTIONS: usize = 64;

/// The strategy the relay load runs under: the app's default for point
/// use.
fn relay_strategy() -> StrategyName {
    Strategies::default().spend
}

/// `relay`: publish lag under the sustained load, exactness of delivery.
pub async fn relay(env: &LabEnv, c: &LabConfig) -> anyhow::Result<Vec<Row>> {
    let infra = env.infra();
    let settings = env.settings();
    let streams = RedisStreams::new(
        settings.redis.url.expose_secret(),
        &settings.redis.prefix,
        StreamSettings {
            max_len: 0,
            ..StreamSettings::default()
        },
    )?;
    // the events of earlier experiments are not part of this measurement
    // (deleted, not marked published: a relay that finds events published
    // before and streams that never saw them republishes everything, as
    // after a Redis data loss)
    env.sql.clear_outbox().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let stats = Arc::new(RelayStats::default());
    let relay = OutboxRelay::new(
        Arc::new(infra.store.clone()),
        Arc::new(streams.clone()),
        clock.clone(),
        settings.events.relay_batch,
    );
    let options = RelayOptions {
        poll: settings.events.relay_poll,
        lease: settings.events.relay_lease,
        retention: settings.events.retention,
        ..RelayOptions::default()
    };
    let task = tokio::spawn(run_relay(
        relay,
        Arc::new(env.redis.simple()) as Arc<dyn DistributedLock>,
        infra.events.wake(),
        clock,
        options,
        stats.clone(),
    ));
    let services = Arc::new(env.services(relay_strategy())?);
    let transactions = infra.ports().transactions;
    let mut progress = Progress::new(c.reps, c.progress);
    let mut reps = Vec::with_capacity(c.reps);
    let mut first_user = 900_000_000u64;
    let mut result = Ok(());
    for rep in 0..c.reps {
        progress.step(&format!("relay publish-lag #{}", rep + 1));
        first_user += 10_000;
        match relay_rep(env, c, &services, &transactions, &streams, first_user).await {
            Ok(measured) => reps.push(measured),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    task.abort();
    result?;
    Ok(vec![Row::summarise(
        "relay",
        &format!("{}+relay", relay_strategy()),
        "service",
        Some("publish-lag"),
        reps,
    )])
}

async fn relay_rep(
    env: &LabEnv,
    c: &LabConfig,
    services: &Arc<concert_domain::Services>,
    transactions: &Arc<dyn Transactions>,
    streams: &RedisStreams,
    first_user: u64,
) -> anyhow::Result<Rep> {
    let workers = c.sustained_workers;
    let per_worker = c.sustained_ops.div_ceil(workers);
    let before = env.sql.outbox_last().await?;
    for w in 0..workers as u64 {
        env.sql
            .set_balance(UserId::from(first_user + w), per_worker as u64)
            .await?;
    }
    // a wallet that never covers a use: every use of it rolls back; and
    // units that record an event of it, then roll back
    let broke = UserId::from(first_user + 9_999);
    let one = Points::new(1)?;
    let started = Instant::now();
    let handles: Vec<_> = (0..workers as u64)
        .map(|w| {
            let services = services.clone();
            let transactions = transactions.clone();
            tokio::spawn(async move {
                let user = UserId::from(first_user + w);
                let (mut ok, mut refused, mut other) = (0u64, 0u64, 0u64);
                for i in 0..per_worker {
                    if i % 10 == 4 {
                        rolled_back(&*transactions, broke).await?;
                    }
                    let who = if i % 10 == 9 { broke } else { user };
                    match services
                        .points
                        .use_points(UsePoints {
                            user: who,
                            amount: one,
                        })
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(UseError::InsufficientPoints { .. }) => refused += 1,
                        Err(_) => other += 1,
                    }
                }
                Ok::<_, anyhow::Error>((ok, refused, other))
            })
        })
        .collect();
    let (mut ok, mut refused, mut other) = (0, 0, 0);
    for handle in handles {
        let (o, r, x) = handle.await.context("a relay load task panicked")??;
        ok += o;
        refused += r;
        other += x;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;

    // wait for the relay to catch up
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = env.sql.outbox_after(before).await?;
        if rows.iter().all(|r| r.published_at.is_some()) {
            break rows;
        }
        ensure!(
            Instant::now() < deadline,
            "the relay did not publish the run's events within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut violations = Vec::new();
    if rows.len() as u64 != ok {
        violations.push(format!(
            "{} events recorded for {ok} committed uses",
            rows.len()
        ));
    }
    let entries = streams.range(Stream::Points).await?;
    let ours: HashSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let mut delivered: HashMap<&str, usize> = HashMap::new();
    let mut refused_published = 0;

    for entry in &entries {
        if ours.contains(entry.id.as_str()) {
            *delivered.entry(entry.id.as_str()).or_default() += 1;
        }
        let payload: serde_json::Value =
            serde_json::from_str(&entry.payload).unwrap_or(serde_json::Value::Null);
        if payload["userId"].as_u64() == Some(broke.get()) {
            refused_published += 1;
        }
    }
    let lost = ours.len() - delivered.len();
    if lost > 0 {
        violations.push(format!("{lost} committed events never published"));
    }
    if refused_published > 0 {
        violations.push(format!(
            "{refused_published} events published for rolled-back uses"
        ));
    }
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    let lags: Vec<f64> = rows
        .iter()
        .filter_map(|r| {
            let published = r.published_at?;
            Some((published - r.created_at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    let mut failures = BTreeMap::new();
    if refused > 0 {
        failures.insert("InsufficientPoints (rolled back)".to_owned(), refused);
    }
    if other > 0 {
        failures.insert("Other".to_owned(), other);
    }
    if duplicates > 0 {
        failures.insert("duplicates (de-duplicated)".to_owned(), duplicates as u64);
    }
    Ok(Rep {
        tasks: (per_worker * workers) as u64,
        successes: ok,
        failures,
        attempts: rows.len() as u64,
        ms,
        latencies: lags,
        violations,
        ..Rep::default()
    })
}

/// A unit that records an event of `user`, then rolls back.
async fn rolled_back(transactions: &dyn Transactions, user: UserId) -> anyhow::Result<()> {
    let mut uow = transactions.begin(Protection::Optimistic).await?;
    let event = Event::points(
        user,
        PointChange::Charge(Points::new(1)?),
        1,
        None,
        Utc::now(),
    );
    uow.outbox().record(&[event]).await?;
    uow.rollback().await;
    Ok(())
}

/// A server of the seat-map figure, running in this process.
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_server(env: &LabEnv, cache: bool) -> anyhow::Result<Server> {
    let base = env.settings();
    let url = base.database.url.as_str().to_owned();
    let redis = base.redis.url.expose_secret().to_owned();
    let prefix = format!("{}-http", base.redis.prefix);
    let vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", url),
        ("REDIS_URL", redis),
        ("APP_REDIS_PREFIX", prefix),
        ("APP_HOST", "127.0.0.1".to_owned()),
        ("APP_PORT", "0".to_owned()),
        (
            "APP_SEAT_CACHE",
            if cache { "on" } else { "off" }.to_owned(),
        ),
        // the lab's earlier experiments left events unpublished: a relay
        // would publish them during the measurement
        ("APP_RELAY", "off".to_owned()),
        ("APP_SWEEP_SECONDS", "0".to_owned()),
    ]);
    let settings = Settings::from_lookup(|name| vars.get(name).cloned())?;
    let app = Application::build_with(settings, Overrides::default()).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
    if let Some(seat_cache) = app.events().seat_cache().cloned() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seat_cache.is_live() {
            ensure!(
                Instant::now() < deadline,
                "the seat-map consumer did not connect to Redis"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let task = tokio::spawn(async move {
        if let Err(e) = app.run_until_stopped().await {
            tracing::warn!(error = %format!("{e:#}"), "lab server stopped");
        }
    });
    Ok(Server { addr, task })
}

/// `seat-map`: the seat-map read rate against `/health/live` on the same
/// server, cache on and off.
pub async fn seat_map(env: &LabEnv, c: &LabConfig) -> anyhow::Result<Vec<Row>> {
    let concert = env.sql.create_concert("Lab seat map").await?;
    let schedule = env
        .sql
        .create_schedule(concert, Utc::now() + chrono::Duration::days(30), |n| {
            100 * u64::from(n.get())
        })
        .await?;
    let seats = format!("/api/v1/schedules/{schedule}/seats");
    let servers = [
        ("cache-on", start_server(env, true).await?),
        ("cache-off", start_server(env, false).await?),
    ];
    let targets = ["/health/live", seats.as_str()];
    // row targets (also chart file names: no slashes)
    let labels = ["health-live", "seats"];
    let per_connection = c.read_requests.div_ceil(READ_CONNECTIONS).max(1);
    // warm up: connections, caches, prepared statements
    for (_, server) in &servers {
        for path in targets {
            hammer(server.addr, path, READ_CONNECTIONS, 20).await?;
        }
    }
    let mut progress = Progress::new(c.reps * servers.len() * targets.len(), c.progress);
    let mut reps: Vec<Vec<Rep>> = vec![Vec::new(); servers.len() * targets.len()];
    for rep in 0..c.reps {
        for (s, (label, server)) in servers.iter().enumerate() {
            for (t, path) in targets.iter().enumerate() {
                progress.step(&format!("seat-map {label} {path} #{}", rep + 1));
                let run = hammer(server.addr, path, READ_CONNECTIONS, per_connection).await?;
                reps[s * targets.len() + t].push(run);
            }
        }
    }
    let mut rows = Vec::new();
    for (s, (label, _)) in servers.iter().enumerate() {
        for (t, target) in labels.iter().enumerate() {
            rows.push(Row::summarise(
                "seat-map",
                label,
                "http",
                Some(target),
                std::mem::take(&mut reps[s * targets.len() + t]),
            ));
        }
    }
    for pair in rows.chunks(2) {
        if let [health, seats] = pair
            && health.ops_per_sec > 0.0
        {
            eprintln!(
                "seat-map {}: {:.0} GET /schedules/{{id}}/seats per s vs {:.0} GET /health/live per s = {:.0}%",
                seats.strategy,
                seats.ops_per_sec,
                health.ops_per_sec,
                100.0 * seats.ops_per_sec / health.ops_per_sec
            );
        }
    }
    Ok(rows)
}

/// `connections` keep-alive HTTP/1.1 connections each send `requests` GETs
/// of `path` one after the other; the rep counts the 200s (every other
/// status is a violation) over the wall time from the first request to
/// the last answer.
async fn hammer(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    requests: usize,
) -> anyhow::Result<Rep> {
    let request = Arc::new(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes());
    let barrier = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let handles: Vec<_> = (0..connections)
        .map(|_| {
            let request = request.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let mut buffer = Vec::with_capacity(8 * 1024);
                barrier.wait().await;
                let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
                for _ in 0..requests {
                    stream.write_all(&request).await?;
                    let status = read_response(&mut stream, &mut buffer).await?;
                    *statuses.entry(status).or_default() += 1;
                }
                Ok::<_, anyhow::Error>(statuses)
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for handle in handles {
        for (status, n) in handle.await.context("a load connection panicked")?? {
            *statuses.entry(status.to_string()).or_default() += n;
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let ok = statuses.get("200").copied().unwrap_or(0);
    let total = (connections * requests) as u64;
    let mut violations = Vec::new();
    if ok != total {
        violations.push(format!(
            "{path}: {ok} of {total} answered 200 ({statuses:?})"
        ));
    }
    Ok(Rep {
        tasks: total,
        successes: ok,
        attempts: total,
        ms,
        statuses,
        violations,
        ..Rep::default()
    })
}

/// Reads one response (status line, headers, a `Content-Length` body) and
/// returns its status; bytes beyond it stay in `buffer`.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<u16> {
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, buffer).await?;
    };
    let head = std::str::from_utf8(&buffer[..head_end]).context("a non-UTF-8 response head")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("a bad status line: {head:?}"))?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .with_context(|| format!("a response without Content-Length: {head:?}"))?;
    while buffer.len() < head_end + length {
        read_more(stream, buffer).await?;
    }
    buffer.drain(..head_end + length);
    Ok(status)
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        bail!("the server closed the connection");
    }
    buffer.extend_from_slice(&chunk[..n]);
    Ok(())
}
