//! The concurrency lab: reproduces the brief's experiment and measures every
//! strategy side by side with what the database itself can do (raw SQL
//! baselines in the same run), with an exactness check on every run.

pub mod config;
pub mod env;
pub mod events;
pub mod http;
pub mod progress;
pub mod report;
pub mod row;
pub mod scenarios;

pub use config::{LabConfig, Scenario};
pub use row::Row;

/// Runs the configured scenarios on a fresh database and Redis prefix,
/// writes `results.json` and the charts into `config.out_dir`, and returns
/// one row per (scenario, strategy[, target]). A run that breaks an
/// invariant (balance/history mismatch, two holders of a seat) makes its
/// row inexact (`exact: false`, the `violations` named); [`inexact`] lists
/// them, and the `lab` binary exits non-zero on any.
pub async fn run(config: &LabConfig) -> anyhow::Result<Vec<Row>> {
    let env = env::LabEnv::create(config).await?;
    let result = scenarios::run_all(&env, config).await;
    env.destroy().await;
    let rows = result?;
    for path in report::write(&config.out_dir, &rows, "results.json")? {
        tracing::info!(path = %path.display(), "wrote");
    }
    Ok(rows)
}

/// The rows whose exactness checks failed.
pub fn inexact(rows: &[Row]) -> Vec<&Row> {
    rows.iter().filter(|r| !r.exact).collect()
}
