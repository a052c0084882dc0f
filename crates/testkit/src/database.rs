//! A fresh database per test.

use concert_mysql::DatabaseUrl;

/// The MySQL server tests use: `TEST_DATABASE_URL`, else `DATABASE_URL`,
/// else `mysql://root@127.0.0.1:3306` (any database the URL names is
/// ignored: [`TestDatabase::create`] makes its own).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// One test's own database, `test_<uuid>` on the [`server_url`] server:
/// created and migrated by [`TestDatabase::create`], dropped when the value
/// is dropped (on a thread of its own: `Drop` cannot await and may run
/// outside any runtime).
#[derive(Debug)]
pub struct TestDatabase {
    url: DatabaseUrl,
}

impl TestDatabase {
    /// Creates and migrates a fresh database.
    pub async fn create() -> anyhow::Result<TestDatabase> {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let url = DatabaseUrl::on_server(&server_url(), &name)?;
        // From here on, Drop removes whatever was created.
        let db = TestDatabase { url };
        concert_mysql::run_migrations(&db.url).await.map_err(|e| {
            e.context(format!(
                "cannot create the test database {name}: is MariaDB running? \
                 try `make services`, or set TEST_DATABASE_URL"
            ))
        })?;
        Ok(db)
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// `test_<uuid>`.
    pub fn name(&self) -> &str {
        self.url.name()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(concert_mysql::drop_database(&url))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e:#}", self.url),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.url),
        }
    }
}
