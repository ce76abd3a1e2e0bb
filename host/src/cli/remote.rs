//! Commands that talk to a running daemon over its API: `umbra deploy`,
//! `umbra rollback` and `umbra status`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::json;
use umbra_host::engine::{DeployOutcome, StatusReport};
use umbra_host::ingest::HttpClient;

/// How to reach the daemon.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the daemon's API.
    #[arg(
        long,
        value_name = "URL",
        env = "UMBRA_API",
        default_value = "http://127.0.0.1:7070"
    )]
    api: String,
    /// Environment variable holding the bearer token for mutating requests.
    #[arg(long, value_name = "NAME", default_value = "UMBRA_API_TOKEN")]
    token_env: String,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Asset to deploy to.
    asset: String,
    /// Version label of the new configuration.
    #[arg(long)]
    version: String,
    /// The version's configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Asset to roll back.
    asset: String,
    /// Target version; the latest known-good one when omitted.
    #[arg(long = "to")]
    to_version: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the raw JSON status instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_RESPONSE: usize = 16 << 20;

async fn request(
    api: &ApiArgs,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let client = HttpClient::default();
    let url = format!("{}{path}", api.api.trim_end_matches('/'));
    let token = std::env::var(&api.token_env).unwrap_or_default();
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("content-type", "application/json")];
    if !token.is_empty() {
        headers.push(("authorization", authorization.as_str()));
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let response = client
        .send(method, &url, &headers, body, TIMEOUT, MAX_RESPONSE)
        .await
        .with_context(|| {
            format!(
                "cannot reach the daemon at {}: is `umbra run` running? Pass its `api.listen` address with --api or `UMBRA_API`",
                api.api
            )
        })?;
    let value = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
    Ok((response.status, value))
}

fn fail(status: u16, value: &serde_json::Value) -> anyhow::Result<ExitCode> {
    let message = value["error"].as_str().unwrap_or("no message");
    eprintln!("error: the daemon refused the request (HTTP {status}): {message}");
    Ok(ExitCode::from(1))
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let config = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read `{}`", args.config.display()))?;
    block_on(async {
        let body = json!({"asset": args.asset, "version": args.version, "config": config, "origin": "cli"});
        let (status, value) =
            request(&args.api, Method::POST, "/v1/deployments", Some(body)).await?;
        if status != 201 {
            return fail(status, &value);
        }
        let outcome: DeployOutcome = serde_json::from_value(value)?;
        outln!(
            "deployed {} {} (was {}); status {}; its shadow starts now",
            outcome.asset,
            outcome.version,
            outcome.previous.as_deref().unwrap_or("-"),
            outcome.status
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    block_on(async {
        let body = json!({"asset": args.asset, "to_version": args.to_version});
        let (status, value) = request(&args.api, Method::POST, "/v1/rollback", Some(body)).await?;
        if status != 200 {
            return fail(status, &value);
        }
        let outcome: DeployOutcome = serde_json::from_value(value)?;
        outln!(
            "rolled {} back from {} to {}",
            outcome.asset,
            outcome.previous.as_deref().unwrap_or("-"),
            outcome.version
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    block_on(async {
        let (status, value) = request(&args.api, Method::GET, "/v1/status", None).await?;
        if status != 200 {
            return fail(status, &value);
        }
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(ExitCode::SUCCESS);
        }
        let report: StatusReport = serde_json::from_value(value)?;
        out!("{}", render(&report));
        Ok(ExitCode::SUCCESS)
    })
}

/// Tables of services and assets.
pub fn render(report: &StatusReport) -> String {
    let mut out = format!(
        "tick {}{}\n\n",
        report.tick,
        if report.dry_run { " (dry run)" } else { "" }
    );
    out.push_str(&format!(
        "{:<16} {:>11} {:>10} {:>9}  {}\n",
        "SERVICE", "CRITICALITY", "CONFIDENCE", "THRESHOLD", "DEPENDS ON"
    ));
    for service in &report.services {
        out.push_str(&format!(
            "{:<16} {:>11.2} {:>10.2} {:>9.2}  {}{}\n",
            service.name,
            service.criticality,
            service.confidence,
            service.threshold,
            if service.depends_on.is_empty() {
                "-".to_owned()
            } else {
                service.depends_on.join(",")
            },
            if service.below_threshold {
                "  BELOW THRESHOLD"
            } else {
                ""
            }
        ));
    }
    out.push_str(&format!(
        "\n{:<16} {:<10} {:<10} {:<11} {:<11} {:>6} {:>6} {:>10}  {}\n",
        "ASSET",
        "VERSION",
        "STATUS",
        "ROLLBACK-TO",
        "PHASE",
        "DRIFT",
        "P(FAIL)",
        "CONFIDENCE",
        "PROFILE"
    ));
    for asset in &report.assets {
        let profile = asset
            .profile
            .as_ref()
            .map(|p| {
                let percent = (p.elapsed_ms * 100)
                    .checked_div(p.duration_ms)
                    .unwrap_or(100)
                    .min(100);
                format!("{} on {} {percent}%", p.name, p.role)
            })
            .unwrap_or_else(|| "-".to_owned());
        out.push_str(&format!(
            "{:<16} {:<10} {:<10} {:<11} {:<11} {:>6} {:>6.2} {:>10.2}  {}\n",
            asset.name,
            asset.version,
            asset.version_status,
            asset.known_good_version.as_deref().unwrap_or("-"),
            asset.phase,
            asset
                .drift_score
                .map_or("-".to_owned(), |d| format!("{d:.2}")),
            asset.failure_probability,
            asset.confidence,
            profile
        ));
        if let Some(error) = &asset.live_error {
            out.push_str(&format!("{:<16} live unreachable: {error}\n", ""));
        }
        if let Some(failure) = &asset.shadow_failure {
            out.push_str(&format!("{:<16} shadow failed: {failure}\n", ""));
        }
    }
    out
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    future: F,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let result = runtime.block_on(future);
    if let Err(error) = &result
        && error.to_string().is_empty()
    {
        bail!("request failed");
    }
    result
}
