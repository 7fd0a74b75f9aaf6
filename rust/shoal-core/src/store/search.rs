//! Search: access-path routing through the cost model (plan and cost), exact scans, graph search merged
//! with an exact scan of pending slots, filter evaluation, and top-k candidate merging.

use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

#[cfg(doc)]
use super::DEFAULT_EF;
use super::index::indexed_matches;
use super::{Inner, Payload, ShardStore};
use crate::cancel::CancelToken;
use crate::cand::Cand;
use crate::cost::{AccessPath, ShardShape, choose_path, exact_cost, graph_cost};
use crate::distance;
use crate::filter::Filter;
use crate::hnsw::Hnsw;
use crate::quantizer::Rescore;
use crate::{Error, Metric, PointId, Result};

/// Slots per block when collecting live or matching slots (one cancellation poll per block).
const SCAN_BLOCK: usize = 1_024;
/// Queries scanned together over one block of points (the block is reused from cache for each).
const QUERY_GROUP: usize = 8;
/// Bytes of vectors per scan block.
const BLOCK_BYTES: usize = 64 * 1024;
/// Smallest candidate chunk worth a separate rayon task in an exact scan.
const MIN_SCAN_CHUNK: usize = 4_096;
/// Live slots sampled to estimate how many points a filter matches.
pub(super) const FILTER_SAMPLE: usize = 1_024;
/// Slots sampled by [`ShardStore::search_cost`]: it only sizes the work (inline or on the pool), and the
/// search samples again with [`FILTER_SAMPLE`] to choose its path, so a coarse estimate is cheaper.
const COST_FILTER_SAMPLE: usize = 64;
/// A batch evaluates its filter once over all points (instead of lazily on visited nodes) when
/// `queries * ef * LAZY_FILTER_VISITS_PER_EF >= live points`.
const LAZY_FILTER_VISITS_PER_EF: usize = 16;

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The point.
    pub id: PointId,
    /// Smaller is better (`l2`: squared euclidean, `cosine`: 1 - cos, `dot`: -dot).
    pub distance: f32,
    /// The payload, when requested and present.
    pub payload: Option<Payload>,
}

/// Bounded max-heap keeping the `k` smallest candidates.
struct TopK {
    /// Capacity.
    k: usize,
    /// At most `k` candidates; the root is the worst kept.
    heap: BinaryHeap<Cand>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK { k, heap: BinaryHeap::with_capacity(k.min(1024) + 1) }
    }

    #[inline]
    fn push(&mut self, c: Cand) {
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut top) = self.heap.peek_mut()
            && c < *top
        {
            *top = c;
        }
    }

    fn into_sorted(self) -> Vec<Cand> {
        self.heap.into_sorted_vec()
    }
}

/// Merges sorted candidate lists into the `k` best, sorted.
fn merge_sorted(mut lists: Vec<Vec<Cand>>, k: usize) -> Vec<Cand> {
    if lists.len() == 1 {
        let mut l = lists.pop().unwrap_or_default();
        l.truncate(k);
        return l;
    }
    let mut all: Vec<Cand> = lists.into_iter().flatten().collect();
    all.sort_unstable();
    all.truncate(k);
    all
}

impl ShardStore {
    /// Number of live points that matches `filter`.
    pub fn count_matching(&self, filter: &Filter) -> usize {
        // Recursive for the reason given in `search_cancellable`: this parallel loop may run on rayon workers.
        let g = self.inner.read_recursive();
        if let Some(slots) = indexed_matches(&g, filter) {
            return slots.len() as usize;
        }
        g.ids.par_iter().filter(|&(_, &s)| filter.matches(g.payload_or_empty(s))).count()
    }

    /// The `k` nearest live points to each of `nq` queries (row-major in `queries`), ascending by
    /// distance, optionally restricted to points matching `filter`. Returns exactly `min(k, matching)`
    /// hits per query. `ef` overrides the graph beam width (default [`DEFAULT_EF`], never below `k`).
    /// Queries are prepared (normalised for cosine) on a copy. If `queries` holds fewer than `nq * dim`
    /// values (a caller bug), the incomplete queries get empty results.
    pub fn search(
        &self,
        queries: &[f32],
        nq: usize,
        k: usize,
        filter: Option<&Filter>,
        ef: Option<usize>,
        with_payload: bool,
    ) -> Vec<Vec<Hit>> {
        // A never-firing token: the search cannot fail.
        self.search_cancellable(queries, nq, k, filter, ef, with_payload, &CancelToken::never())
            .unwrap_or_else(|_| vec![Vec::new(); nq])
    }

    /// [`ShardStore::search`] that stops early with [`Error::Cancelled`] once `cancel` fires: checked before
    /// any work, between blocks of exact scans and filter evaluation, every few dozen graph expansions,
    /// and between the queries of a batch. Uncancelled, the result equals [`ShardStore::search`]'s.
    #[allow(clippy::too_many_arguments)]
    pub fn search_cancellable(
        &self,
        queries: &[f32],
        nq: usize,
        k: usize,
        filter: Option<&Filter>,
        ef: Option<usize>,
        with_payload: bool,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Hit>>> {
        self.search_impl(queries, nq, k, filter, ef, with_payload, false, Rescore::default(), cancel)
    }

    /// [`ShardStore::search_cancellable`] by brute force: every live (matching) point is compared, whatever
    /// the cost model would choose. The reference that recall is measured against (`search(exact=True)`).
    pub fn search_exact_cancellable(
        &self,
        queries: &[f32],
        nq: usize,
        k: usize,
        filter: Option<&Filter>,
        with_payload: bool,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Hit>>> {
        self.search_impl(queries, nq, k, filter, None, with_payload, true, Rescore::default(), cancel)
    }

    /// The search every other search method calls: `exact` scans every live (matching) slot; otherwise the
    /// cost model routes, and a graph search over int8 codes is rescored as `rescore` says.
    #[allow(clippy::too_many_arguments)]
    pub fn search_impl(
        &self,
        queries: &[f32],
        nq: usize,
        k: usize,
        filter: Option<&Filter>,
        ef: Option<usize>,
        with_payload: bool,
        exact: bool,
        rescore: Rescore,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Hit>>> {
        cancel.check()?;
        let dim = self.config.dim;
        let metric = self.config.metric;
        let usable = nq.min(queries.len() / dim.max(1));
        let mut results: Vec<Vec<Hit>> = Vec::with_capacity(nq);
        if k == 0 || usable == 0 {
            results.resize_with(nq, Vec::new);
            return Ok(results);
        }
        let mut prepared = queries[..usable * dim].to_vec();
        if metric == Metric::Cosine {
            prepared.par_chunks_mut(dim).for_each(|q| distance::prepare(metric, q));
        }
        // Recursive: this runs on rayon workers that may be helping a parallel loop whose owner holds the read
        // lock (index_step, another search); a plain read() would queue behind a waiting writer and deadlock.
        let g = self.inner.read_recursive();
        let w = self.indexed.load(Ordering::Acquire).min(g.slots.len());
        let filter = filter.filter(|f| !f.is_match_all());
        let route = if exact {
            Route { path: AccessPath::Exact, matched: None, indexed: None }
        } else {
            self.route(&g, filter, k, ef, w, cancel)?
        };
        let cands = self.search_routed(&g, &prepared, k, filter, w, route, rescore, cancel)?;
        results.par_extend(cands.into_par_iter().map(|list| {
            list.into_iter()
                .map(|c| {
                    let s = &g.slots[c.id as usize];
                    Hit {
                        id: s.id.clone(),
                        distance: c.d,
                        payload: if with_payload { s.payload.as_deref().cloned() } else { None },
                    }
                })
                .collect()
        }));
        drop(g);
        results.resize_with(nq, Vec::new);
        Ok(results)
    }

    /// The access path a search of `k` neighbours with `filter` and `ef` would take now (see
    /// [`crate::cost`]), for reporting. Like the search, it samples the filter to estimate its selectivity
    /// and, when the estimate favours an exact scan, evaluates it on every live point to confirm.
    pub fn plan(&self, filter: Option<&Filter>, k: usize, ef: Option<usize>) -> AccessPath {
        let g = self.inner.read_recursive();
        let w = self.indexed.load(Ordering::Acquire).min(g.slots.len());
        let filter = filter.filter(|f| !f.is_match_all());
        // A never-firing token: routing cannot fail.
        self.route(&g, filter, k, ef, w, &CancelToken::never()).map_or(AccessPath::Exact, |r| r.path)
    }

    /// Estimated work of one query of a search with `filter`, `k` and `ef`, in vector components touched
    /// (see [`crate::cost`]): the cost of the path the cost model picks on the sampled selectivity. Cheap
    /// (no exact filter count); callers use it to size work, e.g. to run a small search inline.
    pub fn search_cost(&self, filter: Option<&Filter>, k: usize, ef: Option<usize>) -> f64 {
        self.search_cost_of(filter, k, ef, false)
    }

    /// [`ShardStore::search_cost`], of an exact search when `exact`.
    pub fn search_cost_of(&self, filter: Option<&Filter>, k: usize, ef: Option<usize>, exact: bool) -> f64 {
        let g = self.inner.read_recursive();
        let w = self.indexed.load(Ordering::Acquire).min(g.slots.len());
        let shape = self.shape(&g, w);
        let filter = filter.filter(|f| !f.is_match_all());
        let sel = filter.map_or(1.0, |f| self.estimate_selectivity(&g, f, COST_FILTER_SAMPLE));
        match if exact { AccessPath::Exact } else { choose_path(&shape, sel, k, ef, self.hnsw.is_none()) } {
            AccessPath::Exact => exact_cost(&shape, sel),
            AccessPath::Graph { ef } => graph_cost(&shape, sel, ef),
        }
    }

    /// The shape the cost model sees: live points, those reachable through the graph (below the watermark
    /// `w`), dimension and graph degree.
    fn shape(&self, g: &Inner, w: usize) -> ShardShape {
        let live = g.live();
        let indexed = match &self.hnsw {
            Some(_) => live.saturating_sub(g.alive[w..].iter().filter(|&&a| a).count()),
            None => 0,
        };
        ShardShape { live, indexed, dim: self.config.dim, m: self.hnsw.as_ref().map_or(0, |h| h.params().m) }
    }

    /// Chooses the access path: [`choose_path`] on the sampled selectivity of `filter`; when that says
    /// exact, the matches are computed exactly and the choice is made again on their true number (so a
    /// bad estimate cannot force an exact scan of many matches).
    fn route(
        &self,
        g: &Inner,
        filter: Option<&Filter>,
        k: usize,
        ef: Option<usize>,
        w: usize,
        cancel: &CancelToken,
    ) -> Result<Route> {
        let shape = self.shape(g, w);
        let flat = self.hnsw.is_none();
        let Some(f) = filter else {
            return Ok(Route { path: choose_path(&shape, 1.0, k, ef, flat), matched: None, indexed: None });
        };
        if let Some(bits) = indexed_matches(g, f) {
            // Indexed: the matches are known exactly, at the cost of the lists (no payload is read).
            let selectivity = if shape.live == 0 { 0.0 } else { bits.len() as f64 / shape.live as f64 };
            let path = choose_path(&shape, selectivity, k, ef, flat);
            return Ok(match path {
                AccessPath::Exact => Route { path, matched: Some(bits.iter().collect()), indexed: None },
                AccessPath::Graph { .. } => Route { path, matched: None, indexed: Some(bits) },
            });
        }
        let path = choose_path(&shape, self.estimate_selectivity(g, f, FILTER_SAMPLE), k, ef, flat);
        if path != AccessPath::Exact {
            return Ok(Route { path, matched: None, indexed: None });
        }
        let matched = self.matching_slots(g, f, cancel)?;
        let selectivity = if shape.live == 0 { 0.0 } else { matched.len() as f64 / shape.live as f64 };
        Ok(Route { path: choose_path(&shape, selectivity, k, ef, flat), matched: Some(matched), indexed: None })
    }

    /// Runs a routed search. Exact: a scan of every live (matching) slot. Graph without a filter: graph
    /// search accepting live slots below the watermark, plus an exact scan of the pending ones. Graph with a
    /// filter: for large batches the matches are computed once into a bitset, for small ones the filter is
    /// evaluated lazily on the nodes the graph visits, so a single filtered query does not pay for
    /// evaluating the filter on every point. Pending slots are scanned exactly in every case.
    #[allow(clippy::too_many_arguments)]
    fn search_routed(
        &self,
        g: &Inner,
        queries: &[f32],
        k: usize,
        filter: Option<&Filter>,
        w: usize,
        route: Route,
        rescore: Rescore,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Cand>>> {
        let alive = &g.alive;
        let graph = match (route.path, &self.hnsw) {
            (AccessPath::Graph { ef }, Some(h)) if w > 0 => Some((h, ef)),
            _ => None,
        };
        let Some(f) = filter else {
            let all_live = || collect_slots(0..alive.len(), &|s| alive[s], cancel);
            let Some((hnsw, ef)) = graph else {
                return self.exact_batch(g, queries, k, &all_live()?, cancel);
            };
            let pending = collect_slots(w..alive.len(), &|s| alive[s], cancel)?;
            let accept = move |s: u32| (s as usize) < w && alive[s as usize];
            return self.graph_search(g, hnsw, queries, k, ef, &accept, &pending, g.live(), &all_live, rescore, cancel);
        };
        if let (Some((hnsw, ef)), Some(bits)) = (graph, &route.indexed) {
            let pending = collect_slots(w..alive.len(), &|s| bits.contains(s as u32), cancel)?;
            let accept = move |s: u32| (s as usize) < w && bits.contains(s);
            let all = || Ok(bits.iter().collect());
            return self.graph_search(
                g,
                hnsw,
                queries,
                k,
                ef,
                &accept,
                &pending,
                bits.len() as usize,
                &all,
                rescore,
                cancel,
            );
        }
        let matches = |s: usize| alive[s] && f.matches(g.payload_or_empty(s as u32));
        let (hnsw, ef) = match (graph, route.matched) {
            (None, Some(matched)) => return self.exact_batch(g, queries, k, &matched, cancel),
            (None, None) => return self.exact_batch(g, queries, k, &self.matching_slots(g, f, cancel)?, cancel),
            (Some((h, ef)), Some(matched)) => {
                return self.filtered_graph_bitset(g, h, queries, k, ef, w, matched, rescore, cancel);
            }
            (Some(graph), None) => graph,
        };
        let nq = queries.len() / self.config.dim;
        if nq.saturating_mul(ef).saturating_mul(LAZY_FILTER_VISITS_PER_EF) >= g.live() {
            let matched = self.matching_slots(g, f, cancel)?;
            return self.filtered_graph_bitset(g, hnsw, queries, k, ef, w, matched, rescore, cancel);
        }
        let pending = collect_slots(w..alive.len(), &matches, cancel)?;
        let accept = move |s: u32| (s as usize) < w && matches(s as usize);
        let all_matches = || self.matching_slots(g, f, cancel);
        self.graph_search(g, hnsw, queries, k, ef, &accept, &pending, usize::MAX, &all_matches, rescore, cancel)
    }

    /// Live slots matching `f`, ascending (evaluated in parallel, polling `cancel` per block).
    fn matching_slots(&self, g: &Inner, f: &Filter, cancel: &CancelToken) -> Result<Vec<u32>> {
        if let Some(bits) = indexed_matches(g, f) {
            return Ok(bits.iter().collect());
        }
        let alive = &g.alive;
        collect_slots(0..alive.len(), &|s| alive[s] && f.matches(g.payload_or_empty(s as u32)), cancel)
    }

    /// Graph search accepting the precomputed matching slots `matched` (ascending).
    #[allow(clippy::too_many_arguments)]
    fn filtered_graph_bitset(
        &self,
        g: &Inner,
        hnsw: &Hnsw,
        queries: &[f32],
        k: usize,
        ef: usize,
        w: usize,
        matched: Vec<u32>,
        rescore: Rescore,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Cand>>> {
        let mut bits = vec![0u64; g.alive.len().div_ceil(64)];
        for &s in &matched {
            bits[s as usize / 64] |= 1 << (s % 64);
        }
        let pending = &matched[matched.partition_point(|&s| (s as usize) < w)..];
        let bits = &bits;
        let accept = move |s: u32| (s as usize) < w && bits[s as usize / 64] & (1 << (s % 64)) != 0;
        let total = matched.len();
        self.graph_search(g, hnsw, queries, k, ef, &accept, pending, total, &|| Ok(matched.clone()), rescore, cancel)
    }

    /// Estimated fraction of live points matching `f`, from a deterministic sample of about `samples`
    /// slots (0 for an empty store).
    /// Not index-aware on purpose: `route` asks the indexes first, and `search_cost_of` (sizing only) makes do
    /// with the sample rather than computing the index answer a second time per query.
    fn estimate_selectivity(&self, g: &Inner, f: &Filter, samples: usize) -> f64 {
        let n = g.alive.len();
        let step = (n / samples.max(1)).max(1);
        let (mut seen, mut hit) = (0usize, 0usize);
        for s in (step / 2..n).step_by(step) {
            if g.alive[s] {
                seen += 1;
                hit += usize::from(f.matches(g.payload_or_empty(s as u32)));
            }
        }
        if seen == 0 { 0.0 } else { hit as f64 / seen as f64 }
    }

    /// Graph search of every query merged with an exact scan of `pending`; a query that ends with fewer
    /// than `min(k, total)` results is answered by an exact scan of `all()` instead. `all` fails only when
    /// `cancel` fires.
    #[allow(clippy::too_many_arguments)]
    fn graph_search(
        &self,
        g: &Inner,
        hnsw: &Hnsw,
        queries: &[f32],
        k: usize,
        ef: usize,
        accept: &(dyn Fn(u32) -> bool + Sync),
        pending: &[u32],
        total: usize,
        all: &(dyn Fn() -> Result<Vec<u32>> + Sync),
        rescore: Rescore,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Cand>>> {
        let dim = self.config.dim;
        let nq = queries.len() / dim;
        let pend =
            if pending.is_empty() { vec![Vec::new(); nq] } else { self.exact_batch(g, queries, k, pending, cancel)? };
        let want = k.min(total);
        // `None` once `all()` was cancelled.
        let all_cands: OnceLock<Option<Vec<u32>>> = OnceLock::new();
        queries
            .par_chunks(dim)
            .zip(pend.into_par_iter())
            .map(|(q, p)| {
                let found: Vec<Cand> = hnsw
                    .search_rescored(q, k, ef, &g.arena, accept, rescore, cancel)?
                    .into_iter()
                    .map(|(d, s)| Cand { d, id: s })
                    .collect();
                let merged = if p.is_empty() { merge_sorted(vec![found], k) } else { merge_sorted(vec![found, p], k) };
                if merged.len() >= want {
                    Ok(merged)
                } else {
                    let cands = all_cands.get_or_init(|| all().ok()).as_ref().ok_or(Error::Cancelled)?;
                    Ok(self.exact_scan(g, &[q], k, cands, cancel)?.pop().unwrap_or_default())
                }
            })
            .collect()
    }
}

/// The access path chosen for one search call, with what choosing it computed.
struct Route {
    /// The path; `Graph` only for a store with a graph.
    path: AccessPath,
    /// Every live slot matching the filter, ascending, when routing counted them exactly; else `None`.
    matched: Option<Vec<u32>>,
    /// For a graph search: the matching live slots as the payload indexes gave them (tested per visited
    /// node, never listed); `None` when the filter is not answered by indexes.
    indexed: Option<roaring::RoaringBitmap>,
}

/// The slots of `range` satisfying `keep`, ascending; evaluated in parallel blocks of [`SCAN_BLOCK`] slots,
/// polling `cancel` before each.
fn collect_slots(
    range: std::ops::Range<usize>,
    keep: &(dyn Fn(usize) -> bool + Sync),
    cancel: &CancelToken,
) -> Result<Vec<u32>> {
    let start = range.start;
    let blocks = range.len().div_ceil(SCAN_BLOCK);
    let parts: Vec<Vec<u32>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            cancel.check()?;
            let lo = start + b * SCAN_BLOCK;
            let hi = (lo + SCAN_BLOCK).min(range.end);
            Ok((lo..hi).filter(|&s| keep(s)).map(|s| s as u32).collect())
        })
        .collect::<Result<_>>()?;
    Ok(parts.concat())
}

impl ShardStore {
    /// Exact top-k of every query over the candidate slots `cands`, parallel over query groups and, when
    /// there are few queries, over chunks of the candidates. Each task polls `cancel` per block.
    fn exact_batch(
        &self,
        g: &Inner,
        queries: &[f32],
        k: usize,
        cands: &[u32],
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Cand>>> {
        let dim = self.config.dim;
        let nq = queries.len() / dim;
        if cands.is_empty() || nq == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        let qs: Vec<&[f32]> = queries.chunks_exact(dim).collect();
        let groups = nq.div_ceil(QUERY_GROUP);
        let threads = rayon::current_num_threads().max(1);
        let n_chunks = if groups >= threads {
            1
        } else {
            (2 * threads).div_ceil(groups).min(cands.len().div_ceil(MIN_SCAN_CHUNK)).max(1)
        };
        let chunk_len = cands.len().div_ceil(n_chunks);
        let len = cands.len();
        let parts: Vec<Vec<Vec<Cand>>> = (0..groups * n_chunks)
            .into_par_iter()
            .map(|u| {
                let (gi, ci) = (u / n_chunks, u % n_chunks);
                let q = &qs[gi * QUERY_GROUP..((gi + 1) * QUERY_GROUP).min(nq)];
                let c = &cands[(ci * chunk_len).min(len)..((ci + 1) * chunk_len).min(len)];
                self.exact_scan(g, q, k, c, cancel)
            })
            .collect::<Result<_>>()?;
        if n_chunks == 1 {
            return Ok(parts.into_iter().flatten().collect());
        }
        let mut out = Vec::with_capacity(nq);
        let mut parts = parts.into_iter();
        for gi in 0..groups {
            let mut group: Vec<Vec<Vec<Cand>>> = (&mut parts).take(n_chunks).collect();
            let gsize = ((gi + 1) * QUERY_GROUP).min(nq) - gi * QUERY_GROUP;
            for qi in 0..gsize {
                out.push(merge_sorted(group.iter_mut().map(|p| std::mem::take(&mut p[qi])).collect(), k));
            }
        }
        Ok(out)
    }

    /// Sequential exact top-k of a few queries over `cands`, block by block so each block of vectors is
    /// read from memory once for all the queries; polls `cancel` before each block.
    fn exact_scan(
        &self,
        g: &Inner,
        qs: &[&[f32]],
        k: usize,
        cands: &[u32],
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<Cand>>> {
        let metric = self.config.metric;
        let block = (BLOCK_BYTES / (self.config.dim * 4)).max(8);
        let mut tops: Vec<TopK> = qs.iter().map(|_| TopK::new(k)).collect();
        for b in cands.chunks(block) {
            cancel.check()?;
            for (q, t) in qs.iter().zip(tops.iter_mut()) {
                for &s in b {
                    t.push(Cand { d: distance::distance(metric, q, g.arena.get(s)), id: s });
                }
            }
        }
        Ok(tops.into_iter().map(TopK::into_sorted).collect())
    }
}
