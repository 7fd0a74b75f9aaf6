//! The openraft type configuration shared by both planes (group 0 and every shard group).

use std::fmt;

openraft::declare_raft_types!(
    /// Raft types of every Shoal group: `u64` node ids, [`BasicNode`] (an address), opaque
    /// [`Command`] bytes in and [`Reply`] bytes out, on tokio.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A command proposed to a group: opaque bytes, encoded by the application (protobuf).
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Command(
    /// The encoded command; never interpreted by this crate.
    pub Vec<u8>,
);

/// The state machine's answer to one applied [`Command`]: opaque bytes.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Reply(
    /// The encoded reply; empty for blank and membership entries.
    pub Vec<u8>,
);

// Debug/Display print sizes, not contents: a command can be megabytes of vectors.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({} bytes)", self.0.len())
    }
}

/// Node id type of [`TypeConfig`].
pub type NodeId = u64;
/// Node type of [`TypeConfig`]: the node's address.
pub type Node = openraft::BasicNode;
/// The (committed) leader id: term and node id.
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;
/// A log id: leader id and index.
pub type LogId = openraft::LogId<LeaderId>;
/// A vote: leader id and whether a quorum granted it.
pub type Vote = openraft::Vote<LeaderId>;
/// A log entry payload.
pub type EntryPayload = openraft::EntryPayload<Command, NodeId, Node>;
/// A log entry.
pub type Entry = openraft::Entry<LeaderId, EntryPayload>;
/// A membership config: voter sets (joint) and nodes.
pub type Membership = openraft::Membership<NodeId, Node>;
/// A membership config with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<LeaderId, NodeId, Node>;
/// Metadata of a snapshot: last included log id and membership.
pub type SnapshotMeta = openraft::SnapshotMeta<LeaderId, NodeId, Node>;
/// The data of a snapshot as openraft moves it around: an open snapshot file (see
/// [`crate::state_machine`] for its format).
pub type SnapshotData = std::fs::File;
/// A snapshot: its metadata and its file.
pub type Snapshot = openraft::Snapshot<LeaderId, NodeId, Node, SnapshotData>;
/// The openraft handle of a group.
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachineStore>;
