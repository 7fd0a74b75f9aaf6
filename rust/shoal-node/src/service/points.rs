//! `shoal.v1.Points`: upsert, delete, update_payload, get, count, search, index status, scroll (a stream).

use std::sync::Arc;

use shoal_api::ErrorKind;
use shoal_api::commands::write_id_from_bytes;
use shoal_api::points::{get_response, ids_from_proto, payloads_from_text, search_response};
use shoal_api::scroll::scroll_response;
use shoal_api::v1::{self, points_server::Points};
use shoal_cluster::scroll::{Scroll, ScrollParams};
use shoal_cluster::{Engine, Error, LoadBalancing, ReadLevel, SearchQuery, WriteLevel, WriteOptions, WriteOutcome};
use shoal_core::dedup::WriteId;
use tonic::{Request, Response, Status};

use super::deadline;
use crate::admission::kinded;
use crate::status::status;

/// The points service.
#[derive(Debug, Clone)]
pub struct PointsService {
    /// The node's engine.
    pub engine: Arc<Engine>,
    /// The open Scroll streams, bounded per connection and per node.
    pub scrolls: Arc<crate::scroll_slots::ScrollSlots>,
}

/// A request's write consistency; an unknown value is refused, never silently downgraded (DESIGN §3).
fn write_level(v: i32) -> Result<WriteLevel, Status> {
    match v1::WriteConsistency::try_from(v) {
        Ok(v1::WriteConsistency::Eventual) => Ok(WriteLevel::Eventual),
        Ok(v1::WriteConsistency::Strong) => Ok(WriteLevel::Strong),
        Ok(_) => Ok(WriteLevel::Quorum),
        Err(_) => Err(invalid_enum("write consistency", v)),
    }
}

fn write_opts(level: i32, timeout: std::time::Duration, write_id: Option<WriteId>) -> Result<WriteOptions, Status> {
    Ok(WriteOptions { level: write_level(level)?, timeout, write_id })
}

/// A request's read consistency; an unknown value is refused.
fn read_level(v: i32) -> Result<ReadLevel, Status> {
    match v1::ReadConsistency::try_from(v) {
        Ok(v1::ReadConsistency::Eventual) => Ok(ReadLevel::Eventual),
        Ok(v1::ReadConsistency::Strong) => Ok(ReadLevel::Strong),
        Ok(_) => Ok(ReadLevel::Session),
        Err(_) => Err(invalid_enum("read consistency", v)),
    }
}

/// A request's load-balancing strategy (UNSPECIFIED: the node's default); an unknown value is refused.
fn strategy(v: i32) -> Result<Option<LoadBalancing>, Status> {
    if v1::LoadBalancing::try_from(v).is_err() {
        return Err(invalid_enum("load_balancing", v));
    }
    Ok((v != 0).then(|| LoadBalancing::from_proto(v, Default::default())))
}

fn invalid_enum(what: &str, v: i32) -> Status {
    status(shoal_cluster::Error::InvalidArgument(format!("unknown {what} value {v}").into()))
}

fn write_response(out: WriteOutcome) -> v1::WriteResponse {
    let tokens = out.tokens.into_iter().map(|(shard, index)| v1::SessionToken { uid: out.uid, shard, index }).collect();
    v1::WriteResponse { count: out.count, tokens }
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
        let wid = write_id_from_bytes(&r.write_id, "write_id").map_err(status)?;
        let out = self
            .engine
            .upsert(&r.collection, ids, r.vectors, payloads, write_opts(r.consistency, t, wid)?)
            .await
            .map_err(status)?;
        Ok(Response::new(write_response(out)))
    }

    async fn delete(&self, req: Request<v1::DeleteRequest>) -> Result<Response<v1::WriteResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        let ids = self.ids(&r.collection, r.ids.as_ref())?;
        let wid = write_id_from_bytes(&r.write_id, "write_id").map_err(status)?;
        let out = self.engine.delete(&r.collection, ids, write_opts(r.consistency, t, wid)?).await.map_err(status)?;
        Ok(Response::new(write_response(out)))
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
        let wid = write_id_from_bytes(&r.write_id, "write_id").map_err(status)?;
        let out = self
            .engine
            .update_payload(&r.collection, ids, patch, write_opts(r.consistency, t, wid)?)
            .await
            .map_err(status)?;
        Ok(Response::new(write_response(out)))
    }

    async fn get(&self, req: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        let ids = self.ids(&r.collection, r.ids.as_ref())?;
        let records = self
            .engine
            .get(&r.collection, ids, r.with_vectors, read_level(r.consistency)?, &r.session, t)
            .await
            .map_err(status)?;
        let dim = self.engine.get_collection(&r.collection).map_err(status)?.shard.dim as u32;
        Ok(Response::new(get_response(records, dim)))
    }

    async fn count(&self, req: Request<v1::CountRequest>) -> Result<Response<v1::CountResponse>, Status> {
        let t = deadline(&req);
        let r = req.get_ref();
        let count =
            self.engine.count(&r.collection, read_level(r.consistency)?, &r.session, t).await.map_err(status)?;
        Ok(Response::new(v1::CountResponse { count }))
    }

    async fn search(&self, req: Request<v1::SearchRequest>) -> Result<Response<v1::SearchResponse>, Status> {
        let t = deadline(&req);
        let r = req.into_inner();
        if r.ef > 0 {
            shoal_core::validate::check_ef(i64::from(r.ef)).map_err(|e| status(shoal_cluster::Error::from(e)))?;
        }
        let q = SearchQuery {
            queries: r.queries,
            k: r.k as usize,
            filter: r.filter,
            ef: (r.ef > 0).then_some(r.ef as usize),
            exact: r.exact,
            rescore: shoal_core::validate::check_rescore(r.rescore, r.oversampling)
                .map_err(|e| status(shoal_cluster::Error::from(e)))?,
            with_payload: r.with_payload,
            level: read_level(r.consistency)?,
            strategy: strategy(r.load_balancing)?,
            allow_partial: r.allow_partial,
        };
        let out = self.engine.search(&r.collection, q, &r.session, t).await.map_err(status)?;
        let mut resp = search_response(out.hits, r.with_payload);
        resp.partial = !out.failed_shards.is_empty();
        resp.failed_shards = out.failed_shards;
        resp.shards = out.shards;
        Ok(Response::new(resp))
    }

    async fn index_status(
        &self,
        req: Request<v1::IndexStatusRequest>,
    ) -> Result<Response<v1::IndexStatusResponse>, Status> {
        let t = deadline(&req);
        let (points, unindexed) = self.engine.index_status(&req.get_ref().collection, t).await.map_err(status)?;
        Ok(Response::new(v1::IndexStatusResponse { points, unindexed }))
    }

    type ScrollStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::ScrollResponse, Status>> + Send>>;

    /// Validation errors come back as the call's status; later ones end the stream. The request's deadline
    /// (`grpc-timeout`, else 10 s) applies to each batch, not to the whole stream.
    async fn scroll(&self, req: Request<v1::ScrollRequest>) -> Result<Response<Self::ScrollStream>, Status> {
        let batch_timeout = deadline(&req);
        let slot = self.scrolls.take(req.remote_addr()).map_err(|m| {
            kinded(
                Status::resource_exhausted(format!("{m}: finish or drop one, then retry")),
                ErrorKind::ResourceExhausted,
            )
        })?;
        let r = req.into_inner();
        let params = ScrollParams {
            batch_size: r.batch_size,
            filter: r.filter,
            with_vectors: r.with_vectors,
            level: read_level(r.consistency)?,
            session: r.session,
            resume_token: r.resume_token,
            batch_timeout,
        };
        let Scroll { dim, batches, idle_closed } = self.engine.scroll(&r.collection, params).map_err(status)?;
        let stream = futures::stream::unfold(Some((batches, slot)), move |state| {
            let idle_closed = Arc::clone(&idle_closed);
            async move {
                // The slot lives in the stream's state: released when the stream ends or is dropped.
                let (mut rx, slot) = state?;
                match rx.recv().await {
                    Some(item) => Some((
                        item.map(|b| scroll_response(b.records, dim, b.resume_token)).map_err(status),
                        Some((rx, slot)),
                    )),
                    // The producer stopped on an idle reader: say so rather than end as if complete.
                    None if idle_closed.load(std::sync::atomic::Ordering::Acquire) => Some((
                        Err(status(shoal_cluster::Error::Timeout(
                            format!(
                                "scroll stream closed after {:?} without a read; resume with the last resume_token",
                                shoal_cluster::scroll::SCROLL_IDLE
                            )
                            .into(),
                        ))),
                        None,
                    )),
                    None => None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
