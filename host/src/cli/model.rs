//! `umbra model`: the failure-model repository in a store.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use umbra_host::model::{
    ActiveChoice, History, ModelMetadata, ModelRepository, StoredModel, export_dataset,
};
use umbra_host::store::{Store, StoreConfig};

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Directory of the store that contains the repository. `import` creates it when
    /// missing; the other commands need it to exist.
    #[arg(long)]
    store: PathBuf,

    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Check an ONNX model in tract and store it with its metadata.
    Import {
        /// The `.onnx` file.
        file: PathBuf,
        /// Metadata JSON; defaults to the model file with the extension `.json`.
        #[arg(long)]
        metadata: Option<PathBuf>,
    },
    /// List the stored models and mark the active one.
    List,
    /// Make a model active, or `rule-based` to predict without a model. The engine picks
    /// the change up on its next tick.
    Activate {
        /// `NAME@VERSION`, or `rule-based`.
        reference: String,
    },
    /// Print a model's stored metadata as JSON.
    Show {
        /// `NAME@VERSION`.
        reference: String,
    },
    /// Write the recorded per-tick features and shadow failures as labelled CSV.
    ExportDataset {
        /// Start of the range: RFC 3339 UTC (`2026-12-01T00:00:00Z`) or Unix milliseconds.
        #[arg(long)]
        since: String,
        /// End of the range, inclusive, in the same formats.
        #[arg(long)]
        until: String,
        /// A row is labelled 1 when its asset's shadow failed within this many seconds.
        #[arg(long, default_value_t = 60)]
        horizon_seconds: u32,
        /// Output file; standard output when absent.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

pub fn run(args: ModelArgs) -> anyhow::Result<ExitCode> {
    // Reading commands must not leave an empty store behind a mistyped path.
    if !matches!(args.command, ModelCommand::Import { .. }) && !args.store.is_dir() {
        anyhow::bail!(
            "no store in `{}`: pass the `store.path` directory of the engine's configuration, or import a model first",
            args.store.display()
        );
    }
    let store = Store::open(&args.store, StoreConfig::default())
        .with_context(|| format!("failed to open the store in `{}`", args.store.display()))?;
    let repository =
        ModelRepository::open(&store).context("failed to open the model repository")?;
    match args.command {
        ModelCommand::Import { file, metadata } => import(&repository, &file, metadata),
        ModelCommand::List => list(&repository),
        ModelCommand::Activate { reference } => activate(&repository, &reference),
        ModelCommand::Show { reference } => show(&repository, &reference),
        ModelCommand::ExportDataset {
            since,
            until,
            horizon_seconds,
            output,
        } => export(&store, &since, &until, horizon_seconds, output),
    }
}

fn import(
    repository: &ModelRepository,
    file: &Path,
    metadata: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let metadata_path = metadata.unwrap_or_else(|| file.with_extension("json"));
    let bytes =
        std::fs::read(file).with_context(|| format!("failed to read `{}`", file.display()))?;
    let metadata_bytes = std::fs::read(&metadata_path).with_context(|| {
        format!(
            "failed to read the metadata `{}`: pass it with --metadata",
            metadata_path.display()
        )
    })?;
    let metadata = ModelMetadata::from_json(&metadata_bytes)
        .with_context(|| format!("failed to parse `{}`", metadata_path.display()))?;
    let stored = repository
        .import(&bytes, metadata)
        .with_context(|| format!("model `{}` was not imported", file.display()))?;
    outln!(
        "imported {} sha256:{}",
        stored.metadata.reference(),
        stored.sha256
    );
    Ok(ExitCode::SUCCESS)
}

fn list(repository: &ModelRepository) -> anyhow::Result<ExitCode> {
    let active = repository.active()?;
    let rule_mark = if active == ActiveChoice::RuleBased {
        "*"
    } else {
        " "
    };
    outln!("  {:<28} {:>9} {:<12} sha256", "model", "horizon", "origin");
    for stored in repository.list()? {
        let reference = stored.metadata.reference();
        let is_active = matches!(&active, ActiveChoice::Model { reference: r } if *r == reference);
        outln!(
            "{} {:<28} {:>8}s {:<12} {}",
            if is_active { "*" } else { " " },
            reference,
            stored.metadata.horizon_seconds,
            if stored.built_in {
                "built-in"
            } else {
                "imported"
            },
            stored.sha256
        );
    }
    outln!(
        "{rule_mark} {:<28} {:>9} {:<12} -",
        "rule-based",
        "-",
        "built-in"
    );
    Ok(ExitCode::SUCCESS)
}

fn activate(repository: &ModelRepository, reference: &str) -> anyhow::Result<ExitCode> {
    let previous = repository.activate(reference).with_context(|| {
        format!("model `{reference}` was not activated; the active model is unchanged")
    })?;
    let previous = match previous {
        ActiveChoice::Model { reference } => reference,
        ActiveChoice::RuleBased => "rule-based".to_owned(),
    };
    outln!(
        "active: {reference} (previous: {previous}; run `umbra model activate {previous}` to roll back)"
    );
    Ok(ExitCode::SUCCESS)
}

fn show(repository: &ModelRepository, reference: &str) -> anyhow::Result<ExitCode> {
    let stored: StoredModel = repository
        .get(reference)?
        .ok_or_else(|| umbra_host::model::ModelError::NotFound(reference.to_owned()))?;
    outln!("{}", serde_json::to_string_pretty(&stored)?);
    Ok(ExitCode::SUCCESS)
}

fn export(
    store: &Store,
    since: &str,
    until: &str,
    horizon_seconds: u32,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let since_ms = parse_time(since).with_context(|| format!("invalid --since `{since}`"))?;
    let until_ms = parse_time(until).with_context(|| format!("invalid --until `{until}`"))?;
    anyhow::ensure!(
        since_ms <= until_ms,
        "--since `{since}` is after --until `{until}`"
    );
    let history = History::open(store)?;
    let horizon_ms = i64::from(horizon_seconds) * 1000;

    let stats = match &output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("failed to create `{}`", path.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            let stats = export_dataset(&history, since_ms, until_ms, horizon_ms, &mut writer)?;
            writer
                .flush()
                .with_context(|| format!("failed to write `{}`", path.display()))?;
            stats
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            export_dataset(&history, since_ms, until_ms, horizon_ms, &mut stdout)?
        }
    };
    eprintln!(
        "exported {} rows ({} labelled 1); left out {} rows whose horizon passes --until and {} rows of another feature set version",
        stats.rows, stats.positive_rows, stats.unlabelled, stats.other_version
    );
    Ok(ExitCode::SUCCESS)
}

/// Parses Unix milliseconds or an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let body = text.strip_suffix('Z').ok_or_else(|| {
        anyhow::anyhow!("expected Unix milliseconds or an RFC 3339 UTC time ending in `Z`")
    })?;
    let (date, time) = body
        .split_once('T')
        .ok_or_else(|| anyhow::anyhow!("expected `T` between date and time"))?;
    let numbers = |part: &str, count: usize| -> anyhow::Result<Vec<i64>> {
        let values: Vec<i64> = part
            .split(['-', ':'])
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("expected digits")?;
        anyhow::ensure!(values.len() == count, "expected {count} fields in `{part}`");
        Ok(values)
    };
    let (whole, fraction) = time.split_once('.').unwrap_or((time, ""));
    let d = numbers(date, 3)?;
    let t = numbers(whole, 3)?;
    anyhow::ensure!(
        (1..=12).contains(&d[1]) && (1..=31).contains(&d[2]) && t[0] < 24 && t[1] < 60 && t[2] < 61,
        "date or time out of range"
    );
    let millis: i64 = format!("{fraction:0<3}")
        .get(..3)
        .unwrap_or("000")
        .parse()
        .context("expected digits after `.`")?;
    let days = days_from_civil(d[0], d[1], d[2]);
    Ok(((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn parse_time_formats() -> anyhow::Result<()> {
        assert_eq!(parse_time("1700000000000")?, 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:00Z")?, 0);
        assert_eq!(parse_time("2023-11-14T22:13:20Z")?, 1_700_000_000_000);
        assert_eq!(parse_time("2024-02-29T00:00:00.5Z")?, 1_709_164_800_500);
        assert!(parse_time("2024-02-29 00:00:00").is_err());
        assert!(parse_time("2024-13-01T00:00:00Z").is_err());
        Ok(())
    }
}
