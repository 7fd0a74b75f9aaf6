//! How far a group may purge its log (sans-IO; `group.rs` feeds it Raft metrics and carries out its answer).
//!
//! openraft's own rule purges everything a snapshot covers except a fixed tail. Under sustained writes with
//! frequent snapshots that starves a member that is catching up: while it installs snapshot S (seconds for a
//! large shard) the leader builds newer snapshots and purges past S, so after the install the entries after S
//! are gone and the member is sent a snapshot again, possibly forever. The leader therefore keeps the log a
//! catching-up member still needs:
//!
//! ```text
//!   member matched >= target ........................ no constraint
//!   member progressing, its next entry still in the log  keep from its matched index
//!   member needs a snapshot (its next entry purged,
//!     or it is more than `cap` entries behind) ....... pin the latest snapshot index P: keep from P until
//!                                                       it has installed P (matched >= P), then as above
//!   member made no progress for `STALE` ............. no constraint (down: it gets a snapshot later)
//! ```
//! and never keeps more than `cap` entries after the newest snapshot's tail for anybody (a bound on disk).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A member whose matched index has not moved for this long is not waited for.
pub const STALE: Duration = Duration::from_secs(5);
/// A pin older than this is dropped (the snapshot transfer failed or was abandoned; a new one re-pins).
pub const PIN_TTL: Duration = Duration::from_secs(120);

/// What the guard knows about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    /// The member's matched index at the last observation (0 = nothing matched).
    matched: u64,
    /// When `matched` last changed (or the member was first seen).
    moved_at: Instant,
    /// The snapshot index pinned for this member and when, while it is being sent a snapshot.
    pin: Option<(u64, Instant)>,
}

/// The leader's purge guard; on a follower it is only the fixed-tail rule.
#[derive(Debug, Default)]
pub struct PurgeGuard {
    /// Members other than this node, by id; members that left are forgotten.
    members: BTreeMap<u64, Member>,
}

/// One observation of the group.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Index of the newest snapshot (None: no snapshot, nothing can be purged).
    pub snapshot: Option<u64>,
    /// Index of the last purged entry (None: nothing purged yet).
    pub purged: Option<u64>,
    /// Index of the last log entry.
    pub last_log: u64,
    /// On the leader: every other member's matched index (None inside = nothing matched yet); None on a
    /// follower.
    pub matched: Option<BTreeMap<u64, Option<u64>>>,
}

impl PurgeGuard {
    /// The index to purge up to (inclusive) after observing `obs` at `now`, or None when nothing should be
    /// purged now. `keep`: entries kept after the snapshot in any case; `cap`: the most entries behind the
    /// snapshot kept for a catching-up member; `batch`: purge only when at least this many entries go.
    pub fn next(&mut self, now: Instant, obs: &Observation, keep: u64, cap: u64, batch: u64) -> Option<u64> {
        let snap = obs.snapshot?;
        let mut floor = (snap + 1).saturating_sub(keep); // first index to keep by the fixed-tail rule
        let lowest_allowed = (snap + 1).saturating_sub(keep.saturating_add(cap));
        match &obs.matched {
            None => self.members.clear(),
            Some(matched) => {
                self.members.retain(|id, _| matched.contains_key(id));
                for (&id, &m) in matched {
                    let m = m.unwrap_or(0);
                    let st = self.members.entry(id).or_insert(Member { matched: m, moved_at: now, pin: None });
                    if st.matched != m {
                        st.matched = m;
                        st.moved_at = now;
                    }
                    if let Some((p, at)) = st.pin
                        && (m >= p || now.duration_since(at) > PIN_TTL)
                    {
                        st.pin = None;
                    }
                    if m + 1 >= floor {
                        continue;
                    }
                    let next_purged = obs.purged.is_some_and(|p| m < p);
                    let needs_snapshot = next_purged || m + 1 < lowest_allowed;
                    if needs_snapshot {
                        let (p, _) = *st.pin.get_or_insert((snap, now));
                        floor = floor.min(p.max(lowest_allowed));
                    } else if st.pin.is_some() || now.duration_since(st.moved_at) <= STALE {
                        let keep_from = st.pin.map_or(m + 1, |(p, _)| p.min(m + 1));
                        floor = floor.min(keep_from.max(lowest_allowed));
                    }
                }
            }
        }
        let upto = floor.checked_sub(1)?; // purge everything before `floor`
        let first_unpurged = obs.purged.map_or(0, |p| p + 1);
        (upto >= first_unpurged && upto + 1 - first_unpurged >= batch.max(1)).then_some(upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(snapshot: u64, purged: Option<u64>, last_log: u64, matched: &[(u64, u64)]) -> Observation {
        Observation {
            snapshot: Some(snapshot),
            purged,
            last_log,
            matched: Some(matched.iter().map(|&(id, m)| (id, Some(m))).collect()),
        }
    }

    #[test]
    fn a_follower_keeps_a_fixed_tail_in_batches() {
        let mut g = PurgeGuard::default();
        let t = Instant::now();
        let o = Observation { snapshot: Some(100), purged: None, last_log: 120, matched: None };
        assert_eq!(g.next(t, &o, 10, 1000, 1), Some(90));
        assert_eq!(g.next(t, &Observation { purged: Some(85), ..o.clone() }, 10, 1000, 10), None);
        assert_eq!(g.next(t, &Observation { snapshot: None, ..o }, 10, 1000, 1), None);
    }

    #[test]
    fn a_progressing_member_keeps_its_next_entry() {
        let mut g = PurgeGuard::default();
        let t = Instant::now();
        // member 2 at 40, up to date members 3: keep from 41
        assert_eq!(g.next(t, &obs(100, Some(20), 130, &[(2, 40), (3, 130)]), 10, 1000, 1), Some(40));
        // it moves on: the floor follows it
        assert_eq!(
            g.next(t + Duration::from_secs(1), &obs(100, Some(40), 130, &[(2, 70), (3, 130)]), 10, 1000, 1),
            Some(70)
        );
    }

    #[test]
    fn a_stale_member_is_not_waited_for() {
        let mut g = PurgeGuard::default();
        let t = Instant::now();
        assert_eq!(g.next(t, &obs(100, Some(20), 130, &[(2, 40)]), 10, 1000, 1), Some(40));
        let later = t + STALE + Duration::from_secs(1);
        assert_eq!(g.next(later, &obs(100, Some(20), 130, &[(2, 40)]), 10, 1000, 1), Some(90));
    }

    #[test]
    fn a_member_receiving_a_snapshot_keeps_the_log_after_it() {
        let mut g = PurgeGuard::default();
        let t = Instant::now();
        // member 2's next entry (11) is purged: it will be sent snapshot 100, pinned; the fixed tail (91..)
        // keeps more than the pin for now
        assert_eq!(g.next(t, &obs(100, Some(30), 130, &[(2, 10)]), 10, 1000, 1), Some(90));
        // newer snapshots are built while it installs: still keep from 100
        let t1 = t + Duration::from_secs(8);
        assert_eq!(g.next(t1, &obs(200, Some(30), 230, &[(2, 10)]), 10, 1000, 1), Some(99));
        // installed 100 (matched 100): the pin is gone, keep from 101 while it progresses
        let t2 = t + Duration::from_secs(9);
        assert_eq!(g.next(t2, &obs(300, Some(99), 330, &[(2, 100)]), 10, 1000, 1), Some(100));
        // caught up: the fixed tail again
        assert_eq!(g.next(t2, &obs(300, Some(100), 330, &[(2, 330)]), 10, 1000, 1), Some(290));
    }

    #[test]
    fn the_cap_bounds_what_is_kept_and_pins_expire() {
        let mut g = PurgeGuard::default();
        let t = Instant::now();
        // a member 4900 entries behind with cap 1000: it needs a snapshot; pinned at 5000
        assert_eq!(g.next(t, &obs(5000, Some(3000), 5050, &[(2, 100)]), 10, 1000, 1), Some(4990));
        // the pin never lets more than keep + cap entries stay behind the newest snapshot
        assert_eq!(g.next(t, &obs(9000, Some(3000), 9050, &[(2, 100)]), 10, 1000, 1), Some(7990));
        // an old pin expires; the member still needs a snapshot and is pinned at the newest one
        let late = t + PIN_TTL + Duration::from_secs(1);
        assert_eq!(g.next(late, &obs(9000, Some(7990), 9050, &[(2, 100)]), 10, 1000, 1), Some(8990));
        assert_eq!(g.members[&2].pin.map(|(p, _)| p), Some(9000));
    }

    #[test]
    fn members_that_left_are_forgotten() {
        let mut g = PurgeGuard::default();
        let t = Instant::now();
        assert_eq!(g.next(t, &obs(100, Some(20), 130, &[(2, 40)]), 10, 1000, 1), Some(40));
        assert_eq!(g.next(t, &obs(100, Some(40), 130, &[]), 10, 1000, 1), Some(90));
        assert!(g.members.is_empty());
    }
}
