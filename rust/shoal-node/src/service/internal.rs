//! `shoal.internal.NodeInternal`: requests between nodes (metadata proposals, joins, shard writes and reads,
//! node state). Requests from a node on this node's fault blocklist are refused as unavailable.

use std::sync::Arc;

use shoal_api::internal::{self as pb, node_internal_server::NodeInternal};
use shoal_cluster::Engine;
use shoal_cluster::peer::FROM_KEY;
use tonic::{Request, Response, Status};

use super::deadline;
use crate::status::status;

/// The node-to-node service.
#[derive(Debug, Clone)]
pub struct InternalService {
    /// The node's engine.
    pub engine: Arc<Engine>,
}

impl InternalService {
    /// Refuses requests from blocked senders (fault injection).
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let from = req.metadata().get(FROM_KEY).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        match from {
            Some(f) if self.engine.is_blocked(f) => {
                Err(Status::unavailable(format!("node {} refuses node {f} (fault injection)", self.engine.node_id())))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl NodeInternal for InternalService {
    async fn meta_propose(
        &self,
        req: Request<pb::MetaProposeRequest>,
    ) -> Result<Response<pb::MetaProposeReply>, Status> {
        self.admit(&req)?;
        let t = deadline(&req);
        let reply = self.engine.handle_meta_propose(req.into_inner().command, t).await.map_err(status)?;
        Ok(Response::new(pb::MetaProposeReply { reply }))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        self.admit(&req)?;
        // With TLS, a node joins only as the node its certificate names, or through a registered member
        // that forwards its join to the group-0 leader.
        if let Some(shoal_raft::PeerNode(id)) = req.extensions().get::<shoal_raft::PeerNode>().copied()
            && id != req.get_ref().node_id
            && !self.engine.is_registered(id)
        {
            return Err(Status::permission_denied(format!(
                "node {id}'s certificate cannot join as node {}",
                req.get_ref().node_id
            )));
        }
        let t = deadline(&req);
        self.engine.handle_join(req.into_inner(), t).await.map_err(status)?;
        Ok(Response::new(pb::JoinReply {}))
    }

    async fn shard_write(&self, req: Request<pb::ShardWriteRequest>) -> Result<Response<pb::ShardWriteReply>, Status> {
        self.admit(&req)?;
        let t = deadline(&req);
        Ok(Response::new(self.engine.handle_shard_write(req.into_inner(), t).await.map_err(status)?))
    }

    async fn shard_read(&self, req: Request<pb::ShardReadRequest>) -> Result<Response<pb::ShardReadReply>, Status> {
        self.admit(&req)?;
        let t = deadline(&req);
        Ok(Response::new(self.engine.handle_shard_read(req.into_inner(), t).await.map_err(status)?))
    }

    async fn heal_replica(
        &self,
        req: Request<pb::HealReplicaRequest>,
    ) -> Result<Response<pb::HealReplicaReply>, Status> {
        self.admit(&req)?;
        let t = deadline(&req);
        self.engine.handle_heal_replica(req.into_inner(), t).await.map_err(status)?;
        Ok(Response::new(pb::HealReplicaReply {}))
    }

    async fn node_state(&self, req: Request<pb::NodeStateRequest>) -> Result<Response<pb::NodeStateReply>, Status> {
        self.admit(&req)?;
        if self.engine.is_draining() {
            // Peers then count this node as down and do not hand it leadership back while it stops.
            let id = self.engine.node_id();
            return Err(status(shoal_cluster::Error::NodeUnavailable(format!("node {id} is shutting down").into())));
        }
        Ok(Response::new(self.engine.node_state(req.get_ref())))
    }
}
