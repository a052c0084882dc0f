//! The application: settings, telemetry, the strategy registry, and the
//! wiring that picks an adapter for every port. `main` only bootstraps.

pub mod cli;
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
use concert_redis::{Consumers, QueueSettings, RedisLockSettings, RedisLocks, RedisQueue};
use secrecy::ExposeSecret;

pub use settings::Settings;
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
    /// The seat queue, when seat holds use the `queue` strategy.
    pub queue: Option<RedisQueue>,
    pub clock: Arc<dyn Clock>,
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
        let queue = if settings.strategies.need_queue() {
            Some(connect_queue(settings).await?)
        } else {
            None
        };
        Ok(Self {
            store: MysqlStore::new(db.clone()),
            db,
            redis,
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
            transactions: Arc::new(self.store.clone()),
            queries: Arc::new(self.store.clone()),
            catalogue: Arc::new(self.store.clone()),
            clock: self.clock.clone(),
        }
    }

    /// The use cases, each contended operation under its configured
    /// strategy.
    pub fn services(&self, settings: &Settings) -> anyhow::Result<Services> {
        let adapters = Adapters {
            local: LocalLock::new(),
            redis: self.redis.clone(),
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
            seats: strategies.seats.build(&adapters)?,
            charge: strategies.charge.build(&adapters)?,
            spend: strategies.spend.build(&adapters)?,
        };
        Ok(Services::new(self.ports(), controls, settings.policy))
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
        let services = infra.services(&settings)?;
        let listener = bind(&settings)?;
        let port = listener.local_addr()?.port();

        let mut background = Vec::new();
        if !settings.sweep_interval.is_zero() {
            background.push(spawn_sweeper(services.clone(), settings.sweep_interval));
        }
        let consumers = infra.start_queue_consumers(&settings);
        let state = AppState {
            services,
            auth: auth(&settings),
            readiness: infra.readiness(),
        };
        let options = HttpOptions {
            workers: settings.http.workers,
            cors_origins: settings.http.cors_origins.clone(),
            shutdown_timeout: settings.http.shutdown_timeout,
            ..HttpOptions::default()
        };
        let server = concert_http::server(listener, state, options)?;
        let strategies = settings.strategies;
        tracing::info!(
            address = %format!("http://{}:{port}", settings.http.host),
            seat = %strategies.seats,
            charge = %strategies.charge,
            point_use = %strategies.spend,
            "listening"
        );
        Ok(Application {
            port,
            server,
            background,
            consumers,
            db: infra.db,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
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
