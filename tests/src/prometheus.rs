//! A strict reader of the Prometheus text exposition format (0.0.4), for
//! the tests of `GET /metrics`: every line must be a `# HELP`, a `# TYPE`
//! or a sample (`name{label="value",...} number [timestamp]`, label values
//! escaped as the format says), every sample must belong to a declared
//! metric family of its type, and every histogram must be complete.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Family name to its type (`counter`, `gauge`, `histogram`, ...).
    pub types: BTreeMap<String, String>,
    /// Family name to its help text.
    pub help: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses `text`, or says which line is wrong and why.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut out = Exposition::default();
        for (n, line) in text.lines().enumerate() {
            let at = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                check_name(name).map_err(|e| at(&e))?;
                out.help.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| at("no type"))?;
                check_name(name).map_err(|e| at(&e))?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(at("unknown type"));
                }
                if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                    return Err(at("type declared twice"));
                }
            } else if line.starts_with('#') {
                // other comments are allowed
            } else {
                let sample = sample(line).map_err(|e| at(&e))?;
                let family = out.family_of(&sample.name).ok_or_else(|| at("no TYPE"))?;
                let kind = out.types[&family].as_str();
                let suffix = &sample.name[family.len()..];
                let fits = match kind {
                    "histogram" => ["_bucket", "_sum", "_count"].contains(&suffix),
                    "summary" => ["", "_sum", "_count"].contains(&suffix),
                    _ => suffix.is_empty(),
                };
                if !fits {
                    return Err(at(&format!("not a sample of the {kind} {family}")));
                }
                if suffix == "_bucket" && !sample.labels.contains_key("le") {
                    return Err(at("a bucket without le"));
                }
                out.samples.push(sample);
            }
        }
        out.check_histograms()?;
        Ok(out)
    }

    /// The declared family `name` belongs to.
    fn family_of(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.to_owned());
        }
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|base| self.types.contains_key(*base))
            .map(str::to_owned)
    }

    /// Every histogram series has a `+Inf` bucket equal to its `_count`,
    /// and cumulative buckets.
    fn check_histograms(&self) -> Result<(), String> {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let series = self.histogram_series(family);
            for (labels, (buckets, count)) in series {
                let inf = buckets
                    .iter()
                    .find(|(le, _)| le.is_infinite())
                    .map(|(_, c)| *c);
                if inf != count {
                    return Err(format!(
                        "{family}{labels:?}: +Inf bucket {inf:?}, count {count:?}"
                    ));
                }
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!("{family}{labels:?}: buckets are not cumulative"));
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn histogram_series(
        &self,
        family: &str,
    ) -> BTreeMap<BTreeMap<String, String>, (Vec<(f64, f64)>, Option<f64>)> {
        let mut series: BTreeMap<_, (Vec<(f64, f64)>, Option<f64>)> = BTreeMap::new();
        for s in &self.samples {
            let mut labels = s.labels.clone();
            if s.name == format!("{family}_bucket") {
                let le = labels.remove("le").unwrap_or_default();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                series.entry(labels).or_default().0.push((le, s.value));
            } else if s.name == format!("{family}_count") {
                series.entry(labels).or_default().1 = Some(s.value);
            }
        }
        for (buckets, _) in series.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        series
    }

    /// The samples named `name` whose labels include `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample `name` with `labels`; 0 when there is
    /// none (a counter never incremented); panics when several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.find(name, labels);
        assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
        found.first().map_or(0.0, |s| s.value)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn sample(line: &str) -> Result<Sample, String> {
    let chars: Vec<char> = line.chars().collect();
    let name: String = chars
        .iter()
        .take_while(|c| **c != '{' && **c != ' ')
        .collect();
    check_name(&name)?;
    let mut i = name.chars().count();
    let mut labels = BTreeMap::new();
    if chars.get(i) == Some(&'{') {
        i += 1;
        while chars.get(i) != Some(&'}') {
            let start = i;
            while chars.get(i).is_some_and(|c| *c != '=') {
                i += 1;
            }
            if i == chars.len() {
                return Err("a label without =".into());
            }
            let label: String = chars[start..i].iter().collect();
            check_name(&label).map_err(|_| format!("bad label name {label:?}"))?;
            i += 1;
            if chars.get(i) != Some(&'"') {
                return Err("a label value must be quoted".into());
            }
            i += 1;
            let mut value = String::new();
            loop {
                let c = *chars.get(i).ok_or("unterminated label value")?;
                i += 1;
                match c {
                    '\\' => {
                        let escaped = *chars.get(i).ok_or("dangling escape")?;
                        i += 1;
                        match escaped {
                            'n' => value.push('\n'),
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            other => return Err(format!("bad escape \\{other}")),
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
            if labels.insert(label.clone(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            match chars.get(i) {
                Some(',') => i += 1,
                Some('}') => {}
                other => return Err(format!("unexpected {other:?} after a label")),
            }
        }
        i += 1;
    }
    let rest: String = chars[i.min(chars.len())..].iter().collect();
    if !rest.starts_with(' ') {
        return Err("no space before the value".into());
    }
    let mut fields = rest.split_whitespace();
    let raw = fields.next().ok_or("no value")?;
    let value = match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other.parse().map_err(|_| format!("bad value {other:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_format_and_refuses_what_is_not() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\n\
                    a_total{route=\"/x/{id}\",q=\"a\\\"b\\\\c\"} 3\n\
                    # TYPE h_seconds histogram\n\
                    h_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
                    h_seconds_sum 0.3\nh_seconds_count 2\n";
        let e = Exposition::parse(text).unwrap();
        assert_eq!(e.value("a_total", &[("route", "/x/{id}")]), 3.0);
        assert_eq!(e.find("a_total", &[])[0].labels["q"], "a\"b\\c");
        assert_eq!(e.value("h_seconds_count", &[]), 2.0);
        for bad in [
            "a_total 3\n",
            "# TYPE a counter\na{x=1} 3\n",
            "# TYPE a counter\na{x=\"1\"}3\n",
            "# TYPE a counter\na 3 4 5\n",
            "# TYPE a counter\na_bucket 3\n",
            "# TYPE a counter\na three\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
            "garbage\n",
        ] {
            assert!(Exposition::parse(bad).is_err(), "{bad:?}");
        }
    }
}
