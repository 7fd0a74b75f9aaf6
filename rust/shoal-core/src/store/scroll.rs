//! Reads by id: point lookups ([`ShardStore::get`]) and id-ordered scroll pages ([`ShardStore::scroll`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::index::indexed_matches;
use super::{Inner, Payload, ShardStore};
use crate::PointId;
use crate::filter::Filter;
use crate::hlc::Version;

/// A stored point, as returned by [`ShardStore::get`] and [`ShardStore::scroll`].
#[derive(Debug, Clone, PartialEq)]
pub struct PointRecord {
    /// The point.
    pub id: PointId,
    /// The stored vector (L2-normalised for cosine); empty when vectors were not requested.
    pub vector: Vec<f32>,
    /// The payload, if any.
    pub payload: Option<Payload>,
    /// Version of the upsert that wrote the point (patches do not change it).
    pub version: Version,
}

impl Inner {
    /// Live slots in id order for a scroll page, when worth having: the cached order, or a new one when
    /// the previous page saw no write since (a scroll of quiet data sorts once, not once per page); `None`
    /// while writes keep coming (the page then selects from all ids, O(points) but no sort).
    fn id_order_for_scroll(&self) -> Option<Arc<Vec<u32>>> {
        let mut cached = self.id_order.lock();
        if let Some(order) = &*cached {
            return Some(Arc::clone(order));
        }
        if self.scrolled_generation.swap(self.generation, Ordering::Relaxed) != self.generation {
            return None;
        }
        let mut order: Vec<u32> = self.ids.values().copied().collect();
        order.par_sort_unstable_by(|&a, &b| self.slots[a as usize].id.cmp(&self.slots[b as usize].id));
        let order = Arc::new(order);
        *cached = Some(Arc::clone(&order));
        Some(order)
    }

    fn record(&self, slot: u32, with_vector: bool) -> PointRecord {
        let s = &self.slots[slot as usize];
        PointRecord {
            id: s.id.clone(),
            vector: if with_vector { self.arena.get(slot).to_vec() } else { Vec::new() },
            payload: s.payload.as_deref().cloned(),
            version: s.version,
        }
    }
}

impl ShardStore {
    /// Fetches points by id (`None` for missing or deleted ones), in the order of `ids`.
    pub fn get(&self, ids: &[PointId], with_vectors: bool) -> Vec<Option<PointRecord>> {
        let g = self.inner.read();
        ids.iter().map(|id| g.ids.get(id).map(|&s| g.record(s, with_vectors))).collect()
    }

    /// Up to `limit` live points with id greater than `after` (all when `None`) matching `filter`, in id
    /// order (ints ascending, strings byte-wise). Resume with the last id returned. Pages of a store that
    /// is not being written share one sorted id order (built on the second page), so a full export costs a
    /// sort plus the points returned; while writes come in, each page selects from every id instead.
    pub fn scroll(
        &self,
        after: Option<&PointId>,
        limit: usize,
        filter: Option<&Filter>,
        with_vectors: bool,
    ) -> Vec<PointRecord> {
        // Recursive: pages run on rayon workers and sort or filter in parallel under this lock; a worker
        // waiting inside such a loop may pick up another page's job, whose plain read() would queue behind a
        // waiting writer that waits for us (the deadlock `search_cancellable` describes).
        let g = self.inner.read_recursive();
        let indexed = filter.and_then(|f| indexed_matches(&g, f));
        let keep = |s: u32| match &indexed {
            Some(bits) => bits.contains(s),
            None => filter.is_none_or(|f| f.matches(g.payload_or_empty(s))),
        };
        if let Some(order) = g.id_order_for_scroll() {
            let start = after.map_or(0, |a| order.partition_point(|&s| &g.slots[s as usize].id <= a));
            return order[start..]
                .iter()
                .copied()
                .filter(|&s| keep(s))
                .take(limit)
                .map(|s| g.record(s, with_vectors))
                .collect();
        }
        let mut sel: Vec<(&PointId, u32)> = g
            .ids
            .par_iter()
            .filter(|&(id, &s)| after.is_none_or(|a| id > a) && keep(s))
            .map(|(id, &s)| (id, s))
            .collect();
        if sel.len() > limit {
            if limit == 0 {
                return Vec::new();
            }
            sel.select_nth_unstable_by(limit - 1, |a, b| a.0.cmp(b.0));
            sel.truncate(limit);
        }
        sel.sort_unstable_by(|a, b| a.0.cmp(b.0));
        sel.into_iter().map(|(_, s)| g.record(s, with_vectors)).collect()
    }
}
