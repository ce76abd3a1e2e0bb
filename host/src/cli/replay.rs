//! `umbra replay`: a recorded series through a model twin and the failure predictor.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use umbra_host::model::{LoadedModel, Predictor, SeriesFormat, TwinConfig, parse_series, replay};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// CSV series to replay.
    #[arg(long)]
    input: PathBuf,
    /// Input layout: `timestamp-value` (header line, then `timestamp,value`, as in NAB) or
    /// `columns` (headerless numeric columns, as in JumpStarter).
    #[arg(long, value_enum, default_value_t = Format::TimestampValue)]
    format: Format,
    /// Column to read with `--format columns`, counting from 0.
    #[arg(long, default_value_t = 0)]
    column: usize,
    /// Seconds between rows with `--format columns`.
    #[arg(long, default_value_t = 300.0)]
    step_seconds: f64,
    /// Compared metric the series stands for (`cpu`, `latency_p99`, …); its relative
    /// change against the twin's forecast becomes a model feature.
    #[arg(long)]
    metric: Option<String>,
    /// Source of the failure probability.
    #[arg(long, value_enum, default_value_t = PredictorChoice::Default)]
    predictor: PredictorChoice,
    /// Output CSV; standard output when absent.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    TimestampValue,
    Columns,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PredictorChoice {
    /// The built-in default model.
    Default,
    /// The rule-based estimate.
    RuleBased,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("failed to read `{}`", args.input.display()))?;
    let format = match args.format {
        Format::TimestampValue => SeriesFormat::TimestampValue,
        Format::Columns => SeriesFormat::Columns {
            column: args.column,
            step_seconds: args.step_seconds,
        },
    };
    let points = parse_series(&text, format)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid series in `{}`", args.input.display()))?;
    let mut predictor = match args.predictor {
        PredictorChoice::Default => Predictor::with_model(LoadedModel::built_in()?),
        PredictorChoice::RuleBased => Predictor::rule_based(),
    };
    let rows = replay(
        &points,
        args.metric.as_deref(),
        TwinConfig::default(),
        &mut predictor,
    )
    .map_err(anyhow::Error::msg)?;

    let mut out: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("failed to create `{}`", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    writeln!(
        out,
        "timestamp,value,forecast,drift_score,failure_probability,confidence,source"
    )?;
    for row in &rows {
        writeln!(
            out,
            "{},{},{:.6},{:.6},{:.6},{:.6},{}",
            row.timestamp,
            row.value,
            row.forecast,
            row.drift_score,
            row.failure_probability,
            row.confidence,
            row.source
        )?;
    }
    out.flush().context("failed to write the replay output")?;
    Ok(ExitCode::SUCCESS)
}
