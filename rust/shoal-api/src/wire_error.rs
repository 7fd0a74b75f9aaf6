//! The error codes Shoal puts on the wire, defined once: the metadata keys a node's statuses carry and the
//! kinds that travel in `x-shoal-error` (written by the node's status mapping and its admission layer, read
//! back by peers and by the client).

/// Metadata key carrying an error's kind ([`ErrorKind::as_str`]).
pub const ERROR_KIND_KEY: &str = "x-shoal-error";
/// Metadata key carrying the leader hint (a node id) of a `not_leader` error.
pub const LEADER_KEY: &str = "x-shoal-leader";

/// The kind of a failed call, as a node reports it. Clients and peers map it back to their own error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or out of range; nothing was done.
    InvalidArgument,
    /// No such collection.
    CollectionNotFound,
    /// A collection of that name exists already.
    CollectionExists,
    /// The requested consistency cannot be given (e.g. a session token from the future).
    Consistency,
    /// The deadline passed; the operation may or may not have happened.
    Timeout,
    /// No replica of a shard could serve the request.
    ShardUnavailable,
    /// The node is starting, stopping or cut off and did not take the request on.
    NodeUnavailable,
    /// The node is not the leader of the group (a hint may travel in [`LEADER_KEY`]).
    NotLeader,
    /// The node's storage failed or found damage.
    Storage,
    /// Anything else.
    Internal,
    /// No valid credentials.
    Unauthenticated,
    /// Credentials valid, but not for this operation.
    PermissionDenied,
    /// The node is at its in-flight limit; nothing was done, retry later.
    ResourceExhausted,
}

impl ErrorKind {
    /// Every kind, for tests and documentation.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::InvalidArgument,
        ErrorKind::CollectionNotFound,
        ErrorKind::CollectionExists,
        ErrorKind::Consistency,
        ErrorKind::Timeout,
        ErrorKind::ShardUnavailable,
        ErrorKind::NodeUnavailable,
        ErrorKind::NotLeader,
        ErrorKind::Storage,
        ErrorKind::Internal,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::ResourceExhausted,
    ];

    /// The kind's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::CollectionNotFound => "collection_not_found",
            ErrorKind::CollectionExists => "collection_exists",
            ErrorKind::Consistency => "consistency",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ShardUnavailable => "shard_unavailable",
            ErrorKind::NodeUnavailable => "node_unavailable",
            ErrorKind::NotLeader => "not_leader",
            ErrorKind::Storage => "storage",
            ErrorKind::Internal => "internal",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::ResourceExhausted => "resource_exhausted",
        }
    }

    /// The kind named `s` ([`ErrorKind::as_str`]); `None` for a name this build does not know.
    pub fn parse(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind a status carries in [`ERROR_KIND_KEY`]; `None` without one (the status then comes from the
    /// transport, not from a node) or with an unknown name.
    pub fn of_status(s: &tonic::Status) -> Option<ErrorKind> {
        s.metadata().get(ERROR_KIND_KEY).and_then(|v| v.to_str().ok()).and_then(ErrorKind::parse)
    }

    /// Whether the status carries any [`ERROR_KIND_KEY`] mark (known to this build or not).
    pub fn is_marked(s: &tonic::Status) -> bool {
        s.metadata().get(ERROR_KIND_KEY).is_some()
    }

    /// The leader hint a status carries in [`LEADER_KEY`].
    pub fn leader_of(s: &tonic::Status) -> Option<u64> {
        s.metadata().get(LEADER_KEY).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    }

    /// Marks `s` with this kind (and a leader hint when given).
    pub fn mark(self, mut s: tonic::Status, leader: Option<u64>) -> tonic::Status {
        s.metadata_mut().insert(ERROR_KIND_KEY, tonic::metadata::MetadataValue::from_static(self.as_str()));
        if let Some(Ok(v)) = leader.map(|l| l.to_string().parse()) {
            s.metadata_mut().insert(LEADER_KEY, v);
        }
        s
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_a_status() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
            let s = k.mark(tonic::Status::internal("x"), Some(7));
            assert_eq!(ErrorKind::of_status(&s), Some(k));
            assert_eq!(ErrorKind::leader_of(&s), Some(7));
        }
        assert_eq!(ErrorKind::parse("frobnicated"), None);
        let bare = tonic::Status::unavailable("no connection");
        assert_eq!((ErrorKind::of_status(&bare), ErrorKind::is_marked(&bare)), (None, false));
    }
}
