//! The cluster layer's error type; every lower crate's error is lifted into it with `From` and kept as its
//! `source()`.

use std::fmt;
use std::sync::Arc;

use shoal_api::ErrorKind;
pub use shoal_api::{Detail, Source};

/// Errors of shoal-cluster. The node maps each variant to one gRPC status (shoal-node's status.rs). Each
/// displays as its text (with the prefix of its kind) and has the lower error it came from, if any, as its
/// `source()`.
#[derive(Debug)]
pub enum Error {
    /// Bad input; nothing was changed. The text names the offending item.
    InvalidArgument(Detail),
    /// No collection of that name.
    CollectionNotFound(Detail),
    /// A collection of that name exists already.
    CollectionExists(Detail),
    /// The requested consistency level cannot be met.
    Consistency(Detail),
    /// The deadline passed before the work finished.
    Timeout(Detail),
    /// A shard could not be reached or is not ready.
    ShardUnavailable(Detail),
    /// The node is shutting down or not ready.
    NodeUnavailable(Detail),
    /// This node does not lead the group a request needs (retried by the coordinator on the leader).
    NotLeader {
        /// The leader this node knows of.
        leader: Option<u64>,
        /// The lower error that said so (a Raft group's refusal); `None` when this layer found it.
        source: Option<Source>,
    },
    /// The disk failed this node's replica: a damaged file (quarantined, see `quarantine.rs`), a failed
    /// fsync, a full disk. Not retryable; the text names the node, the shard and, for damage, the file
    /// and byte offset.
    Storage(Detail),
    /// A file of a replica is damaged (opening it found corruption).
    Corrupt {
        /// The damaged file (or directory, when it is missing).
        path: String,
        /// What is wrong, with the byte offset when known.
        reason: String,
        /// The lower error that found the damage (a Raft store's); `None` when this layer found it.
        source: Option<Source>,
    },
    /// Anything else; logged with detail.
    Internal(Detail),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(d) => write!(f, "{d}"),
            Error::CollectionNotFound(d) => write!(f, "collection {:?} not found", d.message()),
            Error::CollectionExists(d) => write!(f, "collection {:?} already exists", d.message()),
            Error::Consistency(d) => write!(f, "consistency level not met: {d}"),
            Error::Timeout(d) => write!(f, "deadline exceeded: {d}"),
            Error::ShardUnavailable(d) => write!(f, "shard unavailable: {d}"),
            Error::NodeUnavailable(d) => write!(f, "node unavailable: {d}"),
            Error::NotLeader { leader, .. } => write!(f, "not the leader (leader: {leader:?})"),
            Error::Storage(d) => write!(f, "storage error: {d}"),
            Error::Corrupt { path, reason, .. } => write!(f, "corrupt file {path}: {reason}"),
            Error::Internal(d) => write!(f, "internal error: {d}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NotLeader { source, .. } | Error::Corrupt { source, .. } => source.as_deref().map(|e| e as _),
            _ => self.text().and_then(std::error::Error::source),
        }
    }
}

impl Error {
    /// A [`Error::NotLeader`] found by this layer: `leader` is the leader it knows of.
    pub fn not_leader(leader: Option<u64>) -> Error {
        Error::NotLeader { leader, source: None }
    }

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

    /// The text and lower error of the variants that carry a [`Detail`]; `None` for the others.
    fn text(&self) -> Option<&Detail> {
        match self {
            Error::InvalidArgument(d)
            | Error::CollectionNotFound(d)
            | Error::CollectionExists(d)
            | Error::Consistency(d)
            | Error::Timeout(d)
            | Error::ShardUnavailable(d)
            | Error::NodeUnavailable(d)
            | Error::Storage(d)
            | Error::Internal(d) => Some(d),
            Error::NotLeader { .. } | Error::Corrupt { .. } => None,
        }
    }

    /// Rebuilds an error received from another node: `kind` from [`Error::kind`], `message` its
    /// `Display` text, `leader` the leader hint of a `not_leader` error. `None` for the kinds only a node's
    /// admission layer gives (refused credentials, at its in-flight limit): no engine error has them.
    pub fn from_kind(kind: ErrorKind, message: &str, leader: Option<u64>) -> Option<Error> {
        let m = |f: fn(Detail) -> Error| {
            let prefix = f(Detail::new("")).to_string();
            f(Detail::new(message.strip_prefix(prefix.as_str()).unwrap_or(message)))
        };
        Some(match kind {
            ErrorKind::InvalidArgument => m(Error::InvalidArgument),
            ErrorKind::CollectionNotFound => Error::CollectionNotFound(quoted_name(message, " not found").into()),
            ErrorKind::CollectionExists => Error::CollectionExists(quoted_name(message, " already exists").into()),
            ErrorKind::Consistency => m(Error::Consistency),
            ErrorKind::Timeout => m(Error::Timeout),
            ErrorKind::ShardUnavailable => m(Error::ShardUnavailable),
            ErrorKind::NodeUnavailable => m(Error::NodeUnavailable),
            ErrorKind::Internal => m(Error::Internal),
            ErrorKind::Storage => m(Error::Storage),
            ErrorKind::NotLeader => Error::not_leader(leader),
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
            Error::NotLeader { leader, .. } => *leader,
            _ => None,
        }
    }

    /// The same error (same kind, same text) with `source` as its lower error, in place of the one it had:
    /// for an error rebuilt from what another node sent, the status it came in.
    pub fn caused_by(self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        let source: Source = Arc::new(source);
        match self {
            Error::NotLeader { leader, .. } => Error::NotLeader { leader, source: Some(source) },
            Error::Corrupt { path, reason, .. } => Error::Corrupt { path, reason, source: Some(source) },
            e => e.map_text(|d| Detail::caused_by_shared(d.message(), source)),
        }
    }

    /// The error with `context` put in front of its text (same kind, same lower error).
    pub fn context(self, context: &str) -> Error {
        match self {
            e @ (Error::CollectionNotFound(_) | Error::CollectionExists(_) | Error::NotLeader { .. }) => e,
            e @ Error::Corrupt { .. } => Error::Storage(match e.source_shared() {
                Some(s) => Detail::caused_by_shared(format!("{context}: {e}"), s),
                None => Detail::new(format!("{context}: {e}")),
            }),
            e => e.map_text(|d| d.reworded(format!("{context}: {}", d.message()))),
        }
    }

    /// The shared lower error of a struct variant.
    fn source_shared(&self) -> Option<Source> {
        match self {
            Error::NotLeader { source, .. } | Error::Corrupt { source, .. } => source.clone(),
            _ => None,
        }
    }

    /// The error with its [`Detail`] replaced by `f` of it (same kind); struct variants are unchanged.
    fn map_text(self, f: impl FnOnce(&Detail) -> Detail) -> Error {
        match self {
            Error::InvalidArgument(d) => Error::InvalidArgument(f(&d)),
            Error::CollectionNotFound(d) => Error::CollectionNotFound(f(&d)),
            Error::CollectionExists(d) => Error::CollectionExists(f(&d)),
            Error::Consistency(d) => Error::Consistency(f(&d)),
            Error::Timeout(d) => Error::Timeout(f(&d)),
            Error::ShardUnavailable(d) => Error::ShardUnavailable(f(&d)),
            Error::NodeUnavailable(d) => Error::NodeUnavailable(f(&d)),
            Error::Storage(d) => Error::Storage(f(&d)),
            Error::Internal(d) => Error::Internal(f(&d)),
            e @ (Error::NotLeader { .. } | Error::Corrupt { .. }) => e,
        }
    }
}

/// The collection name in `collection "<name>"<suffix>` (the `Display` of the two collection errors, whose
/// `{:?}` escapes only `"` and `\\` in the names validation allows); the whole text when it is not of that form.
fn quoted_name(message: &str, suffix: &str) -> String {
    match message.strip_prefix("collection \"").and_then(|m| m.strip_suffix(suffix)).and_then(|m| m.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => message.to_string(),
    }
}

/// Result alias of shoal-cluster.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<shoal_core::Error> for Error {
    fn from(e: shoal_core::Error) -> Self {
        match e {
            shoal_core::Error::InvalidArgument(m) => Error::InvalidArgument(m.into()),
            other => Error::Internal(Detail::caused_by(other.to_string(), other)),
        }
    }
}

impl From<shoal_api::Error> for Error {
    fn from(e: shoal_api::Error) -> Self {
        match e {
            shoal_api::Error::Core(c) => c.into(),
            other => Error::InvalidArgument(Detail::caused_by(other.to_string(), other)),
        }
    }
}

impl From<shoal_raft::Error> for Error {
    fn from(e: shoal_raft::Error) -> Self {
        match e {
            shoal_raft::Error::NotLeader { leader, .. } => Error::NotLeader { leader, source: Some(Arc::new(e)) },
            shoal_raft::Error::Corrupt { ref path, ref reason } => {
                Error::Corrupt { path: path.display().to_string(), reason: reason.clone(), source: Some(Arc::new(e)) }
            }
            e @ (shoal_raft::Error::Storage(_) | shoal_raft::Error::Io(_)) => {
                Error::Storage(Detail::caused_by(e.to_string(), e))
            }
            e => Error::ShardUnavailable(Detail::caused_by(e.to_string(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;

    use super::*;

    /// The error's `source()`, which must be a `T`.
    fn source_as<T: std::error::Error + 'static>(e: &Error) -> &T {
        e.source().and_then(|s| s.downcast_ref::<T>()).unwrap_or_else(|| panic!("no source of its type: {e:?}"))
    }

    #[test]
    fn a_raft_error_is_kept_as_the_source_and_the_text_is_unchanged() {
        let raft = || shoal_raft::Error::Storage("fsync failed".into());
        let e = Error::from(raft());
        assert!(matches!(&e, Error::Storage(m) if m.contains("fsync failed")));
        assert_eq!(e.to_string(), format!("storage error: {}", raft()));
        assert!(matches!(source_as::<shoal_raft::Error>(&e), shoal_raft::Error::Storage(m) if m == "fsync failed"));

        let e = Error::from(shoal_raft::Error::NoQuorum("2 of 3 down".into()));
        assert_eq!(e.to_string(), "shard unavailable: no quorum: 2 of 3 down");
        assert!(matches!(source_as::<shoal_raft::Error>(&e), shoal_raft::Error::NoQuorum(_)));

        let e = Error::from(shoal_raft::Error::NotLeader { leader: Some(2), leader_addr: None });
        assert_eq!(e.to_string(), "not the leader (leader: Some(2))");
        assert_eq!(e.leader_hint(), Some(2));
        assert!(matches!(source_as::<shoal_raft::Error>(&e), shoal_raft::Error::NotLeader { .. }));

        let e =
            Error::from(shoal_raft::Error::Corrupt { path: PathBuf::from("/d/log/1.seg"), reason: "bad crc".into() });
        assert_eq!(e.to_string(), "corrupt file /d/log/1.seg: bad crc");
        assert!(matches!(source_as::<shoal_raft::Error>(&e), shoal_raft::Error::Corrupt { .. }));
    }

    #[test]
    fn an_io_error_stays_at_the_end_of_the_chain() {
        let io = || std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let e = Error::from(shoal_raft::Error::Io(io()));
        assert_eq!(e.to_string(), format!("storage error: {}", shoal_raft::Error::Io(io())));
        let raft = source_as::<shoal_raft::Error>(&e);
        let lower = raft.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io error");
        assert_eq!(lower.kind(), std::io::ErrorKind::StorageFull);

        let e = Error::from(shoal_core::Error::Io(io()));
        assert_eq!(e.to_string(), "internal error: i/o error: disk full");
        assert!(matches!(source_as::<shoal_core::Error>(&e), shoal_core::Error::Io(_)));
    }

    #[test]
    fn a_core_error_is_kept_as_the_source_and_bad_input_has_none() {
        let e = Error::from(shoal_core::Error::Corrupt("bad header".into()));
        assert_eq!(e.to_string(), "internal error: corrupt data: bad header");
        assert!(matches!(source_as::<shoal_core::Error>(&e), shoal_core::Error::Corrupt(_)));

        let e = Error::from(shoal_core::Error::invalid("k must be positive"));
        assert_eq!(e.to_string(), "k must be positive");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.source().is_none());
    }

    #[test]
    fn context_keeps_the_kind_and_the_source() {
        let e = Error::from(shoal_raft::Error::Storage("fsync failed".into())).context("node 1 shard 0");
        assert_eq!(e.to_string(), "storage error: node 1 shard 0: storage error: fsync failed");
        assert!(source_as::<shoal_raft::Error>(&e).to_string().contains("fsync failed"));

        let e =
            Error::from(shoal_raft::Error::Corrupt { path: PathBuf::from("f"), reason: "torn".into() }).context("c");
        assert!(matches!(&e, Error::Storage(m) if m.message() == "c: corrupt file f: torn"));
        assert!(matches!(source_as::<shoal_raft::Error>(&e), shoal_raft::Error::Corrupt { .. }));

        let e = Error::CollectionNotFound("c".into()).context("ignored");
        assert_eq!(e.to_string(), "collection \"c\" not found");
        assert!(Error::Timeout("slow".into()).context("read").source().is_none());
    }

    #[test]
    fn from_kind_inverts_kind_and_display() {
        let all = [
            Error::InvalidArgument("bad k".into()),
            Error::CollectionNotFound("c".into()),
            Error::CollectionExists("c".into()),
            Error::Consistency("no quorum".into()),
            Error::Timeout("slow".into()),
            Error::ShardUnavailable("down".into()),
            Error::NodeUnavailable("stopping".into()),
            Error::not_leader(Some(3)),
            Error::Storage("disk".into()),
            Error::Internal("bug".into()),
        ];
        for e in all {
            let back = Error::from_kind(e.kind(), &e.to_string(), e.leader_hint()).expect("an engine kind");
            assert_eq!(
                (back.kind(), back.leader_hint(), back.is_retryable()),
                (e.kind(), e.leader_hint(), e.is_retryable())
            );
            assert_eq!(back.to_string(), e.to_string());
            assert!(back.source().is_none());
        }
        assert!(Error::from_kind(ErrorKind::Unauthenticated, "no key", None).is_none());
    }

    #[test]
    fn an_error_rebuilt_from_a_peer_keeps_its_status() {
        let sent = Error::Consistency("no leader".into());
        let status = tonic::Status::failed_precondition(sent.to_string());
        let e = Error::from_kind(sent.kind(), status.message(), None).expect("engine kind").caused_by(status);
        assert_eq!(e.to_string(), sent.to_string());
        assert_eq!(source_as::<tonic::Status>(&e).code(), tonic::Code::FailedPrecondition);
    }
}
