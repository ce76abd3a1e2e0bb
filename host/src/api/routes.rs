//! Request handlers of the API.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::State;
use crate::engine::{DeployRequest, EngineError, MAX_PAYLOAD_BYTES};
use crate::ingest::http::{parse_query, series_json};

type HttpResponse = Response<Full<Bytes>>;

/// Time a client has to send a request body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest request body: a deployment payload and its JSON envelope.
const MAX_BODY_BYTES: usize = MAX_PAYLOAD_BYTES * 2 + 4096;

pub(super) async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<HttpResponse, Infallible> {
    let query = request.uri().query().unwrap_or("").to_owned();
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let path = request.uri().path().to_owned();
    let response = match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            state.engine.telemetry().encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (&Method::GET, "/v1/status") => json_ok(&*state.engine.status()),
        (&Method::GET, "/v1/events") => match since(&params) {
            Ok(since) => match state.engine.events_since(since) {
                Ok(events) => json_ok(&events),
                Err(error) => engine_error(&error),
            },
            Err(response) => *response,
        },
        (&Method::GET, "/v1/audit") => match since(&params) {
            Ok(since) => match state.engine.audit_since(since) {
                Ok(records) => json_ok(&records),
                Err(error) => engine_error(&error),
            },
            Err(response) => *response,
        },
        (&Method::GET, "/v1/series") => series(&params, &state).await,
        (&Method::GET, "/v1/deployments") => match params.get("asset") {
            Some(asset) => match state.engine.versions(asset) {
                Ok(versions) => json_ok(&versions),
                Err(error) => engine_error(&error),
            },
            None => error(
                StatusCode::BAD_REQUEST,
                "missing parameter `asset`: ask for /v1/deployments?asset=NAME".to_owned(),
            ),
        },
        (&Method::POST, "/v1/deployments") => match authorize(&request, &state) {
            Err(response) => *response,
            Ok(()) => match read_json::<DeployRequest>(request).await {
                Err(response) => *response,
                Ok(deployment) => match state.engine.deploy(deployment).await {
                    Ok(outcome) => json_response(StatusCode::CREATED, &outcome),
                    Err(error) => engine_error(&error),
                },
            },
        },
        (&Method::GET, "/v1/models") => match models(&state) {
            Ok(value) => json_ok(&value),
            Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
        },
        (&Method::POST, "/v1/models/activate") => match authorize(&request, &state) {
            Err(response) => *response,
            Ok(()) => match read_json::<ActivateRequest>(request).await {
                Err(response) => *response,
                Ok(activate) => match crate::model::ModelRepository::open(state.engine.store())
                    .and_then(|repository| repository.activate(&activate.reference))
                {
                    Ok(choice) => json_ok(&choice),
                    Err(model_error) => error(StatusCode::CONFLICT, model_error.to_string()),
                },
            },
        },
        (&Method::POST, "/v1/rollback") => match authorize(&request, &state) {
            Err(response) => *response,
            Ok(()) => match read_json::<RollbackRequest>(request).await {
                Err(response) => *response,
                Ok(rollback) => match state
                    .engine
                    .rollback(&rollback.asset, rollback.to_version)
                    .await
                {
                    Ok(outcome) => json_ok(&outcome),
                    Err(error) => engine_error(&error),
                },
            },
        },
        (
            _,
            "/healthz"
            | "/metrics"
            | "/v1/status"
            | "/v1/events"
            | "/v1/audit"
            | "/v1/series"
            | "/v1/deployments"
            | "/v1/rollback"
            | "/v1/models"
            | "/v1/models/activate",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} is not allowed on {path}", request.method()),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no endpoint {path}")),
    };
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    reference: String,
}

fn models(state: &State) -> Result<serde_json::Value, String> {
    let repository =
        crate::model::ModelRepository::open(state.engine.store()).map_err(|e| e.to_string())?;
    let models = repository.list().map_err(|e| e.to_string())?;
    let active = repository.active().map_err(|e| e.to_string())?;
    Ok(json!({
        "enabled": state.engine.config().model.enabled,
        "active": active,
        "models": models,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    asset: String,
    #[serde(default)]
    to_version: Option<String>,
}

fn since(params: &BTreeMap<String, String>) -> Result<i64, Box<HttpResponse>> {
    match params.get("since") {
        None => Ok(0),
        Some(text) => match text.parse::<i64>() {
            Ok(since) if since >= 0 => Ok(since),
            _ => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid `since` `{text}`: expected milliseconds since the Unix epoch, 0 or more"
                ),
            ))),
        },
    }
}

async fn series(params: &BTreeMap<String, String>, state: &State) -> HttpResponse {
    let (selector, range) = match parse_query(params) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let store = state.engine.store().clone();
    match tokio::task::spawn_blocking(move || store.query(&selector, &range)).await {
        Ok(Ok(series)) => json_ok(&json!({"status": "success", "data": series_json(&series)})),
        Ok(Err(crate::store::StoreError::InvalidQuery(message))) => {
            error(StatusCode::BAD_REQUEST, message)
        }
        Ok(Err(store_error)) => error(StatusCode::INTERNAL_SERVER_ERROR, store_error.to_string()),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "query task failed".to_owned(),
        ),
    }
}

fn authorize(request: &Request<Incoming>, state: &State) -> Result<(), Box<HttpResponse>> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if matches {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token the daemon was started with".to_owned(),
        )))
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Box<HttpResponse>> {
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(request.into_body(), MAX_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| {
        Box::new(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
        ))
    })?;
    let body = collected
        .map_err(|_| {
            Box::new(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes or was cut off"),
            ))
        })?
        .to_bytes();
    let bad_request = |message: String| Box::new(error(StatusCode::BAD_REQUEST, message));
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|parse_error| bad_request(format!("malformed JSON body: {parse_error}")))?;
    // serde describes a JSON array given for a struct as a sequence of its
    // fields ("expected struct X with 4 elements"), which misleads more than it helps.
    let received = match &value {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Array(_) => Some("an array"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Null => Some("null"),
    };
    if let Some(received) = received {
        return Err(bad_request(format!(
            "the request body must be a JSON object with the fields docs/ENGINE.md lists for this endpoint, not {received}"
        )));
    }
    serde_json::from_value(value)
        .map_err(|parse_error| bad_request(format!("malformed JSON body: {parse_error}")))
}

fn engine_error(engine_error: &EngineError) -> HttpResponse {
    let status = match engine_error {
        EngineError::UnknownAsset(_) | EngineError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
        EngineError::InvalidDeployment(_) => StatusCode::BAD_REQUEST,
        EngineError::AlreadyLive { .. }
        | EngineError::BadVersion { .. }
        | EngineError::NoKnownGood { .. }
        | EngineError::RollbackRefused { .. }
        | EngineError::DryRun(_)
        | EngineError::Version(_) => StatusCode::CONFLICT,
        EngineError::Preflight { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        EngineError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, engine_error.to_string())
}

fn json_ok<T: serde::Serialize + ?Sized>(value: &T) -> HttpResponse {
    json_response(StatusCode::OK, value)
}

fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => text_bytes(status, body, "application/json"),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the response\n".to_owned(),
            "text/plain",
        ),
    }
}

fn error(status: StatusCode, message: String) -> HttpResponse {
    json_response(status, &json!({"error": message}))
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> HttpResponse {
    text_bytes(status, body.into_bytes(), content_type)
}

fn text_bytes(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
