//! The cluster layer's error type; every lower crate's error is lifted into it with `From`.

use shoal_api::ErrorKind;

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
    /// This node does not lead the group a request needs (retried by the coordinator on the leader).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<u64>,
    },
    /// The disk failed this node's replica: a damaged file (quarantined, see `quarantine.rs`), a failed
    /// fsync, a full disk. Not retryable; the text names the node, the shard and, for damage, the file
    /// and byte offset.
    #[error("storage error: {0}")]
    Storage(String),
    /// A file of a replica is damaged (opening it found corruption).
    #[error("corrupt file {path}: {reason}")]
    Corrupt {
        /// The damaged file (or directory, when it is missing).
        path: String,
        /// What is wrong, with the byte offset when known.
        reason: String,
    },
    /// Anything else; logged with detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The error's kind on the wire (`x-shoal-error` metadata); [`Error::from_kind`] inverts it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::CollectionNotFound(_) => ErrorKind::CollectionNotFound,
            Error::CollectionExists(_) => ErrorKind::CollectionExists,
            Error::Consistency(_) => ErrorKind::Consistency,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::ShardUnavailable(_) => ErrorKind::ShardUnavailable,
            Error::NodeUnavailable(_) => ErrorKind::NodeUnavailable,
            Error::NotLeader { .. } => ErrorKind::NotLeader,
            Error::Storage(_) | Error::Corrupt { .. } => ErrorKind::Storage,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The error's own text, without the prefix its `Display` adds.
    fn detail(&self) -> String {
        match self {
            Error::InvalidArgument(m)
            | Error::CollectionNotFound(m)
            | Error::CollectionExists(m)
            | Error::Consistency(m)
            | Error::Timeout(m)
            | Error::ShardUnavailable(m)
            | Error::NodeUnavailable(m)
            | Error::Storage(m)
            | Error::Internal(m) => m.clone(),
            Error::NotLeader { .. } | Error::Corrupt { .. } => self.to_string(),
        }
    }

    /// Rebuilds an error received from another node: `kind` from [`Error::kind`], `message` its
    /// `Display` text, `leader` the leader hint of a `not_leader` error. `None` for the kinds only a node's
    /// admission layer gives (refused credentials, at its in-flight limit): no engine error has them.
    pub fn from_kind(kind: ErrorKind, message: &str, leader: Option<u64>) -> Option<Error> {
        let m = |f: fn(String) -> Error| {
            let prefix = f(String::new()).to_string();
            f(message.strip_prefix(prefix.as_str()).unwrap_or(message).to_string())
        };
        Some(match kind {
            ErrorKind::InvalidArgument => m(Error::InvalidArgument),
            ErrorKind::CollectionNotFound => m(Error::CollectionNotFound),
            ErrorKind::CollectionExists => m(Error::CollectionExists),
            ErrorKind::Consistency => m(Error::Consistency),
            ErrorKind::Timeout => m(Error::Timeout),
            ErrorKind::ShardUnavailable => m(Error::ShardUnavailable),
            ErrorKind::NodeUnavailable => m(Error::NodeUnavailable),
            ErrorKind::Internal => m(Error::Internal),
            ErrorKind::Storage => m(Error::Storage),
            ErrorKind::NotLeader => Error::NotLeader { leader },
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied | ErrorKind::ResourceExhausted => return None,
        })
    }

    /// Whether a coordinator may retry the request elsewhere or later (it changed nothing for sure, or
    /// it is idempotent: every write carries its version).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NotLeader { .. } | Error::ShardUnavailable(_) | Error::NodeUnavailable(_))
    }

    /// The leader hint of a [`Error::NotLeader`].
    pub fn leader_hint(&self) -> Option<u64> {
        match self {
            Error::NotLeader { leader } => *leader,
            _ => None,
        }
    }

    /// The error with `context` put in front of its text (same kind).
    pub fn context(self, context: &str) -> Error {
        let d = format!("{context}: {}", self.detail());
        match self {
            Error::InvalidArgument(_) => Error::InvalidArgument(d),
            Error::CollectionNotFound(m) => Error::CollectionNotFound(m),
            Error::CollectionExists(m) => Error::CollectionExists(m),
            Error::Consistency(_) => Error::Consistency(d),
            Error::Timeout(_) => Error::Timeout(d),
            Error::ShardUnavailable(_) => Error::ShardUnavailable(d),
            Error::NodeUnavailable(_) => Error::NodeUnavailable(d),
            e @ Error::NotLeader { .. } => e,
            Error::Storage(_) | Error::Corrupt { .. } => Error::Storage(d),
            Error::Internal(_) => Error::Internal(d),
        }
    }
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
        match e {
            shoal_raft::Error::NotLeader { leader, .. } => Error::NotLeader { leader },
            shoal_raft::Error::Corrupt { path, reason } => Error::Corrupt { path: path.display().to_string(), reason },
            e @ (shoal_raft::Error::Storage(_) | shoal_raft::Error::Io(_)) => Error::Storage(e.to_string()),
            e => Error::ShardUnavailable(e.to_string()),
        }
    }
}
