//! The engine of one node: wires its components together, runs their background passes and is the API
//! the node's gRPC services call. Each component owns its state; the engine owns none but the wiring:
//!
//! ```text
//!   gRPC handler ──> Engine ──┬─> MetaPlane      group 0: catalog, registry, joins, proposals (meta_plane.rs)
//!                             ├─> Coordinator    reads, writes, scrolls across the shards (coordinator.rs)
//!                             ├─> MoveExecutor   replica / leadership moves, rebalance, drain (move_executor.rs)
//!                             └─> LocalReplicas  this node's shard groups, quarantine, heal (local_replicas.rs)
//!   catalog change ──> reconcile task ──> LocalReplicas::reconcile ──> open / initialise / remove shard groups
//! ```
//!
//! Ownership is a tree (no cycles): Coordinator and MoveExecutor hold `Arc`s of LocalReplicas and MetaPlane,
//! LocalReplicas holds one of MetaPlane; the engine holds them all and the shared `Lifecycle`.
//!
//! Node life cycle:
//!
//! ```text
//!   open ──(gRPC serving)──> start: join (new node with --join) | register (first node, restart) ──> ready
//!   ready ──shutdown──> closing (requests refused, groups flushed)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use shoal_api::collections::CollectionSpec;
use shoal_api::commands::MetaCommand;
use shoal_api::internal::{
    HealReplicaRequest, JoinRequest, NodeRecord, NodeStateReply, NodeStateRequest, ReplicaState, ShardReadReply,
    ShardReadRequest, ShardWriteReply, ShardWriteRequest,
};
use shoal_api::v1::SessionToken;
use shoal_core::PointId;
use shoal_core::hlc::Hlc;
use shoal_core::store::PointRecord;
use shoal_raft::{GroupOptions, GrpcNetwork, RaftGroup, RaftTransportService};

use crate::catalog::CollectionEntry;
use crate::coordinator::Coordinator;
use crate::levels::ReadLevel;
use crate::lifecycle::Lifecycle;
use crate::local_replicas::{CollectionView, LocalReplicas, ShardReplica};
use crate::meta_plane::MetaPlane;
use crate::move_executor::{MoveExecutor, StartedMove};
use crate::peer::Peers;
use crate::placement;
use crate::read_path::{SearchOutcome, SearchQuery};
use crate::reconciler::ReplicaKey;
use crate::scroll::{Scroll, ScrollParams};
use crate::write_path::{WriteOptions, WriteOutcome};
use crate::{Detail, Error, Result};

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
    /// Shards per collection when the request says 0 (at least one per node is used when larger).
    pub default_shards: u32,
    /// This node's failure zone ("" = none).
    pub zone: String,
    /// Address of a cluster member to join through when this node's group 0 is new; `None` = bootstrap
    /// a new cluster (or restart: an existing group 0 ignores it).
    pub join: Option<String>,
    /// Whether the group-0 leader rebalances replicas onto a node that joined.
    pub auto_rebalance: bool,
    /// How reads pick among eligible replicas when a request does not say.
    pub load_balancing: crate::levels::LoadBalancing,
    /// Whether a shard read slower than its replica's p95 gets a hedged request to another replica.
    pub hedging: bool,
    /// Writes are refused (StorageError) while the data dir's file system has fewer free bytes (0 = never).
    pub min_free_disk: u64,
    /// How far (ms) ahead of this node's clock a version received from a peer may be (DESIGN §3's max
    /// clock offset): a forwarded write stamped further ahead is refused, and the clock never moves past it.
    pub max_clock_offset_ms: u64,
    /// Mutual TLS towards peers (`None`: plain text, insecure mode).
    pub tls: Option<shoal_raft::NodeTls>,
    /// The API keys this node starts with (its `--api-keys` file).
    pub api_keys: crate::api_keys::KeyFile,
    /// Where this node serves metrics and HTTP probes (reported in its node state; `None` = off).
    pub metrics_address: Option<String>,
}

/// One Raft group of this node as the metrics show it ([`Engine::metrics_view`]).
#[derive(Debug, Clone)]
pub struct GroupMetrics {
    /// The group id: "meta" for group 0, `<collection>@<uid>/<shard>` for a shard.
    pub group: String,
    /// The collection ("" for group 0).
    pub collection: String,
    /// The shard number ("" for group 0).
    pub shard: String,
    /// Raft state (term, commit, applied, leader, replication lag on the leader).
    pub status: shoal_raft::GroupStatus,
    /// Live points of the replica (0 for group 0).
    pub points: u64,
    /// Live points not yet in the replica's graph.
    pub unindexed: u64,
    /// Bytes received of the snapshot being (or last) installed here.
    pub snapshot_bytes: u64,
}

/// What a metrics scrape reads from the engine: its groups and its work counters.
#[derive(Debug, Clone)]
pub struct MetricsView {
    /// Group 0 first, then each open shard replica.
    pub groups: Vec<GroupMetrics>,
    /// Searches run on this node's replicas.
    pub searches: u64,
    /// Gets, counts and scans served by this node's replicas.
    pub reads: u64,
    /// Write requests this node coordinated.
    pub writes: u64,
    /// Requests executing now.
    pub in_flight: u64,
    /// Replica searches stopped by a cancel or their deadline.
    pub cancelled: u64,
    /// Hedged shard requests sent as coordinator.
    pub hedged: u64,
    /// Replicas quarantined on this node (damaged, being rebuilt or refused).
    pub quarantined: u64,
}

/// The node's engine. Cheap to share behind `Arc`.
pub struct Engine {
    /// Static configuration (shared with the components).
    pub(crate) cfg: Arc<EngineConfig>,
    /// Group 0, the catalog and cluster membership.
    pub(crate) meta: Arc<MetaPlane>,
    /// The Raft network of both planes (its blocklist is the node's fault switch).
    net: GrpcNetwork,
    /// The Raft transport's registry of local groups.
    pub(crate) transport: RaftTransportService,
    /// This node's shard replicas (open and quarantined), the indexer and the disk.
    pub(crate) local: Arc<LocalReplicas>,
    /// The read, write and scroll paths (and the clock, hints, loads and counters they share).
    pub(crate) coord: Arc<Coordinator>,
    /// Replica and leadership moves (move pass, rebalance, drain, heal removals).
    pub(crate) mover: Arc<MoveExecutor>,
    /// Ready, draining, closing (shared with the components that refuse requests or stop by them).
    pub(crate) lifecycle: Arc<Lifecycle>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("node_id", &self.cfg.node_id).finish_non_exhaustive()
    }
}

/// Period of the shard-move pass (membership steps of led shard groups).
const MOVE_EVERY: Duration = Duration::from_millis(300);
/// Period of the reconcile pass when the catalog does not change.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Period of the heal pass (damaged replicas, see `heal.rs`).
const HEAL_EVERY: Duration = Duration::from_millis(500);
/// Anti-entropy runs every this many heal passes (every 5 s).
const ANTI_ENTROPY_EVERY_PASSES: u64 = 10;
/// Period of the free-disk sample that gates writes.
const DISK_EVERY: Duration = Duration::from_millis(250);

impl Engine {
    /// Opens (or creates) the node's state under `cfg.data_dir`: group 0 on the gRPC network `net`,
    /// registered with `transport`. The node serves nothing until [`Engine::start`] (call it once the
    /// gRPC server runs, so that peers can reach this node while it joins).
    pub async fn open(cfg: EngineConfig, net: GrpcNetwork, transport: RaftTransportService) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(cfg.data_dir.join("shards"))
            .map_err(|e| Error::Internal(Detail::caused_by(e.to_string(), e)))?;
        let manifest = crate::manifest::Manifest::load(&cfg.data_dir).map_err(|e| {
            Error::Storage(Detail::caused_by(format!("reading {}: {e}", cfg.data_dir.join("replicas").display()), e))
        })?;
        let cfg = Arc::new(cfg);
        let peers = Arc::new(Peers::new(cfg.node_id, net.blocklist().clone(), cfg.tls.clone()));
        let meta = MetaPlane::open(cfg.clone(), &net, transport.clone(), peers.clone(), !manifest.is_empty()).await?;
        let meta = Arc::new(meta);
        let clock_offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let hlc = {
            let offset = Arc::clone(&clock_offset);
            Arc::new(Hlc::with_clock(cfg.node_id as u32, move || {
                shoal_core::hlc::system_ms().saturating_add_signed(offset.load(Ordering::Relaxed))
            }))
        };
        let local = Arc::new(LocalReplicas::new(
            cfg.clone(),
            meta.clone(),
            net.clone(),
            transport.clone(),
            peers.clone(),
            hlc.clone(),
            manifest,
        ));
        let lifecycle = Arc::new(Lifecycle::new(cfg.node_id));
        let mover = Arc::new(MoveExecutor::new(meta.clone(), local.clone(), lifecycle.clone()));
        let coord = Arc::new(Coordinator::new(meta.clone(), local.clone(), lifecycle.clone(), hlc, clock_offset));
        Ok(Arc::new(Engine { mover, lifecycle, local, coord, cfg, meta, net, transport }))
    }

    /// Brings the node into service: joins the cluster through `cfg.join` when group 0 is new, otherwise
    /// makes sure this node is in the registry; opens the local shard replicas the catalog assigns to it
    /// and keeps them in line with it from then on. Returns once requests can be served.
    pub async fn start(self: &Arc<Engine>, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        if !self.meta.enter(timeout, deadline).await? {
            // A member of a multi-node cluster restarting: the others may still be down, so register in the
            // background (address or version may have changed) and serve from the recovered catalog.
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    let Some(engine) = weak.upgrade() else { return };
                    if engine.lifecycle.is_closing() {
                        return;
                    }
                    match engine.meta.register_self(Instant::now() + Duration::from_secs(5)).await {
                        Ok(()) => return,
                        Err(e) => tracing::debug!(error = %e, "registering in group 0 (will retry)"),
                    }
                    drop(engine);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
        self.local.reconcile().await?;
        self.meta.note_peers();
        self.local.remove_orphan_dirs();
        let weak = Arc::downgrade(self);
        let mut changes = self.meta.catalog.subscribe();
        tokio::spawn(async move {
            loop {
                // On every catalog change, and every second to retry what a pass could not open (a peer's
                // address not yet known, a directory still locked by a group shutting down).
                tokio::select! {
                    r = changes.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                }
                let Some(engine) = weak.upgrade() else { break };
                if engine.lifecycle.is_closing() {
                    break;
                }
                if let Err(e) = engine.local.reconcile().await {
                    tracing::error!(error = %e, "reconcile failed");
                }
                engine.meta.note_peers();
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(MOVE_EVERY).await;
                let Some(engine) = weak.upgrade() else { break };
                if engine.lifecycle.is_closing() {
                    break;
                }
                engine.mover.move_pass().await;
            }
        });
        self.local.sample_disk();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(DISK_EVERY).await;
                let Some(engine) = weak.upgrade() else { break };
                if engine.lifecycle.is_closing() {
                    break;
                }
                engine.local.sample_disk();
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut passes = 0u64;
            loop {
                tokio::time::sleep(HEAL_EVERY).await;
                let Some(engine) = weak.upgrade() else { break };
                if engine.lifecycle.is_closing() || engine.lifecycle.is_draining() {
                    break;
                }
                passes += 1;
                if passes.is_multiple_of(ANTI_ENTROPY_EVERY_PASSES) {
                    engine.anti_entropy_pass().await;
                }
                engine.local.heal_pass(&engine.coord.leader_hints).await;
            }
        });
        self.lifecycle.set_ready();
        Ok(())
    }

    /// Removes node `id` from the cluster: marks it leaving; with `drain`, moves every replica off it and
    /// waits until none is left (within `timeout`); then drops it from the registry, after which the group-0
    /// leader removes it from group 0. Returns the number of replica moves started.
    pub async fn remove_node(&self, id: u64, drain: bool, timeout: Duration) -> Result<u32> {
        self.check_open()?;
        self.mover.remove_node(id, drain, timeout).await
    }

    /// Plans moves that balance the cluster and starts them through group 0 (see
    /// `MoveExecutor::rebalance`); `collection` = "" for every collection. Returns the moves started.
    pub async fn rebalance(&self, collection: &str, timeout: Duration) -> Result<Vec<StartedMove>> {
        self.check_open()?;
        self.mover.rebalance(collection, timeout).await
    }

    /// On the shard leader: drops `req.node` (its replica is damaged) from the group's membership (see
    /// `MoveExecutor::handle_heal_replica`).
    pub async fn handle_heal_replica(&self, req: HealReplicaRequest, timeout: Duration) -> Result<()> {
        self.check_open()?;
        self.mover.handle_heal_replica(req, timeout).await
    }

    /// Anti-entropy (run every few seconds): probes the other nodes' replica digest rings and lets the local
    /// replicas compare theirs (see `LocalReplicas::anti_entropy_pass`).
    async fn anti_entropy_pass(&self) {
        let want = NodeStateRequest { with_digest_rings: true, ..Default::default() };
        let states: Vec<(u64, Vec<ReplicaState>)> = self
            .probe_nodes(Duration::from_secs(2), want)
            .await
            .into_iter()
            .filter(|(rec, _)| rec.id != self.cfg.node_id)
            .filter_map(|(rec, st)| st.ok().map(|s| (rec.id, s.replicas)))
            .collect();
        self.local.anti_entropy_pass(&states);
    }

    /// Fault injection (tests): changes one point of this node's replica of shard `shard` of `name` behind
    /// Raft's back (see `LocalReplicas::diverge_replica`).
    pub fn diverge_replica(&self, name: &str, shard: u32) -> Result<String> {
        self.local.diverge_replica(name, shard)
    }

    /// On the group-0 leader: adds node `req.node_id` to the cluster (see `MetaPlane::handle_join`); with
    /// `auto_rebalance`, then moves replicas onto it in the background.
    pub async fn handle_join(&self, req: JoinRequest, timeout: Duration) -> Result<()> {
        self.check_running()?;
        if self.meta.handle_join(req, timeout).await? && self.cfg.auto_rebalance {
            tokio::spawn(self.mover.clone().rebalance_until_settled());
        }
        Ok(())
    }

    /// Serves a metadata proposal forwarded by another node (this node must lead group 0).
    pub async fn handle_meta_propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        self.check_open()?;
        self.meta.handle_propose(command, timeout).await
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    /// The advertised address.
    pub fn address(&self) -> &str {
        &self.cfg.advertise
    }

    /// Whether this node should get traffic (a `/readyz` probe): `Err` says why not (starting, draining, cut
    /// off from the cluster's majority).
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if !self.lifecycle.is_ready() {
            return Err("starting: not joined or recovered yet".into());
        }
        if self.lifecycle.is_draining() || self.lifecycle.is_closing() {
            return Err("draining: the node is stopping".into());
        }
        match self.meta.cut_off() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }

    /// Whether node `id` is in group 0's registry (as this node knows it).
    pub fn is_registered(&self, id: u64) -> bool {
        self.meta.catalog.node(id).is_some()
    }

    /// Whether this node leads group 0.
    pub fn is_meta_leader(&self) -> bool {
        self.meta.group.is_leader()
    }

    /// Fault injection: runs this node's clock `offset_ms` (|offset| <= 1 hour) off the system clock.
    pub fn set_clock_offset(&self, offset_ms: i64) -> Result<i64> {
        self.coord.set_clock_offset(offset_ms)
    }

    /// Fetches points by id, in request order.
    pub async fn get(
        &self,
        name: &str,
        ids: Vec<PointId>,
        with_vectors: bool,
        level: ReadLevel,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<Vec<Option<PointRecord>>> {
        self.coord.get(name, ids, with_vectors, level, session, timeout).await
    }

    /// Number of live points.
    pub async fn count(
        &self,
        name: &str,
        level: ReadLevel,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<u64> {
        self.coord.count(name, level, session, timeout).await
    }

    /// k-nearest-neighbour search of `nq` queries (row-major `queries`), merged over every shard.
    pub async fn search(
        &self,
        name: &str,
        q: SearchQuery,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<SearchOutcome> {
        self.coord.search(name, q, session, timeout).await
    }

    /// Serves a shard read sent by a coordinator.
    pub async fn handle_shard_read(&self, req: ShardReadRequest, timeout: Duration) -> Result<ShardReadReply> {
        self.coord.handle_shard_read(req, timeout).await
    }

    /// Validates a scroll (collection, batch size, filter, resume token) and starts streaming it. Errors
    /// found here come back before any batch.
    pub fn scroll(self: &Arc<Self>, name: &str, params: ScrollParams) -> Result<Scroll> {
        self.coord.scroll(name, params)
    }

    /// Upserts points. The whole batch is validated before anything is written.
    pub async fn upsert(
        &self,
        name: &str,
        ids: Vec<PointId>,
        vectors: Vec<f32>,
        payloads: Vec<Option<Map<String, Value>>>,
        opts: WriteOptions,
    ) -> Result<WriteOutcome> {
        self.coord.upsert(name, ids, vectors, payloads, opts).await
    }

    /// Deletes points by id (absent ids are no-ops that still leave a tombstone).
    pub async fn delete(&self, name: &str, ids: Vec<PointId>, opts: WriteOptions) -> Result<WriteOutcome> {
        self.coord.delete(name, ids, opts).await
    }

    /// Merges `patch` into the payload of each point, key by key (LWW per key).
    pub async fn update_payload(
        &self,
        name: &str,
        ids: Vec<PointId>,
        patch: Map<String, Value>,
        opts: WriteOptions,
    ) -> Result<WriteOutcome> {
        self.coord.update_payload(name, ids, patch, opts).await
    }

    /// Serves a shard write forwarded by a coordinator: this node must lead the group.
    pub async fn handle_shard_write(&self, req: ShardWriteRequest, timeout: Duration) -> Result<ShardWriteReply> {
        self.coord.handle_shard_write(req, timeout).await
    }

    /// (live points, live points not yet indexed) of a collection: points counted once per shard (its
    /// most complete replica), unindexed summed over every replica (all must be indexed).
    pub async fn index_status(&self, name: &str, timeout: Duration) -> Result<(u64, u64)> {
        let view = self.view(name)?;
        let uid = view.entry.uid;
        let mut best: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut unindexed = 0u64;
        for (_, st) in self.probe_nodes(timeout, Default::default()).await {
            let Ok(st) = st else { continue };
            for r in st.replicas.iter().filter(|r| r.collection == name && r.uid == uid) {
                unindexed += r.unindexed;
                let e = best.entry(r.shard).or_insert((0, 0));
                if r.applied_index >= e.0 {
                    *e = (r.applied_index, r.count);
                }
            }
        }
        Ok((best.values().map(|v| v.1).sum(), unindexed))
    }
    /// The node's fault switch (node ids it refuses to talk to).
    pub fn set_blocked(&self, blocked: &[u64]) -> Vec<u64> {
        let bl = self.net.blocklist();
        bl.clear();
        for &b in blocked {
            if b != self.cfg.node_id {
                bl.block(b);
            }
        }
        if !blocked.is_empty() {
            tracing::warn!(?blocked, "fault injection: traffic with these nodes is blocked");
        } else {
            tracing::info!("fault injection: every link restored");
        }
        let mut out: Vec<u64> = blocked.iter().copied().filter(|&b| b != self.cfg.node_id).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether requests from node `from` are refused (fault injection).
    pub fn is_blocked(&self, from: u64) -> bool {
        self.net.blocklist().is_blocked(from)
    }

    /// The API keys this node started with.
    pub(crate) fn key_file(&self) -> &crate::api_keys::KeyFile {
        &self.cfg.api_keys
    }

    /// The collection `name` with this node's replicas of it (refused while starting or shutting down).
    pub(crate) fn view(&self, name: &str) -> Result<CollectionView> {
        self.check_open()?;
        self.local.view(name)
    }

    /// Refuses requests while shutting down.
    fn check_running(&self) -> Result<()> {
        self.lifecycle.check_running()
    }

    /// Refuses requests while starting or shutting down.
    pub(crate) fn check_open(&self) -> Result<()> {
        self.lifecycle.check_open()
    }

    /// Whether the registry marks this node as leaving (being drained by `remove_node`) or it has been
    /// removed from the registry after having been in it.
    pub fn is_leaving(&self) -> bool {
        match self.meta.catalog.node(self.cfg.node_id) {
            Some(n) => n.state == "leaving",
            None => self.lifecycle.is_ready() && !self.meta.catalog.nodes().is_empty(),
        }
    }

    /// Whether the node serves requests.
    pub fn is_ready(&self) -> bool {
        self.lifecycle.is_ready() && !self.lifecycle.is_closing()
    }

    /// Creates a collection; returns once group 0 committed it and this node opened its replicas of it.
    pub async fn create_collection(
        &self,
        req: &shoal_api::v1::CreateCollectionRequest,
        timeout: Duration,
    ) -> Result<CollectionSpec> {
        self.check_open()?;
        let n = self.meta.node_count();
        let shards = placement::default_shards(n).max(self.cfg.default_shards.max(1));
        let spec = CollectionSpec::from_create(req, shards, placement::default_rf(n))?;
        let up = self.meta.catalog.nodes().iter().filter(|r| r.state == "up").count();
        if spec.replication_factor as usize > up {
            return Err(Error::InvalidArgument(
                format!(
                    "replication_factor {} needs at least that many nodes; this cluster has {up}",
                    spec.replication_factor
                )
                .into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        self.meta.propose(&MetaCommand::CreateCollection(spec.clone()), deadline).await.map_err(|e| match e {
            Error::CollectionExists(_) => Error::CollectionExists(spec.name.clone().into()),
            e => e,
        })?;
        // Wait until this node's catalog has it and its local replicas are open.
        loop {
            if let Some(entry) = self.meta.catalog.get(&spec.name) {
                let replicas = self.local.replicas.read();
                let open = (0..entry.spec.shards).all(|s| {
                    !entry.replicas(s).contains(&self.cfg.node_id)
                        || replicas.contains_key(&ReplicaKey::new(entry.spec.name.clone(), entry.uid, s))
                });
                if open {
                    return Ok(entry.spec);
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(
                    format!("collection {:?} created but its shards did not open in time", spec.name).into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Adds or changes (`kind` given) or drops (`None`) the payload index of `field` of collection `name`;
    /// returns the collection's spec once this node's catalog has the change. Replicas build a new index
    /// in the background (`index_status` reports it).
    pub async fn set_payload_index(
        &self,
        name: &str,
        field: &str,
        kind: Option<shoal_core::payload_index::IndexKind>,
        timeout: Duration,
    ) -> Result<CollectionSpec> {
        shoal_core::payload_index::validate_field(field)?;
        let entry = self.collection_entry(name)?;
        let deadline = Instant::now() + timeout;
        let cmd = MetaCommand::SetPayloadIndex { collection: name.into(), uid: entry.uid, field: field.into(), kind };
        self.meta.propose(&cmd, deadline).await?;
        loop {
            let e = self.collection_entry(name)?;
            let now = e.spec.payload_indexes.iter().find(|(f, _)| f == field).map(|(_, k)| *k);
            if e.uid != entry.uid {
                return Err(Error::CollectionNotFound(name.to_string().into()));
            }
            if now == kind {
                return Ok(e.spec);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(
                    format!(
                        "the payload index change of {field:?} on {name:?} was proposed but is not applied here yet"
                    )
                    .into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The spec of a collection.
    pub fn get_collection(&self, name: &str) -> Result<CollectionSpec> {
        self.check_open()?;
        self.meta.catalog.get(name).map(|e| e.spec).ok_or_else(|| Error::CollectionNotFound(name.to_string().into()))
    }

    /// Every collection, by name.
    pub fn list_collections(&self) -> Vec<CollectionSpec> {
        self.meta.catalog.list().into_iter().map(|e| e.spec).collect()
    }

    /// Drops a collection and returns whether it existed; returns once this node's replicas are gone.
    pub async fn drop_collection(&self, name: &str, timeout: Duration) -> Result<bool> {
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        let existed = self.meta.propose(&MetaCommand::DropCollection(name.to_string()), deadline).await?;
        while self.local.replicas.read().keys().any(|k| k.collection == name) && self.meta.catalog.get(name).is_none() {
            if Instant::now() > deadline {
                return Err(Error::Timeout(
                    format!("collection {name:?} dropped but its shards are still closing").into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(existed)
    }

    /// What a metrics scrape shows of this node: every local Raft group's state and the work counters. Cheap
    /// (no digest, no walk of the data dir).
    pub fn metrics_view(&self) -> MetricsView {
        let mut groups = vec![GroupMetrics {
            group: "meta".into(),
            collection: String::new(),
            shard: String::new(),
            status: self.meta.group.status(),
            points: 0,
            unindexed: 0,
            snapshot_bytes: 0,
        }];
        for (ReplicaKey { collection: name, shard, .. }, r) in self.local.replicas.read().iter() {
            let store = r.app.store();
            groups.push(GroupMetrics {
                group: r.gid.clone(),
                collection: name.clone(),
                shard: shard.to_string(),
                status: r.group.status(),
                points: store.count() as u64,
                unindexed: store.unindexed() as u64,
                snapshot_bytes: self.transport.snapshot_progress(&r.gid).map_or(0, |p| p.0),
            });
        }
        let c = &self.coord.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        MetricsView {
            groups,
            searches: load(&c.searches),
            reads: load(&c.reads),
            writes: load(&c.writes),
            in_flight: load(&c.in_flight),
            cancelled: load(&c.cancelled),
            hedged: load(&c.hedged),
            quarantined: self.local.quarantine.read().len() as u64,
        }
    }

    /// This node's state for the cluster views: its group-0 role and every local replica. Replica digests
    /// and resource figures cost O(data) (sorting every id, walking the data dir): only computed when `want`
    /// asks for them, so frequent probes (index-status polls, health) stay cheap.
    pub fn node_state(&self, want: &NodeStateRequest) -> NodeStateReply {
        let (meta_role, _) = self.meta.group.role_and_last_index();
        let replicas = self
            .local
            .replicas
            .read()
            .iter()
            .map(|(ReplicaKey { collection: name, uid, shard }, r)| {
                let (role, last) = r.group.role_and_last_index();
                let store = r.app.store();
                let snap = self.transport.snapshot_progress(&r.gid).unwrap_or((0, 0));
                ReplicaState {
                    collection: name.clone(),
                    uid: *uid,
                    shard: *shard,
                    role: role.into(),
                    leader: r.group.leader_id().unwrap_or(0),
                    applied_index: r.group.applied_index(),
                    last_log_index: last,
                    count: store.count() as u64,
                    // Points some index (the graph or a payload index) does not cover yet.
                    unindexed: store.unindexed().max(store.payload_unindexed()) as u64,
                    digest: if want.with_digests { store.digest() } else { 0 },
                    snapshot_bytes: snap.0,
                    snapshot_total_bytes: snap.1,
                    damage: String::new(),
                    repair: String::new(),
                    digest_ring: if want.with_digest_rings {
                        r.app.digest_ring().into_iter().flat_map(|(i, d)| [i, d]).collect()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect::<Vec<_>>();
        let mut replicas = replicas;
        for r in &mut replicas {
            if let Some((damage, repair)) = self.local.damage_of(&ReplicaKey::new(r.collection.clone(), r.uid, r.shard))
            {
                (r.damage, r.repair) = (damage, repair);
            }
        }
        replicas.extend(self.local.quarantine_states());
        NodeStateReply {
            node_id: self.cfg.node_id,
            address: self.cfg.advertise.clone(),
            meta_role: meta_role.into(),
            zone: self.cfg.zone.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            replicas,
            meta_leader: self.meta.group.leader_id().unwrap_or(0),
            resources: want.with_resources.then(|| crate::resources::sample(&self.cfg.data_dir)),
            stats: Some(self.coord.counters.to_proto()),
            metrics_address: self.cfg.metrics_address.clone().unwrap_or_default(),
            draining: self.is_draining(),
        }
    }

    /// The shards of collection `name` with their replicas' states (digests included), from one probe of every
    /// node bounded by `timeout` (see `cluster_view::shard_infos`).
    pub async fn shards_view(&self, name: &str, timeout: Duration) -> Result<Vec<shoal_api::v1::ShardInfo>> {
        let entry = self.collection_entry(name)?;
        let want = NodeStateRequest { with_digests: true, ..Default::default() };
        let mut states = BTreeMap::new();
        for (rec, st) in self.probe_nodes(timeout, want).await {
            let Ok(st) = st else { continue };
            for r in st.replicas {
                if r.collection == entry.spec.name && r.uid == entry.uid {
                    states.insert((r.shard, rec.id), r);
                }
            }
        }
        Ok(crate::cluster_view::shard_infos(&entry, &states))
    }

    /// The cluster's health from one probe of every node bounded by `timeout` (see `cluster_view::assess`).
    pub async fn health(&self, timeout: Duration) -> shoal_api::v1::HealthResponse {
        let probed = self.probe_nodes(timeout, NodeStateRequest::default()).await;
        let mut states: BTreeMap<(String, u64, u32, u64), ReplicaState> = BTreeMap::new();
        let mut nodes = Vec::with_capacity(probed.len());
        for (rec, st) in probed {
            let (status, role, metrics_address) = match &st {
                Ok(s) => (
                    if rec.state.is_empty() { "up".to_string() } else { rec.state.clone() },
                    s.meta_role.clone(),
                    s.metrics_address.clone(),
                ),
                Err(_) => ("down".to_string(), String::new(), String::new()),
            };
            nodes.push(shoal_api::v1::NodeInfo {
                id: rec.id,
                address: rec.address.clone(),
                status,
                role,
                zone: rec.zone.clone(),
                version: st.as_ref().map(|s| s.version.clone()).unwrap_or(rec.version.clone()),
                metrics_address,
                ..Default::default()
            });
            if let Ok(st) = st {
                for r in st.replicas {
                    states.insert((r.collection.clone(), r.uid, r.shard, rec.id), r);
                }
            }
        }
        let collections: Vec<crate::cluster_view::CollectionShards> = self
            .meta
            .catalog
            .list()
            .into_iter()
            .map(|entry| {
                let mine: BTreeMap<(u32, u64), ReplicaState> = states
                    .iter()
                    .filter(|((c, uid, _, _), _)| *c == entry.spec.name && *uid == entry.uid)
                    .map(|((_, _, s, n), r)| ((*s, *n), r.clone()))
                    .collect();
                crate::cluster_view::CollectionShards {
                    name: entry.spec.name.clone(),
                    replication_factor: entry.spec.replication_factor,
                    shards: crate::cluster_view::shard_infos(&entry, &mine),
                }
            })
            .collect();
        let ids: Vec<(u64, String)> = nodes.iter().map(|n| (n.id, n.status.clone())).collect();
        let v = crate::cluster_view::assess(&ids, &collections);
        shoal_api::v1::HealthResponse { status: v.status.into(), reasons: v.reasons, nodes }
    }

    /// Every registered node's state, probed in parallel (`Err` for a node that did not answer); `want` says
    /// which costly parts to include (see [`Engine::node_state`]).
    pub async fn probe_nodes(
        &self,
        timeout: Duration,
        want: NodeStateRequest,
    ) -> Vec<(NodeRecord, Result<NodeStateReply>)> {
        let nodes = self.meta.catalog.nodes();
        let nodes = if nodes.is_empty() { vec![self.meta.node_record()] } else { nodes };
        let futs = nodes.into_iter().map(|n| async move {
            let st = if n.id == self.cfg.node_id {
                Ok(self.node_state(&want))
            } else {
                self.meta.peers.node_state(n.id, &n.address, want, timeout).await
            };
            (n, st)
        });
        futures::future::join_all(futs).await
    }

    /// The group-0 leader this node knows of.
    pub fn meta_leader(&self) -> Option<u64> {
        self.meta.group.leader_id()
    }

    /// The catalog entry of `name` (spec, uid, placement).
    pub fn collection_entry(&self, name: &str) -> Result<CollectionEntry> {
        self.check_open()?;
        self.meta.catalog.get(name).ok_or_else(|| Error::CollectionNotFound(name.to_string().into()))
    }

    /// First step of a graceful stop: this node answers no more node-state probes (so that peers do not
    /// hand it back the leadership it is about to give away, and see it as down) and its groups stop
    /// campaigning. Requests it already serves go on; Raft traffic goes on.
    pub fn begin_drain(&self) {
        self.lifecycle.set_draining();
        self.meta.group.set_campaigning(false);
        for r in self.local.replicas.read().values() {
            r.group.set_campaigning(false);
        }
    }

    /// Whether [`Engine::begin_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.lifecycle.is_draining()
    }

    /// Before a graceful stop: asks every group this node leads (group 0 and shards) to hand leadership to
    /// another voter, and waits up to `timeout` for them to take over, so that the cluster does not wait
    /// for an election timeout. Groups without another voter keep their leader.
    pub async fn hand_off_leadership(&self, timeout: Duration) {
        let me = self.cfg.node_id;
        let mut groups: Vec<&RaftGroup> = Vec::new();
        let replicas: Vec<Arc<ShardReplica>> = self.local.replicas.read().values().cloned().collect();
        groups.push(&self.meta.group);
        groups.extend(replicas.iter().map(|r| &r.group));
        // Hand off only to nodes that answer and are not stopping themselves: when the whole cluster stops,
        // leadership would otherwise bounce between draining nodes until the timeout.
        let takers: BTreeSet<u64> = self
            .probe_nodes(Duration::from_millis(300), NodeStateRequest::default())
            .await
            .into_iter()
            .filter(|(rec, st)| rec.id != me && st.as_ref().is_ok_and(|s| !s.draining))
            .map(|(rec, _)| rec.id)
            .collect();
        let mut moving = Vec::new();
        for g in groups {
            if !g.is_leader() {
                continue;
            }
            if let Some(&to) = g.voter_ids().iter().find(|&&v| v != me && takers.contains(&v)) {
                if let Err(e) = g.transfer_leader(to).await {
                    tracing::debug!(error = %e, "leadership hand-off");
                }
                moving.push(g);
            }
        }
        if moving.is_empty() {
            return;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && moving.iter().any(|g| g.is_leader()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let kept = moving.iter().filter(|g| g.is_leader()).count();
        tracing::info!(handed_off = moving.len() - kept, kept, "leadership handed off before stopping");
    }

    /// Stops accepting requests, shuts every group down (flushing logs) and stops the indexer.
    pub async fn shutdown(&self) {
        if self.lifecycle.set_closing() {
            return;
        }
        self.local.close_all().await;
        self.transport.deregister("meta");
        if let Err(e) = self.meta.group.shutdown().await {
            tracing::warn!(error = %e, "group 0 shutdown failed");
        }
        self.local.stop_indexer();
    }
}
