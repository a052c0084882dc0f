//! Database creation and the embedded migrations (`migrations/` at the
//! workspace root, compiled into the binary).

use anyhow::{Context, anyhow};
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::url::DatabaseUrl;

/// Every migration of the workspace, embedded at compile time.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

async fn server_execute(
    url: &DatabaseUrl,
    make_sql: impl FnOnce(&str) -> String,
) -> anyhow::Result<()> {
    let mut conn = AsyncMysqlConnection::establish(&url.server())
        .await
        .with_context(|| format!("connecting to the MySQL server of {url}"))?;
    let sql = make_sql(url.name());
    conn.batch_execute(&sql)
        .await
        .with_context(|| format!("running {sql:?}"))?;
    Ok(())
}

/// Connects to the server named by `url` (without selecting the database)
/// and creates the database if it does not exist yet, in `utf8mb4`.
/// Idempotent.
pub async fn create_database_if_missing(url: &DatabaseUrl) -> anyhow::Result<()> {
    server_execute(url, |name| {
        format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
    })
    .await
}

/// Drops the database named by `url` if it exists. Idempotent.
pub async fn drop_database(url: &DatabaseUrl) -> anyhow::Result<()> {
    server_execute(url, |name| format!("DROP DATABASE IF EXISTS `{name}`")).await
}

/// Runs `work` with a synchronous diesel connection (diesel-async's
/// `AsyncConnectionWrapper`) on a blocking thread, as diesel's migration
/// harness requires.
async fn with_sync_connection<T: Send + 'static>(
    url: &DatabaseUrl,
    work: impl FnOnce(&mut AsyncConnectionWrapper<AsyncMysqlConnection>) -> anyhow::Result<T>
    + Send
    + 'static,
) -> anyhow::Result<T> {
    let url = url.as_str().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn =
            <AsyncConnectionWrapper<AsyncMysqlConnection> as Connection>::establish(&url)
                .context("connecting to the database for migrations")?;
        work(&mut conn)
    })
    .await
    .context("the migration task failed")?
}

/// Creates the database if missing, then applies every embedded migration
/// not applied yet; returns how many it applied (0: the schema was
/// current). Idempotent.
pub async fn run_migrations(url: &DatabaseUrl) -> anyhow::Result<usize> {
    create_database_if_missing(url).await?;
    let applied = with_sync_connection(url, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| anyhow!(e).context("running migrations"))
    })
    .await?;
    tracing::info!(applied, "database migrations are current");
    Ok(applied)
}

/// Reverts every applied migration (runs each `down.sql`, newest first):
/// every table of the schema is gone afterwards, the database itself stays.
/// Returns how many it reverted.
pub async fn revert_all_migrations(url: &DatabaseUrl) -> anyhow::Result<usize> {
    let reverted = with_sync_connection(url, |conn| {
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| anyhow!(e).context("reverting migrations"))
    })
    .await?;
    tracing::info!(reverted, "database migrations reverted");
    Ok(reverted)
}
