//! The access-path cost model (DESIGN §4): exact scan or HNSW for one shard search, and the `ef` to use.
//!
//! Pure functions of the shard's shape and the filter's selectivity; the store estimates the selectivity
//! (by sampling) and calls [`choose_path`]. Costs are counted in *vector components touched* (one distance
//! evaluation costs `dim`), per query:
//!
//! - **exact** = `live × FILTER_EVAL_COST` (when filtered: the filter runs on every live point)
//!   `+ matches × dim` (a distance per matching point);
//! - **graph** = `visits × (dim + FILTER_EVAL_COST)` plus an exact scan of the points not yet in the graph,
//!   where `visits = GRAPH_VISIT_FACTOR × ef × m × log2(indexed) / selectivity` is capped at `indexed` (a
//!   filtered beam has to walk past non-matching nodes, about `1 / selectivity` of them per match; it can
//!   never visit more nodes than the graph has).
//!
//! The cheaper wins; shards (or filter matches) of at most [`EXACT_SCAN_MAX`] points are always scanned
//! exactly. Calibration: `GRAPH_VISIT_FACTOR` puts the unfiltered crossover at about [`EXACT_SCAN_MAX`]
//! points for the default `ef` and `m = 16`, and for filtered searches with a negligible filter cost the rule
//! reduces to "exact when `matches² <= GRAPH_VISIT_FACTOR × ef × m × log2(live) × live`" (about
//! `3300 × live` at the defaults and 100k points), the store's earlier `matches² <= 4096 × live` rule; the
//! filter's own cost moves the crossover towards the graph (about 3% selectivity at 1M points, dim 128).

/// Default HNSW search beam width when the caller gives none (raised to `k` when smaller).
pub const DEFAULT_EF: usize = 100;
/// Shards (or filter matches) up to this many points are always searched exactly.
pub const EXACT_SCAN_MAX: usize = 2_048;
/// Graph nodes scored per unit of `ef × m × log2(points)` by one beam search (most neighbours of an
/// expanded node were already visited, so far fewer than `2m` are scored per expansion).
pub const GRAPH_VISIT_FACTOR: f64 = 0.125;
/// Cost of one filter evaluation, in vector components of distance work (a payload lookup and compare).
pub const FILTER_EVAL_COST: f64 = 16.0;

/// What a search of one shard is sized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardShape {
    /// Live points in the shard.
    pub live: usize,
    /// Live points reachable through the graph (`<= live`; the others are pending and scanned exactly).
    /// Always 0 for a flat index.
    pub indexed: usize,
    /// Vector dimension (`>= 1`; 0 is treated as 1).
    pub dim: usize,
    /// Graph links per node on the upper layers (`2m` on layer 0); ignored for a flat index.
    pub m: usize,
}

/// How a shard search runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessPath {
    /// Exact scan of every live (matching) point.
    Exact,
    /// HNSW beam search (plus an exact scan of pending points).
    Graph {
        /// The beam width; never below `k`.
        ef: usize,
    },
}

/// The beam width: `ef` or [`DEFAULT_EF`], never below `k` (and at least 1).
pub fn effective_ef(k: usize, ef: Option<usize>) -> usize {
    ef.unwrap_or(DEFAULT_EF).max(k).max(1)
}

/// Estimated per-query cost of an exact scan (see the module doc).
pub fn exact_cost(shape: &ShardShape, selectivity: f64) -> f64 {
    let sel = selectivity.clamp(0.0, 1.0);
    let live = shape.live as f64;
    let filter = if sel < 1.0 { FILTER_EVAL_COST } else { 0.0 };
    live * filter + sel * live * shape.dim.max(1) as f64
}

/// Estimated per-query cost of a graph search with beam width `ef` (see the module doc).
pub fn graph_cost(shape: &ShardShape, selectivity: f64, ef: usize) -> f64 {
    let sel = selectivity.clamp(0.0, 1.0);
    let dim = shape.dim.max(1) as f64;
    let indexed = shape.indexed.min(shape.live) as f64;
    let filter = if sel < 1.0 { FILTER_EVAL_COST } else { 0.0 };
    let beam = GRAPH_VISIT_FACTOR * ef as f64 * shape.m.max(2) as f64 * indexed.max(2.0).log2();
    let visits = if sel > 0.0 { (beam / sel).min(indexed) } else { indexed };
    let pending = shape.live as f64 - indexed;
    visits * (dim + filter) + pending * (filter + sel * dim)
}

/// Picks the access path for a search of `k` neighbours on a shard of `shape`, where `selectivity` is the
/// estimated fraction of live points matching the filter (1.0 = no filter) and `ef` the caller's beam
/// width (default [`DEFAULT_EF`]). `flat`: the shard has no graph. Exact for a flat index, an empty graph,
/// and shards or filter matches of at most [`EXACT_SCAN_MAX`] points; otherwise the cheaper of
/// [`exact_cost`] and [`graph_cost`] (ties go to exact). A chosen graph's `ef` is never below `k`.
pub fn choose_path(shape: &ShardShape, selectivity: f64, k: usize, ef: Option<usize>, flat: bool) -> AccessPath {
    let sel = if selectivity.is_nan() { 1.0 } else { selectivity.clamp(0.0, 1.0) };
    let matches = (sel * shape.live as f64).round() as usize;
    if flat || shape.indexed == 0 || shape.live <= EXACT_SCAN_MAX || matches <= EXACT_SCAN_MAX {
        return AccessPath::Exact;
    }
    let ef = effective_ef(k, ef);
    if graph_cost(shape, sel, ef) < exact_cost(shape, sel) { AccessPath::Graph { ef } } else { AccessPath::Exact }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(live: usize, dim: usize) -> ShardShape {
        ShardShape { live, indexed: live, dim, m: 16 }
    }

    #[test]
    fn small_shards_are_scanned() {
        assert_eq!(choose_path(&shape(0, 128), 1.0, 10, None, false), AccessPath::Exact);
        assert_eq!(choose_path(&shape(1000, 128), 1.0, 10, None, false), AccessPath::Exact);
        assert_eq!(choose_path(&shape(EXACT_SCAN_MAX, 128), 1.0, 10, Some(10), false), AccessPath::Exact);
    }

    #[test]
    fn large_unfiltered_shards_use_the_graph() {
        for live in [5_000, 100_000, 10_000_000] {
            for dim in [4, 128, 1536] {
                assert_eq!(
                    choose_path(&shape(live, dim), 1.0, 10, None, false),
                    AccessPath::Graph { ef: DEFAULT_EF },
                    "{live} x {dim}"
                );
            }
        }
        // ef never below k
        assert_eq!(choose_path(&shape(1_000_000, 64), 1.0, 500, None, false), AccessPath::Graph { ef: 500 });
        // the crossover stays near EXACT_SCAN_MAX at the defaults
        assert_eq!(choose_path(&shape(3_000, 64), 1.0, 10, None, false), AccessPath::Graph { ef: DEFAULT_EF });
    }

    #[test]
    fn requested_ef_is_honoured_but_never_below_k() {
        let s = shape(1_000_000, 96);
        assert_eq!(choose_path(&s, 1.0, 10, Some(256), false), AccessPath::Graph { ef: 256 });
        assert_eq!(choose_path(&s, 1.0, 10, Some(16), false), AccessPath::Graph { ef: 16 });
        assert_eq!(choose_path(&s, 1.0, 50, Some(16), false), AccessPath::Graph { ef: 50 });
        assert_eq!(choose_path(&s, 1.0, 0, Some(0), false), AccessPath::Graph { ef: 1 });
        // a beam that would visit the whole graph is an exact scan
        assert_eq!(choose_path(&shape(10_000, 96), 1.0, 10, Some(10_000), false), AccessPath::Exact);
    }

    #[test]
    fn very_selective_filters_are_scanned() {
        let s = shape(1_000_000, 128);
        assert_eq!(choose_path(&s, 0.001, 10, None, false), AccessPath::Exact); // 1000 matches
        assert_eq!(choose_path(&s, 0.01, 10, None, false), AccessPath::Exact); // 10k matches
        assert_eq!(choose_path(&s, 0.0, 10, None, false), AccessPath::Exact);
        assert_eq!(choose_path(&s, 0.5, 10, None, false), AccessPath::Graph { ef: DEFAULT_EF });
        assert_eq!(choose_path(&s, 0.2, 10, None, false), AccessPath::Graph { ef: DEFAULT_EF });
        // the exact/graph boundary moves monotonically with selectivity
        let graph_from = (1..=1000)
            .map(|i| i as f64 / 1000.0)
            .find(|&sel| choose_path(&s, sel, 10, None, false) != AccessPath::Exact);
        let graph_from = graph_from.expect("a broad filter uses the graph");
        assert!((0.01..0.2).contains(&graph_from), "crossover at selectivity {graph_from}");
        assert!(
            (1..=1000)
                .map(|i| i as f64 / 1000.0)
                .filter(|&sel| sel >= graph_from)
                .all(|sel| choose_path(&s, sel, 10, None, false) != AccessPath::Exact)
        );
    }

    #[test]
    fn flat_and_unindexed_shards_are_scanned() {
        assert_eq!(choose_path(&shape(10_000_000, 128), 1.0, 10, None, true), AccessPath::Exact);
        let pending = ShardShape { live: 1_000_000, indexed: 0, dim: 128, m: 16 };
        assert_eq!(choose_path(&pending, 1.0, 10, None, false), AccessPath::Exact);
        // a mostly pending shard gains little from its graph
        let mostly_pending = ShardShape { live: 1_000_000, indexed: 1_000, dim: 128, m: 16 };
        assert_eq!(choose_path(&mostly_pending, 1.0, 10, None, false), AccessPath::Exact);
        let half = ShardShape { live: 1_000_000, indexed: 500_000, dim: 128, m: 16 };
        assert_eq!(choose_path(&half, 1.0, 10, None, false), AccessPath::Graph { ef: DEFAULT_EF });
    }

    #[test]
    fn costs_are_sane() {
        let s = shape(100_000, 128);
        assert!(exact_cost(&s, 1.0) > exact_cost(&s, 0.5));
        assert!(graph_cost(&s, 0.1, 100) > graph_cost(&s, 0.5, 100));
        assert!(graph_cost(&s, 1.0, 200) > graph_cost(&s, 1.0, 100));
        // capped: a graph walk never costs more than touching every node once (plus the filter)
        assert!(graph_cost(&s, 1e-9, 100) <= 100_000.0 * (128.0 + FILTER_EVAL_COST));
        assert_eq!(choose_path(&s, f64::NAN, 10, None, false), AccessPath::Graph { ef: DEFAULT_EF });
    }
}
