//! Series selectors in Prometheus syntax: `name{label="value",other=~"re.*"}`.

use regex::Regex;

use super::error::SelectorError;
use super::series::{Labels, NAME_LABEL, is_label_name, is_metric_name};

/// Comparison operator of a matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`: equal.
    Equal,
    /// `!=`: not equal.
    NotEqual,
    /// `=~`: the regular expression matches the whole value.
    Regex,
    /// `!~`: the regular expression does not match the whole value.
    NotRegex,
}

/// One label matcher. A missing label matches as the empty string, as in Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name (`__name__` for the metric name).
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Value or regular expression text.
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher; a regex matcher compiles `value` anchored at both ends.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, SelectorError> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$")).map_err(|e| SelectorError {
                    input: value.to_owned(),
                    reason: format!("invalid regular expression: {e}"),
                })?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Returns `true` if `labels` satisfies this matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        let actual = labels.get(&self.name).unwrap_or("");
        match (&self.op, &self.regex) {
            (MatchOp::Equal, _) => actual == self.value,
            (MatchOp::NotEqual, _) => actual != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(actual),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(actual),
            (_, None) => false,
        }
    }
}

/// A list of matchers that must all match.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// The matchers.
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Parses `name{a="x",b!="y",c=~"r",d!~"r"}`, `name` alone, or `{__name__="x",...}`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let fail = |reason: &str| SelectorError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let text = input.trim();
        let (name, rest) = match text.find('{') {
            Some(i) => (text[..i].trim(), Some(&text[i..])),
            None => (text, None),
        };

        let mut matchers = Vec::new();
        if !name.is_empty() {
            if !is_metric_name(name) {
                return Err(fail("invalid metric name"));
            }
            matchers.push(Matcher::new(NAME_LABEL, MatchOp::Equal, name)?);
        }
        if let Some(body) = rest {
            let body = body
                .strip_prefix('{')
                .and_then(|b| b.strip_suffix('}'))
                .ok_or_else(|| fail("expected `}` at the end"))?;
            parse_matchers(body, &mut matchers).map_err(|reason| fail(&reason))?;
        }
        if matchers.is_empty() {
            return Err(fail(
                "empty selector: name a metric or give at least one matcher",
            ));
        }
        Ok(Self { matchers })
    }

    /// Returns `true` if every matcher matches `labels`.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// The metric name when the selector fixes it with `__name__="..."`.
    pub fn metric_name(&self) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.name == NAME_LABEL && m.op == MatchOp::Equal)
            .map(|m| m.value.as_str())
    }
}

fn parse_matchers(body: &str, out: &mut Vec<Matcher>) -> Result<(), String> {
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if !is_label_name(name) {
            return Err(format!("invalid label name near `{rest}`"));
        }
        rest = rest[name_len..].trim_start();

        let op = if let Some(r) = rest.strip_prefix("=~") {
            rest = r;
            MatchOp::Regex
        } else if let Some(r) = rest.strip_prefix("!~") {
            rest = r;
            MatchOp::NotRegex
        } else if let Some(r) = rest.strip_prefix("!=") {
            rest = r;
            MatchOp::NotEqual
        } else if let Some(r) = rest.strip_prefix('=') {
            rest = r;
            MatchOp::Equal
        } else {
            return Err(format!("expected `=`, `!=`, `=~` or `!~` after `{name}`"));
        };

        let (value, after) = parse_quoted(rest.trim_start())?;
        out.push(Matcher::new(name, op, &value).map_err(|e| e.reason)?);
        rest = after.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected `,` near `{rest}`"));
        }
    }
    Ok(())
}

/// Parses a double-quoted string with `\\`, `\"` and `\n` escapes; returns it and the rest.
pub(crate) fn parse_quoted(input: &str) -> Result<(String, &str), String> {
    let body = input
        .strip_prefix('"')
        .ok_or_else(|| format!("expected `\"` near `{input}`"))?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => return Err(format!("invalid escape `\\{other}`")),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("unterminated string".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels::new("node_cpu_seconds_total", [("cpu", "0"), ("mode", "idle")])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn selector_matches_all_operators() -> Result<(), SelectorError> {
        let s = Selector::parse(
            r#"node_cpu_seconds_total{cpu="0",mode!="user",mode=~"id.*",job!~".+"}"#,
        )?;
        assert!(s.matches(&labels()));
        Ok(())
    }

    #[test]
    fn selector_rejects_mismatch() -> Result<(), SelectorError> {
        let s = Selector::parse(r#"{__name__="node_cpu_seconds_total", mode="user"}"#)?;
        assert!(!s.matches(&labels()));
        Ok(())
    }

    #[test]
    fn selector_regex_is_anchored() -> Result<(), SelectorError> {
        let s = Selector::parse(r#"{mode=~"dl"}"#)?;
        assert!(!s.matches(&labels()));
        Ok(())
    }

    #[test]
    fn selector_reports_bad_syntax() {
        for bad in [
            "",
            "{}",
            "x{a=1}",
            "x{a=\"1\"",
            "x{a~\"1\"}",
            "1x",
            "x{a=\"1\" b=\"2\"}",
        ] {
            assert!(Selector::parse(bad).is_err(), "accepted `{bad}`");
        }
    }

    #[test]
    fn selector_exposes_metric_name() -> Result<(), SelectorError> {
        assert_eq!(Selector::parse("up")?.metric_name(), Some("up"));
        Ok(())
    }
}
