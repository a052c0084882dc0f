//! The chaos suite's world: its own `mariadbd` and `redis-server` (or three
//! Redis masters for RedLock) on free ports, a delay proxy in front of each,
//! and N instances of the `app` binary as real OS processes, all sharing
//! them. Nothing of the machine's own services is touched.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use concert_app::strategies::LockAt;
use concert_app::{Strategies, StrategyName};
use concert_domain::ScheduleId;
use concert_mysql::DatabaseUrl;
use concert_testkit::{OwnMariadb, OwnRedis, Sql, free_port};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use super::proxy::DelayProxy;

/// The secret the instances verify tokens with (and the suite signs with).
pub const SECRET: &str = "chaos-suite-secret-of-at-least-32-bytes!";

/// How the instances are configured.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub app_bin: PathBuf,
    pub instances: usize,
    /// `APP_SEAT_STRATEGY` (a RedLock strategy starts three Redis masters).
    pub seat_strategy: StrategyName,
    /// Lock lease and wait (short, so a Redis pause outlives the lease).
    pub lease: Duration,
    pub lock_wait: Duration,
    /// `APP_DB_STATEMENT_TIMEOUT_MS`.
    pub statement_timeout: Duration,
    /// Schedules of 50 seats created for the load.
    pub schedules: usize,
    /// Where the instances' logs go.
    pub log_dir: PathBuf,
    /// Extra environment for every instance.
    pub env: Vec<(String, String)>,
}

/// One running instance of the app.
pub struct AppProcess {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl AppProcess {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The servers, proxies and instances of one chaos run.
pub struct Cluster {
    pub config: ClusterConfig,
    pub maria: OwnMariadb,
    pub redis: Vec<OwnRedis>,
    pub maria_proxy: DelayProxy,
    pub redis_proxies: Vec<DelayProxy>,
    pub apps: Vec<AppProcess>,
    /// The database, directly (not through the proxy): set-up and audit.
    pub db_url: DatabaseUrl,
    pub schedules: Vec<ScheduleId>,
    /// A schedule the recovery probes use, apart from the load's.
    pub probe_schedule: ScheduleId,
}

impl Cluster {
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Cluster> {
        ensure!(
            config.app_bin.exists(),
            "no app binary at {} (build it: cargo build -p concert-app)",
            config.app_bin.display()
        );
        std::fs::create_dir_all(&config.log_dir)?;
        let maria = OwnMariadb::start().await?;
        let masters = if config.seat_strategy.lock_at() == Some(LockAt::RedLock) {
            3
        } else {
            1
        };
        let mut redis = Vec::with_capacity(masters);
        for _ in 0..masters {
            redis.push(OwnRedis::start().await?);
        }
        let maria_proxy = DelayProxy::start(maria.port()).await?;
        let mut redis_proxies = Vec::with_capacity(masters);
        for r in &redis {
            redis_proxies.push(DelayProxy::start(r.port()).await?);
        }
        let db_url = DatabaseUrl::parse(&maria.url("chaos"))?;
        concert_mysql::create_database_if_missing(&db_url).await?;
        concert_mysql::run_migrations(&db_url).await?;
        let sql = Sql::connect(db_url.as_str()).await?;
        let concert = sql.create_concert("Chaos night").await?;
        let mut schedules = Vec::with_capacity(config.schedules);
        for i in 0..=config.schedules {
            let starts = Utc::now() + chrono::Duration::days(30 + i as i64);
            schedules.push(sql.create_schedule(concert, starts, |_| 100).await?);
        }
        sql.close();
        let probe_schedule = schedules.pop().context("a probe schedule")?;
        let mut cluster = Cluster {
            config,
            maria,
            redis,
            maria_proxy,
            redis_proxies,
            apps: Vec::new(),
            db_url,
            schedules,
            probe_schedule,
        };
        for i in 0..cluster.config.instances {
            let port = free_port();
            let app = cluster.spawn_app(i, port).await?;
            cluster.apps.push(app);
        }
        Ok(cluster)
    }

    /// The instances' environment.
    fn env(&self, port: u16) -> Vec<(String, String)> {
        let proxied_db = format!("mysql://root@127.0.0.1:{}/chaos", self.maria_proxy.port);
        let defaults = Strategies::default();
        let mut env = vec![
            ("DATABASE_URL".to_owned(), proxied_db),
            ("APP_HOST".to_owned(), "127.0.0.1".to_owned()),
            ("APP_PORT".to_owned(), port.to_string()),
            ("APP_JWT_SECRET".to_owned(), SECRET.to_owned()),
            (
                "APP_SEAT_STRATEGY".to_owned(),
                self.config.seat_strategy.to_string(),
            ),
            (
                "APP_CHARGE_STRATEGY".to_owned(),
                defaults.charge.to_string(),
            ),
            ("APP_USE_STRATEGY".to_owned(), defaults.spend.to_string()),
            (
                "APP_LOCK_LEASE_MS".to_owned(),
                self.config.lease.as_millis().to_string(),
            ),
            (
                "APP_LOCK_WAIT_MS".to_owned(),
                self.config.lock_wait.as_millis().to_string(),
            ),
            (
                "APP_DB_STATEMENT_TIMEOUT_MS".to_owned(),
                self.config.statement_timeout.as_millis().to_string(),
            ),
            ("APP_DB_WAIT_MS".to_owned(), "2000".to_owned()),
            ("APP_DB_POOL_SIZE".to_owned(), "16".to_owned()),
            ("APP_WORKERS".to_owned(), "2".to_owned()),
            ("APP_SWEEP_SECONDS".to_owned(), "2".to_owned()),
            ("APP_SHUTDOWN_SECONDS".to_owned(), "3".to_owned()),
            ("APP_REDIS_PREFIX".to_owned(), "chaos".to_owned()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        let urls: Vec<String> = self
            .redis_proxies
            .iter()
            .map(|p| format!("redis://127.0.0.1:{}", p.port))
            .collect();
        env.push(("REDIS_URL".to_owned(), urls[0].clone()));
        if urls.len() > 1 {
            env.push(("APP_REDLOCK_URLS".to_owned(), urls.join(",")));
        }
        env.extend(self.config.env.iter().cloned());
        env
    }

    async fn spawn_app(&self, index: usize, port: u16) -> anyhow::Result<AppProcess> {
        let log = self.config.log_dir.join(format!("app-{index}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(&self.config.app_bin)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env(port))
            .current_dir(&self.config.log_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.config.app_bin.display()))?;
        let app = AppProcess {
            child: Some(child),
            port,
            log,
        };
        wait_live(&app).await?;
        Ok(app)
    }

    /// `SIGKILL`s instance `index` (a crash mid-request).
    pub async fn kill_app(&mut self, index: usize) {
        if let Some(mut child) = self.apps[index].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts instance `index` again on its port; returns once it is live.
    pub async fn restart_app(&mut self, index: usize) -> anyhow::Result<()> {
        self.kill_app(index).await;
        let port = self.apps[index].port;
        let app = self.spawn_app(index, port).await?;
        self.apps[index] = app;
        Ok(())
    }

    /// Runs `app <args>` against the database directly; returns its exit
    /// status and output.
    pub async fn app_command(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let output = Command::new(&self.config.app_bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.db_url.as_str())
            .env("APP_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .current_dir(&self.config.log_dir)
            .output()
            .await
            .with_context(|| format!("running app {}", args.join(" ")))?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok((output.status.success(), text))
    }

    /// Stops every instance (SIGTERM, then SIGKILL after the shutdown
    /// time).
    pub async fn stop(&mut self) {
        for app in &mut self.apps {
            if let Some(mut child) = app.child.take() {
                if let Some(pid) = child.id() {
                    let _ = concert_testkit::servers::signal(pid, "TERM");
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// Waits until the instance answers `/health/live` (at most 30 s).
async fn wait_live(app: &AppProcess) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("{}/health/live", app.base_url());
    while Instant::now() < deadline {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&app.log).unwrap_or_default();
    bail!(
        "the app on port {} did not start; its log:\n{}",
        app.port,
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    )
}
