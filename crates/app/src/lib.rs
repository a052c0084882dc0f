//! The application: settings, telemetry, the strategy registry, and the
//! wiring that picks an adapter for every port. `main` only bootstraps.

pub mod audit;
pub mod cli;
pub mod events;
pub mod metrics;
pub mod room;
pub mod seed;
pub mod settings;
pub mod strategies;
pub mod telemetry;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use concert_domain::{
    ApplierOptions, Clock, Controls, LockOptions, Ports, SeatRequestApplier, Services,
};
use concert_http::{AppState, Auth, AuthOptions, HttpOptions, Readiness};
use concert_inprocess::{LocalLock, SystemClock};
use concert_mysql::{Db, MysqlStore, PoolOptions};
use concert_redis::{Consumers, QueueSettings, RedLock, RedisLockSettings, RedisLocks, RedisQueue};
use secrecy::ExposeSecret;

pub use settings::{Settings, Strategies};
pub use strategies::{Adapters, QueueAdapter, REGISTRY, StrategyName};

/// What a test (or the lab) may replace in the wiring.
#[derive(Clone, Default)]
pub struct Overrides {
    /// The clock every use case reads (default: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
}

/// The adapters of one instance, connected and shared.
#[derive(Clone)]
pub struct Infrastructure {
    pub db: Db,
    pub store: MysqlStore,
    pub redis: Option<RedisLocks>,
    /// The RedLock masters, when `APP_REDLOCK_URLS` names them.
    pub redlock: Option<RedLock>,
    /// The seat queue, when seat holds use the `queue` strategy.
    pub queue: Option<RedisQueue>,
    pub clock: Arc<dyn Clock>,
    /// The waiting room, when it is on.
    pub room: Option<room::Room>,
    /// What the ports are wrapped with for events (commit listener,
    /// seat-map cache).
    pub events: events::EventPorts,
}

impl Infrastructure {
    /// Opens the MySQL pool (no connection yet: a database that is down is
    /// reported by readiness and 503s, not by a failed start) and, when a
    /// configured strategy needs it, Redis (likewise lazy when Redis does
    /// not answer yet).
    pub async fn connect(settings: &Settings, overrides: &Overrides) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database.url, pool_options(settings))
            .await
            .context("configuring the MySQL pool")?;
        let redis = if settings.strategies.need_redis() {
            Some(connect_redis(settings).await?)
        } else {
            None
        };
        let redlock = if settings.redis.redlock_urls.is_empty() {
            None
        } else {
            let urls: Vec<String> = settings
                .redis
                .redlock_urls
                .iter()
                .map(|u| u.expose_secret().to_owned())
                .collect();
            Some(
                RedLock::new(&urls, &settings.redis.prefix, RedisLockSettings::default())
                    .context("configuring APP_REDLOCK_URLS")?,
            )
        };
        let queue = if settings.strategies.need_queue() {
            Some(connect_queue(settings).await?)
        } else {
            None
        };
        let store = MysqlStore::new(db.clone());
        Ok(Self {
            events: events::EventPorts::new(&settings.events, Arc::new(store.clone())),
            store,
            db,
            redis,
            redlock,
            room: room::Room::build(settings)?,
            queue,
            clock: overrides
                .clock
                .clone()
                .unwrap_or_else(|| Arc::new(SystemClock)),
        })
    }

    /// The ports every use case draws from.
    pub fn ports(&self) -> Ports {
        Ports {
            transactions: self.events.transactions(Arc::new(self.store.clone())),
            queries: Arc::new(self.store.clone()),
            catalogue: self.events.catalogue(),
            clock: self.clock.clone(),
        }
    }

    /// The use cases, each contended operation under its configured
    /// strategy.
    pub fn services(&self, settings: &Settings) -> anyhow::Result<Services> {
        self.services_observed(settings, Arc::new(concert_domain::Unobserved))
    }

    /// [`Infrastructure::services`], every control reporting to `observer`
    /// (attempts, conflicts, lock waits: the metrics).
    pub fn services_observed(
        &self,
        settings: &Settings,
        observer: Arc<dyn concert_domain::Observer>,
    ) -> anyhow::Result<Services> {
        let adapters = Adapters {
            local: LocalLock::new(),
            redis: self.redis.clone(),
            redlock: self.redlock.clone(),
            relay: settings.locks.local_queue,
            lock_options: LockOptions {
                lease: settings.locks.lease,
                wait: settings.locks.wait,
                watchdog: true,
            },
            queue: self.queue.as_ref().map(|queue| QueueAdapter {
                queue: Arc::new(queue.clone()),
                reply: settings.queue.reply,
            }),
        };
        let strategies = settings.strategies;
        let controls = Controls {
            seats: strategies
                .seats
                .build(&adapters)?
                .with_observer(observer.clone()),
            charge: strategies
                .charge
                .build(&adapters)?
                .with_observer(observer.clone()),
            spend: strategies.spend.build(&adapters)?.with_observer(observer),
        };
        let services = Services::new(self.ports(), controls, settings.policy);
        Ok(match &self.room {
            // the room decides "sold out" on storage, never on the seat-map
            // cache
            Some(room) => services.with_waiting_room_over(
                room.port(),
                settings.waiting_room.rules,
                Arc::new(self.store.clone()),
            ),
            None => services,
        })
    }

    /// Starts this instance's queue partition consumers (when seat holds
    /// use the `queue` strategy): they apply the partitions whose leases
    /// they hold through the domain's [`SeatRequestApplier`].
    pub fn start_queue_consumers(&self, settings: &Settings) -> Option<Consumers> {
        let queue = self.queue.as_ref()?;
        let applier =
            SeatRequestApplier::new(self.ports(), settings.policy).with_options(ApplierOptions {
                memory: settings.queue.memory,
                ..ApplierOptions::default()
            });
        Some(queue.start_consumers(Arc::new(applier)))
    }

    /// What `/health/ready` checks.
    pub fn readiness(&self) -> Vec<Arc<dyn Readiness>> {
        let mut checks: Vec<Arc<dyn Readiness>> = vec![Arc::new(MysqlReady(self.db.clone()))];
        if let Some(redis) = &self.redis {
            checks.push(Arc::new(RedisReady(redis.clone())));
        } else if let Some(room::Room::Redis(room)) = &self.room {
            checks.push(Arc::new(room::RoomReady(room.clone())));
        }
        if let Some(redlock) = &self.redlock {
            checks.push(Arc::new(RedLockReady(redlock.clone())));
        }
        checks
    }
}

/// The seat queue of these settings; when Redis does not answer yet it
/// starts anyway (the consumers check the partition count once it does).
async fn connect_queue(settings: &Settings) -> anyhow::Result<RedisQueue> {
    let url = settings.redis.url.expose_secret();
    let prefix = &settings.redis.prefix;
    let queue_settings = QueueSettings {
        partitions: settings.queue.partitions,
        lease: settings.queue.lease,
        ..QueueSettings::default()
    };
    match RedisQueue::connect(url, prefix, queue_settings).await {
        Ok(queue) => Ok(queue),
        Err(concert_domain::Failure::Unavailable(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "Redis does not answer yet; the seat queue starts anyway");
            RedisQueue::connect_lazy(url, prefix, queue_settings)
                .context("configuring the seat queue")
        }
        Err(e) => Err(e).context("connecting the seat queue"),
    }
}

async fn connect_redis(settings: &Settings) -> anyhow::Result<RedisLocks> {
    let url = settings.redis.url.expose_secret();
    let prefix = &settings.redis.prefix;
    let lock_settings = RedisLockSettings::default();
    match RedisLocks::connect(url, prefix, lock_settings).await {
        Ok(locks) => Ok(locks),
        Err(concert_domain::Failure::Unavailable(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "Redis does not answer yet; starting anyway");
            RedisLocks::connect_lazy(url, prefix, lock_settings)
                .await
                .context("configuring Redis")
        }
        Err(e) => Err(e).context("connecting to Redis"),
    }
}

pub fn pool_options(settings: &Settings) -> PoolOptions {
    PoolOptions {
        max_size: settings.database.pool_size,
        wait_timeout: settings.database.wait,
        statement_timeout: Some(settings.database.statement_timeout),
        ..PoolOptions::default()
    }
}

struct MysqlReady(Db);

#[async_trait]
impl Readiness for MysqlReady {
    fn name(&self) -> &'static str {
        "mysql"
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.0.ping().await
    }
}

struct RedisReady(RedisLocks);

#[async_trait]
impl Readiness for RedisReady {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.0.ping().await
    }
}

struct RedLockReady(RedLock);

#[async_trait]
impl Readiness for RedLockReady {
    fn name(&self) -> &'static str {
        "redlock"
    }

    async fn check(&self) -> anyhow::Result<()> {
        Ok(self.0.ping().await?)
    }
}

/// The bearer-token verifier of these settings.
pub fn auth(settings: &Settings) -> Auth {
    Auth::new(
        settings.auth.secret.expose_secret().as_bytes(),
        AuthOptions {
            issuer: settings.auth.issuer.clone(),
            audience: settings.auth.audience.clone(),
        },
    )
}

/// A bound, wired, not yet running service.
pub struct Application {
    port: u16,
    server: concert_http::Server,
    background: Vec<tokio::task::JoinHandle<()>>,
    events: events::EventsRuntime,
    consumers: Option<Consumers>,
    db: Db,
}

impl Application {
    /// [`Application::build_with`] with nothing overridden.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with(settings, Overrides::default()).await
    }

    /// Checks the settings for serving, wires the services, binds the
    /// listener and starts the background work (the hold sweeper). The
    /// database must already be migrated (`app migrate`).
    pub async fn build_with(
        settings: Settings,
        overrides: Overrides,
    ) -> anyhow::Result<Application> {
        settings.check_serving()?;
        if settings.auth.secret_is_default {
            tracing::warn!("APP_JWT_SECRET is not set: using the development secret");
        }
        let infra = Infrastructure::connect(&settings, &overrides).await?;
        let metrics = Arc::new(metrics::Metrics::new());
        let services = infra.services_observed(&settings, metrics.clone())?;
        let listener = bind(&settings)?;
        let port = listener.local_addr()?.port();

        let mut background = Vec::new();
        if !settings.sweep_interval.is_zero() {
            background.push(spawn_sweeper(services.clone(), settings.sweep_interval));
        }
        background.push(metrics.spawn_sampler(infra.db.clone()));
        let events = events::EventsRuntime::start(&settings, &infra).await?;
        let consumers = infra.start_queue_consumers(&settings);
        let room = services.waiting_room.clone();
        let state = AppState {
            services,
            auth: auth(&settings),
            readiness: infra.readiness(),
        };
        let options = HttpOptions {
            workers: settings.http.workers,
            cors_origins: settings.http.cors_origins.clone(),
            shutdown_timeout: settings.http.shutdown_timeout,
            observer: Some(metrics.clone()),
            metrics: Some(metrics.render(infra.db.clone(), room)),
            ..HttpOptions::default()
        };
        let server = concert_http::server(listener, state, options)?;
        let strategies = settings.strategies;
        tracing::info!(
            address = %format!("http://{}:{port}", settings.http.host),
            seat = %strategies.seats,
            charge = %strategies.charge,
            point_use = %strategies.spend,
            waiting_room = infra.room.as_ref().map_or("off", |r| r.store_name()),
            "listening"
        );
        Ok(Application {
            port,
            server,
            background,
            events,
            consumers,
            db: infra.db,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The background event work (relay, consumers, seat-map cache).
    pub fn events(&self) -> &events::EventsRuntime {
        &self.events
    }

    /// Serves until SIGINT/SIGTERM: then stops accepting, lets the accepted
    /// requests finish within the shutdown timeout (their locks are
    /// released as they complete), stops the background work and closes
    /// the pool.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        for task in self.background {
            task.abort();
        }
        self.events.stop().await;
        if let Some(consumers) = self.consumers {
            consumers.stop().await;
        }
        self.db.close();
        tracing::info!("stopped");
        result.context("HTTP server failed")
    }
}

/// Binds the listener, saying which variable to change when the port is
/// taken.
fn bind(settings: &Settings) -> anyhow::Result<TcpListener> {
    let (host, port) = (settings.http.host.as_str(), settings.http.port);
    TcpListener::bind((host, port)).map_err(|e| {
        if e.kind() == ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "port {port} on {host} is already in use: stop what uses it, or pick another \
                 port with APP_PORT=<port> (APP_PORT=0 picks a free one)"
            )
        } else {
            anyhow::Error::new(e).context(format!("binding {host}:{port} (APP_HOST/APP_PORT)"))
        }
    })
}

fn spawn_sweeper(services: Services, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match services.reservations.expire_stale().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "sweeper expired stale holds"),
                Err(e) => tracing::warn!(error = %e, "sweeper failed"),
            }
        }
    })
}
