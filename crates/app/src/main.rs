//! `app serve | migrate | seed | token --user N`

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use concert_app::{Application, Settings, telemetry};
use concert_domain::UserId;

const USAGE: &str = "usage: app <command>

commands:
  serve            run the HTTP service (the default)
  migrate          create the database if missing and run pending migrations
  seed             load the demo catalogue (idempotent)
  token --user N   print a bearer token for user N (valid 24 hours)

Settings come from the environment or a .env file: see README.md.";

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init("info,actix_server=warn");
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let command = args.first().map(String::as_str).unwrap_or("serve");
    if matches!(command, "-h" | "--help" | "help") {
        println!("{USAGE}");
        return Ok(());
    }
    let settings = Settings::from_env()?;
    match (command, &args[1.min(args.len())..]) {
        ("serve", []) => {
            let app = Application::build(settings).await?;
            app.run_until_stopped().await
        }
        ("migrate", []) => {
            concert_mysql::run_migrations(&settings.database_url)
                .await
                .context("running migrations")?;
            println!("migrations applied to {}", redact(&settings.database_url));
            Ok(())
        }
        ("seed", []) => {
            let db = concert_mysql::Db::connect(
                &settings.database_url,
                concert_app::pool_options(&settings),
            )
            .await?;
            let report = concert_mysql::seed_demo(&db, chrono::Utc::now())
                .await
                .context("seeding the demo catalogue")?;
            println!(
                "demo catalogue ready: {} concerts ({} new), {} new schedules",
                report.concerts.len(),
                report.concerts_created,
                report.schedules_created
            );
            Ok(())
        }
        ("token", [flag, user]) if flag == "--user" => {
            let user = user
                .parse::<i64>()
                .ok()
                .and_then(|n| UserId::new(n).ok())
                .context("--user takes a positive integer")?;
            if settings.jwt_secret_is_default {
                eprintln!(
                    "warning: APP_JWT_SECRET is not set: signing with the development secret"
                );
            }
            let auth = concert_http::Auth::new(settings.jwt_secret.expose().as_bytes());
            println!("{}", auth.issue(user, Duration::from_secs(24 * 3600)));
            Ok(())
        }
        _ => bail!("unknown command {:?}\n\n{USAGE}", args.join(" ")),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(
            redact("mysql://root:pw@127.0.0.1:3306/concert"),
            "mysql://root@127.0.0.1:3306/concert"
        );
        assert_eq!(redact("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
