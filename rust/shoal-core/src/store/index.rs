//! Indexing, separate from writing: graph index steps over pending slots, payload index building, and
//! answering filters from the payload indexes.

use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{Inner, ShardStore};
use crate::filter::Filter;
use crate::payload_index::IndexKind;

/// Slots inserted into the graph per rayon thread under one read-lock acquisition in `index_step`.
const INDEX_CHUNK_PER_THREAD: usize = 64;

/// One payload index of a replica ([`ShardStore::payload_indexes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadIndexInfo {
    /// The field path.
    pub field: String,
    /// The kind.
    pub kind: IndexKind,
    /// Slots indexed so far (`<= slots`).
    pub built: usize,
    /// Slots in the store.
    pub slots: usize,
    /// Distinct values indexed.
    pub values: usize,
    /// Whether filters use it (built over every slot, every value keyed exactly).
    pub ready: bool,
}

impl ShardStore {
    /// Makes this replica's payload indexes exactly `wanted` (field, kind); new ones start unbuilt (see
    /// [`ShardStore::build_payload_indexes`]). Returns whether anything changed.
    pub fn set_payload_indexes(&self, wanted: &[(String, IndexKind)]) -> bool {
        // The write lock waits for running searches: take it only for a real change.
        let same = {
            let g = self.inner.read();
            g.pindex.iter().count() == wanted.len()
                && wanted.iter().all(|(f, k)| g.pindex.get(f).is_some_and(|ix| ix.kind() == *k))
        };
        if same {
            return false;
        }
        self.inner.write().pindex.set(wanted)
    }

    /// One step of building the payload indexes: indexes up to `budget` slots of each unbuilt index under
    /// the write lock (so applies wait at most one step). Returns true when every index is built.
    pub fn build_payload_indexes(&self, budget: usize) -> bool {
        {
            let g = self.inner.read();
            if g.pindex.iter().all(|f| f.built() >= g.slots.len()) {
                return true;
            }
        }
        let mut g = self.inner.write();
        let g = &mut *g;
        let n = g.slots.len();
        let mut done = true;
        for f in g.pindex.iter().map(|f| f.field().to_string()).collect::<Vec<_>>() {
            let Some(ix) = g.pindex.get_mut(&f) else { continue };
            let from = ix.built();
            let to = (from + budget.max(1)).min(n);
            for slot in from..to {
                if g.alive[slot]
                    && let Some(p) = g.slots[slot].payload.as_deref()
                {
                    ix.add(slot as u32, p);
                }
            }
            ix.set_built(to);
            done &= to >= n;
        }
        done
    }

    /// Live points that some payload index does not cover yet (0 when every index is built).
    pub fn payload_unindexed(&self) -> usize {
        let g = self.inner.read();
        let from = g.pindex.iter().map(|f| f.built()).min().unwrap_or(usize::MAX);
        g.alive.get(from..).map_or(0, |rest| rest.iter().filter(|a| **a).count())
    }

    /// Each payload index's state, by field.
    pub fn payload_indexes(&self) -> Vec<PayloadIndexInfo> {
        let g = self.inner.read();
        let n = g.slots.len();
        g.pindex
            .iter()
            .map(|f| PayloadIndexInfo {
                field: f.field().to_string(),
                kind: f.kind(),
                built: f.built().min(n),
                slots: n,
                values: f.values(),
                ready: f.usable(n),
            })
            .collect()
    }

    /// Live points not yet in the graph (0 for a flat index).
    pub fn unindexed(&self) -> usize {
        let g = self.inner.read();
        self.unindexed_locked(&g)
    }

    pub(super) fn unindexed_locked(&self, g: &Inner) -> usize {
        if self.hnsw.is_none() {
            return 0;
        }
        let w = self.indexed.load(Ordering::Acquire).min(g.alive.len());
        g.alive[w..].iter().filter(|&&a| a).count()
    }

    /// Inserts up to `max_points` pending live slots into the graph (in parallel on rayon), returns how many
    /// were inserted. Takes the read lock in short chunks, so searches continue and writers get in between
    /// chunks. Returns 0 when nothing is pending (and always for a flat index).
    pub fn index_step(&self, max_points: usize) -> usize {
        if self.hnsw.is_none() || max_points == 0 {
            return 0;
        }
        let _guard = self.index_lock.lock();
        let chunk = INDEX_CHUNK_PER_THREAD * rayon::current_num_threads().max(1);
        let mut done = 0;
        while done < max_points {
            let g = self.inner.read();
            let lo = self.indexed.load(Ordering::Acquire);
            let n = g.slots.len();
            if lo >= n {
                break;
            }
            let Some(hnsw) = self.hnsw.as_ref() else { break };
            // Bound the slot range by the remaining budget; dead slots in it are skipped.
            let hi = n.min(lo + chunk.min(max_points - done));
            let arena = &g.arena;
            let alive = &g.alive;
            let inserted: usize = (lo..hi)
                .into_par_iter()
                .filter(|&s| alive[s])
                .map(|s| {
                    hnsw.insert(s as u32, arena);
                    1
                })
                .sum();
            self.indexed.store(hi, Ordering::Release);
            done += inserted;
        }
        done
    }
}

/// The live slots matching `f` when the payload indexes can tell (evaluating the filter only on the
/// candidates of a partial answer); `None` when no indexed field is involved.
pub(super) fn indexed_matches(g: &Inner, f: &Filter) -> Option<roaring::RoaringBitmap> {
    if g.pindex.is_empty() {
        return None;
    }
    // Every live slot: built only for a negation.
    let all = || g.alive.iter().enumerate().filter(|(_, a)| **a).map(|(s, _)| s as u32).collect();
    let a = f.answer(&g.pindex, g.slots.len(), &all)?;
    if a.exact {
        return Some(a.slots);
    }
    Some(a.slots.iter().filter(|&s| g.alive[s as usize] && f.matches(g.payload_or_empty(s))).collect())
}
