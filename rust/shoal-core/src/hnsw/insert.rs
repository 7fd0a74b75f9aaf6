//! Insertion into the graph: level claim, beam search per layer, hnswlib's neighbour heuristic and back links.

use std::sync::atomic::Ordering as AtOrd;

use super::scorer::{FloatScorer, Scorer};
use super::scratch::{Scratch, with_scratch};
use super::segment::{list_len, locate, write_list};
use super::{Hnsw, NO_ENTRY, pack_entry, unpack_entry};
use crate::arena::VectorArena;
use crate::cancel::CancelToken;
use crate::cand::Cand;
use crate::distance::distance;

impl Hnsw {
    /// Inserts `slot` (whose prepared vector is `arena.get(slot)`).
    ///
    /// Thread-safe: may run concurrently with other inserts and with searches. Inserting a slot that is
    /// already present is a no-op. Panics when `slot` is not in `arena`. Every slot already in the graph must
    /// be in `arena` too (slots outside it are skipped).
    pub fn insert(&self, slot: u32, arena: &VectorArena) {
        assert!((slot as usize) < arena.len(), "hnsw insert: slot {slot} is not in the arena");
        let level = self.random_level(slot);
        let (seg, off) = locate(slot);
        let segment = self.segment_or_alloc(seg);
        if level > 0 {
            let words = level * (self.params.m + 1);
            segment.upper_init(off, words);
        }
        if segment.levels[off].compare_exchange(0, level as u8 + 1, AtOrd::AcqRel, AtOrd::Acquire).is_err() {
            return; // already inserted
        }
        self.len.fetch_add(1, AtOrd::AcqRel);
        self.slot_bound.fetch_max(slot as usize + 1, AtOrd::AcqRel);

        let q = arena.get(slot);
        let arena_len = arena.len();
        let entry_guard = self.entry_lock.lock();
        let entry = self.entry.load(AtOrd::Acquire);
        if entry == NO_ENTRY {
            self.entry.store(pack_entry(slot, level), AtOrd::Release);
            return;
        }
        let (ep, max_level) = unpack_entry(entry);
        // Keep the entry lock only when this node becomes the new entry point.
        let entry_guard = if level > max_level {
            Some(entry_guard)
        } else {
            drop(entry_guard);
            None
        };

        let sc = FloatScorer { metric: self.metric, q, arena };
        let mut cur = Cand { d: sc.dist(ep), id: ep };
        if level < max_level {
            cur = self.greedy(&sc, cur, max_level, level + 1);
        }
        let never = CancelToken::never();
        with_scratch(|s| {
            let bound = self.slot_bound.load(AtOrd::Acquire).max(arena_len);
            for layer in (0..=level.min(max_level)).rev() {
                s.begin(bound);
                s.visit(slot); // never link to ourselves, even if a concurrent insert already linked to us
                // A never-firing token: the layer search always completes.
                let _ = self.search_layer(s, &sc, cur, self.params.ef_construction, layer, &|_| true, &never);
                s.sorted.clear();
                s.sorted.extend(s.top.drain());
                s.sorted.sort_unstable();
                if let Some(&best) = s.sorted.first() {
                    cur = best;
                    self.connect(s, slot, q, layer, arena);
                }
            }
        });
        if let Some(_guard) = entry_guard {
            self.entry.store(pack_entry(slot, level), AtOrd::Release);
        }
    }

    /// Links the new node `slot` at `layer` to the heuristic selection from `s.sorted`, and back.
    fn connect(&self, s: &mut Scratch, slot: u32, q: &[f32], layer: usize, arena: &VectorArena) {
        let Scratch { sorted, selected, pool, pruned, .. } = s;
        let max_links = if layer == 0 { self.m0 } else { self.params.m };
        self.select_neighbors(sorted, self.params.m, arena, selected);

        // Our own list. Usually empty; a concurrent insert may already have linked itself to us here.
        {
            let _g = self.lock(slot);
            let list = self.links(slot, layer);
            let existing = list_len(list);
            if existing == 0 {
                write_list(list, selected.iter().map(|c| c.id));
            } else {
                pool.clear();
                pool.extend_from_slice(selected);
                for i in 0..existing {
                    let id = list[1 + i].load(AtOrd::Relaxed);
                    if (id as usize) < arena.len() && id != slot && !pool.iter().any(|c| c.id == id) {
                        pool.push(Cand { d: distance(self.metric, q, arena.get(id)), id });
                    }
                }
                pool.sort_unstable();
                self.select_neighbors(pool, max_links, arena, pruned);
                write_list(list, pruned.iter().map(|c| c.id));
            }
        }

        // Back links.
        for &nb in selected.iter() {
            let _g = self.lock(nb.id);
            let list = self.links(nb.id, layer);
            if list.is_empty() {
                continue;
            }
            let n = list_len(list);
            if (0..n).any(|i| list[1 + i].load(AtOrd::Relaxed) == slot) {
                continue;
            }
            if n < max_links {
                list[1 + n].store(slot, AtOrd::Relaxed);
                list[0].store(n as u32 + 1, AtOrd::Release);
            } else {
                let v = arena.get(nb.id);
                pool.clear();
                pool.push(Cand { d: nb.d, id: slot });
                for i in 0..n {
                    let id = list[1 + i].load(AtOrd::Relaxed);
                    if (id as usize) < arena.len() {
                        pool.push(Cand { d: distance(self.metric, v, arena.get(id)), id });
                    }
                }
                pool.sort_unstable();
                self.select_neighbors(pool, max_links, arena, pruned);
                write_list(list, pruned.iter().map(|c| c.id));
            }
        }
    }

    /// hnswlib's `getNeighborsByHeuristic2`: from `cands` (ascending), keep a candidate only if it is closer to
    /// the base than to every already kept one; at most `m`.
    fn select_neighbors(&self, cands: &[Cand], m: usize, arena: &VectorArena, out: &mut Vec<Cand>) {
        out.clear();
        if cands.len() <= m {
            out.extend_from_slice(cands);
            return;
        }
        for &c in cands {
            if out.len() >= m {
                break;
            }
            let v = arena.get(c.id);
            if out.iter().all(|r| distance(self.metric, v, arena.get(r.id)) >= c.d) {
                out.push(c);
            }
        }
    }
}
