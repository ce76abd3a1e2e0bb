//! Errors of the PostgreSQL driver.
//!
//! Each variant names the value that failed and, where one exists, what to do about it.
//! SQL errors that a scenario provokes on purpose (deadlocks, refused connections) are not
//! errors of this kind: the scenarios count them in their reports.

use std::path::PathBuf;

/// Failure of a PostgreSQL driver operation.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A PostgreSQL program was not found in the binary directory or on `PATH`.
    #[error("missing PostgreSQL program `{program}` (looked in {searched}): {fix}")]
    MissingProgram {
        program: String,
        searched: String,
        fix: &'static str,
    },

    /// A PostgreSQL program could not be started.
    #[error("failed to run `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A PostgreSQL program exited with a failure status. `output` is its standard error.
    #[error("`{program}` failed with {status}: {output}")]
    ProgramFailed {
        program: String,
        status: std::process::ExitStatus,
        output: String,
    },

    /// Connecting to a cluster failed: wrong credentials, unreachable host, server down.
    #[error(
        "failed to connect to PostgreSQL at `{host}:{port}` as `{user}` to database `{database}`: check that the server runs and the credentials are right"
    )]
    Connect {
        host: String,
        port: u16,
        user: String,
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A query failed. `what` names the step that ran it.
    #[error("failed to {what}")]
    Query {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A file or directory operation failed.
    #[error("failed to {what} `{}`", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The operating-system user that should run the server does not exist.
    #[error("unknown operating-system user `{0}`: create it or set `os_user` to an existing user")]
    UnknownOsUser(String),

    /// A setting name that the cluster does not know.
    #[error("unknown setting `{name}`: PostgreSQL has no setting of that name{hint}")]
    UnknownSetting { name: String, hint: String },

    /// A setting value that the cluster would reject.
    #[error("invalid value `{value}` for setting `{name}`: {expected}")]
    InvalidSettingValue {
        name: String,
        value: String,
        expected: String,
    },

    /// A setting that needs a server restart on a cluster that Umbra cannot restart.
    #[error(
        "setting `{name}` needs a server restart, but the data directory of `{cluster}` is not configured: set `data_dir` so Umbra can restart it with pg_ctl"
    )]
    RestartImpossible { name: String, cluster: String },

    /// `SHOW` returned another value than the one deployed.
    #[error(
        "setting `{name}` did not take effect: `SHOW {name}` returned `{actual}`, expected `{expected}`"
    )]
    NotApplied {
        name: String,
        expected: String,
        actual: String,
    },

    /// A scenario or load run was aimed at a cluster that is not an Umbra shadow.
    #[error(
        "refusing to run synthetic load on `{0}`: it is not an Umbra shadow (setting `umbra.shadow` is not `on`)"
    )]
    NotAShadow(String),

    /// The shadow did not come up as an independent primary.
    #[error("shadow `{0}` is still in recovery after start: it must run as an independent primary")]
    ShadowInRecovery(String),

    /// A SQL workload without transactions, or with all weights 0.
    #[error("empty SQL workload: add a transaction with a positive weight")]
    EmptyWorkload,

    /// A wait for the server ran out of time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout { what: String, seconds: u64 },

    /// The store that records shadows failed.
    #[error("failed to record shadow state in the store")]
    Store(#[from] crate::store::StoreError),

    /// A load run could not start.
    #[error("invalid SQL load run")]
    Load(#[from] crate::load::LoadError),
}

impl PgError {
    pub(crate) fn query(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        PgError::Query {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PgError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
