//! `app serve | migrate | seed | token --user N [--admin] | audit | events ...`:
//! see `app --help`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use concert_app::cli::{self, Command, USAGE};
use concert_app::{Application, Infrastructure, Overrides, Settings, events, seed, telemetry};
use concert_domain::{Stream, UserId};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let command = cli::parse(args)?;
    if command == Command::Help {
        println!("{USAGE}");
        return Ok(());
    }
    let settings = Settings::from_env()?;
    telemetry::init("info,actix_server=warn", settings.log_format);
    match command {
        Command::Help => Ok(()),
        Command::Serve { banner } => {
            let app = Application::build(settings.clone()).await?;
            if banner {
                print_banner(&settings, app.port());
            }
            app.run_until_stopped().await
        }
        Command::Migrate => {
            let url = &settings.database.url;
            let applied = concert_mysql::run_migrations(url)
                .await
                .context("running migrations")?;
            match applied {
                0 => println!("database {} is up to date", url.redacted()),
                n => println!("applied {n} migration(s) to {}", url.redacted()),
            }
            Ok(())
        }
        Command::Seed => {
            let infra = Infrastructure::connect(&settings, &Overrides::default()).await?;
            let services = infra.services(&settings)?;
            let report = seed::seed_demo(&services.catalogue, chrono::Utc::now())
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
        Command::Audit => concert_app::audit::command(&settings).await,
        Command::Token { user, admin } => {
            if settings.auth.secret_is_default {
                eprintln!(
                    "warning: APP_JWT_SECRET is not set: signing with the development secret"
                );
            }
            println!("{}", token(&settings, user, admin));
            Ok(())
        }
        Command::EventsTail {
            stream,
            from_start,
            count,
        } => {
            let streams = stream.map_or(Stream::ALL.to_vec(), |s| vec![s]);
            let mut out = std::io::stdout();
            events::commands::tail(&settings, &streams, from_start, count, &mut out).await
        }
        Command::EventsStatus => {
            print!("{}", events::commands::status(&settings).await?);
            Ok(())
        }
        Command::EventsReplay { since } => {
            let n = events::commands::replay(&settings, since).await?;
            println!("{n} event(s) marked for publication again; a running relay publishes them");
            Ok(())
        }
    }
}

fn token(settings: &Settings, user: UserId, admin: bool) -> String {
    concert_app::auth(settings).issue(user, Duration::from_secs(24 * 3600), admin)
}

/// How to use the demo, printed once the port is bound (so it never
/// describes a server that failed to start).
fn print_banner(settings: &Settings, port: u16) {
    let base = format!("http://{}:{port}", settings.http.host);
    let user = token(settings, UserId::from(1), false);
    let admin = token(settings, UserId::from(1), true);
    let room = room_banner(settings, &base, &user);
    println!(
        "
  Concert reservation service
  ---------------------------
  API         {base}/api/v1/concerts
  Swagger UI  {base}/swagger-ui/
  OpenAPI     {base}/api-docs/openapi.json
  Metrics     {base}/metrics
  Demo token  (user 1, valid 24 h; more with: app token --user N)
    {user}
  Admin token (user 1 with the admin role: app token --user 1 --admin)
    {admin}

  Try it:
    curl -s {base}/api/v1/concerts
    curl -s -H \"Authorization: Bearer {user}\" -H 'Content-Type: application/json' \\
         -d '{{\"amount\":100000}}' {base}/api/v1/points/charge
    curl -s -H \"Authorization: Bearer {admin}\" -H 'Content-Type: application/json' \\
         -d '{{\"title\":\"My concert\"}}' {base}/api/v1/admin/concerts
{room}
  Ctrl-C stops the server.
"
    );
}

/// The banner's waiting-room lines (empty when the room is off).
fn room_banner(settings: &Settings, base: &str, user: &str) -> String {
    let room = &settings.waiting_room;
    if !room.on {
        return String::new();
    }
    format!(
        "
  Waiting room ON: {} admitted at once per concert, for {} s; reserve and pay need admission.
    curl -s -X POST -H \"Authorization: Bearer {user}\" {base}/api/v1/concerts/1/waiting-room
",
        room.rules.active_limit,
        room.rules.admission.as_secs()
    )
}
