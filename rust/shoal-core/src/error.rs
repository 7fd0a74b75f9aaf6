//! The engine's error type: every failure a shard store or validator can report.

/// Errors raised by shoal-core. Messages name the offending item (e.g. `vectors[17] contains NaN`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something malformed; nothing was changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A write carried a version older than the tombstone retention window.
    #[error("stale write: {0}")]
    Stale(String),
    /// A snapshot or on-disk structure could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// An I/O failure while reading or writing a snapshot.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A search stopped early because its [`crate::cancel::CancelToken`] fired; no partial result is kept.
    #[error("search cancelled: the request was cancelled or its deadline passed")]
    Cancelled,
}

/// Result alias for shoal-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}
