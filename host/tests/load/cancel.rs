//! Cancellation: runs stop promptly and leave no tasks or connections behind.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use umbra_host::load::{
    ClosedConfig, HttpTarget, LoadPlan, OpenConfig, RunControl, Stage, run_closed, run_open,
};

use crate::support::{ServerConfig, TestServer, alive_tasks, tasks_finish};

/// Cancels `token` after `delay` and returns the moment it did.
async fn cancel_after(token: CancellationToken, delay: Duration) -> Instant {
    tokio::time::sleep(delay).await;
    token.cancel();
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_closed_run_promptly() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let config = ClosedConfig::new(4, None);
    let cancel = CancellationToken::new();
    let tasks_before = alive_tasks();

    let run = run_closed(&target, &config, RunControl::new(cancel.clone()));
    let (report, cancelled_at) =
        tokio::join!(run, cancel_after(cancel, Duration::from_millis(300)));
    let stop_time = cancelled_at.elapsed();

    let report = report.expect("cancelled run returns a report");
    assert!(
        stop_time < Duration::from_millis(200),
        "stopped after {stop_time:?}"
    );
    assert_eq!(report.requests, 0, "requests in flight are not counted");
    assert!(
        tasks_finish(tasks_before).await,
        "tasks left: {}",
        alive_tasks()
    );
    assert!(
        server.wait_for_idle(Duration::from_secs(1)).await,
        "connections still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_open_run_promptly() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_millis(50),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::hold(100.0, Duration::from_secs(10))]).expect("plan");
    let cancel = CancellationToken::new();
    let tasks_before = alive_tasks();

    let config = OpenConfig::default();
    let run = run_open(&target, &plan, &config, RunControl::new(cancel.clone()));
    let (report, cancelled_at) =
        tokio::join!(run, cancel_after(cancel, Duration::from_millis(500)));
    let stop_time = cancelled_at.elapsed();

    let report = report.expect("cancelled run returns a report");
    assert!(
        stop_time < Duration::from_millis(200),
        "stopped after {stop_time:?}"
    );
    assert!(report.requests >= 30, "{report:?}");
    assert!(report.requests <= 60, "{report:?}");
    assert!(report.duration < Duration::from_secs(1), "{report:?}");
    assert!(
        tasks_finish(tasks_before).await,
        "tasks left: {}",
        alive_tasks()
    );
    assert!(
        server.wait_for_idle(Duration::from_secs(1)).await,
        "connections still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_start_returns_empty_report() {
    let server = TestServer::start(ServerConfig::default());
    let target = HttpTarget::new(server.addr);
    let plan = LoadPlan::new(vec![Stage::hold(100.0, Duration::from_secs(5))]).expect("plan");
    let cancel = CancellationToken::new();
    cancel.cancel();

    let started = Instant::now();
    let report = run_open(
        &target,
        &plan,
        &OpenConfig::default(),
        RunControl::new(cancel),
    )
    .await
    .expect("cancelled run returns a report");

    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(report.requests, 0);
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_dedicated_threads_promptly() {
    let server = TestServer::start(ServerConfig {
        delay: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let target = HttpTarget::new(server.addr);
    let config = ClosedConfig {
        dedicated_threads: NonZeroUsize::new(2),
        ..ClosedConfig::new(4, None)
    };
    let cancel = CancellationToken::new();
    let tasks_before = alive_tasks();

    let run = run_closed(&target, &config, RunControl::new(cancel.clone()));
    let (report, cancelled_at) =
        tokio::join!(run, cancel_after(cancel, Duration::from_millis(300)));
    let stop_time = cancelled_at.elapsed();

    let report = report.expect("cancelled run returns a report");
    assert!(
        stop_time < Duration::from_millis(200),
        "stopped after {stop_time:?}"
    );
    assert_eq!(report.requests, 0);
    assert!(
        tasks_finish(tasks_before).await,
        "tasks left: {}",
        alive_tasks()
    );
    assert!(
        server.wait_for_idle(Duration::from_secs(1)).await,
        "connections still open"
    );
}
