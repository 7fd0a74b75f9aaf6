//! Hierarchical navigable small world graph (HNSW, as in hnswlib) over the slots of a [`VectorArena`]:
//! concurrent inserts, lock-free searches, filtered search through an accept predicate, versioned persistence.
//!
//! # Concurrency design
//! Nodes live in a segmented table (`SEGMENTS` segments of doubling size, allocated on first use and never
//! moved), so a reader never takes a table lock. Every neighbour list is a run of `AtomicU32`: a count
//! followed by the ids. Writers (inserts) serialise per node with a small mutex and always write the ids
//! before publishing the count with `Release`; readers load the count with `Acquire` and the ids `Relaxed`.
//! A reader racing a rewrite may therefore see a mix of old and new ids, but every id it sees was written
//! by some insert, i.e. names a real node — harmless for a navigation graph and the same trade hnswlib makes.
//! An insert holds at most one node lock at a time (plus, rarely, the entry-point lock taken before any
//! node lock), so inserts cannot deadlock.
//!
//! # Files of this module
//! ```text
//! mod.rs      Hnsw (parameters, node table accessors, levels, writer locks), HnswParams
//! segment.rs  graph layout: Segment (levels, layer-0 and upper neighbour lists), slot location, list words
//! scratch.rs  per-thread search state (visited stamps, heaps, insert buffers)
//! scorer.rs   Scorer: full-precision and int8-code distances, vector prefetch
//! insert.rs   insert: level claim, neighbour selection (hnswlib's heuristic), back links
//! search.rs   greedy descent, search_layer (the beam search), the public searches
//! persist.rs  the versioned, CRC32C-checked format (write_to, read_from)
//! ```

mod insert;
mod persist;
mod scorer;
mod scratch;
mod search;
mod segment;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering as AtOrd};

use parking_lot::Mutex;

use crate::Metric;
use segment::{Segment, locate, segment_capacity};

/// Graph construction parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on the upper layers (2*m on layer 0). [`Hnsw::new`] clamps it to `2..=MAX_M`.
    pub m: usize,
    /// Beam width while inserting. [`Hnsw::new`] clamps it to at least 1.
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams { m: 16, ef_construction: 200 }
    }
}

/// Largest accepted `m`.
pub const MAX_M: usize = 1024;
/// Highest layer a node can be assigned (levels are capped here; it is never reached in practice for m ≥ 4).
const MAX_LEVEL: usize = 16;
/// log2 of the capacity of segment 0; segment `i` holds `SEG_BASE << i` nodes.
const SEG_BASE_BITS: u32 = 10;
/// Number of segments: enough for every `u32` slot.
const SEGMENTS: usize = 23;
/// `entry` value of an empty graph.
const NO_ENTRY: u64 = u64::MAX;
/// Node expansions of a beam search between two polls of its [`CancelToken`].
const CANCEL_CHECK_EXPANSIONS: usize = 64;
/// Seed mixed into the per-slot level generator.
const LEVEL_SEED: u64 = 0x5348_4F41_4C48_4E53; // "SHOALHNS"

/// Number of writer lock stripes (a power of two). A node's lock is `locks[slot % LOCK_STRIPES]`; an insert
/// holds at most one node lock at a time, so two nodes sharing a stripe cannot deadlock.
const LOCK_STRIPES: usize = 4096;

/// splitmix64 finaliser.
#[inline]
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[inline]
fn pack_entry(slot: u32, level: usize) -> u64 {
    ((level as u64) << 32) | u64::from(slot)
}

#[inline]
fn unpack_entry(e: u64) -> (u32, usize) {
    (e as u32, (e >> 32) as usize)
}

/// An HNSW graph index. Vectors live in a [`VectorArena`] passed to every call; the graph only stores slots.
///
/// `Hnsw` is `Send + Sync`: `insert` and `search` take `&self` and may run concurrently from many threads.
pub struct Hnsw {
    /// Effective (clamped) parameters.
    params: HnswParams,
    /// Metric of every distance computed; vectors in the arena and queries are prepared for it.
    metric: Metric,
    /// Max links on layer 0 (`2 * m`).
    m0: usize,
    /// Words per node in `Segment::links0` (`m0 + 1`).
    stride0: usize,
    /// `1 / ln(m)`: level distribution scale.
    level_mult: f64,
    /// Node table; segment `i` covers slots `[(2^i - 1) * SEG_BASE, (2^(i+1) - 1) * SEG_BASE)`.
    segments: [OnceLock<Box<Segment>>; SEGMENTS],
    /// `NO_ENTRY` or `level << 32 | slot` of the entry point; its level is the graph's max level and the node
    /// is present. Changed only under `entry_lock`.
    entry: AtomicU64,
    /// Serialises entry-point changes (held for the whole insert of a node that raises the max level).
    entry_lock: Mutex<()>,
    /// Writer locks guarding neighbour lists, striped by slot (`LOCK_STRIPES` of them). Readers never lock.
    locks: Box<[Mutex<()>]>,
    /// Number of claimed (inserted or being inserted) slots.
    len: AtomicUsize,
    /// One more than the largest claimed slot (0 when empty); sizes visited sets.
    slot_bound: AtomicUsize,
}

impl fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hnsw")
            .field("params", &self.params)
            .field("metric", &self.metric)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Hnsw {
    /// An empty graph. `m` is clamped to `2..=MAX_M`, `ef_construction` to at least 1.
    pub fn new(params: HnswParams, metric: Metric) -> Self {
        let m = params.m.clamp(2, MAX_M);
        let params = HnswParams { m, ef_construction: params.ef_construction.max(1) };
        Hnsw {
            params,
            metric,
            m0: 2 * m,
            stride0: 2 * m + 1,
            level_mult: 1.0 / (m as f64).ln(),
            segments: std::array::from_fn(|_| OnceLock::new()),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            len: AtomicUsize::new(0),
            slot_bound: AtomicUsize::new(0),
        }
    }

    /// Effective construction parameters.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// The metric distances are computed with.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Number of inserted slots.
    pub fn len(&self) -> usize {
        self.len.load(AtOrd::Acquire)
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `slot` was inserted.
    pub fn contains(&self, slot: u32) -> bool {
        self.level_of(slot).is_some()
    }

    /// The deterministic level of `slot`: `floor(-ln(U) / ln(m))`, U uniform in (0, 1] from a hash of the slot.
    fn random_level(&self, slot: u32) -> usize {
        let h = splitmix64(u64::from(slot) ^ LEVEL_SEED);
        let u = ((h >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64); // (0, 1]
        let l = (-u.ln() * self.level_mult).floor();
        if l.is_finite() && l > 0.0 { (l as usize).min(MAX_LEVEL) } else { 0 }
    }

    #[inline]
    fn segment(&self, seg: usize) -> Option<&Segment> {
        self.segments[seg].get().map(|b| &**b)
    }

    fn segment_or_alloc(&self, seg: usize) -> &Segment {
        self.segments[seg].get_or_init(|| Box::new(Segment::new(segment_capacity(seg), self.stride0)))
    }

    /// Level of `slot` when present.
    #[inline]
    fn level_of(&self, slot: u32) -> Option<usize> {
        let (seg, off) = locate(slot);
        let l = self.segment(seg)?.levels[off].load(AtOrd::Acquire);
        if l == 0 { None } else { Some(l as usize - 1) }
    }

    /// The neighbour list (count word + ids) of `slot` at `layer`; empty when the node has no such layer.
    #[inline]
    fn links(&self, slot: u32, layer: usize) -> &[AtomicU32] {
        let (seg, off) = locate(slot);
        let Some(s) = self.segment(seg) else {
            return &[];
        };
        if layer == 0 {
            &s.links0[off * self.stride0..(off + 1) * self.stride0]
        } else {
            let w = self.params.m + 1;
            let u = s.upper(off);
            if u.len() >= layer * w { &u[(layer - 1) * w..layer * w] } else { &[] }
        }
    }

    /// The writer lock of `slot` (which must be present, so its segment exists).
    #[inline]
    fn lock(&self, slot: u32) -> parking_lot::MutexGuard<'_, ()> {
        self.locks[slot as usize & (LOCK_STRIPES - 1)].lock()
    }
}
