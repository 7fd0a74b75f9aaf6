//! The one mapping from engine errors to gRPC statuses. The error kind also travels in the
//! `x-shoal-error` metadata key so clients can tell e.g. a shard from a node being unavailable.

use shoal_cluster::Error;
use tonic::{Code, Status};

/// Converts an engine error into a status.
pub fn to_status(e: Error) -> Status {
    let code = match &e {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::CollectionNotFound(_) => Code::NotFound,
        Error::CollectionExists(_) => Code::AlreadyExists,
        Error::Consistency(_) => Code::FailedPrecondition,
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::ShardUnavailable(_) | Error::NodeUnavailable(_) | Error::NotLeader { .. } => Code::Unavailable,
        Error::Corrupt { .. } => Code::DataLoss,
        Error::Storage(_) | Error::Internal(_) => Code::Internal,
    };
    let (kind, leader) = (e.kind(), e.leader_hint());
    kind.mark(Status::new(code, e.to_string()), leader)
}

/// Lifts any error convertible into the engine's into a status.
pub fn status<E: Into<Error>>(e: E) -> Status {
    to_status(e.into())
}
