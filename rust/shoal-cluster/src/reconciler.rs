//! The local reconciler's decision: which shard groups this node must open or close so that its local
//! replicas match the catalog. A pure function; the engine executes the actions.

use std::collections::{BTreeMap, BTreeSet};

/// A shard replica's identity on this node: (collection name, collection uid, shard number).
pub type ReplicaKey = (String, u64, u32);

/// One step for the engine to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open (creating if new) the local group of this replica.
    Open(ReplicaKey),
    /// Shut down this replica's group and delete its data.
    Remove(ReplicaKey),
}

/// Desired replicas: every shard of every collection in the catalog (single node: all are local).
pub fn desired(catalog: &BTreeMap<String, (u64, u32)>) -> BTreeSet<ReplicaKey> {
    catalog.iter().flat_map(|(name, &(uid, shards))| (0..shards).map(move |s| (name.clone(), uid, s))).collect()
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

    #[test]
    fn plans_open_remove_and_recreate() {
        let mut cat = BTreeMap::new();
        cat.insert("a".to_string(), (1, 2));
        let want = desired(&cat);
        assert_eq!(plan(&want, &BTreeSet::new()).len(), 2);
        assert!(plan(&want, &want).is_empty());
        // "a" dropped and re-created with a new uid: old replicas removed before new ones open.
        cat.insert("a".to_string(), (9, 1));
        let actions = plan(&desired(&cat), &want);
        assert_eq!(
            actions,
            vec![
                Action::Remove(("a".into(), 1, 0)),
                Action::Remove(("a".into(), 1, 1)),
                Action::Open(("a".into(), 9, 0))
            ]
        );
    }
}
