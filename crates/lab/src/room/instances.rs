//! What the waiting-room scenarios run against: a fresh database next to
//! `DATABASE_URL`'s, a `redis-server` of the lab's own on a free port (so
//! its command counts are exactly the run's; `--shared-redis` uses
//! `REDIS_URL` and a fresh prefix instead), and N instances of the real
//! application in this process, each with its own HTTP server, MySQL pool
//! and Redis connections, sharing one room through Redis.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use concert_app::{Application, Overrides, Settings};
use concert_domain::{RoomRules, UserId};
use concert_http::{Auth, AuthOptions};
use concert_mysql::DatabaseUrl;
use concert_redis::{RedisLockSettings, RedisLocks, RedisWaitingRoom};
use concert_testkit::{OwnRedis, Sql};
use tokio::task::JoinHandle;

use crate::config::LabConfig;

pub struct Instances {
    /// `http://127.0.0.1:<port>` of each instance.
    pub urls: Vec<String>,
    /// Direct SQL on the instances' database (set-up and checks).
    pub sql: Sql,
    pub rules: RoomRules,
    pub redis_url: String,
    pub prefix: String,
    /// The lab's own Redis, when it runs one.
    pub own_redis: Option<OwnRedis>,
    db_url: DatabaseUrl,
    auth: Auth,
    servers: Vec<JoinHandle<()>>,
}

impl Instances {
    /// Creates the database and Redis and starts the instances.
    pub async fn start(config: &LabConfig) -> anyhow::Result<Instances> {
        let room = &config.room;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_url = DatabaseUrl::parse(&config.database_url)
            .context("invalid DATABASE_URL")?
            .with_database(&format!("lab_room_{}", &id[..12]))?;
        concert_mysql::run_migrations(&db_url)
            .await
            .with_context(|| format!("creating the lab database {}", db_url.redacted()))?;
        let own_redis = if room.shared_redis {
            None
        } else {
            match OwnRedis::start().await {
                Ok(server) => Some(server),
                Err(e) => {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "no redis-server of the lab's own: using REDIS_URL (Redis command \
                         counts then include other clients)"
                    );
                    None
                }
            }
        };
        let redis_url = own_redis
            .as_ref()
            .map_or_else(|| config.redis_url.clone(), OwnRedis::url);
        let prefix = format!("lab-room-{}", &id[..12]);
        let secret = format!("lab-room-secret-{id}");
        let rules = RoomRules {
            active_limit: room.limit,
            admission: Duration::from_secs(600),
            idle: Duration::from_secs(room.idle_secs),
        };
        // the shipped strategies
        let defaults = concert_app::Strategies::default();
        let vars: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", db_url.as_str().to_owned()),
            ("REDIS_URL", redis_url.clone()),
            ("APP_REDIS_PREFIX", prefix.clone()),
            ("APP_HOST", "127.0.0.1".to_owned()),
            ("APP_PORT", "0".to_owned()),
            ("APP_JWT_SECRET", secret.clone()),
            ("APP_SEAT_STRATEGY", defaults.seats.to_string()),
            ("APP_CHARGE_STRATEGY", defaults.charge.to_string()),
            ("APP_USE_STRATEGY", defaults.spend.to_string()),
            ("APP_DB_POOL_SIZE", "16".to_owned()),
            // nothing expires in these runs; and a stopped instance's
            // sweeper would outlive it
            ("APP_SWEEP_SECONDS", "0".to_owned()),
            ("APP_WAITING_ROOM", "on".to_owned()),
            ("APP_WAITING_ROOM_STORE", "redis".to_owned()),
            ("APP_WAITING_ROOM_ACTIVE_LIMIT", room.limit.to_string()),
            ("APP_WAITING_ROOM_ADMISSION_SECONDS", "600".to_owned()),
            ("APP_WAITING_ROOM_IDLE_SECONDS", room.idle_secs.to_string()),
        ]);
        let mut urls = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..room.instances {
            let settings = Settings::from_lookup(|name| vars.get(name).cloned())?;
            let app = Application::build_with(settings, Overrides::default())
                .await
                .context("starting an app instance")?;
            urls.push(format!("http://127.0.0.1:{}", app.port()));
            servers.push(tokio::spawn(async move {
                if let Err(e) = app.run_until_stopped().await {
                    tracing::warn!(error = %format!("{e:#}"), "lab app instance stopped");
                }
            }));
        }
        let sql = Sql::connect(db_url.as_str()).await?;
        Ok(Instances {
            urls,
            sql,
            rules,
            redis_url,
            prefix,
            own_redis,
            db_url,
            auth: Auth::new(secret.as_bytes(), AuthOptions::default()),
            servers,
        })
    }

    /// A bearer token the instances accept for `user`.
    pub fn token(&self, user: UserId) -> String {
        self.auth.issue(user, Duration::from_secs(3600), false)
    }

    /// A room adapter of the lab's own on the instances' Redis and prefix
    /// (to sample the room's sizes).
    pub fn room(&self) -> anyhow::Result<RedisWaitingRoom> {
        Ok(RedisWaitingRoom::new(
            &self.redis_url,
            &self.prefix,
            self.rules,
            RedisLockSettings::default(),
        )?)
    }

    /// Redis commands executed so far, by name (own Redis only).
    pub async fn redis_calls(&self) -> Option<std::collections::BTreeMap<String, u64>> {
        match &self.own_redis {
            Some(server) => server.command_calls().await.ok(),
            None => None,
        }
    }

    /// Stops the instances, drops the database and the Redis keys (or the
    /// lab's Redis).
    pub async fn stop(self) {
        for server in &self.servers {
            server.abort();
        }
        for server in self.servers {
            let _ = server.await;
        }
        self.sql.close();
        if self.own_redis.is_none() {
            let purge = async {
                RedisLocks::connect_lazy(&self.redis_url, &self.prefix, Default::default())
                    .await?
                    .purge()
                    .await
            };
            if let Err(e) = purge.await {
                tracing::warn!(error = %e, "could not delete the lab's Redis keys");
            }
        }
        if let Err(e) = concert_mysql::drop_database(&self.db_url).await {
            tracing::warn!(error = %format!("{e:#}"), "could not drop the lab database");
        }
    }
}
