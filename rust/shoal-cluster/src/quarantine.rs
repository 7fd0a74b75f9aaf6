//! Damaged replicas (DESIGN §6, "Integrity"): what a node knows about a replica it found corrupt, and the
//! decision of the next heal step. Pure; the engine executes the steps.
//!
//! ```text
//!   open fails with corruption, an undecodable committed entry, a replica directory missing that this
//!   node created (manifest)
//!        |
//!        v
//!   quarantined: the group is closed (no vote, no reads, no acks); health names node, shard, file, offset
//!        |
//!        +-- only replica of its shard ----------> Refused: requests fail with StorageError; the data stays
//!        |                                          in place for `shoal-node repair` (salvage)
//!        +-- other replicas exist: damaged files moved to DATA_DIR/damaged/ (kept for inspection)
//!               |
//!               v
//!            Leaving: ask the shard leader to drop this node from the group (HealReplica); only once it
//!               |     is out of the committed membership may an empty copy be opened (an empty voter
//!               |     could elect a leader that lacks committed entries)
//!               v
//!            Rebuilding: a fresh, empty group is open; the leader's mover adds it as a learner (snapshot +
//!               |        log), then promotes it once caught up
//!               v
//!            healed: a voter again -> the quarantine entry is dropped
//! ```

use std::path::PathBuf;
use std::time::Instant;

/// Where a damaged replica stands in its repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The only replica of its shard: nothing to copy from; requests fail with a storage error.
    Refused,
    /// Waiting for the shard leader to drop this node from the group.
    Leaving,
    /// A fresh copy is open and catching up from the leader.
    Rebuilding,
}

impl Stage {
    /// The stage as reported to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Refused => "refused: the only replica of its shard (salvage with `shoal-node repair`)",
            Stage::Leaving => "leaving its group, to be rebuilt from its peers",
            Stage::Rebuilding => "rebuilding from its peers",
        }
    }
}

/// A replica this node found damaged.
#[derive(Debug, Clone)]
pub struct Quarantine {
    /// What is wrong: the damaged file and byte offset when known (reported verbatim).
    pub damage: String,
    /// Where the repair stands.
    pub stage: Stage,
    /// Where the damaged files were moved (None while they stay in place).
    pub kept_at: Option<PathBuf>,
    /// When it was found.
    pub since: Instant,
}

/// What the engine does next for one quarantined replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealStep {
    /// Nothing to do now.
    Wait,
    /// Ask the shard leader (one of these nodes) to drop this node from the group.
    AskLeaderToRemove(Vec<u64>),
    /// Open a fresh, empty group for the replica (this node is out of the membership).
    OpenFresh,
    /// The fresh copy is a voter: drop the quarantine entry.
    Healed,
}

/// The next step of a replica at `stage`: `peers` are the shard's other replicas in the placement,
/// `removed` whether the leader confirmed this node is out of the group, `fresh_voter` whether the fresh
/// copy is a voter again.
pub fn next_step(stage: Stage, peers: &[u64], removed: bool, fresh_voter: bool) -> HealStep {
    match stage {
        Stage::Refused => HealStep::Wait,
        Stage::Leaving if peers.is_empty() => HealStep::Wait,
        Stage::Leaving if removed => HealStep::OpenFresh,
        Stage::Leaving => HealStep::AskLeaderToRemove(peers.to_vec()),
        Stage::Rebuilding if fresh_voter => HealStep::Healed,
        Stage::Rebuilding => HealStep::Wait,
    }
}

/// The stage a replica enters when found damaged: refused when it has no peer to copy from.
pub fn first_stage(peers: &[u64]) -> Stage {
    if peers.is_empty() { Stage::Refused } else { Stage::Leaving }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicated_shard_walks_leave_rebuild_heal() {
        let peers = [2, 3];
        let stage = first_stage(&peers);
        assert_eq!(stage, Stage::Leaving);
        assert_eq!(next_step(stage, &peers, false, false), HealStep::AskLeaderToRemove(vec![2, 3]));
        assert_eq!(next_step(stage, &peers, true, false), HealStep::OpenFresh);
        assert_eq!(next_step(Stage::Rebuilding, &peers, true, false), HealStep::Wait);
        assert_eq!(next_step(Stage::Rebuilding, &peers, true, true), HealStep::Healed);
    }

    #[test]
    fn a_single_replica_is_refused_and_never_opened_empty() {
        assert_eq!(first_stage(&[]), Stage::Refused);
        for removed in [false, true] {
            for voter in [false, true] {
                assert_eq!(next_step(Stage::Refused, &[], removed, voter), HealStep::Wait);
            }
        }
        // peers vanished (placement changed) while leaving: never opened empty without a leader's word
        assert_eq!(next_step(Stage::Leaving, &[], true, false), HealStep::Wait);
        assert!(Stage::Refused.as_str().contains("repair"));
    }
}
