//! Errors of fault injection: invalid descriptions, proxies that cannot start, limits the
//! kernel rejects, and the ledger that records what must be undone after a crash.

use std::path::PathBuf;

use crate::store::StoreError;

/// Problems found by [`crate::fault::FaultSet::validate`] or
/// [`crate::fault::MirrorConfig::validate`], each with its path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct FaultSpecError {
    /// One message per problem, such as ``rules[0].toxicity: invalid value `1.5`: …``.
    pub problems: Vec<String>,
}

/// Failure of a fault-injecting or mirroring proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The requested faults are invalid. Nothing was changed.
    #[error("invalid fault set")]
    InvalidFaults(#[from] FaultSpecError),

    /// The mirroring proxy's settings are invalid. It was not started.
    #[error("invalid mirror configuration")]
    InvalidMirrorConfig(#[source] FaultSpecError),

    /// The proxy could not listen on a loopback port.
    #[error("failed to listen on `127.0.0.1`")]
    Bind(#[source] std::io::Error),

    /// The proxy could not listen on the address it was given.
    #[error("failed to listen on `{0}`")]
    BindOn(std::net::SocketAddr, #[source] std::io::Error),

    /// The ledger could not record or remove the proxy.
    #[error("failed to update the fault ledger")]
    Ledger(#[from] LedgerError),
}

/// Failure to read or write the ledger of state that outlives the process.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The underlying store failed.
    #[error("fault ledger store failed")]
    Store(#[from] StoreError),
}

/// Failure to apply or reverse a resource limit on a process tree.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The process does not exist (any more).
    #[error("process `{pid}` not found: the shadow may have exited")]
    NoSuchProcess { pid: u32 },

    /// A setting is out of range.
    #[error("invalid `{setting}` value `{value}`: {expected}")]
    InvalidSetting {
        setting: &'static str,
        value: String,
        expected: &'static str,
    },

    /// A system call failed.
    #[error("failed to {action} for process `{pid}`")]
    Syscall {
        action: &'static str,
        pid: u32,
        #[source]
        source: std::io::Error,
    },

    /// A file under `/proc` or `/sys` could not be read or written.
    #[error("failed to {action} `{path}`")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A mount for the disk budget failed.
    #[error("failed to mount a {kind} on `{path}`: disk budgets need root and overlayfs")]
    Mount {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The ledger could not record or remove the limit.
    #[error("failed to update the fault ledger")]
    Ledger(#[from] LedgerError),
}
