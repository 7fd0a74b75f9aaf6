//! The crate's one error type, [`Error`], and its [`Result`] alias (DESIGN §7).

use std::path::PathBuf;

use crate::types::TypeConfig;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a Raft group of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node is not the leader; `leader` / `leader_addr` name the current leader when known.
    #[error("not the leader (leader: {leader:?}, address: {leader_addr:?})")]
    NotLeader {
        /// Node id of the leader this node knows of, if any.
        leader: Option<u64>,
        /// Address of that leader, if known.
        leader_addr: Option<String>,
    },

    /// The proposal reached the local log but was discarded when this node adopted another
    /// leader's log: it may or may not commit through the new leader. Retries must be idempotent.
    #[error("write outcome unknown: entry discarded on leader change (leader: {leader:?})")]
    CommitUnknown {
        /// Node id of the leader this node knows of, if any.
        leader: Option<u64>,
        /// Address of that leader, if known.
        leader_addr: Option<String>,
    },

    /// A quorum of voters could not be reached to confirm leadership.
    #[error("no quorum: {0}")]
    NoQuorum(String),

    /// A membership change or a write precondition was rejected.
    #[error("rejected: {0}")]
    Rejected(String),

    /// The log store or the state machine failed (openraft reports it as a storage error).
    #[error("storage error: {0}")]
    Storage(String),

    /// The Raft node stopped because of an unrecoverable error (a panic or a storage failure).
    #[error("raft fatal error: {0}")]
    Fatal(String),

    /// The Raft node has been shut down.
    #[error("raft group is shut down")]
    Shutdown,

    /// Waiting for a condition (e.g. leadership) exceeded its timeout.
    #[error("timed out: {0}")]
    Timeout(String),

    /// An I/O error from the file system.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),

    /// A file of this crate is damaged (not a torn tail, which is repaired) or has an unknown
    /// format version.
    #[error("corrupt file {path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong, with the byte offset when known.
        reason: String,
    },

    /// Another process (or another open group in this process) holds the directory.
    #[error("directory {0} is in use by another open store")]
    Locked(PathBuf),

    /// Invalid options or arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.into(), reason: reason.into() }
    }

    /// Converts into an `io::Error` for the openraft storage traits, keeping the message.
    pub(crate) fn into_io(self) -> std::io::Error {
        match self {
            Error::Io(e) => e,
            e @ Error::Corrupt { .. } => std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            e => std::io::Error::other(e.to_string()),
        }
    }
}

impl From<openraft::errors::Fatal<TypeConfig>> for Error {
    fn from(e: openraft::errors::Fatal<TypeConfig>) -> Self {
        use openraft::errors::Fatal;
        match e {
            Fatal::Stopped => Error::Shutdown,
            Fatal::StorageError(s) => Error::Storage(s.to_string()),
            Fatal::Panicked => Error::Fatal("raft core panicked".to_string()),
        }
    }
}

impl From<openraft::errors::ForwardToLeader<TypeConfig>> for Error {
    fn from(f: openraft::errors::ForwardToLeader<TypeConfig>) -> Self {
        Error::NotLeader { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) }
    }
}

impl From<openraft::errors::RaftError<TypeConfig, openraft::errors::ClientWriteError<TypeConfig>>> for Error {
    fn from(e: openraft::errors::RaftError<TypeConfig, openraft::errors::ClientWriteError<TypeConfig>>) -> Self {
        use openraft::errors::ClientWriteError;
        use openraft::errors::RaftError;
        match e {
            RaftError::Fatal(f) => f.into(),
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f.into(),
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
                Error::CommitUnknown { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) }
            }
            RaftError::APIError(other) => Error::Rejected(other.to_string()),
        }
    }
}

impl From<openraft::errors::RaftError<TypeConfig, openraft::errors::LinearizableReadError<TypeConfig>>> for Error {
    fn from(e: openraft::errors::RaftError<TypeConfig, openraft::errors::LinearizableReadError<TypeConfig>>) -> Self {
        use openraft::errors::LinearizableReadError;
        use openraft::errors::RaftError;
        match e {
            RaftError::Fatal(f) => f.into(),
            RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => f.into(),
            RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)) => Error::NoQuorum(q.to_string()),
        }
    }
}
