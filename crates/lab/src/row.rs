//! One result row, and how repetitions are summarised into it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one repetition measured.
#[derive(Debug, Clone, Default)]
pub struct Rep {
    pub tasks: u64,
    pub successes: u64,
    /// Failures by kind (`SeatUnavailable`, `Conflict`, `LockTimeout`, ...).
    pub failures: BTreeMap<String, u64>,
    pub final_balance: Option<u64>,
    /// Lock acquisition attempts for lock-based strategies, repository
    /// attempts otherwise.
    pub attempts: u64,
    /// Optimistic conflicts that were retried.
    pub retries: u64,
    pub ms: f64,
    /// Latencies of single operations, milliseconds (HTTP mode).
    pub latencies: Vec<f64>,
    /// Status code counts (HTTP mode).
    pub statuses: BTreeMap<String, u64>,
    /// What the exactness check found wrong (empty: exact).
    pub violations: Vec<String>,
    /// Seat races: seats that two winners were answered, or that storage
    /// holds twice (must be 0).
    pub held_twice: Option<u64>,
}

/// A row of the results table and of `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub scenario: String,
    pub strategy: String,
    /// `raw`, `service` or `http`.
    pub layer: String,
    /// `hot-row` / `distinct-rows` for sustained runs, else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub tasks: u64,
    pub reps: u64,
    /// Counts below come from the median-time repetition.
    pub successes: u64,
    pub failures: BTreeMap<String, u64>,
    pub final_balance: Option<u64>,
    pub attempts: u64,
    pub retries: u64,
    pub ms_median: f64,
    pub ms_min: f64,
    pub ms_max: f64,
    /// Successful operations per second at the median time.
    pub ops_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<String, u64>,
    /// Every repetition passed the exactness check.
    pub exact: bool,
    /// What the exactness checks found wrong, over all repetitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
    /// Seat races: the most seats held twice in any repetition (must be 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_twice: Option<u64>,
    /// Further measured figures by name (the waiting-room scenarios:
    /// ratios to the same run's baseline, Redis commands per request, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, f64>,
}

impl Row {
    /// Summarises repetitions: time as median/min/max, counts from the
    /// median-time repetition, latency percentiles over all repetitions.
    pub fn summarise(
        scenario: &str,
        strategy: &str,
        layer: &str,
        target: Option<&str>,
        mut reps: Vec<Rep>,
    ) -> Row {
        reps.sort_by(|a, b| a.ms.total_cmp(&b.ms));
        let n = reps.len().max(1);
        let median = reps.get((n - 1) / 2).cloned().unwrap_or_default();
        let mut latencies: Vec<f64> = reps.iter().flat_map(|r| r.latencies.clone()).collect();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| percentile(&latencies, p);
        let mut statuses = BTreeMap::new();
        for rep in &reps {
            for (k, v) in &rep.statuses {
                *statuses.entry(k.clone()).or_insert(0) += v;
            }
        }
        Row {
            scenario: scenario.into(),
            strategy: strategy.into(),
            layer: layer.into(),
            target: target.map(Into::into),
            tasks: median.tasks,
            reps: reps.len() as u64,
            successes: median.successes,
            failures: median.failures.clone(),
            final_balance: median.final_balance,
            attempts: median.attempts,
            retries: median.retries,
            ms_median: round(median.ms),
            ms_min: round(reps.first().map_or(0.0, |r| r.ms)),
            ms_max: round(reps.last().map_or(0.0, |r| r.ms)),
            ops_per_sec: if median.ms > 0.0 {
                round(median.successes as f64 * 1000.0 / median.ms)
            } else {
                0.0
            },
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            statuses,
            exact: reps.iter().all(|r| r.violations.is_empty()),
            violations: reps.iter().flat_map(|r| r.violations.clone()).collect(),
            held_twice: reps.iter().filter_map(|r| r.held_twice).max(),
            figures: BTreeMap::new(),
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(round(sorted[rank.clamp(1, sorted.len()) - 1]))
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(ms: f64, successes: u64) -> Rep {
        Rep {
            tasks: 100,
            successes,
            ms,
            ..Rep::default()
        }
    }

    #[test]
    fn summary_takes_median_time_and_its_counts() {
        let row = Row::summarise(
            "point-use",
            "optimistic",
            "service",
            None,
            vec![rep(30.0, 3), rep(10.0, 1), rep(20.0, 2)],
        );
        assert_eq!((row.ms_min, row.ms_median, row.ms_max), (10.0, 20.0, 30.0));
        assert_eq!(row.successes, 2);
        assert_eq!(row.ops_per_sec, 100.0);
        assert_eq!(row.reps, 3);
        assert!(row.exact);
    }

    #[test]
    fn one_violation_makes_the_row_inexact() {
        let mut bad = rep(15.0, 1);
        bad.violations.push("two holders of seat 1".into());
        let row = Row::summarise(
            "seat-race",
            "atomic",
            "service",
            None,
            vec![rep(10.0, 1), bad],
        );
        assert!(!row.exact);
        assert_eq!(row.violations, ["two holders of seat 1"]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
