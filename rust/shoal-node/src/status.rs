//! The one mapping from engine errors to gRPC statuses. The error kind also travels in the
//! `x-shoal-error` metadata key so clients can tell e.g. a shard from a node being unavailable.

use shoal_cluster::Error;
use tonic::{Code, Status};

/// Metadata key carrying the error kind.
pub const ERROR_KIND_KEY: &str = "x-shoal-error";
/// Metadata key carrying the leader hint of a `not_leader` error.
pub const LEADER_KEY: &str = "x-shoal-leader";

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
    let kind = e.kind();
    let leader = e.leader_hint();
    let mut status = Status::new(code, e.to_string());
    if let Ok(v) = kind.parse() {
        status.metadata_mut().insert(ERROR_KIND_KEY, v);
    }
    if let Some(Ok(v)) = leader.map(|l| l.to_string().parse()) {
        status.metadata_mut().insert(LEADER_KEY, v);
    }
    status
}

/// Lifts any error convertible into the engine's into a status.
pub fn status<E: Into<Error>>(e: E) -> Status {
    to_status(e.into())
}
