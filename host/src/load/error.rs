//! Errors that stop a load run before or while it runs.
//!
//! Failed requests are not errors of the run: they are counted by class in the
//! [`crate::load::LoadReport`]. A [`LoadError`] means the run could not start (invalid
//! settings) or the executor itself failed.

use std::time::Duration;

use crate::load::plan::PlanError;

/// Failure of a load run, before it started or while it ran.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The load plan is invalid.
    #[error("invalid load plan")]
    InvalidPlan(#[from] PlanError),

    /// An executor was asked to use no connections.
    #[error("invalid connection count `0`: expected at least one connection")]
    ZeroConnections,

    /// The target has no request paths to choose from.
    #[error("missing request path: add at least one path such as `/`")]
    NoPaths,

    /// A request path is not an origin-form URI path.
    #[error("invalid request path `{path}`: expected an absolute path such as `/health`")]
    InvalidPath {
        path: String,
        #[source]
        source: Option<hyper::http::uri::InvalidUri>,
    },

    /// A path has weight 0, so it would never be chosen.
    #[error("invalid weight `0` for path `{path}`: expected a positive weight, or remove the path")]
    ZeroWeight { path: String },

    /// A header name is not a valid HTTP field name.
    #[error("invalid header name `{name}`")]
    InvalidHeaderName {
        name: String,
        #[source]
        source: hyper::header::InvalidHeaderName,
    },

    /// A header value contains bytes that HTTP does not allow. The value itself is not
    /// shown because headers such as `Authorization` carry secrets.
    #[error("invalid value for header `{name}`")]
    InvalidHeaderValue {
        name: String,
        #[source]
        source: hyper::header::InvalidHeaderValue,
    },

    /// A duration setting is zero where only a positive duration makes sense.
    #[error("invalid `{setting}` value `{value:?}`: expected a positive duration")]
    ZeroDuration {
        setting: &'static str,
        value: Duration,
    },

    /// The latency histograms could not be allocated with the requested bounds.
    #[error("failed to create latency histogram")]
    Histogram(#[source] hdrhistogram::CreationError),

    /// A dedicated worker thread or its runtime could not be started.
    #[error("failed to start a load worker thread: lower `dedicated_threads` or leave it unset")]
    ThreadStart(#[source] std::io::Error),

    /// A worker task panicked. This is a bug in the load generator.
    #[error("load worker task failed")]
    WorkerFailed(#[source] tokio::task::JoinError),
}
