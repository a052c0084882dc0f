//! What a run's figures depend on, recorded beside them in `results.json`:
//! when, which commit, on what machine, against which servers, with which
//! parameters.

use serde_json::{Value, json};

/// The metadata of a run started at `started` with `parameters` (see
/// [`crate::LabConfig::parameters`]); `mariadb` is the server's version
/// when known.
pub fn collect(
    started: chrono::DateTime<chrono::Utc>,
    parameters: Value,
    mariadb: Option<String>,
) -> Value {
    json!({
        "date": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "commit": commit(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": machine(),
        "servers": {"mariadb": mariadb},
        "parameters": parameters,
    })
}

/// The commit checked out where the lab runs (`-dirty` when the work tree
/// has changes), or null outside a git work tree.
fn commit() -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            Value::String(if dirty { format!("{head}-dirty") } else { head })
        }
        None => Value::Null,
    }
}

/// Cores, CPU model, memory, OS.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": model,
        "memoryGib": memory_gib,
        "os": format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_names_date_commit_machine_and_parameters() {
        let started = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let meta = collect(started, json!({"reps": 5}), Some("10.11.6-MariaDB".into()));
        assert_eq!(meta["date"], "2027-01-15T08:00:00Z");
        assert_eq!(meta["parameters"]["reps"], 5);
        assert_eq!(meta["servers"]["mariadb"], "10.11.6-MariaDB");
        assert!(meta["machine"]["cores"].as_u64().unwrap() >= 1);
        assert!(meta.get("commit").is_some());
        assert!(meta["build"].is_string());
    }
}
