//! Output: a markdown table, `results.json`, and SVG charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::row::Row;
use crate::scenarios::{RAW_CONDITIONAL, RAW_FOR_UPDATE};

/// The median time of the raw baseline `name` in the same scenario/target.
fn raw_ms(rows: &[Row], row: &Row, name: &str) -> Option<f64> {
    rows.iter()
        .find(|r| {
            r.layer == "raw"
                && r.strategy == name
                && r.scenario == row.scenario
                && r.target == row.target
        })
        .map(|r| r.ms_median)
        .filter(|ms| *ms > 0.0)
}

fn ratio(rows: &[Row], row: &Row, name: &str) -> String {
    raw_ms(rows, row, name)
        .map(|raw| format!("{:.2}x", row.ms_median / raw))
        .unwrap_or_else(|| "-".into())
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | target | layer | strategy | tasks | ok | failures | final balance | attempts | retries | ms median | ms min–max | ops/s | vs raw FOR UPDATE | vs raw conditional | p50/p95/p99 ms | exact |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for r in rows {
        let failures = if r.failures.is_empty() {
            "-".to_owned()
        } else {
            r.failures
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let pcts = match (r.p50_ms, r.p95_ms, r.p99_ms) {
            (Some(a), Some(b), Some(c)) => format!("{a}/{b}/{c}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1}–{:.1} | {:.0} | {} | {} | {} | {} |",
            r.scenario,
            r.target.as_deref().unwrap_or("-"),
            r.layer,
            r.strategy,
            r.tasks,
            r.successes,
            failures,
            r.final_balance.map_or("-".into(), |b| b.to_string()),
            r.attempts,
            r.retries,
            r.ms_median,
            r.ms_min,
            r.ms_max,
            r.ops_per_sec,
            ratio(rows, r, RAW_FOR_UPDATE),
            ratio(rows, r, RAW_CONDITIONAL),
            pcts,
            if r.exact { "yes" } else { "NO" },
        );
    }
    let figures: Vec<&Row> = rows.iter().filter(|r| !r.figures.is_empty()).collect();
    if !figures.is_empty() {
        let _ = writeln!(out, "\n| scenario | strategy | figure | value |");
        let _ = writeln!(out, "|---|---|---|---:|");
        for r in figures {
            for (name, value) in &r.figures {
                let _ = writeln!(
                    out,
                    "| {} | {} | {name} | {value} |",
                    r.scenario, r.strategy
                );
            }
        }
    }
    out
}

/// Writes `results.json` and one chart per scenario into `dir`; returns the
/// files written.
pub fn write(dir: &Path, rows: &[Row], json_name: &str) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let json = dir.join(json_name);
    std::fs::write(&json, serde_json::to_string_pretty(rows)?)
        .with_context(|| format!("writing {}", json.display()))?;
    written.push(json);
    let mut groups: Vec<(String, Option<String>)> = Vec::new();
    for r in rows {
        let key = (r.scenario.clone(), r.target.clone());
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    for (scenario, target) in groups {
        let group: Vec<&Row> = rows
            .iter()
            .filter(|r| r.scenario == scenario && r.target == target)
            .collect();
        let name = match &target {
            Some(t) => format!("{scenario}-{t}"),
            None => scenario.clone(),
        };
        let path = dir.join(format!("{name}.svg"));
        std::fs::write(&path, chart(&name, &group))
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Two horizontal bar panels: median time (with min–max whisker) and
/// acquisition/repository attempts, one bar per strategy.
pub fn chart(title: &str, rows: &[&Row]) -> String {
    const LABEL: f64 = 190.0;
    const PANEL: f64 = 330.0;
    const GAP: f64 = 60.0;
    const BAR: f64 = 18.0;
    const ROW: f64 = 26.0;
    const TOP: f64 = 56.0;
    let width = LABEL + PANEL + GAP + PANEL + 30.0;
    let height = TOP + ROW * rows.len() as f64 + 30.0;
    let max_ms = rows.iter().map(|r| r.ms_max).fold(0.0, f64::max).max(1e-9);
    let max_attempts = rows
        .iter()
        .map(|r| r.attempts as f64)
        .fold(0.0, f64::max)
        .max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="20" font-size="15" font-weight="bold">{title}</text>
<text x="{x1}" y="44" font-weight="bold">time, ms (median; whisker min–max)</text>
<text x="{x2}" y="44" font-weight="bold">attempts (lock acquisitions or repository calls)</text>
"##,
        x1 = LABEL,
        x2 = LABEL + PANEL + GAP,
    );
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let color = match r.layer.as_str() {
            "raw" => "#888",
            "http" => "#b5651d",
            _ => "#3b6ea8",
        };
        let w_ms = PANEL * r.ms_median / max_ms;
        let (lo, hi) = (PANEL * r.ms_min / max_ms, PANEL * r.ms_max / max_ms);
        let w_at = PANEL * r.attempts as f64 / max_attempts;
        let x2 = LABEL + PANEL + GAP;
        let _ = write!(
            svg,
            r##"<text x="{lx}" y="{ty}" text-anchor="end">{name}</text>
<rect x="{LABEL}" y="{y}" width="{w_ms:.1}" height="{BAR}" fill="{color}"/>
<line x1="{l:.1}" y1="{my}" x2="{h:.1}" y2="{my}" stroke="#000"/>
<text x="{tx:.1}" y="{ty}">{ms:.1}</text>
<rect x="{x2}" y="{y}" width="{w_at:.1}" height="{BAR}" fill="{color}" opacity="0.7"/>
<text x="{ax:.1}" y="{ty}">{attempts}</text>
"##,
            lx = LABEL - 8.0,
            ty = y + 13.0,
            name = r.strategy,
            l = LABEL + lo,
            h = LABEL + hi,
            my = y + BAR / 2.0,
            tx = LABEL + w_ms.max(hi) + 4.0,
            ms = r.ms_median,
            ax = x2 + w_at + 4.0,
            attempts = r.attempts,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Rep, Row};

    fn row(strategy: &str, layer: &str, ms: f64) -> Row {
        Row::summarise(
            "point-use",
            strategy,
            layer,
            None,
            vec![Rep {
                tasks: 100,
                successes: 100,
                ms,
                attempts: 100,
                ..Rep::default()
            }],
        )
    }

    #[test]
    fn table_shows_ratios_to_the_raw_baselines() {
        let rows = vec![
            row(RAW_FOR_UPDATE, "raw", 40.0),
            row(RAW_CONDITIONAL, "raw", 20.0),
            row("pessimistic", "service", 50.0),
        ];
        let table = markdown(&rows);
        assert!(table.contains("| pessimistic |"), "{table}");
        assert!(table.contains("| 1.25x | 2.50x |"), "{table}");
        assert_eq!(table.lines().count(), 5);
    }

    #[test]
    fn chart_has_a_bar_per_row() {
        let rows = [
            row("atomic", "service", 10.0),
            row("pessimistic", "service", 30.0),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let svg = chart("point-use", &refs);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 1 + 2 * 2);
    }
}
