//! `state.json` in the data directory: who runs there, since when, and how it stopped.
//!
//! The service writes the file when it starts and rewrites it after a graceful shutdown
//! with the stop time and the final request count. Umbra gives a shadow its own data
//! directory, so this file shows which instance used which directory. Each write goes to
//! a temporary file that is then renamed, so a reader never sees half a file.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::json;

/// File name of the state file inside the data directory.
pub const FILE_NAME: &str = "state.json";

/// The state file of one running instance.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    version: String,
    pid: u32,
    listen: SocketAddr,
    started_at: SystemTime,
}

/// Details of a graceful shutdown, added to the state file.
#[derive(Debug, Clone, Copy)]
pub struct Stop {
    /// Time at which the shutdown finished.
    pub stopped_at: SystemTime,
    /// Number of `/api/` requests that got a response over the life of the instance.
    pub requests_total: u64,
}

impl StateFile {
    /// Creates `data_dir` if missing and writes the state of a just-started instance.
    pub fn create(data_dir: &Path, version: &str, listen: SocketAddr) -> anyhow::Result<Self> {
        fs::create_dir_all(data_dir)
            .with_context(|| format!("failed to create data directory `{}`", data_dir.display()))?;

        let state = Self {
            path: data_dir.join(FILE_NAME),
            version: version.to_owned(),
            pid: std::process::id(),
            listen,
            started_at: SystemTime::now(),
        };
        state.write(None)?;

        Ok(state)
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites the file with the status `stopped` and the details of `stop`.
    pub fn record_stop(&self, stop: Stop) -> anyhow::Result<()> {
        self.write(Some(stop))
    }

    fn write(&self, stop: Option<Stop>) -> anyhow::Result<()> {
        let temporary = self.path.with_extension("json.tmp");
        fs::write(&temporary, self.render(stop))
            .with_context(|| format!("failed to write `{}`", temporary.display()))?;
        fs::rename(&temporary, &self.path).with_context(|| {
            format!(
                "failed to rename `{}` to `{}`",
                temporary.display(),
                self.path.display()
            )
        })
    }

    fn render(&self, stop: Option<Stop>) -> String {
        let mut fields = vec![
            ("version", json::quote(&self.version)),
            ("pid", self.pid.to_string()),
            ("listen", json::quote(&self.listen.to_string())),
            ("started_at", json::quote(&format_utc(self.started_at))),
        ];
        match stop {
            None => fields.push(("status", json::quote("running"))),
            Some(stop) => {
                fields.push(("status", json::quote("stopped")));
                fields.push(("stopped_at", json::quote(&format_utc(stop.stopped_at))));
                fields.push(("requests_total", stop.requests_total.to_string()));
            }
        }

        let body: Vec<String> = fields
            .into_iter()
            .map(|(name, value)| format!("  {}: {value}", json::quote(name)))
            .collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }
}

/// Formats a time as RFC 3339 in UTC with milliseconds, such as `2026-05-01T12:00:00.250Z`.
fn format_utc(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let second_of_day = seconds % 86_400;

    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// This is Howard Hinnant's `civil_from_days`, restricted to dates after the epoch. It
/// counts in 400-year eras whose years start on March 1, so the leap day falls at the end
/// of a year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);

    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn format_utc_matches_known_dates() {
        let cases = [
            ("epoch", 0, "1970-01-01T00:00:00.000Z"),
            ("leap day 2000", 951_825_600, "2000-02-29T12:00:00.000Z"),
            (
                "march after leap day",
                951_868_800,
                "2000-03-01T00:00:00.000Z",
            ),
            ("end of 2025", 1_767_225_599, "2025-12-31T23:59:59.000Z"),
            ("leap day 2028", 1_835_395_200, "2028-02-29T00:00:00.000Z"),
        ];

        for (name, seconds, expected) in cases {
            let time = UNIX_EPOCH + Duration::from_secs(seconds);
            assert_eq!(format_utc(time), expected, "case {name}");
        }
    }

    #[test]
    fn format_utc_keeps_milliseconds() {
        let time = UNIX_EPOCH + Duration::from_millis(1_250);

        assert_eq!(format_utc(time), "1970-01-01T00:00:01.250Z");
    }

    #[test]
    fn stopped_state_lists_request_count() {
        let state = StateFile {
            path: PathBuf::from("unused"),
            version: "v1".to_owned(),
            pid: 42,
            listen: SocketAddr::from(([127, 0, 0, 1], 18080)),
            started_at: UNIX_EPOCH,
        };

        let text = state.render(Some(Stop {
            stopped_at: UNIX_EPOCH + Duration::from_secs(60),
            requests_total: 7,
        }));

        assert_eq!(
            text,
            "{\n  \"version\": \"v1\",\n  \"pid\": 42,\n  \"listen\": \"127.0.0.1:18080\",\n  \
             \"started_at\": \"1970-01-01T00:00:00.000Z\",\n  \"status\": \"stopped\",\n  \
             \"stopped_at\": \"1970-01-01T00:01:00.000Z\",\n  \"requests_total\": 7\n}\n"
        );
    }
}
