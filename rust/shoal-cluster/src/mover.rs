//! Shard movement, the decision: the next membership change the leader of a shard group makes so that the
//! group's voters match the catalog's placement. A pure function; the engine executes the steps.
//!
//! A move in the catalog adds the target node to the shard's replicas and marks the source as leaving.
//! The leader then walks the group through add-then-remove, so the shard never has fewer voters than
//! before the move:
//!
//! ```text
//!   target not a member ──AddLearner──> learner (snapshot streamed in chunks, then log catch-up)
//!   learner ──ChangeVoters(voters ∪ {target})──> voter
//!   every target a voter ──ChangeVoters(targets)──> leaving voters removed
//!   voters == targets, some replica still leaving ──FinishMove──> group 0 drops the leaving replicas
//! ```
//!
//! Each step is derived from the current state only, so a move interrupted by a restart of its source,
//! its target or the leader resumes from wherever it stopped.

use std::collections::BTreeSet;

/// The next membership change of a shard group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipStep {
    /// The membership matches the placement.
    Nothing,
    /// Add this node as a learner; it catches up from the leader.
    AddLearner(u64),
    /// Make exactly these nodes the voters (a joint-consensus change).
    ChangeVoters(BTreeSet<u64>),
    /// The group matches the placement apart from leaving replicas no longer in it: tell group 0.
    FinishMove,
}

/// The step that brings a group with `voters` and `learners` closer to `replicas` (the placement, targets
/// first-class, leaving nodes included) minus `leaving`.
pub fn next_step(
    replicas: &[u64],
    leaving: &[u64],
    voters: &BTreeSet<u64>,
    learners: &BTreeSet<u64>,
) -> MembershipStep {
    let targets: BTreeSet<u64> = replicas.iter().copied().filter(|n| !leaving.contains(n)).collect();
    if targets.is_empty() {
        // Never remove every voter: a placement without targets is not acted upon.
        return MembershipStep::Nothing;
    }
    if let Some(&n) = targets.iter().find(|n| !voters.contains(n) && !learners.contains(n)) {
        return MembershipStep::AddLearner(n);
    }
    let promote: BTreeSet<u64> = targets.iter().copied().filter(|n| learners.contains(n)).collect();
    if !promote.is_empty() {
        return MembershipStep::ChangeVoters(voters.union(&promote).copied().collect());
    }
    if *voters != targets {
        return MembershipStep::ChangeVoters(targets);
    }
    if leaving.iter().any(|n| replicas.contains(n)) {
        return MembershipStep::FinishMove;
    }
    MembershipStep::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_settled_group_does_nothing() {
        assert_eq!(next_step(&[1, 2, 3], &[], &set(&[1, 2, 3]), &set(&[])), MembershipStep::Nothing);
    }

    #[test]
    fn a_move_walks_add_promote_remove_finish() {
        // move the replica on 3 to 4
        let (replicas, leaving) = ([1, 2, 3, 4], [3]);
        let mut voters = set(&[1, 2, 3]);
        let mut learners = set(&[]);
        assert_eq!(next_step(&replicas, &leaving, &voters, &learners), MembershipStep::AddLearner(4));
        learners.insert(4);
        assert_eq!(
            next_step(&replicas, &leaving, &voters, &learners),
            MembershipStep::ChangeVoters(set(&[1, 2, 3, 4]))
        );
        voters.insert(4);
        learners.clear();
        // never below the old voter count: 3 leaves only once 4 votes
        assert_eq!(next_step(&replicas, &leaving, &voters, &learners), MembershipStep::ChangeVoters(set(&[1, 2, 4])));
        voters.remove(&3);
        assert_eq!(next_step(&replicas, &leaving, &voters, &learners), MembershipStep::FinishMove);
        // group 0 dropped the leaving replica
        assert_eq!(next_step(&[1, 2, 4], &[], &voters, &learners), MembershipStep::Nothing);
    }

    #[test]
    fn an_interrupted_move_resumes_from_the_state() {
        // the leader restarted after 4 became a learner: promote, do not add again
        assert_eq!(
            next_step(&[1, 2, 3, 4], &[3], &set(&[1, 2, 3]), &set(&[4])),
            MembershipStep::ChangeVoters(set(&[1, 2, 3, 4]))
        );
        // an under-replicated shard just gains a replica
        assert_eq!(next_step(&[1, 2, 5], &[], &set(&[1, 2]), &set(&[])), MembershipStep::AddLearner(5));
        assert_eq!(
            next_step(&[1, 2, 5], &[], &set(&[1, 2]), &set(&[5])),
            MembershipStep::ChangeVoters(set(&[1, 2, 5]))
        );
    }

    #[test]
    fn never_removes_every_voter() {
        assert_eq!(next_step(&[1], &[1], &set(&[1]), &set(&[])), MembershipStep::Nothing);
        assert_eq!(next_step(&[], &[], &set(&[1]), &set(&[])), MembershipStep::Nothing);
    }
}
