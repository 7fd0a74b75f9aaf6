//! `shoal.v1.Cluster`: node and cluster information.

use std::sync::Arc;

use shoal_api::v1::{self, cluster_server::Cluster};
use shoal_cluster::Engine;
use tonic::{Request, Response, Status};

/// The cluster-info service.
#[derive(Debug, Clone)]
pub struct ClusterService {
    /// The node's engine.
    pub engine: Arc<Engine>,
    /// This node's zone label.
    pub zone: String,
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn info(&self, _req: Request<v1::ClusterInfoRequest>) -> Result<Response<v1::ClusterInfo>, Status> {
        let e = &self.engine;
        let me = v1::NodeInfo {
            id: e.node_id(),
            address: e.address().to_string(),
            status: "up".into(),
            role: if e.is_meta_leader() { "leader" } else { "follower" }.into(),
            zone: self.zone.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        Ok(Response::new(v1::ClusterInfo { node_id: e.node_id(), nodes: vec![me], meta_leader: e.node_id() }))
    }

    async fn shards(&self, _req: Request<v1::ShardsRequest>) -> Result<Response<v1::ShardsResponse>, Status> {
        Err(Status::unimplemented("shards: not yet"))
    }

    async fn set_faults(&self, _req: Request<v1::SetFaultsRequest>) -> Result<Response<v1::SetFaultsResponse>, Status> {
        Err(Status::unimplemented("set_faults: not yet"))
    }
}
