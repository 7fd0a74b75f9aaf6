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
use shoal_api::scroll::{records_from_scroll, scan_request, scroll_response};
use shoal_api::v1::{self, ReadConsistency, SessionToken};
use shoal_core::filter::Filter;
use shoal_core::quantizer::Rescore;
use shoal_core::store::{Hit, PointRecord};
use shoal_core::validate;
use shoal_core::{CancelToken, PointId};

use futures::StreamExt;

use crate::coordinator::Coordinator;
use crate::executor::{ReadRound, RoundConfig};
use crate::levels::{LoadBalancing, ReadLevel};
use crate::load::NodeCounters;
use crate::local_replicas::{CollectionView, ShardReplica};
use crate::planner::{self, PlanContext, ShardSituation};
use crate::reconciler::ReplicaKey;
use crate::scroll::scan_op;
use crate::{Detail, Error, Result};

/// How long a replica waits for its applied index to reach a session token before it gives up and lets
/// the coordinator ask the leader.
const SESSION_WAIT: Duration = Duration::from_millis(300);
/// Node-local searches estimated at no more than this many vector components of work (all shards and
/// queries; about 0.1-0.4 ms here) run on the calling task instead of a rayon worker.
const INLINE_SEARCH_MAX_COST: f64 = 1_000_000.0;

/// Cancels its token when dropped (the future awaiting shard work went away).
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

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
        /// Brute force instead of the graph (`ef` unused).
        exact: bool,
        /// Rescoring of a graph search over int8 codes.
        rescore: Rescore,
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
    /// A page of one shard's points in id order (see scroll.rs).
    Scan {
        /// Points with an id greater than this one (`None` = from the first).
        after: Option<PointId>,
        /// Most points returned.
        limit: usize,
        /// Parsed filter.
        filter: Option<Arc<Filter>>,
        /// The filter's JSON text (what is sent to other nodes).
        filter_text: String,
        /// Whether vectors are returned.
        with_vectors: bool,
    },
}

/// How one read is to be executed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadOptions {
    /// The read level.
    pub(crate) level: ReadLevel,
    /// The strategy among eligible replicas.
    pub(crate) strategy: LoadBalancing,
    /// Whether shards that fail or miss the deadline are reported instead of failing the read.
    pub(crate) allow_partial: bool,
    /// When the read must be answered (the caller's deadline minus the engine's margin).
    pub(crate) deadline: Instant,
}

/// What a read collected, by shard.
pub(crate) struct ReadOutcome {
    /// Search hits per answered shard.
    pub(crate) searches: BTreeMap<u32, Vec<Vec<Hit>>>,
    /// Live points per answered shard.
    pub(crate) counts: BTreeMap<u32, u64>,
    /// Records in the get's id order (`None` also for ids of failed shards).
    pub(crate) records: Vec<Option<PointRecord>>,
    /// Shards that did not answer (only with `allow_partial`), ascending.
    pub(crate) failed: Vec<u32>,
}

/// One search as a client asked for it.
#[derive(Clone, Debug)]
pub struct SearchQuery {
    /// Row-major `nq x dim` queries.
    pub queries: Vec<f32>,
    /// Hits per query (1..=16384).
    pub k: usize,
    /// The filter's JSON text ("" = none).
    pub filter: String,
    /// Beam width override.
    pub ef: Option<usize>,
    /// Brute force on every point of one replica per shard, merged (no graph; `ef` unused).
    pub exact: bool,
    /// Rescoring of a graph search over int8 codes (checked; ignored by unquantized collections).
    pub rescore: Rescore,
    /// Whether hits carry payloads.
    pub with_payload: bool,
    /// The read level.
    pub level: ReadLevel,
    /// The strategy among eligible replicas (`None` = the node's default).
    pub strategy: Option<LoadBalancing>,
    /// Whether failed shards are reported instead of failing the search.
    pub allow_partial: bool,
}

/// A merged search answer.
#[derive(Debug)]
pub struct SearchOutcome {
    /// Per query, the top-k hits ascending by distance.
    pub hits: Vec<Vec<Hit>>,
    /// Shards that did not answer (only with `allow_partial`), ascending.
    pub failed_shards: Vec<u32>,
    /// Shards searched (answered + failed).
    pub shards: u32,
}

/// What one node answers for its targets.
pub(crate) enum NodeReadOut {
    /// Per target, per query hits.
    Search(Vec<Vec<Vec<Hit>>>),
    /// Per requested id.
    Get(Vec<Option<PointRecord>>),
    /// Per target.
    Count(Vec<u64>),
    /// The page of the one target.
    Scan(Vec<PointRecord>),
}

fn level_to_proto(level: ReadLevel) -> ReadConsistency {
    match level {
        ReadLevel::Eventual => ReadConsistency::Eventual,
        ReadLevel::Session => ReadConsistency::Session,
        ReadLevel::Strong => ReadConsistency::Strong,
    }
}

fn level_from_proto(v: i32) -> Result<ReadLevel> {
    match ReadConsistency::try_from(v) {
        Ok(ReadConsistency::Eventual) => Ok(ReadLevel::Eventual),
        Ok(ReadConsistency::Strong) => Ok(ReadLevel::Strong),
        Ok(_) => Ok(ReadLevel::Session),
        Err(_) => Err(Error::InvalidArgument(format!("unknown read consistency value {v}").into())),
    }
}

/// Work units of a request (queries x shards; one per shard for gets and counts), the scale of its latency.
fn work_units(op: &ReadOp, shards: usize) -> usize {
    match op {
        ReadOp::Search { nq, .. } => (*nq).max(1) * shards.max(1),
        _ => shards.max(1),
    }
}

/// Session tokens of collection incarnation `uid`, by shard.
pub(crate) fn tokens_of(tokens: &[SessionToken], uid: u64) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    for t in tokens.iter().filter(|t| t.uid == uid) {
        let e = out.entry(t.shard).or_insert(0);
        *e = (*e).max(t.index);
    }
    out
}

impl Coordinator {
    /// Takes `n` consecutive turns of the planner's rotation counter; returns the first.
    fn next_turns(&self, n: usize) -> usize {
        self.round_robin.fetch_add(n, Ordering::Relaxed)
    }

    /// The node to read `shard` from at `level` with the node's default strategy, avoiding `excluded`: one
    /// shard at a time (scroll pages). `session` reads go to the local replica or the leader (the client's
    /// token may name this shard).
    pub(crate) fn read_target(
        &self,
        view: &CollectionView,
        shard: u32,
        level: ReadLevel,
        excluded: &HashSet<u64>,
        hint: Option<u64>,
    ) -> Option<u64> {
        let sit = ShardSituation {
            replicas: view.entry.replicas(shard).to_vec(),
            leader: hint.or_else(|| self.shard_leader_guess(view, shard)),
            local: view.local[shard as usize].is_some(),
            has_token: level == ReadLevel::Session,
        };
        let (zones, loads) = (self.meta.node_zones(), self.loads.snapshot(false));
        let ctx = PlanContext {
            me: self.cfg.node_id,
            zones: &zones,
            loads: &loads,
            level,
            strategy: self.cfg.load_balancing,
            turn: self.next_turns(1),
        };
        planner::choose_replica(&ctx, &sit, excluded)
    }

    /// Reads `shards` of `view` with `op` (DESIGN §4): one request per node for the shards the planner gives
    /// it; a failed shard is retried on another replica (or after a backoff when none is left); a shard
    /// whose request has not answered by its node's p95 latency gets a hedged twin on another eligible
    /// replica (first answer wins, the other is dropped, which cancels it). A shard whose every replica is
    /// unreachable (twice) fails at once; at the deadline the shards still pending fail. Failed shards are an
    /// error unless `opts.allow_partial`, then they are listed in the outcome. These decisions are the
    /// executor's (`ReadRound`, executor.rs); this loop sends its requests, feeds the answers back and keeps
    /// the accepted results.
    async fn read_shards(
        &self,
        view: &CollectionView,
        shards: Vec<u32>,
        op: &ReadOp,
        opts: &ReadOptions,
        session: &[SessionToken],
    ) -> Result<ReadOutcome> {
        let name = &view.entry.spec.name;
        let n_shards = view.entry.spec.shards;
        let tokens = tokens_of(session, view.entry.uid);
        let level = opts.level;
        let deadline = opts.deadline;
        let situations: BTreeMap<u32, ShardSituation> = shards
            .iter()
            .map(|&s| {
                let sit = ShardSituation {
                    replicas: view.entry.replicas(s).to_vec(),
                    leader: self.shard_leader_guess(view, s),
                    local: view.local[s as usize].is_some(),
                    has_token: tokens.get(&s).is_some_and(|&i| i > 0),
                };
                (s, sit)
            })
            .collect();
        let get_ids: &[PointId] = match op {
            ReadOp::Get { ids, .. } => ids,
            _ => &[],
        };
        let mut out = ReadOutcome {
            searches: BTreeMap::new(),
            counts: BTreeMap::new(),
            records: vec![None; get_ids.len()],
            failed: Vec::new(),
        };
        let cfg = RoundConfig {
            collection: name.clone(),
            me: self.cfg.node_id,
            zones: self.meta.node_zones(),
            level,
            strategy: opts.strategy,
            hedging: self.cfg.hedging,
            allow_partial: opts.allow_partial,
            deadline,
            units_per_shard: work_units(op, 1),
        };
        let mut round = ReadRound::new(cfg, situations, Instant::now());
        let mut running = futures::stream::FuturesUnordered::new();

        let launch = |node: u64, node_shards: Vec<u32>| {
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
                let units = work_units(&node_op, targets.len());
                let ticket = self.loads.start(node);
                let res = self.read_on_node(node, view, &targets, &node_op, level, deadline).await;
                if res.is_ok() {
                    ticket.done(units);
                }
                (node, node_shards, positions, res)
            }
        };

        loop {
            let now = Instant::now();
            // Plan the shards waiting for a (new) replica.
            if round.plan_due(now) {
                let loads = self.loads.snapshot(round.needs_p95());
                let turn = self.next_turns(1);
                for l in round.plan(now, &loads, turn) {
                    running.push(launch(l.node, l.shards));
                }
            }
            if round.is_over(now) {
                break;
            }
            let answer = tokio::select! {
                a = running.next(), if !running.is_empty() => a,
                _ = tokio::time::sleep_until(round.next_wake().into()) => None,
            };
            if let Some((node, node_shards, positions, res)) = answer {
                match res {
                    Ok(result) => {
                        // Only the first answer of a shard counts (a hedged twin's may come second).
                        let accepted = round.on_answer(&node_shards);
                        let counts = |s: &u32| accepted.contains(s);
                        match result {
                            NodeReadOut::Search(per_target) => {
                                for (s, hits) in node_shards.iter().zip(per_target) {
                                    if counts(s) {
                                        out.searches.insert(*s, hits);
                                    }
                                }
                            }
                            NodeReadOut::Count(per_target) => {
                                for (s, c) in node_shards.iter().zip(per_target) {
                                    if counts(s) {
                                        out.counts.insert(*s, c);
                                    }
                                }
                            }
                            NodeReadOut::Get(recs) => {
                                for (i, rec) in positions.into_iter().zip(recs) {
                                    if counts(&get_ids[i].shard(n_shards)) {
                                        out.records[i] = rec;
                                    }
                                }
                            }
                            NodeReadOut::Scan(_) => {
                                return Err(Error::Internal("scans are read one shard at a time (scroll.rs)".into()));
                            }
                        }
                    }
                    Err(e) => round.on_failure(node, &node_shards, e, self.meta.cut_off())?,
                }
            }
            // Hedge the shards of requests that are slower than their node's p95.
            let now = Instant::now();
            let due = round.hedges_due(now);
            if due > 0 {
                let loads = self.loads.snapshot(false);
                let first_turn = self.next_turns(due);
                for l in round.hedge(now, &loads, first_turn) {
                    NodeCounters::bump(&self.counters.hedged);
                    running.push(launch(l.node, l.shards));
                }
            }
        }
        drop(running);
        out.failed = round.finish()?;
        Ok(out)
    }

    /// Runs `op` for `targets` on `node` (here, or through a request to it).
    pub(crate) async fn read_on_node(
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
        let addr = self
            .meta
            .node_addr(node)
            .ok_or_else(|| Error::NodeUnavailable(format!("node {node} has no address").into()))?;
        let op_proto = match op {
            ReadOp::Search { queries, k, filter_text, ef, exact, rescore, with_payload, .. } => {
                shard_read_request::Op::Search(v1::SearchRequest {
                    collection: e.spec.name.clone(),
                    queries: queries.as_ref().clone(),
                    k: *k as u32,
                    filter: filter_text.clone(),
                    ef: ef.unwrap_or(0) as u32,
                    exact: *exact,
                    rescore: Some(rescore.enabled),
                    oversampling: rescore.oversampling,
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
            ReadOp::Scan { after, limit, filter_text, with_vectors, .. } => {
                shard_read_request::Op::Scan(scan_request(after.as_ref(), *limit, filter_text, *with_vectors))
            }
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
            ReadOp::Scan { .. } => NodeReadOut::Scan(records_from_scroll(reply.scan.unwrap_or_default(), id_type)?),
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
            let key = ReplicaKey::new(name, uid, t.shard);
            let r = self.local.replica_by_gid(name, uid, t.shard).ok_or_else(|| self.local.replica_not_open(&key))?;
            if let Some(d) = r.app.damage() {
                return Err(Error::ShardUnavailable(
                    format!("replica of shard {} of collection {name:?} on node {me} is damaged: {d}", t.shard).into(),
                ));
            }
            replicas.push(r);
        }
        let barriers = replicas.iter().zip(targets).map(|(r, t)| async move {
            let left = deadline.saturating_duration_since(Instant::now());
            match level {
                ReadLevel::Strong => match tokio::time::timeout(left, r.group.ensure_linearizable()).await {
                    Ok(res) => res.map_err(Error::from),
                    Err(_) => Err(Error::Consistency(format!("leadership of {} not confirmed in time", r.gid).into())),
                },
                ReadLevel::Session if t.min_applied > 0 => {
                    // Woken by the replica's applies (a watch bumped by the state machine), bounded.
                    let until = Instant::now() + left.min(SESSION_WAIT);
                    if !r.app.wait_applied(t.min_applied, until.into()).await {
                        return Err(Error::ShardUnavailable(
                            format!(
                                "replica of {} on node {me} has applied {} < session token {}",
                                r.gid,
                                r.app.applied_index(),
                                t.min_applied
                            )
                            .into(),
                        ));
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        });
        // The first shard that cannot be served fails the request at once (the others are not waited for).
        futures::future::try_join_all(barriers).await?;
        let stores: Vec<_> = replicas.iter().map(|r| r.app.store()).collect();
        NodeCounters::bump(match op {
            ReadOp::Search { .. } => &self.counters.searches,
            _ => &self.counters.reads,
        });
        match op {
            ReadOp::Count => Ok(NodeReadOut::Count(stores.iter().map(|s| s.count() as u64).collect())),
            ReadOp::Get { ids, with_vectors } => {
                let by_shard: HashMap<u32, usize> = targets.iter().enumerate().map(|(i, t)| (t.shard, i)).collect();
                let n = self.meta.catalog.get(name).map_or(1, |e| e.spec.shards);
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let rec = match by_shard.get(&id.shard(n)) {
                        Some(&i) => stores[i].get(std::slice::from_ref(id), *with_vectors).pop().flatten(),
                        None => {
                            return Err(Error::Internal(format!("id {id:?} is not owned by a targeted shard").into()));
                        }
                    };
                    out.push(rec);
                }
                Ok(NodeReadOut::Get(out))
            }
            ReadOp::Search { queries, nq, k, filter, ef, exact, rescore, with_payload, .. } => {
                let (queries, nq, k, filter, ef, exact, rescore, with_payload) =
                    (queries.clone(), *nq, *k, filter.clone(), *ef, *exact, *rescore, *with_payload);
                // The shard work stops (between blocks of its scans and graph walks) at the deadline, or as soon
                // as this future is dropped: a cancelled client call, a coordinator that no longer waits.
                let cancel = CancelToken::with_deadline(deadline);
                let _stop_on_drop = CancelOnDrop(cancel.clone());
                // A small search (a few graph walks) runs right here, one shard after the other: handing it to
                // rayon and back costs two thread wake-ups, more than the search itself. Anything larger runs
                // on a rayon worker, where the store's parallel loops run inline for small batches.
                let cost: f64 = stores.iter().map(|s| s.search_cost_of(filter.as_deref(), k, ef, exact)).sum();
                let inline = cost * nq as f64 <= INLINE_SEARCH_MAX_COST;
                let counters = self.counters.clone();
                let run = move || {
                    let _busy = counters.enter_shared();
                    let one = |s: &Arc<shoal_core::store::ShardStore>| {
                        let f = filter.as_deref();
                        s.search_impl(&queries, nq, k, f, ef, with_payload, exact, rescore, &cancel)
                    };
                    let per_shard: std::result::Result<Vec<Vec<Vec<Hit>>>, shoal_core::Error> =
                        if inline { stores.iter().map(one).collect() } else { stores.par_iter().map(one).collect() };
                    if matches!(per_shard, Err(shoal_core::Error::Cancelled)) {
                        NodeCounters::bump(&counters.cancelled);
                    }
                    per_shard
                };
                let per_shard = if inline {
                    // Let the requests this coordinator just sent to other nodes reach their sockets first
                    // (their channels' tasks run on this runtime), so the nodes search at the same time.
                    tokio::task::yield_now().await;
                    run()
                } else {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    rayon::spawn(move || {
                        let _ = tx.send(run());
                    });
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::timeout(left, rx)
                        .await
                        .map_err(|_| Error::Timeout("search not finished within the timeout".into()))?
                        .map_err(|_| Error::Internal("search task panicked".into()))?
                };
                let per_shard = per_shard.map_err(|e| match e {
                    shoal_core::Error::Cancelled => {
                        Error::Timeout("search stopped: its deadline passed or it was cancelled".into())
                    }
                    e => e.into(),
                })?;
                Ok(NodeReadOut::Search(per_shard))
            }
            ReadOp::Scan { .. } => self.scan_local(stores, op, deadline).await,
        }
    }

    /// Serves a shard read sent by a coordinator.
    pub(crate) async fn handle_shard_read(&self, req: ShardReadRequest, timeout: Duration) -> Result<ShardReadReply> {
        self.lifecycle.check_open()?;
        let _busy = self.counters.enter();
        let deadline = Instant::now() + timeout;
        let level = level_from_proto(req.level)?;
        let entry = self.meta.catalog.get(&req.collection).filter(|e| e.uid == req.uid).ok_or_else(|| {
            Error::ShardUnavailable(
                format!(
                    "collection {:?} (uid {}) is not known on node {} yet",
                    req.collection, req.uid, self.cfg.node_id
                )
                .into(),
            )
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
                    exact: s.exact,
                    rescore: validate::check_rescore(s.rescore, s.oversampling)?,
                    with_payload: s.with_payload,
                };
                (op, s.with_payload)
            }
            Some(shard_read_request::Op::Get(g)) => {
                let ids = shoal_api::points::ids_from_proto(g.ids.as_ref(), spec.shard.id_type)?;
                (ReadOp::Get { ids, with_vectors: g.with_vectors }, false)
            }
            Some(shard_read_request::Op::Count(_)) => (ReadOp::Count, false),
            Some(shard_read_request::Op::Scan(s)) => (scan_op(&s, spec.shard.id_type)?, false),
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
            NodeReadOut::Scan(recs) => ShardReadReply {
                scan: Some(scroll_response(recs, spec.shard.dim as u32, Vec::new())),
                ..Default::default()
            },
        })
    }

    /// Fetches points by id, in request order.
    pub(crate) async fn get(
        &self,
        name: &str,
        ids: Vec<PointId>,
        with_vectors: bool,
        level: ReadLevel,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<Vec<Option<PointRecord>>> {
        let _busy = self.counters.enter();
        let view = self.view(name)?;
        let id_type = view.entry.spec.shard.id_type;
        for (i, id) in ids.iter().enumerate() {
            if id.id_type() != id_type {
                return Err(Error::InvalidArgument(
                    format!(
                        "ids[{i}] is a {} but the collection has id_type \"{}\"",
                        id.id_type().as_str(),
                        id_type.as_str()
                    )
                    .into(),
                ));
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let n = view.entry.spec.shards;
        let shards: BTreeSet<u32> = ids.iter().map(|id| id.shard(n)).collect();
        let op = ReadOp::Get { ids, with_vectors };
        let opts = self.read_options(level, None, false, timeout);
        Ok(self.read_shards(&view, shards.into_iter().collect(), &op, &opts, session).await?.records)
    }

    /// Number of live points.
    pub(crate) async fn count(
        &self,
        name: &str,
        level: ReadLevel,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<u64> {
        let _busy = self.counters.enter();
        let view = self.view(name)?;
        let all: Vec<u32> = (0..view.entry.spec.shards).collect();
        let opts = self.read_options(level, None, false, timeout);
        Ok(self.read_shards(&view, all, &ReadOp::Count, &opts, session).await?.counts.values().sum())
    }

    /// The options of a read starting now.
    fn read_options(
        &self,
        level: ReadLevel,
        strategy: Option<LoadBalancing>,
        allow_partial: bool,
        timeout: Duration,
    ) -> ReadOptions {
        ReadOptions {
            level,
            strategy: strategy.unwrap_or(self.cfg.load_balancing),
            allow_partial,
            deadline: Instant::now() + timeout,
        }
    }

    /// k-nearest-neighbour search of `nq` queries (row-major `queries`), merged over every shard.
    pub(crate) async fn search(
        &self,
        name: &str,
        q: SearchQuery,
        session: &[SessionToken],
        timeout: Duration,
    ) -> Result<SearchOutcome> {
        let _busy = self.counters.enter();
        let SearchQuery {
            queries,
            k,
            filter: filter_text,
            ef,
            exact,
            rescore,
            with_payload,
            level,
            strategy,
            allow_partial,
        } = q;
        let filter_text = filter_text.as_str();
        let view = self.view(name)?;
        let dim = view.entry.spec.shard.dim;
        if queries.is_empty() || !queries.len().is_multiple_of(dim) {
            return Err(Error::InvalidArgument(
                format!("queries have {} values: expected a non-empty multiple of dim {dim}", queries.len()).into(),
            ));
        }
        let nq = queries.len() / dim;
        validate::check_vectors(&queries, dim, nq).map_err(|e| {
            Error::InvalidArgument(Detail::caused_by(e.to_string().replacen("vectors", "queries", 1), e))
        })?;
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
            exact,
            rescore,
            with_payload,
        };
        let all: Vec<u32> = (0..view.entry.spec.shards).collect();
        let shards = all.len() as u32;
        let opts = self.read_options(level, strategy, allow_partial, timeout);
        let out = self.read_shards(&view, all, &op, &opts, session).await?;
        let mut per_shard = out.searches;
        let hits = if per_shard.len() == 1 {
            per_shard.pop_first().map(|(_, h)| h).unwrap_or_default()
        } else if per_shard.is_empty() {
            vec![Vec::new(); nq]
        } else {
            merge_top_k(per_shard.into_values().collect(), nq, k)
        };
        Ok(SearchOutcome { hits, failed_shards: out.failed, shards })
    }
}

/// Parses a filter's JSON text ("" = none).
pub(crate) fn parse_filter(text: &str) -> Result<Option<Filter>> {
    if text.is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidArgument(Detail::caused_by(format!("filter is not valid JSON: {e}"), e)))?;
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
        use crate::levels::WriteLevel;
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
