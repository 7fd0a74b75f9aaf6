//! `shoal.v1.Points`: upsert, delete, update_payload, get, count, search, index status.

use std::sync::Arc;

use serde_json::Value;
use shoal_api::points::{ids_from_proto, ids_to_proto, payload_to_text, payloads_from_text};
use shoal_api::v1::{self, points_server::Points};
use shoal_cluster::{Engine, Error, ReadLevel, WriteLevel};
use shoal_core::filter::Filter;
use tonic::{Request, Response, Status};

use super::deadline;
use crate::status::status;

/// The points service.
#[derive(Debug, Clone)]
pub struct PointsService {
    /// The node's engine.
    pub engine: Arc<Engine>,
}

fn write_level(v: i32) -> WriteLevel {
    match v1::WriteConsistency::try_from(v).unwrap_or_default() {
        v1::WriteConsistency::Eventual => WriteLevel::Eventual,
        v1::WriteConsistency::Strong => WriteLevel::Strong,
        _ => WriteLevel::Quorum,
    }
}

fn read_level(v: i32) -> ReadLevel {
    match v1::ReadConsistency::try_from(v).unwrap_or_default() {
        v1::ReadConsistency::Eventual => ReadLevel::Eventual,
        v1::ReadConsistency::Strong => ReadLevel::Strong,
        _ => ReadLevel::Session,
    }
}

impl PointsService {
    fn ids(&self, collection: &str, ids: Option<&v1::PointIds>) -> Result<Vec<shoal_core::PointId>, Status> {
        let spec = self.engine.get_collection(collection).map_err(status)?;
        ids_from_proto(ids, spec.shard.id_type).map_err(status)
    }
}

#[tonic::async_trait]
impl Points for PointsService {
    async fn upsert(&self, req: Request<v1::UpsertRequest>) -> Result<Response<v1::WriteResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        let ids = self.ids(&r.collection, r.ids.as_ref())?;
        let payloads = payloads_from_text(&r.payloads, "payloads").map_err(status)?;
        let count = self
            .engine
            .upsert(&r.collection, ids, r.vectors, payloads, write_level(r.consistency), t)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::WriteResponse { count, tokens: Vec::new() }))
    }

    async fn delete(&self, req: Request<v1::DeleteRequest>) -> Result<Response<v1::WriteResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        let ids = self.ids(&r.collection, r.ids.as_ref())?;
        let count = self.engine.delete(&r.collection, ids, write_level(r.consistency), t).await.map_err(status)?;
        Ok(Response::new(v1::WriteResponse { count, tokens: Vec::new() }))
    }

    async fn update_payload(
        &self,
        req: Request<v1::UpdatePayloadRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        let ids = self.ids(&r.collection, r.ids.as_ref())?;
        let patch = payloads_from_text(std::slice::from_ref(&r.patch), "patch")
            .map_err(status)?
            .pop()
            .flatten()
            .ok_or_else(|| status(Error::InvalidArgument("patch must be a non-empty JSON object".into())))?;
        let count = self
            .engine
            .update_payload(&r.collection, ids, patch, write_level(r.consistency), t)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::WriteResponse { count, tokens: Vec::new() }))
    }

    async fn get(&self, req: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        let ids = self.ids(&r.collection, r.ids.as_ref())?;
        let records =
            self.engine.get(&r.collection, ids, r.with_vectors, read_level(r.consistency), t).await.map_err(status)?;
        let dim = self.engine.get_collection(&r.collection).map_err(status)?.shard.dim as u32;
        let mut out = v1::GetResponse { dim, ..Default::default() };
        for rec in records {
            out.found.push(rec.is_some());
            if let Some(rec) = rec {
                out.vectors.extend_from_slice(&rec.vector);
                out.payloads.push(payload_to_text(rec.payload.as_ref()));
            }
        }
        Ok(Response::new(out))
    }

    async fn count(&self, req: Request<v1::CountRequest>) -> Result<Response<v1::CountResponse>, Status> {
        let t = deadline(&req);
        let r = req.get_ref();
        let count = self.engine.count(&r.collection, read_level(r.consistency), t).await.map_err(status)?;
        Ok(Response::new(v1::CountResponse { count }))
    }

    async fn search(&self, req: Request<v1::SearchRequest>) -> Result<Response<v1::SearchResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        let filter = if r.filter.is_empty() {
            None
        } else {
            let v: Value = serde_json::from_str(&r.filter)
                .map_err(|e| status(Error::InvalidArgument(format!("filter is not valid JSON: {e}"))))?;
            Some(Filter::parse(&v).map_err(status)?)
        };
        let ef = (r.ef > 0).then_some(r.ef as usize);
        let hits = self
            .engine
            .search(&r.collection, r.queries, r.k as usize, filter, ef, r.with_payload, read_level(r.consistency), t)
            .await
            .map_err(status)?;
        let mut out = v1::SearchResponse::default();
        let mut ids = Vec::with_capacity(hits.len() * r.k as usize);
        for row in hits {
            out.counts.push(row.len() as u32);
            for h in row {
                out.distances.push(h.distance);
                if r.with_payload {
                    out.payloads.push(payload_to_text(h.payload.as_ref()));
                }
                ids.push(h.id);
            }
        }
        out.ids = Some(ids_to_proto(&ids));
        Ok(Response::new(out))
    }

    async fn index_status(
        &self,
        req: Request<v1::IndexStatusRequest>,
    ) -> Result<Response<v1::IndexStatusResponse>, Status> {
        let (points, unindexed) = self.engine.index_status(&req.get_ref().collection).map_err(status)?;
        Ok(Response::new(v1::IndexStatusResponse { points, unindexed }))
    }
}
