//! Searches of the graph: greedy descent, the beam search of one layer, and the public (filtered, cancellable,
//! rescored) searches.

use std::sync::atomic::Ordering as AtOrd;

use super::scorer::{CodeScorer, FloatScorer, Scorer};
use super::scratch::{Near, Scratch, with_scratch};
use super::segment::{list_len, prefetch_links};
use super::{CANCEL_CHECK_EXPANSIONS, Hnsw, NO_ENTRY, unpack_entry};
use crate::Result;
use crate::arena::VectorArena;
use crate::cancel::CancelToken;
use crate::cand::Cand;
use crate::distance::distance;
use crate::quantizer::Rescore;

impl Hnsw {
    /// Greedy descent (beam 1) from `cur` through layers `from..=to` (descending).
    pub(super) fn greedy<S: Scorer>(&self, sc: &S, mut cur: Cand, from: usize, to: usize) -> Cand {
        let arena_len = sc.len();
        for layer in (to..=from).rev() {
            loop {
                let mut changed = false;
                let list = self.links(cur.id, layer);
                for i in 0..list_len(list) {
                    let id = list[1 + i].load(AtOrd::Relaxed);
                    if id as usize >= arena_len {
                        continue;
                    }
                    let d = sc.dist(id);
                    if d < cur.d {
                        cur = Cand { d, id };
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        cur
    }

    /// Beam search of `layer` from `ep` (already scored); leaves the best ≤ `ef` accepted nodes in `s.top`.
    /// The caller has called `s.begin`. Non-accepted nodes are expanded but never enter `s.top`.
    /// Polls `cancel` every [`CANCEL_CHECK_EXPANSIONS`] expansions and stops with [`Error::Cancelled`](crate::Error::Cancelled)
    /// (leaving `s.top` incomplete) once it fires.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn search_layer<A: Fn(u32) -> bool + ?Sized, S: Scorer>(
        &self,
        s: &mut Scratch,
        sc: &S,
        ep: Cand,
        ef: usize,
        layer: usize,
        accept: &A,
        cancel: &CancelToken,
    ) -> Result<()> {
        let arena_len = sc.len();
        let mut expansions = 0usize;
        s.visit(ep.id);
        let mut bound = f32::INFINITY;
        if accept(ep.id) {
            s.top.push(ep);
            bound = ep.d;
        }
        s.frontier.push(Near(ep));
        while let Some(Near(c)) = s.frontier.pop() {
            if c.d > bound && s.top.len() >= ef {
                break;
            }
            if expansions.is_multiple_of(CANCEL_CHECK_EXPANSIONS) {
                cancel.check()?;
            }
            expansions += 1;
            // Gather the unvisited neighbours and prefetch their vectors, then score them.
            let list = self.links(c.id, layer);
            if let Some(next) = s.frontier.peek() {
                prefetch_links(self.links(next.0.id, layer));
            }
            s.fresh.clear();
            for i in 0..list_len(list) {
                let id = list[1 + i].load(AtOrd::Relaxed);
                if (id as usize) < arena_len && s.visit(id) {
                    sc.prefetch(id);
                    s.fresh.push(id);
                }
            }
            for j in 0..s.fresh.len() {
                let id = s.fresh[j];
                let d = sc.dist(id);
                if s.top.len() < ef || d < bound {
                    let cand = Cand { d, id };
                    s.frontier.push(Near(cand));
                    if accept(id) {
                        s.top.push(cand);
                        if s.top.len() > ef {
                            s.top.pop();
                        }
                    }
                    if let Some(t) = s.top.peek() {
                        bound = t.d;
                    }
                }
            }
        }
        Ok(())
    }

    /// Up to `k` nearest accepted slots to `query` (prepared), ascending by distance. `ef` is the beam width
    /// (at least `k` is used). Non-accepted nodes are traversed for navigation but never returned.
    ///
    /// Returns nothing when the graph is empty, `k == 0`, or `query.len() != arena.dim()`.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        arena: &VectorArena,
        accept: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<(f32, u32)> {
        self.search_cancellable(query, k, ef, arena, accept, &CancelToken::never()).unwrap_or_default()
    }

    /// [`Hnsw::search`] that polls `cancel` before starting and every [`CANCEL_CHECK_EXPANSIONS`] node
    /// expansions, returning [`Error::Cancelled`](crate::Error::Cancelled) (and no results) once it fires.
    pub fn search_cancellable(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        arena: &VectorArena,
        accept: &(dyn Fn(u32) -> bool + Sync),
        cancel: &CancelToken,
    ) -> Result<Vec<(f32, u32)>> {
        self.search_rescored(query, k, ef, arena, accept, Rescore::default(), cancel)
    }

    /// [`Hnsw::search_cancellable`] with the quantized path spelled out: when `arena` has int8 codes, the
    /// graph is traversed on code distances with a beam of `max(ef, rescore.candidates(k))`, then (when
    /// `rescore.enabled`) every candidate of the beam is rescored with the float vectors and the best `k`
    /// returned with exact distances. Without codes it is the float search.
    #[allow(clippy::too_many_arguments)]
    pub fn search_rescored(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        arena: &VectorArena,
        accept: &(dyn Fn(u32) -> bool + Sync),
        rescore: Rescore,
        cancel: &CancelToken,
    ) -> Result<Vec<(f32, u32)>> {
        cancel.check()?;
        if k == 0 || query.len() != arena.dim() {
            return Ok(Vec::new());
        }
        let entry = self.entry.load(AtOrd::Acquire);
        if entry == NO_ENTRY {
            return Ok(Vec::new());
        }
        let (ep, max_level) = unpack_entry(entry);
        if ep as usize >= arena.len() {
            return Ok(Vec::new());
        }
        let Some(quantizer) = arena.quantizer() else {
            let sc = FloatScorer { metric: self.metric, q: query, arena };
            return self.beam(&sc, ep, max_level, k, ef.max(k), accept, cancel);
        };
        let sc = CodeScorer { q: quantizer.query(self.metric, query), arena };
        // The beam is at least `ceil(k * oversampling)` wide; with rescoring every candidate it kept is
        // rescored (a few float distances against the many code distances of the walk): at 1M points,
        // rescoring only the best 2k of a wide beam capped recall at 0.91 however large the beam.
        let want = rescore.candidates(k);
        let width = ef.max(want);
        let keep = if rescore.enabled { width } else { k };
        let mut out = self.beam(&sc, ep, max_level, keep, width, accept, cancel)?;
        if rescore.enabled {
            for c in &mut out {
                c.0 = distance(self.metric, query, arena.get(c.1));
            }
            out.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        out.truncate(k);
        Ok(out)
    }

    /// Descends to layer 0 and keeps the best `keep` accepted nodes of a beam of width `ef`, ascending.
    #[allow(clippy::too_many_arguments)]
    fn beam<S: Scorer>(
        &self,
        sc: &S,
        ep: u32,
        max_level: usize,
        keep: usize,
        ef: usize,
        accept: &(dyn Fn(u32) -> bool + Sync),
        cancel: &CancelToken,
    ) -> Result<Vec<(f32, u32)>> {
        let start = Cand { d: sc.dist(ep), id: ep };
        let start = if max_level > 0 { self.greedy(sc, start, max_level, 1) } else { start };
        with_scratch(|s| {
            s.begin(self.slot_bound.load(AtOrd::Acquire).max(sc.len()));
            self.search_layer(s, sc, start, ef, 0, accept, cancel)?;
            while s.top.len() > keep {
                s.top.pop();
            }
            let mut out: Vec<Cand> = s.top.drain().collect();
            out.sort_unstable();
            Ok(out.into_iter().map(|c| (c.d, c.id)).collect())
        })
    }
}
