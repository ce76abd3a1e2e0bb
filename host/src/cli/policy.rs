//! `umbra policy check` and `umbra policy eval`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use umbra_host::policy::{
    self, Case, Decision, MemoryEvents, PolicyConfig, PolicyRuntime, PolicySource, SandboxLimits,
};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load and validate a policy; print its digest and the decisions it makes.
    Check {
        /// A `.wasm` component or a `.rhai` script.
        file: PathBuf,
    },
    /// Run one decision case through a policy and print the JSON result.
    ///
    /// Exits with status 1 when the case has an expectation that the
    /// decision does not meet, when the policy failed and the fallback
    /// decided instead, or when the thresholds script failed.
    Eval {
        /// A `.wasm` component or a `.rhai` script.
        file: PathBuf,
        /// JSON case: `decision`, `settings`, `input` and optional `expect`.
        #[arg(long)]
        input: PathBuf,
        /// Thresholds script whose `thresholds(asset)` supplies settings;
        /// `builtin` for the embedded `policies/thresholds.rhai`.
        #[arg(long)]
        thresholds: Option<PathBuf>,
        /// Deadline of the call, in milliseconds.
        #[arg(long, default_value_t = SandboxLimits::default().deadline_ms)]
        deadline_ms: u64,
    },
}

pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file } => check(file),
        PolicyCommand::Eval {
            file,
            input,
            thresholds,
            deadline_ms,
        } => eval(file, input, thresholds, deadline_ms),
    }
}

fn check(file: PathBuf) -> anyhow::Result<ExitCode> {
    let loaded = match policy::load_file(&file, &SandboxLimits::default()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!(
                "error: {:#}",
                anyhow::Error::new(error)
                    .context(format!("policy `{}` is not usable", file.display()))
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    outln!("policy:    {}", file.display());
    outln!("digest:    {}", loaded.digest());
    let decisions: Vec<&str> = Decision::ALL
        .into_iter()
        .filter(|decision| loaded.implements(*decision))
        .map(Decision::as_str)
        .collect();
    outln!("decisions: {}", decisions.join(", "));
    Ok(ExitCode::SUCCESS)
}

fn eval(
    file: PathBuf,
    input: PathBuf,
    thresholds: Option<PathBuf>,
    deadline_ms: u64,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&input)
        .with_context(|| format!("failed to read case `{}`", input.display()))?;
    let case = Case::parse(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid case file `{}`", input.display()))?;

    let mut config = PolicyConfig {
        thresholds: None,
        ..PolicyConfig::default()
    };
    config.sandbox.deadline_ms = deadline_ms;
    config.settings.extend(case.settings.clone());
    let loaded = policy::load_file(&file, &config.sandbox)
        .with_context(|| format!("policy `{}` is not usable", file.display()))?;
    let events = Arc::new(MemoryEvents::default());
    let runtime = PolicyRuntime::for_policy(
        loaded,
        PolicySource(file.clone()),
        thresholds.map(PolicySource),
        &config,
        events.clone(),
    )
    .context("failed to load the thresholds script")?;

    let result = case
        .run(&runtime)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid case file `{}`", input.display()))?;
    // Events include failures that do not replace the decision, such as a
    // thresholds script that failed and left the configured settings in use.
    let recorded = events.snapshot();
    let mut output = serde_json::to_value(&result)?;
    output["events"] = serde_json::to_value(&recorded)?;
    outln!("{}", serde_json::to_string_pretty(&output)?);
    if result.policy_error.is_some() || !result.mismatches.is_empty() || !recorded.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
