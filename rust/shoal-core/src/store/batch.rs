//! The log-entry types: a write batch (one Raft log entry of a shard), its operations, and what applying
//! one did.

use crate::PointId;
use crate::dedup::WriteId;
use crate::hlc::Version;

use super::Payload;
#[cfg(doc)]
use super::ShardStore;

/// One write batch: a Raft log entry of a shard. Applied in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteBatch {
    /// The operations, applied first to last.
    pub ops: Vec<WriteOp>,
    /// The logical write this batch belongs to, the same on every retry (`None`: not deduplicated).
    pub write_id: Option<WriteId>,
}

impl WriteBatch {
    /// A batch of `ops` without a write id.
    pub fn new(ops: Vec<WriteOp>) -> Self {
        WriteBatch { ops, write_id: None }
    }
}

/// One write operation.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert or replace a point (vector and whole payload).
    Upsert {
        /// The point.
        id: PointId,
        /// Its new version; applied only if newer than the point's version and its tombstone.
        version: Version,
        /// `dim` finite components, as sent (the store prepares/normalises its own copy).
        vector: Vec<f32>,
        /// The whole new payload (`None`: no payload).
        payload: Option<Payload>,
    },
    /// Delete a point, leaving a tombstone at `version`.
    Delete {
        /// The point.
        id: PointId,
        /// Version of the delete; applied only if newer than the point's (or tombstone's) version.
        version: Version,
    },
    /// Merge keys into the payload of a live point (per-key last-writer-wins).
    PatchPayload {
        /// The point; a missing or deleted point is left alone.
        id: PointId,
        /// Version of the patch; each key is set only if newer than the version that last set it.
        version: Version,
        /// Keys to set (a `null` value sets JSON null; keys are never removed by a patch).
        patch: Payload,
    },
}

/// What [`ShardStore::apply`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Ops that changed the store.
    pub applied: usize,
    /// Ops skipped because the store already held an equal or newer version (retries, re-orders).
    pub skipped_stale: usize,
    /// Patches skipped because the point does not exist (never written, or deleted).
    pub skipped_missing: usize,
    /// Upserts skipped because the vector does not have `dim` components (a caller bug; never happens
    /// for validated batches).
    pub skipped_invalid: usize,
    /// The batch's write id had been applied already ([`ShardStore::apply_logged`]): nothing changed, and
    /// `applied` is what the original did.
    pub duplicate: bool,
    /// The batch was stamped too long before the shard's newest write to be told apart from a duplicate
    /// ([`ShardStore::apply_logged`]): nothing changed.
    pub expired: bool,
}

pub(super) fn count_upserts(ops: &[WriteOp]) -> usize {
    ops.iter().filter(|o| matches!(o, WriteOp::Upsert { .. })).count()
}

pub(super) fn op_key(op: &WriteOp) -> (&PointId, Version) {
    match op {
        WriteOp::Upsert { id, version, .. }
        | WriteOp::Delete { id, version }
        | WriteOp::PatchPayload { id, version, .. } => (id, *version),
    }
}
