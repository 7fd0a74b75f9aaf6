//! The state machine of one shard group: decodes write batches and applies them to a `ShardStore`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use shoal_api::commands::{decode_write_batch, encode_write_reply};
use shoal_core::ShardConfig;
use shoal_core::payload_index::IndexKind;
use shoal_core::store::ShardStore;

/// Applies committed write batches of one shard. The store is swapped whole on snapshot restore.
pub struct ShardApp {
    /// The collection's shard configuration; fixed.
    config: ShardConfig,
    /// Where an `on_disk` collection's stores map their vectors (the shard's directory); `None` keeps them
    /// in memory.
    vector_dir: Option<std::path::PathBuf>,
    /// The current store; replaced only by `restore`.
    store: RwLock<Arc<ShardStore>>,
    /// Highest log index applied (0 = none); monotonic except on restore.
    applied: AtomicU64,
    /// The same index for waiters (`wait_applied`): set right after `applied` on each apply and restore.
    applied_watch: tokio::sync::watch::Sender<u64>,
    /// Called after each apply so the indexer can start at once.
    on_apply: Box<dyn Fn() + Send + Sync>,
    /// Set when a committed entry could not be decoded: the replica no longer matches its log, so it
    /// serves nothing more and the engine quarantines it (never cleared: a fresh copy replaces it).
    damage: parking_lot::Mutex<Option<String>>,
    /// (applied index, content digest) after the most recent applies, ascending; at most `DIGEST_RING`.
    /// Held across each apply and restore, so a reader sees `applied` and the store's digest as one pair
    /// (a digest read mid-apply paired with the previous index would look like a divergence).
    ring: parking_lot::Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// The collection's payload indexes (field, kind) as the catalog last said; applied to every store this
    /// app holds (a restored one included).
    payload_indexes: RwLock<Vec<(String, IndexKind)>>,
}

/// Applies remembered in the digest ring (anti-entropy compares replicas at an index both remember).
const DIGEST_RING: usize = 1024;

impl std::fmt::Debug for ShardApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardApp").field("applied", &self.applied).finish()
    }
}

impl ShardApp {
    /// An empty shard; an `on_disk` collection's vectors go to scratch files in `vector_dir`.
    pub fn new(
        config: ShardConfig,
        vector_dir: Option<std::path::PathBuf>,
        on_apply: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        ShardApp {
            store: RwLock::new(Arc::new(ShardStore::with_vector_dir(config.clone(), vector_dir.clone()))),
            config,
            vector_dir,
            applied: AtomicU64::new(0),
            applied_watch: tokio::sync::watch::Sender::new(0),
            on_apply,
            damage: parking_lot::Mutex::new(None),
            ring: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            payload_indexes: RwLock::new(Vec::new()),
        }
    }

    /// Makes the store's payload indexes `wanted` (new ones are built by the indexer). Returns whether
    /// anything changed.
    pub fn set_payload_indexes(&self, wanted: &[(String, IndexKind)]) -> bool {
        // Called on every reconcile pass (on the async runtime): no store lock unless something changed.
        if self.payload_indexes.read().as_slice() == wanted {
            return false;
        }
        *self.payload_indexes.write() = wanted.to_vec();
        self.store().set_payload_indexes(wanted)
    }

    /// One step of building payload indexes (see `ShardStore::build_payload_indexes`); true when built.
    pub fn build_payload_indexes(&self, budget: usize) -> bool {
        self.store().build_payload_indexes(budget)
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
        let ring = self.ring.lock();
        let now = (self.applied_index(), self.store().digest());
        let mut out: Vec<(u64, u64)> = ring.iter().copied().collect();
        drop(ring);
        match out.last_mut() {
            Some(last) if last.0 == now.0 => *last = now,
            _ => out.push(now),
        }
        out
    }

    fn remember(r: &mut std::collections::VecDeque<(u64, u64)>, index: u64, digest: u64) {
        if r.len() == DIGEST_RING {
            r.pop_front();
        }
        r.push_back((index, digest));
    }

    /// Highest applied log index.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Waits until the applied index reaches `index` (woken by each apply, no polling) or `deadline`
    /// passes; returns whether it did.
    pub async fn wait_applied(&self, index: u64, deadline: tokio::time::Instant) -> bool {
        if self.applied_index() >= index {
            return true;
        }
        let mut rx = self.applied_watch.subscribe();
        // `wait_for` checks the current value first, so an apply between the check above and `subscribe`
        // is not missed. It fails only when the sender (`self`) is gone, which cannot happen while borrowed.
        matches!(tokio::time::timeout_at(deadline, rx.wait_for(|&a| a >= index)).await, Ok(Ok(_)))
    }
}

impl shoal_raft::StateMachineApp for ShardApp {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let mut ring = self.ring.lock();
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
        self.applied_watch.send_replace(index);
        Self::remember(&mut ring, index, self.store().digest());
        drop(ring);
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

    fn restore(&self, index: u64, r: &mut dyn Read) -> std::io::Result<()> {
        let store = ShardStore::read_snapshot_with(self.config.clone(), self.vector_dir.clone(), r)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let digest = store.digest();
        store.set_payload_indexes(&self.payload_indexes.read());
        let mut ring = self.ring.lock();
        *self.store.write() = Arc::new(store);
        // The ring starts again at the snapshot's index: the history before it is another replica's.
        ring.clear();
        self.applied.store(index, Ordering::Release);
        self.applied_watch.send_replace(index);
        Self::remember(&mut ring, index, digest);
        drop(ring);
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

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::commands::encode_write_batch;
    use shoal_core::hlc::Version;
    use shoal_core::store::{WriteBatch, WriteOp};
    use shoal_core::{IdType, IndexConfig, Metric, PointId};
    use shoal_raft::StateMachineApp;

    #[test]
    fn the_digest_ring_never_pairs_an_index_with_another_index_s_digest() {
        // A reader racing the applies (anti-entropy probes a busy shard) must see (index, digest) pairs
        // that the replica really had: a digest read mid-apply paired with the previous index would make
        // an equal peer look diverged.
        let cfg =
            ShardConfig { dim: 4, metric: Metric::L2, id_type: IdType::Int, index: IndexConfig::Flat, on_disk: false };
        let app = Arc::new(ShardApp::new(cfg, None, Box::new(|| {})));
        let n = 600u64;
        let reader = {
            let app = app.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while app.applied_index() < n {
                    if let Some(last) = app.digest_ring().last() {
                        seen.push(*last);
                    }
                }
                seen
            })
        };
        for i in 1..=n {
            let ops = (0..64)
                .map(|j| WriteOp::Upsert {
                    id: PointId::Int(i * 64 + j),
                    version: Version::new(i, 1),
                    vector: vec![i as f32, j as f32, 0.0, 1.0],
                    payload: None,
                })
                .collect();
            app.apply(i, &encode_write_batch(&WriteBatch::new(ops)));
        }
        let seen = reader.join().unwrap();
        let truth: std::collections::HashMap<u64, u64> = app.digest_ring().into_iter().collect();
        assert!(!seen.is_empty());
        for (i, d) in seen.into_iter().filter(|(i, _)| *i > 0) {
            assert_eq!(truth.get(&i), Some(&d), "pair read at index {i}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_wakes_when_the_applied_index_reaches_its_token() {
        let cfg =
            ShardConfig { dim: 4, metric: Metric::L2, id_type: IdType::Int, index: IndexConfig::Flat, on_disk: false };
        let app = Arc::new(ShardApp::new(cfg, None, Box::new(|| {})));
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        assert!(app.wait_applied(0, far).await, "index 0 is reached from the start");
        let waiter = {
            let app = app.clone();
            tokio::spawn(async move { app.wait_applied(3, far).await })
        };
        let applier = {
            let app = app.clone();
            std::thread::spawn(move || {
                for i in 1..=3u64 {
                    let op = WriteOp::Upsert {
                        id: PointId::Int(i),
                        version: Version::new(i, 1),
                        vector: vec![i as f32, 0.0, 0.0, 1.0],
                        payload: None,
                    };
                    app.apply(i, &encode_write_batch(&WriteBatch::new(vec![op])));
                }
            })
        };
        applier.join().unwrap();
        assert!(waiter.await.unwrap(), "woken by the applies");
        // A token beyond what is applied is not reached by its deadline (already passed here).
        assert!(!app.wait_applied(4, tokio::time::Instant::now()).await);
    }
}
