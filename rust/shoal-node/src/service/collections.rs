//! `shoal.v1.Collections`: create, get, list, drop, rebalance, payload indexes.

use std::sync::Arc;

use shoal_api::v1::{self, collections_server::Collections};
use shoal_cluster::Engine;
use shoal_core::payload_index::IndexKind;
use tonic::{Request, Response, Status};

use super::deadline;
use crate::status::status;

/// The collections service.
#[derive(Debug, Clone)]
pub struct CollectionsService {
    /// The node's engine.
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl Collections for CollectionsService {
    async fn create(&self, req: Request<v1::CreateCollectionRequest>) -> Result<Response<v1::CollectionInfo>, Status> {
        let t = deadline(&req);
        let spec = self.engine.create_collection(req.get_ref(), t).await.map_err(status)?;
        Ok(Response::new(spec.to_info()))
    }

    async fn get(&self, req: Request<v1::GetCollectionRequest>) -> Result<Response<v1::CollectionInfo>, Status> {
        let spec = self.engine.get_collection(&req.get_ref().name).map_err(status)?;
        Ok(Response::new(spec.to_info()))
    }

    async fn list(
        &self,
        _req: Request<v1::ListCollectionsRequest>,
    ) -> Result<Response<v1::ListCollectionsResponse>, Status> {
        let collections = self.engine.list_collections().iter().map(|s| s.to_info()).collect();
        Ok(Response::new(v1::ListCollectionsResponse { collections }))
    }

    async fn drop(
        &self,
        req: Request<v1::DropCollectionRequest>,
    ) -> Result<Response<v1::DropCollectionResponse>, Status> {
        let t = deadline(&req);
        let dropped = self.engine.drop_collection(&req.get_ref().name, t).await.map_err(status)?;
        Ok(Response::new(v1::DropCollectionResponse { dropped }))
    }

    async fn rebalance(&self, req: Request<v1::RebalanceRequest>) -> Result<Response<v1::RebalanceResponse>, Status> {
        let t = deadline(&req);
        let moves = self.engine.rebalance(&req.get_ref().collection, t).await.map_err(status)?;
        let moves = moves
            .into_iter()
            .map(|m| v1::ReplicaMove { collection: m.collection, shard: m.shard, from: m.from, to: m.to })
            .collect();
        Ok(Response::new(v1::RebalanceResponse { moves }))
    }

    async fn create_payload_index(
        &self,
        req: Request<v1::PayloadIndexRequest>,
    ) -> Result<Response<v1::CollectionInfo>, Status> {
        let t = deadline(&req);
        let r = req.get_ref();
        let kind = IndexKind::parse(&r.kind).map_err(|e| status(shoal_cluster::Error::from(e)))?;
        let spec = self.engine.set_payload_index(&r.collection, &r.field, Some(kind), t).await.map_err(status)?;
        Ok(Response::new(spec.to_info()))
    }

    async fn drop_payload_index(
        &self,
        req: Request<v1::PayloadIndexRequest>,
    ) -> Result<Response<v1::CollectionInfo>, Status> {
        let t = deadline(&req);
        let r = req.get_ref();
        let spec = self.engine.set_payload_index(&r.collection, &r.field, None, t).await.map_err(status)?;
        Ok(Response::new(spec.to_info()))
    }
}
