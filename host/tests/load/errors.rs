//! Failed requests: 5xx responses, timeouts and refused connections.

use std::time::Duration;

use umbra_host::load::{
    ClosedConfig, HttpTarget, LoadPlan, OpenConfig, RunControl, Stage, run_closed, run_open,
};

use crate::support::{ServerConfig, ServerStats, TestServer, assert_near, refused_addr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_counted_by_class() {
    let server = TestServer::start(ServerConfig {
        error_every: Some(4),
        delay: Duration::from_millis(1),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::hold(200.0, Duration::from_secs(1))]).expect("plan");
    let config = OpenConfig {
        max_connections: 4,
        queue_capacity: 100,
        dedicated_threads: None,
    };

    let report = run_open(&target, &plan, &config, RunControl::default())
        .await
        .expect("run finishes");

    assert_eq!(report.requests, 200);
    assert_eq!(report.errors_by_class.server_error, 50);
    assert_eq!(ServerStats::get(&server.stats.server_errors), 50);
    assert_eq!(report.ok, 150);
    assert_eq!(report.errors(), 50);
    assert_eq!(report.error_ratio, 0.25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_timeouts_counted() {
    let server = TestServer::start(ServerConfig {
        slow_path_delay: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr)
        .with_paths(["/slow"])
        .with_timeout(Duration::from_millis(100));
    let plan = LoadPlan::new(vec![Stage::hold(50.0, Duration::from_secs(1))]).expect("plan");
    let config = OpenConfig {
        max_connections: 10,
        queue_capacity: 100,
        dedicated_threads: None,
    };

    let report = run_open(&target, &plan, &config, RunControl::default())
        .await
        .expect("run finishes");

    assert_eq!(report.requests, 50);
    assert_eq!(report.errors_by_class.timeout, 50);
    assert_eq!(report.ok, 0);
    assert!(report.latency.p50_us >= 100_000, "{:?}", report.latency);
    assert!(report.latency.p50_us < 300_000, "{:?}", report.latency);
    // Each timeout closes its connection, so every request used a fresh one.
    assert_eq!(ServerStats::get(&server.stats.connections_accepted), 50);
    assert!(report.duration < Duration::from_millis(1500), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_timeouts_counted() {
    let server = TestServer::start(ServerConfig {
        slow_path_delay: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr)
        .with_weighted_paths([("/", 1), ("/slow", 1)])
        .with_timeout(Duration::from_millis(100));
    let config = ClosedConfig::new(2, Some(Duration::from_secs(1)));

    let report = run_closed(&target, &config, RunControl::default())
        .await
        .expect("run finishes");

    // Each connection alternates a fast request and a 100 ms timeout, so about 10
    // timeouts per connection fit into the second.
    let timeouts = report.errors_by_class.timeout as f64;
    assert_near("timeouts", timeouts, 20.0, 0.25);
    assert!(report.ok as f64 >= timeouts - 2.0, "{report:?}");
    assert_eq!(report.errors(), report.errors_by_class.timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_counted_as_connect() {
    let target = HttpTarget::new(refused_addr());
    let plan = LoadPlan::new(vec![Stage::hold(40.0, Duration::from_millis(500))]).expect("plan");

    let report = run_open(
        &target,
        &plan,
        &OpenConfig::default(),
        RunControl::default(),
    )
    .await
    .expect("run finishes");

    assert_eq!(report.requests, 20);
    assert_eq!(report.errors_by_class.connect, 20);
    assert_eq!(report.error_ratio, 1.0);
    assert_eq!(report.latency.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_back_off() {
    let target = HttpTarget::new(refused_addr());
    let config = ClosedConfig::new(2, Some(Duration::from_millis(500)));

    let report = run_closed(&target, &config, RunControl::default())
        .await
        .expect("run finishes");

    // Backoff of 10, 20, 40, 80, 160 ms...: about 6 attempts per connection in 500 ms.
    let connects = report.errors_by_class.connect;
    assert!(connects >= 8, "{report:?}");
    assert!(connects <= 16, "{report:?}");
    assert_eq!(report.requests, connects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_timeout_counts_from_intended_time() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr).with_timeout(Duration::from_millis(300));
    let plan = LoadPlan::new(vec![Stage::hold(20.0, Duration::from_secs(1))]).expect("plan");
    let config = OpenConfig {
        max_connections: 1,
        queue_capacity: 100,
        dedicated_threads: None,
    };

    let report = run_open(&target, &plan, &config, RunControl::default())
        .await
        .expect("run finishes");

    // The one connection hangs. Each request fails 300 ms after its intended time,
    // having spent most of that in the queue, so the run ends about 300 ms after the
    // plan. A timeout counted from the actual send would take 20 × 300 ms = 6 s.
    assert_eq!(report.requests, 20);
    assert_eq!(report.errors_by_class.timeout, 20);
    assert!(report.latency.min_us >= 300_000, "{:?}", report.latency);
    assert!(
        report.service_time.p50_us < 150_000,
        "{:?}",
        report.service_time
    );
    assert!(report.duration < Duration::from_millis(1600), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_queued_requests_are_not_sent() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr).with_timeout(Duration::from_millis(200));
    let plan = LoadPlan::new(vec![Stage::hold(2000.0, Duration::from_millis(50))]).expect("plan");
    let config = OpenConfig {
        max_connections: 1,
        queue_capacity: 100,
        dedicated_threads: None,
    };

    let report = run_open(&target, &plan, &config, RunControl::default())
        .await
        .expect("run finishes");

    // Arrivals 0.5 ms apart are closer than the 1 ms timer resolution, so by the time
    // one request has timed out, the deadline of the next has often passed too.
    assert_eq!(report.requests, 100);
    assert_eq!(report.errors_by_class.timeout, 100);
    assert!(report.service_time.count < 100, "{:?}", report.service_time);
    assert_eq!(report.latency.count, 100);
    assert!(server.requests() < 100, "server saw {}", server.requests());
    assert!(report.duration < Duration::from_millis(600), "{report:?}");
}
