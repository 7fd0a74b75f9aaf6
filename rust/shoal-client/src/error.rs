//! Client errors: one variant per public exception of DESIGN §7, decoded from gRPC statuses.

use tonic::{Code, Status};

/// Errors returned by the client. Each maps to one Python exception class.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing was changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such collection.
    #[error("{0}")]
    CollectionNotFound(String),
    /// The collection exists already.
    #[error("{0}")]
    CollectionExists(String),
    /// The consistency level could not be met.
    #[error("{0}")]
    Consistency(String),
    /// The deadline passed.
    #[error("{0}")]
    Timeout(String),
    /// The call was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// A shard could not answer.
    #[error("{0}")]
    ShardUnavailable(String),
    /// No node could be reached.
    #[error("{0}")]
    NodeUnavailable(String),
    /// A node's disk failed the request (a damaged replica, a failed fsync, a full disk); not retryable.
    #[error("{0}")]
    Storage(String),
    /// The node could not tell who is calling: no API key, an unknown or revoked key, a plaintext
    /// connection to a TLS node. Nothing was changed.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but its role does not allow the call (a `read` key writing, a client key calling
    /// a node-to-node service). Nothing was changed.
    #[error("{0}")]
    PermissionDenied(String),
    /// Anything else reported by a node.
    #[error("{0}")]
    Internal(String),
}

/// Result alias of shoal-client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<shoal_core::Error> for Error {
    fn from(e: shoal_core::Error) -> Self {
        match e {
            shoal_core::Error::InvalidArgument(m) => Error::InvalidArgument(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl Error {
    /// Decodes a status using the `x-shoal-error` kind when the node sent one.
    pub fn from_status(s: &Status) -> Self {
        let msg = s.message().to_string();
        let kind = s.metadata().get("x-shoal-error").and_then(|v| v.to_str().ok()).unwrap_or("");
        match (kind, s.code()) {
            ("invalid_argument", _) | (_, Code::InvalidArgument) => Error::InvalidArgument(msg),
            ("collection_not_found", _) | (_, Code::NotFound) => Error::CollectionNotFound(msg),
            ("collection_exists", _) | (_, Code::AlreadyExists) => Error::CollectionExists(msg),
            ("consistency", _) | (_, Code::FailedPrecondition) => Error::Consistency(msg),
            ("timeout", _) | (_, Code::DeadlineExceeded) => Error::Timeout(msg),
            ("shard_unavailable", _) => Error::ShardUnavailable(msg),
            ("storage", _) | (_, Code::DataLoss) => Error::Storage(msg),
            ("unauthenticated", _) | (_, Code::Unauthenticated) => Error::Unauthenticated(msg),
            ("permission_denied", _) | (_, Code::PermissionDenied) => Error::PermissionDenied(msg),
            (_, Code::Cancelled) => Error::Cancelled(msg),
            ("node_unavailable", _) | (_, Code::Unavailable) => Error::NodeUnavailable(msg),
            ("resource_exhausted", _) => Error::NodeUnavailable(msg),
            _ => Error::Internal(format!("{:?}: {msg}", s.code())),
        }
    }
}
