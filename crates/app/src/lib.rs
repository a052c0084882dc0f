//! The application: settings, telemetry, and the wiring that chooses an
//! adapter for every port from the settings. `main` only bootstraps.

pub mod settings;
pub mod telemetry;

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use concert_domain::{
    CatalogueService, Clock, Control, DistributedLock, LockError, LockKind, LockOptions,
    PaymentService, PointService, ReservationService, Strategy,
};
use concert_http::{AppState, Auth, Readiness};
use concert_mysql::{Db, MysqlCatalogue, MysqlPayments, MysqlSeats, MysqlWallets, PoolOptions};
use concert_redis_lock::{LocalLock, Queued, RedisLockSettings, RedisLocks, SystemClock};

pub use settings::{Secret, Settings};

/// The lock adapters an instance may use, built once and shared.
#[derive(Clone)]
pub struct Locks {
    local: Arc<LocalLock>,
    redis: Option<RedisLocks>,
    /// Queue this process's requests per key in memory before Redis.
    queue: Option<LocalLock>,
}

impl Locks {
    pub fn new(local: Arc<LocalLock>, redis: Option<RedisLocks>, local_queue: bool) -> Locks {
        Locks {
            local,
            redis,
            queue: local_queue.then(LocalLock::new),
        }
    }

    /// Connects to Redis only when some strategy needs it. Redis being down
    /// at start does not stop the service: it starts, answers 503 for the
    /// operations that need Redis and `/health/ready` reports it, until
    /// Redis answers (like MySQL). An invalid URL stops start-up.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Locks> {
        let redis = if settings.needs_redis() {
            let (url, prefix) = (&settings.redis_url, &settings.redis_prefix);
            Some(match RedisLocks::connect(url, prefix).await {
                Ok(locks) => locks,
                Err(LockError::Unavailable(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), %url, "Redis does not answer yet; starting anyway");
                    RedisLocks::connect_lazy(url, prefix, RedisLockSettings::default())
                        .await
                        .with_context(|| format!("configuring Redis at {url}"))?
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("connecting to Redis at {url}"));
                }
            })
        } else {
            None
        };
        Ok(Locks::new(
            Arc::new(LocalLock::new()),
            redis,
            settings.lock_local_queue,
        ))
    }

    pub fn redis(&self) -> Option<&RedisLocks> {
        self.redis.as_ref()
    }

    pub fn local(&self) -> &Arc<LocalLock> {
        &self.local
    }

    /// The lock adapter a strategy uses, if it is lock-based.
    pub fn for_strategy(
        &self,
        strategy: Strategy,
    ) -> anyhow::Result<Option<Arc<dyn DistributedLock>>> {
        let lock: Arc<dyn DistributedLock> = match strategy.lock_kind() {
            None => return Ok(None),
            Some(LockKind::Local) => self.local.clone(),
            Some(kind) => {
                let redis = self
                    .redis
                    .as_ref()
                    .context("a Redis strategy is configured but Redis is not connected")?
                    .lock(kind);
                // `redis-simple` fails at once when the key is taken, so it
                // has no waiters to queue.
                match &self.queue {
                    Some(queue) if kind != LockKind::RedisSimple => {
                        Arc::new(Queued::new(queue.clone(), redis))
                    }
                    _ => Arc::new(redis),
                }
            }
        };
        Ok(Some(lock))
    }

    /// A control for `strategy` with its lock adapter and lock options.
    pub fn control(
        &self,
        strategy: Strategy,
        options: LockOptions,
    ) -> anyhow::Result<Control<Arc<dyn DistributedLock>>> {
        Ok(Control::new(strategy, self.for_strategy(strategy)?)?.with_lock_options(options))
    }
}

/// The domain services wired over MySQL and the configured locks.
pub struct Services {
    pub catalogue: concert_http::Catalogue,
    pub reservations: concert_http::Reservations,
    pub points: concert_http::Points,
    pub payments: concert_http::Payments,
}

impl Services {
    pub fn build(settings: &Settings, db: &Db, locks: &Locks) -> anyhow::Result<Services> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let options = LockOptions {
            lease: settings.lock_lease,
            wait: settings.lock_wait,
            watchdog: true,
        };
        Ok(Services {
            catalogue: CatalogueService::new(
                Arc::new(MysqlCatalogue::new(db.clone())),
                clock.clone(),
            ),
            reservations: ReservationService::new(
                Arc::new(MysqlSeats::new(db.clone())),
                clock.clone(),
                locks.control(settings.seat_strategy, options)?,
                settings.hold,
            ),
            points: PointService::new(
                Arc::new(MysqlWallets::new(db.clone())),
                clock.clone(),
                locks.control(settings.charge_strategy, options)?,
                locks.control(settings.use_strategy, options)?,
            ),
            payments: PaymentService::new(
                Arc::new(MysqlPayments::new(db.clone())),
                clock,
                locks.control(settings.use_strategy, options)?,
            ),
        })
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

pub fn pool_options(settings: &Settings) -> PoolOptions {
    PoolOptions {
        max_size: settings.db_pool_size,
        wait_timeout: settings.db_wait,
        ..PoolOptions::default()
    }
}

/// A bound, wired, not yet running service.
pub struct Application {
    port: u16,
    server: concert_http::Server,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Connects to MySQL (and Redis when a strategy needs it), wires the
    /// services, binds the listener and starts the hold sweeper. The
    /// database must already be migrated (`app migrate`).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        if settings.jwt_secret_is_default {
            tracing::warn!("APP_JWT_SECRET is not set: using the development secret");
        }
        let db = Db::connect(&settings.database_url, pool_options(&settings))
            .await
            .context("connecting to MySQL")?;
        let locks = Locks::connect(&settings).await?;
        let services = Services::build(&settings, &db, &locks)?;

        let sweeper = (!settings.sweep_interval.is_zero()).then(|| {
            let sweep = ReservationService::new(
                Arc::new(MysqlSeats::new(db.clone())) as Arc<dyn concert_domain::SeatRepository>,
                Arc::new(SystemClock) as Arc<dyn Clock>,
                Control::<Arc<dyn DistributedLock>>::new(Strategy::Atomic, None)
                    .expect("atomic needs no lock"),
                settings.hold,
            );
            let every = settings.sweep_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match sweep.expire_stale().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(expired = n, "sweeper expired stale holds"),
                        Err(e) => tracing::warn!(error = %e, "sweeper failed"),
                    }
                }
            })
        });

        let mut readiness: Vec<Arc<dyn Readiness>> = vec![Arc::new(MysqlReady(db.clone()))];
        if let Some(redis) = locks.redis() {
            readiness.push(Arc::new(RedisReady(redis.clone())));
        }
        let state = AppState {
            catalogue: services.catalogue,
            reservations: services.reservations,
            points: services.points,
            payments: services.payments,
            auth: Auth::new(settings.jwt_secret.expose().as_bytes()),
            readiness,
        };

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let server = concert_http::server(listener, state, settings.workers)?;
        tracing::info!(
            address = %format!("http://{}:{port}", settings.host),
            seat = %settings.seat_strategy,
            charge = %settings.charge_strategy,
            point_use = %settings.use_strategy,
            "listening"
        );
        Ok(Application {
            port,
            server,
            sweeper,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM: then stops accepting, lets in-flight
    /// requests finish (their locks are released as they complete), and
    /// stops the sweeper.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        if let Some(sweeper) = self.sweeper {
            sweeper.abort();
        }
        tracing::info!("stopped: in-flight requests finished, their locks released");
        result.context("HTTP server failed")
    }
}
