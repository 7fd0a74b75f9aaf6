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

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering as AtOrd};

use parking_lot::Mutex;

use crate::arena::VectorArena;
use crate::cancel::CancelToken;
use crate::cand::Cand;
use crate::distance::distance;
use crate::quantizer::{CodeQuery, Rescore};
use crate::{Error, Metric, Result};

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

/// Persistence magic.
const MAGIC: [u8; 8] = *b"SHOALHNS";
/// Persistence format version.
const FORMAT_VERSION: u32 = 1;

/// A fixed-capacity block of node records. Never resized or moved once allocated.
struct Segment {
    /// Per node: 0 = absent, otherwise `level + 1`. Goes from 0 to its final value exactly once (the claim
    /// at the start of the insert) and never changes afterwards.
    levels: Box<[AtomicU8]>,
    /// Layer-0 lists, `stride0 = 2m + 1` words per node: the count (≤ 2m), then the ids. Ids at positions
    /// `< max count ever published` are always valid node slots.
    links0: Box<[AtomicU32]>,
    /// Layers 1..=level of nodes with level ≥ 1: null, or a leaked block (see [`Segment::upper`]) of
    /// `level * (m + 1)` words, per layer the count (≤ m) then the ids. Set once (compare-exchange from null)
    /// before the node's level is claimed, so any node reachable at layer `l ≥ 1` has it; freed on drop.
    /// A null pointer per node (zeroed, so untouched pages are not resident) instead of a `OnceLock<Box<_>>`
    /// (24 bytes written per node of capacity).
    upper: Box<[AtomicPtr<AtomicU32>]>,
}

impl Segment {
    fn new(cap: usize, stride0: usize) -> Segment {
        let mut ptrs = std::mem::ManuallyDrop::new(vec![0usize; cap]);
        // SAFETY: `AtomicPtr<T>` has the same size and alignment as `usize` on every platform Rust supports
        // atomics pointers on, and the all-zero bit pattern is a null pointer; the buffer moves to the new Vec.
        let upper = unsafe {
            Vec::from_raw_parts(ptrs.as_mut_ptr().cast::<AtomicPtr<AtomicU32>>(), ptrs.len(), ptrs.capacity())
        }
        .into_boxed_slice();
        Segment { levels: zeroed_atomic_u8(cap), links0: zeroed_atomic_u32(cap * stride0), upper }
    }

    /// The upper-layer words of node `off` (empty when it has none). A block is `[len, words...]`.
    #[inline]
    fn upper(&self, off: usize) -> &[AtomicU32] {
        let p = self.upper[off].load(AtOrd::Acquire);
        if p.is_null() {
            return &[];
        }
        // SAFETY: a non-null pointer was published (Release) by `upper_init` from a leaked boxed slice of
        // `1 + len` words whose first word holds `len` and is never written again; the block lives until the
        // segment is dropped, which outlives `&self`.
        unsafe {
            let len = (*p).load(AtOrd::Relaxed) as usize;
            &std::slice::from_raw_parts(p, len + 1)[1..]
        }
    }

    /// Gives node `off` a zeroed upper block of `words` words unless it already has one.
    fn upper_init(&self, off: usize, words: usize) {
        if !self.upper[off].load(AtOrd::Acquire).is_null() {
            return;
        }
        let block: Box<[AtomicU32]> =
            std::iter::once(words as u32).chain(std::iter::repeat_n(0, words)).map(AtomicU32::new).collect();
        let p = Box::into_raw(block).cast::<AtomicU32>();
        if self.upper[off].compare_exchange(std::ptr::null_mut(), p, AtOrd::AcqRel, AtOrd::Acquire).is_err() {
            // SAFETY: `p` came from `Box::into_raw` of a `1 + words` slice just above and was never published.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, words + 1)) });
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for u in self.upper.iter() {
            let p = u.load(AtOrd::Acquire);
            if !p.is_null() {
                // SAFETY: published by `upper_init` from `Box::into_raw` of a slice of `1 + len` words (len in
                // the first word); `&mut self` means no reader remains, and each pointer is freed once.
                unsafe {
                    let len = (*p).load(AtOrd::Relaxed) as usize;
                    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len + 1)));
                }
            }
        }
    }
}

/// `n` zeroed `AtomicU32`s from `alloc_zeroed`: pages never written stay untouched and are not resident. A
/// segment is sized for doubling, so the newest one is mostly empty; writing its zeros up front made the graph
/// cost ~2.5x its used size in RSS.
fn zeroed_atomic_u32(n: usize) -> Box<[AtomicU32]> {
    let mut v = std::mem::ManuallyDrop::new(vec![0u32; n]); // `vec![0; n]` allocates with alloc_zeroed
    // SAFETY: `AtomicU32` has the same size, alignment and bit validity as `u32` (std::sync::atomic docs), so
    // the buffer of a `Vec<u32>` is a valid buffer of as many `AtomicU32`s, allocated with the same layout;
    // ownership moves to the new Vec (the old one is never dropped).
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<AtomicU32>(), v.len(), v.capacity()) }.into_boxed_slice()
}

/// `n` zeroed `AtomicU8`s from `alloc_zeroed` (see [`zeroed_atomic_u32`]).
fn zeroed_atomic_u8(n: usize) -> Box<[AtomicU8]> {
    let mut v = std::mem::ManuallyDrop::new(vec![0u8; n]);
    // SAFETY: `AtomicU8` has the same size, alignment and bit validity as `u8`; as in `zeroed_atomic_u32`.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<AtomicU8>(), v.len(), v.capacity()) }.into_boxed_slice()
}

/// Number of writer lock stripes (a power of two). A node's lock is `locks[slot % LOCK_STRIPES]`; an insert
/// holds at most one node lock at a time, so two nodes sharing a stripe cannot deadlock.
const LOCK_STRIPES: usize = 4096;

/// Segment index and offset of `slot`.
#[inline]
fn locate(slot: u32) -> (usize, usize) {
    let x = (u64::from(slot) >> SEG_BASE_BITS) + 1;
    let seg = 63 - x.leading_zeros() as usize;
    let start = ((1u64 << seg) - 1) << SEG_BASE_BITS;
    (seg, (u64::from(slot) - start) as usize)
}

/// Capacity of segment `seg`.
#[inline]
fn segment_capacity(seg: usize) -> usize {
    1usize << (SEG_BASE_BITS as usize + seg)
}

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

/// The number of ids in a list (count word clamped to the list's capacity).
#[inline]
fn list_len(list: &[AtomicU32]) -> usize {
    match list.first() {
        Some(c) => (c.load(AtOrd::Acquire) as usize).min(list.len() - 1),
        None => 0,
    }
}

/// Overwrites a list with `ids` (ids first, count last). Caller holds the node's lock.
#[inline]
fn write_list(list: &[AtomicU32], ids: impl ExactSizeIterator<Item = u32>) {
    let n = ids.len().min(list.len().saturating_sub(1));
    for (i, id) in ids.take(n).enumerate() {
        list[1 + i].store(id, AtOrd::Relaxed);
    }
    if let Some(c) = list.first() {
        c.store(n as u32, AtOrd::Release);
    }
}

/// Min-heap adapter for [`Cand`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct Near(Cand);

impl Ord for Near {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.cmp(&self.0)
    }
}

impl PartialOrd for Near {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Hints the CPU to load the first cache lines of `v` (no-op off x86-64).
#[inline(always)]
fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(v).min(PREFETCH_BYTES);
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetching is a hint and never faults; the address is inside `v` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Hints the CPU to load the start of a neighbour list (no-op off x86-64).
#[inline(always)]
fn prefetch_links(list: &[AtomicU32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching is a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(list.as_ptr().cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = list;
}

/// How much of a vector [`prefetch`] requests (the hardware prefetcher follows the rest).
const PREFETCH_BYTES: usize = 512;

/// Per-thread reusable search state (no allocation in the hot loop once warmed up).
#[derive(Default)]
struct Scratch {
    /// Visited marks: `visited[slot] == stamp` means visited in the current search.
    visited: Vec<u16>,
    /// Stamp of the current search; never 0 while a search runs.
    stamp: u16,
    /// Frontier of the layer search (closest first).
    frontier: BinaryHeap<Near>,
    /// Best results of the layer search (farthest on top), at most `ef`.
    top: BinaryHeap<Cand>,
    /// Unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
    /// Layer-search results sorted ascending (insert only).
    sorted: Vec<Cand>,
    /// Neighbours selected for the new node (insert only).
    selected: Vec<Cand>,
    /// Candidate list when pruning a neighbour's list (insert only).
    pool: Vec<Cand>,
    /// Result of pruning (insert only).
    pruned: Vec<Cand>,
}

impl Scratch {
    /// Starts a new search over slots `< bound` (more are accommodated on the fly).
    fn begin(&mut self, bound: usize) {
        if self.visited.len() < bound {
            self.visited.resize(bound, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.fill(0);
            self.stamp = 1;
        }
        self.frontier.clear();
        self.top.clear();
    }

    /// Marks `id` visited; true when it was not visited before in this search.
    #[inline]
    fn visit(&mut self, id: u32) -> bool {
        let i = id as usize;
        if i >= self.visited.len() {
            self.visited.resize((i + 1).max(self.visited.len() * 2), 0);
        }
        let v = &mut self.visited[i];
        if *v == self.stamp {
            false
        } else {
            *v = self.stamp;
            true
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (or a fresh one if it is already in use, e.g. re-entrant calls from an
/// accept predicate).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Scores slots against one query during a traversal.
trait Scorer {
    /// Number of slots that can be scored (the arena's length).
    fn len(&self) -> usize;
    /// Distance of the query to `id` (`id < len()`).
    fn dist(&self, id: u32) -> f32;
    /// Hints that `id` will be scored soon.
    fn prefetch(&self, id: u32);
}

/// Full-precision scoring.
struct FloatScorer<'a> {
    /// Metric of the graph.
    metric: Metric,
    /// The prepared query.
    q: &'a [f32],
    /// Vectors.
    arena: &'a VectorArena,
}

impl Scorer for FloatScorer<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.arena.len()
    }
    #[inline]
    fn dist(&self, id: u32) -> f32 {
        distance(self.metric, self.q, self.arena.get(id))
    }
    #[inline]
    fn prefetch(&self, id: u32) {
        prefetch(self.arena.get(id));
    }
}

/// Scoring on int8 codes (the arena is trained, so every slot below its length has a code).
struct CodeScorer<'a> {
    /// The query prepared for the arena's quantizer.
    q: CodeQuery,
    /// Codes.
    arena: &'a VectorArena,
}

impl Scorer for CodeScorer<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.arena.len()
    }
    #[inline]
    fn dist(&self, id: u32) -> f32 {
        self.q.distance(self.arena.code(id))
    }
    #[inline]
    fn prefetch(&self, id: u32) {
        prefetch(self.arena.code(id));
    }
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

    /// Greedy descent (beam 1) from `cur` through layers `from..=to` (descending).
    fn greedy<S: Scorer>(&self, sc: &S, mut cur: Cand, from: usize, to: usize) -> Cand {
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
    /// Polls `cancel` every [`CANCEL_CHECK_EXPANSIONS`] expansions and stops with [`Error::Cancelled`]
    /// (leaving `s.top` incomplete) once it fires.
    #[allow(clippy::too_many_arguments)]
    fn search_layer<A: Fn(u32) -> bool + ?Sized, S: Scorer>(
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
    /// expansions, returning [`Error::Cancelled`] (and no results) once it fires.
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

    /// Writes the graph in the versioned format (`SHOALHNS`, version u32, header, nodes in slot order,
    /// CRC32C trailer). Call it while no insert runs (searches are fine); a concurrent insert may produce a
    /// snapshot that [`Hnsw::read_from`] rejects.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut out = CrcWriter::new(w);
        out.put(&MAGIC)?;
        out.put(&FORMAT_VERSION.to_le_bytes())?;
        out.put(&[metric_code(self.metric)])?;
        out.put(&(self.params.m as u32).to_le_bytes())?;
        out.put(&(self.params.ef_construction as u32).to_le_bytes())?;
        out.put(&self.entry.load(AtOrd::Acquire).to_le_bytes())?;
        let present: Vec<(u32, usize)> = (0..self.slot_bound.load(AtOrd::Acquire))
            .filter_map(|s| self.level_of(s as u32).map(|l| (s as u32, l)))
            .collect();
        out.put(&(present.len() as u64).to_le_bytes())?;
        for &(slot, level) in &present {
            out.put(&slot.to_le_bytes())?;
            out.put(&[level as u8])?;
            for layer in 0..=level {
                let list = self.links(slot, layer);
                let n = list_len(list);
                out.put(&(n as u32).to_le_bytes())?;
                for i in 0..n {
                    out.put(&list[1 + i].load(AtOrd::Relaxed).to_le_bytes())?;
                }
            }
        }
        out.finish()
    }

    /// Reads a graph written by [`Hnsw::write_to`]. Reads exactly the bytes written (no read-ahead), so a
    /// buffered reader is recommended. Bad magic, unknown version, a metric other than `metric`, a checksum
    /// mismatch, truncation or an inconsistent graph yield [`Error::Corrupt`]; other I/O errors [`Error::Io`].
    pub fn read_from(r: &mut dyn Read, metric: Metric) -> Result<Self> {
        let mut inp = CrcReader { inner: r, crc: 0 };
        if inp.array::<8>()? != MAGIC {
            return Err(corrupt("bad magic"));
        }
        let version = inp.u32()?;
        if version != FORMAT_VERSION {
            return Err(corrupt(format!("unsupported hnsw format version {version}")));
        }
        let code = inp.array::<1>()?[0];
        if code != metric_code(metric) {
            return Err(corrupt(format!("hnsw metric code {code} does not match {metric}")));
        }
        let m = inp.u32()? as usize;
        let ef_construction = inp.u32()? as usize;
        if !(2..=MAX_M).contains(&m) || ef_construction == 0 {
            return Err(corrupt(format!("bad hnsw parameters m={m} ef_construction={ef_construction}")));
        }
        let entry = inp.u64()?;
        let count = inp.u64()?;
        if count > u64::from(u32::MAX) + 1 {
            return Err(corrupt("node count out of range"));
        }
        // Decode everything before allocating the table; memory grows only with bytes actually read.
        let mut nodes: Vec<(u32, usize, usize)> = Vec::with_capacity((count as usize).min(1 << 16)); // slot, level, first list
        let mut lists: Vec<(usize, usize)> = Vec::new(); // (start, len) in `ids`
        let mut ids: Vec<u32> = Vec::new();
        let mut prev: Option<u32> = None;
        for _ in 0..count {
            let slot = inp.u32()?;
            if prev.is_some_and(|p| slot <= p) {
                return Err(corrupt("node slots are not strictly ascending"));
            }
            prev = Some(slot);
            let level = inp.array::<1>()?[0] as usize;
            if level > MAX_LEVEL {
                return Err(corrupt(format!("node {slot} has level {level} > {MAX_LEVEL}")));
            }
            nodes.push((slot, level, lists.len()));
            for layer in 0..=level {
                let n = inp.u32()? as usize;
                let cap = if layer == 0 { 2 * m } else { m };
                if n > cap {
                    return Err(corrupt(format!("node {slot} layer {layer} has {n} links > {cap}")));
                }
                let start = ids.len();
                inp.u32s(n, &mut ids)?;
                lists.push((start, n));
            }
        }
        let computed = inp.crc;
        let stored = u32::from_le_bytes(inp.array::<4>()?);
        if stored != computed {
            return Err(corrupt("hnsw checksum mismatch"));
        }

        // Consistency: links name present nodes living on that layer, never the node itself.
        let level_of = |slot: u32| nodes.binary_search_by_key(&slot, |n| n.0).ok().map(|i| nodes[i].1);
        for &(slot, level, first) in &nodes {
            for layer in 0..=level {
                let (start, n) = lists[first + layer];
                for &id in &ids[start..start + n] {
                    if id == slot || level_of(id).is_none_or(|l| l < layer) {
                        return Err(corrupt(format!("node {slot} layer {layer} links to invalid node {id}")));
                    }
                }
            }
        }
        let max_level = nodes.iter().map(|n| n.1).max();
        match (entry, max_level) {
            (NO_ENTRY, None) => {}
            (e, Some(ml)) if e != NO_ENTRY => {
                let (ep, el) = unpack_entry(e);
                if el != ml || level_of(ep) != Some(el) {
                    return Err(corrupt("entry point is not a top-level node"));
                }
            }
            _ => return Err(corrupt("entry point does not match the node set")),
        }

        let g = Hnsw::new(HnswParams { m, ef_construction }, metric);
        for &(slot, level, first) in &nodes {
            let (seg, off) = locate(slot);
            let segment = g.segment_or_alloc(seg);
            if level > 0 {
                let words = level * (m + 1);
                segment.upper_init(off, words);
            }
            segment.levels[off].store(level as u8 + 1, AtOrd::Release);
            for layer in 0..=level {
                let (start, n) = lists[first + layer];
                write_list(g.links(slot, layer), ids[start..start + n].iter().copied());
            }
        }
        g.len.store(nodes.len(), AtOrd::Release);
        g.slot_bound.store(nodes.last().map_or(0, |n| n.0 as usize + 1), AtOrd::Release);
        g.entry.store(entry, AtOrd::Release);
        Ok(g)
    }
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::Corrupt(msg.into())
}

fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::L2 => 1,
        Metric::Dot => 2,
    }
}

/// Buffered writer that tracks the CRC32C of everything written.
struct CrcWriter<'a> {
    /// Destination.
    inner: &'a mut dyn Write,
    /// Pending bytes, flushed at 64 KiB (their CRC is already folded in).
    buf: Vec<u8>,
    /// CRC32C of all bytes put so far.
    crc: u32,
}

impl<'a> CrcWriter<'a> {
    fn new(inner: &'a mut dyn Write) -> Self {
        CrcWriter { inner, buf: Vec::with_capacity(1 << 16), crc: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= 1 << 16 {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends the CRC trailer and flushes.
    fn finish(mut self) -> io::Result<()> {
        let crc = self.crc.to_le_bytes();
        self.buf.extend_from_slice(&crc);
        self.inner.write_all(&self.buf)?;
        self.inner.flush()
    }
}

/// Exact reader that tracks the CRC32C of everything read.
struct CrcReader<'a> {
    /// Source.
    inner: &'a mut dyn Read,
    /// CRC32C of all bytes read so far.
    crc: u32,
}

impl CrcReader<'_> {
    fn fill(&mut self, b: &mut [u8]) -> Result<()> {
        self.inner.read_exact(b).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt("hnsw data is truncated"),
            _ => Error::Io(e),
        })?;
        self.crc = crc32c::crc32c_append(self.crc, b);
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    /// Reads `n` little-endian u32s and appends them to `out`.
    fn u32s(&mut self, n: usize, out: &mut Vec<u32>) -> Result<()> {
        let mut b = vec![0u8; n * 4];
        self.fill(&mut b)?;
        out.extend(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        Ok(())
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use rayon::prelude::*;

    use super::*;
    use crate::distance::prepare;

    /// Deterministic xorshift64* generator.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in [-1, 1).
        fn unit(&mut self) -> f32 {
            ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }

        /// Roughly standard normal (sum of 4 uniforms, rescaled).
        fn gauss(&mut self) -> f32 {
            (self.unit() + self.unit() + self.unit() + self.unit()) * 0.866
        }
    }

    fn uniform_vectors(rng: &mut Rng, n: usize, dim: usize, metric: Metric) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| rng.unit()).collect();
                prepare(metric, &mut v);
                v
            })
            .collect()
    }

    /// Gaussian blobs around `clusters` random centres.
    fn clustered_vectors(rng: &mut Rng, n: usize, dim: usize, clusters: usize, metric: Metric) -> Vec<Vec<f32>> {
        let centres: Vec<Vec<f32>> = (0..clusters).map(|_| (0..dim).map(|_| rng.gauss()).collect()).collect();
        (0..n)
            .map(|_| {
                let c = &centres[(rng.next_u64() % clusters as u64) as usize];
                let mut v: Vec<f32> = c.iter().map(|&x| x + 0.5 * rng.gauss()).collect();
                prepare(metric, &mut v);
                v
            })
            .collect()
    }

    fn arena_of(vs: &[Vec<f32>]) -> VectorArena {
        let mut a = VectorArena::new(vs[0].len());
        for v in vs {
            a.push(v);
        }
        a
    }

    fn brute_force(metric: Metric, arena: &VectorArena, q: &[f32], k: usize, accept: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let mut all: Vec<Cand> = (0..arena.len() as u32)
            .filter(|&s| accept(s))
            .map(|s| Cand { d: distance(metric, q, arena.get(s)), id: s })
            .collect();
        all.sort_unstable();
        all.truncate(k);
        all.into_iter().map(|c| c.id).collect()
    }

    fn recall(
        g: &Hnsw,
        arena: &VectorArena,
        queries: &[Vec<f32>],
        k: usize,
        ef: usize,
        accept: &(dyn Fn(u32) -> bool + Sync),
    ) -> f64 {
        let hits: usize = queries
            .par_iter()
            .map(|q| {
                let got = g.search(q, k, ef, arena, accept);
                assert!(got.len() <= k);
                assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "results not ascending");
                assert!(got.iter().all(|&(_, s)| accept(s)), "non-accepted slot returned");
                let want = brute_force(g.metric(), arena, q, k, accept);
                got.iter().filter(|(_, s)| want.contains(s)).count()
            })
            .sum();
        hits as f64 / (queries.len() * k) as f64
    }

    const TEST_PARAMS: HnswParams = HnswParams { m: 16, ef_construction: 100 };
    const ALL: &dyn Fn(u32) -> bool = &|_| true;
    fn all() -> &'static (dyn Fn(u32) -> bool + Sync) {
        &|_| true
    }

    fn build_sequential(arena: &VectorArena, metric: Metric) -> Hnsw {
        let g = Hnsw::new(TEST_PARAMS, metric);
        for s in 0..arena.len() as u32 {
            g.insert(s, arena);
        }
        g
    }

    #[test]
    fn recall_per_metric_sequential() {
        for (i, metric) in [Metric::Cosine, Metric::L2, Metric::Dot].into_iter().enumerate() {
            let mut rng = Rng(1000 + i as u64);
            let data = uniform_vectors(&mut rng, 5000, 32, metric);
            let queries = uniform_vectors(&mut rng, 200, 32, metric);
            let arena = arena_of(&data);
            let g = build_sequential(&arena, metric);
            assert_eq!(g.len(), 5000);
            assert!(!g.is_empty());
            let r = recall(&g, &arena, &queries, 10, 64, all());
            println!("{metric}: recall@10 {r}");
            assert!(r >= 0.95, "{metric}: recall@10 {r}");
        }
        let _ = ALL;
    }

    #[test]
    fn concurrent_insert_and_search() {
        let metric = Metric::Cosine;
        let mut rng = Rng(77);
        let data = uniform_vectors(&mut rng, 5000, 32, metric);
        let queries = uniform_vectors(&mut rng, 200, 32, metric);
        let arena = arena_of(&data);
        let g = Hnsw::new(TEST_PARAMS, metric);
        let done = AtomicBool::new(false);
        let searches = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            // Searches racing the inserts (on their own thread, not a rayon worker): results stay sorted,
            // accepted and inside the arena.
            scope.spawn(|| {
                let (mut i, mut nonempty) = (0, 0);
                while !done.load(AtOrd::Acquire) {
                    let got = g.search(&queries[i % queries.len()], 10, 32, &arena, &|s| s % 3 != 0);
                    nonempty += usize::from(!got.is_empty());
                    assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
                    assert!(got.iter().all(|&(_, s)| s % 3 != 0 && (s as usize) < arena.len()));
                    i += 1;
                }
                searches.store(nonempty, AtOrd::Release);
            });
            // Shuffled order, all rayon threads.
            let mut order: Vec<u32> = (0..5000).collect();
            let mut r = Rng(5);
            for i in (1..order.len()).rev() {
                order.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
            }
            order.par_iter().for_each(|&s| g.insert(s, &arena));
            // The same slot raced from many threads is inserted once.
            (0..64).into_par_iter().for_each(|_| g.insert(order[0], &arena));
            done.store(true, AtOrd::Release);
        });
        assert_eq!(g.len(), 5000);
        assert!((0..5000).all(|s| g.contains(s)));
        let r = recall(&g, &arena, &queries, 10, 64, all());
        println!("concurrent build: recall@10 {r}, {} non-empty racing searches", searches.load(AtOrd::Acquire));
        assert!(r >= 0.95, "concurrent build recall@10 {r}");
    }

    #[test]
    fn accept_predicate_filters_results() {
        let metric = Metric::L2;
        let mut rng = Rng(31);
        let data = uniform_vectors(&mut rng, 5000, 32, metric);
        let queries = uniform_vectors(&mut rng, 200, 32, metric);
        let arena = arena_of(&data);
        let g = Hnsw::new(TEST_PARAMS, metric);
        (0..5000u32).into_par_iter().for_each(|s| g.insert(s, &arena));
        let even: &(dyn Fn(u32) -> bool + Sync) = &|s| s % 2 == 0;
        let r = recall(&g, &arena, &queries, 10, 64, even);
        println!("filtered: recall@10 {r}");
        assert!(r >= 0.9, "filtered recall@10 {r}");
        let none: &(dyn Fn(u32) -> bool + Sync) = &|_| false;
        assert!(g.search(&queries[0], 10, 64, &arena, none).is_empty());
    }

    #[test]
    fn search_cancellable_stops_or_matches_search() {
        let metric = Metric::L2;
        let mut rng = Rng(41);
        let data = uniform_vectors(&mut rng, 3000, 16, metric);
        let arena = arena_of(&data);
        let g = build_sequential(&arena, metric);
        let live = CancelToken::new();
        for q in &data[..50] {
            let want = g.search(q, 10, 200, &arena, all());
            assert_eq!(g.search_cancellable(q, 10, 200, &arena, all(), &live).unwrap(), want);
            assert_eq!(g.search_cancellable(q, 10, 200, &arena, all(), &CancelToken::never()).unwrap(), want);
        }
        live.cancel();
        let r = g.search_cancellable(&data[0], 10, 3000, &arena, all(), &live);
        assert!(matches!(r, Err(Error::Cancelled)));
        // the thread's scratch is left clean for the next search
        assert_eq!(g.search(&data[0], 1, 10, &arena, all()), vec![(0.0, 0)]);
    }

    #[test]
    fn empty_graph_and_degenerate_queries() {
        let arena = arena_of(&[vec![1.0, 0.0]]);
        let g = Hnsw::new(HnswParams::default(), Metric::L2);
        assert!(g.is_empty());
        assert_eq!(g.len(), 0);
        assert!(!g.contains(0));
        assert!(g.search(&[1.0, 0.0], 10, 10, &arena, all()).is_empty());
        g.insert(0, &arena);
        assert_eq!(g.search(&[1.0, 0.0], 10, 10, &arena, all()), vec![(0.0, 0)]);
        assert!(g.search(&[1.0, 0.0], 0, 10, &arena, all()).is_empty());
        assert!(g.search(&[1.0], 1, 10, &arena, all()).is_empty(), "wrong dimension");
        // Parameters are clamped.
        let p = Hnsw::new(HnswParams { m: 0, ef_construction: 0 }, Metric::L2).params();
        assert_eq!(p, HnswParams { m: 2, ef_construction: 1 });
    }

    #[test]
    fn k_larger_than_len_returns_all_accepted() {
        let metric = Metric::Dot;
        let mut rng = Rng(3);
        let data = uniform_vectors(&mut rng, 60, 8, metric);
        let arena = arena_of(&data);
        let g = build_sequential(&arena, metric);
        let q = &data[7];
        let got = g.search(q, 100, 10, &arena, all());
        assert_eq!(got.len(), 60);
        let want = brute_force(metric, &arena, q, 100, ALL);
        assert_eq!(got.iter().map(|x| x.1).collect::<Vec<_>>(), want);
        let odd = g.search(q, 100, 10, &arena, &|s| s % 2 == 1);
        assert_eq!(odd.len(), 30);
        assert!(odd.iter().all(|&(_, s)| s % 2 == 1));
    }

    #[test]
    fn sparse_out_of_order_slots_and_double_insert() {
        let metric = Metric::Cosine;
        let mut rng = Rng(11);
        let data = uniform_vectors(&mut rng, 3000, 16, metric);
        let arena = arena_of(&data);
        let g = Hnsw::new(TEST_PARAMS, metric);
        // Only multiples of 3, descending, crossing several segments.
        for s in (0..3000u32).rev().filter(|s| s % 3 == 0) {
            g.insert(s, &arena);
        }
        g.insert(0, &arena);
        g.insert(2997, &arena);
        assert_eq!(g.len(), 1000);
        assert!(g.contains(2997) && !g.contains(2998) && !g.contains(1_000_000));
        let got = g.search(&data[1], 50, 64, &arena, all());
        assert_eq!(got.len(), 50);
        assert!(got.iter().all(|&(_, s)| s % 3 == 0));
        let want = brute_force(metric, &arena, &data[1], 10, &|s| s % 3 == 0);
        let hits = got[..10].iter().filter(|(_, s)| want.contains(s)).count();
        assert!(hits >= 8, "sparse recall {hits}/10");
    }

    #[test]
    fn segment_layout() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(3071), (1, 2047));
        assert_eq!(locate(3072), (2, 0));
        let (seg, off) = locate(u32::MAX);
        assert!(seg < SEGMENTS && off < segment_capacity(seg));
        // Levels are deterministic and geometric-ish.
        let g = Hnsw::new(HnswParams::default(), Metric::L2);
        let levels: Vec<usize> = (0..100_000).map(|s| g.random_level(s)).collect();
        assert_eq!(levels, (0..100_000).map(|s| g.random_level(s)).collect::<Vec<_>>());
        let upper = levels.iter().filter(|&&l| l >= 1).count();
        assert!((5000..7500).contains(&upper), "{upper} nodes above layer 0 (expect ~1/16)");
    }

    fn serialize(g: &Hnsw) -> Vec<u8> {
        let mut buf = Vec::new();
        g.write_to(&mut buf).unwrap();
        buf
    }

    #[test]
    fn write_read_round_trip() {
        let metric = Metric::Cosine;
        let mut rng = Rng(8);
        let data = uniform_vectors(&mut rng, 2000, 24, metric);
        let queries = uniform_vectors(&mut rng, 50, 24, metric);
        let arena = arena_of(&data);
        let g = Hnsw::new(HnswParams { m: 8, ef_construction: 64 }, metric);
        (0..2000u32).into_par_iter().filter(|s| s % 5 != 1).for_each(|s| g.insert(s, &arena));
        let bytes = serialize(&g);
        let h = Hnsw::read_from(&mut bytes.as_slice(), metric).unwrap();
        assert_eq!(h.len(), g.len());
        assert_eq!(h.params(), g.params());
        assert!(!h.contains(1) && h.contains(2));
        for q in &queries {
            assert_eq!(g.search(q, 10, 40, &arena, all()), h.search(q, 10, 40, &arena, all()));
        }
        assert_eq!(serialize(&h), bytes, "re-serialisation is byte-identical");
        // Reading consumes exactly the written bytes.
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(b"tail");
        let mut r = with_tail.as_slice();
        Hnsw::read_from(&mut r, metric).unwrap();
        assert_eq!(r, b"tail");
        // The loaded graph keeps accepting inserts.
        h.insert(1, &arena);
        assert!(h.contains(1));
        // Empty graph round trip.
        let e = Hnsw::new(HnswParams::default(), Metric::L2);
        let e2 = Hnsw::read_from(&mut serialize(&e).as_slice(), Metric::L2).unwrap();
        assert!(e2.is_empty());
        assert!(e2.search(&data[0], 5, 5, &arena, all()).is_empty());
    }

    #[test]
    fn corrupt_input_is_rejected_without_panic() {
        let metric = Metric::L2;
        let mut rng = Rng(9);
        let data = uniform_vectors(&mut rng, 300, 8, metric);
        let arena = arena_of(&data);
        let g = Hnsw::new(HnswParams { m: 4, ef_construction: 16 }, metric);
        for s in 0..300u32 {
            g.insert(s, &arena);
        }
        let bytes = serialize(&g);
        for len in 0..bytes.len() {
            let err = Hnsw::read_from(&mut &bytes[..len], metric).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "truncated at {len}: {err}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            assert!(Hnsw::read_from(&mut b.as_slice(), metric).is_err(), "bit flip at byte {i} accepted");
        }
        for seed in 1..200u64 {
            let mut r = Rng(seed);
            let len = (r.next_u64() % 4096) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| r.next_u64() as u8).collect();
            if seed % 2 == 0 && junk.len() >= 12 {
                junk[..8].copy_from_slice(&MAGIC);
                junk[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
            }
            assert!(Hnsw::read_from(&mut junk.as_slice(), metric).is_err());
        }
        assert!(matches!(Hnsw::read_from(&mut bytes.as_slice(), Metric::Cosine), Err(Error::Corrupt(_))));
        let mut wrong_version = bytes.clone();
        wrong_version[8] = 99;
        let err = Hnsw::read_from(&mut wrong_version.as_slice(), metric).unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    /// User + system CPU seconds of this process (Linux; NaN elsewhere).
    fn cpu_seconds() -> f64 {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return f64::NAN;
        };
        let Some(rest) = stat.rsplit(')').next() else {
            return f64::NAN;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
        (ticks(11) + ticks(12)) / 100.0 // utime, stime (fields 14, 15) in USER_HZ = 100
    }

    /// Hand-run timing (never an assertion): `SHOAL_HNSW_BENCH=1 cargo test --release -p shoal-core --lib
    /// hnsw::tests::bench -- --nocapture`. `SHOAL_HNSW_BENCH_N` overrides the 100k points.
    #[test]
    fn bench() {
        if std::env::var("SHOAL_HNSW_BENCH").is_err() {
            return;
        }
        let n: usize = std::env::var("SHOAL_HNSW_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
        let dim = 128;
        let metric = Metric::Cosine;
        println!("kernel={} threads={}", crate::distance::kernel_name(), rayon::current_num_threads());
        let kinds = std::env::var("SHOAL_HNSW_BENCH_KIND").unwrap_or_else(|_| "clustered,uniform".into());
        for kind in kinds.split(',') {
            let mut rng = Rng(2024);
            let (data, queries) = if kind == "clustered" {
                let all = clustered_vectors(&mut rng, n + 10_000, dim, 1000, metric);
                let (d, q) = all.split_at(n);
                (d.to_vec(), q.to_vec())
            } else {
                (uniform_vectors(&mut rng, n, dim, metric), uniform_vectors(&mut rng, 10_000, dim, metric))
            };
            let arena = arena_of(&data);
            let g = Hnsw::new(HnswParams { m: 16, ef_construction: 200 }, metric);
            let (t, c) = (Instant::now(), cpu_seconds());
            (0..n as u32).into_par_iter().for_each(|s| g.insert(s, &arena));
            let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
            println!(
                "[{kind}] build {n} x {dim}: {secs:.2}s wall = {:.0} vectors/s; {cpu:.2} cpu-s = {:.0} vectors/cpu-s",
                n as f64 / secs,
                n as f64 / cpu
            );
            let truth: Vec<Vec<u32>> =
                queries[..500].par_iter().map(|q| brute_force(metric, &arena, q, 10, ALL)).collect();
            for ef in [10, 16, 32, 48, 64, 100, 128, 200] {
                let (t, c) = (Instant::now(), cpu_seconds());
                let res: Vec<Vec<(f32, u32)>> =
                    queries.par_iter().map(|q| g.search(q, 10, ef, &arena, all())).collect();
                let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
                let per_cpu = queries.len() as f64 / (cpu_seconds() - c);
                let hits: usize =
                    res[..500].iter().zip(&truth).map(|(r, t)| r.iter().filter(|(_, s)| t.contains(s)).count()).sum();
                println!(
                    "[{kind}] ef={ef:4} recall@10={:.4} qps={qps:.0} (wall) {per_cpu:.0} (per cpu-s)",
                    hits as f64 / 5000.0
                );
            }
        }
    }
}
