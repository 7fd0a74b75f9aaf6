//! The local reconciler's decision: which shard groups this node must open or close so that its local
//! replicas match the catalog. A pure function; the engine executes the actions.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::CollectionEntry;

/// A shard replica's identity: which shard of which incarnation of a collection. Its `Display` form is the
/// shard's Raft group id, `<collection>@<uid>/<shard>` ([`ReplicaKey::parse`] inverts it). Ordered by
/// collection, then uid, then shard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    /// The collection's name (validated by the catalog: no '/' and a valid directory name).
    pub collection: String,
    /// The collection's uid (the group-0 index that created it): tells a re-created name from the old one.
    pub uid: u64,
    /// The shard number, below the collection's shard count.
    pub shard: u32,
}

impl ReplicaKey {
    /// The key of `shard` of collection `collection` created at `uid`.
    pub fn new(collection: impl Into<String>, uid: u64, shard: u32) -> Self {
        ReplicaKey { collection: collection.into(), uid, shard }
    }

    /// Splits a shard group id `<collection>@<uid>/<shard>`; `None` for anything else (e.g. "meta").
    pub fn parse(gid: &str) -> Option<ReplicaKey> {
        let (rest, shard) = gid.rsplit_once('/')?;
        let (name, uid) = rest.rsplit_once('@')?;
        Some(ReplicaKey::new(name, uid.parse().ok()?, shard.parse().ok()?))
    }

    /// The shard's Raft group id (the same text as `Display`).
    pub fn group_id(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}/{}", self.collection, self.uid, self.shard)
    }
}

impl std::str::FromStr for ReplicaKey {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        ReplicaKey::parse(s).ok_or_else(|| crate::Error::InvalidArgument(format!("bad shard group id {s:?}").into()))
    }
}

/// One step for the engine to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open (creating if new) the local group of this replica.
    Open(ReplicaKey),
    /// Shut down this replica's group and delete its data.
    Remove(ReplicaKey),
}

/// Desired replicas of node `me`: every shard of every collection in the catalog whose placement names it.
pub fn desired(catalog: &BTreeMap<String, CollectionEntry>, me: u64) -> BTreeSet<ReplicaKey> {
    catalog
        .iter()
        .flat_map(|(name, e)| {
            (0..e.spec.shards)
                .filter(move |&s| e.replicas(s).contains(&me))
                .map(move |s| ReplicaKey::new(name.clone(), e.uid, s))
        })
        .collect()
}

/// The actions turning `local` into `desired`: removals first (frees a re-created name), then opens.
pub fn plan(desired: &BTreeSet<ReplicaKey>, local: &BTreeSet<ReplicaKey>) -> Vec<Action> {
    let mut out: Vec<Action> = local.difference(desired).cloned().map(Action::Remove).collect();
    out.extend(desired.difference(local).cloned().map(Action::Open));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::placement::ShardPlacement;
    use shoal_api::collections::CollectionSpec;
    use shoal_core::{IdType, IndexConfig, Metric, ShardConfig};

    fn entry(name: &str, uid: u64, placement: Vec<Vec<u64>>) -> CollectionEntry {
        CollectionEntry {
            spec: CollectionSpec {
                name: name.into(),
                shard: ShardConfig {
                    dim: 2,
                    metric: Metric::L2,
                    id_type: IdType::Int,
                    index: IndexConfig::Flat,
                    on_disk: false,
                },
                shards: placement.len() as u32,
                replication_factor: placement[0].len() as u32,
                payload_indexes: Vec::new(),
            },
            uid,
            leaving: vec![Vec::new(); placement.len()],
            placement: placement
                .into_iter()
                .enumerate()
                .map(|(i, replicas)| ShardPlacement { shard: i as u32, replicas })
                .collect(),
        }
    }

    #[test]
    fn plans_open_remove_and_recreate() {
        let mut cat = BTreeMap::new();
        cat.insert("a".to_string(), entry("a", 1, vec![vec![1], vec![1]]));
        let want = desired(&cat, 1);
        assert_eq!(plan(&want, &BTreeSet::new()).len(), 2);
        assert!(plan(&want, &want).is_empty());
        // "a" dropped and re-created with a new uid: old replicas removed before new ones open.
        cat.insert("a".to_string(), entry("a", 9, vec![vec![1]]));
        let actions = plan(&desired(&cat, 1), &want);
        assert_eq!(
            actions,
            vec![
                Action::Remove(ReplicaKey::new("a", 1, 0)),
                Action::Remove(ReplicaKey::new("a", 1, 1)),
                Action::Open(ReplicaKey::new("a", 9, 0))
            ]
        );
    }

    #[test]
    fn only_the_shards_placed_on_this_node() {
        let mut cat = BTreeMap::new();
        cat.insert("a".to_string(), entry("a", 3, vec![vec![1, 2], vec![2, 3], vec![3, 1]]));
        assert_eq!(desired(&cat, 1), BTreeSet::from([ReplicaKey::new("a", 3, 0), ReplicaKey::new("a", 3, 2)]));
        assert_eq!(desired(&cat, 2), BTreeSet::from([ReplicaKey::new("a", 3, 0), ReplicaKey::new("a", 3, 1)]));
        assert!(desired(&cat, 4).is_empty());
    }
}
