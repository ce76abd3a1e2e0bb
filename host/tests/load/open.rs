//! Open model: rate, coordinated omission, ramps and the bounded queue.

use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::sync::mpsc;
use umbra_host::load::{HttpTarget, LoadPlan, OpenConfig, RunControl, Snapshot, Stage, run_open};

use crate::support::{
    ServerConfig, ServerStats, Stall, TestServer, alive_tasks, assert_near, tasks_finish,
};

fn open_config(max_connections: usize, queue_capacity: usize) -> OpenConfig {
    OpenConfig {
        max_connections,
        queue_capacity,
        dedicated_threads: None,
    }
}

/// Runs `plan` and returns the report with every snapshot sent during the run.
async fn run_with_snapshots(
    target: &HttpTarget,
    plan: &LoadPlan,
    config: &OpenConfig,
) -> (umbra_host::load::LoadReport, Vec<Snapshot>) {
    let (sender, mut receiver) = mpsc::channel(64);
    let control = RunControl::default().with_snapshots(sender, Duration::from_secs(1));

    let report = run_open(target, plan, config, control)
        .await
        .expect("run finishes");

    let mut snapshots = Vec::new();
    while let Some(snapshot) = receiver.recv().await {
        snapshots.push(snapshot);
    }
    (report, snapshots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_delivers_requested_rate() {
    let server = TestServer::start(ServerConfig::default());
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::hold(200.0, Duration::from_secs(3))]).expect("plan");

    let (report, snapshots) = run_with_snapshots(&target, &plan, &open_config(16, 1024)).await;

    assert_near("requests", report.requests as f64, 600.0, 0.10);
    assert_near("server requests", server.requests() as f64, 600.0, 0.10);
    assert_eq!(report.ok, report.requests);
    assert_eq!(report.errors(), 0);
    assert_near("duration", report.duration.as_secs_f64(), 3.0, 0.10);
    assert_near("throughput", report.throughput_rps, 200.0, 0.10);
    let full_intervals: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|snapshot| snapshot.interval >= Duration::from_millis(900))
        .collect();
    assert!(full_intervals.len() >= 2, "{snapshots:?}");
    for snapshot in full_intervals {
        assert_near("interval throughput", snapshot.throughput_rps, 200.0, 0.20);
        let target_rps = snapshot.target_rps.expect("open model plans a rate");
        assert_near("interval target", target_rps, 200.0, 0.01);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_from_intended_time_exposes_stall() {
    let stall = Stall {
        after: Duration::from_secs(1),
        length: Duration::from_millis(500),
    };
    let server = TestServer::start(ServerConfig {
        stall: Some(stall),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::hold(200.0, Duration::from_secs(3))]).expect("plan");

    // One connection: during the stall the requests wait in the queue, not on the wire,
    // so only one of them includes the stall in its service time.
    let (report, _) = run_with_snapshots(&target, &plan, &open_config(1, 1000)).await;

    assert_eq!(report.ok, 600);
    assert_eq!(report.dropped, 0);
    assert!(
        report.latency.p99_us >= 400_000,
        "latency {:?}",
        report.latency
    );
    assert!(
        report.latency.p90_us >= 100_000,
        "latency {:?}",
        report.latency
    );
    assert!(
        report.latency.max_us >= 450_000,
        "latency {:?}",
        report.latency
    );
    assert!(
        report.service_time.p99_us < 100_000,
        "service time {:?}",
        report.service_time
    );
    assert!(
        report.service_time.max_us >= 400_000,
        "service time {:?}",
        report.service_time
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_increases_throughput_each_second() {
    let server = TestServer::start(ServerConfig::default());
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::ramp(50.0, 350.0, Duration::from_secs(3))]).expect("plan");

    let (report, snapshots) = run_with_snapshots(&target, &plan, &open_config(16, 1024)).await;

    assert_near("requests", report.requests as f64, 600.0, 0.05);
    assert!(snapshots.len() >= 3, "{snapshots:?}");
    let rates: Vec<f64> = snapshots.iter().take(3).map(|s| s.throughput_rps).collect();
    assert!(rates[1] > rates[0], "rates {rates:?}");
    assert!(rates[2] > rates[1], "rates {rates:?}");
    assert_near("first second", rates[0], 100.0, 0.25);
    assert_near("second second", rates[1], 200.0, 0.25);
    assert_near("third second", rates[2], 300.0, 0.25);
}

/// A low rate on a large pool reuses the connections it opened, as a client's pool
/// would, and opens more only when the load needs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_rate_reuses_few_connections() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_millis(2),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![
        Stage::hold(40.0, Duration::from_secs(2)),
        Stage::hold(400.0, Duration::from_millis(500)),
    ])
    .expect("plan");

    let (report, _) = run_with_snapshots(&target, &plan, &open_config(64, 1024)).await;

    assert_eq!(report.ok, report.requests, "{report:?}");
    let accepted = ServerStats::get(&server.stats.connections_accepted);
    assert!(
        (1..=16).contains(&accepted),
        "{} requests at 40 and 400 req/s with 2 ms each opened {accepted} connections",
        report.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_requests() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_millis(200),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::hold(100.0, Duration::from_secs(1))]).expect("plan");

    let (report, _) = run_with_snapshots(&target, &plan, &open_config(2, 3)).await;

    assert_eq!(report.requests, 100);
    assert!(report.dropped >= 70, "{report:?}");
    assert_eq!(report.errors_by_class.dropped, report.dropped);
    assert_eq!(report.ok + report.dropped, report.requests);
    assert_eq!(report.errors(), report.dropped);
    assert!(ServerStats::get(&server.stats.max_in_flight) <= 2);
    assert_eq!(server.requests(), report.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_queue_drops_when_connections_busy() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_millis(100),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::hold(50.0, Duration::from_secs(1))]).expect("plan");

    let (report, _) = run_with_snapshots(&target, &plan, &open_config(1, 0)).await;

    assert_eq!(report.requests, 50);
    assert!(report.ok >= 5, "{report:?}");
    assert!(report.ok <= 11, "{report:?}");
    assert_eq!(report.ok + report.dropped, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_open_run_leaves_no_tasks() {
    let server = TestServer::start(ServerConfig::default());
    let target = HttpTarget::new(server.addr).with_paths(["/a", "/b"]);
    let plan = LoadPlan::new(vec![Stage::hold(100.0, Duration::from_millis(500))]).expect("plan");
    let tasks_before = alive_tasks();

    let report = run_open(&target, &plan, &open_config(8, 16), RunControl::default())
        .await
        .expect("run finishes");

    assert_eq!(report.ok, 50);
    assert!(
        tasks_finish(tasks_before).await,
        "tasks left: {}",
        alive_tasks()
    );
    assert!(server.wait_for_idle(Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_on_dedicated_threads_delivers_rate() {
    let server = TestServer::start(ServerConfig::default());
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::hold(200.0, Duration::from_secs(1))]).expect("plan");
    let config = OpenConfig {
        dedicated_threads: NonZeroUsize::new(2),
        ..open_config(8, 64)
    };
    let tasks_before = alive_tasks();

    let (report, snapshots) = run_with_snapshots(&target, &plan, &config).await;

    assert_eq!(report.ok, 200);
    assert_near("duration", report.duration.as_secs_f64(), 1.0, 0.10);
    assert!(!snapshots.is_empty());
    assert!(
        tasks_finish(tasks_before).await,
        "tasks left: {}",
        alive_tasks()
    );
    assert!(server.wait_for_idle(Duration::from_secs(1)).await);
}
