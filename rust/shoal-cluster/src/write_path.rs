//! The write coordinator: stamps a batch with one HLC version, splits it by shard (xxh3 of the id), sends
//! each part to its shard's leader (here or on another node), and retries through leader changes with
//! backoff until the deadline. The write level decides when a part counts as done (DESIGN §3):
//!
//! ```text
//!   eventual: leader accepted it into its log   (write_accepted)
//!   quorum:   committed on a majority            (client_write)
//!   strong:   committed + applied on the leader + replicated to every current voter (wait_replicated)
//! ```
//!
//! A level that cannot be met by the deadline is a `Consistency` error, never a hang or a downgrade.
//!
//! Retries are safe: every part of a write carries the write's [`WriteId`] (the client's, or one chosen here
//! when the client sent none), and a shard applies a write id at most once, so a write re-sent by this
//! coordinator or by the client through another one never applies twice and never overwrites a newer
//! write (`shoal_core::dedup`). Re-sending stops [`RETRY_SPAN_MS`](shoal_core::dedup::RETRY_SPAN_MS) after
//! the first attempt, well inside the shards' dedup window. The attempts' decisions (which replica, when to
//! back off, when to give up) are `WriteAttempts`' (executor.rs); `shard_write` runs them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use shoal_api::commands::{decode_write_reply, encode_write_batch};
use shoal_api::internal::{ShardWriteReply, ShardWriteRequest};
use shoal_api::v1::WriteConsistency;
use shoal_core::dedup::WriteId;
use shoal_core::store::{WriteBatch, WriteOp};
use shoal_core::{PointId, validate};

use crate::coordinator::Coordinator;
use crate::executor::{Retry, WriteAttempts, WriteStep};
use crate::levels::WriteLevel;
use crate::load::NodeCounters;
use crate::local_replicas::{CollectionView, ShardReplica};
use crate::reconciler::ReplicaKey;
use crate::{Detail, Error, Result};

/// The body of one write operation before it is stamped and routed.
pub(crate) enum OpBody {
    /// Insert or replace the point.
    Upsert(Vec<f32>, Option<Map<String, Value>>),
    /// Delete the point (leaves a tombstone).
    Delete,
    /// Merge these payload keys.
    Patch(Map<String, Value>),
}

/// How a write is carried out: its level, its deadline and its identity.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// When the write counts as done (DESIGN §3).
    pub level: WriteLevel,
    /// How long the coordinator may work on it.
    pub timeout: Duration,
    /// The logical write's id, the same on every retry (`None`: this coordinator picks one).
    pub write_id: Option<WriteId>,
}

/// What a write returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Ops accepted (`eventual`) or applied on the leader.
    pub count: u64,
    /// The collection incarnation written (catalog uid).
    pub uid: u64,
    /// (shard, log index) of every shard written: the client's session tokens.
    pub tokens: Vec<(u32, u64)>,
}

fn level_to_proto(level: WriteLevel) -> WriteConsistency {
    match level {
        WriteLevel::Eventual => WriteConsistency::Eventual,
        WriteLevel::Quorum => WriteConsistency::Quorum,
        WriteLevel::Strong => WriteConsistency::Strong,
    }
}

fn level_from_proto(v: i32) -> Result<WriteLevel> {
    match WriteConsistency::try_from(v) {
        Ok(WriteConsistency::Eventual) => Ok(WriteLevel::Eventual),
        Ok(WriteConsistency::Strong) => Ok(WriteLevel::Strong),
        Ok(_) => Ok(WriteLevel::Quorum),
        Err(_) => Err(Error::InvalidArgument(format!("unknown write consistency value {v}").into())),
    }
}

impl Coordinator {
    /// Stamps `ops` with one version, splits them by shard and writes each part at `level`, every part
    /// under `write_id` (a new random id when `None`).
    pub(crate) async fn write(
        &self,
        view: &CollectionView,
        ops: Vec<(PointId, OpBody)>,
        level: WriteLevel,
        timeout: Duration,
        write_id: Option<WriteId>,
    ) -> Result<WriteOutcome> {
        let _busy = self.counters.enter();
        NodeCounters::bump(&self.counters.writes);
        let uid = view.entry.uid;
        if ops.is_empty() {
            return Ok(WriteOutcome { count: 0, uid, tokens: Vec::new() });
        }
        let deadline = Instant::now() + timeout;
        let write_id = Some(write_id.unwrap_or_else(WriteId::random));
        let version = self.hlc.now();
        let n_shards = view.entry.spec.shards;
        let mut parts: Vec<Vec<WriteOp>> = (0..n_shards).map(|_| Vec::new()).collect();
        for (id, body) in ops {
            let s = id.shard(n_shards) as usize;
            parts[s].push(match body {
                OpBody::Upsert(vector, payload) => WriteOp::Upsert { id, version, vector, payload },
                OpBody::Delete => WriteOp::Delete { id, version },
                OpBody::Patch(patch) => WriteOp::PatchPayload { id, version, patch },
            });
        }
        let futs = parts.into_iter().enumerate().filter(|(_, p)| !p.is_empty()).map(|(s, ops)| {
            let n_ops = ops.len() as u64;
            let bytes = encode_write_batch(&WriteBatch { ops, write_id });
            async move {
                let (applied, index) = self.shard_write(view, s as u32, bytes, n_ops, level, deadline).await?;
                Ok::<_, Error>((s as u32, applied, index))
            }
        });
        let mut out = WriteOutcome { count: 0, uid, tokens: Vec::new() };
        for r in futures::future::join_all(futs).await {
            let (s, applied, index) = r?;
            out.count += applied;
            out.tokens.push((s, index));
        }
        Ok(out)
    }

    /// The node that most likely leads `shard`: what the local replica knows, else a hint from an earlier
    /// answer, else the preferred leader of the placement.
    pub(crate) fn shard_leader_guess(&self, view: &CollectionView, shard: u32) -> Option<u64> {
        if let Some(r) = &view.local[shard as usize]
            && let Some(l) = r.group.leader_id()
        {
            return Some(l);
        }
        let key = ReplicaKey::new(view.entry.spec.name.clone(), view.entry.uid, shard);
        if let Some(l) = self.leader_hints.get(&key.group_id()) {
            return Some(l);
        }
        view.entry.replicas(shard).first().copied()
    }

    /// Writes one shard's part on its leader, following leader changes until `deadline` (the decisions are
    /// `WriteAttempts`', executor.rs).
    async fn shard_write(
        &self,
        view: &CollectionView,
        shard: u32,
        bytes: Vec<u8>,
        n_ops: u64,
        level: WriteLevel,
        deadline: Instant,
    ) -> Result<(u64, u64)> {
        let name = &view.entry.spec.name;
        let key = ReplicaKey::new(name.clone(), view.entry.uid, shard);
        let gid = key.group_id();
        let replicas = view.entry.replicas(shard).to_vec();
        // Re-sending stops inside the shards' dedup window, whatever the deadline (see the module doc).
        let mut attempts = WriteAttempts::new(name, shard, level, replicas, deadline, Instant::now());
        loop {
            let (target, left) = match attempts.next(Instant::now(), self.shard_leader_guess(view, shard)) {
                WriteStep::Send { target, left } => (target, left),
                WriteStep::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    continue;
                }
                WriteStep::Fail(e) => return Err(e),
            };
            let res = if target == self.cfg.node_id {
                match &view.local[shard as usize] {
                    Some(r) => self.propose_local(r, bytes.clone(), n_ops, level, deadline).await,
                    None => Err(self.local.replica_not_open(&key)),
                }
            } else {
                match self.meta.node_addr(target) {
                    Some(addr) => {
                        let req = ShardWriteRequest {
                            group: gid.clone(),
                            batch: bytes.clone(),
                            level: level_to_proto(level) as i32,
                            ops: n_ops,
                        };
                        self.peers.shard_write(target, &addr, req, left).await.map(|r| (r.applied, r.index))
                    }
                    None => Err(Error::NodeUnavailable(format!("node {target} has no known address").into())),
                }
            };
            match res {
                Ok(v) => {
                    self.leader_hints.set(&gid, target);
                    return Ok(v);
                }
                Err(e) => match attempts.on_failure(Instant::now(), target, e, self.meta.cut_off())? {
                    Retry::FollowLeader(l) => {
                        self.leader_hints.set(&gid, l);
                    }
                    Retry::Sleep(d) => tokio::time::sleep(d).await,
                },
            }
        }
    }

    /// Proposes an encoded batch on the local replica `r` (which must lead its group) at `level`.
    /// Returns (ops applied or accepted, log index).
    async fn propose_local(
        &self,
        r: &Arc<ShardReplica>,
        bytes: Vec<u8>,
        n_ops: u64,
        level: WriteLevel,
        deadline: Instant,
    ) -> Result<(u64, u64)> {
        // This node appends the batch to its log: refused while its disk is nearly full.
        self.local.check_disk()?;
        let left = deadline.saturating_duration_since(Instant::now());
        match level {
            WriteLevel::Eventual => {
                let index = tokio::time::timeout(left, r.group.write_accepted(bytes))
                    .await
                    .map_err(|_| Error::Timeout(format!("shard group {} did not accept the write", r.gid).into()))??;
                Ok((n_ops, index))
            }
            WriteLevel::Quorum | WriteLevel::Strong => {
                let (reply, index) = tokio::time::timeout(left, r.group.write_indexed(bytes))
                    .await
                    .map_err(|_| Error::Timeout(format!("shard group {} did not commit the write", r.gid).into()))??;
                let reply = decode_write_reply(&reply)?;
                if reply.expired {
                    return Err(Error::Consistency(
                        format!(
                            "shard group {} refused the write: it was stamped more than the dedup window before the \
                         shard's newest write (a write delayed that long cannot be told from a retry); it was \
                         not applied",
                            r.gid
                        )
                        .into(),
                    ));
                }
                let applied = reply.applied;
                if level == WriteLevel::Strong {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let behind = r.group.wait_replicated(index, left).await;
                    if !behind.is_empty() {
                        return Err(Error::Consistency(
                            format!(
                                "strong write to shard group {} committed on a majority, but voter(s) {behind:?} did \
                             not replicate it within the timeout (down or partitioned?)",
                                r.gid
                            )
                            .into(),
                        ));
                    }
                }
                Ok((applied, index))
            }
        }
    }

    /// A batch another node asks this leader to propose is checked as a public write would be before it can
    /// reach the log: it decodes for this shard (ids of its id type, `dim`-sized finite vectors, payloads,
    /// write id), and its version is not stamped beyond the bounded clock offset ahead of this node (a version
    /// near u64::MAX would make its points impossible to overwrite, and pin the HLC of every replica).
    fn check_forwarded_batch(&self, r: &ShardReplica, req: &ShardWriteRequest) -> Result<()> {
        let config = r.app.store().config().clone();
        let batch = shoal_api::commands::decode_write_batch(&req.batch, config.dim, config.id_type)
            .map_err(|e| Error::InvalidArgument(Detail::caused_by(format!("forwarded write to {}: {e}", r.gid), e)))?;
        for op in &batch.ops {
            if let WriteOp::Upsert { vector, .. } = op {
                validate::check_vectors(vector, config.dim, 1).map_err(|e| {
                    Error::InvalidArgument(Detail::caused_by(format!("forwarded write to {}: {e}", r.gid), e))
                })?;
            }
        }
        // Every op of a batch carries the batch's one version.
        let version = match batch.ops.first() {
            Some(
                WriteOp::Upsert { version, .. }
                | WriteOp::Delete { version, .. }
                | WriteOp::PatchPayload { version, .. },
            ) => *version,
            None => return Ok(()),
        };
        if let Some(ahead) = self.hlc.too_far_ahead(version, self.cfg.max_clock_offset_ms) {
            return Err(Error::InvalidArgument(
                format!(
                    "forwarded write to {} is stamped {ahead} ms ahead of node {}'s clock (at most {} ms allowed: \
                 --max-clock-offset-ms); refused",
                    r.gid, self.cfg.node_id, self.cfg.max_clock_offset_ms
                )
                .into(),
            ));
        }
        Ok(())
    }

    /// Serves a shard write forwarded by a coordinator: this node must lead the group.
    pub(crate) async fn handle_shard_write(
        &self,
        req: ShardWriteRequest,
        timeout: Duration,
    ) -> Result<ShardWriteReply> {
        self.lifecycle.check_open()?;
        let _busy = self.counters.enter();
        let key: ReplicaKey = req.group.parse()?;
        let r = self
            .local
            .replica_by_gid(&key.collection, key.uid, key.shard)
            .ok_or_else(|| self.local.replica_not_open(&key))?;
        if !r.group.is_leader() {
            return Err(Error::not_leader(r.group.leader_id()));
        }
        self.check_forwarded_batch(&r, &req)?;
        let deadline = Instant::now() + timeout;
        let (applied, index) =
            self.propose_local(&r, req.batch, req.ops, level_from_proto(req.level)?, deadline).await?;
        Ok(ShardWriteReply { applied, index })
    }

    /// Upserts points. The whole batch is validated before anything is written.
    pub(crate) async fn upsert(
        &self,
        name: &str,
        ids: Vec<PointId>,
        vectors: Vec<f32>,
        payloads: Vec<Option<Map<String, Value>>>,
        opts: WriteOptions,
    ) -> Result<WriteOutcome> {
        let view = self.view(name)?;
        let dim = view.entry.spec.shard.dim;
        validate::check_ids(&ids, view.entry.spec.shard.id_type)?;
        if vectors.len() != ids.len() * dim {
            return Err(Error::InvalidArgument(
                if vectors.len().is_multiple_of(dim) {
                    format!("got {} ids but {} vectors", ids.len(), vectors.len() / dim)
                } else {
                    format!("vectors have {} values, not a multiple of dim {dim}", vectors.len())
                }
                .into(),
            ));
        }
        validate::check_vectors(&vectors, dim, ids.len())?;
        if !payloads.is_empty() && payloads.len() != ids.len() {
            return Err(Error::InvalidArgument(
                format!("got {} ids but {} payloads", ids.len(), payloads.len()).into(),
            ));
        }
        let mut payloads = payloads.into_iter();
        let ops = ids
            .into_iter()
            .zip(vectors.chunks_exact(dim))
            .map(|(id, v)| (id, OpBody::Upsert(v.to_vec(), payloads.next().flatten())))
            .collect();
        self.write(&view, ops, opts.level, opts.timeout, opts.write_id).await
    }

    /// Deletes points by id (absent ids are no-ops that still leave a tombstone).
    pub(crate) async fn delete(&self, name: &str, ids: Vec<PointId>, opts: WriteOptions) -> Result<WriteOutcome> {
        let view = self.view(name)?;
        validate::check_ids(&ids, view.entry.spec.shard.id_type)?;
        let ops = ids.into_iter().map(|id| (id, OpBody::Delete)).collect();
        self.write(&view, ops, opts.level, opts.timeout, opts.write_id).await
    }

    /// Merges `patch` into the payload of each point, key by key (LWW per key).
    pub(crate) async fn update_payload(
        &self,
        name: &str,
        ids: Vec<PointId>,
        patch: Map<String, Value>,
        opts: WriteOptions,
    ) -> Result<WriteOutcome> {
        let view = self.view(name)?;
        validate::check_ids(&ids, view.entry.spec.shard.id_type)?;
        if patch.is_empty() {
            return Err(Error::InvalidArgument("the payload patch is empty: give at least one key to set".into()));
        }
        let ops = ids.into_iter().map(|id| (id, OpBody::Patch(patch.clone()))).collect();
        self.write(&view, ops, opts.level, opts.timeout, opts.write_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_round_trip() {
        assert_eq!(ReplicaKey::parse("docs@12/3"), Some(ReplicaKey::new("docs", 12, 3)));
        assert_eq!(ReplicaKey::parse("a@b@7/0"), Some(ReplicaKey::new("a@b", 7, 0)));
        assert_eq!(ReplicaKey::parse("meta"), None);
        assert_eq!(ReplicaKey::new("x/y", 1, 2).to_string(), "x/y@1/2");
        assert_eq!(ReplicaKey::parse("x/y@1/2"), Some(ReplicaKey::new("x/y", 1, 2)));
        assert!("docs@x/1".parse::<ReplicaKey>().is_err());
    }
}
