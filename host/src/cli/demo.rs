//! `umbra demo`: the whole mission on the bundled demo service.
//!
//! It starts live v1 of the demo service with simulated users, lets its
//! shadow pass a peak run so v1 becomes known-good, deploys v2 (a smaller
//! worker pool without a cache), watches v2's shadow fail under peak load,
//! checks a control shadow of v1 under the same load, rolls live back to v1
//! and waits for confidence to recover. Every step prints as it happens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use umbra_host::config::{
    ApiConfig, AssetConfig, AssetKind, EngineConfig, EngineSettings, LoadConfig, MetricsSource,
    ProfileConfig, ProfileKind, ServiceConfig, SloConfig, StoreSection,
};
use umbra_host::engine::process::{free_port, resolve_program};
use umbra_host::engine::{Engine, EngineEvent, Stamped};
use umbra_host::ingest::HttpClient;
use umbra_host::load::{self, HttpTarget, LoadPlan, OpenConfig, RunControl, Stage};

use umbra_host::engine::timeline;

const DEMO_SERVICE: &str = "umbra-demo-service";
const V1: &str = include_str!("../../../examples/demo-service/configs/v1.toml");
const V2: &str = include_str!("../../../examples/demo-service/configs/v2.toml");
const ASSET: &str = "shop-api";
const ITEMS: u32 = 50;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the store, logs and shadow data in this directory instead of a
    /// temporary one that is removed at the end.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Address of the engine's API during the demo; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    api: SocketAddr,
    /// Rate of the simulated users of the live service.
    #[arg(long, value_name = "RPS", default_value_t = 30.0)]
    user_rps: f64,
    /// Write a JSON summary of the run to this file.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
}

fn demo_config(work_dir: &Path, program: &Path, live_port: u16, api: SocketAddr) -> EngineConfig {
    let profile = ProfileConfig::new;
    EngineConfig {
        engine: EngineSettings {
            tick_ms: 500,
            window_ticks: 6,
            calibration_windows: 2,
            warmup_windows: 4,
            startup_timeout_ms: 10_000,
            known_good_hold_ms: 8_000,
            rollback_window_ms: 600_000,
            control_shadow: true,
            dry_run: false,
            stop_live_on_exit: true,
            work_dir: work_dir.to_path_buf(),
        },
        store: StoreSection::default(),
        api: ApiConfig {
            listen: api,
            token_env: None,
        },
        confidence: Default::default(),
        policies: Default::default(),
        model: Default::default(),
        service: vec![ServiceConfig {
            name: "shop".to_owned(),
            criticality: 0.9,
            depends_on: Vec::new(),
        }],
        asset: vec![AssetConfig {
            name: ASSET.to_owned(),
            service: "shop".to_owned(),
            kind: AssetKind::Process,
            command: [
                &program.display().to_string(),
                "--config",
                "{config}",
                "--port",
                "{port}",
                "--data-dir",
                "{data_dir}",
            ]
            .map(str::to_owned)
            .to_vec(),
            version: "v1".to_owned(),
            config: work_dir.join("v1.toml"),
            port: live_port,
            data_dir: None,
            health_path: "/health".to_owned(),
            metrics: Some(MetricsSource {
                path: "/metrics".to_owned(),
                requests: "demo_requests_total".to_owned(),
                status_label: "code".to_owned(),
                latency: "demo_request_duration_seconds".to_owned(),
            }),
            slo: SloConfig {
                latency_p99_ms: 250.0,
                error_rate: 0.01,
                breach_ticks: 3,
            },
            load: LoadConfig {
                paths: (0..ITEMS).map(|id| format!("/api/items/{id}")).collect(),
                baseline_rps: None,
                min_rps: 5.0,
                max_connections: 64,
                timeout_ms: 2_000,
            },
            procedure: Vec::new(),
            postgres: None,
            mirror: None,
            shadow: Default::default(),
            twin: None,
        }],
        profile: vec![
            profile("normal", ProfileKind::Normal, 1.0, 0, 0),
            profile("peak", ProfileKind::Peak, 8.0, 3_000, 12_000),
        ],
    }
}

/// Prints events until one matches `goal`, `timeout` passes or `interrupt`
/// fires.
async fn wait_for(
    events: &mut broadcast::Receiver<Stamped>,
    started: Instant,
    timeout: Duration,
    interrupt: &CancellationToken,
    goal: impl Fn(&EngineEvent) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let received = tokio::select! {
            () = interrupt.cancelled() => return false,
            received = tokio::time::timeout_at(deadline, events.recv()) => received,
        };
        match received {
            Err(_) => return false,
            Ok(Err(broadcast::error::RecvError::Closed)) => return false,
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Ok(stamped)) => {
                if let Some(line) = timeline::line(&stamped.event) {
                    // Progress only: a closed pipe loses lines, not the demo.
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "{:>6.1}s  {line}",
                        started.elapsed().as_secs_f64()
                    );
                }
                if goal(&stamped.event) {
                    return true;
                }
            }
        }
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let program = resolve_program(DEMO_SERVICE);
    if !program.is_file() {
        bail!(
            "the demo service `{DEMO_SERVICE}` was not found in PATH or next to `umbra`: build the whole workspace first, with `cargo build --release`"
        );
    }
    let temp;
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("umbra-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create `{}`", work_dir.display()))?;
    std::fs::write(work_dir.join("v1.toml"), V1)?;
    std::fs::write(work_dir.join("v2.toml"), V2)?;
    let live_port = free_port().context("no free loopback port")?;
    let config = demo_config(&work_dir, &program, live_port, args.api);

    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let started = Instant::now();
        // Ctrl-C or SIGTERM ends the demo early but still stops everything it started.
        // The handlers go in before the engine starts, so that a signal during start-up
        // is not fatal and leaves no process behind.
        let interrupt = CancellationToken::new();
        let signal = interrupt.clone();
        let signal_status = Arc::new(AtomicU8::new(0));
        let received = signal_status.clone();
        tokio::spawn(async move {
            received.store(super::ingest::wait_for_shutdown().await, Ordering::Release);
            signal.cancel();
        });
        outln!("umbra demo: live service `{ASSET}` on 127.0.0.1:{live_port}, work directory {}", work_dir.display());
        let api_config = config.api.clone();
        let engine = Engine::start(config).await.context("failed to start the engine")?;
        let handle = engine.handle();
        let mut events = handle.subscribe();
        let api = match umbra_host::api::serve(&api_config, handle.clone()).await {
            Ok(api) => api,
            Err(error) => {
                engine.shutdown().await;
                return Err(error).context("failed to start the API");
            }
        };
        outln!("API on http://{}  (try: umbra status --api http://{})\n", api.local_addr(), api.local_addr());

        let users_stop = CancellationToken::new();
        let users = tokio::spawn(simulated_users(live_port, args.user_rps, users_stop.clone()));

        let mut reached = Vec::new();
        let mut missed = None;
        let steps: [(&str, Duration); 4] = [
            ("v1 becomes known-good", Duration::from_secs(80)),
            ("v2 deployed", Duration::from_secs(10)),
            ("live rolled back to v1", Duration::from_secs(100)),
            ("confidence recovers", Duration::from_secs(40)),
        ];
        for (step, timeout) in steps {
            let ok = match step {
                "v1 becomes known-good" => wait_for(&mut events, started, timeout, &interrupt, |event| {
                    matches!(event, EngineEvent::VersionStatus { version, status, .. } if version == "v1" && status == "known-good")
                }).await,
                "v2 deployed" => {
                    let url = format!("http://{}/v1/deployments", api.local_addr());
                    let body = json!({"asset": ASSET, "version": "v2", "config": V2, "origin": "demo"});
                    let response = HttpClient::default()
                        .send(Method::POST, &url, &[("content-type", "application/json")], Bytes::from(body.to_string()), Duration::from_secs(30), 1 << 20)
                        .await;
                    matches!(response, Ok(ref r) if r.status == 201)
                }
                "live rolled back to v1" => wait_for(&mut events, started, timeout, &interrupt, |event| {
                    matches!(event, EngineEvent::RolledBack { to, dry_run: false, .. } if to == "v1")
                }).await,
                _ => wait_for(&mut events, started, timeout, &interrupt, |event| {
                    matches!(event, EngineEvent::Confidence { below_threshold: false, .. })
                }).await,
            };
            if interrupt.is_cancelled() {
                missed = Some("interrupted by a signal");
                break;
            }
            if !ok {
                missed = Some(step);
                break;
            }
            reached.push(step);
        }

        users_stop.cancel();
        let users = users.await.ok().flatten();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let status = handle.status();
        let asset = status.assets.first().cloned();
        drop(api);
        engine.shutdown().await;
        while let Ok(stamped) = events.try_recv() {
            if let Some(line) = timeline::line(&stamped.event) {
                outln!("{:>6.1}s  {line}", started.elapsed().as_secs_f64());
            }
        }

        let elapsed = started.elapsed().as_secs_f64();
        let (user_requests, user_ok) = users.map_or((0, 0), |r| (r.requests, r.ok));
        let live_counted = asset.as_ref().map_or(0.0, |a| a.live_requests_seen);
        outln!("\nsummary");
        outln!("  steps reached       {}", reached.join(" -> "));
        if let Some(step) = missed {
            outln!("  MISSED              {step}");
        }
        if let Some(asset) = &asset {
            outln!("  live version        {} ({})", asset.version, asset.version_status);
            outln!("  confidence          {:.2}", asset.confidence);
        }
        outln!("  simulated users     {user_requests} requests, {user_ok} answered with success");
        outln!("  live counted        {live_counted:.0} requests (synthetic load went to shadows only)");
        outln!("  duration            {elapsed:.0} s; every process Umbra started is stopped");
        if let Some(path) = &args.summary {
            let summary = json!({
                "reached": reached,
                "missed": missed,
                "user_requests": user_requests,
                "user_ok": user_ok,
                "live_requests_counted": live_counted,
                "final_version": asset.as_ref().map(|a| a.version.clone()),
                "elapsed_s": elapsed,
                "work_dir": work_dir,
            });
            std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        Ok(match missed {
            None => ExitCode::SUCCESS,
            Some(_) if interrupt.is_cancelled() => {
                ExitCode::from(signal_status.load(Ordering::Acquire))
            }
            Some(_) => ExitCode::from(1),
        })
    })
}

/// Users of the live service: a steady open-model load at `rps` until
/// cancelled. They are the only traffic the live service receives besides
/// Umbra's health and metrics reads, which the service does not count.
async fn simulated_users(port: u16, rps: f64, stop: CancellationToken) -> Option<load::LoadReport> {
    let target = HttpTarget::new(SocketAddr::from(([127, 0, 0, 1], port)))
        .with_paths((0..ITEMS).map(|id| format!("/api/items/{id}")))
        .with_timeout(Duration::from_secs(2));
    let plan = LoadPlan::new(vec![Stage::hold(rps, Duration::from_secs(600))]).ok()?;
    let config = OpenConfig {
        max_connections: 8,
        queue_capacity: 64,
        dedicated_threads: None,
    };
    load::run_open(&target, &plan, &config, RunControl::new(stop))
        .await
        .ok()
}
