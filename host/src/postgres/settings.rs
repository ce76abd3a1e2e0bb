//! `postgresql.conf` settings: their description in `pg_settings`, validation of new
//! values before anything is changed, and comparison of deployed values with `SHOW`.
//!
//! PostgreSQL prints a setting in its own form (`SHOW shared_buffers` returns `128MB`
//! for `16384`), so values are compared after conversion to the setting's base unit
//! (`8kB`, `ms`, ...) for numbers, to `on`/`off` for booleans and to lowercase for enums.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::postgres::error::PgError;

/// Settings by name, such as `max_connections = "50"`. Values are in `postgresql.conf`
/// syntax without the quotes.
pub type Settings = BTreeMap<String, String>;

/// When a changed setting takes effect, from `pg_settings.context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// A configuration reload is enough.
    Reload,
    /// Only a server restart applies it (`context = postmaster`).
    Restart,
}

/// The `pg_settings` row of one setting.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingInfo {
    pub name: String,
    /// `pg_settings.context`: `postmaster`, `sighup`, `user`, `internal`, ...
    pub context: String,
    /// `pg_settings.vartype`: `bool`, `integer`, `real`, `enum` or `string`.
    pub vartype: String,
    /// Base unit of numbers, such as `8kB` or `ms`. `None` for unitless settings.
    pub unit: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Allowed values of an enum setting.
    pub enum_values: Vec<String>,
}

impl SettingInfo {
    /// Returns how a change of this setting takes effect.
    pub fn apply(&self) -> Apply {
        if self.context == "postmaster" {
            Apply::Restart
        } else {
            Apply::Reload
        }
    }
}

/// Reads the `pg_settings` rows of `names`. Names that the server does not know are
/// missing from the result.
pub async fn describe(
    client: &Client,
    names: &[String],
) -> Result<BTreeMap<String, SettingInfo>, PgError> {
    let rows = client
        .query(
            "SELECT name, context, vartype, unit, min_val, max_val, enumvals \
             FROM pg_settings WHERE name = ANY($1)",
            &[&names],
        )
        .await
        .map_err(|source| PgError::query("read pg_settings", source))?;

    let mut infos = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let min: Option<String> = row.get(4);
        let max: Option<String> = row.get(5);
        let info = SettingInfo {
            name: name.clone(),
            context: row.get(1),
            vartype: row.get(2),
            unit: row.get(3),
            min: min.and_then(|value| value.parse().ok()),
            max: max.and_then(|value| value.parse().ok()),
            enum_values: row.get::<_, Option<Vec<String>>>(6).unwrap_or_default(),
        };
        infos.insert(name, info);
    }
    Ok(infos)
}

/// Checks every setting in `settings` against the server's `pg_settings`, without
/// changing anything, and returns their descriptions. The error names the first setting
/// that is unknown, cannot be changed or has an invalid value.
pub async fn validate(
    client: &Client,
    settings: &Settings,
) -> Result<BTreeMap<String, SettingInfo>, PgError> {
    let names: Vec<String> = settings.keys().cloned().collect();
    let infos = describe(client, &names).await?;

    for (name, value) in settings {
        let Some(info) = infos.get(name) else {
            let hint = similar_setting(client, name).await?;
            return Err(PgError::UnknownSetting {
                name: name.clone(),
                hint: hint
                    .map(|similar| format!(": did you mean `{similar}`?"))
                    .unwrap_or_default(),
            });
        };
        check_value(info, value)?;
    }
    Ok(infos)
}

/// Checks one value against its setting's type, range and allowed values.
pub fn check_value(info: &SettingInfo, value: &str) -> Result<(), PgError> {
    let invalid = |expected: String| PgError::InvalidSettingValue {
        name: info.name.clone(),
        value: value.to_owned(),
        expected,
    };

    if info.context == "internal" {
        return Err(invalid(
            "this setting is fixed when PostgreSQL is built and cannot be changed".to_owned(),
        ));
    }
    match info.vartype.as_str() {
        "bool" => parse_bool(value)
            .map(drop)
            .ok_or_else(|| invalid("expected `on` or `off`".to_owned())),
        "integer" | "real" => {
            let unit = info.unit.as_deref();
            let Some(number) = parse_number(value, unit) else {
                return Err(invalid(format!(
                    "expected a number{}",
                    unit.map(|unit| format!(" in `{unit}` or with a unit such as `MB` or `s`"))
                        .unwrap_or_default()
                )));
            };
            if info.vartype == "integer" && number.fract().abs() > 1e-9 && unit.is_none() {
                return Err(invalid("expected a whole number".to_owned()));
            }
            let below = info.min.is_some_and(|min| number < min);
            let above = info.max.is_some_and(|max| number > max);
            if below || above {
                return Err(invalid(format!(
                    "expected a value between {} and {}{}",
                    info.min.unwrap_or(f64::NEG_INFINITY),
                    info.max.unwrap_or(f64::INFINITY),
                    unit.map(|unit| format!(" (in `{unit}`)"))
                        .unwrap_or_default()
                )));
            }
            Ok(())
        }
        "enum" => {
            let lower = value.to_ascii_lowercase();
            if info
                .enum_values
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(&lower))
            {
                Ok(())
            } else {
                Err(invalid(format!(
                    "expected one of {}",
                    info.enum_values.join(", ")
                )))
            }
        }
        _ => Ok(()),
    }
}

/// Returns whether `shown`, the output of `SHOW`, is the value `expected`.
pub fn same_value(info: &SettingInfo, expected: &str, shown: &str) -> bool {
    match info.vartype.as_str() {
        "bool" => parse_bool(expected).is_some() && parse_bool(expected) == parse_bool(shown),
        "integer" | "real" => {
            let unit = info.unit.as_deref();
            match (parse_number(expected, unit), parse_number(shown, unit)) {
                (Some(expected), Some(shown)) => {
                    let tolerance = 1e-9 * expected.abs().max(1.0);
                    // PostgreSQL rounds an integer setting to its base unit.
                    let expected = if info.vartype == "integer" {
                        expected.round()
                    } else {
                        expected
                    };
                    (expected - shown).abs()
                        <= tolerance.max(if info.vartype == "integer" { 0.5 } else { 0.0 })
                }
                _ => false,
            }
        }
        "enum" => expected.eq_ignore_ascii_case(shown),
        _ => normalize_list(expected) == normalize_list(shown),
    }
}

fn normalize_list(value: &str) -> String {
    value
        .split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a boolean the way PostgreSQL's `parse_bool` does for full words.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Some(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// Parses `value`, such as `128MB`, `1.5s` or `100`, into the base unit `base_unit` of
/// its setting. A number without a unit is already in the base unit.
pub(crate) fn parse_number(value: &str, base_unit: Option<&str>) -> Option<f64> {
    let value = value.trim();
    let split = value
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')
        })
        .unwrap_or(value.len());
    // No PostgreSQL unit starts with `e`, so an exponent cannot be mistaken for a unit.
    let (number, unit) = value.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let unit = unit.trim();
    if unit.is_empty() {
        return Some(number);
    }

    let base = base_unit?;
    let (base_scale, base_kind) =
        unit_scale(base.trim_start_matches(|c: char| c.is_ascii_digit()))?;
    let base_multiple: f64 = base
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .filter(|digits| !digits.is_empty())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(1.0);
    let (scale, kind) = unit_scale(unit)?;
    if kind != base_kind {
        return None;
    }
    Some(number * scale / (base_scale * base_multiple))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitKind {
    Memory,
    Time,
}

/// Size of `unit` in bytes or in microseconds, with PostgreSQL's unit names.
fn unit_scale(unit: &str) -> Option<(f64, UnitKind)> {
    let scale = match unit {
        "B" => (1.0, UnitKind::Memory),
        "kB" => (1024.0, UnitKind::Memory),
        "MB" => (1024.0 * 1024.0, UnitKind::Memory),
        "GB" => (1024.0 * 1024.0 * 1024.0, UnitKind::Memory),
        "TB" => (1024.0 * 1024.0 * 1024.0 * 1024.0, UnitKind::Memory),
        "us" => (1.0, UnitKind::Time),
        "ms" => (1e3, UnitKind::Time),
        "s" => (1e6, UnitKind::Time),
        "min" => (60e6, UnitKind::Time),
        "h" => (3600e6, UnitKind::Time),
        "d" => (86400e6, UnitKind::Time),
        _ => return None,
    };
    Some(scale)
}

/// Returns the known setting whose name is closest to `name`, if one is close enough to be a
/// likely typo.
async fn similar_setting(client: &Client, name: &str) -> Result<Option<String>, PgError> {
    let rows = client
        .query("SELECT name FROM pg_settings", &[])
        .await
        .map_err(|source| PgError::query("read pg_settings", source))?;
    let best = rows
        .iter()
        .map(|row| row.get::<_, String>(0))
        .map(|candidate| (edit_distance(name, &candidate), candidate))
        .min();
    Ok(best
        .filter(|(distance, _)| *distance <= 3)
        .map(|(_, candidate)| candidate))
}

/// Levenshtein distance between two ASCII-ish strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(vartype: &str, unit: Option<&str>, min: f64, max: f64) -> SettingInfo {
        SettingInfo {
            name: "example".to_owned(),
            context: "user".to_owned(),
            vartype: vartype.to_owned(),
            unit: unit.map(str::to_owned),
            min: Some(min),
            max: Some(max),
            enum_values: Vec::new(),
        }
    }

    #[test]
    fn memory_converts_to_base_unit() {
        assert_eq!(parse_number("128MB", Some("8kB")), Some(16384.0));
        assert_eq!(parse_number("4096", Some("kB")), Some(4096.0));
        assert_eq!(parse_number("1GB", Some("kB")), Some(1048576.0));
    }

    #[test]
    fn time_converts_to_base_unit() {
        assert_eq!(parse_number("1.5s", Some("ms")), Some(1500.0));
        assert_eq!(parse_number("1min", Some("s")), Some(60.0));
        assert_eq!(parse_number("-1", Some("ms")), Some(-1.0));
    }

    #[test]
    fn mismatched_unit_is_invalid() {
        assert_eq!(parse_number("10s", Some("kB")), None);
        assert_eq!(parse_number("10MB", None), None);
    }

    #[test]
    fn show_output_matches_deployed_value() {
        let shared_buffers = info("integer", Some("8kB"), 16.0, 1073741823.0);
        assert!(same_value(&shared_buffers, "16384", "128MB"));
        assert!(!same_value(&shared_buffers, "16384", "256MB"));

        let timeout = info("integer", Some("ms"), 0.0, 2147483647.0);
        assert!(same_value(&timeout, "60000", "1min"));
        assert!(same_value(&timeout, "250ms", "250ms"));

        let flag = info("bool", None, 0.0, 0.0);
        assert!(same_value(&flag, "true", "on"));
    }

    #[test]
    fn out_of_range_value_is_rejected() {
        let connections = info("integer", None, 1.0, 262143.0);

        let error = check_value(&connections, "0").expect_err("below minimum");

        let message = error.to_string();
        assert!(message.contains("`0`"), "{message}");
        assert!(message.contains("between 1 and 262143"), "{message}");
    }

    #[test]
    fn non_number_is_rejected() {
        let connections = info("integer", None, 1.0, 262143.0);

        assert!(check_value(&connections, "many").is_err());
    }

    #[test]
    fn typo_is_one_edit_away() {
        assert_eq!(edit_distance("max_conections", "max_connections"), 1);
        assert_eq!(edit_distance("work_mem", "work_mem"), 0);
    }
}
