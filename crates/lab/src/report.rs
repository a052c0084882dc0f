//! Output: a markdown table, `results.json`, and SVG charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
        "| scenario | target | layer | strategy | tasks | ok | failures | final balance | held twice | attempts | retries | ms median | ms min–max | ops/s | vs raw FOR UPDATE | vs raw conditional | p50/p95/p99 ms | exact |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1}–{:.1} | {:.0} | {} | {} | {} | {} |",
            r.scenario,
            r.target.as_deref().unwrap_or("-"),
            r.layer,
            r.strategy,
            r.tasks,
            r.successes,
            failures,
            r.final_balance.map_or("-".into(), |b| b.to_string()),
            r.held_twice.map_or("-".into(), |n| n.to_string()),
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

/// What `results.json` holds: the run's metadata (see [`crate::meta`];
/// null for results written before it was recorded) and the rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub run: Value,
    pub rows: Vec<Row>,
}

impl Results {
    /// Reads a results file: `{run, rows}`, or the plain row array of
    /// earlier versions.
    pub fn read(path: &Path) -> anyhow::Result<Results> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let results = match value {
            Value::Array(_) => Results {
                run: Value::Null,
                rows: serde_json::from_value(value)?,
            },
            other => serde_json::from_value(other)?,
        };
        Ok(results)
    }
}

/// Writes `results.json` (metadata and rows) and one chart per scenario
/// into `dir`; returns the files written.
pub fn write(dir: &Path, results: &Results, json_name: &str) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join(json_name);
    std::fs::write(&json, serde_json::to_string_pretty(results)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let mut written = vec![json];
    written.extend(charts(dir, results)?);
    Ok(written)
}

/// Writes one chart per (scenario, target) of `results` into `dir`.
pub fn charts(dir: &Path, results: &Results) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rows = &results.rows;
    let mut groups: Vec<(String, Option<String>)> = Vec::new();
    for r in rows {
        let key = (r.scenario.clone(), r.target.clone());
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let mut written = Vec::new();
    for (scenario, target) in groups {
        let group: Vec<&Row> = rows
            .iter()
            .filter(|r| r.scenario == scenario && r.target == target)
            .collect();
        let name = match &target {
            Some(t) => format!("{scenario}-{t}"),
            None => scenario.clone(),
        };
        let subtitle = describe(&scenario, target.as_deref(), &group, &results.run);
        let path = dir.join(format!("{name}.svg"));
        std::fs::write(&path, chart(&name, &subtitle, &group))
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The parameters of a scenario's chart, from the run's recorded
/// parameters when present, else from its rows.
pub fn describe(scenario: &str, target: Option<&str>, rows: &[&Row], run: &Value) -> String {
    let p = &run["parameters"];
    let tasks = rows.first().map_or(0, |r| r.tasks);
    let reps = rows.first().map_or(0, |r| r.reps);
    let n = |v: &Value| v.as_u64().map(|n| n.to_string());
    let what = match scenario {
        "point-use" => match (n(&p["pointUse"]["amount"]), n(&p["pointUse"]["initial"])) {
            (Some(amount), Some(initial)) => {
                format!(
                    "{tasks} concurrent uses of {amount} points of one wallet holding {initial}"
                )
            }
            _ => format!("{tasks} concurrent point uses of one wallet"),
        },
        "point-charge" => match n(&p["pointCharge"]["amount"]) {
            Some(amount) => format!("{tasks} concurrent charges of {amount} points of one wallet"),
            None => format!("{tasks} concurrent charges of one wallet"),
        },
        "seat-race" => format!("{tasks} users race for one seat"),
        "batch-race" => format!("{tasks} users race for overlapping groups of 4 seats of one date"),
        "sustained" => {
            let workers = n(&p["sustained"]["workers"]).unwrap_or_else(|| "16".into());
            let on = if target == Some("hot-row") {
                "one wallet"
            } else {
                "one wallet per worker"
            };
            format!("{tasks} uses of 1 point by {workers} workers, {on}")
        }
        other => format!("{other}: {tasks} tasks"),
    };
    let mut line = format!("{what}; {reps} repetitions, median time with min–max whisker");
    if let Some(date) = run["date"].as_str() {
        let _ = write!(line, "; run {}", &date[..date.len().min(10)]);
    }
    if let Some(cores) = run["machine"]["cores"].as_u64() {
        let _ = write!(line, ", {cores} cores");
    }
    if let Some(commit) = run["commit"].as_str() {
        let _ = write!(line, ", commit {commit}");
    }
    line
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The width (px) a text takes at font size 12 (sans-serif, a generous
/// average so nothing is cut).
fn text_width(text: &str) -> f64 {
    7.2 * text.chars().count() as f64
}

/// Three horizontal bar panels, one bar per strategy: median time (with a
/// min–max whisker), successes out of the tasks (so a short time bar that
/// failed most of its tasks shows it), and lock acquisitions or units of
/// work run. Labels are never cut: the columns grow with their texts.
pub fn chart(title: &str, subtitle: &str, rows: &[&Row]) -> String {
    const PANEL: f64 = 300.0;
    const GAP: f64 = 16.0;
    const BAR: f64 = 18.0;
    const ROW: f64 = 26.0;
    const TOP: f64 = 78.0;
    let label = 16.0
        + rows
            .iter()
            .map(|r| text_width(&r.strategy))
            .fold(120.0, f64::max);
    let ms_text = |r: &Row| format!("{:.1}", r.ms_median);
    let ok_text = |r: &Row| format!("{} / {}", r.successes, r.tasks);
    let widest = |f: &dyn Fn(&Row) -> String| {
        rows.iter().map(|r| text_width(&f(r))).fold(0.0, f64::max) + 8.0
    };
    let panel_ms = PANEL + widest(&ms_text);
    let panel_ok = PANEL * 0.6 + widest(&ok_text);
    let panel_at = PANEL + widest(&|r: &Row| r.attempts.to_string());
    let x_ms = label;
    let x_ok = x_ms + panel_ms + GAP;
    let x_at = x_ok + panel_ok + GAP;
    let width = (x_at + panel_at + 10.0).max(text_width(subtitle) + 20.0);
    let height = TOP + ROW * rows.len() as f64 + 20.0;
    let max_ms = rows.iter().map(|r| r.ms_max).fold(0.0, f64::max).max(1e-9);
    let max_attempts = rows
        .iter()
        .map(|r| r.attempts as f64)
        .fold(0.0, f64::max)
        .max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="20" font-size="15" font-weight="bold">{title}</text>
<text x="10" y="40" fill="#444">{subtitle}</text>
<text x="{x_ms:.1}" y="64" font-weight="bold">time, ms</text>
<text x="{x_ok:.1}" y="64" font-weight="bold">successes / tasks</text>
<text x="{x_at:.1}" y="64" font-weight="bold">attempts (lock acquisitions or units of work)</text>
"##,
        title = escape(title),
        subtitle = escape(subtitle),
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
        let share = if r.tasks == 0 {
            0.0
        } else {
            r.successes as f64 / r.tasks as f64
        };
        let w_ok = PANEL * 0.6 * share;
        let w_at = PANEL * r.attempts as f64 / max_attempts;
        let _ = write!(
            svg,
            r##"<text x="{lx:.1}" y="{ty}" text-anchor="end">{name}</text>
<rect x="{x_ms:.1}" y="{y}" width="{w_ms:.1}" height="{BAR}" fill="{color}"/>
<line x1="{l:.1}" y1="{my}" x2="{h:.1}" y2="{my}" stroke="#000"/>
<text x="{tx:.1}" y="{ty}">{ms}</text>
<rect x="{x_ok:.1}" y="{y}" width="{ok_frame:.1}" height="{BAR}" fill="none" stroke="#bbb"/>
<rect x="{x_ok:.1}" y="{y}" width="{w_ok:.1}" height="{BAR}" fill="{ok_color}"/>
<text x="{okx:.1}" y="{ty}">{ok}</text>
<rect x="{x_at:.1}" y="{y}" width="{w_at:.1}" height="{BAR}" fill="{color}" opacity="0.7"/>
<text x="{ax:.1}" y="{ty}">{attempts}</text>
"##,
            lx = label - 8.0,
            ty = y + 13.0,
            name = escape(&r.strategy),
            l = x_ms + lo,
            h = x_ms + hi,
            my = y + BAR / 2.0,
            tx = x_ms + w_ms.max(hi) + 4.0,
            ms = ms_text(r),
            ok_frame = PANEL * 0.6,
            ok_color = if r.exact { "#4a9a5b" } else { "#c0392b" },
            okx = x_ok + PANEL * 0.6 + 4.0,
            ok = ok_text(r),
            ax = x_at + w_at + 4.0,
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
        let svg = chart("point-use", "100 uses", &refs);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // background, and per row: time, successes frame and bar, attempts
        assert_eq!(svg.matches("<rect").count(), 1 + 2 * 4);
        assert!(svg.contains(">100 / 100<"), "{svg}");
        assert!(svg.contains(">100 uses<"), "{svg}");
    }

    #[test]
    fn every_label_fits_inside_the_chart() {
        let mut long = row("raw-conditional-update", "raw", 30.0);
        long.attempts = 63_496;
        long.tasks = 1_008;
        long.successes = 17;
        let rows = [long, row("optimistic-retry", "service", 251.0)];
        let refs: Vec<&Row> = rows.iter().collect();
        let svg = chart(
            "sustained-hot-row",
            "1008 uses of 1 point by 16 workers",
            &refs,
        );
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        for text in svg.split("<text ").skip(1) {
            let x: f64 = text
                .split("x=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap()
                .parse()
                .unwrap();
            let content = text.split('>').nth(1).unwrap().split('<').next().unwrap();
            let end = if text.contains("text-anchor=\"end\"") {
                x
            } else {
                x + text_width(content)
            };
            let start = if text.contains("text-anchor=\"end\"") {
                x - text_width(content)
            } else {
                x
            };
            assert!(
                start >= 0.0 && end <= width,
                "{content:?} at {x} in {width}"
            );
        }
        assert!(svg.contains(">63496<"));
        assert!(svg.contains(">17 / 1008<"));
    }

    #[test]
    fn results_read_back_with_or_without_metadata() {
        let dir = std::env::temp_dir().join(format!("lab-report-{}", std::process::id()));
        let rows = vec![row("atomic", "service", 10.0)];
        let results = Results {
            run: serde_json::json!({"date": "2026-12-05T10:00:00Z", "parameters": {"reps": 1}}),
            rows: rows.clone(),
        };
        let written = write(&dir, &results, "results.json").unwrap();
        assert_eq!(written.len(), 2);
        let back = Results::read(&dir.join("results.json")).unwrap();
        assert_eq!(back.run["date"], "2026-12-05T10:00:00Z");
        assert_eq!(back.rows.len(), 1);
        std::fs::write(dir.join("old.json"), serde_json::to_string(&rows).unwrap()).unwrap();
        let old = Results::read(&dir.join("old.json")).unwrap();
        assert!(old.run.is_null());
        assert_eq!(old.rows[0].strategy, "atomic");
        let svg = std::fs::read_to_string(dir.join("point-use.svg")).unwrap();
        assert!(svg.contains("run 2026-12-05"), "{svg}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
