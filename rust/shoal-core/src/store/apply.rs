//! Writes: last-writer-wins apply per id, tombstones and their gc, payload patches (per-key LWW-map), and
//! log-ordered apply with write-id deduplication.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Map;

use super::batch::{count_upserts, op_key};
use super::digest::slot_hash;
use super::{ApplyOutcome, Inner, Payload, ShardStore, Slot, WriteBatch, WriteOp};
use crate::dedup::DedupTable;
use crate::distance;
use crate::hlc::Version;
use crate::{Metric, PointId};

/// Which owned-or-borrowed form an op arrives in.
enum OpSrc<'a> {
    Borrowed(&'a WriteOp),
    Owned(WriteOp),
}

impl Inner {
    /// Whether an upsert or delete of `id` at `version` is stale.
    fn is_stale(&self, id: &PointId, version: Version) -> bool {
        match self.ids.get(id) {
            Some(&s) => version <= self.slots[s as usize].version,
            None => self.tombstones.get(id).is_some_and(|&t| version <= t),
        }
    }

    /// Marks a live slot dead and returns its metadata (id, payload, key versions).
    fn kill(&mut self, slot: u32) -> Slot {
        let s = &mut self.slots[slot as usize];
        self.pindex.on_remove(slot, s.payload.as_deref());
        self.alive[slot as usize] = false;
        self.content = self.content.wrapping_sub(s.hash);
        Slot {
            id: std::mem::replace(&mut s.id, PointId::Int(0)),
            version: s.version,
            payload: s.payload.take(),
            key_versions: s.key_versions.take(),
            hash: std::mem::take(&mut s.hash),
        }
    }

    /// Applies a non-stale upsert with an owned id and payload.
    fn upsert(
        &mut self,
        metric: Metric,
        id: PointId,
        version: Version,
        vector: &[f32],
        mut payload: Option<Payload>,
        scratch: &mut Vec<f32>,
    ) {
        let mut key_versions = None;
        if let Some(&old) = self.ids.get(&id) {
            let prev = self.kill(old);
            // LWW-map: keys patched at versions newer than this upsert survive it.
            if let Some(kv) = prev.key_versions {
                let newer: HashMap<String, Version> = kv.into_iter().filter(|(_, v)| *v > version).collect();
                if !newer.is_empty() {
                    let old_payload: Arc<Payload> = prev.payload.unwrap_or_default();
                    let p = payload.get_or_insert_with(Map::new);
                    for k in newer.keys() {
                        if let Some(v) = old_payload.get(k) {
                            p.insert(k.clone(), v.clone());
                        }
                    }
                    key_versions = Some(Box::new(newer));
                }
            }
        } else {
            self.tombstones.remove(&id);
        }
        let slot = if metric == Metric::Cosine {
            scratch.clear();
            scratch.extend_from_slice(vector);
            distance::prepare(metric, scratch);
            self.arena.push(scratch)
        } else {
            self.arena.push(vector)
        };
        debug_assert_eq!(slot as usize, self.slots.len());
        match self.ids.get_mut(&id) {
            Some(s) => *s = slot,
            None => {
                self.ids.insert(id.clone(), slot);
            }
        }
        let hash = slot_hash(&id, version, self.arena.get(slot), payload.as_ref());
        self.content = self.content.wrapping_add(hash);
        self.pindex.on_add(slot, payload.as_ref());
        self.slots.push(Slot { id, version, payload: payload.map(Arc::new), key_versions, hash });
        self.alive.push(true);
    }

    /// Applies a delete; returns false when stale.
    fn delete(&mut self, id: &PointId, version: Version) -> bool {
        if self.is_stale(id, version) {
            return false;
        }
        if let Some(slot) = self.ids.remove(id) {
            let prev = self.kill(slot);
            self.tombstones.insert(prev.id, version);
        } else {
            self.tombstones.insert(id.clone(), version);
        }
        true
    }

    /// Applies a payload patch to a live point.
    fn patch(&mut self, id: &PointId, version: Version, patch: &Payload, out: &mut ApplyOutcome) {
        let Some(&slot) = self.ids.get(id) else {
            out.skipped_missing += 1;
            return;
        };
        let s = &mut self.slots[slot as usize];
        if version <= s.version {
            out.skipped_stale += 1;
            return;
        }
        let base = s.version;
        let newer = |k: &String| version > s.key_versions.as_ref().and_then(|kv| kv.get(k)).copied().unwrap_or(base);
        if !patch.keys().any(newer) {
            // Nothing wins (an empty patch, or every key already set by a newer patch): no change at all,
            // so replicas that see this op in any order stay identical.
            out.skipped_stale += 1;
            return;
        }
        if !self.pindex.is_empty() {
            self.pindex.on_remove(slot, s.payload.as_deref());
        }
        let kv = s.key_versions.get_or_insert_with(Default::default);
        let payload = Arc::make_mut(s.payload.get_or_insert_with(Default::default));
        for (k, v) in patch {
            if version > kv.get(k).copied().unwrap_or(base) {
                kv.insert(k.clone(), version);
                payload.insert(k.clone(), v.clone());
            }
        }
        let s = &self.slots[slot as usize];
        if !self.pindex.is_empty() {
            self.pindex.on_readd(slot, s.payload.as_deref());
        }
        let hash = slot_hash(&s.id, s.version, self.arena.get(slot), s.payload.as_deref());
        self.content = self.content.wrapping_sub(s.hash).wrapping_add(hash);
        self.slots[slot as usize].hash = hash;
        out.applied += 1;
    }

    /// Applies one op given by reference (cloning what an upsert keeps).
    fn apply_ref(&mut self, metric: Metric, dim: usize, op: &WriteOp, scratch: &mut Vec<f32>, out: &mut ApplyOutcome) {
        let (id, version) = op_key(op);
        self.max_version = self.max_version.max(version);
        match op {
            WriteOp::Upsert { vector, payload, .. } => {
                if vector.len() != dim {
                    out.skipped_invalid += 1;
                } else if self.is_stale(id, version) {
                    out.skipped_stale += 1;
                } else {
                    self.upsert(metric, id.clone(), version, vector, payload.clone(), scratch);
                    out.applied += 1;
                }
            }
            WriteOp::Delete { .. } => {
                if self.delete(id, version) {
                    out.applied += 1;
                } else {
                    out.skipped_stale += 1;
                }
            }
            WriteOp::PatchPayload { patch, .. } => self.patch(id, version, patch, out),
        }
    }
}

impl ShardStore {
    /// Applies a batch, op by op, last-writer-wins per id. Deterministic: replicas applying the same
    /// batches in the same order end identical. Holds the write lock for the batch; no indexing here.
    pub fn apply(&self, batch: &WriteBatch) -> ApplyOutcome {
        self.apply_ops(batch.ops.iter().map(OpSrc::Borrowed), &batch.ops)
    }

    /// Like [`ShardStore::apply`], moving payloads out of the batch instead of cloning them.
    pub fn apply_owned(&self, batch: WriteBatch) -> ApplyOutcome {
        let upserts = count_upserts(&batch.ops);
        self.apply_counted(batch.ops.into_iter().map(OpSrc::Owned), upserts)
    }

    /// Applies a batch committed to the shard's Raft log, in log order (the state machine's entry point):
    ///
    /// - a batch whose write id was applied already changes nothing and reports the original's `applied`
    ///   (`duplicate`): a retry, through whichever coordinator, never writes twice (see [`crate::dedup`]);
    /// - a batch stamped more than the dedup window before the shard's newest version changes nothing
    ///   (`expired`): it could be a duplicate whose original was forgotten;
    /// - otherwise every op is applied at `max(stamped, newest + 1)`, so a later log entry always wins over
    ///   an earlier one whatever the coordinators' clocks say (the log order is the linearization order),
    ///   and the write id is remembered.
    ///
    /// Deterministic: replicas applying the same log end identical, dedup table included.
    pub fn apply_logged(&self, batch: WriteBatch) -> ApplyOutcome {
        let Some(stamped) = batch.ops.first().map(|op| op_key(op).1) else {
            return ApplyOutcome::default();
        };
        {
            let g = self.inner.read();
            if let Some(id) = batch.write_id
                && let Some(prev) = g.dedup.get(id)
            {
                return ApplyOutcome { applied: prev.applied as usize, duplicate: true, ..Default::default() };
            }
            if batch.write_id.is_some() && DedupTable::is_expired(stamped.wall_ms(), g.max_version.wall_ms()) {
                return ApplyOutcome { expired: true, ..Default::default() };
            }
        }
        let mut ops = batch.ops;
        {
            // Only this method and `apply*` write; the Raft state machine applies one entry at a time, so the
            // newest version read here is still the newest when the ops are applied below.
            let newest = self.inner.read().max_version;
            if stamped <= newest {
                let Some(hlc) = newest.hlc.checked_add(1) else {
                    return ApplyOutcome { expired: true, ..Default::default() };
                };
                let v = Version::new(hlc, stamped.node);
                for op in &mut ops {
                    match op {
                        WriteOp::Upsert { version, .. }
                        | WriteOp::Delete { version, .. }
                        | WriteOp::PatchPayload { version, .. } => *version = v,
                    }
                }
            }
        }
        let out = self.apply_owned(WriteBatch::new(ops));
        if let Some(id) = batch.write_id {
            let mut g = self.inner.write();
            let now = g.max_version.wall_ms();
            g.dedup.expire(now);
            g.dedup.record(id, now, out.applied as u64);
        }
        out
    }

    /// Number of write ids the dedup table remembers.
    pub fn dedup_len(&self) -> usize {
        self.inner.read().dedup.len()
    }

    fn apply_ops<'a>(&self, ops: impl Iterator<Item = OpSrc<'a>>, all: &[WriteOp]) -> ApplyOutcome {
        self.apply_counted(ops, count_upserts(all))
    }

    fn apply_counted<'a>(&self, ops: impl Iterator<Item = OpSrc<'a>>, upserts: usize) -> ApplyOutcome {
        let metric = self.config.metric;
        let dim = self.config.dim;
        let mut out = ApplyOutcome::default();
        let mut scratch = Vec::new();
        let mut g = self.inner.write();
        g.generation += 1;
        *g.id_order.get_mut() = None;
        g.arena.reserve(upserts);
        g.slots.reserve(upserts);
        g.alive.reserve(upserts);
        for op in ops {
            match op {
                OpSrc::Owned(WriteOp::Upsert { id, version, vector, payload }) => {
                    g.max_version = g.max_version.max(version);
                    if vector.len() != dim {
                        out.skipped_invalid += 1;
                    } else if g.is_stale(&id, version) {
                        out.skipped_stale += 1;
                    } else {
                        g.upsert(metric, id, version, &vector, payload, &mut scratch);
                        out.applied += 1;
                    }
                }
                OpSrc::Owned(op) => g.apply_ref(metric, dim, &op, &mut scratch, &mut out),
                OpSrc::Borrowed(op) => g.apply_ref(metric, dim, op, &mut scratch, &mut out),
            }
        }
        out
    }

    /// Drops tombstones older than `older_than`; returns how many were dropped. After this, an upsert of
    /// such an id older than its delete would be applied again, so call it only with a bound older than any
    /// write still in flight (the retention window).
    pub fn gc_tombstones(&self, older_than: Version) -> usize {
        let mut g = self.inner.write();
        let before = g.tombstones.len();
        g.tombstones.retain(|_, v| *v >= older_than);
        before - g.tombstones.len()
    }
}
