//! [`DatabaseUrl`]: a `mysql://` URL naming one database, parsed once.

use std::fmt;

use anyhow::{Context, anyhow, bail};

/// A `mysql://[user[:password]@]host[:port]/NAME[?options]` URL, parsed once
/// with the `url` crate. It always names a database whose name is 1 to 64
/// characters of `A-Z a-z 0-9 _ $ -` (so it can be quoted safely in DDL).
///
/// [`fmt::Display`] and [`fmt::Debug`] print [`DatabaseUrl::redacted`]: the
/// password never reaches a log. [`DatabaseUrl::as_str`] is the full URL, for
/// connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: url::Url,
    name: String,
}

impl DatabaseUrl {
    /// Parses and checks `url`: scheme `mysql`, a host, and a valid database
    /// name as its only path segment.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).context("database URL is not a URL")?;
        if parsed.scheme() != "mysql" {
            bail!("database URL must start with mysql://");
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            bail!("database URL names no host (mysql://HOST/name)");
        }
        let name = parsed
            .path()
            .strip_prefix('/')
            .filter(|name| !name.is_empty())
            .ok_or_else(|| anyhow!("database URL names no database (mysql://host/NAME)"))?;
        check_name(name)?;
        let name = name.to_owned();
        Ok(Self { url: parsed, name })
    }

    /// The URL of database `name` on the server of `server`, a `mysql://`
    /// URL with or without a database (its database, if any, is replaced).
    pub fn on_server(server: &str, name: &str) -> anyhow::Result<Self> {
        let mut parsed = url::Url::parse(server).context("database URL is not a URL")?;
        check_name(name)?;
        parsed.set_path(&format!("/{name}"));
        Self::parse(parsed.as_str())
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same URL without the database (`mysql://host:port/?options`),
    /// for statements about databases themselves.
    pub fn server(&self) -> String {
        let mut server = self.url.clone();
        server.set_path("/");
        server.into()
    }

    /// The same server, user and options with database `name` instead.
    pub fn with_database(&self, name: &str) -> anyhow::Result<DatabaseUrl> {
        check_name(name)?;
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        Ok(Self {
            url,
            name: name.to_owned(),
        })
    }

    /// The URL with its password (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            // Cannot fail: the URL has a host (checked by `parse`).
            let _ = url.set_password(Some("***"));
        }
        url.into()
    }

    /// The full URL, password included: for connecting only.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'-');
    if !valid {
        bail!("database name {name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, _, $ or -");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_its_database_and_server() {
        let url = DatabaseUrl::parse("mysql://root@127.0.0.1:3306/concert").unwrap();
        assert_eq!(url.name(), "concert");
        assert_eq!(url.server(), "mysql://root@127.0.0.1:3306/");
        assert_eq!(url.as_str(), "mysql://root@127.0.0.1:3306/concert");
        assert_eq!(url.redacted(), "mysql://root@127.0.0.1:3306/concert");

        let url = DatabaseUrl::parse("mysql://u:p%40ss@db/test_ab12?prefer_socket=false").unwrap();
        assert_eq!(url.name(), "test_ab12");
        assert_eq!(url.server(), "mysql://u:p%40ss@db/?prefer_socket=false");
        assert_eq!(
            url.with_database("other").unwrap().as_str(),
            "mysql://u:p%40ss@db/other?prefer_socket=false"
        );
        assert_eq!(url.with_database("other").unwrap().name(), "other");
    }

    #[test]
    fn the_password_never_prints() {
        let url = DatabaseUrl::parse("mysql://app:s3cret@db:3307/concert?x=1").unwrap();
        assert_eq!(url.redacted(), "mysql://app:***@db:3307/concert?x=1");
        assert_eq!(url.to_string(), url.redacted());
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!url.server().is_empty());
        assert_eq!(url.as_str(), "mysql://app:s3cret@db:3307/concert?x=1");
    }

    #[test]
    fn a_database_on_a_server() {
        let url = DatabaseUrl::on_server("mysql://root@127.0.0.1:3306", "test_1").unwrap();
        assert_eq!(url.as_str(), "mysql://root@127.0.0.1:3306/test_1");
        let url = DatabaseUrl::on_server("mysql://root@h/old?a=b", "new").unwrap();
        assert_eq!(url.as_str(), "mysql://root@h/new?a=b");
        assert!(DatabaseUrl::on_server("mysql://root@h", "a b").is_err());
    }

    #[test]
    fn bad_urls_and_names_are_refused() {
        for url in [
            "postgres://h/db",
            "mysql://h",
            "mysql://h/",
            "mysql:///db",
            "mysql://h/a`b",
            "mysql://h/a b",
            "mysql://h/a%20b",
            "mysql://h/a/b",
            "not a url",
        ] {
            assert!(DatabaseUrl::parse(url).is_err(), "{url}");
        }
        assert!(DatabaseUrl::parse(&format!("mysql://h/{}", "x".repeat(65))).is_err());
        assert!(DatabaseUrl::parse(&format!("mysql://h/{}", "x".repeat(64))).is_ok());
        let url = DatabaseUrl::parse("mysql://h/db").unwrap();
        assert!(url.with_database("").is_err());
        assert!(url.with_database("x;DROP").is_err());
        assert_eq!("mysql://h/db".parse::<DatabaseUrl>().unwrap(), url);
    }
}
