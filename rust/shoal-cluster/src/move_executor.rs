//! Moves of shard replicas and leaderships between nodes, as this node takes part in them: the move pass
//! walks every shard group this node leads through its next membership step towards the placement
//! (`mover.rs` decides), hands leadership to the preferred leader, removes departed nodes from group 0;
//! `rebalance` and `remove_node` start moves through group 0; `handle_heal_replica` drops a damaged
//! replica from a led group.
//!
//! ```text
//!   rebalance / remove_node ──> MoveReplica / PreferLeader in group 0 ──> catalog placement changes
//!   move pass (shard leader) ──> add learner ──> change voters ──> FinishMove in group 0
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::commands::MetaCommand;
use shoal_api::internal::{FinishMove, HealReplicaRequest, MoveReplica, NodeRecord, NodeStateRequest, PreferLeader};

use crate::catalog::CollectionEntry;
use crate::lifecycle::Lifecycle;
use crate::local_replicas::{LocalReplicas, ShardReplica};
use crate::meta_plane::MetaPlane;
use crate::mover::{self, MembershipStep};
use crate::placement::{self, MoveKind};
use crate::reconciler::ReplicaKey;
use crate::{Detail, Error, Result};

/// Shortest time between two leadership hand-overs of one group to its preferred leader.
const HANDOVER_COOLDOWN: Duration = Duration::from_secs(5);
/// How long a leader about to leave its group waits for the voter it handed leadership to.
const HAND_OVER_WAIT: Duration = Duration::from_secs(2);
/// Replica moves started per rebalance round.
pub const MAX_CONCURRENT_MOVES: usize = 2;

/// A move [`Engine::rebalance`] started: a replica of `shard` moving from node `from` to node `to`, or the
/// shard's preferred leader moving between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedMove {
    /// The collection.
    pub collection: String,
    /// The shard.
    pub shard: u32,
    /// The node giving up the replica (or the leadership).
    pub from: u64,
    /// The node receiving it.
    pub to: u64,
}

/// Carries out replica and leadership moves on this node.
pub(crate) struct MoveExecutor {
    /// This node's id.
    me: u64,
    /// Group 0: the placement to move towards, and where moves are proposed.
    meta: Arc<MetaPlane>,
    /// This node's replicas (the groups it may lead).
    local: Arc<LocalReplicas>,
    /// The engine's life cycle (background rebalancing stops at shutdown).
    lifecycle: Arc<Lifecycle>,
    /// Groups with a membership change in progress on this node ("meta" for group 0), by group id: at most
    /// one change per group at a time (move steps and heal removals alike).
    moving: parking_lot::Mutex<HashSet<String>>,
    /// When this node last handed a group's leadership to its preferred leader, by group id.
    handovers: parking_lot::Mutex<HashMap<String, Instant>>,
}

impl MoveExecutor {
    /// Nothing moving yet.
    pub(crate) fn new(meta: Arc<MetaPlane>, local: Arc<LocalReplicas>, lifecycle: Arc<Lifecycle>) -> MoveExecutor {
        MoveExecutor {
            me: meta.cfg.node_id,
            meta,
            local,
            lifecycle,
            moving: parking_lot::Mutex::new(HashSet::new()),
            handovers: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// On every shard group this node leads: starts the next membership step towards the placement
    /// (see `mover`), at most one per group at a time.
    pub(crate) async fn move_pass(self: &Arc<Self>) {
        self.meta_membership_pass().await;
        let replicas: Vec<(ReplicaKey, Arc<ShardReplica>)> =
            self.local.replicas.read().iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        for (key, r) in replicas {
            if !r.group.is_leader() || self.moving.lock().contains(&r.gid) {
                continue;
            }
            let Some(entry) = self.meta.catalog.get(&key.collection).filter(|e| e.uid == key.uid) else { continue };
            let Ok((voters, learners)) = r.group.members().await else { continue };
            let step = mover::next_step(entry.replicas(key.shard), entry.leaving(key.shard), &voters, &learners);
            if step == MembershipStep::Nothing {
                self.maybe_hand_to_preferred(&entry, key.shard, &r, &voters).await;
                continue;
            }
            self.moving.lock().insert(r.gid.clone());
            let mover = self.clone();
            tokio::spawn(async move {
                if let Err(e) = mover.run_step(&key, &r, step.clone()).await {
                    tracing::warn!(group = %r.gid, ?step, error = %e, "shard move step failed (will retry)");
                }
                mover.moving.lock().remove(&r.gid);
            });
        }
    }

    /// On the leader of a settled shard group: hands leadership to the placement's preferred leader (the
    /// first replica, which placement and rebalancing keep balanced over the nodes) when that node is a
    /// voter, up, answering, and has applied everything but the last few entries; at most once per
    /// [`HANDOVER_COOLDOWN`] per group, so a flapping node cannot make leadership bounce.
    async fn maybe_hand_to_preferred(
        &self,
        entry: &CollectionEntry,
        shard: u32,
        r: &Arc<ShardReplica>,
        voters: &BTreeSet<u64>,
    ) {
        let me = self.me;
        let Some(&preferred) = entry.replicas(shard).first() else { return };
        if preferred == me || !voters.contains(&preferred) || !entry.leaving(shard).is_empty() {
            return;
        }
        if self.meta.catalog.node(preferred).is_none_or(|n| n.state != "up") {
            return;
        }
        {
            let mut last = self.handovers.lock();
            if last.get(&r.gid).is_some_and(|t| t.elapsed() < HANDOVER_COOLDOWN) {
                return;
            }
            last.insert(r.gid.clone(), Instant::now());
        }
        let Some(addr) = self.meta.node_addr(preferred) else { return };
        let Ok(st) =
            self.meta.peers.node_state(preferred, &addr, NodeStateRequest::default(), Duration::from_millis(300)).await
        else {
            return;
        };
        let mine = r.group.applied_index();
        let caught_up = st.replicas.iter().any(|x| {
            x.collection == entry.spec.name && x.uid == entry.uid && x.shard == shard && x.applied_index + 16 >= mine
        });
        if caught_up && r.group.is_leader() {
            tracing::info!(group = %r.gid, to = preferred, "handing leadership to the preferred leader");
            if let Err(e) = r.group.transfer_leader(preferred).await {
                tracing::debug!(group = %r.gid, error = %e, "leadership hand-over");
            }
        }
    }

    /// On the group-0 leader: removes from group 0 the members that left the registry (`remove_node`).
    async fn meta_membership_pass(self: &Arc<Self>) {
        if !self.meta.group.is_leader() || self.moving.lock().contains("meta") {
            return;
        }
        let Ok((voters, learners)) = self.meta.group.members().await else { return };
        let registered: BTreeSet<u64> = self.meta.catalog.nodes().iter().map(|n| n.id).collect();
        if registered.is_empty() {
            return;
        }
        let gone: BTreeSet<u64> = voters.union(&learners).copied().filter(|n| !registered.contains(n)).collect();
        if gone.is_empty() || voters.iter().all(|v| gone.contains(v)) {
            return;
        }
        self.moving.lock().insert("meta".into());
        let mover = self.clone();
        tokio::spawn(async move {
            tracing::info!(?gone, "removing nodes from group 0");
            match tokio::time::timeout(Duration::from_secs(30), mover.meta.group.remove_members(gone)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "removing nodes from group 0 failed (will retry)"),
                Err(_) => tracing::warn!("removing nodes from group 0 timed out (will retry)"),
            }
            mover.moving.lock().remove("meta");
        });
    }

    /// Removes node `id` from the cluster: marks it leaving; with `drain`, moves every replica off it and
    /// waits until none is left (within `timeout`); then drops it from the registry, after which the group-0
    /// leader removes it from group 0. Returns the number of replica moves started.
    pub(crate) async fn remove_node(self: &Arc<Self>, id: u64, drain: bool, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        let rec = self
            .meta
            .catalog
            .node(id)
            .ok_or_else(|| Error::InvalidArgument(format!("node {id} is not a member of the cluster").into()))?;
        if self.meta.catalog.nodes().iter().all(|n| n.id == id) {
            return Err(Error::InvalidArgument(format!("node {id} is the last node of the cluster").into()));
        }
        if drain {
            // Refuse before changing anything when some replica has nowhere to go.
            placement::drain(&self.meta.catalog.drain_view(id), id)
                .map_err(|e| Error::InvalidArgument(Detail::caused_by(e.to_string(), e)))?;
        }
        if rec.state != "leaving" {
            let leaving = NodeRecord { state: "leaving".into(), ..rec };
            self.meta.propose(&MetaCommand::UpsertNode(leaving), deadline).await?;
        }
        let mut moves = 0u32;
        while drain && self.holds_replicas(id) {
            if Instant::now() > deadline {
                return Err(Error::Timeout(
                    format!(
                        "node {id} still holds replicas; its drain goes on in the background (call remove_node again)"
                    )
                    .into(),
                ));
            }
            for m in placement::drain(&self.meta.catalog.drain_view(id), id)
                .map_err(|e| Error::InvalidArgument(Detail::caused_by(e.to_string(), e)))?
            {
                let Some(entry) = self.meta.catalog.get(&m.collection) else { continue };
                if !entry.leaving(m.shard).is_empty()
                    || entry.replicas(m.shard).len() > entry.spec.replication_factor as usize
                {
                    continue; // already moving
                }
                let cmd = MetaCommand::MoveReplica(MoveReplica {
                    collection: m.collection.clone(),
                    uid: entry.uid,
                    shard: m.shard,
                    from: id,
                    to: m.to,
                });
                match self.meta.propose(&cmd, deadline).await {
                    Ok(_) => {
                        moves += 1;
                        tracing::info!(collection = %m.collection, shard = m.shard, from = id, to = m.to, "drain move started");
                    }
                    Err(Error::Internal(msg)) if msg.contains("move refused") => {}
                    Err(e) => return Err(e),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.meta.propose(&MetaCommand::RemoveNode(id), deadline).await?;
        tracing::info!(node = id, drain, moves, "node removed from the registry");
        // Re-place what a node removed without draining still held.
        tokio::spawn(self.clone().rebalance_until_settled());
        Ok(moves)
    }

    /// Whether node `id` holds (or is about to hold) a replica of some shard.
    fn holds_replicas(&self, id: u64) -> bool {
        self.meta.catalog.list().iter().any(|e| (0..e.spec.shards).any(|s| e.replicas(s).contains(&id)))
    }

    async fn run_step(&self, key: &ReplicaKey, r: &ShardReplica, step: MembershipStep) -> Result<()> {
        tracing::info!(group = %r.gid, ?step, "shard move step");
        match step {
            MembershipStep::Nothing => Ok(()),
            MembershipStep::AddLearner(n) => {
                let addr =
                    self.meta.node_addr(n).ok_or_else(|| Error::Internal(format!("node {n} has no address").into()))?;
                // Returns once the learner caught up (snapshot streamed in chunks, then the log).
                tokio::time::timeout(Duration::from_secs(600), r.group.add_learner(n, addr))
                    .await
                    .map_err(|_| Error::Timeout(format!("node {n} did not catch up within 600 s").into()))??;
                Ok(())
            }
            MembershipStep::ChangeVoters(voters) => {
                if !voters.contains(&self.me) && self.hand_over_before_leaving(r, &voters).await {
                    return Ok(()); // the new leader makes the change (its move pass)
                }
                tokio::time::timeout(Duration::from_secs(60), r.group.change_membership(voters))
                    .await
                    .map_err(|_| Error::Timeout("membership change not committed within 60 s".into()))??;
                Ok(())
            }
            MembershipStep::FinishMove => {
                let cmd = MetaCommand::FinishMove(FinishMove {
                    collection: key.collection.clone(),
                    uid: key.uid,
                    shard: key.shard,
                });
                self.meta.propose(&cmd, Instant::now() + Duration::from_secs(10)).await.map(|_| ())
            }
        }
    }

    /// Before the leader removes itself from its group's voters: hands leadership to one of the remaining
    /// `voters` and waits (bounded) until it took over. Removing itself while leading would leave the group
    /// without a leader for an election timeout and more (measured: a ~0.5 s write stall at the end of every
    /// move off a leader); a hand-over costs one round trip. Returns whether leadership moved; if not, the
    /// caller makes the change itself as before.
    async fn hand_over_before_leaving(&self, r: &ShardReplica, voters: &BTreeSet<u64>) -> bool {
        let current: BTreeSet<u64> = r.group.voter_ids().into_iter().collect();
        let Some(&to) = voters.iter().find(|v| current.contains(v)) else { return false };
        tracing::info!(group = %r.gid, to, "handing leadership over before leaving the group");
        if let Err(e) = r.group.transfer_leader(to).await {
            tracing::debug!(group = %r.gid, error = %e, "leadership hand-over before leaving");
            return false;
        }
        let deadline = Instant::now() + HAND_OVER_WAIT;
        while Instant::now() < deadline {
            if !r.group.is_leader() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Plans moves that balance the cluster (pure `placement::rebalance`, at most [`MAX_CONCURRENT_MOVES`]
    /// at a time, none on a shard already moving) and starts them through group 0: replica moves (the shard
    /// leader then walks its group through them) and preferred-leader changes (the current leader hands
    /// over). `collection` = "" for every collection. Returns the moves started.
    pub(crate) async fn rebalance(&self, collection: &str, timeout: Duration) -> Result<Vec<StartedMove>> {
        if !collection.is_empty() && self.meta.catalog.get(collection).is_none() {
            return Err(Error::CollectionNotFound(collection.to_string().into()));
        }
        let deadline = Instant::now() + timeout;
        let moves = placement::rebalance(&self.meta.catalog.view(), MAX_CONCURRENT_MOVES);
        let mut started = Vec::new();
        for m in moves {
            if !collection.is_empty() && m.collection != collection {
                continue;
            }
            let Some(entry) = self.meta.catalog.get(&m.collection) else { continue };
            let from = m.from.unwrap_or(0);
            if m.kind == MoveKind::Leader {
                // Only the preferred leader changes; the shard's current leader hands over (move_pass).
                let cmd = MetaCommand::PreferLeader(PreferLeader {
                    collection: m.collection.clone(),
                    uid: entry.uid,
                    shard: m.shard,
                    node: m.to,
                });
                match self.meta.propose(&cmd, deadline).await {
                    Ok(_) => {
                        tracing::info!(collection = %m.collection, shard = m.shard, from, to = m.to, "preferred leader moved");
                        started.push(StartedMove { collection: m.collection, shard: m.shard, from, to: m.to });
                    }
                    Err(Error::Internal(msg)) if msg.contains("refused") => {
                        tracing::debug!(%msg, "leader change skipped")
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let cmd = MetaCommand::MoveReplica(MoveReplica {
                collection: m.collection.clone(),
                uid: entry.uid,
                shard: m.shard,
                from,
                to: m.to,
            });
            match self.meta.propose(&cmd, deadline).await {
                Ok(_) => {
                    tracing::info!(collection = %m.collection, shard = m.shard, from, to = m.to, "replica move started");
                    started.push(StartedMove { collection: m.collection, shard: m.shard, from, to: m.to });
                }
                Err(Error::Internal(msg)) if msg.contains("move refused") => tracing::debug!(%msg, "move skipped"),
                Err(e) => return Err(e),
            }
        }
        Ok(started)
    }

    /// Whether some shard of some collection is moving.
    fn moves_in_flight(&self) -> bool {
        self.meta.catalog.list().iter().any(|e| {
            (0..e.spec.shards)
                .any(|s| !e.leaving(s).is_empty() || e.replicas(s).len() > e.spec.replication_factor as usize)
        })
    }

    /// Rebalances in rounds until nothing moves (bounded: 100 rounds, 30 minutes), waiting for each round's
    /// moves to finish. Run by the group-0 leader after a node joined.
    pub(crate) async fn rebalance_until_settled(self: Arc<Self>) {
        let deadline = Instant::now() + Duration::from_secs(1800);
        for _ in 0..100 {
            while self.moves_in_flight() {
                if Instant::now() > deadline || self.lifecycle.is_closing() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            match self.rebalance("", Duration::from_secs(10)).await {
                Ok(m) if m.is_empty() => return,
                Ok(m) => tracing::info!(moves = m.len(), "rebalance round started"),
                Err(e) => {
                    tracing::warn!(error = %e, "rebalance round failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            // Let the catalog show the moves before checking again.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// On the shard leader: drops `req.node` (its replica is damaged) from the group's membership, voter
    /// and learner alike. The leader's mover then adds it back as a learner, and promotes it once caught up.
    pub(crate) async fn handle_heal_replica(&self, req: HealReplicaRequest, timeout: Duration) -> Result<()> {
        let key = ReplicaKey::new(req.collection.clone(), req.uid, req.shard);
        let r = self
            .local
            .replica_by_gid(&req.collection, req.uid, req.shard)
            .ok_or_else(|| self.local.replica_not_open(&key))?;
        if !r.group.is_leader() {
            return Err(Error::not_leader(r.group.leader_id()));
        }
        let (voters, learners) = r.group.members().await?;
        if !voters.contains(&req.node) && !learners.contains(&req.node) {
            return Ok(());
        }
        if voters.len() == 1 && voters.contains(&req.node) {
            return Err(Error::InvalidArgument(format!("node {} is the only voter of {}", req.node, r.gid).into()));
        }
        if !self.moving.lock().insert(r.gid.clone()) {
            return Err(Error::ShardUnavailable(format!("{} is changing its membership: retry", r.gid).into()));
        }
        tracing::warn!(group = %r.gid, node = req.node, damage = %req.damage, "dropping a damaged replica to rebuild it");
        let res = tokio::time::timeout(timeout, r.group.remove_members([req.node].into_iter().collect())).await;
        self.moving.lock().remove(&r.gid);
        match res {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::Timeout(format!("dropping node {} from {} took too long", req.node, r.gid).into())),
        }
    }
}
