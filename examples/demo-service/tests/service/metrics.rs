//! `/metrics`: request counters, cache hits, gauges and the version.

use anyhow::Result;
use hyper::Method;

use crate::common::{Service, ServiceConfig, bounded};
use crate::http::{burst, request, scrape, wait_for_sample};

#[tokio::test]
async fn requests_total_counts_only_api_requests() -> Result<()> {
    bounded(async {
        let service = Service::start("count-api", &ServiceConfig::default()).await?;
        let port = service.port;
        let before = scrape(port).await?;

        for id in 0..4 {
            request(port, Method::GET, &format!("/api/items/{id}")).await?;
        }
        request(port, Method::GET, "/api/items/99").await?;
        request(port, Method::GET, "/api/items/abc").await?;
        for _ in 0..3 {
            request(port, Method::GET, "/health").await?;
        }
        request(port, Method::GET, "/no-such-page").await?;
        scrape(port).await?;
        scrape(port).await?;
        let after = scrape(port).await?;

        let delta =
            |series: &str| -> Result<f64> { Ok(after.value(series)? - before.value(series)?) };
        assert_eq!(after.requests_total() - before.requests_total(), 6.0);
        assert_eq!(delta("demo_requests_total{code=\"200\"}")?, 4.0);
        assert_eq!(delta("demo_requests_total{code=\"404\"}")?, 1.0);
        assert_eq!(delta("demo_requests_total{code=\"400\"}")?, 1.0);
        assert_eq!(delta("demo_request_duration_seconds_count")?, 6.0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn fresh_service_reports_zero_requests() -> Result<()> {
    bounded(async {
        let service = Service::start("zero-requests", &ServiceConfig::default()).await?;
        // Start-up polled /health, and this scrape is a /metrics request: neither counts.
        request(service.port, Method::GET, "/health").await?;

        let samples = scrape(service.port).await?;

        assert_eq!(samples.requests_total(), 0.0);
        assert_eq!(samples.value("demo_request_duration_seconds_count")?, 0.0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn cache_hits_count_repeated_items() -> Result<()> {
    bounded(async {
        let service = Service::start("cache-hits", &ServiceConfig::default()).await?;

        for path in [
            "/api/items/1",
            "/api/items/1",
            "/api/items/2",
            "/api/items/1",
        ] {
            request(service.port, Method::GET, path).await?;
        }
        let samples = scrape(service.port).await?;

        assert_eq!(samples.value("demo_cache_hits_total")?, 2.0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn disabled_cache_never_hits() -> Result<()> {
    bounded(async {
        let config = ServiceConfig {
            cache: false,
            ..ServiceConfig::default()
        };
        let service = Service::start("cache-off", &config).await?;

        for _ in 0..3 {
            request(service.port, Method::GET, "/api/items/1").await?;
        }
        let samples = scrape(service.port).await?;

        assert_eq!(samples.value("demo_cache_hits_total")?, 0.0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn gauges_show_busy_and_waiting_requests() -> Result<()> {
    bounded(async {
        let config = ServiceConfig {
            workers: 1,
            queue_limit: 5,
            work_ms: 1500.0,
            ..ServiceConfig::default()
        };
        let service = Service::start("gauges", &config).await?;
        let port = service.port;

        let pending = tokio::spawn(async move { burst(port, "/api/items/1", 3).await });

        wait_for_sample(port, "demo_queue_depth", 2.0).await?;
        let samples = scrape(port).await?;
        assert_eq!(samples.value("demo_inflight_requests")?, 1.0);
        pending.abort();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn info_reports_version() -> Result<()> {
    bounded(async {
        let config = ServiceConfig {
            version: "v2-rc1",
            ..ServiceConfig::default()
        };
        let service = Service::start("info", &config).await?;

        let samples = scrape(service.port).await?;

        assert_eq!(samples.value("demo_info{version=\"v2-rc1\"}")?, 1.0);
        Ok(())
    })
    .await
}
