//! The one mapping from engine errors to gRPC statuses. The error kind also travels in the
//! `x-shoal-error` metadata key so clients can tell e.g. a shard from a node being unavailable.

use shoal_cluster::Error;
use tonic::{Code, Status};

/// Metadata key carrying the error kind.
pub const ERROR_KIND_KEY: &str = "x-shoal-error";

/// Converts an engine error into a status.
pub fn to_status(e: Error) -> Status {
    let (code, kind) = match &e {
        Error::InvalidArgument(_) => (Code::InvalidArgument, "invalid_argument"),
        Error::CollectionNotFound(_) => (Code::NotFound, "collection_not_found"),
        Error::CollectionExists(_) => (Code::AlreadyExists, "collection_exists"),
        Error::Consistency(_) => (Code::FailedPrecondition, "consistency"),
        Error::Timeout(_) => (Code::DeadlineExceeded, "timeout"),
        Error::ShardUnavailable(_) => (Code::Unavailable, "shard_unavailable"),
        Error::NodeUnavailable(_) => (Code::Unavailable, "node_unavailable"),
        Error::Internal(_) => (Code::Internal, "internal"),
    };
    let mut status = Status::new(code, e.to_string());
    if let Ok(v) = kind.parse() {
        status.metadata_mut().insert(ERROR_KIND_KEY, v);
    }
    status
}

/// Lifts any error convertible into the engine's into a status.
pub fn status<E: Into<Error>>(e: E) -> Status {
    to_status(e.into())
}
