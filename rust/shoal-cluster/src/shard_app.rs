//! The state machine of one shard group: decodes write batches and applies them to a `ShardStore`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use shoal_api::commands::{decode_write_batch, encode_write_reply};
use shoal_core::ShardConfig;
use shoal_core::store::ShardStore;

/// Applies committed write batches of one shard. The store is swapped whole on snapshot restore.
pub struct ShardApp {
    /// The collection's shard configuration; fixed.
    config: ShardConfig,
    /// The current store; replaced only by `restore`.
    store: RwLock<Arc<ShardStore>>,
    /// Highest log index applied (0 = none); monotonic except on restore.
    applied: AtomicU64,
    /// Called after each apply so the indexer can start at once.
    on_apply: Box<dyn Fn() + Send + Sync>,
    /// Set when a committed entry could not be decoded: the replica no longer matches its log, so it
    /// serves nothing more and the engine quarantines it (never cleared: a fresh copy replaces it).
    damage: parking_lot::Mutex<Option<String>>,
    /// (applied index, content digest) after the most recent applies, ascending; at most `DIGEST_RING`.
    ring: parking_lot::Mutex<std::collections::VecDeque<(u64, u64)>>,
}

/// Applies remembered in the digest ring (anti-entropy compares replicas at an index both remember).
const DIGEST_RING: usize = 1024;

impl std::fmt::Debug for ShardApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardApp").field("applied", &self.applied).finish()
    }
}

impl ShardApp {
    /// An empty shard.
    pub fn new(config: ShardConfig, on_apply: Box<dyn Fn() + Send + Sync>) -> Self {
        ShardApp {
            store: RwLock::new(Arc::new(ShardStore::new(config.clone()))),
            config,
            applied: AtomicU64::new(0),
            on_apply,
            damage: parking_lot::Mutex::new(None),
            ring: parking_lot::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The current store.
    pub fn store(&self) -> Arc<ShardStore> {
        self.store.read().clone()
    }

    /// What is wrong with this replica, once a committed entry could not be applied (or anti-entropy found
    /// its content differing from its peers').
    pub fn damage(&self) -> Option<String> {
        self.damage.lock().clone()
    }

    /// Marks the replica damaged (it serves nothing more; the engine quarantines and rebuilds it).
    pub fn mark_damaged(&self, why: String) {
        self.damage.lock().get_or_insert(why);
    }

    /// The recent (applied index, digest) pairs, ascending; the last one is the current digest (so a change
    /// behind the log's back shows at once, even without new writes).
    pub fn digest_ring(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self.ring.lock().iter().copied().collect();
        let now = (self.applied_index(), self.store().digest());
        match out.last_mut() {
            Some(last) if last.0 == now.0 => *last = now,
            _ => out.push(now),
        }
        out
    }

    fn remember(&self, index: u64, digest: u64) {
        let mut r = self.ring.lock();
        if r.len() == DIGEST_RING {
            r.pop_front();
        }
        r.push_back((index, digest));
    }

    /// Highest applied log index.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

impl shoal_raft::StateMachineApp for ShardApp {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match decode_write_batch(command, self.config.dim, self.config.id_type) {
            Ok(batch) => {
                let out = self.store().apply_logged(batch);
                if out.expired {
                    tracing::warn!(index, "write refused at apply: stamped too long before the shard's newest write");
                }
                encode_write_reply(&out)
            }
            Err(e) => {
                // Commands are validated before they are proposed, and the log's records are checksummed:
                // this is a damaged or foreign entry. This replica cannot follow its log any more.
                tracing::error!(index, error = %e, "undecodable committed shard command: quarantining the replica");
                self.damage.lock().get_or_insert_with(|| format!("committed log entry {index} cannot be decoded: {e}"));
                encode_write_reply(&Default::default())
            }
        };
        self.applied.store(index, Ordering::Release);
        self.remember(index, self.store().digest());
        (self.on_apply)();
        reply
    }

    fn snapshot(&self, w: &mut dyn Write) -> std::io::Result<()> {
        self.store().write_snapshot(w).map_err(std::io::Error::other)
    }

    fn capture(&self) -> std::io::Result<Box<dyn shoal_raft::SnapshotWriter>> {
        let store = self.store();
        let capture = store.capture().map_err(std::io::Error::other)?;
        Ok(Box::new(Captured { store, capture }))
    }

    fn restore(&self, r: &mut dyn Read) -> std::io::Result<()> {
        let store = ShardStore::read_snapshot(self.config.clone(), r)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        *self.store.write() = Arc::new(store);
        // The restored state's index is not known here: the ring starts again with the next apply.
        self.ring.lock().clear();
        (self.on_apply)();
        Ok(())
    }
}

/// A shard store captured for a snapshot, serialised after the apply lock is released.
struct Captured {
    /// The store it was captured from (its vector rows are read while writing).
    store: Arc<ShardStore>,
    /// The point-in-time copy.
    capture: shoal_core::store::StoreCapture,
}

impl shoal_raft::SnapshotWriter for Captured {
    fn write_to(self: Box<Self>, w: &mut dyn Write) -> std::io::Result<()> {
        self.capture.write(&self.store, w).map_err(std::io::Error::other)
    }
}
