//! The read coordinator: picks a replica per shard by read level, sends each node one request for all
//! its shards, retries failed shards on other replicas until the deadline, and merges the answers.
//!
//! ```text
//!   strong:   the shard leader, after a read-index round (linearizable)
//!   session:  a replica whose applied index reached the client's token for that shard
//!             (this node's replica first; the serving replica waits briefly, else the leader is asked)
//!   eventual: this node's replica, else any replica (round robin)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use shoal_api::internal::{ShardReadReply, ShardReadRequest, ShardTarget, shard_read_request};
use shoal_api::points::{get_response, hits_from_response, ids_to_proto, records_from_get, search_response};
use shoal_api::v1::{self, ReadConsistency, SessionToken};
use shoal_core::PointId;
use shoal_core::filter::Filter;
use shoal_core::store::{Hit, PointRecord};
use shoal_core::validate;

use crate::engine::{CollectionView, Engine, FIRST_BACKOFF, MAX_BACKOFF, ReadLevel, ShardReplica};
use crate::{Error, Result};

/// How long a replica waits for its applied index to reach a session token before it gives up and lets
/// the coordinator ask the leader.
const SESSION_WAIT: Duration = Duration::from_millis(300);

/// One read operation, as executed on the replicas of a node.
#[derive(Clone)]
pub(crate) enum ReadOp {
    /// k-NN search of `nq` row-major queries.
    Search {
        /// The queries, row-major.
        queries: Arc<Vec<f32>>,
        /// Number of queries.
        nq: usize,
        /// Hits per query.
        k: usize,
        /// Parsed filter.
        filter: Option<Arc<Filter>>,
        /// The filter's JSON text (what is sent to other nodes).
        filter_text: String,
        /// Beam width override.
        ef: Option<usize>,
        /// Whether hits carry payloads.
        with_payload: bool,
    },
    /// Points by id (every id owned by one of the targeted shards).
    Get {
        /// The ids, in answer order.
        ids: Vec<PointId>,
        /// Whether vectors are returned.
        with_vectors: bool,
    },
    /// Live points per shard.
    Count,
}

/// What one node answers for its targets.
pub(crate) enum NodeReadOut {
    /// Per target, per query hits.
    Search(Vec<Vec<Vec<Hit>>>),
    /// Per requested id.
    Get(Vec<Option<PointRecord>>),
    /// Per target.
    Count(Vec<u64>),
}

fn level_to_proto(level: ReadLevel) -> ReadConsistency {
    match level {
        ReadLevel::Eventual => ReadConsistency::Eventual,
        ReadLevel::Session => ReadConsistency::Session,
        ReadLevel::Strong => ReadConsistency::Strong,
    }
}

fn level_from_proto(v: i32) -> ReadLevel {
    match ReadConsistency::try_from(v).unwrap_or_default() {
        ReadConsistency::Eventual => ReadLevel::Eventual,
        ReadConsistency::Strong => ReadLevel::Strong,
        _ => ReadLevel::Session,
    }
}

/// Session tokens of collection incarnation `uid`, by shard.
fn tokens_of(tokens: &[SessionToken], uid: u64) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    for t in tokens.iter().filter(|t| t.uid == uid) {
        let e = out.entry(t.shard).or_insert(0);
        *e = (*e).max(t.index);
    }
    out
}

impl Engine {
    /// The node to read `shard` from at `level`, avoiding `excluded`.
    fn read_target(
        &self,
        view: &CollectionView,
        shard: u32,
        level: ReadLevel,
        excluded: &HashSet<u64>,
        hint: Option<u64>,
    ) -> Option<u64> {
        let replicas = view.entry.replicas(shard);
        let ok = |n: &u64| !excluded.contains(n) && replicas.contains(n);
        let me = self.cfg.node_id;
        let local = view.local[shard as usize].is_some();
        let leader = [hint, self.shard_leader_guess(view, shard)].into_iter().flatten().find(ok);
        match level {
            ReadLevel::Strong => leader.or_else(|| replicas.iter().copied().find(ok)),
            ReadLevel::Session => {
                if local && ok(&me) {
                    Some(me)
                } else {
                    leader.or_else(|| replicas.iter().copied().find(ok))
                }
            }
            ReadLevel::Eventual => {
                if local && ok(&me) {
                    return Some(me);
                }
                let candidates: Vec<u64> = replicas.iter().copied().filter(ok).collect();
                if candidates.is_empty() {
                    return None;
                }
                let i = self.round_robin.fetch_add(1, Ordering::Relaxed);
                Some(candidates[i % candidates.len()])
            }
        }
    }

    /// Reads `shards` of `view` with `op` at `level`, retrying failed shards elsewhere until `deadline`.
    /// Returns per-shard results (search, count) or the records in `op`'s id order (get).
    async fn read_shards(
        &self,
        view: &CollectionView,
        shards: Vec<u32>,
        op: &ReadOp,
        level: ReadLevel,
        session: &[SessionToken],
        deadline: Instant,
    ) -> Result<(BTreeMap<u32, Vec<Vec<Hit>>>, BTreeMap<u32, u64>, Vec<Option<PointRecord>>)> {
        let name = &view.entry.spec.name;
        let n_shards = view.entry.spec.shards;
        let tokens = tokens_of(session, view.entry.uid);
        let mut pending: BTreeSet<u32> = shards.into_iter().collect();
        let mut excluded: HashMap<u32, HashSet<u64>> = HashMap::new();
        let mut hints: HashMap<u32, u64> = HashMap::new();
        let mut searches = BTreeMap::new();
        let mut counts = BTreeMap::new();
        let get_ids: &[PointId] = match op {
            ReadOp::Get { ids, .. } => ids,
            _ => &[],
        };
        let mut records: Vec<Option<PointRecord>> = vec![None; get_ids.len()];
        let mut backoff = FIRST_BACKOFF;
        let mut last: Option<Error> = None;
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                let why = last.map_or_else(|| "no attempt finished".to_string(), |e| e.to_string());
                let msg = format!(
                    "shards {:?} of collection {name:?} could not be read at level {level:?} within the timeout: {why}",
                    pending
                );
                return Err(match level {
                    ReadLevel::Eventual => Error::ShardUnavailable(msg),
                    _ => Error::Consistency(msg),
                });
            }
            // Plan: one request per node for all the shards it serves this round.
            let mut plan: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
            for &s in &pending {
                let ex = excluded.entry(s).or_default();
                let t = match self.read_target(view, s, level, ex, hints.get(&s).copied()) {
                    Some(t) => t,
                    None => {
                        ex.clear();
                        match self.read_target(view, s, level, ex, None) {
                            Some(t) => t,
                            None => continue,
                        }
                    }
                };
                plan.entry(t).or_default().push(s);
            }
            let futs = plan.into_iter().map(|(node, node_shards)| {
                let targets: Vec<ShardTarget> = node_shards
                    .iter()
                    .map(|&s| ShardTarget { shard: s, min_applied: tokens.get(&s).copied().unwrap_or(0) })
                    .collect();
                let positions: Vec<usize> = if get_ids.is_empty() {
                    Vec::new()
                } else {
                    (0..get_ids.len()).filter(|&i| node_shards.contains(&get_ids[i].shard(n_shards))).collect()
                };
                let node_op = match op {
                    ReadOp::Get { with_vectors, .. } => ReadOp::Get {
                        ids: positions.iter().map(|&i| get_ids[i].clone()).collect(),
                        with_vectors: *with_vectors,
                    },
                    o => o.clone(),
                };
                async move {
                    let out = self.read_on_node(node, view, &targets, &node_op, level, deadline).await;
                    (node, node_shards, positions, out)
                }
            });
            let mut failed_any = false;
            for (node, node_shards, positions, out) in futures::future::join_all(futs).await {
                match out {
                    Ok(NodeReadOut::Search(per_target)) => {
                        for (s, hits) in node_shards.iter().zip(per_target) {
                            searches.insert(*s, hits);
                        }
                    }
                    Ok(NodeReadOut::Count(per_target)) => {
                        for (s, c) in node_shards.iter().zip(per_target) {
                            counts.insert(*s, c);
                        }
                    }
                    Ok(NodeReadOut::Get(recs)) => {
                        for (i, rec) in positions.into_iter().zip(recs) {
                            records[i] = rec;
                        }
                    }
                    Err(e) if e.is_retryable() || matches!(e, Error::Timeout(_) | Error::Consistency(_)) => {
                        failed_any = true;
                        for &s in &node_shards {
                            excluded.entry(s).or_default().insert(node);
                            match e.leader_hint() {
                                Some(l) if l != node => {
                                    hints.insert(s, l);
                                }
                                _ => {
                                    hints.remove(&s);
                                }
                            }
                        }
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                for s in node_shards {
                    pending.remove(&s);
                }
            }
            if failed_any && !pending.is_empty() {
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        Ok((searches, counts, records))
    }

    /// Runs `op` for `targets` on `node` (here, or through a request to it).
    async fn read_on_node(
        &self,
        node: u64,
        view: &CollectionView,
        targets: &[ShardTarget],
        op: &ReadOp,
        level: ReadLevel,
        deadline: Instant,
    ) -> Result<NodeReadOut> {
        let e = &view.entry;
        if node == self.cfg.node_id {
            return self.serve_local(&e.spec.name, e.uid, targets, op, level, deadline).await;
        }
        let addr = self.node_addr(node).ok_or_else(|| Error::NodeUnavailable(format!("node {node} has no address")))?;
        let op_proto = match op {
            ReadOp::Search { queries, k, filter_text, ef, with_payload, .. } => {
                shard_read_request::Op::Search(v1::SearchRequest {
                    collection: e.spec.name.clone(),
                    queries: queries.as_ref().clone(),
                    k: *k as u32,
                    filter: filter_text.clone(),
                    ef: ef.unwrap_or(0) as u32,
                    with_payload: *with_payload,
                    ..Default::default()
                })
            }
            ReadOp::Get { ids, with_vectors } => shard_read_request::Op::Get(v1::GetRequest {
                collection: e.spec.name.clone(),
                ids: Some(ids_to_proto(ids)),
                with_vectors: *with_vectors,
                ..Default::default()
            }),
            ReadOp::Count => shard_read_request::Op::Count(true),
        };
        let req = ShardReadRequest {
            collection: e.spec.name.clone(),
            uid: e.uid,
            level: level_to_proto(level) as i32,
            targets: targets.to_vec(),
            op: Some(op_proto),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = self.peers.shard_read(node, &addr, req, left).await?;
        let id_type = e.spec.shard.id_type;
        Ok(match op {
            ReadOp::Search { .. } => NodeReadOut::Search(
                reply.searches.iter().map(|r| hits_from_response(r, id_type)).collect::<Result<_, _>>()?,
            ),
            ReadOp::Get { ids, .. } => NodeReadOut::Get(records_from_get(reply.get.unwrap_or_default(), ids)?),
            ReadOp::Count => NodeReadOut::Count(reply.counts),
        })
    }

    /// Runs `op` on this node's replicas of `targets` after the level's barrier (leadership confirmed for
    /// `strong`, token reached for `session`).
    async fn serve_local(
        &self,
        name: &str,
        uid: u64,
        targets: &[ShardTarget],
        op: &ReadOp,
        level: ReadLevel,
        deadline: Instant,
    ) -> Result<NodeReadOut> {
        let me = self.cfg.node_id;
        let mut replicas: Vec<Arc<ShardReplica>> = Vec::with_capacity(targets.len());
        for t in targets {
            let r = self.replica_by_gid(name, uid, t.shard).ok_or_else(|| {
                Error::ShardUnavailable(format!("shard {} of collection {name:?} is not open on node {me}", t.shard))
            })?;
            replicas.push(r);
        }
        let barriers = replicas.iter().zip(targets).map(|(r, t)| async move {
            let left = deadline.saturating_duration_since(Instant::now());
            match level {
                ReadLevel::Strong => match tokio::time::timeout(left, r.group.ensure_linearizable()).await {
                    Ok(res) => res.map_err(Error::from),
                    Err(_) => Err(Error::Consistency(format!("leadership of {} not confirmed in time", r.gid))),
                },
                ReadLevel::Session if t.min_applied > 0 => {
                    let until = Instant::now() + left.min(SESSION_WAIT);
                    while r.app.applied_index() < t.min_applied {
                        if Instant::now() >= until {
                            return Err(Error::ShardUnavailable(format!(
                                "replica of {} on node {me} has applied {} < session token {}",
                                r.gid,
                                r.app.applied_index(),
                                t.min_applied
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        });
        for r in futures::future::join_all(barriers).await {
            r?;
        }
        let stores: Vec<_> = replicas.iter().map(|r| r.app.store()).collect();
        match op {
            ReadOp::Count => Ok(NodeReadOut::Count(stores.iter().map(|s| s.count() as u64).collect())),
            ReadOp::Get { ids, with_vectors } => {
                let by_shard: HashMap<u32, usize> = targets.iter().enumerate().map(|(i, t)| (t.shard, i)).collect();
                let n = self.catalog.get(name).map_or(1, |e| e.spec.shards);
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let rec = match by_shard.get(&id.shard(n)) {
                        Some(&i) => stores[i].get(std::slice::from_ref(id), *with_vectors).pop().flatten(),
                        None => {
                            return Err(Error::Internal(format!("id {id:?} is not owned by a targeted shard")));
                        }
                    };
                    out.push(rec);
                }
                Ok(NodeReadOut::Get(out))
            }
            ReadOp::Search { queries, nq, k, filter, ef, with_payload, .. } => {
                let (queries, nq, k, filter, ef, with_payload) =
                    (queries.clone(), *nq, *k, filter.clone(), *ef, *with_payload);
                // Run on a rayon worker, not a blocking thread: the store's parallel loops then run inline for
                // small batches instead of paying a thread hand-off per loop (most of a single query's latency).
                let (tx, rx) = tokio::sync::oneshot::channel();
                rayon::spawn(move || {
                    let per_shard: Vec<Vec<Vec<Hit>>> = stores
                        .par_iter()
                        .map(|s| s.search(&queries, nq, k, filter.as_deref(), ef, with_payload))
                        .collect();
                    let _ = tx.send(per_shard);
                });
                let left = deadline.saturating_duration_since(Instant::now());
                let per_shard = tokio::time::timeout(left, rx)
                    .await
                    .map_err(|_| Error::Timeout("search not finished within the timeout".into()))?
                    .map_err(|_| Error::Internal("search task panicked".into()))?;
                Ok(NodeReadOut::Search(per_shard))
            }
        }
    }

    /// Serves a shard read sent by a coordinator.
    pub async fn handle_shard_read(&self, req: ShardReadRequest, timeout: Duration) -> Result<ShardReadReply> {
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        let level = level_from_proto(req.level);
        let entry = self.catalog.get(&req.collection).filter(|e| e.uid == req.uid).ok_or_else(|| {
            Error::ShardUnavailable(format!(
                "collection {:?} (uid {}) is not known on node {} yet",
                req.collection, req.uid, self.cfg.node_id
            ))
        })?;
        let spec = &entry.spec;
        let (op, with_payload) = match req.op {
            Some(shard_read_request::Op::Search(s)) => {
                let filter = parse_filter(&s.filter)?;
                let nq = s.queries.len() / spec.shard.dim.max(1);
                let op = ReadOp::Search {
                    queries: Arc::new(s.queries),
                    nq,
                    k: s.k as usize,
                    filter: filter.map(Arc::new),
                    filter_text: s.filter,
                    ef: (s.ef > 0).then_some(s.ef as usize),
                    with_payload: s.with_payload,
                };
                (op, s.with_payload)
            }
            Some(shard_read_request::Op::Get(g)) => {
                let ids = shoal_api::points::ids_from_proto(g.ids.as_ref(), spec.shard.id_type)?;
                (ReadOp::Get { ids, with_vectors: g.with_vectors }, false)
            }
            Some(shard_read_request::Op::Count(_)) => (ReadOp::Count, false),
            Some(shard_read_request::Op::Scan(_)) => {
                return Err(Error::InvalidArgument("shard scans are not implemented yet".into()));
            }
            None => return Err(Error::InvalidArgument("shard read without an operation".into())),
        };
        let out = self.serve_local(&req.collection, req.uid, &req.targets, &op, level, deadline).await?;
        Ok(match out {
            NodeReadOut::Search(per_target) => ShardReadReply {
                searches: per_target.into_iter().map(|h| search_response(h, with_payload)).collect(),
                ..Default::default()
            },
            NodeReadOut::Get(recs) => {
                ShardReadReply { get: Some(get_response(recs, spec.shard.dim as u32)), ..Default::default() }
            }
            NodeReadOut::Count(c) => ShardReadReply { counts: c, ..Default::default() },
        })
    }

    /// Fetches points by id, in request order.
    pub async fn get(
        &self,
        name: &str,
        ids: Vec<PointId>,
        with_vectors: bool,
        level: ReadLevel,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<Vec<Option<PointRecord>>> {
        let view = self.view(name)?;
        let id_type = view.entry.spec.shard.id_type;
        for (i, id) in ids.iter().enumerate() {
            if id.id_type() != id_type {
                return Err(Error::InvalidArgument(format!(
                    "ids[{i}] is a {} but the collection has id_type \"{}\"",
                    id.id_type().as_str(),
                    id_type.as_str()
                )));
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let n = view.entry.spec.shards;
        let shards: BTreeSet<u32> = ids.iter().map(|id| id.shard(n)).collect();
        let op = ReadOp::Get { ids, with_vectors };
        let deadline = Instant::now() + timeout;
        let (_, _, records) =
            self.read_shards(&view, shards.into_iter().collect(), &op, level, session, deadline).await?;
        Ok(records)
    }

    /// Number of live points.
    pub async fn count(
        &self,
        name: &str,
        level: ReadLevel,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<u64> {
        let view = self.view(name)?;
        let all: Vec<u32> = (0..view.entry.spec.shards).collect();
        let deadline = Instant::now() + timeout;
        let (_, counts, _) = self.read_shards(&view, all, &ReadOp::Count, level, session, deadline).await?;
        Ok(counts.values().sum())
    }

    /// k-nearest-neighbour search of `nq` queries (row-major `queries`), merged over every shard.
    #[allow(clippy::too_many_arguments)]
    pub async fn search(
        &self,
        name: &str,
        queries: Vec<f32>,
        k: usize,
        filter_text: &str,
        ef: Option<usize>,
        with_payload: bool,
        level: ReadLevel,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<Vec<Vec<Hit>>> {
        let view = self.view(name)?;
        let dim = view.entry.spec.shard.dim;
        if queries.is_empty() || !queries.len().is_multiple_of(dim) {
            return Err(Error::InvalidArgument(format!(
                "queries have {} values: expected a non-empty multiple of dim {dim}",
                queries.len()
            )));
        }
        let nq = queries.len() / dim;
        validate::check_vectors(&queries, dim, nq)
            .map_err(|e| Error::InvalidArgument(e.to_string().replacen("vectors", "queries", 1)))?;
        validate::check_k(k as i64)?;
        if let Some(ef) = ef {
            validate::check_ef(ef as i64)?;
        }
        let filter = parse_filter(filter_text)?;
        let op = ReadOp::Search {
            queries: Arc::new(queries),
            nq,
            k,
            filter: filter.map(Arc::new),
            filter_text: filter_text.to_string(),
            ef,
            with_payload,
        };
        let all: Vec<u32> = (0..view.entry.spec.shards).collect();
        let deadline = Instant::now() + timeout;
        let (mut per_shard, _, _) = self.read_shards(&view, all, &op, level, session, deadline).await?;
        if per_shard.len() == 1 {
            return Ok(per_shard.pop_first().map(|(_, h)| h).unwrap_or_default());
        }
        Ok(merge_top_k(per_shard.into_values().collect(), nq, k))
    }

    /// (live points, live points not yet indexed) of a collection: points counted once per shard (its
    /// most complete replica), unindexed summed over every replica (all must be indexed).
    pub async fn index_status(&self, name: &str, timeout: Duration) -> Result<(u64, u64)> {
        let view = self.view(name)?;
        let uid = view.entry.uid;
        let mut best: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut unindexed = 0u64;
        for (_, st) in self.probe_nodes(timeout, Default::default()).await {
            let Ok(st) = st else { continue };
            for r in st.replicas.iter().filter(|r| r.collection == name && r.uid == uid) {
                unindexed += r.unindexed;
                let e = best.entry(r.shard).or_insert((0, 0));
                if r.applied_index >= e.0 {
                    *e = (r.applied_index, r.count);
                }
            }
        }
        Ok((best.values().map(|v| v.1).sum(), unindexed))
    }
}

/// Parses a filter's JSON text ("" = none).
fn parse_filter(text: &str) -> Result<Option<Filter>> {
    if text.is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::InvalidArgument(format!("filter is not valid JSON: {e}")))?;
    Ok(Some(Filter::parse(&v)?))
}

/// Merges per-shard top-k lists (each ascending) into one top-k per query, de-duplicated by id.
pub fn merge_top_k(per_shard: Vec<Vec<Vec<Hit>>>, nq: usize, k: usize) -> Vec<Vec<Hit>> {
    let mut out: Vec<Vec<Hit>> = (0..nq).map(|_| Vec::with_capacity(k)).collect();
    let mut columns: Vec<std::vec::IntoIter<Vec<Hit>>> = per_shard.into_iter().map(|v| v.into_iter()).collect();
    for row in out.iter_mut() {
        let mut all: Vec<Hit> = columns.iter_mut().filter_map(|c| c.next()).flatten().collect();
        all.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        let mut seen = std::collections::HashSet::new();
        for h in all {
            if row.len() == k {
                break;
            }
            if seen.insert(h.id.clone()) {
                row.push(h);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u64, d: f32) -> Hit {
        Hit { id: PointId::Int(id), distance: d, payload: None }
    }

    #[test]
    fn merge_keeps_best_k_and_dedups() {
        let a = vec![vec![hit(1, 0.1), hit(2, 0.5)], vec![hit(7, 0.3)]];
        let b = vec![vec![hit(3, 0.2), hit(1, 0.1)], vec![]];
        let m = merge_top_k(vec![a, b], 2, 2);
        assert_eq!(m[0].iter().map(|h| h.id.clone()).collect::<Vec<_>>(), vec![PointId::Int(1), PointId::Int(3)]);
        assert_eq!(m[1].len(), 1);
    }

    #[test]
    fn levels_parse() {
        use crate::engine::WriteLevel;
        assert_eq!(WriteLevel::parse("strong").unwrap(), WriteLevel::Strong);
        assert!(WriteLevel::parse("all").unwrap_err().to_string().contains("all"));
        assert_eq!(ReadLevel::parse("").unwrap(), ReadLevel::Session);
    }

    #[test]
    fn tokens_keep_the_highest_index_of_the_incarnation() {
        let t = |uid, shard, index| SessionToken { uid, shard, index };
        let m = tokens_of(&[t(5, 0, 10), t(5, 0, 12), t(4, 1, 99), t(5, 1, 3)], 5);
        assert_eq!(m, HashMap::from([(0, 12), (1, 3)]));
    }
}
