//! The concurrency lab: reproduces the brief's experiment and measures every
//! strategy side by side with what the database itself can do (raw SQL
//! baselines in the same run), with an exactness check on every run and
//! the audit of the stored data's invariants after it.

pub mod chaos;
pub mod config;
pub mod env;
pub mod events;
pub mod http;
pub mod meta;
pub mod progress;
pub mod report;
pub mod room;
pub mod row;
pub mod scenarios;

pub use config::{LabConfig, Scenario};
pub use report::Results;
pub use row::Row;

/// Runs the configured scenarios on a fresh database and Redis prefix,
/// then audits the database (`app audit`'s invariants), writes
/// `results.json` (the run's metadata and the rows) and the charts into
/// `config.out_dir`, drops the database and the Redis keys, and returns
/// the results. The waiting-room scenarios run on app instances of their
/// own (`crate::room`). A run that breaks an invariant (balance/history
/// mismatch, two holders of a seat) makes its row inexact (`exact: false`,
/// the `violations` named); [`inexact`] lists them, and the `lab` binary
/// exits non-zero on any. An audit violation fails the run, naming every
/// violation (after the results are written).
pub async fn run(config: &LabConfig) -> anyhow::Result<Results> {
    let started = chrono::Utc::now();
    let (room, classic): (Vec<Scenario>, Vec<Scenario>) =
        config.scenarios.iter().partition(|s| s.is_room());
    let mut rows = Vec::new();
    let mut violations = Vec::new();
    let mut mariadb = None;
    let mut redis_prefix = None;
    if !classic.is_empty() {
        let classic = LabConfig {
            scenarios: classic,
            ..config.clone()
        };
        let env = env::LabEnv::create(&classic).await?;
        mariadb = env.sql.server_version().await.ok();
        let result = scenarios::run_all(&env, &classic).await;
        let audit = concert_mysql::audit(&env.db).await;
        redis_prefix = Some(env.redis_prefix());
        env.destroy().await;
        rows = result?;
        violations = audit?;
    }
    for scenario in room {
        rows.extend(room::run(config, scenario).await?);
    }
    let mut run = meta::collect(started, config.parameters(), mariadb);
    if let Some(prefix) = redis_prefix {
        run["redisPrefix"] = serde_json::Value::String(prefix);
    }
    let results = Results { run, rows };
    for path in report::write(&config.out_dir, &results, "results.json")? {
        tracing::info!(path = %path.display(), "wrote");
    }
    if !violations.is_empty() {
        let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "the audit after the run found {} violation(s):\n{}",
            violations.len(),
            listed.join("\n")
        );
    }
    Ok(results)
}

/// The rows whose exactness checks failed.
pub fn inexact(rows: &[Row]) -> Vec<&Row> {
    rows.iter().filter(|r| !r.exact).collect()
}
