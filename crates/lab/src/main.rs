//! `lab [options]` and `lab http --base-url URL`: see `lab --help`.

use std::process::ExitCode;

use concert_lab::{LabConfig, config::USAGE, http, report};

#[tokio::main]
async fn main() -> ExitCode {
    if let Err(e) = load_dotenv() {
        eprintln!("warning: {e}");
    }
    concert_app::telemetry::init("warn", concert_app::settings::LogFormat::Text);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The lab reads DATABASE_URL / REDIS_URL like the app: environment first,
/// then `.env`.
fn load_dotenv() -> anyhow::Result<()> {
    concert_app::Settings::from_env().map(drop)
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}\n{}", http::USAGE);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("http") {
        let (config, out) = http::HttpConfig::from_args(&args[1..])?;
        let rows = http::run(&config).await?;
        println!("{}", report::markdown(&rows));
        for path in report::write(&out, &rows, "results-http.json")? {
            eprintln!("wrote {}", path.display());
        }
        return exact(&rows);
    }
    let config = LabConfig::from_args(&args)?;
    if config.scenarios.iter().all(|s| s.is_room()) {
        eprintln!(
            "lab: {:?} on {} app instances, {} concurrent requests",
            config
                .scenarios
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
            config.room.instances,
            config.room.connections
        );
    } else {
        eprintln!(
            "lab: {} repetitions of {:?}, strategies {:?}",
            config.reps,
            config
                .scenarios
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
            config
                .strategies
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
        );
    }
    let rows = concert_lab::run(&config).await?;
    println!("{}", report::markdown(&rows));
    eprintln!(
        "wrote {}/results.json and one chart per scenario (*.svg)",
        config.out_dir.display()
    );
    exact(&rows)
}

/// Fails, naming every violation, when any row's exactness check failed.
fn exact(rows: &[concert_lab::Row]) -> anyhow::Result<()> {
    let bad = concert_lab::inexact(rows);
    if bad.is_empty() {
        return Ok(());
    }
    for row in &bad {
        for violation in &row.violations {
            eprintln!(
                "EXACTNESS VIOLATED: {} {} {}: {violation}",
                row.scenario,
                row.target.as_deref().unwrap_or(""),
                row.strategy
            );
        }
    }
    anyhow::bail!("{} rows broke an invariant", bad.len())
}
