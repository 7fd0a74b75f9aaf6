//! This node's shard replicas: the open ones (Raft group + state machine each), the quarantined ones (see
//! `quarantine.rs`, driven by `heal.rs`), the manifest of replicas created here, the background indexer and
//! the data dir's free space. The reconcile pass keeps them in line with the catalog.
//!
//! ```text
//!   catalog change ──> reconcile ──> reconciler::plan ──> open / initialise / remove local shard groups
//!   heal pass ──> quarantine damaged replicas ──> rebuild them from their peers (heal.rs)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use shoal_core::hlc::Hlc;
use shoal_raft::{GrpcNetwork, RaftGroup, RaftTransportService};
use tokio::sync::Mutex as AsyncMutex;

use crate::catalog::CollectionEntry;
use crate::engine::EngineConfig;
use crate::indexer::Indexer;
use crate::manifest::Manifest;
use crate::meta_plane::MetaPlane;
use crate::peer::Peers;
use crate::quarantine::Quarantine;
use crate::reconciler::{self, Action, ReplicaKey};
use crate::shard_app::ShardApp;
use crate::{Detail, Error, Result};

/// One local shard replica: its Raft group and its state machine.
pub(crate) struct ShardReplica {
    /// The group id on the transport: `<collection>@<uid>/<shard>`.
    pub(crate) gid: String,
    /// The shard's Raft group.
    pub(crate) group: RaftGroup,
    /// The shard's state machine; holds the store.
    pub(crate) app: Arc<ShardApp>,
}

/// A collection as a request sees it: its catalog entry and the replicas open on this node.
pub(crate) struct CollectionView {
    /// The catalog entry (spec, uid, placement).
    pub(crate) entry: CollectionEntry,
    /// Local replicas by shard number; `len() == entry.spec.shards`, `None` where this node holds none.
    pub(crate) local: Vec<Option<Arc<ShardReplica>>>,
}

/// `std::fs::remove_dir_all` on tokio's blocking pool: deleting a large replica takes a while and must not
/// hold a runtime worker (every other task scheduled on it would wait).
pub(crate) async fn remove_dir_all_blocking(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await.map_err(std::io::Error::other)?
}

pub(crate) fn shard_dir(root: &Path, key: &ReplicaKey) -> PathBuf {
    root.join("shards").join(format!("{}@{}", key.collection, key.uid)).join(key.shard.to_string())
}

/// Whether `dir` is a shard directory strictly inside `root/shards`: relative to it, two plain components (no
/// `..`, no root, no prefix). Collection names are validated before they reach the catalog; this checks the
/// path as well, right before anything is created or deleted there.
pub(crate) fn inside_shards(root: &Path, dir: &Path) -> bool {
    dir.strip_prefix(root.join("shards")).is_ok_and(|rel| {
        let parts: Vec<_> = rel.components().collect();
        parts.len() == 2 && parts.iter().all(|c| matches!(c, std::path::Component::Normal(_)))
    })
}

/// A pass's exclusive right to open, close, delete or heal one replica (see `LocalReplicas::claim`);
/// released when dropped.
pub(crate) struct Claim<'a> {
    /// Whose replica.
    local: &'a LocalReplicas,
    /// The replica claimed.
    key: ReplicaKey,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.local.busy.lock().remove(&self.key);
        self.local.claims_ended.notify_waiters();
    }
}

/// The shard replicas of this node and their files.
pub(crate) struct LocalReplicas {
    /// Static configuration of the node (shared with the other components).
    pub(crate) cfg: Arc<EngineConfig>,
    /// Group 0 (catalog, registry): what replicas this node should hold, and the addresses of their peers.
    pub(crate) meta: Arc<MetaPlane>,
    /// The Raft network shard groups are opened on.
    net: GrpcNetwork,
    /// The Raft transport's registry of local groups: every open replica is registered there.
    pub(crate) transport: RaftTransportService,
    /// Clients of the other nodes (the heal asks shard leaders to drop a damaged replica).
    pub(crate) peers: Arc<Peers>,
    /// The node's version clock (shared with the coordinator): never behind the newest version of an open
    /// replica.
    hlc: Arc<Hlc>,
    /// Open replicas by key; an entry is added or removed only by the pass holding its key's claim (`busy`),
    /// or by `close_all`.
    pub(crate) replicas: RwLock<BTreeMap<ReplicaKey, Arc<ShardReplica>>>,
    /// Replicas found damaged and their repair (see `quarantine.rs`); an entry changes only under its key's
    /// claim.
    pub(crate) quarantine: RwLock<BTreeMap<ReplicaKey, Quarantine>>,
    /// The replicas this node created on its disk (a listed replica whose files are gone is damaged).
    manifest: Manifest,
    /// Held by a reconcile or heal pass only while it reads the replica map and claims the replicas it will
    /// work on, and by `close_all`; never across a group's open, election, shutdown or a directory deletion.
    reconcile_lock: AsyncMutex<()>,
    /// Replicas a pass is opening, closing, deleting or healing now: at most one pass works on a replica at a
    /// time (see `claim`). Claims are taken under `reconcile_lock` while not `closed`.
    busy: parking_lot::Mutex<HashSet<ReplicaKey>>,
    /// Notified each time a claim ends (`close_all` waits for the claims of passes still running).
    claims_ended: tokio::sync::Notify,
    /// Set by `close_all`: no pass claims (so opens) anything after it.
    closed: AtomicBool,
    /// Background index builder; indexes exactly the open replicas (`refresh_indexer`).
    indexer: Indexer,
    /// Free bytes of the data dir's file system, sampled every `DISK_EVERY` (`u64::MAX` = unknown).
    disk_free: AtomicU64,
}

impl LocalReplicas {
    /// No replica open yet (the first reconcile pass opens them); `manifest` lists those created here before.
    pub(crate) fn new(
        cfg: Arc<EngineConfig>,
        meta: Arc<MetaPlane>,
        net: GrpcNetwork,
        transport: RaftTransportService,
        peers: Arc<Peers>,
        hlc: Arc<Hlc>,
        manifest: Manifest,
    ) -> LocalReplicas {
        LocalReplicas {
            cfg,
            meta,
            net,
            transport,
            peers,
            hlc,
            replicas: RwLock::default(),
            quarantine: RwLock::default(),
            manifest,
            reconcile_lock: AsyncMutex::new(()),
            busy: parking_lot::Mutex::new(HashSet::new()),
            claims_ended: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            indexer: Indexer::start(),
            disk_free: AtomicU64::new(u64::MAX),
        }
    }

    /// Makes local replicas match the catalog (see `reconciler::plan`).
    ///
    /// The pass holds `reconcile_lock` only while it plans from the replica map and claims the replicas it
    /// acts on; the opens (a single voter's election takes up to 10 s), group shutdowns and directory
    /// deletions run without it, so one slow group stalls neither the heal pass nor, next second, the other
    /// shards' opens (shutdown still waits for the claims in flight). Two passes never open or delete the
    /// same replica at once:
    /// each works only on the replicas it claimed (`claim`), skips those another pass holds (the next pass
    /// takes them up), and keeps each claim until the replica is open, quarantined or gone.
    pub(crate) async fn reconcile(&self) -> Result<()> {
        let (entries, removes, to_open) = {
            let Some(_guard) = self.lock_for_pass().await else { return Ok(()) };
            let entries: BTreeMap<String, CollectionEntry> =
                self.meta.catalog.list().into_iter().map(|e| (e.spec.name.clone(), e)).collect();
            let want = reconciler::desired(&entries, self.cfg.node_id);
            // A quarantined replica counts as present: it is not opened again (the heal pass owns it).
            let mut have: BTreeSet<ReplicaKey> = self.replicas.read().keys().cloned().collect();
            have.extend(self.quarantined_keys());
            let (mut removes, mut to_open) = (Vec::new(), Vec::new());
            for action in reconciler::plan(&want, &have) {
                match action {
                    Action::Remove(key) => removes.extend(self.claim(&key).map(|c| (key, c))),
                    Action::Open(key) => to_open.extend(self.claim(&key).map(|c| (key, c))),
                }
            }
            (entries, removes, to_open)
        };
        for (key, _claim) in removes {
            self.forget_quarantine(&key);
            if let Err(e) = self.manifest.remove(&key.group_id()) {
                tracing::warn!(?key, error = %e, "could not update the replica manifest");
            }
            let replica = self.replicas.write().remove(&key);
            self.refresh_indexer();
            if let Some(r) = replica {
                self.transport.deregister(&r.gid);
                if let Err(e) = r.group.shutdown().await {
                    tracing::warn!(?key, error = %e, "shard group shutdown failed");
                }
            }
            let dir = shard_dir(&self.cfg.data_dir, &key);
            if !inside_shards(&self.cfg.data_dir, &dir) {
                tracing::error!(dir = %dir.display(), "refusing to delete a shard dir outside the data dir");
            } else if let Err(e) = remove_dir_all_blocking(dir.clone()).await {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove shard data");
            }
            // The collection's directory goes with its last shard (fails harmlessly while not empty).
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
            tracing::info!(collection = %key.collection, shard = key.shard, "shard replica removed");
        }
        // Opens run concurrently: one group slow to elect its leader (up to 10 s for a single voter) does not
        // hold up every other shard of the pass. Each keeps its claim until it is open or quarantined.
        let opens = to_open.into_iter().map(|(key, claim)| {
            let entry = &entries[&key.collection];
            async move { (entry, self.open_replica(entry, &key, false).await, key, claim) }
        });
        for (entry, opened, key, _claim) in futures::future::join_all(opens).await {
            match opened {
                Ok(()) => {}
                Err(Error::Corrupt { path, reason, .. }) => {
                    self.quarantine_replica(entry, &key, format!("corrupt file {path}: {reason}"))
                }
                Err(e) => {
                    // Leave it for the next pass (e.g. a peer's address not yet known).
                    tracing::warn!(collection = %key.collection, shard = key.shard, error = %e, "could not open shard replica");
                }
            }
        }
        // Payload indexes follow the catalog (the indexer builds new ones).
        for (ReplicaKey { collection: name, uid, .. }, r) in self.replicas.read().iter() {
            if let Some(e) = entries.get(name).filter(|e| e.uid == *uid)
                && r.app.set_payload_indexes(&e.spec.payload_indexes)
            {
                tracing::info!(group = %r.gid, indexes = ?e.spec.payload_indexes, "payload indexes changed");
            }
        }
        self.refresh_indexer();
        Ok(())
    }

    /// Opens this node's replica `key` (creating it when new). A replica the manifest lists whose directory
    /// or log is gone is reported as corrupt, unless `fresh` (the heal opens an empty copy on purpose).
    pub(crate) async fn open_replica(&self, entry: &CollectionEntry, key: &ReplicaKey, fresh: bool) -> Result<()> {
        let dir = shard_dir(&self.cfg.data_dir, key);
        if !inside_shards(&self.cfg.data_dir, &dir) {
            return Err(Error::InvalidArgument(
                format!("shard dir {} of collection {:?} would be outside the data dir", dir.display(), key.collection)
                    .into(),
            ));
        }
        let gid = key.group_id();
        if !fresh && self.manifest.contains(&gid) {
            let log = dir.join("log");
            let has_segments = std::fs::read_dir(&log)
                .map(|it| it.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".seg")))
                .unwrap_or(false);
            if !has_segments {
                let what = if dir.exists() { "its log (segment files) is missing" } else { "the directory is missing" };
                return Err(Error::Corrupt {
                    path: log.display().to_string(),
                    reason: format!("this node created replica {gid}, but {what}"),
                    source: None,
                });
            }
        } else {
            self.manifest.add(&gid).map_err(|e| {
                Error::Storage(Detail::caused_by(format!("recording replica {gid} in the manifest: {e}"), e))
            })?;
        }
        // The shard's directory exists before the state machine can restore into it (on_disk vectors).
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::Storage(Detail::caused_by(format!("creating shard directory {}: {e}", dir.display()), e))
        })?;
        let app = Arc::new(ShardApp::new(entry.spec.shard.clone(), Some(dir.clone()), Box::new(self.indexer.waker())));
        app.set_payload_indexes(&entry.spec.payload_indexes);
        let mut opts = self.cfg.raft.clone();
        opts.bootstrap_single = false;
        let group = RaftGroup::open_with_network(
            &dir,
            self.cfg.node_id,
            self.cfg.advertise.clone(),
            app.clone(),
            opts,
            self.net.factory(gid.clone()),
        )
        .await?;
        self.transport.register(gid.clone(), &group);
        let replicas = entry.replicas(key.shard);
        if !group.is_initialized().await? && replicas.first() == Some(&self.cfg.node_id) {
            // The preferred leader creates the group with every replica as a voter; the others wait to
            // be contacted (their groups answer once open).
            let mut members = BTreeMap::new();
            for &n in replicas {
                let addr = self
                    .meta
                    .node_addr(n)
                    .ok_or_else(|| Error::Internal(format!("node {n} is not registered").into()))?;
                members.insert(n, addr);
            }
            if let Err(e) = group.initialize(members).await {
                tracing::warn!(%gid, error = %e, "initialising shard group");
            }
            if replicas.len() == 1 {
                let _ = group.raft().trigger().elect(false).await;
            }
        }
        if group.effective_voters().await? == [self.cfg.node_id] {
            // The only voter: it leads at once; serve only once it has (a restarted single-node cluster is
            // then fully usable when it reports ready).
            if let Err(e) = group.wait_leader(Duration::from_secs(10)).await {
                tracing::warn!(%gid, error = %e, "single-voter shard group did not take the lead");
            }
        }
        // Never stamp a write older than what this shard already holds (e.g. after a clock step back).
        let newest = app.store().max_version();
        if !self.hlc.observe_bounded(newest, self.cfg.max_clock_offset_ms) {
            tracing::warn!(collection = %key.collection, shard = key.shard, newest = %newest,
                "the shard holds a version stamped far ahead of this node's clock; the clock does not follow it");
        }
        tracing::info!(collection = %key.collection, shard = key.shard, applied = app.applied_index(), "shard replica open");
        self.replicas.write().insert(key.clone(), Arc::new(ShardReplica { gid, group, app }));
        Ok(())
    }

    pub(crate) fn refresh_indexer(&self) {
        self.indexer.set_shards(self.replicas.read().values().map(|r| r.app.clone()).collect());
    }

    /// Deletes shard directories of collections the catalog has seen dropped (left by a crash during a
    /// drop). A directory whose collection uid (the group-0 index that created it) is beyond what this
    /// node's catalog has applied is kept: after a restart the catalog may trail the cluster (the local
    /// commit index is persisted lazily) and simply not know the collection yet.
    pub(crate) fn remove_orphan_dirs(&self) {
        let keep: BTreeSet<String> =
            self.meta.catalog.list().iter().map(|e| format!("{}@{}", e.spec.name, e.uid)).collect();
        let applied = self.meta.group.applied_index();
        let Ok(dirs) = std::fs::read_dir(self.cfg.data_dir.join("shards")) else { return };
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().to_string();
            let uid = name.rsplit_once('@').and_then(|(_, u)| u.parse::<u64>().ok());
            if let Some(uid) = uid
                && uid > applied
            {
                tracing::info!(dir = %name, applied, "keeping shard data of a collection the catalog has not seen yet");
                continue;
            }
            if !keep.contains(&name) {
                tracing::warn!(dir = %name, "removing orphaned shard data");
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }

    /// Samples the data dir's free space (statvfs; cheap).
    pub(crate) fn sample_disk(&self) {
        let free = crate::resources::free_bytes(&self.cfg.data_dir).unwrap_or(u64::MAX);
        let was = self.disk_free.swap(free, Ordering::Relaxed);
        let min = self.cfg.min_free_disk;
        if (free < min) != (was < min) {
            if free < min {
                tracing::error!(free, min, "disk nearly full: writes refused until space is freed");
            } else {
                tracing::info!(free, min, "disk space back: writes accepted again");
            }
        }
    }

    /// Refuses a write this node would append to its logs while its disk is nearly full (reads go on).
    pub(crate) fn check_disk(&self) -> Result<()> {
        let free = self.disk_free.load(Ordering::Relaxed);
        if free < self.cfg.min_free_disk {
            return Err(Error::Storage(
                format!(
                    "node {}: disk full: {free} bytes free under {}, below the {} bytes kept in reserve; writes are \
                 refused until space is freed (nothing was written)",
                    self.cfg.node_id,
                    self.cfg.data_dir.display(),
                    self.cfg.min_free_disk
                )
                .into(),
            ));
        }
        Ok(())
    }

    /// The collection `name` with this node's replicas of it.
    pub(crate) fn view(&self, name: &str) -> Result<CollectionView> {
        let entry = self.meta.catalog.get(name).ok_or_else(|| Error::CollectionNotFound(name.to_string().into()))?;
        let replicas = self.replicas.read();
        let local = (0..entry.spec.shards)
            .map(|s| replicas.get(&ReplicaKey::new(entry.spec.name.clone(), entry.uid, s)).cloned())
            .collect();
        Ok(CollectionView { entry, local })
    }

    /// The local replica of group `gid`, if open here.
    pub(crate) fn replica_by_gid(&self, collection: &str, uid: u64, shard: u32) -> Option<Arc<ShardReplica>> {
        self.replicas.read().get(&ReplicaKey::new(collection.to_string(), uid, shard)).cloned()
    }

    /// Closes every replica (flushing its log) and stops the indexer's work on them; run once, at shutdown.
    pub(crate) async fn close_all(&self) {
        let _guard = self.reconcile_lock.lock().await;
        self.closed.store(true, Ordering::Release);
        // No claim is taken from now on: wait for the passes still working on a replica to finish with it.
        loop {
            let ended = self.claims_ended.notified();
            if self.busy.lock().is_empty() {
                break;
            }
            ended.await;
        }
        let replicas: Vec<_> = std::mem::take(&mut *self.replicas.write()).into_values().collect();
        for r in replicas {
            self.transport.deregister(&r.gid);
            if let Err(e) = r.group.shutdown().await {
                tracing::warn!(error = %e, "shard group shutdown failed");
            }
        }
    }

    /// Claims replica `key` for the calling pass (under `reconcile_lock`); `None` while another pass holds it.
    pub(crate) fn claim(&self, key: &ReplicaKey) -> Option<Claim<'_>> {
        self.busy.lock().insert(key.clone()).then(|| Claim { local: self, key: key.clone() })
    }

    /// Takes `reconcile_lock` for a pass; `None` once `close_all` ran (the pass must not claim anything).
    pub(crate) async fn lock_for_pass(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.reconcile_lock.lock().await;
        (!self.closed.load(Ordering::Acquire)).then_some(guard)
    }

    /// Stops the background indexer (after `close_all`).
    pub(crate) fn stop_indexer(&self) {
        self.indexer.stop();
    }
}

#[cfg(test)]
#[test]
fn shard_dirs_stay_inside_the_data_dir() {
    let root = Path::new("/data");
    assert!(inside_shards(root, &shard_dir(root, &ReplicaKey::new("docs", 3, 1))));
    assert!(!inside_shards(root, &shard_dir(root, &ReplicaKey::new("../../../../x", 3, 1))));
    assert!(!inside_shards(root, &shard_dir(root, &ReplicaKey::new("a/b", 3, 1))));
    assert!(!inside_shards(root, &shard_dir(root, &ReplicaKey::new("/etc", 3, 1))));
}
