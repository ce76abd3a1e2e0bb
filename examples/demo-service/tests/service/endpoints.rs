//! Responses of `/health` and the item API.

use std::time::{Duration, Instant};

use anyhow::Result;
use hyper::Method;

use crate::common::{Service, ServiceConfig, bounded};
use crate::http::{request, wait_for_sample};

#[tokio::test]
async fn health_returns_ok() -> Result<()> {
    bounded(async {
        let service = Service::start("health", &ServiceConfig::default()).await?;

        let reply = request(service.port, Method::GET, "/health").await?;

        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "ok");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn item_returns_json_with_version() -> Result<()> {
    bounded(async {
        let config = ServiceConfig {
            version: "v7",
            ..ServiceConfig::default()
        };
        let service = Service::start("item-json", &config).await?;

        let first = request(service.port, Method::GET, "/api/items/3").await?;
        let second = request(service.port, Method::GET, "/api/items/3").await?;

        assert_eq!(first.status, 200);
        assert_eq!(
            first.body,
            r#"{"id":3,"name":"item 3","version":"v7","cache":"miss"}"#
        );
        assert_eq!(
            second.body,
            r#"{"id":3,"name":"item 3","version":"v7","cache":"hit"}"#
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn invalid_requests_return_client_errors() -> Result<()> {
    bounded(async {
        // key_space is 10, so ids 0 to 9 exist.
        let service = Service::start("client-errors", &ServiceConfig::default()).await?;
        let cases = [
            ("id past key space", Method::GET, "/api/items/10", 404),
            ("negative id", Method::GET, "/api/items/-1", 400),
            ("non-numeric id", Method::GET, "/api/items/abc", 400),
            ("missing id", Method::GET, "/api/items/", 400),
            ("unknown api route", Method::GET, "/api/orders/1", 404),
            ("unknown route", Method::GET, "/index.html", 404),
            ("post to item", Method::POST, "/api/items/1", 405),
            ("delete health", Method::DELETE, "/health", 405),
        ];

        for (name, method, path, expected_status) in cases {
            let reply = request(service.port, method, path).await?;
            assert_eq!(reply.status, expected_status, "case {name}: {}", reply.body);
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn health_skips_queue_of_busy_service() -> Result<()> {
    bounded(async {
        let config = ServiceConfig {
            workers: 1,
            queue_limit: 0,
            work_ms: 3000.0,
            ..ServiceConfig::default()
        };
        let service = Service::start("health-busy", &config).await?;
        let port = service.port;
        let _occupying =
            tokio::spawn(async move { request(port, Method::GET, "/api/items/1").await });
        wait_for_sample(port, "demo_inflight_requests", 1.0).await?;

        let started = Instant::now();
        let health = request(port, Method::GET, "/health").await?;
        let health_latency = started.elapsed();
        let item = request(port, Method::GET, "/api/items/2").await?;

        assert_eq!(health.status, 200);
        assert!(
            health_latency < Duration::from_millis(500),
            "/health took {health_latency:?} while the only worker was busy"
        );
        assert_eq!(item.status, 503, "{}", item.body);
        Ok(())
    })
    .await
}
