//! `lab [options]` and `lab http --base-url URL`: see `lab --help`.

use std::process::ExitCode;

use anyhow::Context;
use concert_lab::{LabConfig, Results, config::usage, http, meta, report};

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
        println!(
            "{}\n{}\n{CHART_USAGE}\n{}",
            usage(),
            http::USAGE,
            concert_lab::chaos::USAGE
        );
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("chaos") {
        return concert_lab::chaos::main(&args[1..]).await;
    }
    if args.first().map(String::as_str) == Some("http") {
        let (config, out) = http::HttpConfig::from_args(&args[1..])?;
        let started = chrono::Utc::now();
        let rows = http::run(&config).await?;
        println!("{}", report::markdown(&rows));
        let parameters = serde_json::json!({
            "label": config.label,
            "raceUsers": config.race_users,
            "stormSeats": config.storm_seats,
            "steadyOps": config.steady_ops,
            "steadyWorkers": config.steady_workers,
        });
        let results = Results {
            run: meta::collect(started, parameters, None),
            rows,
        };
        for path in report::write(&out, &results, "results-http.json")? {
            eprintln!("wrote {}", path.display());
        }
        return exact(&results.rows);
    }
    if args.first().map(String::as_str) == Some("chart") {
        return chart(&args[1..]);
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
    let results = concert_lab::run(&config).await?;
    println!("{}", report::markdown(&results.rows));
    eprintln!(
        "audit after the run: all {} invariants of the stored data hold",
        concert_mysql::Invariant::ALL.len()
    );
    eprintln!(
        "wrote {}/results.json (with the run's date, commit, machine and parameters) and one \
         chart per scenario (*.svg)",
        config.out_dir.display()
    );
    exact(&results.rows)
}

/// `lab chart --from FILE [--out DIR]`: draws the charts of a results file
/// again (e.g. after a change to the charts), without measuring anything.
fn chart(args: &[String]) -> anyhow::Result<()> {
    let mut from = None;
    let mut out = None;
    let mut date = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{CHART_USAGE}"))?;
        match flag.as_str() {
            "--from" => from = Some(std::path::PathBuf::from(value)),
            "--out" => out = Some(std::path::PathBuf::from(value)),
            "--date" => date = Some(value.clone()),
            other => anyhow::bail!("unknown option {other:?}\n{CHART_USAGE}"),
        }
    }
    let from = from.with_context(|| format!("--from is required\n{CHART_USAGE}"))?;
    let out = out.unwrap_or_else(|| from.parent().map(Into::into).unwrap_or_default());
    let mut results = Results::read(&from)?;
    if results.run.is_null() {
        // Written before runs recorded their parameters: those of a plain
        // `make lab` (the defaults).
        eprintln!(
            "{} has no run metadata: describing the lab's default parameters",
            from.display()
        );
        results.run = serde_json::json!({"parameters": LabConfig::default().parameters()});
    }
    if let Some(date) = date {
        results.run["date"] = serde_json::Value::String(date);
    }
    for path in report::charts(&out, &results)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

const CHART_USAGE: &str = "usage: lab chart --from results.json [--out DIR] [--date YYYY-MM-DD]
                          draw the charts of a results file again (no measurement)";

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
