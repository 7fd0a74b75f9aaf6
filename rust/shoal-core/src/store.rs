//! The shard store: the state machine of one shard replica (DESIGN §2, §3, §6).
//!
//! Points live in slots: a [`VectorArena`] row plus per-slot id, version, payload and a live flag, and a
//! map from id to its live slot. An upsert of an existing id takes a *new* slot and marks the old one dead
//! (the HNSW graph keeps dead slots for navigation; searches never return them). Slots are never reused,
//! so slot numbers are stable handles for the graph.
//!
//! Writes ([`ShardStore::apply`]) are deterministic and last-writer-wins per id on [`Version`]: a write
//! whose version is not newer than what the store holds for that id is skipped, so retried and re-ordered
//! writes are idempotent. Deletes leave versioned tombstones ([`ShardStore::gc_tombstones`] drops old
//! ones). Payload patches merge per key as a LWW-map: each patched key remembers the version that set it.
//!
//! Indexing is separate from writing: `apply` only appends; [`ShardStore::index_step`] moves pending slots
//! into the HNSW graph (in slot order, under the read lock, so searches continue). Slots at or above the
//! *indexed watermark* are scanned exactly at search time and merged with the graph's results, so a point is
//! searchable as soon as `apply` returns, and no point is returned twice.
//!
//! Access paths per search call, chosen by [`crate::cost::choose_path`] from the shard's shape and the
//! filter's sampled selectivity ([`ShardStore::plan`] reports the choice): exact scan (flat index, small
//! shards, or a filter matching few points) or HNSW with an accept predicate (live, below the watermark,
//! matching the filter). A path that finds fewer than `k` results while more candidates exist falls back to
//! an exact scan, so `k` is always honoured. [`ShardStore::search_cancellable`] polls a [`CancelToken`]
//! between blocks of work and stops with [`Error::Cancelled`].
//!
//! Snapshots ([`ShardStore::write_snapshot`]) are point-in-time, versioned, CRC32C-protected and include
//! the graph; reading one validates everything and reports [`Error::Corrupt`] instead of panicking.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::arena::{VectorArena, VectorStorage};
use crate::cancel::CancelToken;
use crate::cost::{AccessPath, ShardShape, choose_path, exact_cost, graph_cost};
use crate::dedup::{DedupTable, WriteId};
use crate::distance;
use crate::filter::Filter;
use crate::hlc::Version;
use crate::hnsw::{Hnsw, HnswParams};
use crate::payload_index::{IndexKind, PayloadIndexes};
use crate::quantizer::{Quantization, Rescore};
use crate::{Error, IdType, IndexConfig, Metric, PointId, Result, ShardConfig};

/// A JSON object payload.
pub type Payload = Map<String, Value>;

pub use crate::cost::{DEFAULT_EF, EXACT_SCAN_MAX};
/// Slots per block when collecting live or matching slots (one cancellation poll per block).
const SCAN_BLOCK: usize = 1_024;
/// Queries scanned together over one block of points (the block is reused from cache for each).
const QUERY_GROUP: usize = 8;
/// Bytes of vectors per scan block.
const BLOCK_BYTES: usize = 64 * 1024;
/// Smallest candidate chunk worth a separate rayon task in an exact scan.
const MIN_SCAN_CHUNK: usize = 4_096;
/// Live slots sampled to estimate how many points a filter matches.
const FILTER_SAMPLE: usize = 1_024;
/// Slots sampled by [`ShardStore::search_cost`]: it only sizes the work (inline or on the pool), and the
/// search samples again with [`FILTER_SAMPLE`] to choose its path, so a coarse estimate is cheaper.
const COST_FILTER_SAMPLE: usize = 64;
/// A batch evaluates its filter once over all points (instead of lazily on visited nodes) when
/// `queries * ef * LAZY_FILTER_VISITS_PER_EF >= live points`.
const LAZY_FILTER_VISITS_PER_EF: usize = 16;
/// The payload of points without one, for filter evaluation.
static EMPTY_PAYLOAD: std::sync::LazyLock<Payload> = std::sync::LazyLock::new(Map::new);
/// Slots inserted into the graph per rayon thread under one read-lock acquisition in `index_step`.
const INDEX_CHUNK_PER_THREAD: usize = 64;

/// Snapshot magic bytes.
const SNAPSHOT_MAGIC: &[u8; 8] = b"SHOALSS\x01";
/// Snapshot format version; bumped on any layout change. Format 1 (no dedup table) is still read.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// One write batch: a Raft log entry of a shard. Applied in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteBatch {
    /// The operations, applied first to last.
    pub ops: Vec<WriteOp>,
    /// The logical write this batch belongs to, the same on every retry (`None`: not deduplicated).
    pub write_id: Option<WriteId>,
}

impl WriteBatch {
    /// A batch of `ops` without a write id.
    pub fn new(ops: Vec<WriteOp>) -> Self {
        WriteBatch { ops, write_id: None }
    }
}

/// One write operation.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert or replace a point (vector and whole payload).
    Upsert {
        /// The point.
        id: PointId,
        /// Its new version; applied only if newer than the point's version and its tombstone.
        version: Version,
        /// `dim` finite components, as sent (the store prepares/normalises its own copy).
        vector: Vec<f32>,
        /// The whole new payload (`None`: no payload).
        payload: Option<Payload>,
    },
    /// Delete a point, leaving a tombstone at `version`.
    Delete {
        /// The point.
        id: PointId,
        /// Version of the delete; applied only if newer than the point's (or tombstone's) version.
        version: Version,
    },
    /// Merge keys into the payload of a live point (per-key last-writer-wins).
    PatchPayload {
        /// The point; a missing or deleted point is left alone.
        id: PointId,
        /// Version of the patch; each key is set only if newer than the version that last set it.
        version: Version,
        /// Keys to set (a `null` value sets JSON null; keys are never removed by a patch).
        patch: Payload,
    },
}

/// What [`ShardStore::apply`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Ops that changed the store.
    pub applied: usize,
    /// Ops skipped because the store already held an equal or newer version (retries, re-orders).
    pub skipped_stale: usize,
    /// Patches skipped because the point does not exist (never written, or deleted).
    pub skipped_missing: usize,
    /// Upserts skipped because the vector does not have `dim` components (a caller bug; never happens
    /// for validated batches).
    pub skipped_invalid: usize,
    /// The batch's write id had been applied already ([`ShardStore::apply_logged`]): nothing changed, and
    /// `applied` is what the original did.
    pub duplicate: bool,
    /// The batch was stamped too long before the shard's newest write to be told apart from a duplicate
    /// ([`ShardStore::apply_logged`]): nothing changed.
    pub expired: bool,
}

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

/// Sizes of a store, for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Live points.
    pub live: usize,
    /// Slots in the arena, live and dead.
    pub slots: usize,
    /// Tombstones held.
    pub tombstones: usize,
    /// Live points not yet in the graph (0 for flat).
    pub unindexed: usize,
    /// Bytes of vector data in the arena (live and dead slots).
    pub vector_bytes: usize,
}

/// Per-slot metadata. Dead slots keep only their vector (for graph navigation): id reset, payload dropped.
#[derive(Debug, Clone)]
struct Slot {
    /// The point id while live; `PointId::Int(0)` once dead.
    id: PointId,
    /// Version of the upsert that created this slot.
    version: Version,
    /// The payload while live; shared (copy-on-write) so a snapshot capture copies slots cheaply.
    payload: Option<Arc<Payload>>,
    /// Versions of keys set by patches newer than `version`; `None` until the first patch.
    #[allow(clippy::box_collection)]
    // boxed: 8 bytes per slot instead of 48; most slots are never patched
    key_versions: Option<Box<HashMap<String, Version>>>,
    /// Content hash of the live point (id, version, vector, payload; see `slot_hash`); 0 once dead.
    hash: u64,
}

/// Everything guarded by the store's lock.
struct Inner {
    /// Vectors, one row per slot, prepared for the metric (normalised for cosine).
    arena: VectorArena,
    /// Metadata per slot; `slots.len() == arena.len() == alive.len()`.
    slots: Vec<Slot>,
    /// Live flag per slot; exactly the slots that `ids` points to are live.
    alive: Vec<bool>,
    /// Live id -> its slot.
    ids: HashMap<PointId, u32>,
    /// Deleted id -> version of the delete; never holds a live id.
    tombstones: HashMap<PointId, Version>,
    /// Largest version of any op seen by `apply` (or restored), for seeding a node's clock. Under
    /// `apply_logged` it is the version of the last applied batch: shard time.
    max_version: Version,
    /// Write ids applied by `apply_logged` within the dedup window of `max_version`.
    dedup: DedupTable,
    /// Bumped by every `apply`: equal generations mean the same live points.
    generation: u64,
    /// Wrapping sum of the live slots' `hash`: an order-independent content digest kept up to date at apply
    /// time (anti-entropy compares it across replicas at equal applied indexes).
    content: u64,
    /// Live slots in id order as of `generation` (`None` after a write until a scroll rebuilds it).
    id_order: Mutex<Option<Arc<Vec<u32>>>>,
    /// The generation the previous scroll page saw: a page that sees the same one builds `id_order`.
    scrolled_generation: AtomicU64,
    /// Payload indexes; each covers exactly the live slots below its build edge (kept so at apply time).
    pindex: PayloadIndexes,
}

/// The store of one shard replica. `Send + Sync`; share it behind an `Arc`.
pub struct ShardStore {
    /// The collection's shard configuration; fixed.
    config: ShardConfig,
    /// Points, tombstones and the graph. Writers (`apply`) hold it briefly; searches and index steps read.
    inner: RwLock<Inner>,
    /// The graph (HNSW config only). Holds slots below the watermark that were live when indexed. Outside
    /// `inner`: writes never touch it, so a snapshot serialises it holding `index_lock` only.
    hnsw: Option<Hnsw>,
    /// Serialises graph mutation (`index_step`) against itself and against snapshot writing.
    index_lock: Arc<Mutex<()>>,
    /// Indexed watermark: every slot below it is settled (in the graph, or was dead when reached).
    /// Only advanced under `index_lock` while holding the read lock; never above `slots.len()`.
    indexed: AtomicUsize,
}

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

impl fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardStore").field("config", &self.config).field("stats", &self.stats()).finish()
    }
}

/// A candidate result, ordered by distance then slot (a total order, so results are deterministic).
#[derive(Debug, Clone, Copy)]
struct Cand {
    /// Distance to the query.
    d: f32,
    /// Slot of the point.
    s: u32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        self.d.total_cmp(&o.d).then(self.s.cmp(&o.s))
    }
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

impl Inner {
    fn new(config: &ShardConfig, storage: VectorStorage) -> Self {
        Inner {
            arena: VectorArena::create(config.dim, config.index.quantization(), storage),
            slots: Vec::new(),
            alive: Vec::new(),
            ids: HashMap::new(),
            tombstones: HashMap::new(),
            max_version: Version::ZERO,
            dedup: DedupTable::new(),
            generation: 0,
            content: 0,
            id_order: Mutex::new(None),
            scrolled_generation: AtomicU64::new(u64::MAX),
            pindex: PayloadIndexes::default(),
        }
    }

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

    /// Whether an upsert or delete of `id` at `version` is stale.
    fn is_stale(&self, id: &PointId, version: Version) -> bool {
        match self.ids.get(id) {
            Some(&s) => version <= self.slots[s as usize].version,
            None => self.tombstones.get(id).is_some_and(|&t| version <= t),
        }
    }

    /// Marks a live slot dead and returns its metadata (id, payload, key versions).
    fn kill(&mut self, slot: u32) -> Slot {
        let s = &mut self.slots[slot as usize];
        self.pindex.on_remove(slot, s.payload.as_deref());
        self.alive[slot as usize] = false;
        self.content = self.content.wrapping_sub(s.hash);
        Slot {
            id: std::mem::replace(&mut s.id, PointId::Int(0)),
            version: s.version,
            payload: s.payload.take(),
            key_versions: s.key_versions.take(),
            hash: std::mem::take(&mut s.hash),
        }
    }

    /// Applies a non-stale upsert with an owned id and payload.
    fn upsert(
        &mut self,
        metric: Metric,
        id: PointId,
        version: Version,
        vector: &[f32],
        mut payload: Option<Payload>,
        scratch: &mut Vec<f32>,
    ) {
        let mut key_versions = None;
        if let Some(&old) = self.ids.get(&id) {
            let prev = self.kill(old);
            // LWW-map: keys patched at versions newer than this upsert survive it.
            if let Some(kv) = prev.key_versions {
                let newer: HashMap<String, Version> = kv.into_iter().filter(|(_, v)| *v > version).collect();
                if !newer.is_empty() {
                    let old_payload: Arc<Payload> = prev.payload.unwrap_or_default();
                    let p = payload.get_or_insert_with(Map::new);
                    for k in newer.keys() {
                        if let Some(v) = old_payload.get(k) {
                            p.insert(k.clone(), v.clone());
                        }
                    }
                    key_versions = Some(Box::new(newer));
                }
            }
        } else {
            self.tombstones.remove(&id);
        }
        let slot = if metric == Metric::Cosine {
            scratch.clear();
            scratch.extend_from_slice(vector);
            distance::prepare(metric, scratch);
            self.arena.push(scratch)
        } else {
            self.arena.push(vector)
        };
        debug_assert_eq!(slot as usize, self.slots.len());
        match self.ids.get_mut(&id) {
            Some(s) => *s = slot,
            None => {
                self.ids.insert(id.clone(), slot);
            }
        }
        let hash = slot_hash(&id, version, self.arena.get(slot), payload.as_ref());
        self.content = self.content.wrapping_add(hash);
        self.pindex.on_add(slot, payload.as_ref());
        self.slots.push(Slot { id, version, payload: payload.map(Arc::new), key_versions, hash });
        self.alive.push(true);
    }

    /// Applies a delete; returns false when stale.
    fn delete(&mut self, id: &PointId, version: Version) -> bool {
        if self.is_stale(id, version) {
            return false;
        }
        if let Some(slot) = self.ids.remove(id) {
            let prev = self.kill(slot);
            self.tombstones.insert(prev.id, version);
        } else {
            self.tombstones.insert(id.clone(), version);
        }
        true
    }

    /// Applies a payload patch to a live point.
    fn patch(&mut self, id: &PointId, version: Version, patch: &Payload, out: &mut ApplyOutcome) {
        let Some(&slot) = self.ids.get(id) else {
            out.skipped_missing += 1;
            return;
        };
        let s = &mut self.slots[slot as usize];
        if version <= s.version {
            out.skipped_stale += 1;
            return;
        }
        let base = s.version;
        let newer = |k: &String| version > s.key_versions.as_ref().and_then(|kv| kv.get(k)).copied().unwrap_or(base);
        if !patch.keys().any(newer) {
            // Nothing wins (an empty patch, or every key already set by a newer patch): no change at all,
            // so replicas that see this op in any order stay identical.
            out.skipped_stale += 1;
            return;
        }
        if !self.pindex.is_empty() {
            self.pindex.on_remove(slot, s.payload.as_deref());
        }
        let kv = s.key_versions.get_or_insert_with(Default::default);
        let payload = Arc::make_mut(s.payload.get_or_insert_with(Default::default));
        for (k, v) in patch {
            if version > kv.get(k).copied().unwrap_or(base) {
                kv.insert(k.clone(), version);
                payload.insert(k.clone(), v.clone());
            }
        }
        let s = &self.slots[slot as usize];
        if !self.pindex.is_empty() {
            self.pindex.on_readd(slot, s.payload.as_deref());
        }
        let hash = slot_hash(&s.id, s.version, self.arena.get(slot), s.payload.as_deref());
        self.content = self.content.wrapping_sub(s.hash).wrapping_add(hash);
        self.slots[slot as usize].hash = hash;
        out.applied += 1;
    }

    /// Applies one op given by reference (cloning what an upsert keeps).
    fn apply_ref(&mut self, metric: Metric, dim: usize, op: &WriteOp, scratch: &mut Vec<f32>, out: &mut ApplyOutcome) {
        let (id, version) = op_key(op);
        self.max_version = self.max_version.max(version);
        match op {
            WriteOp::Upsert { vector, payload, .. } => {
                if vector.len() != dim {
                    out.skipped_invalid += 1;
                } else if self.is_stale(id, version) {
                    out.skipped_stale += 1;
                } else {
                    self.upsert(metric, id.clone(), version, vector, payload.clone(), scratch);
                    out.applied += 1;
                }
            }
            WriteOp::Delete { .. } => {
                if self.delete(id, version) {
                    out.applied += 1;
                } else {
                    out.skipped_stale += 1;
                }
            }
            WriteOp::PatchPayload { patch, .. } => self.patch(id, version, patch, out),
        }
    }

    fn live(&self) -> usize {
        self.ids.len()
    }

    /// The payload of `slot`, or an empty object (what filters see for a point without payload).
    fn payload_or_empty(&self, slot: u32) -> &Payload {
        self.slots[slot as usize].payload.as_deref().unwrap_or(&EMPTY_PAYLOAD)
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

/// Where a store for `config` keeps its vectors: `vector_dir` for an `on_disk` collection when there is one.
fn storage_of(config: &ShardConfig, vector_dir: Option<PathBuf>) -> VectorStorage {
    match vector_dir {
        Some(d) if config.on_disk => VectorStorage::Disk(d),
        _ => VectorStorage::Memory,
    }
}

fn new_graph(config: &ShardConfig) -> Option<Hnsw> {
    match config.index {
        IndexConfig::Flat => None,
        IndexConfig::Hnsw { m, ef_construction, .. } => {
            Some(Hnsw::new(HnswParams { m, ef_construction }, config.metric))
        }
    }
}

/// Which owned-or-borrowed form an op arrives in.
enum OpSrc<'a> {
    Borrowed(&'a WriteOp),
    Owned(WriteOp),
}

impl ShardStore {
    /// An empty store keeping its vectors in memory.
    pub fn new(config: ShardConfig) -> Self {
        Self::with_vector_dir(config, None)
    }

    /// An empty store; an `on_disk` collection's vectors go to a scratch file in `vector_dir` (memory when
    /// `None`; see [`VectorArena`]).
    pub fn with_vector_dir(config: ShardConfig, vector_dir: Option<PathBuf>) -> Self {
        let inner = Inner::new(&config, storage_of(&config, vector_dir));
        ShardStore {
            hnsw: new_graph(&config),
            config,
            inner: RwLock::new(inner),
            index_lock: Arc::new(Mutex::new(())),
            indexed: AtomicUsize::new(0),
        }
    }

    /// The shard configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// Applies a batch, op by op, last-writer-wins per id. Deterministic: replicas applying the same
    /// batches in the same order end identical. Holds the write lock for the batch; no indexing here.
    pub fn apply(&self, batch: &WriteBatch) -> ApplyOutcome {
        self.apply_ops(batch.ops.iter().map(OpSrc::Borrowed), &batch.ops)
    }

    /// Like [`ShardStore::apply`], moving payloads out of the batch instead of cloning them.
    pub fn apply_owned(&self, batch: WriteBatch) -> ApplyOutcome {
        let upserts = count_upserts(&batch.ops);
        self.apply_counted(batch.ops.into_iter().map(OpSrc::Owned), upserts)
    }

    /// Applies a batch committed to the shard's Raft log, in log order (the state machine's entry point):
    ///
    /// - a batch whose write id was applied already changes nothing and reports the original's `applied`
    ///   (`duplicate`): a retry, through whichever coordinator, never writes twice (see [`crate::dedup`]);
    /// - a batch stamped more than the dedup window before the shard's newest version changes nothing
    ///   (`expired`): it could be a duplicate whose original was forgotten;
    /// - otherwise every op is applied at `max(stamped, newest + 1)`, so a later log entry always wins over
    ///   an earlier one whatever the coordinators' clocks say (the log order is the linearization order),
    ///   and the write id is remembered.
    ///
    /// Deterministic: replicas applying the same log end identical, dedup table included.
    pub fn apply_logged(&self, batch: WriteBatch) -> ApplyOutcome {
        let Some(stamped) = batch.ops.first().map(|op| op_key(op).1) else {
            return ApplyOutcome::default();
        };
        {
            let g = self.inner.read();
            if let Some(id) = batch.write_id
                && let Some(prev) = g.dedup.get(id)
            {
                return ApplyOutcome { applied: prev.applied as usize, duplicate: true, ..Default::default() };
            }
            if batch.write_id.is_some() && DedupTable::is_expired(stamped.wall_ms(), g.max_version.wall_ms()) {
                return ApplyOutcome { expired: true, ..Default::default() };
            }
        }
        let mut ops = batch.ops;
        {
            // Only this method and `apply*` write; the Raft state machine applies one entry at a time, so the
            // newest version read here is still the newest when the ops are applied below.
            let newest = self.inner.read().max_version;
            if stamped <= newest {
                let Some(hlc) = newest.hlc.checked_add(1) else {
                    return ApplyOutcome { expired: true, ..Default::default() };
                };
                let v = Version::new(hlc, stamped.node);
                for op in &mut ops {
                    match op {
                        WriteOp::Upsert { version, .. }
                        | WriteOp::Delete { version, .. }
                        | WriteOp::PatchPayload { version, .. } => *version = v,
                    }
                }
            }
        }
        let out = self.apply_owned(WriteBatch::new(ops));
        if let Some(id) = batch.write_id {
            let mut g = self.inner.write();
            let now = g.max_version.wall_ms();
            g.dedup.expire(now);
            g.dedup.record(id, now, out.applied as u64);
        }
        out
    }

    /// Number of write ids the dedup table remembers.
    pub fn dedup_len(&self) -> usize {
        self.inner.read().dedup.len()
    }

    fn apply_ops<'a>(&self, ops: impl Iterator<Item = OpSrc<'a>>, all: &[WriteOp]) -> ApplyOutcome {
        self.apply_counted(ops, count_upserts(all))
    }

    fn apply_counted<'a>(&self, ops: impl Iterator<Item = OpSrc<'a>>, upserts: usize) -> ApplyOutcome {
        let metric = self.config.metric;
        let dim = self.config.dim;
        let mut out = ApplyOutcome::default();
        let mut scratch = Vec::new();
        let mut g = self.inner.write();
        g.generation += 1;
        *g.id_order.get_mut() = None;
        g.arena.reserve(upserts);
        g.slots.reserve(upserts);
        g.alive.reserve(upserts);
        for op in ops {
            match op {
                OpSrc::Owned(WriteOp::Upsert { id, version, vector, payload }) => {
                    g.max_version = g.max_version.max(version);
                    if vector.len() != dim {
                        out.skipped_invalid += 1;
                    } else if g.is_stale(&id, version) {
                        out.skipped_stale += 1;
                    } else {
                        g.upsert(metric, id, version, &vector, payload, &mut scratch);
                        out.applied += 1;
                    }
                }
                OpSrc::Owned(op) => g.apply_ref(metric, dim, &op, &mut scratch, &mut out),
                OpSrc::Borrowed(op) => g.apply_ref(metric, dim, op, &mut scratch, &mut out),
            }
        }
        out
    }

    /// Drops tombstones older than `older_than`; returns how many were dropped. After this, an upsert of
    /// such an id older than its delete would be applied again, so call it only with a bound older than any
    /// write still in flight (the retention window).
    pub fn gc_tombstones(&self, older_than: Version) -> usize {
        let mut g = self.inner.write();
        let before = g.tombstones.len();
        g.tombstones.retain(|_, v| *v >= older_than);
        before - g.tombstones.len()
    }

    /// The largest version applied or restored (`Version::ZERO` for an empty store). A node observes it into
    /// its clock at startup.
    pub fn max_version(&self) -> Version {
        self.inner.read().max_version
    }

    /// Number of live points.
    pub fn count(&self) -> usize {
        self.inner.read().live()
    }

    /// Number of live points that matches `filter`.
    pub fn count_matching(&self, filter: &Filter) -> usize {
        // Recursive for the reason given in `search_cancellable`: this parallel loop may run on rayon workers.
        let g = self.inner.read_recursive();
        if let Some(slots) = indexed_matches(&g, filter) {
            return slots.len() as usize;
        }
        g.ids.par_iter().filter(|&(_, &s)| filter.matches(g.payload_or_empty(s))).count()
    }

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

    fn unindexed_locked(&self, g: &Inner) -> usize {
        if self.hnsw.is_none() {
            return 0;
        }
        let w = self.indexed.load(Ordering::Acquire).min(g.alive.len());
        g.alive[w..].iter().filter(|&&a| a).count()
    }

    /// Sizes of the store.
    pub fn stats(&self) -> StoreStats {
        let g = self.inner.read();
        StoreStats {
            live: g.live(),
            slots: g.slots.len(),
            tombstones: g.tombstones.len(),
            unindexed: self.unindexed_locked(&g),
            vector_bytes: g.arena.vector_bytes(),
        }
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

    /// Content digest of the live points (id, version, vector, payload of each), maintained at apply time:
    /// O(1), and independent of slot layout, so replicas holding the same points have equal digests however
    /// they got them (log replay, snapshot install, reopen).
    pub fn digest(&self) -> u64 {
        let g = self.inner.read();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&g.content.to_le_bytes());
        b[8..].copy_from_slice(&(g.ids.len() as u64).to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&b)
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
                    let s = &g.slots[c.s as usize];
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
                    .map(|(d, s)| Cand { d, s })
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
                    t.push(Cand { d: distance::distance(metric, q, g.arena.get(s)), s });
                }
            }
        }
        Ok(tops.into_iter().map(TopK::into_sorted).collect())
    }
}

fn count_upserts(ops: &[WriteOp]) -> usize {
    ops.iter().filter(|o| matches!(o, WriteOp::Upsert { .. })).count()
}

/// The content hash of a live point: id, version, vector (as stored) and payload, with xxh3. Payload values
/// are hashed structurally (type tags, lengths, object keys in map order), so equal payloads hash equal.
/// The live slots matching `f` when the payload indexes can tell (evaluating the filter only on the
/// candidates of a partial answer); `None` when no indexed field is involved.
fn indexed_matches(g: &Inner, f: &Filter) -> Option<roaring::RoaringBitmap> {
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

fn slot_hash(id: &PointId, version: Version, vector: &[f32], payload: Option<&Payload>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut head = Vec::with_capacity(32);
    put_id(&mut head, id);
    put_version(&mut head, version);
    h.update(&head);
    for x in vector {
        h.update(&x.to_bits().to_le_bytes());
    }
    match payload {
        None => h.update(&[0]),
        Some(p) => {
            h.update(&[1]);
            hash_object(p, &mut h);
        }
    }
    h.digest()
}

fn hash_object(m: &Payload, h: &mut xxhash_rust::xxh3::Xxh3) {
    h.update(&(m.len() as u64).to_le_bytes());
    for (k, v) in m {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        hash_value(v, h);
    }
}

fn hash_value(v: &Value, h: &mut xxhash_rust::xxh3::Xxh3) {
    match v {
        Value::Null => h.update(&[0]),
        Value::Bool(b) => h.update(&[1, u8::from(*b)]),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                h.update(&[2]);
                h.update(&i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                h.update(&[3]);
                h.update(&u.to_le_bytes());
            } else {
                h.update(&[4]);
                h.update(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            h.update(&[5]);
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        Value::Array(a) => {
            h.update(&[6]);
            h.update(&(a.len() as u64).to_le_bytes());
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(m) => {
            h.update(&[7]);
            hash_object(m, h);
        }
    }
}

fn op_key(op: &WriteOp) -> (&PointId, Version) {
    match op {
        WriteOp::Upsert { id, version, .. }
        | WriteOp::Delete { id, version }
        | WriteOp::PatchPayload { id, version, .. } => (id, *version),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Snapshots
//
// Layout (little-endian):
//   header   magic "SHOALSS\x01" (8 bytes), format u32 (= SNAPSHOT_FORMAT)
//   META     u64 length, then: dim u32, metric u8, id_type u8, slots u64, live u64, indexed watermark u64,
//            max_version, one record per slot (u8 live flag; live: id, version, payload, key versions),
//            tombstones u64 count + (id, version) sorted by id,
//            (format >= 2) dedup entries u64 count + (write id 16 bytes, ms u64, applied u64) in apply order
//   VECTORS  u64 length (= slots * dim * 4), f32 rows
//   GRAPH    u8 present; if present u64 length + the HNSW's own serialisation
//   trailer  CRC32C u32 of every byte between header and trailer
// ids: u8 tag (0 int: u64; 1 str: u32 length + UTF-8); version: u64 hlc + u32 node; payload: u8 present +
// u32 length + JSON text; key versions: u32 count + (u32 length + key, version) sorted by key.
// ---------------------------------------------------------------------------------------------------------

fn put_u8(b: &mut Vec<u8>, v: u8) {
    b.push(v);
}
fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    put_u32(b, v.len() as u32);
    b.extend_from_slice(v);
}
fn put_version(b: &mut Vec<u8>, v: Version) {
    put_u64(b, v.hlc);
    put_u32(b, v.node);
}
fn put_id(b: &mut Vec<u8>, id: &PointId) {
    match id {
        PointId::Int(v) => {
            put_u8(b, 0);
            put_u64(b, *v);
        }
        PointId::Str(s) => {
            put_u8(b, 1);
            put_bytes(b, s.as_bytes());
        }
    }
}

fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::L2 => 1,
        Metric::Dot => 2,
    }
}
fn id_type_code(t: IdType) -> u8 {
    match t {
        IdType::Int => 0,
        IdType::Str => 1,
    }
}

fn corrupt(msg: impl fmt::Display) -> Error {
    Error::Corrupt(format!("shard snapshot: {msg}"))
}

/// A bounds-checked reader over an in-memory section.
struct Dec<'a> {
    /// The section.
    b: &'a [u8],
    /// Read position, `<= b.len()`.
    p: usize,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() - self.p < n {
            return Err(corrupt("META section ends early"));
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn version(&mut self) -> Result<Version> {
        Ok(Version { hlc: self.u64()?, node: self.u32()? })
    }
    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("string is not UTF-8"))
    }
    fn id(&mut self, id_type: IdType) -> Result<PointId> {
        let id = match self.u8()? {
            0 => PointId::Int(self.u64()?),
            1 => PointId::Str(self.string()?),
            t => return Err(corrupt(format!("unknown id tag {t}"))),
        };
        if id.id_type() != id_type {
            return Err(corrupt(format!("id {id} does not match the collection's id_type {}", id_type.as_str())));
        }
        Ok(id)
    }
}

/// Writes to the inner stream, folding everything written into a CRC32C.
struct CrcWriter<'a> {
    /// Destination.
    w: &'a mut dyn Write,
    /// CRC32C of all bytes written so far.
    crc: u32,
}

impl CrcWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.w.write_all(bytes)?;
        Ok(())
    }
}

/// Reads exactly what is asked from the inner stream, folding it into a CRC32C.
struct CrcReader<'a> {
    /// Source.
    r: &'a mut dyn Read,
    /// CRC32C of all bytes read so far.
    crc: u32,
}

fn read_err(e: std::io::Error, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { corrupt(format!("truncated in {what}")) } else { Error::Io(e) }
}

impl CrcReader<'_> {
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| read_err(e, what))?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Reads `len` bytes, growing the buffer only as data arrives (a corrupt length cannot force a huge
    /// allocation up front).
    fn section(&mut self, len: u64, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..n], what)?;
            out.extend_from_slice(&buf[..n]);
            left -= n as u64;
        }
        Ok(out)
    }
}

impl ShardStore {
    /// Writes a consistent point-in-time snapshot (format in the module source): [`ShardStore::capture`]
    /// then [`StoreCapture::write`].
    pub fn write_snapshot(&self, w: &mut dyn Write) -> Result<()> {
        self.capture()?.write(self, w)
    }

    /// Takes a point-in-time copy of the store's state for a snapshot: slot metadata (payloads are shared,
    /// not copied), tombstones and the dedup table under a short read lock; the graph is kept as it is by
    /// holding the index lock until the capture is written (writes never touch the graph). Writers wait only for the metadata copy;
    /// the serialisation of everything happens later, in [`StoreCapture::write`], without any lock but the
    /// brief ones that read vector rows (rows below the capture's slot count never change).
    pub fn capture(&self) -> Result<StoreCapture> {
        let index_guard = self.index_lock.lock_arc();
        let cap = {
            let g = self.inner.read();
            let n = g.slots.len();
            let slots = g
                .slots
                .iter()
                .zip(&g.alive)
                .map(|(slot, live)| {
                    live.then(|| {
                        let mut kv: Vec<(String, Version)> =
                            slot.key_versions.iter().flat_map(|k| k.iter()).map(|(k, v)| (k.clone(), *v)).collect();
                        kv.sort_unstable();
                        CapturedSlot { id: slot.id.clone(), version: slot.version, payload: slot.payload.clone(), kv }
                    })
                })
                .collect();
            let mut tombstones: Vec<(PointId, Version)> = g.tombstones.iter().map(|(i, v)| (i.clone(), *v)).collect();
            tombstones.sort_unstable();
            StoreCapture {
                n,
                live: g.live(),
                mark: self.indexed.load(Ordering::Acquire).min(n),
                max_version: g.max_version,
                slots,
                tombstones,
                dedup: g.dedup.iter().collect(),
                _index: index_guard,
            }
        };
        Ok(cap)
    }

    /// Reads a snapshot written by [`ShardStore::write_snapshot`] for a collection with `config`.
    /// Bad input (wrong magic or format, another collection's dim/metric/id_type, truncation, a CRC
    /// mismatch, inconsistent contents) is [`Error::Corrupt`]; I/O failures are [`Error::Io`]. Never panics.
    /// A snapshot without a graph loaded into an HNSW collection is indexed again by `index_step`.
    pub fn read_snapshot(config: ShardConfig, r: &mut dyn Read) -> Result<ShardStore> {
        Self::read_snapshot_with(config, None, r)
    }

    /// [`ShardStore::read_snapshot`] for a store whose `on_disk` vectors go to `vector_dir` (streamed there
    /// as they are read: a restore never holds the whole VECTORS section in memory).
    pub fn read_snapshot_with(
        config: ShardConfig,
        vector_dir: Option<PathBuf>,
        r: &mut dyn Read,
    ) -> Result<ShardStore> {
        let dim = config.dim;
        if dim == 0 {
            return Err(corrupt("config has dim 0"));
        }
        let mut head = [0u8; 12];
        r.read_exact(&mut head).map_err(|e| read_err(e, "header"))?;
        if &head[..8] != SNAPSHOT_MAGIC {
            return Err(corrupt("bad magic: not a shoal shard snapshot"));
        }
        let format = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if format == 0 || format > SNAPSHOT_FORMAT {
            return Err(corrupt(format!(
                "unsupported format version {format} (this build reads 1..={SNAPSHOT_FORMAT})"
            )));
        }
        let mut cr = CrcReader { r, crc: 0 };
        let meta_len = cr.u64("META length")?;
        let meta = cr.section(meta_len, "META")?;
        let vec_len = cr.u64("VECTORS length")?;
        let row_bytes = dim as u64 * 4;
        if vec_len % row_bytes != 0 {
            return Err(corrupt(format!("VECTORS length {vec_len} is not a whole number of {dim}-d rows")));
        }
        let mut arena = VectorArena::create(dim, Quantization::None, storage_of(&config, vector_dir));
        {
            // Whole rows per read, so no row straddles two reads.
            let rows_per_read = (64 * 1024 / row_bytes as usize).max(1);
            let mut buf = vec![0u8; rows_per_read * dim * 4];
            let mut row = vec![0f32; dim];
            let mut left = vec_len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                cr.exact(&mut buf[..n], "VECTORS")?;
                for bytes in buf[..n].chunks_exact(dim * 4) {
                    for (x, c) in row.iter_mut().zip(bytes.chunks_exact(4)) {
                        *x = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                    }
                    arena.push(&row);
                }
                left -= n as u64;
            }
        }
        let mut flag = [0u8; 1];
        cr.exact(&mut flag, "GRAPH")?;
        let graph = match flag[0] {
            0 => None,
            1 => {
                let len = cr.u64("GRAPH length")?;
                Some(cr.section(len, "GRAPH")?)
            }
            f => return Err(corrupt(format!("bad GRAPH flag {f}"))),
        };
        let computed = cr.crc;
        let mut trailer = [0u8; 4];
        r.read_exact(&mut trailer).map_err(|e| read_err(e, "trailer"))?;
        if u32::from_le_bytes(trailer) != computed {
            return Err(corrupt("CRC32C mismatch"));
        }
        Self::decode(config, format, &meta, arena, graph.as_deref())
    }

    /// Builds a store from CRC-checked snapshot sections, validating their consistency.
    fn decode(
        config: ShardConfig,
        format: u32,
        meta: &[u8],
        arena: VectorArena,
        graph: Option<&[u8]>,
    ) -> Result<ShardStore> {
        let dim = config.dim;
        if dim == 0 {
            return Err(corrupt("config has dim 0"));
        }
        let mut d = Dec { b: meta, p: 0 };
        let s_dim = d.u32()? as usize;
        let s_metric = d.u8()?;
        let s_id_type = d.u8()?;
        if s_dim != dim || s_metric != metric_code(config.metric) || s_id_type != id_type_code(config.id_type) {
            return Err(corrupt(format!(
                "snapshot is for dim {s_dim}, metric code {s_metric}, id_type code {s_id_type}, but the collection \
                 has dim {dim}, metric {}, id_type {}",
                config.metric,
                config.id_type.as_str()
            )));
        }
        let n = d.u64()?;
        let live = d.u64()?;
        let mark = d.u64()?;
        let max_version = d.version()?;
        // Every slot record takes at least one byte, so `n` is bounded by the section's size.
        if n > (meta.len() - d.p) as u64 || mark > n || live > n {
            return Err(corrupt(format!("inconsistent counts: {n} slots, {live} live, watermark {mark}")));
        }
        let n = n as usize;
        if arena.len() != n {
            return Err(corrupt(format!("VECTORS holds {} rows of {dim}, expected {n}", arena.len())));
        }
        let mut inner = Inner::new(&config, VectorStorage::Memory);
        inner.slots.reserve(n);
        inner.alive.reserve(n);
        inner.ids.reserve(live as usize);
        inner.max_version = max_version;
        for slot in 0..n {
            match d.u8()? {
                0 => {
                    inner.slots.push(Slot {
                        id: PointId::Int(0),
                        version: Version::ZERO,
                        payload: None,
                        key_versions: None,
                        hash: 0,
                    });
                    inner.alive.push(false);
                }
                1 => {
                    let id = d.id(config.id_type)?;
                    let version = d.version()?;
                    let payload = match d.u8()? {
                        0 => None,
                        1 => Some(
                            serde_json::from_slice::<Payload>(d.bytes()?)
                                .map_err(|e| corrupt(format!("payload of slot {slot}: {e}")))?,
                        ),
                        f => return Err(corrupt(format!("bad payload flag {f} in slot {slot}"))),
                    };
                    let nk = d.u32()? as usize;
                    let key_versions = if nk == 0 {
                        None
                    } else {
                        let mut kv = HashMap::new();
                        for _ in 0..nk {
                            let k = d.string()?;
                            kv.insert(k, d.version()?);
                        }
                        Some(Box::new(kv))
                    };
                    if inner.ids.insert(id.clone(), slot as u32).is_some() {
                        return Err(corrupt(format!("id {id} is live in two slots")));
                    }
                    inner.slots.push(Slot { id, version, payload: payload.map(Arc::new), key_versions, hash: 0 });
                    inner.alive.push(true);
                }
                f => return Err(corrupt(format!("bad slot flag {f} in slot {slot}"))),
            }
        }
        if inner.ids.len() as u64 != live {
            return Err(corrupt(format!("{} live slots but the header says {live}", inner.ids.len())));
        }
        let nt = d.u64()?;
        if nt > (meta.len() - d.p) as u64 {
            return Err(corrupt(format!("tombstone count {nt} exceeds the section")));
        }
        for _ in 0..nt {
            let id = d.id(config.id_type)?;
            let v = d.version()?;
            if inner.ids.contains_key(&id) || inner.tombstones.insert(id.clone(), v).is_some() {
                return Err(corrupt(format!("tombstone for {id} duplicates a live point or another tombstone")));
            }
        }
        if format >= 2 {
            let nd = d.u64()?;
            // Every entry takes 32 bytes.
            if nd > ((meta.len() - d.p) / 32) as u64 {
                return Err(corrupt(format!("dedup entry count {nd} exceeds the section")));
            }
            let mut last_ms = 0;
            for i in 0..nd {
                let id = WriteId::from_bytes(d.take(WriteId::LEN)?).expect("16 bytes");
                let (ms, applied) = (d.u64()?, d.u64()?);
                if ms < last_ms || inner.dedup.get(id).is_some() {
                    return Err(corrupt(format!("dedup entry {i} ({id}) is out of order or repeated")));
                }
                last_ms = ms;
                inner.dedup.record(id, ms, applied);
            }
        }
        if d.p != meta.len() {
            return Err(corrupt(format!("{} unexpected bytes after META", meta.len() - d.p)));
        }
        inner.arena = arena;
        inner.arena.set_quantization(config.index.quantization());
        for slot in 0..n {
            if inner.alive[slot] {
                let s = &inner.slots[slot];
                let hash = slot_hash(&s.id, s.version, inner.arena.get(slot as u32), s.payload.as_deref());
                inner.content = inner.content.wrapping_add(hash);
                inner.slots[slot].hash = hash;
            }
        }

        // A flat store keeps the watermark as written (it is meaningless there, but re-snapshots stay identical).
        let mut indexed = mark as usize;
        let mut hnsw = new_graph(&config);
        if hnsw.is_some() {
            match graph {
                None => indexed = 0, // written by a flat store: index everything again
                Some(bytes) => {
                    let mut rd: &[u8] = bytes;
                    let h = Hnsw::read_from(&mut rd, config.metric).map_err(|e| corrupt(format!("graph: {e}")))?;
                    if !rd.is_empty() {
                        return Err(corrupt(format!("{} unexpected bytes after the graph", rd.len())));
                    }
                    let mark = mark as usize;
                    if h.len() > mark {
                        return Err(corrupt(format!("graph holds {} nodes, above the watermark {mark}", h.len())));
                    }
                    for s in 0..n {
                        let inside = h.contains(s as u32);
                        if (s < mark && inner.alive[s] && !inside) || (s >= mark && inside) {
                            return Err(corrupt(format!("graph membership of slot {s} disagrees with the watermark")));
                        }
                    }
                    hnsw = Some(h);
                }
            }
        }
        Ok(ShardStore {
            config,
            inner: RwLock::new(inner),
            hnsw,
            index_lock: Arc::new(Mutex::new(())),
            indexed: AtomicUsize::new(indexed),
        })
    }
}

/// One live slot as captured for a snapshot.
#[derive(Debug)]
struct CapturedSlot {
    /// The point.
    id: PointId,
    /// Its version.
    version: Version,
    /// Its payload (shared with the store until the store replaces it).
    payload: Option<Arc<Payload>>,
    /// Key versions of patched keys, sorted by key.
    kv: Vec<(String, Version)>,
}

/// A point-in-time copy of a [`ShardStore`] ([`ShardStore::capture`]) that [`StoreCapture::write`] turns
/// into a snapshot without holding the store's locks.
pub struct StoreCapture {
    /// Slots at capture time; vector rows below it never change.
    n: usize,
    /// Live points.
    live: usize,
    /// Indexed watermark, consistent with `graph`.
    mark: usize,
    /// Newest version applied.
    max_version: Version,
    /// One entry per slot: `None` for a dead slot.
    slots: Vec<Option<CapturedSlot>>,
    /// Tombstones sorted by id.
    tombstones: Vec<(PointId, Version)>,
    /// The dedup table in apply order.
    dedup: Vec<(WriteId, crate::dedup::Applied)>,
    /// Holds the store's index lock until the capture is written: the graph stays as captured (consistent
    /// with `mark`) while writes go on; only indexing waits.
    _index: parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>,
}

impl fmt::Debug for StoreCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCapture").field("slots", &self.n).field("live", &self.live).finish_non_exhaustive()
    }
}

impl StoreCapture {
    /// Writes the snapshot of the captured state; `store` must be the store it was captured from (its vector
    /// rows below the captured slot count are read in short chunks).
    pub fn write(&self, store: &ShardStore, w: &mut dyn Write) -> Result<()> {
        let config = &store.config;
        let n = self.n;
        let mut m = Vec::with_capacity(64 + n * 32);
        put_u32(&mut m, config.dim as u32);
        put_u8(&mut m, metric_code(config.metric));
        put_u8(&mut m, id_type_code(config.id_type));
        put_u64(&mut m, n as u64);
        put_u64(&mut m, self.live as u64);
        put_u64(&mut m, self.mark as u64);
        put_version(&mut m, self.max_version);
        for slot in &self.slots {
            let Some(slot) = slot else {
                put_u8(&mut m, 0);
                continue;
            };
            put_u8(&mut m, 1);
            put_id(&mut m, &slot.id);
            put_version(&mut m, slot.version);
            match &slot.payload {
                Some(p) => {
                    put_u8(&mut m, 1);
                    let json = serde_json::to_vec(&**p).map_err(|e| Error::Io(e.into()))?;
                    put_bytes(&mut m, &json);
                }
                None => put_u8(&mut m, 0),
            }
            put_u32(&mut m, slot.kv.len() as u32);
            for (k, v) in &slot.kv {
                put_bytes(&mut m, k.as_bytes());
                put_version(&mut m, *v);
            }
        }
        put_u64(&mut m, self.tombstones.len() as u64);
        for (id, v) in &self.tombstones {
            put_id(&mut m, id);
            put_version(&mut m, *v);
        }
        put_u64(&mut m, self.dedup.len() as u64);
        for (id, a) in &self.dedup {
            m.extend_from_slice(&id.to_bytes());
            put_u64(&mut m, a.ms);
            put_u64(&mut m, a.applied);
        }

        w.write_all(SNAPSHOT_MAGIC)?;
        w.write_all(&SNAPSHOT_FORMAT.to_le_bytes())?;
        let mut cw = CrcWriter { w, crc: 0 };
        cw.put(&(m.len() as u64).to_le_bytes())?;
        cw.put(&m)?;
        drop(m);
        let dim = config.dim;
        cw.put(&((n * dim * 4) as u64).to_le_bytes())?;
        // Rows below `n` never change (the arena is append-only), so they can be copied chunk by chunk.
        let rows_per_chunk = (256 * 1024 / (dim * 4)).max(1);
        let mut buf: Vec<u8> = Vec::with_capacity(rows_per_chunk * dim * 4);
        let mut row = 0;
        while row < n {
            let end = n.min(row + rows_per_chunk);
            buf.clear();
            {
                let g = store.inner.read();
                for run in g.arena.runs(row, end) {
                    for x in run {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
            cw.put(&buf)?;
            row = end;
        }
        match &store.hnsw {
            Some(h) => {
                let mut b = Vec::new();
                h.write_to(&mut b)?;
                cw.put(&[1])?;
                cw.put(&(b.len() as u64).to_le_bytes())?;
                cw.put(&b)?;
            }
            None => cw.put(&[0])?,
        }
        let crc = cw.crc;
        w.write_all(&crc.to_le_bytes())?;
        w.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantizer::TRAIN_ROWS;
    use serde_json::json;
    use std::collections::HashSet;

    /// splitmix64: deterministic test data without extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
        fn gauss(&mut self) -> f32 {
            // sum of uniforms: close enough to normal for test data
            (0..4).map(|_| self.unit()).sum::<f32>() - 2.0
        }
    }

    /// `n` vectors around `clusters` random centres.
    fn clustered(rng: &mut Rng, n: usize, dim: usize, clusters: usize) -> Vec<f32> {
        let centres: Vec<f32> = (0..clusters * dim).map(|_| rng.gauss() * 3.0).collect();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let c = (rng.next() % clusters as u64) as usize;
            out.extend((0..dim).map(|j| centres[c * dim + j] + rng.gauss()));
        }
        out
    }

    fn cfg(dim: usize, metric: Metric, index: IndexConfig) -> ShardConfig {
        ShardConfig { dim, metric, id_type: IdType::Int, index, on_disk: false }
    }

    fn hnsw_cfg(dim: usize, metric: Metric) -> ShardConfig {
        cfg(dim, metric, IndexConfig::Hnsw { m: 12, ef_construction: 100, quantization: Quantization::None })
    }

    fn v(hlc: u64) -> Version {
        Version::new(hlc, 1)
    }

    fn up(id: u64, version: u64, vector: Vec<f32>, payload: Option<Value>) -> WriteOp {
        WriteOp::Upsert {
            id: PointId::Int(id),
            version: v(version),
            vector,
            payload: payload.map(|p| match p {
                Value::Object(m) => m,
                _ => panic!("payload must be an object"),
            }),
        }
    }

    fn del(id: u64, version: u64) -> WriteOp {
        WriteOp::Delete { id: PointId::Int(id), version: v(version) }
    }

    fn patch(id: u64, version: u64, p: Value) -> WriteOp {
        let Value::Object(patch) = p else { panic!("patch must be an object") };
        WriteOp::PatchPayload { id: PointId::Int(id), version: v(version), patch }
    }

    fn batch(ops: Vec<WriteOp>) -> WriteBatch {
        WriteBatch::new(ops)
    }

    /// Loads `data` as ids 0..n with payload {"i": i, "even": i % 2 == 0, "bucket": i % 10}.
    fn load(store: &ShardStore, data: &[f32]) {
        let dim = store.config().dim;
        let ops: Vec<WriteOp> = data
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, x)| up(i as u64, 10, x.to_vec(), Some(json!({"i": i, "even": i % 2 == 0, "bucket": i % 10}))))
            .collect();
        for c in ops.chunks(500) {
            let out = store.apply(&batch(c.to_vec()));
            assert_eq!(out.applied, c.len());
        }
    }

    /// Exact answer: (distance, id) of the k nearest of `data` (ids = row numbers) accepted by `keep`.
    fn brute(
        metric: Metric,
        data: &[f32],
        dim: usize,
        q: &[f32],
        k: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(f32, u64)> {
        let mut qq = q.to_vec();
        distance::prepare(metric, &mut qq);
        let mut all: Vec<(f32, u64)> = data
            .chunks_exact(dim)
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(i, x)| {
                let mut xx = x.to_vec();
                distance::prepare(metric, &mut xx);
                (distance::distance(metric, &qq, &xx), i as u64)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        all.truncate(k);
        all
    }

    fn ids_of(hits: &[Hit]) -> Vec<u64> {
        hits.iter()
            .map(|h| match h.id {
                PointId::Int(i) => i,
                _ => panic!("int ids only"),
            })
            .collect()
    }

    fn recall(store: &ShardStore, data: &[f32], queries: &[f32], k: usize, ef: Option<usize>) -> f64 {
        let dim = store.config().dim;
        let nq = queries.len() / dim;
        let res = store.search(queries, nq, k, None, ef, false);
        let mut found = 0;
        for (q, hits) in queries.chunks_exact(dim).zip(&res) {
            assert_eq!(hits.len(), k);
            let truth: HashSet<u64> =
                brute(store.config().metric, data, dim, q, k, &|_| true).into_iter().map(|x| x.1).collect();
            found += ids_of(hits).iter().filter(|i| truth.contains(i)).count();
        }
        found as f64 / (nq * k) as f64
    }

    fn snapshot_bytes(store: &ShardStore) -> Vec<u8> {
        let mut b = Vec::new();
        store.write_snapshot(&mut b).unwrap();
        b
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ShardStore>();
    }

    #[test]
    fn lww_newer_wins_older_is_skipped() {
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        let out = s.apply(&batch(vec![up(1, 10, vec![1.0, 0.0], Some(json!({"a": 1})))]));
        assert_eq!((out.applied, out.skipped_stale), (1, 0));
        let out = s.apply(&batch(vec![up(1, 5, vec![9.0, 9.0], None)]));
        assert_eq!((out.applied, out.skipped_stale), (0, 1));
        let out = s.apply(&batch(vec![up(1, 10, vec![9.0, 9.0], None)]));
        assert_eq!((out.applied, out.skipped_stale), (0, 1), "an equal version is a retry");
        let r = s.get(&[PointId::Int(1)], true).pop().unwrap().unwrap();
        assert_eq!((r.vector, r.version), (vec![1.0, 0.0], v(10)));
        s.apply(&batch(vec![up(1, 20, vec![2.0, 0.0], None)]));
        let r = s.get(&[PointId::Int(1)], true).pop().unwrap().unwrap();
        assert_eq!((r.vector, r.payload, r.version), (vec![2.0, 0.0], None, v(20)));
        assert_eq!(s.count(), 1);
        assert_eq!(s.max_version(), v(20));
        // a higher node id breaks an hlc tie
        let tie = WriteOp::Upsert {
            id: PointId::Int(1),
            version: Version::new(20, 2),
            vector: vec![3.0, 0.0],
            payload: None,
        };
        assert_eq!(s.apply(&batch(vec![tie])).applied, 1);
        // a wrong-dim vector is skipped, not applied
        assert_eq!(s.apply(&batch(vec![up(2, 30, vec![1.0], None)])).skipped_invalid, 1);
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn deletes_leave_tombstones() {
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        s.apply(&batch(vec![up(1, 10, vec![1.0, 0.0], None), up(2, 10, vec![0.0, 1.0], None)]));
        assert_eq!(s.apply(&batch(vec![del(1, 5)])).skipped_stale, 1, "older delete loses");
        assert_eq!(s.count(), 2);
        assert_eq!(s.apply(&batch(vec![del(1, 20)])).applied, 1);
        assert_eq!(s.count(), 1);
        assert!(s.get(&[PointId::Int(1)], false)[0].is_none());
        // an older upsert arriving late stays deleted
        assert_eq!(s.apply(&batch(vec![up(1, 15, vec![5.0, 5.0], None)])).skipped_stale, 1);
        assert_eq!(s.count(), 1);
        // a newer upsert revives
        assert_eq!(s.apply(&batch(vec![up(1, 25, vec![5.0, 5.0], None)])).applied, 1);
        assert_eq!(s.count(), 2);
        assert_eq!(s.stats().tombstones, 0, "the revived id needs no tombstone");
        // deleting an id never seen still blocks its older upsert
        assert_eq!(s.apply(&batch(vec![del(7, 30)])).applied, 1);
        assert_eq!(s.apply(&batch(vec![up(7, 29, vec![5.0, 5.0], None)])).skipped_stale, 1);
        assert_eq!(s.apply(&batch(vec![del(7, 30)])).skipped_stale, 1);
        // search never returns deleted points
        let hits = s.search(&[1.0, 0.0], 1, 10, None, None, false);
        assert_eq!(ids_of(&hits[0]), vec![2, 1]);
        // gc drops old tombstones only
        s.apply(&batch(vec![del(2, 40)]));
        assert_eq!(s.stats().tombstones, 2);
        assert_eq!(s.gc_tombstones(v(35)), 1);
        assert_eq!(s.stats().tombstones, 1);
        assert_eq!(s.apply(&batch(vec![up(2, 39, vec![5.0, 5.0], None)])).skipped_stale, 1);
    }

    #[test]
    fn reordered_and_retried_writes_converge() {
        // Applied first in every run: a patch of a point that does not exist yet is skipped by design.
        let prefix = vec![up(1, 10, vec![1.0, 0.0], Some(json!({"a": 1, "b": 1})))];
        let ops = vec![
            up(1, 30, vec![2.0, 0.0], Some(json!({"a": 3}))),
            patch(1, 40, json!({"b": 4})),
            patch(1, 20, json!({"c": 2})),
            patch(1, 35, json!({"a": 35, "d": 35})),
            del(2, 25),
            up(2, 15, vec![0.0, 1.0], None),
            up(3, 5, vec![1.0, 1.0], None),
            del(3, 6),
            up(3, 7, vec![3.0, 3.0], Some(json!({"z": true}))),
            patch(4, 50, json!({"x": 1})),
        ];
        let ids = [1, 2, 3, 4].map(PointId::Int);
        let mut first: Option<(u64, Vec<Option<PointRecord>>)> = None;
        let mut rng = Rng(7);
        for round in 0..60 {
            let mut order = ops.clone();
            if round > 0 {
                for i in (1..order.len()).rev() {
                    let j = (rng.next() % (i as u64 + 1)) as usize;
                    order.swap(i, j);
                }
            }
            let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
            s.apply(&batch(prefix.clone()));
            for op in &order {
                s.apply(&batch(vec![op.clone()]));
            }
            // retrying everything changes nothing
            let before = s.digest();
            let out = s.apply(&batch(prefix.iter().chain(&order).cloned().collect()));
            assert_eq!(out.applied, 0, "retries must be no-ops");
            assert_eq!(s.digest(), before);
            let state = (s.digest(), s.get(&ids, true));
            match &first {
                None => first = Some(state),
                Some(f) => assert_eq!(&state, f, "order {order:?} diverged"),
            }
        }
        let (_, got) = first.unwrap();
        assert_eq!(
            got[0].as_ref().unwrap().payload,
            Some(json!({"a": 35, "b": 4, "d": 35}).as_object().unwrap().clone())
        );
        assert_eq!(got[0].as_ref().unwrap().version, v(30));
        assert!(got[1].is_none());
        assert_eq!(got[2].as_ref().unwrap().version, v(7));
        assert!(got[3].is_none());
    }

    fn logged(ops: Vec<WriteOp>, id: u128) -> WriteBatch {
        WriteBatch { ops, write_id: Some(WriteId(id)) }
    }

    fn ms(ms: u64) -> u64 {
        Version::from_parts(ms, 0, 1).hlc
    }

    #[test]
    fn logged_writes_apply_once_per_write_id() {
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        let first = s.apply_logged(logged(vec![up(1, ms(1_000), vec![1.0, 0.0], Some(json!({"v": 1})))], 7));
        assert_eq!((first.applied, first.duplicate), (1, false));
        // another writer's newer write, acknowledged
        s.apply_logged(logged(vec![up(1, ms(2_000), vec![2.0, 0.0], Some(json!({"v": 2})))], 8));
        // the first write retried through another coordinator: a fresh, newer stamp, the same write id
        let retry = s.apply_logged(logged(vec![up(1, ms(3_000), vec![1.0, 0.0], Some(json!({"v": 1})))], 7));
        assert_eq!((retry.applied, retry.duplicate), (1, true), "the original's outcome, nothing changed");
        let r = s.get(&[PointId::Int(1)], false).pop().unwrap().unwrap();
        assert_eq!(r.payload, Some(json!({"v": 2}).as_object().unwrap().clone()));
        assert_eq!(s.dedup_len(), 2);
        // a batch without a write id is never deduplicated
        assert_eq!(s.apply_logged(batch(vec![del(1, ms(4_000))])).applied, 1);
        assert_eq!(s.apply_logged(batch(vec![up(1, ms(4_000), vec![3.0, 0.0], None)])).applied, 1);
        assert_eq!(s.count(), 1);
        assert_eq!(s.apply_logged(batch(vec![])), ApplyOutcome::default());
    }

    #[test]
    fn logged_writes_follow_log_order_whatever_the_stamps() {
        // A coordinator whose clock runs ahead stamps v1 far in the future; a later entry stamped by a
        // coordinator with a correct clock still wins, because it comes later in the log.
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        s.apply_logged(logged(vec![up(1, ms(60_000), vec![1.0, 0.0], Some(json!({"v": 1})))], 1));
        let out = s.apply_logged(logged(vec![up(1, ms(1_000), vec![2.0, 0.0], Some(json!({"v": 2})))], 2));
        assert_eq!((out.applied, out.skipped_stale), (1, 0));
        let r = s.get(&[PointId::Int(1)], true).pop().unwrap().unwrap();
        assert_eq!(r.vector, vec![2.0, 0.0]);
        assert!(r.version > Version::from_parts(60_000, 0, 1), "applied after the newest version");
        assert_eq!(s.max_version(), r.version);
        // deletes and patches too
        s.apply_logged(logged(vec![del(1, ms(500))], 3));
        assert_eq!(s.count(), 0);
        s.apply_logged(logged(vec![up(1, ms(400), vec![1.0, 1.0], Some(json!({"a": 1})))], 4));
        s.apply_logged(logged(vec![patch(1, ms(300), json!({"a": 2}))], 5));
        let r = s.get(&[PointId::Int(1)], false).pop().unwrap().unwrap();
        assert_eq!(r.payload, Some(json!({"a": 2}).as_object().unwrap().clone()));
        // replicas applying the same log end identical
        let t = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        t.apply_logged(logged(vec![up(1, ms(60_000), vec![1.0, 0.0], Some(json!({"v": 1})))], 1));
        t.apply_logged(logged(vec![up(1, ms(1_000), vec![2.0, 0.0], Some(json!({"v": 2})))], 2));
        t.apply_logged(logged(vec![del(1, ms(500))], 3));
        t.apply_logged(logged(vec![up(1, ms(400), vec![1.0, 1.0], Some(json!({"a": 1})))], 4));
        t.apply_logged(logged(vec![patch(1, ms(300), json!({"a": 2}))], 5));
        assert_eq!(s.digest(), t.digest());
        assert_eq!(snapshot_bytes(&s), snapshot_bytes(&t));
    }

    #[test]
    fn logged_writes_expire_from_the_dedup_window() {
        use crate::dedup::DEDUP_WINDOW_MS;
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        s.apply_logged(logged(vec![up(1, ms(1_000), vec![1.0, 0.0], None)], 1));
        s.apply_logged(logged(vec![up(2, ms(2_000 + DEDUP_WINDOW_MS), vec![1.0, 0.0], None)], 2));
        assert_eq!(s.dedup_len(), 1, "write 1 left the window");
        // write 1 again: it can no longer be told from a duplicate, so it is refused as expired
        let out = s.apply_logged(logged(vec![up(1, ms(1_000), vec![9.0, 0.0], None)], 1));
        assert_eq!((out.applied, out.expired, out.duplicate), (0, true, false));
        assert_eq!(s.get(&[PointId::Int(1)], true)[0].as_ref().unwrap().vector, vec![1.0, 0.0]);
        // a write stamped within the window (behind shard time, but not by more than the window) applies
        let out = s.apply_logged(logged(vec![up(1, ms(3_000), vec![5.0, 0.0], None)], 3));
        assert_eq!((out.applied, out.expired), (1, false));
        // an id at the very top of the clock cannot be followed: refused, no panic
        let top = WriteOp::Upsert {
            id: PointId::Int(3),
            version: Version::new(u64::MAX, 1),
            vector: vec![0.0, 1.0],
            payload: None,
        };
        assert_eq!(s.apply_logged(logged(vec![top], 9)).applied, 1);
        let out = s.apply_logged(logged(vec![up(3, ms(4_000), vec![0.0, 2.0], None)], 10));
        assert!(out.expired && out.applied == 0);
    }

    #[test]
    fn dedup_table_survives_snapshots() {
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        s.apply_logged(logged(
            vec![up(1, ms(1_000), vec![1.0, 0.0], None), up(2, ms(1_000), vec![0.0, 1.0], None)],
            11,
        ));
        s.apply_logged(logged(vec![up(1, ms(2_000), vec![2.0, 0.0], None)], 12));
        let bytes = snapshot_bytes(&s);
        let t = ShardStore::read_snapshot(s.config().clone(), &mut bytes.as_slice()).unwrap();
        assert_eq!(t.dedup_len(), 2);
        let again = t.apply_logged(logged(vec![up(1, ms(3_000), vec![1.0, 0.0], None)], 11));
        assert_eq!((again.duplicate, again.applied), (true, 2));
        assert_eq!(t.get(&[PointId::Int(1)], true)[0].as_ref().unwrap().vector, vec![2.0, 0.0]);
        assert_eq!(snapshot_bytes(&t), bytes);
    }

    #[test]
    fn format_1_snapshots_are_still_read() {
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        s.apply(&batch(vec![up(1, 10, vec![1.0, 0.0], Some(json!({"a": 1}))), del(2, 11)]));
        let v2 = snapshot_bytes(&s);
        // Format 1 is format 2 without the dedup section (an empty table: its u64 count at META's end).
        let meta_len = u64::from_le_bytes(v2[12..20].try_into().unwrap()) as usize;
        let mut body = Vec::new();
        body.extend_from_slice(&((meta_len - 8) as u64).to_le_bytes());
        body.extend_from_slice(&v2[20..20 + meta_len - 8]);
        body.extend_from_slice(&v2[20 + meta_len..v2.len() - 4]);
        let mut v1 = Vec::new();
        v1.extend_from_slice(SNAPSHOT_MAGIC);
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&body);
        v1.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        let t = ShardStore::read_snapshot(s.config().clone(), &mut v1.as_slice()).unwrap();
        assert_eq!((t.digest(), t.dedup_len()), (s.digest(), 0));
        assert_eq!(snapshot_bytes(&t), v2, "re-written in the current format");
        let mut v3 = v2.clone();
        v3[8..12].copy_from_slice(&3u32.to_le_bytes());
        let err = ShardStore::read_snapshot(s.config().clone(), &mut v3.as_slice()).unwrap_err().to_string();
        assert!(err.contains("unsupported format version 3"), "{err}");
    }

    #[test]
    fn a_capture_is_the_state_at_capture_time() {
        let s = ShardStore::new(hnsw_cfg(2, Metric::L2));
        s.apply(&batch((0..50).map(|i| up(i, 10, vec![i as f32, 1.0], Some(json!({"i": i})))).collect()));
        s.index_step(usize::MAX);
        let expected = snapshot_bytes(&s);
        let cap = s.capture().unwrap();
        // writes go on while the capture is held: upserts, a delete, a patch, a new point
        s.apply(&batch(vec![up(3, 20, vec![9.0, 9.0], None), del(4, 20), patch(5, 20, json!({"p": 1}))]));
        s.apply(&batch(vec![up(99, 20, vec![0.5, 0.5], None)]));
        let mut got = Vec::new();
        cap.write(&s, &mut got).unwrap();
        drop(cap);
        assert_eq!(got, expected, "the snapshot holds the captured state, not the later writes");
        assert_ne!(snapshot_bytes(&s), expected);
        let r = ShardStore::read_snapshot(s.config().clone(), &mut got.as_slice()).unwrap();
        assert_eq!(r.count(), 50);
    }

    #[test]
    fn the_incremental_digest_follows_content_not_history() {
        let a = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        let mut rng = Rng(11);
        for round in 0..300u64 {
            let id = rng.next() % 40;
            let op = match rng.next() % 4 {
                0 => del(id, 10 + round),
                1 => patch(id, 10 + round, json!({"k": round % 3, "nested": {"a": [1, 2.5, "x"]}})),
                _ => up(id, 10 + round, vec![rng.unit(), rng.unit()], Some(json!({"r": round}))),
            };
            a.apply(&batch(vec![op]));
        }
        // a copy through a snapshot (slots compacted, hashes recomputed) has the same digest
        let bytes = snapshot_bytes(&a);
        let b = ShardStore::read_snapshot(a.config().clone(), &mut bytes.as_slice()).unwrap();
        assert_eq!(a.digest(), b.digest());
        // the same points written in another order, through other slots: same digest
        let c = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        let recs: Vec<PointRecord> = a.scroll(None, usize::MAX, None, true);
        for r in recs.iter().rev() {
            c.apply(&batch(vec![WriteOp::Upsert {
                id: r.id.clone(),
                version: r.version,
                vector: r.vector.clone(),
                payload: r.payload.clone(),
            }]));
        }
        assert_eq!(c.count(), a.count());
        assert_eq!(c.digest(), a.digest());
        // any difference in a payload value, a vector or a version shows
        let some = recs[0].clone();
        let d = ShardStore::read_snapshot(a.config().clone(), &mut bytes.as_slice()).unwrap();
        d.apply(&batch(vec![WriteOp::PatchPayload {
            id: some.id.clone(),
            version: Version::new(some.version.hlc + 1, 0),
            patch: json!({"r": -1}).as_object().unwrap().clone(),
        }]));
        assert_ne!(d.digest(), a.digest());
        assert_ne!(ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat)).digest(), a.digest());
    }

    #[test]
    fn patch_payload_merges_per_key() {
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        s.apply(&batch(vec![
            up(1, 10, vec![1.0, 0.0], Some(json!({"a": 1, "b": 1}))),
            up(2, 10, vec![1.0, 0.0], None),
        ]));
        // two writers patch different keys: both win, in either order
        let o = s.apply(&batch(vec![patch(1, 30, json!({"b": 3})), patch(1, 20, json!({"c": 2}))]));
        assert_eq!(o.applied, 2);
        // an older patch of an already newer key loses
        let o = s.apply(&batch(vec![patch(1, 25, json!({"b": 25}))]));
        assert_eq!((o.applied, o.skipped_stale), (0, 1));
        // a patch older than the upsert loses
        assert_eq!(s.apply(&batch(vec![patch(1, 5, json!({"d": 1}))])).skipped_stale, 1);
        // a patch on a missing or deleted point is skipped
        assert_eq!(s.apply(&batch(vec![patch(9, 50, json!({"d": 1}))])).skipped_missing, 1);
        // an empty patch changes nothing (not even a missing payload)
        assert_eq!(s.apply(&batch(vec![patch(2, 30, json!({}))])).skipped_stale, 1);
        assert_eq!(s.get(&[PointId::Int(2)], false)[0].as_ref().unwrap().payload, None);
        // a point without payload gets one
        s.apply(&batch(vec![patch(2, 30, json!({"n": null}))]));
        let got = s.get(&[PointId::Int(1), PointId::Int(2)], false);
        assert_eq!(
            got[0].as_ref().unwrap().payload.as_ref().unwrap(),
            json!({"a": 1, "b": 3, "c": 2}).as_object().unwrap()
        );
        assert_eq!(got[0].as_ref().unwrap().version, v(10), "patches do not change the point version");
        assert_eq!(got[1].as_ref().unwrap().payload.as_ref().unwrap(), json!({"n": null}).as_object().unwrap());
        // an upsert between the patches replaces the payload but keeps keys patched after it
        s.apply(&batch(vec![up(1, 22, vec![0.0, 1.0], Some(json!({"a": 9, "c": 9})))]));
        let got = s.get(&[PointId::Int(1)], true);
        let r = got[0].as_ref().unwrap();
        assert_eq!(r.payload.as_ref().unwrap(), json!({"a": 9, "b": 3, "c": 9}).as_object().unwrap());
        assert_eq!(r.vector, vec![0.0, 1.0]);
        // a newer upsert replaces everything
        s.apply(&batch(vec![up(1, 60, vec![0.0, 1.0], None)]));
        assert_eq!(s.get(&[PointId::Int(1)], false)[0].as_ref().unwrap().payload, None);
        s.apply(&batch(vec![del(2, 70)]));
        assert_eq!(s.apply(&batch(vec![patch(2, 80, json!({"x": 1}))])).skipped_missing, 1);
    }

    #[test]
    fn get_count_scroll() {
        let s = ShardStore::new(cfg(3, Metric::Cosine, IndexConfig::Flat));
        s.apply(&batch((0..10).map(|i| up(i, 1, vec![3.0, 4.0, i as f32 * 0.0], Some(json!({"i": i})))).collect()));
        s.apply(&batch(vec![del(3, 2), del(4, 2)]));
        assert_eq!(s.count(), 8);
        let got = s.get(&[PointId::Int(0), PointId::Int(3), PointId::Int(42)], true);
        let r = got[0].as_ref().unwrap();
        assert_eq!(r.vector, vec![0.6, 0.8, 0.0], "cosine vectors are stored normalised");
        assert_eq!(r.payload.as_ref().unwrap()["i"], json!(0));
        assert!(got[1].is_none() && got[2].is_none());
        assert!(s.get(&[PointId::Int(0)], false)[0].as_ref().unwrap().vector.is_empty());
        let f = Filter::parse(&json!({"i": {"$gte": 5}})).unwrap();
        assert_eq!(s.count_matching(&f), 5);
        // scroll in id order, pages of 3
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s.scroll(after.as_ref(), 3, None, false);
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            after = Some(page.last().unwrap().id.clone());
            seen.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(seen, [0, 1, 2, 5, 6, 7, 8, 9].map(PointId::Int).to_vec());
        let page = s.scroll(None, 100, Some(&f), true);
        assert_eq!(page.len(), 5);
        assert_eq!(page[0].vector.len(), 3);
        assert!(s.scroll(None, 0, None, false).is_empty());
    }

    #[test]
    fn scroll_pages_with_and_without_writes_between() {
        // String ids sort byte-wise: "p10" < "p2". Writes between pages drop the cached id order; pages of a
        // quiet store reuse it. Either way every page continues exactly after the last id returned.
        let s = ShardStore::new(ShardConfig { id_type: IdType::Str, ..cfg(2, Metric::L2, IndexConfig::Flat) });
        let sid = |i: usize| PointId::Str(format!("p{i}"));
        let write = |i: usize, ver: u64| {
            s.apply(&batch(vec![WriteOp::Upsert {
                id: sid(i),
                version: v(ver),
                vector: vec![i as f32, 0.0],
                payload: Some(json!({"odd": i % 2 == 1}).as_object().unwrap().clone()),
            }]))
        };
        for i in 0..50 {
            write(i, 1);
        }
        let odd = Filter::parse(&json!({"odd": true})).unwrap();
        for (filter, writes_between) in [(None, false), (None, true), (Some(&odd), false), (Some(&odd), true)] {
            let (mut seen, mut after, mut page_no) = (Vec::new(), None, 0u64);
            loop {
                let page = s.scroll(after.as_ref(), 4, filter, false);
                if page.is_empty() {
                    break;
                }
                if writes_between {
                    // Re-upsert a point already returned (same content, newer version).
                    page_no += 1;
                    let PointId::Str(first) = &page[0].id else { unreachable!() };
                    write(first[1..].parse().unwrap(), 100 + page_no);
                }
                after = Some(page.last().unwrap().id.clone());
                seen.extend(page.into_iter().map(|r| r.id));
            }
            let mut want: Vec<PointId> = (0..50).filter(|i| filter.is_none() || i % 2 == 1).map(sid).collect();
            want.sort();
            assert_eq!(seen, want, "filter {:?}, writes between pages {writes_between}", filter.is_some());
        }
    }

    #[test]
    fn string_ids() {
        let s = ShardStore::new(ShardConfig {
            dim: 2,
            metric: Metric::L2,
            id_type: IdType::Str,
            index: IndexConfig::Flat,
            on_disk: false,
        });
        let id = |x: &str| PointId::Str(x.into());
        s.apply(&batch(vec![
            WriteOp::Upsert { id: id("a"), version: v(1), vector: vec![0.0, 0.0], payload: None },
            WriteOp::Upsert { id: id("b"), version: v(1), vector: vec![1.0, 0.0], payload: None },
        ]));
        s.apply_owned(batch(vec![WriteOp::Upsert {
            id: id("a"),
            version: v(2),
            vector: vec![5.0, 0.0],
            payload: None,
        }]));
        let hits = s.search(&[0.9, 0.0], 1, 5, None, None, false);
        assert_eq!(hits[0].iter().map(|h| h.id.clone()).collect::<Vec<_>>(), vec![id("b"), id("a")]);
        let snap = snapshot_bytes(&s);
        let r = ShardStore::read_snapshot(s.config().clone(), &mut snap.as_slice()).unwrap();
        assert_eq!(r.digest(), s.digest());
        assert!(ShardStore::read_snapshot(cfg(2, Metric::L2, IndexConfig::Flat), &mut snap.as_slice()).is_err());
    }

    #[test]
    fn flat_search_equals_brute_force() {
        for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
            let dim = 7;
            let mut rng = Rng(metric as u64 + 1);
            let data = clustered(&mut rng, 3000, dim, 5);
            let s = ShardStore::new(cfg(dim, metric, IndexConfig::Flat));
            load(&s, &data);
            let queries = clustered(&mut rng, 20, dim, 3);
            for k in [1, 10, 3500] {
                let res = s.search(&queries, 20, k, None, None, true);
                assert_eq!(res.len(), 20);
                for (q, hits) in queries.chunks_exact(dim).zip(&res) {
                    let truth = brute(metric, &data, dim, q, k, &|_| true);
                    assert_eq!(hits.len(), truth.len().min(k));
                    assert_eq!(ids_of(hits), truth.iter().map(|x| x.1).collect::<Vec<_>>(), "{metric} k={k}");
                    for (h, t) in hits.iter().zip(&truth) {
                        assert!((h.distance - t.0).abs() <= 1e-4 * (1.0 + t.0.abs()));
                    }
                    assert_eq!(hits[0].payload.as_ref().unwrap()["i"], json!(ids_of(hits)[0]));
                }
            }
            // a single query takes the chunk-parallel path
            let res = s.search(&queries[..dim], 1, 5, None, None, false);
            let truth = brute(metric, &data, dim, &queries[..dim], 5, &|_| true);
            assert_eq!(ids_of(&res[0]), truth.iter().map(|x| x.1).collect::<Vec<_>>());
            assert!(res[0][0].payload.is_none());
        }
    }

    #[test]
    fn search_edge_cases() {
        let s = ShardStore::new(hnsw_cfg(2, Metric::L2));
        assert_eq!(s.search(&[0.0, 0.0], 1, 5, None, None, false), vec![Vec::<Hit>::new()]);
        s.apply(&batch(vec![up(1, 1, vec![0.0, 0.0], None)]));
        assert_eq!(s.search(&[0.0, 0.0], 1, 0, None, None, false), vec![Vec::<Hit>::new()]);
        // short query buffer: the incomplete query gets nothing
        let r = s.search(&[0.0, 0.0, 1.0], 2, 3, None, None, false);
        assert_eq!((r.len(), r[0].len(), r[1].len()), (2, 1, 0));
        assert_eq!(s.search(&[], 0, 3, None, None, false).len(), 0);
    }

    #[test]
    fn hnsw_recall_and_pending_scan() {
        let dim = 16;
        let mut rng = Rng(42);
        let data = clustered(&mut rng, 6000, dim, 30);
        let queries = clustered(&mut rng, 100, dim, 30);
        let s = ShardStore::new(hnsw_cfg(dim, Metric::L2));
        load(&s, &data);
        assert_eq!(s.unindexed(), 6000);
        // searchable before indexing: the pending scan is exact
        assert_eq!(recall(&s, &data, &queries, 10, None), 1.0);
        // half indexed: graph + pending scan, no duplicates
        assert_eq!(s.index_step(3000), 3000);
        assert_eq!(s.unindexed(), 3000);
        let res = s.search(&queries, 100, 10, None, None, false);
        for hits in &res {
            let ids: HashSet<u64> = ids_of(hits).into_iter().collect();
            assert_eq!(ids.len(), 10, "duplicate ids in {hits:?}");
            assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
        }
        assert!(recall(&s, &data, &queries, 10, None) >= 0.95);
        while s.index_step(1000) > 0 {}
        assert_eq!(s.unindexed(), 0);
        let r = recall(&s, &data, &queries, 10, None);
        assert!(r >= 0.95, "recall {r}");
        assert!(recall(&s, &data, &queries, 10, Some(200)) >= r - 0.01);
        // updates move points to new slots; old slots are never returned
        let check_current = |s: &ShardStore| {
            for (q, hits) in queries.chunks_exact(dim).zip(s.search(&queries, 100, 20, None, None, false)) {
                for h in hits {
                    let cur = s.get(std::slice::from_ref(&h.id), true).pop().unwrap().unwrap().vector;
                    assert_eq!(h.distance, distance::distance(Metric::L2, q, &cur), "stale slot of {:?}", h.id);
                }
            }
        };
        let moved: Vec<WriteOp> = (0..3000)
            .map(|i| {
                let row = &data[(i as usize + 1) * dim..(i as usize + 2) * dim];
                up(i, 20, row.iter().map(|x| x + 0.5).collect(), None)
            })
            .collect();
        s.apply(&batch(moved));
        assert_eq!(s.count(), 6000);
        check_current(&s);
        while s.index_step(1000) > 0 {}
        check_current(&s);
        // delete most points: k is still honoured exactly
        s.apply(&batch((0..5990).map(|i| del(i, 30)).collect()));
        let res = s.search(&queries, 100, 20, None, None, false);
        assert!(res.iter().all(|h| h.len() == 10));
    }

    #[test]
    fn filtered_search_both_paths() {
        let dim = 12;
        let mut rng = Rng(5);
        let data = clustered(&mut rng, 8000, dim, 20);
        let queries = clustered(&mut rng, 40, dim, 20);
        for index in
            [IndexConfig::Flat, IndexConfig::Hnsw { m: 12, ef_construction: 100, quantization: Quantization::None }]
        {
            let s = ShardStore::new(cfg(dim, Metric::L2, index));
            load(&s, &data);
            while s.index_step(4000) > 0 {}
            // selective: exact path, must equal brute force with the filter
            let f = Filter::parse(&json!({"bucket": 3, "even": false})).unwrap();
            let res = s.search(&queries, 40, 10, Some(&f), None, true);
            for (q, hits) in queries.chunks_exact(dim).zip(&res) {
                let truth = brute(Metric::L2, &data, dim, q, 10, &|i| i % 10 == 3);
                assert_eq!(ids_of(hits), truth.iter().map(|x| x.1).collect::<Vec<_>>());
            }
            // broad (50%): graph path for HNSW; all hits match, k honoured, high recall
            let f = Filter::parse(&json!({"even": true})).unwrap();
            let res = s.search(&queries, 40, 10, Some(&f), None, true);
            let mut found = 0;
            for (q, hits) in queries.chunks_exact(dim).zip(&res) {
                assert_eq!(hits.len(), 10);
                assert!(hits.iter().all(|h| h.payload.as_ref().unwrap()["even"] == json!(true)));
                let truth: HashSet<u64> =
                    brute(Metric::L2, &data, dim, q, 10, &|i| i % 2 == 0).into_iter().map(|x| x.1).collect();
                found += ids_of(hits).iter().filter(|i| truth.contains(i)).count();
            }
            let r = found as f64 / 400.0;
            assert!(r >= 0.95, "{index:?}: filtered recall {r}");
            // fewer matches than k: exactly the matches
            let f = Filter::parse(&json!({"i": {"$in": [5, 17, 4000]}})).unwrap();
            let res = s.search(&queries, 40, 10, Some(&f), None, false);
            assert!(res.iter().all(|h| h.len() == 3));
            let none = Filter::parse(&json!({"i": -1})).unwrap();
            assert!(s.search(&queries, 40, 10, Some(&none), None, false).iter().all(|h| h.is_empty()));
            // one query at a time: the filter is evaluated lazily on visited nodes (HNSW)
            let f = Filter::parse(&json!({"even": true})).unwrap();
            let mut found = 0;
            for q in queries.chunks_exact(dim) {
                let hits = s.search(q, 1, 10, Some(&f), None, true).pop().unwrap();
                assert_eq!(hits.len(), 10);
                assert!(hits.iter().all(|h| h.payload.as_ref().unwrap()["even"] == json!(true)));
                let truth: HashSet<u64> =
                    brute(Metric::L2, &data, dim, q, 10, &|i| i % 2 == 0).into_iter().map(|x| x.1).collect();
                found += ids_of(&hits).iter().filter(|i| truth.contains(i)).count();
            }
            let r = found as f64 / 400.0;
            assert!(r >= 0.95, "{index:?}: lazily filtered recall {r}");
            // filter + pending points: newly written points match immediately
            s.apply(&batch(vec![up(9000, 20, queries[..dim].to_vec(), Some(json!({"even": true, "new": 1})))]));
            let f = Filter::parse(&json!({"even": true})).unwrap();
            let res = s.search(&queries[..dim], 1, 1, Some(&f), None, false);
            assert_eq!(ids_of(&res[0]), vec![9000]);
        }
    }

    #[test]
    fn filter_estimate_off_still_honours_k() {
        // The selectivity sample sees slots step/2, step/2 + step, ...: mark exactly those, so the estimate
        // says "everything matches" while only 1/step of the points do, and ask for more hits than match.
        let dim = 6;
        let mut rng = Rng(21);
        let n = 40_000;
        let data = clustered(&mut rng, n, dim, 10);
        let step = n / FILTER_SAMPLE;
        let sampled = |i: usize| i >= step / 2 && (i - step / 2).is_multiple_of(step);
        let s = ShardStore::new(cfg(
            dim,
            Metric::L2,
            IndexConfig::Hnsw { m: 8, ef_construction: 32, quantization: Quantization::None },
        ));
        let ops: Vec<WriteOp> = data
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, x)| up(i as u64, 1, x.to_vec(), Some(json!({ "sampled": sampled(i) }))))
            .collect();
        s.apply(&batch(ops));
        while s.index_step(n) > 0 {}
        let f = Filter::parse(&json!({"sampled": true})).unwrap();
        let q = &data[..dim];
        let truth = brute(Metric::L2, &data, dim, q, 5000, &sampled);
        assert!(truth.len() > EXACT_SCAN_MAX / 2 && truth.len() < 1100);
        let truth_ids: Vec<u64> = truth.iter().map(|x| x.1).collect();
        // the graph (misled by the estimate) finds too few; the exact fallback answers
        assert_eq!(s.plan(Some(&f), 1100, None), AccessPath::Graph { ef: 1100 });
        let hits = s.search(q, 1, 1100, Some(&f), None, false).pop().unwrap();
        assert_eq!(ids_of(&hits), truth_ids);
        // a beam as wide as the shard: an exact scan
        assert_eq!(s.plan(Some(&f), 5000, None), AccessPath::Exact);
        let hits = s.search(q, 1, 5000, Some(&f), None, false).pop().unwrap();
        assert_eq!(ids_of(&hits), truth_ids);
        // small k: the lazy path; every hit matches and k is honoured
        assert_eq!(s.plan(Some(&f), 50, None), AccessPath::Graph { ef: DEFAULT_EF });
        let hits = s.search(q, 1, 50, Some(&f), None, false).pop().unwrap();
        assert_eq!(hits.len(), 50);
        assert!(ids_of(&hits).into_iter().all(|i| sampled(i as usize)));
    }

    #[test]
    fn snapshot_round_trip() {
        let dim = 8;
        let mut rng = Rng(9);
        let data = clustered(&mut rng, 3000, dim, 10);
        let queries = clustered(&mut rng, 20, dim, 10);
        for config in [cfg(dim, Metric::Cosine, IndexConfig::Flat), hnsw_cfg(dim, Metric::Cosine)] {
            let s = ShardStore::new(config.clone());
            load(&s, &data);
            s.index_step(2000); // partly indexed: the rest stays pending after restore
            s.apply(&batch(vec![
                del(5, 20),
                del(77777, 20),
                up(6, 20, vec![1.0; dim], None),
                patch(7, 30, json!({"p": 1})),
            ]));
            let snap = snapshot_bytes(&s);
            let r = ShardStore::read_snapshot(config.clone(), &mut snap.as_slice()).unwrap();
            assert_eq!(r.digest(), s.digest());
            assert_eq!(r.count(), s.count());
            assert_eq!(r.stats(), s.stats());
            assert_eq!(r.max_version(), s.max_version());
            let again = snapshot_bytes(&r);
            let diff = (0..snap.len().min(again.len())).find(|&i| snap[i] != again[i]);
            assert!(
                diff.is_none() && again.len() == snap.len(),
                "re-snapshot differs at {diff:?}, lengths {} / {}",
                snap.len(),
                again.len()
            );
            let f = Filter::parse(&json!({"even": true})).unwrap();
            assert_eq!(r.search(&queries, 20, 10, None, None, true), s.search(&queries, 20, 10, None, None, true));
            assert_eq!(
                r.search(&queries, 20, 10, Some(&f), None, true),
                s.search(&queries, 20, 10, Some(&f), None, true)
            );
            let ids: Vec<PointId> = (0..3000).map(PointId::Int).collect();
            assert_eq!(r.get(&ids, true), s.get(&ids, true));
            // tombstones survive: an old upsert of a deleted id stays deleted
            assert_eq!(
                r.apply(&batch(vec![up(5, 15, vec![1.0; dim], None), up(77777, 15, vec![1.0; dim], None)]))
                    .skipped_stale,
                2
            );
            // the restored store keeps working
            while r.index_step(1000) > 0 {}
            assert_eq!(r.unindexed(), 0);
            assert!(recall(&r, &data, &queries, 5, Some(100)) > 0.0);
        }
        // an HNSW collection restoring a flat snapshot re-indexes
        let flat = ShardStore::new(cfg(dim, Metric::L2, IndexConfig::Flat));
        load(&flat, &data[..100 * dim]);
        let snap = snapshot_bytes(&flat);
        let r = ShardStore::read_snapshot(hnsw_cfg(dim, Metric::L2), &mut snap.as_slice()).unwrap();
        assert_eq!(r.unindexed(), 100);
        assert_eq!(r.index_step(1000), 100);
        // the wrong collection is refused
        let e =
            ShardStore::read_snapshot(cfg(dim + 1, Metric::L2, IndexConfig::Flat), &mut snap.as_slice()).unwrap_err();
        assert!(matches!(e, Error::Corrupt(_)), "{e}");
        assert!(ShardStore::read_snapshot(cfg(dim, Metric::Dot, IndexConfig::Flat), &mut snap.as_slice()).is_err());
        // an empty store round-trips
        let empty = ShardStore::new(hnsw_cfg(dim, Metric::L2));
        let snap = snapshot_bytes(&empty);
        let r = ShardStore::read_snapshot(hnsw_cfg(dim, Metric::L2), &mut snap.as_slice()).unwrap();
        assert_eq!((r.count(), r.digest()), (0, empty.digest()));
    }

    #[test]
    fn corrupted_snapshots_are_rejected() {
        let dim = 3;
        let mut rng = Rng(11);
        let data = clustered(&mut rng, 40, dim, 3);
        let config = hnsw_cfg(dim, Metric::L2);
        let s = ShardStore::new(config.clone());
        load(&s, &data);
        s.index_step(30);
        s.apply(&batch(vec![del(3, 20), del(99, 20), patch(4, 30, json!({"p": [1, {"q": "x"}]}))]));
        let snap = snapshot_bytes(&s);
        assert!(ShardStore::read_snapshot(config.clone(), &mut snap.as_slice()).is_ok());
        for i in 0..snap.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = snap.clone();
                bad[i] ^= flip;
                let r = ShardStore::read_snapshot(config.clone(), &mut bad.as_slice());
                assert!(matches!(r, Err(Error::Corrupt(_))), "flip {flip:#x} at byte {i} accepted");
            }
        }
        for len in 0..snap.len() {
            let r = ShardStore::read_snapshot(config.clone(), &mut &snap[..len]);
            assert!(matches!(r, Err(Error::Corrupt(_))), "truncation to {len} bytes accepted");
        }
        // garbage and a future format version
        assert!(ShardStore::read_snapshot(config.clone(), &mut &b"hello world, not a snapshot"[..]).is_err());
        let mut future = snap.clone();
        future[8] = 9;
        let e = ShardStore::read_snapshot(config, &mut future.as_slice()).unwrap_err();
        assert!(e.to_string().contains("format version 9"), "{e}");
    }

    #[test]
    fn concurrent_apply_index_search_snapshot() {
        let dim = 8;
        let mut rng = Rng(3);
        let data = clustered(&mut rng, 4000, dim, 10);
        let s = std::sync::Arc::new(ShardStore::new(hnsw_cfg(dim, Metric::Dot)));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let indexer = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if s.index_step(256) == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let searcher = {
            let (s, stop) = (s.clone(), stop.clone());
            let q = data[..4 * dim].to_vec();
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !stop.load(Ordering::Acquire) || rounds < 5 {
                    for hits in s.search(&q, 4, 10, None, None, false) {
                        let ids: HashSet<_> = hits.iter().map(|h| h.id.clone()).collect();
                        assert_eq!(ids.len(), hits.len());
                    }
                    let mut b = Vec::new();
                    s.write_snapshot(&mut b).unwrap();
                    let r = ShardStore::read_snapshot(s.config().clone(), &mut b.as_slice()).unwrap();
                    assert!(r.count() <= 4000);
                    rounds += 1;
                }
            })
        };
        for (c, chunk) in data.chunks(200 * dim).enumerate() {
            let ops = chunk
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, x)| up((c * 200 + i) as u64, 1 + c as u64, x.to_vec(), None))
                .collect();
            s.apply(&batch(ops));
        }
        stop.store(true, Ordering::Release);
        indexer.join().unwrap();
        searcher.join().unwrap();
        while s.index_step(1000) > 0 {}
        assert_eq!((s.count(), s.unindexed()), (4000, 0));
        let res = s.search(&data[..dim], 1, 4000, None, Some(4000), false);
        assert_eq!(res[0].len(), 4000);
    }

    /// Loads `n` uniform random vectors of `dim` as ids 0..n with payload {"even": i % 2 == 0}, in chunks.
    fn load_random(store: &ShardStore, rng: &mut Rng, n: usize) {
        let dim = store.config().dim;
        for lo in (0..n).step_by(10_000) {
            let ops = (lo..(lo + 10_000).min(n))
                .map(|i| up(i as u64, 1, (0..dim).map(|_| rng.unit()).collect(), Some(json!({"even": i % 2 == 0}))))
                .collect();
            store.apply_owned(batch(ops));
        }
    }

    /// Runs `search` on this thread while another cancels `token` after `after`; returns the search's
    /// result and how long after the cancel it returned.
    fn cancel_during<T: Send>(
        token: &CancelToken,
        after: std::time::Duration,
        search: impl FnOnce() -> T + Send,
    ) -> (T, std::time::Duration) {
        use std::time::Instant;
        let cancelled_at: OnceLock<Instant> = OnceLock::new();
        let (out, done) = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(after);
                cancelled_at.get_or_init(Instant::now);
                token.cancel();
            });
            let out = search();
            (out, Instant::now())
        });
        let at = *cancelled_at.get().expect("the canceller ran");
        (out, done.saturating_duration_since(at))
    }

    #[test]
    fn cancelled_token_stops_before_any_work() {
        let dim = 8;
        let mut rng = Rng(17);
        let data = clustered(&mut rng, 3000, dim, 5);
        let f = Filter::parse(&json!({"even": true})).unwrap();
        for config in [cfg(dim, Metric::Cosine, IndexConfig::Flat), hnsw_cfg(dim, Metric::Cosine)] {
            let s = ShardStore::new(config);
            load(&s, &data);
            s.index_step(3000);
            let t = CancelToken::new();
            t.cancel();
            let expired = CancelToken::with_deadline(std::time::Instant::now());
            for token in [&t, &expired] {
                for filter in [None, Some(&f)] {
                    let r = s.search_cancellable(&data[..4 * dim], 4, 5, filter, None, true, token);
                    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
                }
                // even an empty request reports the cancellation
                assert!(matches!(s.search_cancellable(&[], 0, 5, None, None, false, token), Err(Error::Cancelled)));
            }
            let e = s.search_cancellable(&data[..dim], 1, 5, None, None, false, &t).unwrap_err();
            assert!(e.to_string().contains("cancelled") && e.to_string().contains("deadline"), "{e}");
        }
    }

    #[test]
    fn uncancelled_search_cancellable_equals_search() {
        let dim = 12;
        let mut rng = Rng(23);
        let data = clustered(&mut rng, 8000, dim, 20);
        let queries = clustered(&mut rng, 64, dim, 20);
        let far = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        let filters = [
            None,
            Some(Filter::parse(&json!({"even": true})).unwrap()),
            Some(Filter::parse(&json!({"bucket": 3})).unwrap()),
            Some(Filter::parse(&json!({"i": {"$in": [5, 17, 4000]}})).unwrap()),
        ];
        for index in
            [IndexConfig::Flat, IndexConfig::Hnsw { m: 12, ef_construction: 100, quantization: Quantization::None }]
        {
            let s = ShardStore::new(cfg(dim, Metric::L2, index));
            load(&s, &data);
            s.index_step(6000); // some points pending: graph + pending scan
            for f in &filters {
                for (nq, ef) in [(1, None), (64, None), (64, Some(300)), (3, Some(20))] {
                    let q = &queries[..nq * dim];
                    let want = s.search(q, nq, 10, f.as_ref(), ef, true);
                    for token in [CancelToken::new(), CancelToken::with_deadline(far), CancelToken::never()] {
                        let got = s.search_cancellable(q, nq, 10, f.as_ref(), ef, true, &token).unwrap();
                        assert_eq!(got, want, "{index:?} {f:?} nq={nq} ef={ef:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn plan_reports_the_access_path() {
        let dim = 12;
        let mut rng = Rng(29);
        let data = clustered(&mut rng, 8000, dim, 20);
        let flat = ShardStore::new(cfg(dim, Metric::L2, IndexConfig::Flat));
        load(&flat, &data);
        assert_eq!(flat.plan(None, 10, None), AccessPath::Exact);
        let s = ShardStore::new(hnsw_cfg(dim, Metric::L2));
        assert_eq!(s.plan(None, 10, None), AccessPath::Exact); // empty
        load(&s, &data);
        assert_eq!(s.plan(None, 10, None), AccessPath::Exact); // nothing indexed yet
        let unindexed_cost = s.search_cost(None, 10, None);
        assert_eq!(unindexed_cost, exact_cost(&ShardShape { live: 8000, indexed: 0, dim, m: 12 }, 1.0));
        while s.index_step(4000) > 0 {}
        assert_eq!(s.plan(None, 10, None), AccessPath::Graph { ef: DEFAULT_EF });
        // The work estimate follows the chosen path: a graph walk is cheaper than the scan it replaced,
        // and a wider beam costs more.
        let graph_cost = s.search_cost(None, 10, None);
        assert!(graph_cost > 0.0 && graph_cost < unindexed_cost, "{graph_cost} vs {unindexed_cost}");
        assert!(s.search_cost(None, 10, Some(40)) < graph_cost);
        assert_eq!(flat.search_cost(None, 10, None), unindexed_cost);
        assert_eq!(s.plan(None, 10, Some(40)), AccessPath::Graph { ef: 40 });
        assert_eq!(s.plan(None, 60, Some(40)), AccessPath::Graph { ef: 60 });
        let broad = Filter::parse(&json!({"even": true})).unwrap();
        assert_eq!(s.plan(Some(&broad), 10, None), AccessPath::Graph { ef: DEFAULT_EF });
        let selective = Filter::parse(&json!({"bucket": 3})).unwrap();
        assert_eq!(s.plan(Some(&selective), 10, None), AccessPath::Exact);
        // a match-all filter is no filter
        let all = Filter::parse(&json!({})).unwrap();
        assert_eq!(s.plan(Some(&all), 10, None), s.plan(None, 10, None));
        // a small shard is scanned
        let small = ShardStore::new(hnsw_cfg(dim, Metric::L2));
        load(&small, &data[..1000 * dim]);
        small.index_step(1000);
        assert_eq!(small.plan(None, 10, None), AccessPath::Exact);
    }

    #[test]
    fn large_exact_search_stops_soon_after_cancel() {
        let (n, dim, nq) = (200_000, 128, 64);
        let mut rng = Rng(31);
        let s = ShardStore::new(cfg(dim, Metric::L2, IndexConfig::Flat));
        load_random(&s, &mut rng, n);
        let queries: Vec<f32> = (0..nq * dim).map(|_| rng.unit()).collect();
        let even = Filter::parse(&json!({"even": true})).unwrap();
        for filter in [None, Some(&even)] {
            assert_eq!(s.plan(filter, 10, None), AccessPath::Exact);
            let token = CancelToken::new();
            let (r, late) = cancel_during(&token, std::time::Duration::from_millis(20), || {
                s.search_cancellable(&queries, nq, 10, filter, None, false, &token)
            });
            assert!(matches!(r, Err(Error::Cancelled)), "{filter:?}: {:?}", r.map(|h| h.len()));
            println!("filtered={}: returned {late:?} after the cancel", filter.is_some());
            // nominally within milliseconds; generous for a loaded machine
            // `Cancelled` (not the full result) is the proof it stopped; how soon is a timing, for bench/, not here.
        }
        // a deadline works the same way
        let token = CancelToken::with_deadline(std::time::Instant::now() + std::time::Duration::from_millis(20));
        let r = s.search_cancellable(&queries, nq, 10, None, None, false, &token);
        assert!(matches!(r, Err(Error::Cancelled)));
    }

    #[test]
    fn int8_store_rescores_to_exact_distances_and_survives_a_snapshot() {
        let (n, dim, nq, k) = (8_000, 32, 40, 10);
        for metric in [Metric::Cosine, Metric::L2] {
            let mut rng = Rng(91);
            let config =
                cfg(dim, metric, IndexConfig::Hnsw { m: 12, ef_construction: 64, quantization: Quantization::Int8 });
            let s = ShardStore::new(config.clone());
            load_random(&s, &mut rng, n);
            while s.index_step(n) > 0 {}
            assert!(s.inner.read().arena.quantizer().is_some(), "trained once {TRAIN_ROWS} rows exist");
            let queries: Vec<f32> = (0..nq * dim).map(|_| rng.unit()).collect();
            let never = CancelToken::never();
            let exact = s.search_exact_cancellable(&queries, nq, k, None, false, &never).unwrap();
            let search = |rescore: Rescore| {
                s.search_impl(&queries, nq, k, None, Some(64), false, false, rescore, &never).unwrap()
            };
            let rescored = search(Rescore::default());
            let raw = search(Rescore { enabled: false, oversampling: 1.0 });
            let (mut hit, mut hit_raw) = (0, 0);
            for ((e, r), w) in exact.iter().zip(&rescored).zip(&raw) {
                assert_eq!(r.len(), k);
                assert_eq!(w.len(), k);
                let want: HashSet<&PointId> = e.iter().map(|h| &h.id).collect();
                hit += r.iter().filter(|h| want.contains(&h.id)).count();
                hit_raw += w.iter().filter(|h| want.contains(&h.id)).count();
                // Rescored distances are the float distances of the same points.
                for h in r {
                    if let Some(x) = e.iter().find(|x| x.id == h.id) {
                        assert!((x.distance - h.distance).abs() < 1e-5, "{metric:?}: {} vs {}", x.distance, h.distance);
                    }
                }
            }
            let (recall, recall_raw) = (hit as f64 / (nq * k) as f64, hit_raw as f64 / (nq * k) as f64);
            // The same graph parameters on floats: the bar quantized traversal is held to.
            let plain = ShardStore::new(cfg(
                dim,
                metric,
                IndexConfig::Hnsw { m: 12, ef_construction: 64, quantization: Quantization::None },
            ));
            load_random(&plain, &mut Rng(91), n);
            while plain.index_step(n) > 0 {}
            let floats =
                plain.search_impl(&queries, nq, k, None, Some(64), false, false, Rescore::default(), &never).unwrap();
            let hit_float: usize = exact
                .iter()
                .zip(&floats)
                .map(|(e, f)| f.iter().filter(|h| e.iter().any(|x| x.id == h.id)).count())
                .sum();
            let recall_float = hit_float as f64 / (nq * k) as f64;
            println!(
                "{metric:?}: recall@{k} rescored {recall:.3}, codes only {recall_raw:.3}, floats {recall_float:.3}"
            );
            assert!(recall >= recall_float - 0.02, "{metric:?}: rescored recall {recall} vs floats {recall_float}");
            assert!(recall >= recall_raw, "{metric:?}: rescoring lowered recall");
            // A snapshot carries no codes; the restored store trains the same quantizer from the same rows.
            let mut buf = Vec::new();
            s.write_snapshot(&mut buf).unwrap();
            let back = ShardStore::read_snapshot(config, &mut buf.as_slice()).unwrap();
            assert_eq!(back.inner.read().arena.quantizer(), s.inner.read().arena.quantizer());
            let again =
                back.search_impl(&queries, nq, k, None, Some(64), false, false, Rescore::default(), &never).unwrap();
            let ids = |r: &Vec<Vec<Hit>>| {
                r.iter().map(|l| l.iter().map(|h| h.id.clone()).collect::<Vec<_>>()).collect::<Vec<_>>()
            };
            assert_eq!(ids(&again), ids(&rescored), "{metric:?}: same graph and codes after the snapshot");
        }
    }

    #[test]
    fn on_disk_stores_answer_like_memory_stores_and_restore_onto_disk() {
        let (n, dim, nq, k) = (6_000, 24, 20, 10);
        let dir = std::env::temp_dir().join(format!("shoal-store-on-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for quantization in [Quantization::None, Quantization::Int8] {
            let index = IndexConfig::Hnsw { m: 12, ef_construction: 64, quantization };
            let mem = ShardStore::new(cfg(dim, Metric::Cosine, index));
            let config = ShardConfig { on_disk: true, ..cfg(dim, Metric::Cosine, index) };
            let disk = ShardStore::with_vector_dir(config.clone(), Some(dir.clone()));
            for s in [&mem, &disk] {
                load_random(s, &mut Rng(17), n);
                while s.index_step(n) > 0 {}
            }
            let (heap, mapped) = disk.inner.read().arena.chunk_bytes();
            assert!(heap == 0 && mapped >= n * dim * 4, "{quantization:?}: heap {heap}, mapped {mapped}");
            assert_eq!(mem.inner.read().arena.chunk_bytes().1, 0);
            let mut rng = Rng(3);
            let queries: Vec<f32> = (0..nq * dim).map(|_| rng.unit()).collect();
            let never = CancelToken::never();
            let run = |s: &ShardStore| {
                s.search_impl(&queries, nq, k, None, Some(48), false, false, Rescore::default(), &never).unwrap()
            };
            // Exact answers are the same; graph answers (each store draws its own levels) are as good.
            let exact = |s: &ShardStore| s.search_exact_cancellable(&queries, nq, k, None, false, &never).unwrap();
            let truth = exact(&mem);
            assert_eq!(exact(&disk), truth, "{quantization:?}: the same vectors");
            assert_eq!(disk.digest(), mem.digest());
            let want = run(&disk);
            let hits: usize =
                truth.iter().zip(&want).map(|(t, r)| r.iter().filter(|h| t.iter().any(|x| x.id == h.id)).count()).sum();
            assert!(hits as f64 >= 0.9 * (nq * k) as f64, "{quantization:?}: recall {hits}/{}", nq * k);
            // A snapshot of the disk store restores onto disk (streamed) and answers the same again.
            let mut buf = Vec::new();
            disk.write_snapshot(&mut buf).unwrap();
            let back = ShardStore::read_snapshot_with(config.clone(), Some(dir.clone()), &mut buf.as_slice()).unwrap();
            assert_eq!(back.inner.read().arena.chunk_bytes().0, 0, "restored rows are mapped");
            assert_eq!(run(&back), want, "{quantization:?}: the same graph and vectors after a restore");
            assert_eq!(back.inner.read().arena.quantizer(), mem.inner.read().arena.quantizer());
        }
        // Scratch files are unlinked at once: the directory stays empty.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn small_int8_store_searches_floats_until_trained() {
        let dim = 8;
        let mut rng = Rng(5);
        let s = ShardStore::new(cfg(
            dim,
            Metric::L2,
            IndexConfig::Hnsw { m: 8, ef_construction: 32, quantization: Quantization::Int8 },
        ));
        load_random(&s, &mut rng, TRAIN_ROWS - 1);
        while s.index_step(TRAIN_ROWS) > 0 {}
        assert!(s.inner.read().arena.quantizer().is_none());
        let q: Vec<f32> = (0..dim).map(|_| rng.unit()).collect();
        let got = s.search(&q, 1, 5, None, None, false);
        let want = s.search_exact_cancellable(&q, 1, 5, None, false, &CancelToken::never()).unwrap();
        assert_eq!(got[0].len(), 5);
        assert_eq!(got[0][0].id, want[0][0].id);
        load_random(&s, &mut rng, TRAIN_ROWS); // ids 0.. again: updates append new slots
        assert!(s.inner.read().arena.quantizer().is_some());
        assert_eq!(s.inner.read().arena.code_bytes(), s.inner.read().arena.len() * dim);
    }

    #[test]
    fn large_graph_search_stops_soon_after_cancel() {
        let (n, dim, nq) = (20_000, 32, 4_000);
        let mut rng = Rng(37);
        let s = ShardStore::new(cfg(
            dim,
            Metric::L2,
            IndexConfig::Hnsw { m: 12, ef_construction: 64, quantization: Quantization::None },
        ));
        load_random(&s, &mut rng, n);
        while s.index_step(n) > 0 {}
        let queries: Vec<f32> = (0..nq * dim).map(|_| rng.unit()).collect();
        let even = Filter::parse(&json!({"even": true})).unwrap();
        // unfiltered with a large beam; filtered (bitset for this batch) with a beam the model still sends to
        // the graph
        for (filter, ef) in [(None, 500), (Some(&even), 200)] {
            assert_eq!(s.plan(filter, 10, Some(ef)), AccessPath::Graph { ef }, "{filter:?}");
            let token = CancelToken::new();
            let (r, late) = cancel_during(&token, std::time::Duration::from_millis(20), || {
                s.search_cancellable(&queries, nq, 10, filter, Some(ef), false, &token)
            });
            assert!(matches!(r, Err(Error::Cancelled)), "{filter:?}: {:?}", r.map(|h| h.len()));
            println!("filtered={}: returned {late:?} after the cancel", filter.is_some());
            // `Cancelled` (not the full result) is the proof it stopped; how soon is a timing, for bench/, not here.
        }
        // lazily filtered single query: cancelled before it starts
        let token = CancelToken::new();
        token.cancel();
        let r = s.search_cancellable(&queries[..dim], 1, 10, Some(&even), Some(200), false, &token);
        assert!(matches!(r, Err(Error::Cancelled)));
    }

    #[test]
    fn payload_indexes_answer_exactly_what_the_filter_evaluation_answers() {
        // Random payloads, updates, patches and deletes; every filter gives the same counts, scroll pages
        // and search results with the indexes as without, before and after a partial build.
        let dim = 8;
        let langs = ["en", "fr", "de", "es"];
        let mut rng = Rng(11);
        let plain = ShardStore::new(hnsw_cfg(dim, Metric::L2));
        let indexed = ShardStore::new(hnsw_cfg(dim, Metric::L2));
        let wanted = vec![
            ("lang".to_string(), IndexKind::Keyword),
            ("year".to_string(), IndexKind::Integer),
            ("score".to_string(), IndexKind::Float),
            ("ok".to_string(), IndexKind::Bool),
            ("meta.tag".to_string(), IndexKind::Keyword),
        ];
        let mut ver = 1;
        let step = |ops: Vec<WriteOp>| {
            plain.apply(&batch(ops.clone()));
            indexed.apply(&batch(ops));
        };
        for round in 0..4 {
            let mut ops = Vec::new();
            for _ in 0..600 {
                let id = rng.next() % 1500;
                ver += 1;
                let vector: Vec<f32> = (0..dim).map(|_| rng.gauss()).collect();
                let lang = langs[(rng.next() % 4) as usize];
                let payload = match rng.next() % 6 {
                    0 => None,
                    1 => Some(json!({"lang": [lang, "xx"], "year": 2000 + (rng.next() % 25) as i64})),
                    2 => Some(json!({"lang": 7, "year": 2010.5, "ok": "yes"})),
                    _ => Some(json!({
                        "lang": lang,
                        "year": 2000 + (rng.next() % 25) as i64,
                        "score": rng.unit() as f64,
                        "ok": rng.next().is_multiple_of(2),
                        "meta": {"tag": format!("t{}", rng.next() % 30)},
                    })),
                };
                ops.push(match rng.next() % 10 {
                    0 => del(id, ver),
                    1 => patch(id, ver, json!({"lang": "fr", "year": 1999})),
                    _ => up(id, ver, vector, payload),
                });
            }
            step(ops);
            if round == 0 {
                // an index created on a store with points starts unbuilt
                assert!(indexed.set_payload_indexes(&wanted));
                assert!(indexed.payload_indexes().iter().all(|i| !i.ready && i.built == 0));
            }
            if round == 1 {
                // half built: the indexes answer nothing yet (the filters are evaluated) and results agree
                indexed.build_payload_indexes(300);
                assert!(indexed.payload_indexes().iter().all(|i| !i.ready));
            }
            if round >= 2 {
                while !indexed.build_payload_indexes(500) {}
                assert!(indexed.payload_indexes().iter().all(|i| i.ready && i.built == i.slots));
            }
            plain.index_step(usize::MAX);
            indexed.index_step(usize::MAX);
            let filters = [
                json!({"lang": "en"}),
                json!({"lang": {"$in": ["fr", "de"]}}),
                json!({"lang": {"$ne": "en"}}),
                json!({"lang": {"$nin": ["en", "xx"]}}),
                json!({"lang": {"$gte": "en", "$lt": "f"}}),
                json!({"year": {"$gte": 2010, "$lt": 2015}}),
                json!({"year": 2010.5}),
                json!({"year": {"$gt": 2010}, "lang": "en"}),
                json!({"score": {"$lt": 0.1}}),
                json!({"ok": true}),
                json!({"ok": {"$ne": false}}),
                json!({"meta.tag": "t3"}),
                json!({"$or": [{"lang": "de"}, {"year": 2001}]}),
                json!({"$or": [{"lang": "de"}, {"unindexed": 1}]}),
                json!({"$not": {"lang": "en"}}),
                json!({"lang": "en", "ok": {"$exists": true}}),
                json!({"lang": 7}),
                json!({"year": {"$gt": "a"}}),
            ];
            let queries: Vec<f32> = (0..3 * dim).map(|_| rng.gauss()).collect();
            for fj in &filters {
                let f = Filter::parse(fj).unwrap();
                assert_eq!(indexed.count_matching(&f), plain.count_matching(&f), "count of {fj}");
                let ids = |st: &ShardStore| -> Vec<PointId> {
                    st.scroll(None, 100_000, Some(&f), false).into_iter().map(|r| r.id).collect()
                };
                assert_eq!(ids(&indexed), ids(&plain), "scroll of {fj}");
                let exact = |st: &ShardStore| -> Vec<Vec<PointId>> {
                    st.search_exact_cancellable(&queries, 3, 10, Some(&f), false, &CancelToken::never())
                        .unwrap()
                        .into_iter()
                        .map(|h| h.into_iter().map(|h| h.id).collect())
                        .collect()
                };
                assert_eq!(exact(&indexed), exact(&plain), "exact search with {fj}");
                let approx = indexed.search(&queries, 3, 10, Some(&f), Some(200), false);
                let want = exact(&plain);
                for (got, want) in approx.iter().zip(&want) {
                    assert_eq!(got.len(), want.len(), "filtered search returns every match up to k: {fj}");
                    let hit = got.iter().filter(|h| want.contains(&h.id)).count();
                    assert!(hit * 10 >= want.len() * 9, "recall {hit}/{} with {fj}", want.len());
                }
            }
        }
    }
}
