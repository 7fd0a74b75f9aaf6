//! The metadata plane of one node: group 0 (its Raft group and the catalog state machine: collections,
//! node registry, API keys), joining the cluster and serving joins, proposals to group 0 (forwarded to
//! its leader), the known-peers file and the rebuild of a damaged group 0 (`meta_rebuild.rs`).
//!
//! ```text
//!   open: group 0 from meta/ (or set aside when damaged, rebuilt at start from the known peers)
//!   start: join through --join (new node) | register (first node, restart)
//!   propose(cmd) ──> group-0 leader (here, or forwarded) ──> catalog applies it on every node
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::commands::{MetaCommand, decode_meta_reply, encode_meta};
use shoal_api::internal::{JoinRequest, NodeRecord};
use shoal_raft::{GrpcNetwork, RaftGroup, RaftTransportService};
use tokio::sync::Mutex as AsyncMutex;

use crate::catalog::Catalog;
use crate::engine::EngineConfig;
use crate::known_peers::KnownPeers;
use crate::levels::{FIRST_BACKOFF, MAX_BACKOFF};
use crate::peer::Peers;
use crate::{Detail, Error, Result};

/// How long without a group-0 leader makes a node consider itself cut off from the majority (see `cut_off`).
const CUT_OFF_AFTER: Duration = Duration::from_secs(2);

/// Group 0 on this node and what it takes to be (and stay) a member of the cluster.
pub(crate) struct MetaPlane {
    /// Static configuration of the node (shared with the other components).
    pub(crate) cfg: Arc<EngineConfig>,
    /// Group 0; registered with `transport` except while it is being rebuilt (`meta_rebuild` is `Some`).
    pub(crate) group: RaftGroup,
    /// Group 0's state machine: what every node agrees on (collections, registry, API keys).
    pub(crate) catalog: Arc<Catalog>,
    /// The Raft transport's registry of local groups (group 0 joins it once rebuilt).
    pub(crate) transport: RaftTransportService,
    /// Clients of the other nodes (shared with the other components).
    pub(crate) peers: Arc<Peers>,
    /// The other members of the cluster as last seen in the registry (kept outside group 0, see
    /// `known_peers.rs`): whom to rebuild group 0 from.
    pub(crate) known_peers: KnownPeers,
    /// Why group 0 is being rebuilt from the other members (`meta_rebuild.rs`); `None` once it is not (or
    /// never was). While `Some`, group 0 is not registered with the transport.
    pub(crate) meta_rebuild: parking_lot::Mutex<Option<String>>,
    /// Serialises membership changes of group 0 (joins) on its leader.
    join_lock: AsyncMutex<()>,
}

impl MetaPlane {
    /// Opens group 0 under `cfg.data_dir/meta` on the gRPC network `net`: registered with `transport`, or,
    /// when its files are damaged or missing on a node that was a member (`was_member`, or known peers on
    /// disk), set aside and reopened empty, to be rebuilt by `rebuild_meta` at start.
    pub(crate) async fn open(
        cfg: Arc<EngineConfig>,
        net: &GrpcNetwork,
        transport: RaftTransportService,
        peers: Arc<Peers>,
        was_member: bool,
    ) -> Result<MetaPlane> {
        let known_peers = KnownPeers::load(&cfg.data_dir);
        let meta_dir = cfg.data_dir.join("meta");
        let was_member = was_member || !known_peers.is_empty();
        let mut rebuild = crate::meta_rebuild::unfinished_or_missing(&meta_dir, was_member);
        let mut opts = cfg.raft.clone();
        opts.bootstrap_single = cfg.join.is_none();
        let mut catalog = Arc::new(Catalog::default());
        let mut meta = None;
        if rebuild.is_none() {
            match RaftGroup::open_with_network(
                &meta_dir,
                cfg.node_id,
                cfg.advertise.clone(),
                catalog.clone(),
                opts.clone(),
                net.factory("meta"),
            )
            .await
            {
                Ok(g) => meta = Some(g),
                Err(shoal_raft::Error::Corrupt { path, reason }) => {
                    rebuild = Some(format!("{}: {reason}", path.display()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let group = match meta {
            Some(g) => {
                transport.register("meta", &g);
                g
            }
            None => {
                // Group 0 is damaged: set it aside and open an empty one, which is not served to peers until
                // this node is out of group 0's membership (see meta_rebuild.rs).
                let reason = rebuild.clone().unwrap_or_default();
                let seeds = !known_peers.is_empty() || cfg.join.is_some();
                crate::meta_rebuild::set_aside(&cfg.data_dir, cfg.node_id, &reason, seeds)?;
                catalog = Arc::new(Catalog::default());
                opts.bootstrap_single = false;
                RaftGroup::open_with_network(
                    &meta_dir,
                    cfg.node_id,
                    cfg.advertise.clone(),
                    catalog.clone(),
                    opts,
                    net.factory("meta"),
                )
                .await?
            }
        };
        Ok(MetaPlane {
            cfg,
            group,
            catalog,
            transport,
            peers,
            known_peers,
            meta_rebuild: parking_lot::Mutex::new(rebuild),
            join_lock: AsyncMutex::new(()),
        })
    }

    /// Brings this node into group 0: rebuilds a damaged group 0 first; joins through `cfg.join` when group 0
    /// is new; registers when alone in it. Returns `false` for a member of a multi-node cluster restarting,
    /// which must register in the background (the others may still be down).
    pub(crate) async fn enter(&self, timeout: Duration, deadline: Instant) -> Result<bool> {
        let rebuild = self.meta_rebuild.lock().clone();
        if let Some(reason) = rebuild {
            self.rebuild_meta(&reason, deadline).await?;
        }
        if !self.group.is_initialized().await? {
            let Some(seed) = self.cfg.join.clone() else {
                return Err(Error::Internal("group 0 is not initialised and no --join address was given".into()));
            };
            self.join_through(&seed, deadline).await?;
        } else if self.group.effective_voters().await? == [self.cfg.node_id] {
            // Alone in group 0 (first node, or a single-node cluster restarting): lead it, then register.
            self.group.wait_leader(timeout).await?;
            self.register_self(deadline).await?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Asks the cluster reachable at `seed` to add this node, then waits until this node's copy of
    /// group 0 holds its own registry entry (it has caught up).
    pub(crate) async fn join_through(&self, seed: &str, deadline: Instant) -> Result<()> {
        let me = self.node_record();
        let req = JoinRequest {
            node_id: me.id,
            address: me.address.clone(),
            zone: me.zone.clone(),
            version: me.version,
            forget: false,
        };
        let mut backoff = Duration::from_millis(50);
        let mut target: (u64, String) = (0, seed.to_string());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(
                    format!("joining the cluster through {seed} did not finish in time").into(),
                ));
            }
            match self.peers.join(target.0, &target.1, req.clone(), left).await {
                Ok(()) => break,
                Err(Error::NotLeader { leader: Some(l), .. }) => {
                    // The seed forwards to the leader itself; a hint only helps while it cannot.
                    if let Some(n) = self.catalog.node(l) {
                        target = (l, n.address);
                    }
                }
                Err(e) if e.is_retryable() || matches!(e, Error::Timeout(_)) => {
                    tracing::info!(error = %e, "join through {seed}: retrying");
                    target = (0, seed.to_string());
                }
                Err(e) => return Err(e.context(&format!("joining the cluster through {seed}"))),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        while self.catalog.node(self.cfg.node_id).is_none() {
            if Instant::now() > deadline {
                return Err(Error::Timeout("joined, but group 0 did not catch up in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(seed, "joined the cluster");
        Ok(())
    }

    /// On the group-0 leader: registers node `req.node_id`, adds it to group 0 as a learner (it catches
    /// up), and promotes it to voter while group 0 has fewer than 5 voters. Returns whether this node (the
    /// leader) added a node, so that the caller may rebalance onto it; a forget or a join forwarded to
    /// another leader returns `false`.
    pub(crate) async fn handle_join(&self, req: JoinRequest, timeout: Duration) -> Result<bool> {
        shoal_api::commands::check_node(req.node_id, &req.address)
            .map_err(|e| Error::InvalidArgument(Detail::caused_by(e.to_string(), e)))?;
        if req.zone.len() > 128 || req.version.len() > 64 {
            return Err(Error::InvalidArgument(
                format!("join of node {}: zone or version too long", req.node_id).into(),
            ));
        }
        if !self.group.is_leader() {
            return self.forward_join(req, timeout).await;
        }
        let deadline = Instant::now() + timeout;
        let _guard = tokio::time::timeout(timeout, self.join_lock.lock())
            .await
            .map_err(|_| Error::Timeout("another join is in progress".into()))?;
        if req.forget {
            return self.forget_member(req.node_id, deadline).await.map(|()| false);
        }
        if let Some(existing) = self.catalog.node(req.node_id)
            && existing.address != req.address
            && self.group.voter_ids().contains(&req.node_id)
        {
            tracing::warn!(node = req.node_id, old = %existing.address, new = %req.address, "node re-joins at a new address");
        }
        let record = NodeRecord {
            id: req.node_id,
            address: req.address.clone(),
            zone: req.zone,
            state: "up".into(),
            version: req.version,
        };
        self.propose(&MetaCommand::UpsertNode(record), deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, self.group.add_learner(req.node_id, req.address.clone())).await.map_err(
            |_| Error::Timeout(format!("node {} did not catch up with group 0 in time", req.node_id).into()),
        )??;
        let left = deadline.saturating_duration_since(Instant::now());
        if !self.group.wait_member_replicated(req.node_id, left).await {
            return Err(Error::Timeout(
                format!(
                    "node {} at {} did not receive group 0's log in time (unreachable?); it stays a learner",
                    req.node_id, req.address
                )
                .into(),
            ));
        }
        let mut voters: BTreeSet<u64> = self.group.voter_ids().into_iter().collect();
        if !voters.contains(&req.node_id) && voters.len() < 5 {
            voters.insert(req.node_id);
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, self.group.change_membership(voters))
                .await
                .map_err(|_| Error::Timeout(format!("promoting node {} to voter timed out", req.node_id).into()))??;
        }
        tracing::info!(node = req.node_id, "node joined");
        Ok(true)
    }

    /// Sends a join to group 0's leader (this node once it leads), following leader changes until `timeout`.
    async fn forward_join(&self, req: JoinRequest, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let res = match self.leader_addr() {
                Some((id, _)) if id == self.cfg.node_id => return Box::pin(self.handle_join(req, left)).await,
                Some((id, addr)) => self.peers.join(id, &addr, req.clone(), left).await.map(|()| false),
                None => Err(Error::NodeUnavailable("no group-0 leader known".into())),
            };
            match res {
                Err(e) if e.is_retryable() && Instant::now() + backoff < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                r => return r,
            }
        }
    }

    /// The group-0 leader and its address, when known.
    fn leader_addr(&self) -> Option<(u64, String)> {
        let id = self.group.leader_id()?;
        self.node_addr(id).map(|a| (id, a))
    }

    /// The address of node `id` from the registry.
    pub(crate) fn node_addr(&self, id: u64) -> Option<String> {
        if id == self.cfg.node_id {
            return Some(self.cfg.advertise.clone());
        }
        self.catalog.node(id).map(|n| n.address)
    }

    /// Adds this node to the registry in group 0, or updates its address and version there.
    pub(crate) async fn register_self(&self, deadline: Instant) -> Result<()> {
        let me = self.node_record();
        if self.catalog.node(me.id).as_ref() == Some(&me) {
            return Ok(());
        }
        self.propose(&MetaCommand::UpsertNode(me), deadline).await?;
        Ok(())
    }

    /// This node's registry record.
    pub(crate) fn node_record(&self) -> NodeRecord {
        NodeRecord {
            id: self.cfg.node_id,
            address: self.cfg.advertise.clone(),
            zone: self.cfg.zone.clone(),
            state: "up".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Proposes a metadata command on group 0 (here when this node leads it, else on its leader),
    /// retrying through leader changes until `deadline`. Returns the command's outcome.
    pub(crate) async fn propose(&self, cmd: &MetaCommand, deadline: Instant) -> Result<bool> {
        let bytes = encode_meta(cmd);
        let mut backoff = FIRST_BACKOFF;
        let mut last: Option<Error> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = last.map_or_else(String::new, |e| format!(": {e}"));
                return Err(Error::Consistency(format!("no group-0 leader committed the change in time{why}").into()));
            }
            let res = if self.group.is_leader() {
                match tokio::time::timeout(left, self.group.write(bytes.clone())).await {
                    Ok(r) => r.map_err(Error::from),
                    Err(_) => Err(Error::Timeout("group-0 write not committed in time".into())),
                }
            } else {
                match self.leader_addr() {
                    Some((id, addr)) => self.peers.meta_propose(id, &addr, bytes.clone(), left).await,
                    None => Err(Error::NodeUnavailable("no group-0 leader known".into())),
                }
            };
            match res {
                Ok(reply) => {
                    let outcome = decode_meta_reply(&reply)?;
                    return outcome.map_err(|msg| {
                        if msg.contains("already exists") {
                            Error::CollectionExists(msg.into())
                        } else if msg.contains("cannot place") {
                            Error::InvalidArgument(msg.into())
                        } else {
                            Error::Internal(msg.into())
                        }
                    });
                }
                Err(e) if e.is_retryable() || matches!(e, Error::Timeout(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Serves a metadata proposal forwarded by another node (this node must lead group 0).
    pub(crate) async fn handle_propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        if !self.group.is_leader() {
            return Err(Error::not_leader(self.group.leader_id()));
        }
        tokio::time::timeout(timeout, self.group.write(command))
            .await
            .map_err(|_| Error::Timeout("group-0 write not committed in time".into()))?
            .map_err(Error::from)
    }

    /// `Some(NodeUnavailable)` while this node is cut off from the cluster's majority: a member of a group 0 with
    /// several voters that has heard from no group-0 leader (or, leading it, from no quorum) for
    /// [`CUT_OFF_AFTER`]. A request that cannot be served here then fails with it at once instead of at its
    /// deadline, and the client fails over to a node that may reach the majority (writes keep their write id).
    pub(crate) fn cut_off(&self) -> Option<Error> {
        if self.group.voter_ids().len() < 2 {
            return None;
        }
        let age = self.group.leader_contact_age();
        (age > CUT_OFF_AFTER).then(|| {
            Error::NodeUnavailable(
                format!(
                    "node {} has heard from no group-0 leader for {:.1} s: it is cut off from the cluster's majority \
                 (partitioned?); another node may serve the request",
                    self.cfg.node_id,
                    age.as_secs_f64()
                )
                .into(),
            )
        })
    }

    /// Number of registered nodes (at least 1).
    pub(crate) fn node_count(&self) -> usize {
        self.catalog.nodes().len().max(1)
    }

    /// Zone of every registered node ("" = none).
    pub(crate) fn node_zones(&self) -> HashMap<u64, String> {
        let mut z: HashMap<u64, String> = self.catalog.nodes().into_iter().map(|n| (n.id, n.zone)).collect();
        z.insert(self.cfg.node_id, self.cfg.zone.clone());
        z
    }
}
