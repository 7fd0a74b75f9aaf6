//! `shoal.v1.Cluster`: the nodes (each probed), the shards of a collection with their replicas, the cluster's
//! health, API keys, and the fault-injection switch.

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
        let shards = self.engine.shards_view(&req.get_ref().collection, t).await.map_err(status)?;
        Ok(Response::new(v1::ShardsResponse { shards }))
    }

    async fn health(&self, req: Request<v1::HealthRequest>) -> Result<Response<v1::HealthResponse>, Status> {
        let t = deadline(&req).min(PROBE_TIMEOUT);
        Ok(Response::new(self.engine.health(t).await))
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
