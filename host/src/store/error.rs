//! Errors returned by the metric store.

use std::path::PathBuf;

/// An error from the metric store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled returned an I/O or corruption error.
    #[error("storage engine failed")]
    Sled(#[from] sled::Error),

    /// The store's directory is open in another process.
    #[error(
        "store at `{path}` is in use by another process (another `umbra run` or `umbra demo` with the same store or work_dir): stop that process, or give this one another directory"
    )]
    InUse {
        /// Directory of the store.
        path: PathBuf,
    },

    /// A file operation of the store itself (outside sled) failed.
    #[error("{action} failed")]
    Io {
        /// What the store was doing, such as ``opening `/data/db` for fdatasync``.
        action: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The directory was written by another, incompatible format version of the store.
    #[error(
        "store at `{path}` has format version `{found}` but this build reads version `{expected}`: \
         open it with a matching Umbra build or point the store at a new directory"
    )]
    IncompatibleFormat {
        /// Directory of the store.
        path: PathBuf,
        /// Version found in the directory.
        found: u32,
        /// Version this build writes and reads.
        expected: u32,
    },

    /// The directory contains data but no format-version record, so it was not written by Umbra.
    #[error(
        "directory `{path}` contains data that was not written by the Umbra store: choose an empty directory"
    )]
    ForeignData {
        /// Directory of the store.
        path: PathBuf,
    },

    /// A stored record could not be decoded.
    #[error("corrupt {what} record: {detail}")]
    Corrupt {
        /// Kind of record (`head`, `chunk`, `series`, ...).
        what: &'static str,
        /// Description of the defect.
        detail: String,
    },

    /// A block file of sealed chunks is damaged.
    #[error(
        "block file `{path}` is damaged: {detail}. Restore it from a backup, or move it out of the \
         store's `blocks` directory to open the store without the samples it held"
    )]
    CorruptBlock {
        /// Path of the block file.
        path: PathBuf,
        /// Description of the defect.
        detail: String,
    },

    /// The chunk codec failed to compress or decompress a column.
    #[error("chunk codec failed")]
    Codec(#[from] pco::errors::PcoError),

    /// A series label set is invalid.
    #[error(transparent)]
    Labels(#[from] LabelsError),

    /// A selector string could not be parsed.
    #[error(transparent)]
    Selector(#[from] SelectorError),

    /// A query parameter is invalid.
    #[error("invalid query: {0}")]
    InvalidQuery(String),

    /// A JSON value in an event log or key/value tree could not be encoded or decoded.
    #[error("invalid JSON value in tree `{tree}`")]
    Json {
        /// Name of the tree.
        tree: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// The group commit that carried this append failed; nothing of it was acknowledged.
    #[error("group commit failed")]
    CommitFailed(#[source] std::sync::Arc<StoreError>),

    /// The background writer thread has stopped, so no more samples can be appended.
    #[error("store writer has stopped: reopen the store")]
    WriterStopped,
}

/// An invalid series label set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    /// The metric name (`__name__`) is missing or empty.
    #[error("missing metric name: set `__name__` or the series name")]
    MissingName,
    /// The metric name does not match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error(
        "invalid metric name `{0}`: expected letters, digits, `_` or `:`, not starting with a digit"
    )]
    InvalidName(String),
    /// A label name does not match `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("invalid label name `{0}`: expected letters, digits or `_`, not starting with a digit")]
    InvalidLabelName(String),
    /// The same label name appears twice.
    #[error("duplicate label `{0}`")]
    DuplicateLabel(String),
}

/// A selector string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid series selector `{input}`: {reason}")]
pub struct SelectorError {
    /// The selector text.
    pub input: String,
    /// Description of the defect.
    pub reason: String,
}

pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.into(),
    }
}
