//! The cluster as the public API shows it, built from one probe of every node: each collection's shards with
//! their replicas' states, and the health verdict over nodes and shards (pure functions, unit-tested; the
//! engine only probes). Python and raw gRPC clients get the same verdict from the `Cluster.Health` RPC.

use std::collections::BTreeMap;

use shoal_api::internal::ReplicaState;
use shoal_api::v1;

use crate::catalog::CollectionEntry;

/// A replica this many log entries behind its shard's leader counts as lagging (yellow).
pub const LAG_WARN_ENTRIES: u64 = 100;

/// The shards of `entry` as the probed replica states (by (shard, node)) show them. A replica that did not
/// answer is `down`; one with damage `quarantined`; one the placement is moving away `leaving`; a learner or
/// an empty replica of a shard with a log `joining`; the rest `active`. `lag` counts entries behind the most
/// advanced log of the shard's replicas.
pub fn shard_infos(entry: &CollectionEntry, states: &BTreeMap<(u32, u64), ReplicaState>) -> Vec<v1::ShardInfo> {
    (0..entry.spec.shards)
        .map(|s| {
            let reps: Vec<(u64, Option<&ReplicaState>)> =
                entry.replicas(s).iter().map(|&n| (n, states.get(&(s, n)))).collect();
            // The leader as the replicas that answered see it (a leader claims itself).
            let leader =
                reps.iter().filter_map(|(n, r)| r.filter(|r| r.role == "leader").map(|_| *n)).next().unwrap_or(0);
            let head = reps.iter().filter_map(|(_, r)| r.map(|r| r.last_log_index)).max().unwrap_or(0);
            let lead_state = reps.iter().find(|(n, _)| *n == leader).and_then(|(_, r)| *r);
            let most_applied = reps.iter().filter_map(|(_, r)| *r).max_by_key(|r| r.applied_index);
            let count = lead_state.or(most_applied).map_or(0, |r| r.count);
            let replicas = reps
                .iter()
                .map(|(n, r)| match r {
                    Some(r) => v1::ReplicaInfo {
                        node: *n,
                        role: if r.role == "candidate" { "follower".into() } else { r.role.clone() },
                        state: if !r.damage.is_empty() {
                            "quarantined".into()
                        } else if entry.leaving(s).contains(n) {
                            "leaving".into()
                        } else if r.role == "learner" || (leader != 0 && r.applied_index == 0 && head > 0) {
                            "joining".into()
                        } else {
                            "active".into()
                        },
                        applied_index: r.applied_index,
                        lag: head.saturating_sub(r.applied_index),
                        count: r.count,
                        unindexed: r.unindexed,
                        digest: r.digest,
                        transfer_bytes: r.snapshot_bytes,
                        transfer_total_bytes: r.snapshot_total_bytes,
                        damage: r.damage.clone(),
                        repair: r.repair.clone(),
                    },
                    None => v1::ReplicaInfo {
                        node: *n,
                        role: "follower".into(),
                        state: "down".into(),
                        ..Default::default()
                    },
                })
                .collect();
            v1::ShardInfo { id: s, leader, replicas, count }
        })
        .collect()
}

/// One collection as health sees it.
#[derive(Debug, Clone)]
pub struct CollectionShards {
    /// The collection's name.
    pub name: String,
    /// Its replication factor.
    pub replication_factor: u32,
    /// Its shards ([`shard_infos`]).
    pub shards: Vec<v1::ShardInfo>,
}

/// The health verdict: "green", "yellow" or "red", and one reason per finding (red ones first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthVerdict {
    /// "green" (every node up, every shard fully replicated, in sync and settled), "yellow" (every shard is
    /// served, something is degraded), "red" (no majority of nodes up, a shard without a leader, the only
    /// replica of a shard quarantined).
    pub status: &'static str,
    /// The findings, red ones first.
    pub reasons: Vec<String>,
}

/// Health over `nodes` (id and status: "up", "down", "joining", "leaving") and `collections`.
pub fn assess(nodes: &[(u64, String)], collections: &[CollectionShards]) -> HealthVerdict {
    let mut red: Vec<String> = Vec::new();
    let mut yellow: Vec<String> = Vec::new();
    let up = nodes.iter().filter(|(_, s)| s == "up").count();
    if !nodes.is_empty() && 2 * up <= nodes.len() {
        red.push(format!("only {up} of {} nodes up: no majority", nodes.len()));
    }
    for (id, s) in nodes {
        if s != "up" {
            yellow.push(format!("node {id} is {s}"));
        }
    }
    for c in collections {
        for sh in &c.shards {
            let at = format!("collection {:?} shard {}", c.name, sh.id);
            if sh.leader == 0 {
                red.push(format!("{at} has no leader"));
            }
            for r in sh.replicas.iter().filter(|r| r.state == "quarantined") {
                // The only copy damaged: its data is unavailable (red); else the shard runs on its other
                // replicas while this one is rebuilt (yellow).
                let line = format!("{at}: replica on node {} is quarantined ({}): {}", r.node, r.repair, r.damage);
                if sh.replicas.len() == 1 { red.push(line) } else { yellow.push(line) }
            }
            let moving: Vec<String> = sh
                .replicas
                .iter()
                .filter(|r| r.state == "joining" || r.state == "leaving")
                .map(|r| format!("node {} {}", r.node, r.state))
                .collect();
            if !moving.is_empty() {
                yellow.push(format!("{at}: transfer in flight ({})", moving.join(", ")));
            }
            let active: Vec<&v1::ReplicaInfo> = sh.replicas.iter().filter(|r| r.state == "active").collect();
            if (active.len() as u32) < c.replication_factor {
                let down: Vec<u64> = sh.replicas.iter().filter(|r| r.state == "down").map(|r| r.node).collect();
                let down = if down.is_empty() { String::new() } else { format!(" (down: {down:?})") };
                yellow.push(format!(
                    "{at} is under-replicated: {} of {} replicas active{down}",
                    active.len(),
                    c.replication_factor
                ));
            }
            for r in active.iter().filter(|r| r.lag > LAG_WARN_ENTRIES) {
                yellow.push(format!("{at}: replica on node {} lags {} entries", r.node, r.lag));
            }
        }
    }
    let status = if !red.is_empty() {
        "red"
    } else if !yellow.is_empty() {
        "yellow"
    } else {
        "green"
    };
    red.extend(yellow);
    HealthVerdict { status, reasons: red }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(node: u64, state: &str, lag: u64) -> v1::ReplicaInfo {
        v1::ReplicaInfo { node, role: "follower".into(), state: state.into(), lag, ..Default::default() }
    }

    fn coll(shards: Vec<v1::ShardInfo>) -> CollectionShards {
        CollectionShards { name: "docs".into(), replication_factor: 3, shards }
    }

    fn up(n: u64) -> Vec<(u64, String)> {
        (1..=n).map(|i| (i, "up".to_string())).collect()
    }

    #[test]
    fn green_when_everything_is_up_and_in_sync() {
        let sh = v1::ShardInfo {
            id: 0,
            leader: 1,
            replicas: vec![rep(1, "active", 0), rep(2, "active", 3), rep(3, "active", 0)],
            count: 5,
        };
        assert_eq!(assess(&up(3), &[coll(vec![sh])]), HealthVerdict { status: "green", reasons: vec![] });
    }

    #[test]
    fn a_node_down_is_yellow_and_no_majority_is_red() {
        let mut nodes = up(3);
        nodes[2].1 = "down".into();
        let sh = v1::ShardInfo {
            id: 0,
            leader: 1,
            replicas: vec![rep(1, "active", 0), rep(2, "active", 0), rep(3, "down", 0)],
            count: 5,
        };
        let v = assess(&nodes, &[coll(vec![sh.clone()])]);
        assert_eq!(v.status, "yellow");
        assert_eq!(
            v.reasons,
            vec![
                "node 3 is down".to_string(),
                "collection \"docs\" shard 0 is under-replicated: 2 of 3 replicas active (down: [3])".to_string(),
            ]
        );
        nodes[1].1 = "down".into();
        let v = assess(&nodes, &[coll(vec![v1::ShardInfo { leader: 0, ..sh }])]);
        assert_eq!(v.status, "red");
        assert_eq!(v.reasons[0], "only 1 of 3 nodes up: no majority");
        assert_eq!(v.reasons[1], "collection \"docs\" shard 0 has no leader");
    }

    #[test]
    fn quarantine_lag_and_transfers() {
        let mut q = rep(2, "quarantined", 0);
        q.damage = "f.seg at offset 7".into();
        q.repair = "rebuilding".into();
        let sh = v1::ShardInfo {
            id: 1,
            leader: 1,
            replicas: vec![rep(1, "active", 0), q.clone(), rep(3, "active", 101)],
            count: 5,
        };
        let v = assess(&up(3), &[coll(vec![sh])]);
        assert_eq!(v.status, "yellow");
        assert!(v.reasons[0].contains("node 2 is quarantined (rebuilding): f.seg at offset 7"), "{v:?}");
        assert!(v.reasons.iter().any(|r| r.ends_with("replica on node 3 lags 101 entries")), "{v:?}");
        let only = CollectionShards {
            name: "one".into(),
            replication_factor: 1,
            shards: vec![v1::ShardInfo { id: 0, leader: 2, replicas: vec![q], count: 0 }],
        };
        assert_eq!(assess(&up(3), &[only]).status, "red");
        let moving = v1::ShardInfo {
            id: 0,
            leader: 1,
            replicas: vec![rep(1, "active", 0), rep(2, "active", 0), rep(3, "active", 0), rep(4, "joining", 9)],
            count: 5,
        };
        let v = assess(&up(4), &[coll(vec![moving])]);
        assert_eq!(v.reasons, vec!["collection \"docs\" shard 0: transfer in flight (node 4 joining)".to_string()]);
    }
}
