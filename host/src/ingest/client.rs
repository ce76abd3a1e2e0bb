//! A small HTTP/1 client on hyper, shared by scraping, probes and remote-write forwarding.
//!
//! NOTE: plain `http://` only. Umbra carries no TLS stack, so `https://` targets are
//! rejected when the configuration is validated.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Failure of one HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL could not be parsed.
    #[error("invalid URL `{0}`")]
    InvalidUrl(String),
    /// The request could not be built.
    #[error("invalid request to `{url}`")]
    Request {
        /// Target URL.
        url: String,
        /// Cause.
        #[source]
        source: hyper::http::Error,
    },
    /// Connecting or exchanging the request failed.
    #[error("request to `{url}` failed")]
    Transport {
        /// Target URL.
        url: String,
        /// Cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// Reading the response body failed or it passed the size limit.
    #[error("reading the response body from `{url}` failed (limit {limit} bytes)")]
    Body {
        /// Target URL.
        url: String,
        /// Size limit of the body.
        limit: usize,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No complete response arrived in time.
    #[error("request to `{url}` timed out after {timeout:?}")]
    Timeout {
        /// Target URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
}

/// A response with its body read into memory.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

/// Shared HTTP client with connection reuse.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            inner: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        }
    }
}

impl HttpClient {
    /// Sends `GET url` and reads at most `max_body_bytes` of the response within `timeout`.
    pub async fn get(
        &self,
        url: &str,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response, ClientError> {
        self.send(
            Method::GET,
            url,
            &[("accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")],
            Bytes::new(),
            timeout,
            max_body_bytes,
        )
        .await
    }

    /// Sends a request and reads at most `max_body_bytes` of the response within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| ClientError::InvalidUrl(url.to_owned()))?;
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|source| ClientError::Request {
                url: url.to_owned(),
                source,
            })?;

        let exchange = async {
            let response =
                self.inner
                    .request(request)
                    .await
                    .map_err(|source| ClientError::Transport {
                        url: url.to_owned(),
                        source,
                    })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), max_body_bytes)
                .collect()
                .await
                .map_err(|source| ClientError::Body {
                    url: url.to_owned(),
                    limit: max_body_bytes,
                    source,
                })?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.to_owned(),
                timeout,
            })?
    }
}
