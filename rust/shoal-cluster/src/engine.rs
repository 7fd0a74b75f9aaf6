//! The engine of one node: owns group 0 (the catalog), the local shard groups, the HLC and the indexer,
//! and coordinates every read and write across the shards of a collection.
//!
//! ```text
//!   gRPC handler ──> Engine ──┬─> group 0 (RaftGroup + Catalog)      create / drop collection
//!                             ├─> shard groups (RaftGroup + ShardApp) write batches, one per shard
//!                             └─> ShardStore (read side)              get / count / search, merged here
//!   catalog change ──> reconcile task ──> reconciler::plan ──> open / remove shard groups
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rayon::prelude::*;
use serde_json::{Map, Value};
use shoal_api::collections::CollectionSpec;
use shoal_api::commands::{MetaCommand, decode_meta_reply, decode_write_reply, encode_meta, encode_write_batch};
use shoal_core::filter::Filter;
use shoal_core::hlc::Hlc;
use shoal_core::store::{Hit, PointRecord, WriteBatch, WriteOp};
use shoal_core::{PointId, validate};
use shoal_raft::{GroupOptions, RaftGroup};
use tokio::sync::Mutex as AsyncMutex;

use crate::catalog::{Catalog, CollectionEntry};
use crate::indexer::Indexer;
use crate::reconciler::{self, Action, ReplicaKey};
use crate::shard_app::ShardApp;
use crate::{Error, Result};

/// Write consistency levels (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteLevel {
    /// Returns when the shard leader accepted the batch.
    Eventual,
    /// Returns when the batch is committed on a majority of the shard's voters.
    #[default]
    Quorum,
    /// Returns when committed, applied on the leader and replicated to every voter.
    Strong,
}

impl WriteLevel {
    /// Parses `eventual`, `quorum` or `strong`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "eventual" => Ok(WriteLevel::Eventual),
            "quorum" | "" => Ok(WriteLevel::Quorum),
            "strong" => Ok(WriteLevel::Strong),
            o => Err(Error::InvalidArgument(format!(
                "unknown write consistency {o:?}: expected \"eventual\", \"quorum\" or \"strong\""
            ))),
        }
    }
}

/// Read consistency levels (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLevel {
    /// Any replica.
    Eventual,
    /// A replica that has applied this client's last write.
    #[default]
    Session,
    /// The leader after a read-index round (linearizable).
    Strong,
}

impl ReadLevel {
    /// Parses `eventual`, `session` or `strong`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "eventual" => Ok(ReadLevel::Eventual),
            "session" | "" => Ok(ReadLevel::Session),
            "strong" => Ok(ReadLevel::Strong),
            o => Err(Error::InvalidArgument(format!(
                "unknown read consistency {o:?}: expected \"eventual\", \"session\" or \"strong\""
            ))),
        }
    }
}

/// Static configuration of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id (>= 1), unique in the cluster.
    pub node_id: u64,
    /// Root of this node's data: `meta/` and `shards/`.
    pub data_dir: PathBuf,
    /// The address peers and clients use to reach this node.
    pub advertise: String,
    /// Raft timing for every group.
    pub raft: GroupOptions,
    /// Shards per collection when the request says 0.
    pub default_shards: u32,
    /// This node's failure zone ("" = none).
    pub zone: String,
}

/// One local shard replica: its Raft group and its state machine.
struct ShardReplica {
    /// The shard's Raft group (single voter for now).
    group: RaftGroup,
    /// The shard's state machine; holds the store.
    app: Arc<ShardApp>,
}

/// A collection whose every shard is open locally.
struct LocalCollection {
    /// Catalog entry it was opened from.
    entry: CollectionEntry,
    /// Shard replicas, indexed by shard number; `len() == entry.spec.shards`.
    shards: Vec<Arc<ShardReplica>>,
}

/// The node's engine. Cheap to share behind `Arc`.
pub struct Engine {
    /// Static configuration.
    cfg: EngineConfig,
    /// Group 0.
    meta: RaftGroup,
    /// Group 0's state machine.
    catalog: Arc<Catalog>,
    /// Open replicas by key; changed only by `reconcile` (under `reconcile_lock`).
    replicas: RwLock<BTreeMap<ReplicaKey, Arc<ShardReplica>>>,
    /// Collections fully open locally, by name; rebuilt after each reconcile.
    collections: RwLock<BTreeMap<String, Arc<LocalCollection>>>,
    /// Serialises reconcile passes.
    reconcile_lock: AsyncMutex<()>,
    /// Version clock for writes.
    hlc: Hlc,
    /// Background index builder.
    indexer: Indexer,
    /// Set once shutdown began; new requests are refused.
    closing: AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("node_id", &self.cfg.node_id).finish_non_exhaustive()
    }
}

fn shard_dir(root: &Path, key: &ReplicaKey) -> PathBuf {
    root.join("shards").join(format!("{}@{}", key.0, key.1)).join(key.2.to_string())
}

impl Engine {
    /// Opens (or creates) the node's state under `cfg.data_dir`, recovers group 0 and every local shard
    /// group, and starts the reconciler and the indexer.
    pub async fn start(cfg: EngineConfig) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(cfg.data_dir.join("shards")).map_err(|e| Error::Internal(e.to_string()))?;
        let catalog = Arc::new(Catalog::default());
        let meta = RaftGroup::open(
            &cfg.data_dir.join("meta"),
            cfg.node_id,
            cfg.advertise.clone(),
            catalog.clone(),
            cfg.raft.clone(),
        )
        .await?;
        meta.wait_leader(Duration::from_secs(30)).await?;
        meta.ensure_linearizable().await?;
        let engine = Arc::new(Engine {
            hlc: Hlc::new(cfg.node_id as u32),
            cfg,
            meta,
            catalog,
            replicas: RwLock::default(),
            collections: RwLock::default(),
            reconcile_lock: AsyncMutex::new(()),
            indexer: Indexer::start(),
            closing: AtomicBool::new(false),
        });
        engine.register_self(Duration::from_secs(30)).await?;
        engine.reconcile().await?;
        engine.remove_orphan_dirs();
        let weak = Arc::downgrade(&engine);
        let mut changes = engine.catalog.subscribe();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(engine) = weak.upgrade() else { break };
                if engine.closing.load(Ordering::Acquire) {
                    break;
                }
                if let Err(e) = engine.reconcile().await {
                    tracing::error!(error = %e, "reconcile failed");
                }
            }
        });
        Ok(engine)
    }

    /// Adds this node to the registry in group 0, or updates its address and version there.
    async fn register_self(&self, timeout: Duration) -> Result<()> {
        let me = self.node_record();
        if self.catalog.node(me.id).as_ref() == Some(&me) {
            return Ok(());
        }
        self.meta_write(&MetaCommand::UpsertNode(me), timeout).await?.map_err(Error::Internal)?;
        Ok(())
    }

    /// This node's registry record.
    fn node_record(&self) -> shoal_api::internal::NodeRecord {
        shoal_api::internal::NodeRecord {
            id: self.cfg.node_id,
            address: self.cfg.advertise.clone(),
            zone: self.cfg.zone.clone(),
            state: "up".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    /// The advertised address.
    pub fn address(&self) -> &str {
        &self.cfg.advertise
    }

    /// Whether this node leads group 0.
    pub fn is_meta_leader(&self) -> bool {
        self.meta.is_leader()
    }

    /// Makes local replicas match the catalog (see `reconciler::plan`).
    async fn reconcile(&self) -> Result<()> {
        let _guard = self.reconcile_lock.lock().await;
        let entries: BTreeMap<String, CollectionEntry> =
            self.catalog.list().into_iter().map(|e| (e.spec.name.clone(), e)).collect();
        let want = reconciler::desired(&entries.iter().map(|(n, e)| (n.clone(), (e.uid, e.spec.shards))).collect());
        let have: BTreeSet<ReplicaKey> = self.replicas.read().keys().cloned().collect();
        for action in reconciler::plan(&want, &have) {
            match action {
                Action::Remove(key) => {
                    let replica = self.replicas.write().remove(&key);
                    self.rebuild_views(&entries);
                    if let Some(r) = replica
                        && let Err(e) = r.group.shutdown().await
                    {
                        tracing::warn!(?key, error = %e, "shard group shutdown failed");
                    }
                    let dir = shard_dir(&self.cfg.data_dir, &key);
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not remove shard data");
                    }
                    // The collection's directory goes with its last shard (fails harmlessly while not empty).
                    if let Some(parent) = dir.parent() {
                        let _ = std::fs::remove_dir(parent);
                    }
                    tracing::info!(collection = %key.0, shard = key.2, "shard replica removed");
                }
                Action::Open(key) => {
                    let entry = &entries[&key.0];
                    let app = Arc::new(ShardApp::new(entry.spec.shard.clone(), Box::new(self.indexer.waker())));
                    let dir = shard_dir(&self.cfg.data_dir, &key);
                    let group = RaftGroup::open(
                        &dir,
                        self.cfg.node_id,
                        self.cfg.advertise.clone(),
                        app.clone(),
                        self.cfg.raft.clone(),
                    )
                    .await?;
                    group.wait_leader(Duration::from_secs(30)).await?;
                    // Never stamp a write older than what this shard already holds (e.g. after a clock step back).
                    self.hlc.observe(app.store().max_version());
                    tracing::info!(collection = %key.0, shard = key.2, applied = app.applied_index(), "shard replica open");
                    self.replicas.write().insert(key, Arc::new(ShardReplica { group, app }));
                }
            }
        }
        self.rebuild_views(&entries);
        Ok(())
    }

    /// Rebuilds `collections` and the indexer's shard list from `replicas`.
    fn rebuild_views(&self, entries: &BTreeMap<String, CollectionEntry>) {
        let replicas = self.replicas.read();
        let mut views = BTreeMap::new();
        for (name, entry) in entries {
            let shards: Option<Vec<_>> =
                (0..entry.spec.shards).map(|s| replicas.get(&(name.clone(), entry.uid, s)).cloned()).collect();
            if let Some(shards) = shards {
                views.insert(name.clone(), Arc::new(LocalCollection { entry: entry.clone(), shards }));
            }
        }
        self.indexer.set_shards(replicas.values().map(|r| r.app.clone()).collect());
        *self.collections.write() = views;
    }

    /// Deletes shard directories that belong to no catalog entry (left by a crash during a drop).
    fn remove_orphan_dirs(&self) {
        let keep: BTreeSet<String> = self.replicas.read().keys().map(|(n, uid, _)| format!("{n}@{uid}")).collect();
        let Ok(dirs) = std::fs::read_dir(self.cfg.data_dir.join("shards")) else { return };
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().to_string();
            if !keep.contains(&name) {
                tracing::warn!(dir = %name, "removing orphaned shard data");
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::NodeUnavailable(format!("node {} is shutting down", self.cfg.node_id)));
        }
        Ok(())
    }

    fn local(&self, name: &str) -> Result<Arc<LocalCollection>> {
        self.check_open()?;
        if let Some(c) = self.collections.read().get(name) {
            return Ok(c.clone());
        }
        if self.catalog.get(name).is_some() {
            return Err(Error::ShardUnavailable(format!("collection {name:?} is still opening on this node")));
        }
        Err(Error::CollectionNotFound(name.to_string()))
    }

    /// Creates a collection and returns once its shards are open locally.
    pub async fn create_collection(
        &self,
        req: &shoal_api::v1::CreateCollectionRequest,
        timeout: Duration,
    ) -> Result<CollectionSpec> {
        self.check_open()?;
        let spec = CollectionSpec::from_create(req, self.cfg.default_shards.max(1), 1)?;
        if spec.replication_factor > 1 {
            return Err(Error::InvalidArgument(format!(
                "replication_factor {} needs at least that many nodes; this cluster has 1",
                spec.replication_factor
            )));
        }
        let deadline = Instant::now() + timeout;
        let reply = self.meta_write(&MetaCommand::CreateCollection(spec.clone()), timeout).await?;
        if let Err(msg) = reply {
            return Err(if msg.contains("already exists") {
                Error::CollectionExists(spec.name)
            } else {
                Error::Internal(msg)
            });
        }
        while !self.collections.read().contains_key(&spec.name) {
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "collection {:?} created but its shards did not open in time",
                    spec.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(spec)
    }

    async fn meta_write(&self, cmd: &MetaCommand, timeout: Duration) -> Result<std::result::Result<bool, String>> {
        let bytes = tokio::time::timeout(timeout, self.meta.write(encode_meta(cmd)))
            .await
            .map_err(|_| Error::Timeout("metadata write".into()))??;
        Ok(decode_meta_reply(&bytes)?)
    }

    /// The spec of a collection.
    pub fn get_collection(&self, name: &str) -> Result<CollectionSpec> {
        self.check_open()?;
        self.catalog.get(name).map(|e| e.spec).ok_or_else(|| Error::CollectionNotFound(name.to_string()))
    }

    /// Every collection, by name.
    pub fn list_collections(&self) -> Vec<CollectionSpec> {
        self.catalog.list().into_iter().map(|e| e.spec).collect()
    }

    /// Drops a collection and returns whether it existed; returns once its local shards are gone.
    pub async fn drop_collection(&self, name: &str, timeout: Duration) -> Result<bool> {
        self.check_open()?;
        let existed = self.meta_write(&MetaCommand::DropCollection(name.to_string()), timeout).await?;
        let deadline = Instant::now() + timeout;
        while self.collections.read().contains_key(name) {
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!("collection {name:?} dropped but its shards are still closing")));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(existed.unwrap_or(false))
    }

    /// Stamps `ops` with one version, splits them by shard and proposes each part to its shard group;
    /// returns the number of ops applied once every part is committed at `level`.
    async fn write(
        &self,
        col: &LocalCollection,
        ops: Vec<(PointId, OpBody)>,
        _level: WriteLevel,
        timeout: Duration,
    ) -> Result<u64> {
        if ops.is_empty() {
            return Ok(0);
        }
        let version = self.hlc.now();
        let n_shards = col.entry.spec.shards;
        let mut parts: Vec<Vec<WriteOp>> = (0..n_shards).map(|_| Vec::new()).collect();
        for (id, body) in ops {
            let s = id.shard(n_shards) as usize;
            parts[s].push(match body {
                OpBody::Upsert(vector, payload) => WriteOp::Upsert { id, version, vector, payload },
                OpBody::Delete => WriteOp::Delete { id, version },
                OpBody::Patch(patch) => WriteOp::PatchPayload { id, version, patch },
            });
        }
        // With one voter per shard every level means "committed and applied on this node"; the levels
        // differ once shards have followers (replication issue).
        let futs = parts.into_iter().enumerate().filter(|(_, p)| !p.is_empty()).map(|(s, ops)| {
            let replica = col.shards[s].clone();
            async move {
                let bytes = encode_write_batch(&WriteBatch { ops });
                let reply = replica.group.write(bytes).await?;
                Ok::<u64, Error>(decode_write_reply(&reply)?.0)
            }
        });
        let results = tokio::time::timeout(timeout, futures::future::join_all(futs)).await.map_err(|_| {
            Error::Timeout(format!("write to collection {:?} not committed within {timeout:?}", col.entry.spec.name))
        })?;
        let mut applied = 0;
        for r in results {
            applied += r?;
        }
        Ok(applied)
    }

    /// Upserts points. The whole batch is validated before anything is written.
    pub async fn upsert(
        &self,
        name: &str,
        ids: Vec<PointId>,
        vectors: Vec<f32>,
        payloads: Vec<Option<Map<String, Value>>>,
        level: WriteLevel,
        timeout: Duration,
    ) -> Result<u64> {
        let col = self.local(name)?;
        let dim = col.entry.spec.shard.dim;
        validate::check_ids(&ids, col.entry.spec.shard.id_type)?;
        if vectors.len() != ids.len() * dim {
            return Err(Error::InvalidArgument(if vectors.len().is_multiple_of(dim) {
                format!("got {} ids but {} vectors", ids.len(), vectors.len() / dim)
            } else {
                format!("vectors have {} values, not a multiple of dim {dim}", vectors.len())
            }));
        }
        validate::check_vectors(&vectors, dim, ids.len())?;
        if !payloads.is_empty() && payloads.len() != ids.len() {
            return Err(Error::InvalidArgument(format!("got {} ids but {} payloads", ids.len(), payloads.len())));
        }
        let mut payloads = payloads.into_iter();
        let ops = ids
            .into_iter()
            .zip(vectors.chunks_exact(dim))
            .map(|(id, v)| (id, OpBody::Upsert(v.to_vec(), payloads.next().flatten())))
            .collect();
        self.write(&col, ops, level, timeout).await
    }

    /// Deletes points by id (absent ids are no-ops that still leave a tombstone).
    pub async fn delete(&self, name: &str, ids: Vec<PointId>, level: WriteLevel, timeout: Duration) -> Result<u64> {
        let col = self.local(name)?;
        validate::check_ids(&ids, col.entry.spec.shard.id_type)?;
        self.write(&col, ids.into_iter().map(|id| (id, OpBody::Delete)).collect(), level, timeout).await
    }

    /// Merges `patch` into the payload of each point, key by key (LWW per key).
    pub async fn update_payload(
        &self,
        name: &str,
        ids: Vec<PointId>,
        patch: Map<String, Value>,
        level: WriteLevel,
        timeout: Duration,
    ) -> Result<u64> {
        let col = self.local(name)?;
        validate::check_ids(&ids, col.entry.spec.shard.id_type)?;
        self.write(&col, ids.into_iter().map(|id| (id, OpBody::Patch(patch.clone()))).collect(), level, timeout).await
    }

    async fn read_barrier(
        &self,
        col: &LocalCollection,
        shards: &[usize],
        level: ReadLevel,
        timeout: Duration,
    ) -> Result<()> {
        if level != ReadLevel::Strong {
            return Ok(());
        }
        let futs = shards.iter().map(|&s| {
            let r = col.shards[s].clone();
            async move { r.group.ensure_linearizable().await.map_err(|e| Error::Consistency(e.to_string())) }
        });
        let results = tokio::time::timeout(timeout, futures::future::join_all(futs))
            .await
            .map_err(|_| Error::Consistency("strong read: leadership not confirmed in time".into()))?;
        results.into_iter().collect()
    }

    /// Fetches points by id, in request order.
    pub async fn get(
        &self,
        name: &str,
        ids: Vec<PointId>,
        with_vectors: bool,
        level: ReadLevel,
        timeout: Duration,
    ) -> Result<Vec<Option<PointRecord>>> {
        let col = self.local(name)?;
        let id_type = col.entry.spec.shard.id_type;
        for (i, id) in ids.iter().enumerate() {
            if id.id_type() != id_type {
                return Err(Error::InvalidArgument(format!(
                    "ids[{i}] is a {} but the collection has id_type \"{}\"",
                    id.id_type().as_str(),
                    id_type.as_str()
                )));
            }
        }
        let n = col.entry.spec.shards;
        let all: Vec<usize> = (0..n as usize).collect();
        self.read_barrier(&col, &all, level, timeout).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            let store = col.shards[id.shard(n) as usize].app.store();
            out.push(store.get(std::slice::from_ref(id), with_vectors).pop().flatten());
        }
        Ok(out)
    }

    /// Number of live points.
    pub async fn count(&self, name: &str, level: ReadLevel, timeout: Duration) -> Result<u64> {
        let col = self.local(name)?;
        let all: Vec<usize> = (0..col.shards.len()).collect();
        self.read_barrier(&col, &all, level, timeout).await?;
        Ok(col.shards.iter().map(|s| s.app.store().count() as u64).sum())
    }

    /// (live points, live points not yet indexed), summed over shards.
    pub fn index_status(&self, name: &str) -> Result<(u64, u64)> {
        let col = self.local(name)?;
        Ok(col.shards.iter().fold((0, 0), |(p, u), s| {
            let st = s.app.store();
            (p + st.count() as u64, u + st.unindexed() as u64)
        }))
    }

    /// k-nearest-neighbour search of `nq` queries (row-major `queries`), merged over every shard.
    #[allow(clippy::too_many_arguments)]
    pub async fn search(
        &self,
        name: &str,
        queries: Vec<f32>,
        k: usize,
        filter: Option<Filter>,
        ef: Option<usize>,
        with_payload: bool,
        level: ReadLevel,
        timeout: Duration,
    ) -> Result<Vec<Vec<Hit>>> {
        let col = self.local(name)?;
        let dim = col.entry.spec.shard.dim;
        if queries.is_empty() || !queries.len().is_multiple_of(dim) {
            return Err(Error::InvalidArgument(format!(
                "queries have {} values: expected a non-empty multiple of dim {dim}",
                queries.len()
            )));
        }
        let nq = queries.len() / dim;
        validate::check_vectors(&queries, dim, nq)
            .map_err(|e| Error::InvalidArgument(e.to_string().replacen("vectors", "queries", 1)))?;
        validate::check_k(k as i64)?;
        if let Some(ef) = ef {
            validate::check_ef(ef as i64)?;
        }
        let all: Vec<usize> = (0..col.shards.len()).collect();
        self.read_barrier(&col, &all, level, timeout).await?;
        let stores: Vec<_> = col.shards.iter().map(|s| s.app.store()).collect();
        // Run on a rayon worker, not a blocking thread: the store's parallel loops then run inline for
        // small batches instead of paying a thread hand-off per loop (most of a single query's latency).
        let (tx, rx) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            let mut per_shard: Vec<Vec<Vec<Hit>>> =
                stores.par_iter().map(|s| s.search(&queries, nq, k, filter.as_ref(), ef, with_payload)).collect();
            let merged =
                if per_shard.len() == 1 { per_shard.pop().unwrap_or_default() } else { merge_top_k(per_shard, nq, k) };
            let _ = tx.send(merged);
        });
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| Error::Timeout(format!("search not finished within {timeout:?}")))?
            .map_err(|_| Error::Internal("search task panicked".into()))
    }

    /// Stops accepting requests, shuts every group down (flushing logs) and stops the indexer.
    pub async fn shutdown(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let _guard = self.reconcile_lock.lock().await;
        let replicas: Vec<_> = std::mem::take(&mut *self.replicas.write()).into_values().collect();
        self.collections.write().clear();
        for r in replicas {
            if let Err(e) = r.group.shutdown().await {
                tracing::warn!(error = %e, "shard group shutdown failed");
            }
        }
        if let Err(e) = self.meta.shutdown().await {
            tracing::warn!(error = %e, "group 0 shutdown failed");
        }
        self.indexer.stop();
    }
}

/// The body of one write operation before it is stamped and routed.
enum OpBody {
    Upsert(Vec<f32>, Option<Map<String, Value>>),
    Delete,
    Patch(Map<String, Value>),
}

/// Merges per-shard top-k lists (each ascending) into one top-k per query, de-duplicated by id.
pub fn merge_top_k(per_shard: Vec<Vec<Vec<Hit>>>, nq: usize, k: usize) -> Vec<Vec<Hit>> {
    let mut out: Vec<Vec<Hit>> = (0..nq).map(|_| Vec::with_capacity(k)).collect();
    let mut columns: Vec<std::vec::IntoIter<Vec<Hit>>> = per_shard.into_iter().map(|v| v.into_iter()).collect();
    for row in out.iter_mut() {
        let mut all: Vec<Hit> = columns.iter_mut().filter_map(|c| c.next()).flatten().collect();
        all.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        let mut seen = std::collections::HashSet::new();
        for h in all {
            if row.len() == k {
                break;
            }
            if seen.insert(h.id.clone()) {
                row.push(h);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u64, d: f32) -> Hit {
        Hit { id: PointId::Int(id), distance: d, payload: None }
    }

    #[test]
    fn merge_keeps_best_k_and_dedups() {
        let a = vec![vec![hit(1, 0.1), hit(2, 0.5)], vec![hit(7, 0.3)]];
        let b = vec![vec![hit(3, 0.2), hit(1, 0.1)], vec![]];
        let m = merge_top_k(vec![a, b], 2, 2);
        assert_eq!(m[0].iter().map(|h| h.id.clone()).collect::<Vec<_>>(), vec![PointId::Int(1), PointId::Int(3)]);
        assert_eq!(m[1].len(), 1);
    }

    #[test]
    fn levels_parse() {
        assert_eq!(WriteLevel::parse("strong").unwrap(), WriteLevel::Strong);
        assert!(WriteLevel::parse("all").unwrap_err().to_string().contains("all"));
        assert_eq!(ReadLevel::parse("").unwrap(), ReadLevel::Session);
    }
}
