//! Closed model: concurrency, keep-alive and reconnects.

use std::num::NonZeroUsize;
use std::time::Duration;

use umbra_host::load::{ClosedConfig, HttpTarget, RunControl, run_closed};

use crate::support::{
    ServerConfig, ServerStats, TestServer, alive_tasks, assert_near, tasks_finish,
};

fn closed_config(connections: usize, duration: Duration) -> ClosedConfig {
    ClosedConfig::new(connections, Some(duration))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_holds_concurrency() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_millis(20),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let tasks_before = alive_tasks();

    let config = closed_config(8, Duration::from_secs(1));
    let report = run_closed(&target, &config, RunControl::default())
        .await
        .expect("run finishes");

    assert_eq!(ServerStats::get(&server.stats.max_in_flight), 8);
    assert_eq!(
        ServerStats::get(&server.stats.connections_accepted),
        8,
        "keep-alive"
    );
    assert_eq!(report.errors(), 0);
    // 8 connections at about 20 ms each: at most 400 requests per second.
    assert!(report.throughput_rps <= 400.0, "{report:?}");
    assert!(report.throughput_rps >= 250.0, "{report:?}");
    assert!(report.latency.p50_us >= 20_000, "{:?}", report.latency);
    assert_eq!(report.latency, report.service_time);
    assert_near("duration", report.duration.as_secs_f64(), 1.0, 0.10);
    assert!(
        tasks_finish(tasks_before).await,
        "tasks left: {}",
        alive_tasks()
    );
    assert!(server.wait_for_idle(Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_reconnects_after_server_close() {
    let server = TestServer::start(ServerConfig {
        close_connections: true,
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);

    let config = closed_config(2, Duration::from_millis(500));
    let report = run_closed(&target, &config, RunControl::default())
        .await
        .expect("run finishes");

    assert!(report.ok >= 20, "{report:?}");
    assert_eq!(report.errors(), 0, "{report:?}");
    let accepted = ServerStats::get(&server.stats.connections_accepted);
    assert!(accepted >= report.ok, "accepted {accepted}, {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_spreads_paths() {
    let server = TestServer::start(ServerConfig::default());
    let target = HttpTarget::new(server.addr).with_weighted_paths([("/", 3), ("/missing", 1)]);

    let config = closed_config(2, Duration::from_millis(500));
    let report = run_closed(&target, &config, RunControl::default())
        .await
        .expect("run finishes");

    assert!(report.requests >= 40, "{report:?}");
    let missing_share = report.client_errors as f64 / report.requests as f64;
    assert_near("share of /missing", missing_share, 0.25, 0.10);
    assert_eq!(report.errors(), 0);
    assert_eq!(report.error_ratio, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_on_dedicated_threads_holds_concurrency() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_millis(20),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr).with_weighted_paths([("/", 1), ("/missing", 1)]);
    let tasks_before = alive_tasks();

    let config = ClosedConfig {
        dedicated_threads: NonZeroUsize::new(3),
        ..closed_config(8, Duration::from_millis(500))
    };
    let report = run_closed(&target, &config, RunControl::default())
        .await
        .expect("run finishes");

    assert_eq!(ServerStats::get(&server.stats.max_in_flight), 8);
    assert_eq!(ServerStats::get(&server.stats.connections_accepted), 8);
    assert!(report.requests >= 120, "{report:?}");
    assert_eq!(report.ok + report.client_errors, report.requests);
    assert_eq!(report.errors(), 0);
    assert!(
        tasks_finish(tasks_before).await,
        "tasks left: {}",
        alive_tasks()
    );
    assert!(server.wait_for_idle(Duration::from_secs(1)).await);
}
