//! The cluster layer's error type; every lower crate's error is lifted into it with `From`.

/// Errors of shoal-cluster. The node maps each variant to one gRPC status (shoal-node's status.rs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing was changed. The text names the offending item.
    #[error("{0}")]
    InvalidArgument(String),
    /// No collection of that name.
    #[error("collection {0:?} not found")]
    CollectionNotFound(String),
    /// A collection of that name exists already.
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    /// The requested consistency level cannot be met.
    #[error("consistency level not met: {0}")]
    Consistency(String),
    /// The deadline passed before the work finished.
    #[error("deadline exceeded: {0}")]
    Timeout(String),
    /// A shard could not be reached or is not ready.
    #[error("shard unavailable: {0}")]
    ShardUnavailable(String),
    /// The node is shutting down or not ready.
    #[error("node unavailable: {0}")]
    NodeUnavailable(String),
    /// Anything else (storage failure, corrupt state); logged with detail.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of shoal-cluster.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<shoal_core::Error> for Error {
    fn from(e: shoal_core::Error) -> Self {
        match e {
            shoal_core::Error::InvalidArgument(m) => Error::InvalidArgument(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<shoal_api::Error> for Error {
    fn from(e: shoal_api::Error) -> Self {
        match e {
            shoal_api::Error::Core(c) => c.into(),
            other => Error::InvalidArgument(other.to_string()),
        }
    }
}

impl From<shoal_raft::Error> for Error {
    fn from(e: shoal_raft::Error) -> Self {
        Error::ShardUnavailable(e.to_string())
    }
}
