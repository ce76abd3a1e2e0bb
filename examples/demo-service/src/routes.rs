//! Request routing: the item API, `/health` and `/metrics`.
//!
//! [`App`] contains everything a request needs. `/health` and `/metrics` respond at once and
//! never wait for a worker slot, so Umbra can probe and scrape an overloaded instance.
//! Every request under `/api/` is counted and timed once its response is ready, whatever
//! its status. A request whose client disconnects before that is not counted.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::admission::Admission;
use crate::config::Config;
use crate::items::{CacheOutcome, Items};
use crate::json;
use crate::metrics::{Gauges, Metrics};

/// Log target of one line per `/api/` request, enabled with
/// `RUST_LOG=umbra_demo_service::access=debug`.
const ACCESS_LOG: &str = "umbra_demo_service::access";

const CONTENT_TYPE_JSON: &str = "application/json";
const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Shared state of the service: admission control, the item store and the metrics.
#[derive(Debug)]
pub struct App {
    admission: Admission,
    items: Items,
    metrics: Metrics,
    workers: u32,
    queue_limit: u32,
}

impl App {
    /// Creates the state for a validated configuration.
    pub fn new(config: &Config) -> Self {
        Self {
            admission: Admission::new(config.workers as usize, config.queue_limit as usize),
            items: Items::new(config),
            metrics: Metrics::new(&config.version),
            workers: config.workers,
            queue_limit: config.queue_limit,
        }
    }

    /// Request metrics, read at shutdown for the final request count.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Routes one request and returns its response.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method();
        let path = request.uri().path();

        if path == "/api" || path.starts_with("/api/") {
            return self.handle_api(method, path).await;
        }
        if path != "/health" && path != "/metrics" {
            return text_response(StatusCode::NOT_FOUND, format!("no route for `{path}`\n"));
        }
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed(text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method `{method}` is not allowed on `{path}`: use GET\n"),
            ));
        }

        if path == "/health" {
            return text_response(StatusCode::OK, "ok".to_owned());
        }
        let exposition = self.metrics.render(Gauges {
            inflight_requests: self.admission.busy(),
            queue_depth: self.admission.waiting(),
        });
        with_content_type(Response::new(Full::from(exposition)), CONTENT_TYPE_METRICS)
    }

    async fn handle_api(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let response = self.route_api(method, path).await;
        self.metrics
            .record_request(response.status(), started.elapsed());
        tracing::debug!(
            target: ACCESS_LOG,
            %method,
            path,
            status = response.status().as_u16(),
            "request"
        );
        response
    }

    async fn route_api(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let Some(raw_id) = path.strip_prefix("/api/items/") else {
            return error_response(StatusCode::NOT_FOUND, format!("no route for `{path}`"));
        };
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed(error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method `{method}` is not allowed on `{path}`: use GET"),
            ));
        }

        let last_id = self.items.key_space() - 1;
        let Ok(id) = raw_id.parse::<u64>() else {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("invalid item id `{raw_id}`: expected an integer from 0 to {last_id}"),
            );
        };
        if !self.items.contains(id) {
            return error_response(
                StatusCode::NOT_FOUND,
                format!("item `{id}` not found: ids run from 0 to {last_id}"),
            );
        }

        let Some(_slot) = self.admission.acquire().await else {
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "overloaded: all {} workers are busy and {} requests are already waiting",
                    self.workers, self.queue_limit
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        };
        let (outcome, body) = self.items.fetch(id).await;
        if outcome == CacheOutcome::Hit {
            self.metrics.record_cache_hit();
        }

        with_content_type(Response::new(Full::from(body)), CONTENT_TYPE_JSON)
    }
}

fn text_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = with_content_type(Response::new(Full::from(body)), CONTENT_TYPE_TEXT);
    *response.status_mut() = status;
    response
}

/// Builds a JSON error response of the form `{"error": "..."}`.
fn error_response(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let body = format!("{{\"error\":{}}}", json::quote(&message));
    let mut response = with_content_type(Response::new(Full::from(body)), CONTENT_TYPE_JSON);
    *response.status_mut() = status;
    response
}

fn method_not_allowed(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn with_content_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
