//! Executes the quarantine and heal decisions of `quarantine.rs` for this node's replicas: contain a damaged
//! replica (closed, reported), move its files aside, have the shard leader drop it from the group, open a
//! fresh copy, and on the leader side serve `HealReplica`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::internal::{HealReplicaRequest, ReplicaState};

use crate::anti_entropy::{PeerRing, can_spare, judge, newest_common};

use crate::catalog::CollectionEntry;
use crate::leader_hints::LeaderHints;
use crate::local_replicas::{LocalReplicas, ShardReplica, remove_dir_all_blocking, shard_dir};
use crate::quarantine::{HealStep, Quarantine, Stage, first_stage, next_step};
use crate::reconciler::ReplicaKey;
use crate::{Error, Result};

/// Deadline of one `HealReplica` call (a membership change on the leader).
const HEAL_CALL: Duration = Duration::from_secs(10);

impl LocalReplicas {
    /// Quarantines this node's replica `key` found damaged (`damage` names file and offset): it stays
    /// closed; with peers to copy from, its files go to `DATA_DIR/damaged/` and the heal starts.
    pub(crate) fn quarantine_replica(&self, entry: &CollectionEntry, key: &ReplicaKey, damage: String) {
        let peers: Vec<u64> = entry.replicas(key.shard).iter().copied().filter(|n| *n != self.cfg.node_id).collect();
        let stage = first_stage(&peers);
        let mut kept_at = None;
        if stage != Stage::Refused {
            let dir = shard_dir(&self.cfg.data_dir, key);
            let ms = shoal_core::hlc::system_ms();
            let dest =
                self.cfg.data_dir.join("damaged").join(format!("{}@{}-{}-{ms}", key.collection, key.uid, key.shard));
            let moved = std::fs::create_dir_all(self.cfg.data_dir.join("damaged"))
                .and_then(|()| if dir.exists() { std::fs::rename(&dir, &dest) } else { Ok(()) });
            match moved {
                Ok(()) if dest.exists() => kept_at = Some(dest),
                Ok(()) => {}
                Err(e) => {
                    // The heal cannot open a fresh copy over the damaged files: stay quarantined, say why.
                    tracing::error!(dir = %dir.display(), error = %e, "could not move a damaged replica aside");
                    self.quarantine.write().insert(
                        key.clone(),
                        Quarantine {
                            damage: format!("{damage}; moving it aside failed: {e}"),
                            stage: Stage::Refused,
                            kept_at: None,
                            since: Instant::now(),
                        },
                    );
                    return;
                }
            }
        }
        tracing::error!(
            collection = %key.collection,
            shard = key.shard,
            node = self.cfg.node_id,
            %damage,
            kept_at = ?kept_at,
            "replica quarantined: {}",
            stage.as_str()
        );
        self.quarantine.write().insert(key.clone(), Quarantine { damage, stage, kept_at, since: Instant::now() });
    }

    /// The error for a request that needs this node's replica `key`, which is not open: a storage error
    /// naming the damage when it is quarantined as the only replica; unavailable (another replica may
    /// serve it) otherwise.
    pub(crate) fn replica_not_open(&self, key: &ReplicaKey) -> Error {
        let me = self.cfg.node_id;
        match self.quarantine.read().get(key) {
            Some(q) if q.stage == Stage::Refused => Error::Storage(
                format!(
                    "shard {} of collection {:?} on node {me} is damaged and has no other replica: {} ({})",
                    key.shard,
                    key.collection,
                    q.damage,
                    q.stage.as_str()
                )
                .into(),
            ),
            Some(q) => Error::ShardUnavailable(
                format!(
                    "replica of shard {} of collection {:?} on node {me} is quarantined ({}): {}",
                    key.shard,
                    key.collection,
                    q.stage.as_str(),
                    q.damage
                )
                .into(),
            ),
            None => Error::ShardUnavailable(
                format!("shard {} of collection {:?} is not open on node {me}", key.shard, key.collection).into(),
            ),
        }
    }

    /// Keys of quarantined replicas.
    pub(crate) fn quarantined_keys(&self) -> Vec<ReplicaKey> {
        self.quarantine.read().keys().cloned().collect()
    }

    /// Forgets the quarantine of `key` (its replica left this node on purpose).
    pub(crate) fn forget_quarantine(&self, key: &ReplicaKey) {
        self.quarantine.write().remove(key);
    }

    /// Node-state entries for the quarantined replicas that are not open (an open one, rebuilding, is
    /// reported with its group and `damage` set by [`LocalReplicas::damage_of`]).
    pub(crate) fn quarantine_states(&self) -> Vec<ReplicaState> {
        let open = self.replicas.read();
        self.quarantine
            .read()
            .iter()
            .filter(|(k, _)| !open.contains_key(*k))
            .map(|(ReplicaKey { collection: name, uid, shard }, q)| ReplicaState {
                collection: name.clone(),
                uid: *uid,
                shard: *shard,
                role: "follower".into(),
                damage: q.damage.clone(),
                repair: q.stage.as_str().into(),
                ..Default::default()
            })
            .collect()
    }

    /// (damage, repair stage) of `key` when quarantined.
    pub(crate) fn damage_of(&self, key: &ReplicaKey) -> Option<(String, String)> {
        self.quarantine.read().get(key).map(|q| (q.damage.clone(), q.stage.as_str().to_string()))
    }

    /// One pass over the damaged replicas (run periodically): quarantine open replicas whose state machine
    /// met an undecodable committed entry, then take every quarantined replica one step further.
    pub(crate) async fn heal_pass(self: &Arc<Self>, hints: &LeaderHints) {
        // Under the lock only: find the damaged replicas and claim them and the quarantined ones (see
        // `LocalReplicas::reconcile`); closing groups, asking leaders and opening fresh copies run without it.
        // A replica another pass holds is left for the next heal pass.
        let (damaged, claimed) = {
            let Some(_guard) = self.lock_for_pass().await else { return };
            let mut claimed = BTreeMap::new();
            let damaged: Vec<(ReplicaKey, String)> = self
                .replicas
                .read()
                .iter()
                .filter(|(k, _)| !self.quarantine.read().contains_key(*k))
                .filter_map(|(k, r)| r.app.damage().map(|d| (k.clone(), d)))
                .filter(|(k, _)| self.claim(k).map(|c| claimed.insert(k.clone(), c)).is_some())
                .collect();
            for key in self.quarantined_keys() {
                if !claimed.contains_key(&key)
                    && let Some(c) = self.claim(&key)
                {
                    claimed.insert(key, c);
                }
            }
            (damaged, claimed)
        };
        for (key, damage) in damaged {
            let Some(entry) = self.meta.catalog.get(&key.collection).filter(|e| e.uid == key.uid) else { continue };
            let removed = self.replicas.write().remove(&key);
            if let Some(r) = removed {
                self.transport.deregister(&r.gid);
                if let Err(e) = r.group.shutdown().await {
                    tracing::warn!(group = %r.gid, error = %e, "closing a damaged replica");
                }
            }
            self.quarantine_replica(&entry, &key, damage);
        }
        // The replicas quarantined above go on at once; those quarantined meanwhile by a reconcile pass wait.
        let keys: Vec<ReplicaKey> = self.quarantined_keys().into_iter().filter(|k| claimed.contains_key(k)).collect();
        for key in keys {
            let Some(entry) = self.meta.catalog.get(&key.collection).filter(|e| e.uid == key.uid) else { continue };
            let Some(stage) = self.quarantine.read().get(&key).map(|q| q.stage) else { continue };
            let peers: Vec<u64> =
                entry.replicas(key.shard).iter().copied().filter(|n| *n != self.cfg.node_id).collect();
            let fresh_voter = self.replicas.read().get(&key).is_some_and(|r| {
                let (role, _) = r.group.role_and_last_index();
                role == "follower" || role == "leader"
            });
            match next_step(stage, &peers, false, fresh_voter) {
                HealStep::Wait => {}
                HealStep::Healed => {
                    let q = self.quarantine.write().remove(&key);
                    let took = q.map(|q| q.since.elapsed()).unwrap_or_default();
                    tracing::info!(collection = %key.collection, shard = key.shard, ?took, "damaged replica rebuilt from its peers");
                }
                HealStep::AskLeaderToRemove(peers) => {
                    let damage = self.quarantine.read().get(&key).map(|q| q.damage.clone()).unwrap_or_default();
                    match self.ask_leader_to_remove(&key, &peers, damage, hints.get(&key.group_id())).await {
                        Ok(()) => {
                            if next_step(stage, &peers, true, false) == HealStep::OpenFresh {
                                self.open_fresh(&entry, &key).await;
                            }
                        }
                        Err(e) => {
                            tracing::info!(collection = %key.collection, shard = key.shard, error = %e, "heal: not yet removed")
                        }
                    }
                }
                HealStep::OpenFresh => self.open_fresh(&entry, &key).await,
            }
        }
    }

    /// Anti-entropy (run every few seconds): compares each open voter replica's recent digests with its
    /// peers' at common applied indexes (one node-state probe per peer node) and marks a replica that its
    /// peers outvote damaged; the next heal pass quarantines and rebuilds it. `states`: the replicas of every
    /// other node that answered, with their digest rings.
    pub(crate) fn anti_entropy_pass(&self, states: &[(u64, Vec<ReplicaState>)]) {
        let local: Vec<(ReplicaKey, Arc<ShardReplica>)> =
            self.replicas.read().iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        for (key, r) in local {
            let (role, _) = r.group.role_and_last_index();
            if !(role == "leader" || role == "follower")
                || r.app.damage().is_some()
                || self.quarantine.read().contains_key(&key)
            {
                continue;
            }
            let peers: Vec<PeerRing> = states
                .iter()
                .filter_map(|(node, reps)| {
                    let st = reps
                        .iter()
                        .find(|s| s.collection == key.collection && s.uid == key.uid && s.shard == key.shard)?;
                    if !st.damage.is_empty() || !(st.role == "leader" || st.role == "follower") {
                        return None;
                    }
                    let ring = st.digest_ring.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                    Some(PeerRing { node: *node, leader: st.role == "leader", ring })
                })
                .collect();
            let mine = r.app.digest_ring();
            if let Some(why) = judge(&mine, &peers) {
                let voters = r.group.voter_ids();
                let healthy = peers
                    .iter()
                    .filter(|p| voters.contains(&p.node) && newest_common(&mine, &p.ring).is_some())
                    .count();
                if !can_spare(voters.len(), healthy) {
                    tracing::warn!(group = %r.gid, %why, voters = voters.len(), healthy,
                        "anti-entropy: this replica differs from its peers; rebuild deferred until the group keeps a majority without it");
                    continue;
                }
                tracing::error!(group = %r.gid, %why, "anti-entropy: this replica diverged from its peers");
                r.app.mark_damaged(format!("anti-entropy: {why}"));
            }
        }
    }

    /// Fault injection (tests): changes one point of this node's replica of `key` behind Raft's back (a
    /// payload patch applied to the store only), so that it diverges from its peers.
    pub fn diverge_replica(&self, name: &str, shard: u32) -> Result<String> {
        let entry = self.meta.catalog.get(name).ok_or_else(|| Error::CollectionNotFound(name.to_string().into()))?;
        let key = ReplicaKey::new(name, entry.uid, shard);
        let r = self.replica_by_gid(name, entry.uid, shard).ok_or_else(|| self.replica_not_open(&key))?;
        let store = r.app.store();
        let Some(p) = store.scroll(None, 1, None, false).pop() else {
            return Err(Error::InvalidArgument(format!("shard {shard} of {name:?} is empty on this node").into()));
        };
        let patch = serde_json::json!({"_diverged": true}).as_object().cloned().unwrap_or_default();
        let v = shoal_core::hlc::Version::new(p.version.hlc.saturating_add(1), p.version.node);
        store.apply(&shoal_core::store::WriteBatch::new(vec![shoal_core::store::WriteOp::PatchPayload {
            id: p.id.clone(),
            version: v,
            patch,
        }]));
        tracing::warn!(group = %r.gid, id = %p.id, "fault injection: replica changed behind Raft's back");
        Ok(p.id.to_string())
    }

    /// Opens an empty copy of `key` to be filled by the leader (this node is out of the group).
    async fn open_fresh(self: &Arc<Self>, entry: &CollectionEntry, key: &ReplicaKey) {
        let dir: PathBuf = shard_dir(&self.cfg.data_dir, key);
        if dir.exists()
            && let Err(e) = remove_dir_all_blocking(dir.clone()).await
        {
            tracing::error!(dir = %dir.display(), error = %e, "heal: could not clear the replica directory");
            return;
        }
        match self.open_replica(entry, key, true).await {
            Ok(()) => {
                if let Some(q) = self.quarantine.write().get_mut(key) {
                    q.stage = Stage::Rebuilding;
                }
                self.refresh_indexer();
                tracing::info!(collection = %key.collection, shard = key.shard, "heal: fresh replica open, catching up from the leader");
            }
            Err(e) => {
                tracing::warn!(collection = %key.collection, shard = key.shard, error = %e, "heal: opening a fresh replica")
            }
        }
    }

    /// Asks the shard's leader (trying `peers`, following leader hints) to drop this node from the group.
    async fn ask_leader_to_remove(
        &self,
        key: &ReplicaKey,
        peers: &[u64],
        damage: String,
        hint: Option<u64>,
    ) -> Result<()> {
        let req = HealReplicaRequest {
            collection: key.collection.clone(),
            uid: key.uid,
            shard: key.shard,
            node: self.cfg.node_id,
            damage,
        };
        let mut tried = Vec::new();
        let mut next: Vec<u64> = hint.into_iter().collect();
        next.extend(peers.iter().copied());
        let mut last = Error::ShardUnavailable(format!("no replica of shard {} answered", key.shard).into());
        while let Some(n) = next.first().copied() {
            next.remove(0);
            if tried.contains(&n) || n == self.cfg.node_id {
                continue;
            }
            tried.push(n);
            let Some(addr) = self.meta.node_addr(n) else { continue };
            match self.peers.heal_replica(n, &addr, req.clone(), HEAL_CALL).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(l) = e.leader_hint() {
                        next.insert(0, l);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }
}
