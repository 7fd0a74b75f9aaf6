//! Scroll: every live point of a collection exactly once, in batches streamed through a small queue.
//!
//! ```text
//!   shards 0..n in order; within a shard, ids ascending (ints, or strings byte-wise)
//!   batch = pages from one replica per shard (read level as for other reads; a failed replica is
//!           retried on another: a page is keyed by `after`, so it is idempotent); a short page means the
//!           shard is done and the batch continues with the next shard, so only the last batch is short
//!   resume token = where the next batch starts: (collection uid, shard, last id returned from it)
//! ```
//!
//! Writes during a scroll: a point present for the whole scroll and not deleted is returned exactly once;
//! a point inserted or deleted meanwhile may or may not be; no point is returned twice (the position only
//! moves forward). Each batch has its own deadline (`ScrollParams::batch_timeout`); the queue holds
//! [`SCROLL_QUEUE`] batches, so a slow reader pauses the producer, and a dropped one stops it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::internal::{ScanRequest, ShardTarget};
use shoal_api::scroll::{ScrollPosition, scan_after};
use shoal_api::v1::SessionToken;
use shoal_core::IdType;
use shoal_core::filter::Filter;
use shoal_core::store::{PointRecord, ShardStore};
use tokio::sync::mpsc;

use crate::coordinator::Coordinator;
use crate::levels::{FIRST_BACKOFF, MAX_BACKOFF, ReadLevel};
use crate::local_replicas::CollectionView;
use crate::read_path::{NodeReadOut, ReadOp, parse_filter, tokens_of};
use crate::{Error, Result};

/// Points per batch when the request leaves it at 0.
pub const DEFAULT_SCROLL_BATCH: u32 = 1000;
/// Largest batch a request may ask for.
pub const MAX_SCROLL_BATCH: u32 = 100_000;
/// Batches produced ahead of the reader.
pub const SCROLL_QUEUE: usize = 2;
/// A stream whose reader takes no batch for this long is closed (its producer stops and frees what it holds);
/// the reader then gets the batches already queued and a Timeout error, and resumes with its last token.
pub const SCROLL_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// A batch carries at most this many bytes of vectors (large dims get fewer points per batch).
pub const MAX_SCROLL_VECTOR_BYTES: usize = 64 << 20;

/// A scroll as requested (a `ScrollRequest`, decoded).
#[derive(Debug, Clone)]
pub struct ScrollParams {
    /// Points per batch (0 = [`DEFAULT_SCROLL_BATCH`]).
    pub batch_size: u32,
    /// JSON filter text ("" = none).
    pub filter: String,
    /// Whether batches carry vectors.
    pub with_vectors: bool,
    /// Read level of every page.
    pub level: ReadLevel,
    /// The client's session tokens (for `session` reads).
    pub session: Vec<SessionToken>,
    /// Where to continue (a batch's resume token; empty = from the start).
    pub resume_token: Vec<u8>,
    /// Deadline of each batch, counted from when its production starts.
    pub batch_timeout: Duration,
}

/// One batch of a scroll.
#[derive(Debug)]
pub struct ScrollBatch {
    /// The points, in scroll order.
    pub records: Vec<PointRecord>,
    /// Where the scroll stands after this batch (pass it back to resume).
    pub resume_token: Vec<u8>,
}

/// A running scroll: its batches arrive on `batches`; dropping it stops the producer.
#[derive(Debug)]
pub struct Scroll {
    /// The collection's dim (for encoding vectors).
    pub dim: u32,
    /// The batches, then the end of the channel (or one error, then the end).
    pub batches: mpsc::Receiver<Result<ScrollBatch>>,
    /// Set when the producer gave up on an idle reader ([`SCROLL_IDLE`]): the end of `batches` is then not
    /// the end of the collection.
    pub idle_closed: Arc<std::sync::atomic::AtomicBool>,
}

/// What the producer needs, fixed at the start.
struct Plan {
    name: String,
    uid: u64,
    shards: u32,
    limit: usize,
    filter: Option<Arc<Filter>>,
    params: ScrollParams,
}

impl Coordinator {
    /// Validates a scroll (collection, batch size, filter, resume token) and starts streaming it. Errors
    /// found here come back before any batch.
    pub(crate) fn scroll(self: &Arc<Self>, name: &str, params: ScrollParams) -> Result<Scroll> {
        let view = self.view(name)?;
        let spec = &view.entry.spec;
        let batch = match params.batch_size {
            0 => DEFAULT_SCROLL_BATCH,
            b if b > MAX_SCROLL_BATCH => {
                return Err(Error::InvalidArgument(
                    format!("batch_size must be in 1..={MAX_SCROLL_BATCH}, got {b}").into(),
                ));
            }
            b => b,
        } as usize;
        let row_bytes = if params.with_vectors { spec.shard.dim * 4 } else { 0 };
        let limit = batch.min((MAX_SCROLL_VECTOR_BYTES / row_bytes.max(1)).max(1));
        let filter = parse_filter(&params.filter)?.map(Arc::new);
        let start = start_position(&params.resume_token, name, view.entry.uid, spec.shards, spec.shard.id_type)?;
        let plan = Plan { name: name.to_string(), uid: view.entry.uid, shards: spec.shards, limit, filter, params };
        let (tx, rx) = mpsc::channel(SCROLL_QUEUE);
        let coord = Arc::clone(self);
        let idle_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let idle = Arc::clone(&idle_closed);
        tokio::spawn(async move {
            let closed = tx.clone();
            tokio::select! {
                _ = closed.closed() => {}
                _ = coord.produce(plan, start, tx, idle) => {}
            }
        });
        Ok(Scroll { dim: spec.shard.dim as u32, batches: rx, idle_closed })
    }

    /// Produces the batches of `plan` from `pos` into `tx` until the end, an error, or a closed channel.
    async fn produce(
        &self,
        plan: Plan,
        mut pos: ScrollPosition,
        tx: mpsc::Sender<Result<ScrollBatch>>,
        idle: Arc<std::sync::atomic::AtomicBool>,
    ) {
        let tokens = tokens_of(&plan.params.session, plan.uid);
        // The replica a shard is being paged from (kept while it answers).
        let mut sticky: Option<u64> = None;
        while pos.shard < plan.shards {
            let deadline = Instant::now() + plan.params.batch_timeout;
            let mut records: Vec<PointRecord> = Vec::new();
            let step = async {
                let view = self.view(&plan.name)?;
                if view.entry.uid != plan.uid {
                    return Err(Error::CollectionNotFound(format!("{} (dropped during the scroll)", plan.name).into()));
                }
                while records.len() < plan.limit && pos.shard < plan.shards {
                    let want = plan.limit - records.len();
                    let op = ReadOp::Scan {
                        after: pos.after.clone(),
                        limit: want,
                        filter: plan.filter.clone(),
                        filter_text: plan.params.filter.clone(),
                        with_vectors: plan.params.with_vectors,
                    };
                    let min_applied = tokens.get(&pos.shard).copied().unwrap_or(0);
                    let page =
                        self.scan_shard(&view, pos.shard, &op, plan.params.level, min_applied, deadline, &mut sticky);
                    let page = page.await?;
                    let got = page.len();
                    if let Some(last) = page.last() {
                        pos.after = Some(last.id.clone());
                    }
                    records.extend(page);
                    if got < want {
                        pos = ScrollPosition { uid: plan.uid, shard: pos.shard + 1, after: None };
                        sticky = None;
                    }
                }
                Ok(())
            };
            if let Err(e) = step.await {
                let _ = tx.send(Err(e)).await;
                return;
            }
            if records.is_empty() {
                return;
            }
            let batch = ScrollBatch { records, resume_token: pos.encode() };
            match tokio::time::timeout(SCROLL_IDLE, tx.send(Ok(batch))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(collection = %plan.name, "scroll stream idle for {SCROLL_IDLE:?}: closed");
                    idle.store(true, std::sync::atomic::Ordering::Release);
                    return;
                }
            }
        }
    }

    /// One page of `shard` from one replica chosen by `level` (`sticky` first), retried on other replicas
    /// until `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn scan_shard(
        &self,
        view: &CollectionView,
        shard: u32,
        op: &ReadOp,
        level: ReadLevel,
        min_applied: u64,
        deadline: Instant,
        sticky: &mut Option<u64>,
    ) -> Result<Vec<PointRecord>> {
        let name = &view.entry.spec.name;
        let targets = [ShardTarget { shard, min_applied }];
        let mut excluded: HashSet<u64> = HashSet::new();
        let mut hint: Option<u64> = None;
        let mut backoff = FIRST_BACKOFF;
        let mut last: Option<Error> = None;
        loop {
            if Instant::now() >= deadline {
                let why = last.map_or_else(|| "no replica to read from".to_string(), |e| e.to_string());
                let msg = format!(
                    "shard {shard} of collection {name:?} could not be scrolled at level {level:?} within the timeout: {why}"
                );
                return Err(match level {
                    ReadLevel::Eventual => Error::ShardUnavailable(msg.into()),
                    _ => Error::Consistency(msg.into()),
                });
            }
            let kept = sticky.filter(|n| !excluded.contains(n) && view.entry.replicas(shard).contains(n));
            let node = kept.or_else(|| self.read_target(view, shard, level, &excluded, hint)).or_else(|| {
                excluded.clear();
                self.read_target(view, shard, level, &excluded, None)
            });
            if let Some(node) = node {
                match self.read_on_node(node, view, &targets, op, level, deadline).await {
                    Ok(NodeReadOut::Scan(records)) => {
                        *sticky = Some(node);
                        return Ok(records);
                    }
                    Ok(_) => {
                        return Err(Error::Internal(format!("node {node} answered a scan with another op").into()));
                    }
                    Err(e) if e.is_retryable() || matches!(e, Error::Timeout(_) | Error::Consistency(_)) => {
                        excluded.insert(node);
                        hint = e.leader_hint().filter(|&l| l != node);
                        *sticky = None;
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs a `ReadOp::Scan` on the one local store of its target (on a rayon worker: the store's scan is
    /// parallel).
    pub(crate) async fn scan_local(
        &self,
        stores: Vec<Arc<ShardStore>>,
        op: &ReadOp,
        deadline: Instant,
    ) -> Result<NodeReadOut> {
        let ReadOp::Scan { after, limit, filter, with_vectors, .. } = op.clone() else {
            return Err(Error::Internal("scan_local called with another op".into()));
        };
        let [store] = <[Arc<ShardStore>; 1]>::try_from(stores)
            .map_err(|s| Error::InvalidArgument(format!("a scan reads exactly one shard, got {}", s.len()).into()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            let _ = tx.send(store.scroll(after.as_ref(), limit, filter.as_deref(), with_vectors));
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let records = tokio::time::timeout(left, rx)
            .await
            .map_err(|_| Error::Timeout("scan not finished within the timeout".into()))?
            .map_err(|_| Error::Internal("scan task panicked".into()))?;
        Ok(NodeReadOut::Scan(records))
    }
}

/// The `ReadOp::Scan` of a received `ScanRequest`.
pub(crate) fn scan_op(req: &ScanRequest, id_type: IdType) -> Result<ReadOp> {
    Ok(ReadOp::Scan {
        after: scan_after(req, id_type)?,
        limit: req.limit as usize,
        filter: parse_filter(&req.filter)?.map(Arc::new),
        filter_text: req.filter.clone(),
        with_vectors: req.with_vectors,
    })
}

/// Where a scroll starts: the beginning, or a resume token of this incarnation (`uid`) of collection `name`.
fn start_position(token: &[u8], name: &str, uid: u64, shards: u32, id_type: IdType) -> Result<ScrollPosition> {
    if token.is_empty() {
        return Ok(ScrollPosition { uid, shard: 0, after: None });
    }
    let pos = ScrollPosition::decode(token)?;
    if pos.uid != uid {
        return Err(Error::InvalidArgument(
            format!(
                "resume_token is from another collection or another incarnation of collection {name:?} (uid {}, \
             now {uid}; dropped and re-created since?)",
                pos.uid
            )
            .into(),
        ));
    }
    // `shard == shards` is the token of a finished scroll.
    if pos.shard > shards {
        return Err(Error::InvalidArgument(
            format!("resume_token names shard {} but collection {name:?} has {shards} shards", pos.shard).into(),
        ));
    }
    if let Some(id) = &pos.after
        && id.id_type() != id_type
    {
        return Err(Error::InvalidArgument(
            format!(
                "resume_token holds a {} id but collection {name:?} has id_type \"{}\"",
                id.id_type().as_str(),
                id_type.as_str()
            )
            .into(),
        ));
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use shoal_core::PointId;

    use super::*;

    #[test]
    fn start_positions() {
        let p = |shard, after| ScrollPosition { uid: 7, shard, after };
        assert_eq!(start_position(&[], "c", 7, 3, IdType::Int).unwrap(), p(0, None));
        let t = p(2, Some(PointId::Int(5))).encode();
        assert_eq!(start_position(&t, "c", 7, 3, IdType::Int).unwrap(), p(2, Some(PointId::Int(5))));
        assert!(start_position(&p(3, None).encode(), "c", 7, 3, IdType::Int).is_ok());
        let other = ScrollPosition { uid: 8, shard: 0, after: None }.encode();
        let e = start_position(&other, "c", 7, 3, IdType::Int).unwrap_err().to_string();
        assert!(e.contains("resume_token") && e.contains("incarnation"), "{e}");
        assert!(start_position(&p(4, None).encode(), "c", 7, 3, IdType::Int).is_err());
        assert!(start_position(&t, "c", 7, 3, IdType::Str).unwrap_err().to_string().contains("id_type"));
    }
}
