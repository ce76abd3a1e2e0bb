//! Parser for the Prometheus text exposition format (version 0.0.4), as served on
//! `/metrics` by node exporter and most Prometheus client libraries.
//!
//! It returns one entry per sample line, histogram and summary lines included under their
//! own names (`_bucket`, `_sum`, `_count`), which is how they are stored. `# HELP`, `# TYPE`
//! and other comments are skipped. Any malformed line fails the whole parse, as a failed
//! Prometheus scrape does, so a half-read page never looks like a complete one.

use crate::store::selector_parse_quoted as parse_quoted;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSample {
    /// Metric name.
    pub name: String,
    /// Labels in the order they appeared, without the metric name.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
    /// Explicit timestamp in milliseconds, if the line had one.
    pub ts_ms: Option<i64>,
}

/// A line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid exposition line {line}: {reason}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// Description of the defect.
    pub reason: String,
}

/// Parses a whole exposition page.
pub fn parse(text: &str) -> Result<Vec<ExposedSample>, ExpositionError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| ExpositionError {
            line: index + 1,
            reason,
        })?;
        out.push(sample);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<ExposedSample, String> {
    let name_len = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_len];
    if !crate::store::is_metric_name(name) {
        return Err(format!("invalid metric name in `{}`", cut(line)));
    }
    let mut rest = line[name_len..].trim_start();

    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        rest = parse_labels(body.trim_start(), &mut labels)?;
    }

    let mut fields = rest.split_ascii_whitespace();
    let value_text = fields
        .next()
        .ok_or_else(|| format!("missing value in `{}`", cut(line)))?;
    let value =
        parse_value(value_text).ok_or_else(|| format!("invalid value `{}`", cut(value_text)))?;
    let ts_ms = match fields.next() {
        Some(ts) => Some(
            ts.parse::<i64>()
                .map_err(|_| format!("invalid timestamp `{}`", cut(ts)))?,
        ),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!(
            "unexpected text `{}` after the timestamp",
            cut(extra)
        ));
    }
    Ok(ExposedSample {
        name: name.to_owned(),
        labels,
        value,
        ts_ms,
    })
}

/// Parses `a="x",b="y"}` (after the opening brace) and returns the text after `}`.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if !crate::store::is_label_name(name) {
            return Err(format!("invalid label name near `{}`", cut(rest)));
        }
        rest = rest[name_len..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected `=` after label `{name}`"))?
            .trim_start();
        let (value, after) = parse_quoted(rest)?;
        labels.push((name.to_owned(), value));
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.starts_with('}') {
            return Err(format!("expected `,` or `}}` near `{}`", cut(rest)));
        }
    }
}

/// Parses a sample value: a float, `NaN`, `+Inf` or `-Inf` (any case, as Go's parser does).
pub(crate) fn parse_value(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

fn cut(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: &str = r#"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 1234.5
node_cpu_seconds_total{cpu="0",mode="user",} 1.5e+03
http_request_duration_seconds_bucket{le="+Inf"} 27 1700000000000
weird{path="C:\\dir",quote="say \"hi\"",nl="a\nb"} NaN
neg -Inf
up 1
"#;

    #[test]
    fn exposition_parses_a_typical_page() -> Result<(), ExpositionError> {
        let samples = parse(PAGE)?;
        assert_eq!(samples.len(), 6);
        assert_eq!(
            samples[0].labels,
            vec![("cpu".into(), "0".into()), ("mode".into(), "idle".into())]
        );
        assert_eq!(samples[1].value, 1500.0);
        assert_eq!(samples[2].ts_ms, Some(1_700_000_000_000));
        assert_eq!(samples[3].labels[0].1, "C:\\dir");
        assert_eq!(samples[3].labels[1].1, "say \"hi\"");
        assert_eq!(samples[3].labels[2].1, "a\nb");
        assert!(samples[3].value.is_nan());
        assert_eq!(samples[4].value, f64::NEG_INFINITY);
        Ok(())
    }

    #[test]
    fn exposition_reports_the_bad_line() {
        let err = parse("up 1\nup{a=\"x\" 2\n");
        assert_eq!(err.map_err(|e| e.line), Err(2));
    }

    #[test]
    fn exposition_rejects_malformed_lines() {
        for bad in [
            "up",
            "up one",
            "up 1 2 3",
            "1up 1",
            "up{a=x} 1",
            "up{a=\"x\"",
            "up{-a=\"x\"} 1",
            "up 1 1.5",
        ] {
            assert!(parse(bad).is_err(), "accepted `{bad}`");
        }
    }

    proptest! {
        #[test]
        fn exposition_parser_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn exposition_round_trips_values(bits in any::<u64>(), label in "[^\\x00]{0,10}") {
            let value = f64::from_bits(bits);
            let escaped = label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let text = format!("m{{l=\"{escaped}\"}} {value:?}\n");
            let parsed = parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&parsed[0].labels[0].1, &label);
            if value.is_nan() {
                prop_assert!(parsed[0].value.is_nan());
            } else {
                prop_assert_eq!(parsed[0].value.to_bits(), value.to_bits());
            }
        }
    }
}
