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
        use shoal_api::ErrorKind as K;
        let msg = s.message().to_string();
        match (K::of_status(s), s.code()) {
            (Some(K::InvalidArgument), _) | (_, Code::InvalidArgument) => Error::InvalidArgument(msg),
            (Some(K::CollectionNotFound), _) | (_, Code::NotFound) => Error::CollectionNotFound(msg),
            (Some(K::CollectionExists), _) | (_, Code::AlreadyExists) => Error::CollectionExists(msg),
            (Some(K::Consistency), _) | (_, Code::FailedPrecondition) => Error::Consistency(msg),
            (Some(K::Timeout), _) | (_, Code::DeadlineExceeded) => Error::Timeout(msg),
            (Some(K::ShardUnavailable), _) => Error::ShardUnavailable(msg),
            (Some(K::Storage), _) | (_, Code::DataLoss) => Error::Storage(msg),
            (Some(K::Unauthenticated), _) | (_, Code::Unauthenticated) => Error::Unauthenticated(msg),
            (Some(K::PermissionDenied), _) | (_, Code::PermissionDenied) => Error::PermissionDenied(msg),
            (_, Code::Cancelled) => Error::Cancelled(msg),
            (Some(K::NodeUnavailable), _) | (_, Code::Unavailable) => Error::NodeUnavailable(msg),
            (Some(K::ResourceExhausted), _) => Error::NodeUnavailable(msg),
            _ => Error::Internal(format!("{:?}: {msg}", s.code())),
        }
    }
}
