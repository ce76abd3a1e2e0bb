//! Load shedding: 503 once the worker slots and the wait queue are full, with the shipped
//! configurations at the demo's baseline and peak load.

use std::time::Duration;

use anyhow::Result;

use crate::common::{Service, ServiceConfig, bounded};
use crate::http::burst;
use crate::load::{self, LoadPlan};

/// Arrival rate of the demo's baseline load, in requests per second.
const BASELINE_RATE: f64 = 30.0;

/// Arrival rate of the demo's peak load: eight times the baseline.
const PEAK_RATE: f64 = 8.0 * BASELINE_RATE;

/// Distinct item ids that the demo's load requests, matching `key_space` in `configs/`.
const DEMO_KEY_SPACE: u64 = 50;

/// Number of concurrent requests in the burst tests: more than the 4 workers and 16 queue
/// places of v2, and fewer than the 64 workers of v1.
const BURST_SIZE: usize = 60;

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|code| **code == status).count()
}

#[tokio::test]
async fn full_queue_rejects_excess_requests() -> Result<()> {
    bounded(async {
        // Each request holds its slot for 1.5 s, so all ten arrive before any finishes:
        // 2 work, 3 wait and the other 5 are rejected.
        let config = ServiceConfig {
            workers: 2,
            queue_limit: 3,
            work_ms: 1500.0,
            ..ServiceConfig::default()
        };
        let service = Service::start("queue-full", &config).await?;

        let statuses = burst(service.port, "/api/items/1", 10).await?;

        assert_eq!(count(&statuses, 200), 5, "{statuses:?}");
        assert_eq!(count(&statuses, 503), 5, "{statuses:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn shipped_v2_rejects_burst_beyond_capacity() -> Result<()> {
    bounded(async {
        let service = Service::start_shipped("v2-burst", "v2.toml").await?;

        let statuses = burst(service.port, "/api/items/1", BURST_SIZE).await?;

        // The first 4 + 16 arrivals always get a slot or a queue place.
        assert!(count(&statuses, 200) >= 20, "{statuses:?}");
        assert!(count(&statuses, 503) > 0, "{statuses:?}");
        assert_eq!(count(&statuses, 200) + count(&statuses, 503), BURST_SIZE);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn shipped_v1_absorbs_same_burst() -> Result<()> {
    bounded(async {
        let service = Service::start_shipped("v1-burst", "v1.toml").await?;

        let statuses = burst(service.port, "/api/items/1", BURST_SIZE).await?;

        assert_eq!(count(&statuses, 200), BURST_SIZE, "{statuses:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn baseline_load_is_served_by_both_versions() -> Result<()> {
    bounded(async {
        let v1 = Service::start_shipped("v1-baseline", "v1.toml").await?;
        let v2 = Service::start_shipped("v2-baseline", "v2.toml").await?;
        let plan = |port| LoadPlan {
            port,
            rate_per_second: BASELINE_RATE,
            duration: Duration::from_secs(2),
            key_space: DEMO_KEY_SPACE,
        };

        let (v1_report, v2_report) =
            tokio::join!(load::run(plan(v1.port)), load::run(plan(v2.port)));

        assert_eq!(v1_report.count(200), 60, "v1: {v1_report:?}");
        assert_eq!(v2_report.count(200), 60, "v2: {v2_report:?}");
        let v1_median = v1_report.ok_latency_quantile(0.5).unwrap_or_default();
        let v2_median = v2_report.ok_latency_quantile(0.5).unwrap_or_default();
        // v2 holds a worker slot for 25 ms on every request.
        assert!(
            v2_median >= Duration::from_millis(25),
            "v2 median {v2_median:?}"
        );
        assert!(
            v1_median < v2_median,
            "v1 median {v1_median:?}, v2 median {v2_median:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn peak_load_overloads_v2_but_not_v1() -> Result<()> {
    bounded(async {
        let v1 = Service::start_shipped("v1-peak", "v1.toml").await?;
        let v2 = Service::start_shipped("v2-peak", "v2.toml").await?;
        let plan = |port| LoadPlan {
            port,
            rate_per_second: PEAK_RATE,
            duration: Duration::from_secs(3),
            key_space: DEMO_KEY_SPACE,
        };

        let (v1_report, v2_report) =
            tokio::join!(load::run(plan(v1.port)), load::run(plan(v2.port)));

        assert_eq!(v1_report.count(200), 720, "v1: {v1_report:?}");
        // v2 serves about 150 of the 240 requests per second, so about a third are
        // rejected. A tenth leaves room for a slow machine.
        let v2_rejected = v2_report.count(503);
        let v2_sent = v2_report.sent();
        assert!(
            v2_rejected * 10 >= v2_sent,
            "v2 rejected {v2_rejected} of {v2_sent}"
        );
        // A full queue of 16 in front of 4 workers adds about 100 ms to the 25 ms of work.
        let v2_median = v2_report.ok_latency_quantile(0.5).unwrap_or_default();
        assert!(
            v2_median >= Duration::from_millis(60),
            "v2 median {v2_median:?}"
        );
        Ok(())
    })
    .await
}
