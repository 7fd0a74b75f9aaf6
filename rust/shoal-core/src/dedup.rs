//! Write identities and the per-shard table that makes retried writes idempotent (DESIGN §3).
//!
//! Every logical write carries a [`WriteId`] chosen once by the client (or by the coordinator for a client
//! that sends none) and kept across every retry, whichever node coordinates it. A shard applies a write
//! id at most once: the [`DedupTable`] remembers the ids applied within [`DEDUP_WINDOW_MS`] of shard time
//! (the wall-clock part of the newest applied version), with what each one did, so a retry that reaches
//! the log after its original is answered with the original's outcome and changes nothing.
//!
//! ```text
//!   entry (write id W, stamped version v) reaches apply, shard time T = newest applied version's ms
//!        |
//!        +-- W in the table ------------------------------> duplicate: no change, the original's outcome
//!        +-- v.ms + DEDUP_WINDOW_MS < T ------------------> expired: no change (it could be a duplicate
//!        |                                                   whose original has left the table)
//!        +-- otherwise ----------------------------------> applied at max(v, newest + 1), W recorded;
//!                                                            ids older than the window are forgotten
//! ```
//!
//! Retries are bounded so that they always land inside the window: clients and coordinators re-send a
//! write for at most [`RETRY_SPAN_MS`] after its first attempt, and DESIGN §3's maximum clock offset
//! between nodes ([`MAX_CLOCK_OFFSET_MS`]) is far below the difference.

use std::collections::{HashMap, VecDeque};
use std::fmt;

/// How long (in shard time, milliseconds) a shard remembers an applied write id.
pub const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;
/// The longest a client or coordinator keeps re-sending one write after its first attempt.
pub const RETRY_SPAN_MS: u64 = 2 * 60 * 1000;
/// The largest clock offset between nodes that the window tolerates (DESIGN §3).
pub const MAX_CLOCK_OFFSET_MS: u64 = 60 * 1000;

const _: () = assert!(RETRY_SPAN_MS + 2 * MAX_CLOCK_OFFSET_MS < DEDUP_WINDOW_MS);

/// The identity of one logical write: 128 random bits, the same on every retry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WriteId(pub u128);

impl WriteId {
    /// Length of a write id on the wire.
    pub const LEN: usize = 16;

    /// The id from its 16 wire bytes (big-endian); `None` for any other length.
    pub fn from_bytes(b: &[u8]) -> Option<WriteId> {
        Some(WriteId(u128::from_be_bytes(b.try_into().ok()?)))
    }

    /// A new id from the operating system's random source (128 bits: collisions are not a concern), or,
    /// should that source fail, from the clock, the process id and a counter hashed with xxh3-128.
    pub fn random() -> WriteId {
        let mut b = [0u8; 16];
        if getrandom::fill(&mut b).is_ok() {
            return WriteId(u128::from_be_bytes(b));
        }
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut seed = Vec::with_capacity(40);
        seed.extend_from_slice(&nanos.to_le_bytes());
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(&n.to_le_bytes());
        WriteId(xxhash_rust::xxh3::xxh3_128(&seed))
    }

    /// The 16 wire bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Debug for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriteId({:032x})", self.0)
    }
}

impl fmt::Display for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What the table remembers of one applied write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Shard time (ms) at which it was applied; entries leave the table in this order.
    pub ms: u64,
    /// Ops of the write that changed the store (the answer a retry gets again).
    pub applied: u64,
}

/// The write ids a shard applied within the window. Deterministic: replicas that apply the same log hold
/// the same table, and it travels in the shard's snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupTable {
    /// Applied write ids; exactly the ids in `order`.
    seen: HashMap<WriteId, Applied>,
    /// The same ids in apply order (non-decreasing `ms`), for expiry from the front.
    order: VecDeque<(u64, WriteId)>,
}

impl DedupTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// What `id` did when it was applied, if it is still remembered.
    pub fn get(&self, id: WriteId) -> Option<Applied> {
        self.seen.get(&id).copied()
    }

    /// Records `id` as applied at shard time `ms` (callers apply in non-decreasing `ms`). A second record of
    /// the same id keeps the first.
    pub fn record(&mut self, id: WriteId, ms: u64, applied: u64) {
        if self.seen.contains_key(&id) {
            return;
        }
        self.seen.insert(id, Applied { ms, applied });
        self.order.push_back((ms, id));
    }

    /// Forgets the ids applied before `now_ms - DEDUP_WINDOW_MS`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let horizon = now_ms.saturating_sub(DEDUP_WINDOW_MS);
        let mut n = 0;
        while let Some(&(ms, id)) = self.order.front() {
            if ms >= horizon {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
            n += 1;
        }
        n
    }

    /// Whether a write stamped at `stamped_ms` is too old to be told apart from an expired duplicate, at
    /// shard time `now_ms`.
    pub fn is_expired(stamped_ms: u64, now_ms: u64) -> bool {
        stamped_ms.saturating_add(DEDUP_WINDOW_MS) < now_ms
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The remembered ids in apply order, with what each did (for snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (WriteId, Applied)> + '_ {
        self.order.iter().map(|(_, id)| (*id, self.seen[id]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ids_round_trip_through_bytes() {
        let id = WriteId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        assert_eq!(WriteId::from_bytes(&id.to_bytes()), Some(id));
        assert_eq!(id.to_bytes()[0], 1);
        assert_eq!(WriteId::from_bytes(&[1, 2, 3]), None);
        assert_eq!(WriteId::from_bytes(&[0; 17]), None);
        assert_eq!(id.to_string(), "0102030405060708090a0b0c0d0e0f10");
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::HashSet<WriteId> = (0..1000).map(|_| WriteId::random()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn records_once_and_expires_in_order() {
        let mut t = DedupTable::new();
        t.record(WriteId(1), 1_000, 3);
        t.record(WriteId(2), 2_000, 5);
        t.record(WriteId(1), 3_000, 9); // a duplicate record keeps the first
        assert_eq!(t.get(WriteId(1)), Some(Applied { ms: 1_000, applied: 3 }));
        assert_eq!(t.len(), 2);
        assert_eq!(t.expire(1_000 + DEDUP_WINDOW_MS), 0, "exactly at the horizon is kept");
        assert_eq!(t.expire(1_001 + DEDUP_WINDOW_MS), 1);
        assert_eq!(t.get(WriteId(1)), None);
        assert_eq!(t.get(WriteId(2)).map(|a| a.applied), Some(5));
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![WriteId(2)]);
        assert_eq!(t.expire(u64::MAX), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn expiry_of_stamped_versions() {
        assert!(!DedupTable::is_expired(10_000, 10_000 + DEDUP_WINDOW_MS));
        assert!(DedupTable::is_expired(10_000, 10_001 + DEDUP_WINDOW_MS));
        assert!(!DedupTable::is_expired(u64::MAX, 0));
        assert!(!DedupTable::is_expired(5, 0), "a version ahead of shard time is not expired");
    }
}
