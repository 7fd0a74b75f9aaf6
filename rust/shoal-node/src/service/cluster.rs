//! `shoal.v1.Cluster`: the nodes (each probed), the shards of a collection with their replicas, and the
//! fault-injection switch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::internal::NodeStateRequest;
use shoal_api::v1::{self, cluster_server::Cluster};
use shoal_cluster::Engine;
use tonic::{Request, Response, Status};

use super::deadline;
use crate::status::status;

/// How long a node may take to answer a state probe before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// The cluster-info service.
#[derive(Debug, Clone)]
pub struct ClusterService {
    /// The node's engine.
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn info(&self, req: Request<v1::ClusterInfoRequest>) -> Result<Response<v1::ClusterInfo>, Status> {
        let t = deadline(&req).min(PROBE_TIMEOUT);
        let e = &self.engine;
        let nodes = e
            .probe_nodes(t, NodeStateRequest { with_resources: true, ..Default::default() })
            .await
            .into_iter()
            .map(|(rec, st)| {
                let (status, role) = match &st {
                    Ok(s) => (if rec.state.is_empty() { "up".into() } else { rec.state.clone() }, s.meta_role.clone()),
                    Err(_) => ("down".to_string(), String::new()),
                };
                let res = st.as_ref().ok().and_then(|s| s.resources).unwrap_or_default();
                let stats = st.as_ref().ok().and_then(|s| s.stats);
                let metrics_address = st.as_ref().map(|s| s.metrics_address.clone()).unwrap_or_default();
                v1::NodeInfo {
                    id: rec.id,
                    address: rec.address,
                    status,
                    role,
                    zone: rec.zone,
                    version: st.map(|s| s.version).unwrap_or(rec.version),
                    cpu_seconds: res.cpu_seconds,
                    cpu_cores: res.cpu_cores,
                    memory_bytes: res.memory_bytes,
                    disk_bytes: res.disk_bytes,
                    disk_free_bytes: res.disk_free_bytes,
                    stats,
                    metrics_address,
                }
            })
            .collect();
        Ok(Response::new(v1::ClusterInfo { node_id: e.node_id(), nodes, meta_leader: e.meta_leader().unwrap_or(0) }))
    }

    async fn shards(&self, req: Request<v1::ShardsRequest>) -> Result<Response<v1::ShardsResponse>, Status> {
        let t = deadline(&req).min(PROBE_TIMEOUT);
        let entry = self.engine.collection_entry(&req.get_ref().collection).map_err(status)?;
        let mut states: BTreeMap<(u32, u64), shoal_api::internal::ReplicaState> = BTreeMap::new();
        // Digests let callers check that replicas converged (the only probe that computes them).
        let want = NodeStateRequest { with_digests: true, ..Default::default() };
        for (rec, st) in self.engine.probe_nodes(t, want).await {
            let Ok(st) = st else { continue };
            for r in st.replicas {
                if r.collection == entry.spec.name && r.uid == entry.uid {
                    states.insert((r.shard, rec.id), r);
                }
            }
        }
        let shards = (0..entry.spec.shards)
            .map(|s| {
                let reps: Vec<(u64, Option<&shoal_api::internal::ReplicaState>)> =
                    entry.replicas(s).iter().map(|&n| (n, states.get(&(s, n)))).collect();
                // The leader as the replicas that answered see it (a leader claims itself).
                let leader =
                    reps.iter().filter_map(|(n, r)| r.filter(|r| r.role == "leader").map(|_| *n)).next().unwrap_or(0);
                let head = reps.iter().filter_map(|(_, r)| r.map(|r| r.last_log_index)).max().unwrap_or(0);
                let lead_state = reps.iter().find(|(n, _)| *n == leader).and_then(|(_, r)| *r);
                let most_applied = reps.iter().filter_map(|(_, r)| *r).max_by_key(|r| r.applied_index);
                let count = lead_state.or(most_applied).map_or(0, |r| r.count);
                let replicas = reps
                    .iter()
                    .map(|(n, r)| match r {
                        Some(r) => v1::ReplicaInfo {
                            node: *n,
                            role: if r.role == "candidate" { "follower".into() } else { r.role.clone() },
                            state: if !r.damage.is_empty() {
                                "quarantined".into()
                            } else if entry.leaving(s).contains(n) {
                                "leaving".into()
                            } else if r.role == "learner" || (leader != 0 && r.applied_index == 0 && head > 0) {
                                "joining".into()
                            } else {
                                "active".into()
                            },
                            applied_index: r.applied_index,
                            lag: head.saturating_sub(r.applied_index),
                            count: r.count,
                            unindexed: r.unindexed,
                            digest: r.digest,
                            transfer_bytes: r.snapshot_bytes,
                            transfer_total_bytes: r.snapshot_total_bytes,
                            damage: r.damage.clone(),
                            repair: r.repair.clone(),
                        },
                        None => v1::ReplicaInfo {
                            node: *n,
                            role: "follower".into(),
                            state: "down".into(),
                            ..Default::default()
                        },
                    })
                    .collect();
                v1::ShardInfo { id: s, leader, replicas, count }
            })
            .collect();
        Ok(Response::new(v1::ShardsResponse { shards }))
    }

    async fn set_faults(&self, req: Request<v1::SetFaultsRequest>) -> Result<Response<v1::SetFaultsResponse>, Status> {
        let blocked = self.engine.set_blocked(&req.get_ref().blocked);
        Ok(Response::new(v1::SetFaultsResponse { blocked }))
    }

    async fn skew_clock(&self, req: Request<v1::SkewClockRequest>) -> Result<Response<v1::SkewClockResponse>, Status> {
        let offset_ms = self.engine.set_clock_offset(req.get_ref().offset_ms).map_err(status)?;
        Ok(Response::new(v1::SkewClockResponse { offset_ms }))
    }

    async fn create_api_key(
        &self,
        req: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name);
        let (name, key) = self.engine.create_api_key(&r.role, name, t).await.map_err(status)?;
        Ok(Response::new(v1::CreateApiKeyResponse { name, key }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::RevokeApiKeyResponse>, Status> {
        let t = deadline(&req);
        let revoked = self.engine.revoke_api_key(&req.get_ref().name, t).await.map_err(status)?;
        Ok(Response::new(v1::RevokeApiKeyResponse { revoked }))
    }

    async fn list_api_keys(
        &self,
        _req: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        let keys = self.engine.list_api_keys().into_iter().map(|(name, role)| v1::ApiKeyInfo { name, role }).collect();
        Ok(Response::new(v1::ListApiKeysResponse { keys }))
    }

    async fn diverge_replica(
        &self,
        req: Request<v1::DivergeReplicaRequest>,
    ) -> Result<Response<v1::DivergeReplicaResponse>, Status> {
        let r = req.get_ref();
        let id = self.engine.diverge_replica(&r.collection, r.shard).map_err(status)?;
        Ok(Response::new(v1::DivergeReplicaResponse { id }))
    }

    async fn remove_node(
        &self,
        req: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::RemoveNodeResponse>, Status> {
        let t = deadline(&req);
        let r = req.get_ref();
        let moves = self.engine.remove_node(r.node_id, r.drain, t).await.map_err(status)?;
        Ok(Response::new(v1::RemoveNodeResponse { moves }))
    }
}
