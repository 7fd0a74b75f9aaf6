//! Anti-entropy, the decision (DESIGN §6): replicas of a shard compare their content digests at equal applied
//! indexes, and a replica that a majority of its comparable peers disagrees with judges itself damaged (it is
//! then quarantined and rebuilt like any other damage). Pure; the engine gathers the digests.
//!
//! Each replica keeps a ring of (applied index, digest) after its recent applies, so replicas a few entries
//! apart still share an index to compare at. The digest is maintained at apply time (O(1) to read).
//!
//! ```text
//!   for each peer with a common index: agree | disagree  (at the newest common index)
//!   disagree >  agree + 1                      -> this replica is wrong (a clear majority)
//!   disagree == agree + 1 and a peer leads     -> this replica is wrong (a tie: the leader wins)
//!   otherwise                                  -> fine (or the other replica is the one to heal itself)
//! ```
//!
//! A replica judged wrong is rebuilt only when its group can spare it: the peers that are voters, healthy
//! and close enough to compare must form a majority of the group without it ([`can_spare`]). Otherwise the
//! rebuild would stall the shard's writes (a 3-replica shard with one node down would keep one voter).

/// One peer's view of the same shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRing {
    /// The peer node.
    pub node: u64,
    /// Whether it leads the shard group.
    pub leader: bool,
    /// Its (applied index, digest) pairs, ascending by index.
    pub ring: Vec<(u64, u64)>,
}

/// The newest index both rings hold, with the two digests there.
pub fn newest_common(mine: &[(u64, u64)], theirs: &[(u64, u64)]) -> Option<(u64, u64, u64)> {
    mine.iter().rev().find_map(|&(i, d)| theirs.binary_search_by_key(&i, |&(j, _)| j).ok().map(|k| (i, d, theirs[k].1)))
}

/// Why this replica must be rebuilt, if its content disagrees with its peers (see the module doc).
pub fn judge(mine: &[(u64, u64)], peers: &[PeerRing]) -> Option<String> {
    let mut agree = 0usize;
    let mut disagree: Vec<(u64, u64, u64, u64)> = Vec::new(); // (node, index, mine, theirs)
    let mut leader_disagrees = false;
    for p in peers {
        let Some((index, a, b)) = newest_common(mine, &p.ring) else { continue };
        if a == b {
            agree += 1;
        } else {
            leader_disagrees |= p.leader;
            disagree.push((p.node, index, a, b));
        }
    }
    let wrong = disagree.len() > agree + 1 || (disagree.len() == agree + 1 && leader_disagrees);
    if !wrong {
        return None;
    }
    let detail: Vec<String> =
        disagree.iter().map(|(n, i, a, b)| format!("node {n} at index {i}: {b:016x}, this replica {a:016x}")).collect();
    Some(format!("content digest differs from its peers' ({}); {agree} peer(s) agree", detail.join("; ")))
}

/// Whether a group of `voters` voters (this replica among them) keeps a majority while this replica is
/// rebuilt, given `healthy_peers` other voters that are up, undamaged and caught up.
pub fn can_spare(voters: usize, healthy_peers: usize) -> bool {
    let rest = voters.saturating_sub(1);
    rest > 0 && healthy_peers > rest / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: u64, leader: bool, ring: &[(u64, u64)]) -> PeerRing {
        PeerRing { node, leader, ring: ring.to_vec() }
    }

    #[test]
    fn common_index_is_the_newest_shared_one() {
        assert_eq!(newest_common(&[(5, 1), (6, 2), (7, 3)], &[(6, 9), (7, 3), (8, 4)]), Some((7, 3, 3)));
        assert_eq!(newest_common(&[(5, 1), (6, 2)], &[(7, 3), (8, 4)]), None);
        assert_eq!(newest_common(&[], &[(1, 1)]), None);
    }

    #[test]
    fn the_odd_one_out_is_wrong() {
        let me = [(10, 0xa), (11, 0xb)];
        // both peers disagree with me (and agree with each other): I am wrong
        let peers = [peer(2, true, &[(11, 0xc)]), peer(3, false, &[(10, 0x9), (11, 0xc)])];
        let why = judge(&me, &peers).unwrap();
        assert!(why.contains("node 2 at index 11") && why.contains("node 3"), "{why}");
        // one agrees, one disagrees: the other one is wrong, not me
        assert_eq!(judge(&me, &[peer(2, true, &[(11, 0xb)]), peer(3, false, &[(11, 0xc)])]), None);
        // all agree
        assert_eq!(judge(&me, &[peer(2, true, &[(11, 0xb)]), peer(3, false, &[(10, 0xa)])]), None);
    }

    #[test]
    fn a_replica_is_rebuilt_only_when_the_group_keeps_a_majority() {
        assert!(can_spare(3, 2));
        assert!(!can_spare(3, 1), "one node down: the other two are the majority");
        assert!(can_spare(5, 3) && !can_spare(5, 2), "four left need three");
        assert!(!can_spare(1, 0) && can_spare(2, 1));
    }

    #[test]
    fn a_tie_goes_to_the_leader() {
        let me = [(10, 0xa)];
        assert!(judge(&me, &[peer(2, true, &[(10, 0xb)])]).is_some(), "a follower disagreeing with its leader");
        assert_eq!(judge(&me, &[peer(2, false, &[(10, 0xb)])]), None, "the leader keeps its content");
        // a lagging peer (no common index) does not vote
        assert!(judge(&me, &[peer(2, true, &[(10, 0xb)]), peer(3, false, &[(20, 0xa)])]).is_some());
        assert_eq!(judge(&me, &[peer(3, false, &[(20, 0xa)])]), None);
    }
}
