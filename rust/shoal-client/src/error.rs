//! Client errors: one variant per public exception of DESIGN §7, decoded from gRPC statuses, each keeping
//! the lower error it came from (a status, a transport or I/O error) as its `source()`.

pub use shoal_api::{Detail, Source};
use tonic::{Code, Status};

/// Errors returned by the client. Each maps to one Python exception class; each is displayed as its
/// message and has the lower error it came from (if any) as its `source()`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing was changed.
    #[error(transparent)]
    InvalidArgument(Detail),
    /// No such collection.
    #[error(transparent)]
    CollectionNotFound(Detail),
    /// The collection exists already.
    #[error(transparent)]
    CollectionExists(Detail),
    /// The consistency level could not be met.
    #[error(transparent)]
    Consistency(Detail),
    /// The deadline passed.
    #[error(transparent)]
    Timeout(Detail),
    /// The call was cancelled.
    #[error(transparent)]
    Cancelled(Detail),
    /// A shard could not answer.
    #[error(transparent)]
    ShardUnavailable(Detail),
    /// No node could be reached.
    #[error(transparent)]
    NodeUnavailable(Detail),
    /// A node's disk failed the request (a damaged replica, a failed fsync, a full disk); not retryable.
    #[error(transparent)]
    Storage(Detail),
    /// The node could not tell who is calling: no API key, an unknown or revoked key, a plaintext
    /// connection to a TLS node. Nothing was changed.
    #[error(transparent)]
    Unauthenticated(Detail),
    /// The caller is known but its role does not allow the call (a `read` key writing, a client key calling
    /// a node-to-node service). Nothing was changed.
    #[error(transparent)]
    PermissionDenied(Detail),
    /// Anything else reported by a node.
    #[error(transparent)]
    Internal(Detail),
}

/// Result alias of shoal-client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<shoal_core::Error> for Error {
    fn from(e: shoal_core::Error) -> Self {
        match e {
            shoal_core::Error::InvalidArgument(m) => Error::InvalidArgument(m.into()),
            other => Error::Internal(Detail::caused_by(other.to_string(), other)),
        }
    }
}

impl Error {
    /// Decodes a status using the `x-shoal-error` kind when the node sent one; the status is the source.
    pub fn from_status(s: &Status) -> Self {
        use shoal_api::ErrorKind as K;
        let msg = s.message().to_string();
        let kind = K::of_status(s);
        let d = |msg: String| Detail::caused_by(msg, s.clone());
        match (kind, s.code()) {
            (Some(K::InvalidArgument), _) | (_, Code::InvalidArgument) => Error::InvalidArgument(d(msg)),
            (Some(K::CollectionNotFound), _) | (_, Code::NotFound) => Error::CollectionNotFound(d(msg)),
            (Some(K::CollectionExists), _) | (_, Code::AlreadyExists) => Error::CollectionExists(d(msg)),
            (Some(K::Consistency), _) | (_, Code::FailedPrecondition) => Error::Consistency(d(msg)),
            (Some(K::Timeout), _) | (_, Code::DeadlineExceeded) => Error::Timeout(d(msg)),
            (Some(K::ShardUnavailable), _) => Error::ShardUnavailable(d(msg)),
            (Some(K::Storage), _) | (_, Code::DataLoss) => Error::Storage(d(msg)),
            (Some(K::Unauthenticated), _) | (_, Code::Unauthenticated) => Error::Unauthenticated(d(msg)),
            (Some(K::PermissionDenied), _) | (_, Code::PermissionDenied) => Error::PermissionDenied(d(msg)),
            (_, Code::Cancelled) => Error::Cancelled(d(msg)),
            (Some(K::NodeUnavailable), _) | (_, Code::Unavailable) => Error::NodeUnavailable(d(msg)),
            (Some(K::ResourceExhausted), _) => Error::NodeUnavailable(d(msg)),
            _ => Error::Internal(d(format!("{:?}: {msg}", s.code()))),
        }
    }

    /// An [`Error::InvalidArgument`] found by the client itself.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(Detail::new(message))
    }

    /// The message and lower error of any variant.
    pub fn detail(&self) -> &Detail {
        match self {
            Error::InvalidArgument(d)
            | Error::CollectionNotFound(d)
            | Error::CollectionExists(d)
            | Error::Consistency(d)
            | Error::Timeout(d)
            | Error::Cancelled(d)
            | Error::ShardUnavailable(d)
            | Error::NodeUnavailable(d)
            | Error::Storage(d)
            | Error::Unauthenticated(d)
            | Error::PermissionDenied(d)
            | Error::Internal(d) => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_status_is_kept_as_the_source_and_the_message_is_the_nodes() {
        let e = Error::from_status(&Status::failed_precondition("no leader"));
        assert!(matches!(&e, Error::Consistency(m) if m.contains("no leader")));
        assert_eq!(e.to_string(), "no leader");
        let src = e.source().expect("the status is the source");
        assert!(src.downcast_ref::<Status>().is_some_and(|s| s.code() == Code::FailedPrecondition), "{src}");
    }

    #[test]
    fn errors_found_by_the_client_have_no_source_and_rewording_keeps_it() {
        let e = Error::InvalidArgument("bad k".into());
        assert!(e.source().is_none());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let d = Detail::caused_by("node down", io).reworded("no node answered");
        assert_eq!(d.message(), "no node answered");
        let src = std::error::Error::source(&d).expect("kept");
        assert!(src.downcast_ref::<std::io::Error>().is_some());
    }
}
