//! Leader hints: which node this node last saw lead each shard group (from an answer or a redirect of
//! another node), by group id. Read by the write path and the heal; a hint may be stale, it is only where to
//! try first.

use std::collections::HashMap;

use parking_lot::RwLock;

/// The last leader this node learnt of, by shard group id (`<collection>@<uid>/<shard>`).
#[derive(Debug, Default)]
pub(crate) struct LeaderHints {
    /// Node id by group id; a hint is replaced by a newer one, never removed (the catalog bounds the groups).
    by_group: RwLock<HashMap<String, u64>>,
}

impl LeaderHints {
    /// The hinted leader of group `gid`.
    pub(crate) fn get(&self, gid: &str) -> Option<u64> {
        self.by_group.read().get(gid).copied()
    }

    /// Records `node` as the leader of group `gid`.
    pub(crate) fn set(&self, gid: &str, node: u64) {
        self.by_group.write().insert(gid.to_string(), node);
    }
}
