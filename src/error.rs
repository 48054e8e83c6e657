//! The crate's error type.
//!
//! # Taxonomy
//!
//! Errors fall in two groups, and every variant says which:
//! - **Caller or data errors**: a bad argument, an unknown dataset, malformed input, a
//!   version whose stored bytes no longer match its hash. They carry the subject (the file and
//!   line, the hash, the field) so a message can name what is wrong, and gRPC maps them to
//!   `InvalidArgument`, `NotFound`, `FailedPrecondition`, `DataLoss`, ...
//! - **[`Error::Internal`]**: a broken invariant, i.e. a bug in Ward. No request and no input
//!   file may produce it.
//!
//! Storage and I/O failures ([`Error::Io`], [`Error::Lance`], ...) are environmental: the disk,
//! the object store. They are neither the caller's fault nor a bug.

use std::path::PathBuf;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error Ward's library returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Lance failed to read or write a dataset.
    #[error("lance dataset {path}: {source}")]
    Lance {
        /// The dataset's location.
        path: String,
        /// The underlying error.
        source: Box<lance::Error>,
    },
    /// Arrow failed (a schema mismatch, a cast).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Parquet file could not be read or written.
    #[error("parquet {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// A dataset reference that is not a hash, a name, or `name@time`.
    #[error("invalid dataset reference {reference:?}: {reason}")]
    InvalidRef {
        /// The reference as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No version matches the reference.
    #[error("no dataset version matches {reference:?}")]
    NotFound {
        /// The reference as given.
        reference: String,
    },
    /// A stored version no longer matches its hash or manifest.
    #[error("dataset {hash} failed verification: {what}")]
    Corrupt {
        /// The version's hash.
        hash: String,
        /// What differs.
        what: String,
    },
    /// A value given by the caller is not acceptable.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What was invalid (an option name, a field).
        what: String,
        /// Why.
        reason: String,
    },
    /// Input data is malformed in a way that stops the whole operation (bad records that can
    /// be set aside go to quarantine instead).
    #[error("{location}: {field}: {reason}")]
    BadInput {
        /// File and line or record.
        location: String,
        /// The field at fault, or `-`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A column type the content hash does not define an encoding for.
    #[error("column {column:?}: type {data_type} is not supported by the content hash")]
    UnsupportedType {
        /// The column.
        column: String,
        /// Its type.
        data_type: String,
    },
    /// The store directory is not initialized or has an unexpected layout.
    #[error("store {path}: {reason}")]
    Store {
        /// The store's root.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A manifest could not be parsed.
    #[error("manifest {path}: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A request that is well-formed but not allowed in the current state, e.g. a feature
    /// set holding labels asked for online (gRPC `FailedPrecondition`).
    #[error("{what}: {reason}")]
    FailedPrecondition {
        /// What the request asked for.
        what: String,
        /// Why it cannot be done now.
        reason: String,
    },
    /// No valid credentials (gRPC `Unauthenticated`). The reason never echoes a secret.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// What is missing or wrong.
        reason: String,
    },
    /// Valid credentials, but the policy denies the request (gRPC `PermissionDenied`). The
    /// reason never reveals anything about patients the principal may not see.
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// Which permission is missing.
        reason: String,
    },
    /// The head of a name moved while a new version was being built on it: the
    /// compare-and-swap that publishes a new head found another head than the one the work
    /// started from (gRPC `Aborted`). Retrying the whole operation on the new head is safe.
    #[error("{name}: the head moved while this write was built on it (expected {expected}, found {found}); retry on the new head")]
    Conflict {
        /// The name whose head moved.
        name: String,
        /// The head the write was built on (`none` when the name had none).
        expected: String,
        /// The head found at commit.
        found: String,
    },
    /// A bug: an invariant Ward relies on does not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What kind of failure an error is, whatever protocol reports it: the service maps each to
/// a gRPC code (`service::status`), the HTTP listener to a status, and audit records name it
/// ([`ErrorClass::name`], the gRPC code's snake-case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request or its input is wrong; retrying it as is fails again.
    InvalidArgument,
    /// What it names does not exist.
    NotFound,
    /// The store is not in the state the request needs.
    FailedPrecondition,
    /// Lost a race (a compare-and-swap conflict); retrying may succeed.
    Aborted,
    /// Stored data is damaged.
    DataLoss,
    /// No valid credential.
    Unauthenticated,
    /// A credential without the permission.
    PermissionDenied,
    /// I/O or the storage engine failed; retrying later may succeed.
    Unavailable,
    /// A bug or an invariant broken.
    Internal,
}

impl ErrorClass {
    /// The snake-case name audit records use (`invalid_argument`, `not_found`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::InvalidArgument => "invalid_argument",
            ErrorClass::NotFound => "not_found",
            ErrorClass::FailedPrecondition => "failed_precondition",
            ErrorClass::Aborted => "aborted",
            ErrorClass::DataLoss => "data_loss",
            ErrorClass::Unauthenticated => "unauthenticated",
            ErrorClass::PermissionDenied => "permission_denied",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Internal => "internal",
        }
    }
}

impl Error {
    /// The error's [`ErrorClass`]: the one table of what each error means to a caller.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidArgument { .. }
            | Error::BadInput { .. }
            | Error::InvalidRef { .. }
            | Error::UnsupportedType { .. }
            | Error::Parquet { .. } => ErrorClass::InvalidArgument,
            Error::NotFound { .. } => ErrorClass::NotFound,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorClass::NotFound
            }
            Error::FailedPrecondition { .. } => ErrorClass::FailedPrecondition,
            Error::Conflict { .. } => ErrorClass::Aborted,
            Error::Corrupt { .. } | Error::Manifest { .. } => ErrorClass::DataLoss,
            Error::Unauthenticated { .. } => ErrorClass::Unauthenticated,
            Error::PermissionDenied { .. } => ErrorClass::PermissionDenied,
            Error::Io { .. } | Error::Lance { .. } => ErrorClass::Unavailable,
            Error::Store { .. } | Error::Arrow(_) | Error::Internal(_) => ErrorClass::Internal,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Lance`] for the dataset at `path`.
    pub fn lance(path: impl Into<String>, source: lance::Error) -> Self {
        Error::Lance {
            path: path.into(),
            source: Box::new(source),
        }
    }

    /// A [`Error::FailedPrecondition`].
    pub fn precondition(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::FailedPrecondition {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
