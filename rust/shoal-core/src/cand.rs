//! The (distance, slot) candidate shared by the HNSW graph search and the shard store's exact scans and
//! top-k merges.

use std::cmp::Ordering;

/// A (distance, slot) pair ordered by distance, then slot (total order, NaN-safe), so results are
/// deterministic. Equality agrees with the order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    /// Distance to the query.
    pub(crate) d: f32,
    /// Slot of the point (its node in the graph).
    pub(crate) id: u32,
}

impl PartialEq for Cand {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Cand {}

impl Ord for Cand {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.id.cmp(&o.id))
    }
}

impl PartialOrd for Cand {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
