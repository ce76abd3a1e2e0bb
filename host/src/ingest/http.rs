//! The HTTP API of ingestion, on hyper 1:
//!
//! | route | what it does |
//! |---|---|
//! | `POST /v1/push` | JSON batch (see [`push`](super::push)); answers after the samples are durable |
//! | `POST /api/v1/write` | Prometheus remote write 1.0; answers 204 after the samples are durable |
//! | `GET /v1/query` | `series`, `start`, `end` (ms), optional `step` and `agg` (`avg`, `min`, `max`, `quantile` with `q`) |
//! | `GET /metrics` | ingestion counters in Prometheus text format |
//! | `GET /healthz` | `ok` |
//!
//! Errors are JSON objects `{"status": "error", "reason": "...", "error": "..."}` with a 4xx
//! status for bad requests and 503 when the store cannot write.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::json;

use super::limits::{Limits, Rejection};
use super::push::JsonValue;
use super::sink::Ingestor;
use super::{push, remote_write};
use crate::store::{Aggregation, RangeQuery, Selector, SeriesPoints, SeriesSamples, now_ms};

/// State shared by all requests.
#[derive(Debug)]
pub(crate) struct ApiState {
    pub(crate) ingestor: Arc<Ingestor>,
    pub(crate) limits: Limits,
}

type HttpResponse = Response<Full<Bytes>>;

/// Routes one request.
pub(crate) async fn handle(
    request: Request<Incoming>,
    state: Arc<ApiState>,
) -> Result<HttpResponse, Infallible> {
    let path = request.uri().path().to_owned();
    let response = match (request.method(), path.as_str()) {
        (&Method::POST, "/v1/push") => ingest(request, &state, Format::Json).await,
        (&Method::POST, "/api/v1/write") => ingest(request, &state, Format::RemoteWrite).await,
        (&Method::GET, "/v1/query") => query(request.uri().query().unwrap_or(""), &state).await,
        (&Method::GET, "/metrics") => text(StatusCode::OK, state.ingestor.stats.render()),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (_, "/v1/push" | "/api/v1/write" | "/v1/query" | "/metrics" | "/healthz") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method `{}` is not allowed on `{path}`", request.method()),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for `{path}`"),
        ),
    };
    Ok(response)
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    RemoteWrite,
}

async fn ingest(request: Request<Incoming>, state: &ApiState, format: Format) -> HttpResponse {
    let batch = match read_batch(request, &state.limits, format).await {
        Ok(batch) => batch,
        Err(rejection) => {
            state.ingestor.stats.add_rejected(rejection.reason());
            tracing::debug!(reason = rejection.reason(), error = %rejection, "rejected pushed batch");
            let status =
                StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return error(status, rejection.reason(), rejection.to_string());
        }
    };

    match state.ingestor.ingest(batch).await {
        Ok(samples) => match format {
            Format::Json => json_response(
                StatusCode::OK,
                &json!({"status": "success", "samples": samples}),
            ),
            Format::RemoteWrite => empty(StatusCode::NO_CONTENT),
        },
        Err(e) => {
            state.ingestor.stats.add_rejected("store_unavailable");
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "storing a pushed batch failed"
            );
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("{e}: retry later"),
            )
        }
    }
}

async fn read_batch(
    request: Request<Incoming>,
    limits: &Limits,
    format: Format,
) -> Result<Vec<SeriesSamples>, Rejection> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared.filter(|&s| s > limits.max_body_bytes) {
        return Err(Rejection::BodyTooLarge {
            size,
            limit: limits.max_body_bytes,
        });
    }
    let body = Limited::new(request.into_body(), limits.max_body_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Rejection::BodyTooLarge {
                    size: limits.max_body_bytes + 1,
                    limit: limits.max_body_bytes,
                }
            } else {
                Rejection::Malformed(format!("reading the body failed: {e}"))
            }
        })?
        .to_bytes();

    let batch = match format {
        Format::Json => push::decode(&body)?,
        Format::RemoteWrite => remote_write::decode(&body, limits)?,
    };
    limits.check(&batch, now_ms())?;
    Ok(batch)
}

async fn query(query_string: &str, state: &ApiState) -> HttpResponse {
    let params: BTreeMap<String, String> = form_urlencoded::parse(query_string.as_bytes())
        .into_owned()
        .collect();
    let (selector, range) = match parse_query(&params) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_query", message),
    };

    let store = state.ingestor.store.clone();
    let result = tokio::task::spawn_blocking(move || store.query(&selector, &range)).await;
    match result {
        Ok(Ok(series)) => json_response(
            StatusCode::OK,
            &json!({"status": "success", "data": series_json(&series)}),
        ),
        Ok(Err(crate::store::StoreError::InvalidQuery(message))) => {
            error(StatusCode::BAD_REQUEST, "invalid_query", message)
        }
        Ok(Err(e)) => {
            tracing::error!(error = &e as &dyn std::error::Error, "query failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "query_failed",
                e.to_string(),
            )
        }
        Err(e) => {
            tracing::error!(error = &e as &dyn std::error::Error, "query task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "query_failed",
                "query task failed".into(),
            )
        }
    }
}

pub(crate) fn parse_query(
    params: &BTreeMap<String, String>,
) -> Result<(Selector, RangeQuery), String> {
    let required = |name: &str| {
        params
            .get(name)
            .ok_or_else(|| format!("missing parameter `{name}`"))
    };
    let selector = Selector::parse(required("series")?).map_err(|e| e.to_string())?;
    let time = |name: &str| -> Result<i64, String> {
        let text = required(name)?;
        text.parse::<i64>().map_err(|_| {
            format!("invalid `{name}` `{text}`: expected integer milliseconds since the Unix epoch")
        })
    };
    let start_ms = time("start")?;
    let end_ms = time("end")?;

    let step = match params.get("step") {
        None => None,
        Some(text) => {
            let step_ms = parse_duration_ms(text).ok_or_else(|| {
                format!(
                    "invalid `step` `{text}`: expected a duration such as `15s`, `1m` or `500ms`"
                )
            })?;
            let agg = match params.get("agg").map(String::as_str).unwrap_or("avg") {
                "avg" => Aggregation::Avg,
                "min" => Aggregation::Min,
                "max" => Aggregation::Max,
                "quantile" => {
                    let q_text = params
                        .get("q")
                        .ok_or("missing parameter `q` for `agg=quantile`")?;
                    let q = q_text.parse::<f64>().map_err(|_| {
                        format!("invalid `q` `{q_text}`: expected a number between 0 and 1")
                    })?;
                    Aggregation::Quantile(q)
                }
                other => {
                    return Err(format!(
                        "invalid `agg` `{other}`: expected `avg`, `min`, `max` or `quantile`"
                    ));
                }
            };
            Some((step_ms, agg))
        }
    };
    Ok((
        selector,
        RangeQuery {
            start_ms,
            end_ms,
            step,
        },
    ))
}

/// Parses `250ms`, `15s`, `5m`, `2h`, `1d`, or a bare integer of milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Option<i64> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: i64 = text[..digits].parse().ok()?;
    let unit = match &text[digits..] {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(unit).filter(|&ms| ms > 0)
}

pub(crate) fn series_json(series: &[SeriesPoints]) -> serde_json::Value {
    series
        .iter()
        .map(|s| {
            let labels: BTreeMap<&str, &str> = s
                .labels
                .pairs()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let points: Vec<(i64, JsonValue)> = s
                .points
                .iter()
                .map(|p| (p.ts_ms, JsonValue::from_f64(p.value)))
                .collect();
            json!({"labels": labels, "points": points})
        })
        .collect()
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, reason: &str, message: String) -> HttpResponse {
    json_response(
        status,
        &json!({"status": "error", "reason": reason, "error": message}),
    )
}

fn text(status: StatusCode, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("15s"), Some(15_000));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("100"), Some(100));
        assert_eq!(parse_duration_ms("0s"), None);
        assert_eq!(parse_duration_ms("1w"), None);
        assert_eq!(parse_duration_ms("s"), None);
    }

    #[test]
    fn query_parameters_report_problems() {
        let params = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let cases = [
            ("no series", params(&[("start", "0"), ("end", "1")])),
            (
                "bad start",
                params(&[("series", "up"), ("start", "yesterday"), ("end", "1")]),
            ),
            (
                "bad agg",
                params(&[
                    ("series", "up"),
                    ("start", "0"),
                    ("end", "1"),
                    ("step", "1s"),
                    ("agg", "median"),
                ]),
            ),
            (
                "no q",
                params(&[
                    ("series", "up"),
                    ("start", "0"),
                    ("end", "1"),
                    ("step", "1s"),
                    ("agg", "quantile"),
                ]),
            ),
        ];
        for (name, p) in cases {
            assert!(parse_query(&p).is_err(), "accepted case `{name}`");
        }
    }
}
