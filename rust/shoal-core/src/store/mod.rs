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

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};

#[cfg(doc)]
use crate::Error;
use crate::arena::{VectorArena, VectorStorage};
#[cfg(doc)]
use crate::cancel::CancelToken;
use crate::dedup::DedupTable;
use crate::hlc::Version;
use crate::hnsw::{Hnsw, HnswParams};
use crate::payload_index::PayloadIndexes;
use crate::{IndexConfig, PointId, ShardConfig};

/// A JSON object payload.
pub type Payload = Map<String, Value>;

pub use crate::cost::{DEFAULT_EF, EXACT_SCAN_MAX};
/// The payload of points without one, for filter evaluation.
static EMPTY_PAYLOAD: std::sync::LazyLock<Payload> = std::sync::LazyLock::new(Map::new);

mod apply;
mod batch;
mod digest;
mod index;
mod scroll;
mod search;
mod snapshot;

pub use batch::{ApplyOutcome, WriteBatch, WriteOp};
pub use index::PayloadIndexInfo;
pub use scroll::PointRecord;
pub use search::Hit;
pub use snapshot::{SNAPSHOT_FORMAT, StoreCapture};

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

impl fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardStore").field("config", &self.config).field("stats", &self.stats()).finish()
    }
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

    fn live(&self) -> usize {
        self.ids.len()
    }

    /// The payload of `slot`, or an empty object (what filters see for a point without payload).
    #[inline]
    fn payload_or_empty(&self, slot: u32) -> &Payload {
        self.slots[slot as usize].payload.as_deref().unwrap_or(&EMPTY_PAYLOAD)
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

    /// The largest version applied or restored (`Version::ZERO` for an empty store). A node observes it into
    /// its clock at startup.
    pub fn max_version(&self) -> Version {
        self.inner.read().max_version
    }

    /// Number of live points.
    pub fn count(&self) -> usize {
        self.inner.read().live()
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
}

#[cfg(test)]
mod tests;
