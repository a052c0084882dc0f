//! Database creation and the embedded migrations (`migrations/` at the
//! workspace root, compiled into the binary).

use anyhow::{Context, anyhow, bail};
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// Every migration of the workspace, embedded at compile time.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// A `mysql://` URL split into the server part and the database name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseUrl {
    /// The same URL without the database name (query string kept).
    pub server: String,
    pub name: String,
}

impl DatabaseUrl {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("mysql://")
            .ok_or_else(|| anyhow!("database URL must start with mysql://"))?;
        let (main, query) = match rest.split_once('?') {
            Some((main, query)) => (main, Some(query)),
            None => (rest, None),
        };
        let (host, name) = main
            .split_once('/')
            .ok_or_else(|| anyhow!("database URL names no database (mysql://host/NAME)"))?;
        if name.is_empty() {
            bail!("database URL names no database (mysql://host/NAME)");
        }
        let valid = name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'-');
        if !valid {
            bail!("database name {name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, _, $ or -");
        }
        let mut server = format!("mysql://{host}/");
        if let Some(query) = query {
            server.push('?');
            server.push_str(query);
        }
        Ok(Self {
            server,
            name: name.to_owned(),
        })
    }
}

async fn server_execute(url: &str, make_sql: impl FnOnce(&str) -> String) -> anyhow::Result<()> {
    let target = DatabaseUrl::parse(url)?;
    let mut conn = AsyncMysqlConnection::establish(&target.server)
        .await
        .with_context(|| format!("connecting to the MySQL server of {:?}", target.name))?;
    let sql = make_sql(&target.name);
    conn.batch_execute(&sql)
        .await
        .with_context(|| format!("running {sql:?}"))?;
    Ok(())
}

/// Connects to the server named by `url` (without selecting the database)
/// and creates the database if it does not exist yet, in `utf8mb4`.
/// Idempotent.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    server_execute(url, |name| {
        format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
    })
    .await
}

/// Drops the database named by `url` if it exists. Idempotent.
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    server_execute(url, |name| format!("DROP DATABASE IF EXISTS `{name}`")).await
}

/// Runs `work` with a synchronous diesel connection (diesel-async's
/// `AsyncConnectionWrapper`) on a blocking thread, as diesel's migration
/// harness requires.
async fn with_sync_connection<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut AsyncConnectionWrapper<AsyncMysqlConnection>) -> anyhow::Result<T>
    + Send
    + 'static,
) -> anyhow::Result<T> {
    let url = url.to_owned();
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
/// not applied yet. Returns when the schema is current. Idempotent.
pub async fn run_migrations(url: &str) -> anyhow::Result<()> {
    create_database_if_missing(url).await?;
    let applied = with_sync_connection(url, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| anyhow!(e).context("running migrations"))
    })
    .await?;
    tracing::info!(applied, "database migrations are current");
    Ok(())
}

/// Reverts every applied migration (runs each `down.sql`, newest first):
/// every table of the schema is gone afterwards, the database itself stays.
pub async fn revert_all_migrations(url: &str) -> anyhow::Result<()> {
    let reverted = with_sync_connection(url, |conn| {
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| anyhow!(e).context("reverting migrations"))
    })
    .await?;
    tracing::info!(reverted, "database migrations reverted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_server_and_name() {
        assert_eq!(
            DatabaseUrl::parse("mysql://root@127.0.0.1:3306/concert").unwrap(),
            DatabaseUrl {
                server: "mysql://root@127.0.0.1:3306/".into(),
                name: "concert".into()
            }
        );
        assert_eq!(
            DatabaseUrl::parse("mysql://u:p@db/test_ab12?prefer_socket=false").unwrap(),
            DatabaseUrl {
                server: "mysql://u:p@db/?prefer_socket=false".into(),
                name: "test_ab12".into()
            }
        );
    }

    #[test]
    fn bad_urls_and_names_are_refused() {
        for url in [
            "postgres://h/db",
            "mysql://h",
            "mysql://h/",
            "mysql://h/a`b",
            "mysql://h/a b",
            "mysql://h/a/b",
        ] {
            assert!(DatabaseUrl::parse(url).is_err(), "{url}");
        }
        assert!(DatabaseUrl::parse(&format!("mysql://h/{}", "x".repeat(65))).is_err());
    }
}
