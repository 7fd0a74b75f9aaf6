//! The background indexer: one OS thread that moves freshly written points into each shard's HNSW graph
//! (the graph build itself fans out on rayon inside `ShardStore::index_step`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use crate::shard_app::ShardApp;
use parking_lot::Mutex;

/// Points indexed per step; small enough that a waiting writer is not held long.
const STEP: usize = 2048;

/// Handle to the indexer thread.
pub struct Indexer {
    /// Shards to index; the engine registers and unregisters them (the store inside may be swapped).
    stores: Arc<Mutex<Vec<Arc<ShardApp>>>>,
    /// Set to stop the thread.
    stop: Arc<AtomicBool>,
    /// The thread, for `unpark` and `join`.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// For waking the thread after a write.
    waker: Thread,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer").finish_non_exhaustive()
    }
}

impl Indexer {
    /// Starts the thread.
    pub fn start() -> Self {
        let stores: Arc<Mutex<Vec<Arc<ShardApp>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (stores.clone(), stop.clone());
        let handle = thread::Builder::new()
            .name("shoal-indexer".into())
            .spawn(move || {
                while !stop2.load(Ordering::Acquire) {
                    let current: Vec<Arc<ShardApp>> = s2.lock().clone();
                    let mut did = 0;
                    for app in &current {
                        did += app.store().index_step(STEP);
                    }
                    if did == 0 {
                        thread::park_timeout(Duration::from_millis(50));
                    }
                }
            })
            .expect("spawn indexer thread");
        let waker = handle.thread().clone();
        Indexer { stores, stop, thread: Mutex::new(Some(handle)), waker }
    }

    /// A cheap closure that wakes the indexer (called after every apply).
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let t = self.waker.clone();
        move || t.unpark()
    }

    /// Replaces the set of shards to index.
    pub fn set_shards(&self, stores: Vec<Arc<ShardApp>>) {
        *self.stores.lock() = stores;
        self.waker.unpark();
    }

    /// Stops and joins the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.waker.unpark();
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop();
    }
}
